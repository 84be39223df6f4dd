//! Faults around `build`, the cache and the KVM probe, end to end on the real tree, rootfs,
//! container and QEMU: each asserts the exit code, a time bound, the reason named, and that
//! nothing is left.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::builds::{build, command_log, entry_of, side_commit, unique, Restore, EDITED};
use tests::{code, descendants, fixture, gone, run, stderr, stdout, wait_until};

/// A working state of the fixture tree that is in no cache entry yet: a one-file change
/// (an incremental build of a few files).
fn fresh_change(restore: &mut Restore, tree: &Path) {
    restore.append(
        tree.join(EDITED),
        &format!("\n/* xtask e2e: a fault test, {} */\n", unique()),
    );
}

fn bzimage_of(entry: &str) -> PathBuf {
    Path::new(entry).join("bzImage")
}

/// What publish recorded of the entry's bzImage: (size, sha256).
fn recorded(entry: &str) -> (u64, String) {
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(Path::new(entry).join("metadata.json")).unwrap())
            .unwrap();
    let rec = &meta["files"]["bzImage"];
    (
        rec["size"].as_u64().expect("a recorded size"),
        rec["sha256"]
            .as_str()
            .expect("a recorded digest")
            .to_string(),
    )
}

#[test]
fn a_truncated_or_missing_cached_image_is_rebuilt_not_booted() {
    let f = fixture();
    let mut restore = Restore::new();
    fresh_change(&mut restore, &f.tree);
    let first = build(&f, &[]);
    assert_eq!(code(&first.out), 0);
    let entry = entry_of(&first);
    let (size, _) = recorded(&entry);
    assert_eq!(std::fs::metadata(bzimage_of(&entry)).unwrap().len(), size);

    // Truncated: `check` builds it again and boots the rebuilt image.
    let half = std::fs::read(bzimage_of(&entry)).unwrap();
    std::fs::write(bzimage_of(&entry), &half[..half.len() / 2]).unwrap();
    let start = Instant::now();
    let out = run(f.xtask().args(["check", "--", "true"]));
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(
        err.contains(&format!(
            "is broken (bzImage is {} bytes, {size} were recorded): building it again",
            half.len() / 2
        )),
        "{err}"
    );
    assert!(err.contains("verdict: good"), "{err}");
    assert!(took < Duration::from_secs(300), "{took:?}");
    assert_eq!(std::fs::metadata(bzimage_of(&entry)).unwrap().len(), size);

    // Missing: built again too.
    std::fs::remove_file(bzimage_of(&entry)).unwrap();
    let again = build(&f, &[]);
    assert_eq!(code(&again.out), 0);
    let err = stderr(&again.out);
    assert!(err.contains("is broken (bzImage missing)"), "{err}");
    assert!(
        stdout(&again.out).contains("built:"),
        "{}",
        stdout(&again.out)
    );
    assert!(again.took < Duration::from_secs(240), "{:?}", again.took);
    assert_eq!(entry_of(&again), entry);
    assert!(bzimage_of(&entry).is_file());
    // And now it answers from the cache, checked.
    let hit = build(&f, &[]);
    assert!(
        stdout(&hit.out).contains("cache hit"),
        "{}",
        stdout(&hit.out)
    );
    assert_eq!(hit.make_runs(), 0);
    drop(restore);
}

