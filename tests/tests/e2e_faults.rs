//! Faults of limits and interruptions, end to end on the real tree, container and QEMU: a build
//! past `--build-timeout`, a cache-key lock held too long, Ctrl-C in the KVM probe, a garbage
//! kernel. Each asserts the exit code, a time bound, the reason named and that nothing is left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tests::builds::{build, command_log, unique, Restore, EDITED};
use tests::{
    code, descendants, fixture, gone, process_state, processes_mentioning, run, stderr, stdout,
    wait_until, Fixture,
};

/// A working state in no cache entry yet: a one-file change, an incremental build of 10-20 s
/// here (longer than the short limits below).
fn fresh_change(restore: &mut Restore, tree: &Path) {
    restore.append(
        tree.join(EDITED),
        &format!("\n/* xtask e2e: a limit test, {} */\n", unique()),
    );
}

fn entries(state: &Path) -> usize {
    std::fs::read_dir(state.join("cache/entries")).map_or(0, |d| d.count())
}

fn staging_left(state: &Path) -> usize {
    std::fs::read_dir(state.join("cache/tmp")).map_or(0, |d| d.count())
}

/// No process of a build is left: nspawn names the build dirs it binds.
fn assert_no_build_process(f: &Fixture) {
    let needle = f.state.join("build").display().to_string();
    wait_until(Duration::from_secs(5), "the build's processes end", || {
        processes_mentioning(&needle).is_empty()
    });
}

#[test]
fn a_build_past_its_build_timeout_is_128_and_nothing_is_cached() {
    let f = fixture();
    let mut restore = Restore::new();
    fresh_change(&mut restore, &f.tree);
    let before = entries(&f.state);
    // 1 s: a step's limit, and make's relink alone takes longer (5 s did not: this
    // machine's one-file build, its compile a ccache hit, took 6.9 s in two steps).
    let r = build(&f, &["--build-timeout", "1s"]);
    let err = stderr(&r.out);
    assert_eq!(code(&r.out), 128, "{err}");
    assert!(
        err.contains("did not finish within 1.0s and was ended (--build-timeout sets the limit"),
        "{err}"
    );
    assert!(r.took < Duration::from_secs(30), "{:?}", r.took);
    assert_eq!(entries(&f.state), before);
    assert_eq!(staging_left(&f.state), 0);
    assert_no_build_process(&f);
    // With the default limit it really builds: no recorded failure answers.
    let again = build(&f, &[]);
    assert_eq!(code(&again.out), 0, "{}", stderr(&again.out));
    assert!(
        stdout(&again.out).contains("built:"),
        "{}",
        stdout(&again.out)
    );
    assert!(again.make_runs() > 0, "{}", again.commands);
    assert!(again.took < Duration::from_secs(300), "{:?}", again.took);
    drop(restore);
}

