//! The command line as a user meets it: help, bad input, doctor, completions.

use tests::{code, fixture, run, stderr, stdout};

#[test]
fn help_lists_every_subcommand() {
    let f = fixture();
    let out = run(f.xtask().arg("--help"));
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    for sub in [
        "setup-rootfs",
        "trim-config",
        "build",
        "boot",
        "check",
        "bisect",
        "doctor",
        "deps",
        "quickstart",
        "cache",
        "bench",
        "test",
        "completions",
    ] {
        assert!(text.contains(sub), "--help does not list {sub}");
    }
}

/// One clear line (no panic, no backtrace) and an exit code that aborts a `git bisect run`.
fn assert_clear_error(args: &[&str], needle: &str) {
    let f = fixture();
    // The fixture's state dir, but no --tree: some cases name their own.
    let mut cmd = std::process::Command::new(&f.bin);
    cmd.arg("--state-dir").arg(&f.state);
    if !args.contains(&"--tree") {
        cmd.arg("--tree").arg(&f.tree);
    }
    let out = run(cmd.args(args));
    let c = code(&out);
    assert!(
        c >= 128,
        "{args:?} exited {c}, want >= 128 so that git bisect run aborts"
    );
    let err = stderr(&out);
    assert!(
        err.contains(needle),
        "{args:?}: stderr does not name {needle:?}: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{args:?} panicked: {err}"
    );
}

#[test]
fn bad_input_gets_one_clear_line() {
    assert_clear_error(&["check", "--memory", "banana"], "banana");
    assert_clear_error(&["check", "--cpus", "0"], "--cpus 0");
    assert_clear_error(&["check", "--frobnicate"], "--frobnicate");
    assert_clear_error(&["check", "--timeout", "soon"], "soon");
    assert_clear_error(
        &["--tree", "/nonexistent/linux", "build"],
        "/nonexistent/linux",
    );
    assert_clear_error(&["--tree", "/usr/share", "build"], "not a kernel tree");
}

#[test]
fn doctor_names_every_tool_and_kvm() {
    let f = fixture();
    let out = run(f.xtask().arg("doctor"));
    assert_eq!(code(&out), 0, "doctor says the toolkit cannot work here");
    let text = stdout(&out);
    for tool in [
        "make",
        "git",
        "systemd-nspawn",
        "mmdebstrap",
        "debootstrap",
        "qemu-system-x86_64",
        "virtiofsd",
        "libvirtd",
        "virsh",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(tool)),
            "doctor does not report {tool}"
        );
    }
    assert!(
        text.contains("KVM usable") || text.contains("KVM unusable: falling back to TCG"),
        "{text}"
    );
}

#[test]
fn unknown_key_in_xtask_toml_is_named() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("xtask.toml");
    std::fs::write(&cfg, "[vm]\nmemroy = \"1G\"\n").unwrap();
    let out = run(f.xtask().env("XTASK_CONFIG", &cfg).arg("doctor"));
    assert!(code(&out) >= 128);
    assert!(stderr(&out).contains("memroy"), "{}", stderr(&out));
}

#[test]
fn completions_are_printed() {
    let f = fixture();
    let out = run(f.xtask().args(["completions", "bash"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("trim-config"));
}

/// `cargo xtask cache ls | head -1`: once the reader has gone, the output stops quietly (as a
/// shell's SIGPIPE would: 141) instead of a panic and its backtrace hint.
#[test]
fn closed_stdout_stops_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let f = fixture();
    let mut fds = [0; 2];
    // SAFETY: pipe() fills both descriptors, which we own from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let out = f
        .xtask()
        .args(["cache", "ls"])
        .stdout(std::process::Stdio::from(write))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 141, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