/// The cache's published entries and leftovers in its staging area.
fn cache_counts(state: &Path) -> (usize, usize) {
    let count = |d: &str| {
        std::fs::read_dir(state.join("cache").join(d))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    (count("entries"), count("tmp"))
}

/// A failed build that is the host's: 128 with the cause, on time, nothing cached or left.
fn assert_host_failure(f: &tests::Fixture, reason: &str, limit: Duration) {
    let (entries, _) = cache_counts(&f.state);
    let r = build(f, &[]);
    let err = stderr(&r.out);
    assert_eq!(code(&r.out), 128, "{err}");
    assert!(err.contains(reason), "{err}");
    assert!(err.contains("nothing was cached"), "{err}");
    assert!(r.took < limit, "{:?}", r.took);
    assert_eq!(cache_counts(&f.state), (entries, 0));
    // Asked again, it builds again (no recorded failure answers).
    let again = build(f, &[]);
    assert_eq!(code(&again.out), 128);
    assert!(again.make_runs() > 0, "{}", again.commands);
}

#[test]
fn a_tree_configured_in_tree_is_128_naming_mrproper_and_not_cached() {
    let f = fixture();
    let mut restore = Restore::new();
    fresh_change(&mut restore, &f.tree);
    // What `make defconfig` in the checkout leaves, and what kbuild's O= check looks for.
    restore.write(f.tree.join(".config"), b"CONFIG_64BIT=y\n");
    assert_host_failure(&f, "configured in-tree", Duration::from_secs(60));
    let r = build(&f, &[]);
    assert!(stderr(&r.out).contains("run `make mrproper` in the tree"));
    drop(restore);
}

#[test]
fn a_compiler_killed_by_a_signal_is_128_and_not_cached() {
    let f = fixture();
    let mut restore = Restore::new();
    // A gcc wrapper that SIGKILLs cc1 for init/version.c: what an OOM kill of cc1 looks like.
    let wrapper = f.tree.join("xtask-e2e-kill-cc1");
    restore.write(
        wrapper.clone(),
        b"#!/bin/sh\ncase \"$*\" in *cc1*init/version.c*) kill -9 $$ ;; esac\nexec \"$@\"\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    restore.append(
        f.tree.join("init/Makefile"),
        "\nCFLAGS_version.o += -wrapper /src/xtask-e2e-kill-cc1\n",
    );
    fresh_change(&mut restore, &f.tree);
    assert_host_failure(
        &f,
        "the compiler was killed (/src/xtask-e2e-kill-cc1)",
        Duration::from_secs(180),
    );
    drop(restore);
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "xtask-e2e"])
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs on {} (the tests run as root)",
            dir.display()
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_128_naming_it_and_not_cached() {
    let f = fixture();
    // A state dir of its own whose build dirs live on a 3 MiB tmpfs: the rootfs and the
    // trimmed config are the fixture's, the cache is empty.
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    std::fs::create_dir_all(state.join("config")).unwrap();
    std::os::unix::fs::symlink(f.state.join("rootfs"), state.join("rootfs")).unwrap();
    std::fs::copy(f.state.join("rootfs.json"), state.join("rootfs.json")).unwrap();
    std::fs::copy(
        f.state.join("config/trimmed.config"),
        state.join("config/trimmed.config"),
    )
    .unwrap();
    let _tmpfs = Tmpfs::mount(&state.join("build"), "3m");
    let start = Instant::now();
    let out = run(std::process::Command::new(&f.bin)
        .arg("--state-dir")
        .arg(&state)
        .arg("--tree")
        .arg(&f.tree)
        .arg("build"));
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 128, "{err}");
    assert!(
        err.contains("the disk is full (No space left on device)"),
        "{err}"
    );
    assert!(err.contains("nothing was cached"), "{err}");
    assert!(took < Duration::from_secs(180), "{took:?}");
    assert_eq!(cache_counts(&state), (0, 0));
}

/// The pids of processes whose command line contains every one of `words` (as whole
/// arguments) and whose parent is `parent`.
fn children_with(parent: u32, words: &[&str]) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // The parent is the second field after the command's closing parenthesis.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if words.iter().all(|w| args.iter().any(|a| a == w)) {
            out.push(pid);
        }
    }
    out
}

/// Moves the state's KVM answer away so that the next run probes, and puts it back after.
struct NoKvmAnswer {
    path: PathBuf,
    saved: Option<Vec<u8>>,
}

impl NoKvmAnswer {
    fn new(state: &Path) -> NoKvmAnswer {
        let path = state.join("kvm-probe.json");
        let saved = std::fs::read(&path).ok();
        let _ = std::fs::remove_file(&path);
        NoKvmAnswer { path, saved }
    }
}

