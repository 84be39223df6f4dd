//! End-to-end: `setup-rootfs` on the prepared rootfs (the no-op path), the toolchain inside
//! the build container, and bad input that must fail fast, clearly and without leftovers.

use std::process::Command;
use std::time::{Duration, Instant};
use tests::{code, fixture, run, stderr, stdout};

#[test]
fn unchanged_recipe_is_a_quick_no_op() {
    let f = fixture();
    let t = Instant::now();
    let out = run(f.xtask().arg("setup-rootfs"));
    let took = t.elapsed();
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("up to date"), "says it is up to date");
    // A rebuild takes minutes: only a case that rebuilds (or hangs) misses this.
    assert!(took < Duration::from_secs(60), "took {took:?}");
}

#[test]
fn toolchain_runs_in_the_container() {
    let f = fixture();
    let out = run(f
        .xtask()
        .args(["setup-rootfs", "--shell", "--", "gcc", "--version"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with("gcc "), "gcc answers");
    let out = run(f
        .xtask()
        .args(["setup-rootfs", "--shell", "--", "make", "--version"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).starts_with("GNU Make"), "make answers");
}

#[test]
fn the_container_has_the_build_mount_points() {
    let f = fixture();
    let out = run(f.xtask().args([
        "setup-rootfs",
        "--shell",
        "--",
        "test",
        "-d",
        "/src",
        "-a",
        "-d",
        "/build",
        "-a",
        "-d",
        "/ccache",
        "-a",
        "-d",
        "/out",
        "-a",
        "-d",
        "/xtask",
    ]));
    assert_eq!(code(&out), 0);
}

#[test]
fn exit_status_of_a_command_is_passed_on() {
    let f = fixture();
    let out = run(f
        .xtask()
        .args(["setup-rootfs", "--shell", "--", "sh", "-c", "exit 7"]));
    assert_eq!(code(&out), 7);
}

/// `cargo xtask` on a fresh state dir of its own (not the prepared one).
fn xtask_on(state: &std::path::Path) -> Command {
    let f = fixture();
    let mut c = Command::new(&f.bin);
    c.arg("--state-dir").arg(state).arg("--tree").arg(&f.tree);
    c
}

/// The lines of stderr that are errors.
fn error_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("error:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn unknown_suite_fails_fast_with_one_clear_line_and_no_leftovers() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let start = Instant::now();
    let out = run(xtask_on(&state).args(["setup-rootfs", "--suite", "nosuchsuite", "--force"]));
    assert_eq!(code(&out), 128);
    assert!(start.elapsed() < Duration::from_secs(60), "fails fast");
    let errors = error_lines(&stderr(&out));
    assert_eq!(errors.len(), 1, "one error line");
    assert!(
        errors[0].contains("nosuchsuite") && errors[0].contains("--suite"),
        "names the suite and the fix: {}",
        errors[0]
    );
    for leftover in ["rootfs", "rootfs.tmp", "rootfs.json"] {
        assert!(!state.join(leftover).exists(), "{leftover} left behind");
    }
}

#[test]
fn malformed_input_fails_before_any_download() {
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    for args in [
        ["setup-rootfs", "--suite", "Bookworm;rm", "--force"],
        ["setup-rootfs", "--mirror", "deb.debian.org", "--force"],
    ] {
        let start = Instant::now();
        let out = run(xtask_on(&state).args(args));
        assert_eq!(code(&out), 128);
        // A bootstrap would take minutes: only a case that starts one misses this.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(error_lines(&stderr(&out)).len(), 1);
        assert!(!state.join("rootfs.tmp").exists());
    }
}

#[test]
fn read_only_state_dir_is_one_clear_line() {
    let out = run(xtask_on(std::path::Path::new("/proc/xtask-state")).arg("setup-rootfs"));
    assert_eq!(code(&out), 128);
    let errors = error_lines(&stderr(&out));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("--state-dir"), "{}", errors[0]);
}

/// The toolchain identity builds are keyed by, as `doctor` prints it.
fn toolchain_identity(state: &std::path::Path) -> String {
    let out = run(xtask_on(state).arg("doctor"));
    let line = stdout(&out)
        .lines()
        .find(|l| l.starts_with("gcc (rootfs)"))
        .map(str::to_string);
    line.unwrap_or_else(|| panic!("doctor names no rootfs gcc: {}", stdout(&out)))
        .split_whitespace()
        .skip(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `setup-rootfs --force` while a check runs on the old rootfs: the new generation becomes
/// current, the old one stays while the check holds it (its toolchain and guest root never
/// change under it), and the next setup-rootfs removes it once the check has ended. The new
/// recipe changes the guest's inits only (the script and the compiled one's source): the
/// toolchain identity, and so every cached kernel, stays.
#[test]
fn force_rebuilds_beside_a_running_check_and_the_old_generation_goes_after_it() {
    let f = fixture();
    let t = tempfile::tempdir().unwrap();
    let state = t.path().join("state");
    let first = run(xtask_on(&state).arg("setup-rootfs"));
    assert_eq!(code(&first), 0, "{}", stderr(&first));
    let old = std::fs::canonicalize(state.join("rootfs")).unwrap();
    assert!(old.starts_with(state.join("rootfs.d")), "{}", old.display());
    let identity = toolchain_identity(&state);
    assert!(identity.starts_with("toolchain-"), "{identity}");
    // The recipe with a line added to the guest's init.
    let recipe = t.path().join("recipe");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rootfs"))
        .arg(&recipe)
        .status()
        .unwrap();
    assert!(copied.success());
    let init = recipe.join("overlay/usr/local/sbin/xtask-init");
    let text = std::fs::read_to_string(&init).unwrap();
    std::fs::write(&init, text + "# another line\n").unwrap();
    // And to the compiled fast init's source.
    let fast = recipe.join("guest-init/xtask-init-fast.rs");
    let text = std::fs::read_to_string(&fast).unwrap();
    std::fs::write(&fast, text + "// another line\n").unwrap();
    let on_new_recipe = |c: &mut Command| {
        c.env("XTASK_ROOTFS_RECIPE", &recipe);
    };

    let running = tests::start_until_agent_up(
        xtask_on(&state)
            .args(["check", "--kernel"])
            .arg(&f.kernel)
            .args(["--", "sleep", "600"]),
    );
    let start = Instant::now();
    let mut force = xtask_on(&state);
    on_new_recipe(force.args(["setup-rootfs", "--force"]));
    let forced = run(&mut force);
    assert_eq!(code(&forced), 0, "{}", stderr(&forced));
    assert_eq!(
        toolchain_identity(&state),
        identity,
        "the guest's init is no toolchain"
    );
    assert!(start.elapsed() < Duration::from_secs(600));
    let new = std::fs::canonicalize(state.join("rootfs")).unwrap();
    assert_ne!(new, old);
    assert!(
        new.join("usr/local/sbin/xtask-init-fast").is_file(),
        "the new rootfs has no compiled fast init: {}",
        stderr(&forced)
    );
    let prefetch = std::fs::read_to_string(new.join("usr/local/lib/xtask/prefetch"))
        .expect("the fast init's prefetch list");
    let listed: Vec<&str> = prefetch.lines().collect();
    assert_eq!(listed.first(), Some(&"/usr/sbin/qemu-ga"), "{prefetch}");
    assert!(listed.contains(&"/bin/sh"), "{prefetch}");
    assert!(
        listed.iter().any(|p| p.ends_with("/libc.so.6")),
        "{prefetch}"
    );
    for p in &listed {
        let in_tree = new.join(p.trim_start_matches('/'));
        // symlink_metadata: a link is looked at in the tree, not followed out of it.
        let there = in_tree.symlink_metadata().is_ok();
        assert!(there, "listed but not in the rootfs: {p}");
    }
    assert!(
        old.join("usr/bin/gcc").is_file(),
        "the old generation went while in use"
    );
    assert!(
        stderr(&forced).contains(&format!("kept the old rootfs generation {}", old.display())),
        "{}",
        stderr(&forced)
    );
    let (status, took) = running.interrupt(Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(30));

    let mut setup = xtask_on(&state);
    on_new_recipe(setup.arg("setup-rootfs"));
    let again = run(&mut setup);
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert!(stdout(&again).contains("up to date"));
    assert!(
        !old.exists(),
        "the old generation stayed after its user ended"
    );
    assert!(
        stderr(&again).contains(&format!(
            "removed the old rootfs generation {}",
            old.display()
        )),
        "{}",
        stderr(&again)
    );
    let trees: Vec<_> = std::fs::read_dir(state.join("rootfs.d"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(trees, vec![new], "one generation is left");
}