/// `build` in the background, stderr piped.
fn spawn_build(f: &Fixture, args: &[&str]) -> Child {
    f.xtask()
        .arg("build")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The lock file of the cache key that a waiter named (`… cache key 0123456789ab, held …`).
fn key_lock_of(state: &Path, err: &str) -> PathBuf {
    let short = err
        .split("cache key ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no key in {err}"));
    std::fs::read_dir(state.join("cache/locks"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(short))
        .expect("the key's lock file")
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process of our own child's tree.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Whether `pid` is stopped, or gone.
fn stopped(pid: u32) -> bool {
    matches!(process_state(pid), None | Some('T' | 'Z'))
}

/// Processes held stopped (SIGSTOP); they go on (SIGCONT) when this is dropped, so a failing
/// assertion leaves no stopped build holding its key's lock.
struct Frozen(Vec<u32>);

impl Frozen {
    /// Stops `pid` and every process below it, scanning again until a scan finds no new one
    /// (a process forked just before its parent stopped shows up in the next).
    fn below(pid: u32) -> Frozen {
        let mut frozen = Frozen(Vec::new());
        loop {
            let new: Vec<u32> = descendants(pid)
                .into_iter()
                .filter(|p| !frozen.0.contains(p))
                .collect();
            if new.is_empty() {
                return frozen;
            }
            for &p in &new {
                signal(p, libc::SIGSTOP);
            }
            frozen.0.extend(&new);
            wait_until(Duration::from_secs(5), "the build's processes stop", || {
                new.iter().all(|&p| stopped(p))
            });
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &p in &self.0 {
            signal(p, libc::SIGCONT);
        }
    }
}

/// Ctrl-C to `child`, then lets the `frozen` processes go on, so they end as it ends them.
fn interrupt(child: &mut Child, frozen: Option<Frozen>) -> (Option<i32>, Duration) {
    let sent = Instant::now();
    signal(child.id(), libc::SIGINT);
    drop(frozen);
    let status = child.wait().unwrap();
    (status.code(), sent.elapsed())
}

#[test]
fn a_key_lock_held_past_the_limit_gives_up_naming_the_holder() {
    let f = fixture();
    let mut restore = Restore::new();
    fresh_change(&mut restore, &f.tree);
    // Our own holder: a build of the same key, in its make.
    let mut holder = spawn_build(&f, &[]);
    let pid = holder.id();
    wait_until(Duration::from_secs(120), "the holder's make runs", || {
        command_log(&f.state, pid).contains(" bzImage")
    });
    // An incremental build here can end within the waiter's limit: its make is held stopped.
    let mut make = None;
    wait_until(Duration::from_secs(30), "the holder's make process", || {
        make = descendants(pid).into_iter().find(|&p| comm(p) == "make");
        make.is_some()
    });
    let frozen = Frozen::below(make.unwrap());
    let r = build(&f, &["--build-timeout", "3s"]);
    let err = stderr(&r.out);
    assert_eq!(code(&r.out), 128, "{err}");
    assert!(
        err.contains("gave up after 3.0s waiting for another build of cache key ")
            && err.contains(&format!("held by pid {pid} (")),
        "{err}"
    );
    assert!(r.took < Duration::from_secs(15), "{:?}", r.took);
    assert_eq!(r.make_runs(), 0, "{}", r.commands);
    let lock = key_lock_of(&f.state, &err);
    let (status, took) = interrupt(&mut holder, Some(frozen));
    assert_eq!(status, Some(130));
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_no_build_process(&f);

    // A holder that is not ours (flock(1)) writes nothing: the dead build's line names no one.
    let mut flock = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    wait_until(Duration::from_secs(5), "flock holds the lock", || {
        !Command::new("flock")
            .arg("-n")
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
    });
    let r = build(&f, &["--build-timeout", "2s"]);
    let err = stderr(&r.out);
    flock.kill().unwrap();
    flock.wait().unwrap();
    assert_eq!(code(&r.out), 128, "{err}");
    assert!(
        err.contains("gave up after 2.0s waiting for another build of cache key ")
            && err.contains("held by another process: let it finish, or end it"),
        "{err}"
    );
    assert!(!err.contains(&format!("pid {pid}")), "{err}");
    assert!(r.took < Duration::from_secs(15), "{:?}", r.took);
    assert_eq!(staging_left(&f.state), 0);
    assert!(processes_mentioning(&lock.display().to_string()).is_empty());
    drop(restore);
}

/// Keeps the state's KVM answer as it was and puts it back after.
struct KeepKvmAnswer {
    path: PathBuf,
    saved: Vec<u8>,
}

impl KeepKvmAnswer {
    /// Makes sure there is an answer (`doctor` probes when there is none) and keeps it.
    fn new(f: &Fixture) -> KeepKvmAnswer {
        let path = f.state.join("kvm-probe.json");
        if !path.exists() {
            assert_eq!(code(&run(f.xtask().arg("doctor"))), 0);
        }
        KeepKvmAnswer {
            saved: std::fs::read(&path).unwrap(),
            path,
        }
    }

    fn now(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }
}

impl Drop for KeepKvmAnswer {
    fn drop(&mut self) {
        std::fs::write(&self.path, &self.saved).unwrap();
    }
}

fn probe_dir_prefix(f: &Fixture) -> String {
    f.state.join("kvm-probe.").display().to_string()
}

#[test]
fn ctrl_c_during_doctor_reprobe_is_130_and_keeps_the_answer() {
    let f = fixture();
    let answer = KeepKvmAnswer::new(&f);
    let mut child = f
        .xtask()
        .args(["doctor", "--reprobe"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let prefix = probe_dir_prefix(&f);
    let mut qemu = Vec::new();
    wait_until(Duration::from_secs(30), "the probe's QEMU runs", || {
        qemu = descendants(pid)
            .into_iter()
            .filter(|p| {
                let c = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&c).contains(&prefix)
            })
            .collect();
        !qemu.is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let (status, took) = interrupt(&mut child, None);
    let mut err = String::new();
    use std::io::Read;
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    eprintln!("{err}");
    assert_eq!(status, Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    // Ending the probe's QEMU takes well under a second; a run that waited for the probe's
    // own 6 s deadline (QEMU ran 0.5 s already) misses this.
    assert!(took < Duration::from_secs(5), "{took:?}");
    wait_until(Duration::from_secs(3), "the probe's QEMU ends", || {
        qemu.iter().all(|p| gone(*p))
    });
    assert!(processes_mentioning(&prefix).is_empty());
    assert_eq!(
        answer.now(),
        answer.saved,
        "the interrupted probe wrote an answer"
    );
    let dirs = std::fs::read_dir(&f.state)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kvm-probe."))
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(dirs, 0, "the probe's directory was left");
}

/// What `doctor` says of KVM, without the timings.
fn doctor_kvm(f: &Fixture) -> String {
    let out = run(f.xtask().arg("doctor"));
    assert_eq!(code(&out), 0);
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("KVM "))
        .expect("a KVM line")
        .to_string();
    line.split(" (").next().unwrap().to_string()
}

#[test]
fn a_garbage_kernel_is_125_and_doctor_still_says_what_it_said() {
    let f = fixture();
    let _answer = KeepKvmAnswer::new(&f);
    let before = doctor_kvm(&f);
    let garbage = tempfile::NamedTempFile::new().unwrap();
    let mut bytes = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut r| std::io::Read::read_exact(&mut r, &mut bytes))
        .unwrap();
    std::fs::write(garbage.path(), bytes).unwrap();
    let start = Instant::now();
    let out = run(f
        .xtask()
        .arg("check")
        .arg("--kernel")
        .arg(garbage.path())
        .args(["--boot-timeout", "10s", "--", "true"]));
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    // Random bytes either hang (the agent never answers) or end the VM at once.
    assert!(
        err.contains("verdict: untestable (exit 125): ")
            && err.contains("before the command could run"),
        "{err}"
    );
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert!(processes_mentioning(&garbage.path().display().to_string()).is_empty());
    assert_eq!(doctor_kvm(&f), before);
}

/// A big `--script` takes a while to go through the agent; Ctrl-C in the middle of it ends the
/// upload, the VM and virtiofsd at once.
#[test]
fn ctrl_c_during_a_script_upload_is_130_and_leaves_nothing() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("big.sh");
    let mut text = b"#!/bin/sh\nexit 0\n".to_vec();
    text.resize(60_000_000, b'#');
    std::fs::write(&script, text).unwrap();
    let running = tests::start_until_agent_up(
        f.xtask()
            .arg("check")
            .arg("--kernel")
            .arg(&f.kernel)
            .arg("--script")
            .arg(&script),
    );
    let run_dir = tests::run_dir_of(&f, running.child.id());
    let (status, took) = running.interrupt(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(8), "{took:?}");
    wait_until(Duration::from_secs(3), "the run's processes end", || {
        processes_mentioning(&run_dir.display().to_string()).is_empty()
    });
    for s in ["qga.sock", "qmp.sock", "virtiofs.sock"] {
        assert!(!run_dir.join(s).exists(), "{s} left behind");
    }
    // Cut short in the upload: writes went out, the script never ran.
    let agent = std::fs::read_to_string(run_dir.join("agent.jsonl")).unwrap();
    assert!(agent.contains("\"guest-file-write\""), "{agent}");
    assert!(!agent.contains("\"guest-exec\""), "{agent}");
}

/// A git that hangs (a stand-in first on PATH: `--version` answers, anything else blocks, as
/// git on a dead NFS mount does) is ended at its limit, git's default of 2 minutes, with the
/// command named; nothing of it is left.
#[test]
fn a_hung_git_is_ended_at_its_limit_and_named() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let real = stdout(&run(Command::new("sh").args(["-c", "command -v git"])));
    std::fs::write(
        bin.join("git"),
        format!(
            "#!/bin/sh\ncase \"$*\" in *--version*) exec {} \"$@\" ;; esac\nsleep 6007\n",
            real.trim()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("git"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let start = Instant::now();
    let out = run(f.xtask().arg("build").env("PATH", &path));
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), 128, "{err}");
    assert!(
        err.contains("git ") && err.contains("` did not finish within 2m00s and was ended"),
        "{err}"
    );
    assert!(took >= Duration::from_secs(120), "{took:?}");
    assert!(took < Duration::from_secs(150), "{took:?}");
    wait_until(Duration::from_secs(5), "the stand-in git ends", || {
        processes_mentioning(&bin.display().to_string()).is_empty()
            && processes_mentioning("sleep 6007").is_empty()
    });
}