impl Drop for NoKvmAnswer {
    fn drop(&mut self) {
        match &self.saved {
            Some(d) => std::fs::write(&self.path, d).unwrap(),
            None => {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// The probe's private directories in the state dir.
fn probe_dirs(state: &Path) -> usize {
    std::fs::read_dir(state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("kvm-probe."))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .count()
}

#[test]
fn a_garbage_kernel_never_makes_the_probe_call_kvm_unusable() {
    let f = fixture();
    let _answer = NoKvmAnswer::new(&f.state);
    let garbage = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(garbage.path(), vec![0x5a; 1 << 20]).unwrap();
    let start = Instant::now();
    let out = run(f
        .xtask()
        .arg("check")
        .arg("--kernel")
        .arg(garbage.path())
        .args(["--boot-timeout", "5s", "--", "true"]));
    let took = start.elapsed();
    assert_ne!(code(&out), 0);
    assert!(took < Duration::from_secs(120), "{took:?}");
    let answer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.state.join("kvm-probe.json")).unwrap()).unwrap();
    assert_eq!(answer["method"], "firmware", "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("proves nothing"),
        "{answer}"
    );
    assert_eq!(probe_dirs(&f.state), 0);
}

#[test]
fn the_kvm_probe_ends_with_its_run_on_ctrl_c_and_on_sigkill() {
    let f = fixture();
    let _answer = NoKvmAnswer::new(&f.state);
    for signal in [libc::SIGINT, libc::SIGKILL] {
        let mut child = f
            .xtask()
            .arg("check")
            .arg("--kernel")
            .arg(&f.kernel)
            .args(["--", "true"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut qemu = Vec::new();
        wait_until(Duration::from_secs(30), "the probe's QEMU", || {
            qemu = children_with(pid, &["-accel", "kvm", "-no-reboot"]);
            !qemu.is_empty()
        });
        let sent = Instant::now();
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, signal) };
        let status = child.wait().unwrap();
        let took = sent.elapsed();
        let err = {
            use std::io::Read;
            let mut s = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut s);
            s
        };
        if signal == libc::SIGINT {
            assert_eq!(status.code(), Some(130), "{err}");
            assert!(err.contains("interrupted"), "{err}");
            // Ending the probe's QEMU takes well under a second; a run that waited for the
            // probe's own 6 s deadline misses this.
            assert!(took < Duration::from_secs(5), "{took:?}");
            assert_eq!(probe_dirs(&f.state), 0);
        }
        wait_until(Duration::from_secs(3), "the probe's QEMU ends", || {
            qemu.iter().all(|p| gone(*p))
        });
    }
    // What the SIGKILL left (the probe's private directory) goes with the next probe.
    let out = run(f
        .xtask()
        .arg("check")
        .arg("--kernel")
        .arg(&f.kernel)
        .args(["--", "true"]));
    assert_eq!(code(&out), 0);
    assert_eq!(probe_dirs(&f.state), 0);
}

fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

#[test]
fn sigkill_mid_build_leaves_no_make_behind_and_the_next_build_works() {
    let f = fixture();
    let mut restore = Restore::new();
    fresh_change(&mut restore, &f.tree);
    let mut child = f
        .xtask()
        .arg("build")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut below = Vec::new();
    wait_until(
        Duration::from_secs(120),
        "make runs in the container",
        || {
            below = descendants(pid);
            command_log(&f.state, pid).contains(" bzImage")
                && below
                    .iter()
                    .any(|p| cmdline(*p).starts_with("make -C /src O=/build"))
        },
    );
    std::thread::sleep(Duration::from_secs(2));
    let below = descendants(pid);
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    child.wait().unwrap();
    wait_until(
        Duration::from_secs(5),
        "nspawn, make and the compilers end",
        || below.iter().all(|p| gone(*p)),
    );
    eprintln!(
        "all {} processes of the build ended {:?} after SIGKILL",
        below.len(),
        sent.elapsed()
    );
    // The next build takes the build dir at once (no make of the dead run holds or writes
    // it) and publishes.
    let next = build(&f, &[]);
    assert_eq!(code(&next.out), 0);
    assert!(
        !stderr(&next.out).contains("waiting for"),
        "{}",
        stderr(&next.out)
    );
    assert!(
        stdout(&next.out).contains("built:"),
        "{}",
        stdout(&next.out)
    );
    assert!(next.took < Duration::from_secs(240), "{:?}", next.took);
    assert_eq!(cache_counts(&f.state).1, 0);
    drop(restore);
}

#[test]
fn cache_leftovers_show_in_ls_and_go_with_gc_and_no_key_escapes() {
    let f = fixture();
    let cache = f.state.join("cache");
    let (k1, k2, k3) = ("e1".repeat(32), "e2".repeat(32), "e3".repeat(32));
    // What killed writers leave, and entries that cannot be read.
    for d in [
        format!("tmp/{k1}.Xa1b2c"),
        format!("tmp/old.{k1}.1"),
        format!("tmp/gc.{k1}.2"),
    ] {
        std::fs::create_dir_all(cache.join(d).join("modules")).unwrap();
    }
    std::fs::create_dir_all(cache.join("entries").join(&k2)).unwrap();
    std::fs::write(cache.join("entries").join(&k2).join("metadata.json"), "{").unwrap();
    // A metadata file whose key points out of the cache: never used as a path.
    let outside = f.state.join("xtask-e2e-outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(cache.join("entries").join(&k3)).unwrap();
    let good = std::fs::read_dir(cache.join("entries"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("metadata.json"))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\"status\": \"ok\"")))
        .expect("a good entry to copy");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(good).unwrap()).unwrap();
    meta["key"] = "../../xtask-e2e-outside".into();
    std::fs::write(
        cache.join("entries").join(&k3).join("metadata.json"),
        meta.to_string(),
    )
    .unwrap();

    let out = run(f.xtask().args(["cache", "ls"]));
    assert_eq!(code(&out), 0);
    let o = stdout(&out);
    assert!(
        o.lines()
            .any(|l| l.starts_with(&k2[..12]) && l.contains("CORRUPT")),
        "{o}"
    );
    assert!(
        o.lines()
            .any(|l| l.starts_with(&k3[..12]) && l.contains("names another key")),
        "{o}"
    );
    assert!(o.contains("2 corrupt"), "{o}");

    let start = Instant::now();
    let out = run(f.xtask().args(["cache", "gc", "--max-size", "1000G"]));
    assert_eq!(code(&out), 0);
    assert!(start.elapsed() < Duration::from_secs(30));
    let o = stdout(&out);
    assert!(o.contains(&format!("removed {}", &k2[..12])), "{o}");
    assert!(o.contains("left by a killed writer"), "{o}");
    assert_eq!(cache_counts(&f.state).1, 0);
    for k in [&k2, &k3] {
        assert!(!cache.join("entries").join(k).exists());
    }
    assert!(outside.is_dir(), "gc followed a key out of the cache");
    std::fs::remove_dir(&outside).unwrap();
    let out = run(f.xtask().args(["cache", "ls"]));
    assert!(!stdout(&out).contains("CORRUPT"), "{}", stdout(&out));
}

