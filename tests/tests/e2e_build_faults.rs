//! Faults around `build` and the cache, end to end on the real tree, rootfs and container:
//! each asserts the exit code, a time bound, the reason named, and that nothing is left.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::builds::{build, entry_of, unique, Restore, EDITED};
use tests::{code, fixture, run, stderr, stdout};

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