#[test]
fn a_state_dir_others_can_write_or_someone_elses_is_refused() {
    let f = fixture();
    use std::os::unix::fs::PermissionsExt;
    let scratch = tempfile::tempdir().unwrap();
    let state = scratch.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let xtask = |state: &Path| {
        let mut c = std::process::Command::new(&f.bin);
        c.arg("--state-dir")
            .arg(state)
            .arg("--tree")
            .arg(&f.tree)
            .args(["cache", "ls"]);
        c
    };
    let start = Instant::now();
    let out = run(&mut xtask(&state));
    assert_eq!(code(&out), 128);
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "the state dir {} is writable by others",
            state.display()
        )),
        "{err}"
    );
    assert!(err.contains("chmod o-w"), "{err}");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    // SAFETY: chown(2) on a directory of our own, to nobody.
    let path = std::ffi::CString::new(state.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::chown(path.as_ptr(), 65534, 65534) }, 0);
    let out = run(&mut xtask(&state));
    assert_eq!(code(&out), 128);
    let err = stderr(&out);
    assert!(err.contains("belongs to uid 65534, not to you"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(10));
    // Nothing was made in either.
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
}

/// A child that is killed if the test fails before it ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A stand-in `git`, first on PATH: a checkout takes the worktree's index.lock and blocks
/// (as a checkout of a big tree does, the moment a SIGKILL comes); everything else is git.
fn blocking_git(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = String::from_utf8(
        std::process::Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let script = format!(
        "#!/bin/sh\ncase \" $* \" in *\" checkout \"*)\n  gd=$({real} -C \"$2\" rev-parse --absolute-git-dir)\n  : > \"$gd/index.lock\"\n  exec sleep 600 ;;\nesac\nexec {real} \"$@\"\n",
        real = real.trim()
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(bin.join("git"), script).unwrap();
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn sigkill_during_a_checkout_leaves_an_index_lock_that_the_next_build_recovers() {
    let f = fixture();
    let before = tests::builds::checkout_state(&f.tree);
    let scratch = tempfile::tempdir().unwrap();
    let bin = blocking_git(scratch.path());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (rev1, rev2) = (side_commit(&f.tree), side_commit(&f.tree));
    // Starts `build REV`, waits until `ready`, then signals it; returns its stderr.
    let run_until = |rev: &str, with_path: &str, ready: &dyn Fn(u32) -> bool, signal| {
        let mut child = Reap(
            f.xtask()
                .args(["build", rev])
                .env("PATH", with_path)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let child = &mut child.0;
        let pid = child.id();
        wait_until(Duration::from_secs(120), "the build gets there", || {
            ready(pid)
        });
        let below = descendants(pid);
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, signal) };
        let status = child.wait().unwrap();
        wait_until(
            Duration::from_secs(5),
            "every process of the run ends",
            || below.iter().all(|p| gone(*p)),
        );
        let mut err = String::new();
        use std::io::Read;
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        eprintln!("{err}");
        (status, err)
    };
    let make_runs = |pid: u32| command_log(&f.state, pid).contains(" bzImage");
    // The worktree exists (made once, or checked out at rev1 with the real git); its make is
    // cut short.
    run_until(
        &rev1,
        &std::env::var("PATH").unwrap(),
        &make_runs,
        libc::SIGKILL,
    );
    let worktree = std::fs::read_dir(f.state.join("worktree"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let git_dir = tests::builds::git(&worktree, &["rev-parse", "--absolute-git-dir"]);
    let index_lock = Path::new(git_dir.trim()).join("index.lock");
    // A checkout of rev2, SIGKILLed while git holds index.lock: the stand-in git dies too.
    run_until(&rev2, &path, &|_| index_lock.exists(), libc::SIGKILL);
    assert!(index_lock.exists());
    std::thread::sleep(Duration::from_millis(1500));
    // The next build, with the real git: recovers, checks out rev2 and gets to make (Ctrl-C
    // then, so as not to build a whole kernel in a fresh worktree).
    let start = Instant::now();
    let (status, err) = run_until(
        &rev2,
        &std::env::var("PATH").unwrap(),
        &make_runs,
        libc::SIGINT,
    );
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(
        err.contains(&format!(
            "removed {}, which an interrupted checkout left",
            index_lock.display()
        )),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(!index_lock.exists());
    assert_eq!(
        tests::builds::git(&worktree, &["rev-parse", "HEAD"]).trim(),
        rev2
    );
    assert_eq!(tests::builds::checkout_state(&f.tree), before);
    assert_eq!(cache_counts(&f.state).1, 0);
}
