//! `cargo xtask check` end to end: real QEMU, virtiofsd, rootfs and kernel (`--kernel`, so
//! nothing is built). Run through `cargo xtask test`, or with the XTASK_TEST_* variables set.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{code, fixture, processes_mentioning, run, run_dir_of, stderr, Fixture};

/// `cargo xtask check --kernel <fixture kernel> ARGS`.
fn check(f: &Fixture, args: &[&str]) -> Command {
    let mut c = f.xtask();
    c.arg("check").arg("--kernel").arg(&f.kernel).args(args);
    c
}

#[test]
fn a_passing_command_is_good() {
    let f = fixture();
    let out = run(&mut check(&f, &["--", "true"]));
    assert_eq!(code(&out), 0);
    let err = stderr(&out);
    assert!(err.contains("verdict: good"), "{err}");
    assert!(err.contains("boot-to-agent"), "{err}");
}

/// The trimmed config boots systemd to multi-user with qemu-guest-agent answering, and no
/// unit fails on the way (a failed one is listed).
#[test]
fn systemd_reaches_multi_user_with_no_failed_unit() {
    let f = fixture();
    let out = run(&mut check(
        &f,
        &[
            "--init",
            "systemd",
            "--",
            "sh",
            "-c",
            "systemctl is-system-running --wait; s=$?; systemctl --failed --no-legend; exit $s",
        ],
    ));
    let (o, e) = (tests::stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "stdout: {o}\nstderr: {e}");
    assert!(o.contains("running"), "stdout: {o}");
    assert!(e.contains("systemd init"), "{e}");
}

#[test]
fn a_failing_command_is_bad() {
    let f = fixture();
    let out = run(&mut check(&f, &["--", "false"]));
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("exited 1"));
}

/// A check that must end within `limit`; returns its output.
fn timed(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    let out = run(cmd);
    assert!(start.elapsed() < limit, "took {:?}", start.elapsed());
    out
}

#[test]
fn a_real_kernel_warning_is_bad_and_quiet_cannot_hide_it() {
    let f = fixture();
    let rev = tests::warning_rev(&f);
    for append in [None, Some("quiet loglevel=1")] {
        let mut c = f.xtask();
        c.args(["check", &rev]);
        if let Some(a) = append {
            c.args(["--append", a]);
        }
        let out = timed(c.args(["--", "true"]), Duration::from_secs(90));
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "--append {append:?}: {err}");
        assert!(err.contains("console: warning at line"), "{err}");
        assert!(err.contains(tests::REAL_WARNING), "{err}");
    }
}

#[test]
fn a_copy_of_a_warning_written_to_kmsg_is_good() {
    let f = fixture();
    let out = timed(
        &mut check(&f, &tests::KMSG_COPY_OF_A_WARNING),
        Duration::from_secs(60),
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(
        err.contains("not the kernel's: userspace wrote line"),
        "{err}"
    );
}

#[test]
fn a_panic_at_boot_is_untestable_with_a_command_and_bad_without() {
    let f = fixture();
    let out = run(&mut check(
        &f,
        &["--append", "init=/nonexistent", "--", "true"],
    ));
    assert_eq!(code(&out), 125);
    let out = run(&mut check(&f, &["--append", "init=/nonexistent"]));
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("panic"), "{}", stderr(&out));
}

#[test]
fn a_hung_boot_ends_at_its_timeout() {
    let f = fixture();
    let start = Instant::now();
    // PID 1 sleeps forever: no panic, no agent.
    let out = run(&mut check(
        &f,
        &[
            "--boot-timeout",
            "15s",
            "--append",
            "init=/bin/sleep -- infinity",
            "--",
            "true",
        ],
    ));
    assert_eq!(code(&out), 125);
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert!(stderr(&out).contains("never answered"), "{}", stderr(&out));
}

/// Names, sizes and mtimes of everything under `dir`, hashed.
fn digest(dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        h.update(format!("{} {} {}\n", e.path().display(), m.len(), mtime));
    }
    format!("{:x}", h.finalize())
}

#[test]
fn the_rootfs_is_read_only_by_default() {
    let f = fixture();
    let usr = std::fs::canonicalize(f.state.join("rootfs/usr")).unwrap();
    let before = digest(&usr);
    let out = run(&mut check(&f, &["--", "rm", "-rf", "/usr"]));
    // rm may well fail half-way (it deletes itself); the point is the host's copy.
    assert!([0, 1].contains(&code(&out)), "{}", stderr(&out));
    assert_eq!(digest(&usr), before, "the guest changed the shared rootfs");
}

#[test]
fn ctrl_c_ends_the_vm_and_cleans_up() {
    let f = fixture();
    let running = tests::start_until_agent_up(&mut check(&f, &["--", "sleep", "600"]));
    let run_dir = run_dir_of(&f, running.child.id());
    assert!(run_dir.join("qga.sock").exists());
    assert!(!processes_mentioning(&run_dir.to_string_lossy()).is_empty());

    let (status, took) = running.interrupt(Duration::from_secs(15));
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert_eq!(
        processes_mentioning(&run_dir.to_string_lossy()),
        Vec::<String>::new()
    );
    for s in ["qga.sock", "qmp.sock", "virtiofs.sock"] {
        assert!(!run_dir.join(s).exists(), "{s} left behind");
    }
    assert!(run_dir.join("console.log").exists(), "the logs stay");
}

/// SIGKILL runs no guard: QEMU and virtiofsd must still go with the run.
#[test]
fn a_killed_run_takes_its_vm_along() {
    let f = fixture();
    let mut running = tests::start_until_agent_up(&mut check(&f, &["--", "sleep", "600"]));
    let run_dir = run_dir_of(&f, running.child.id());
    let needle = run_dir.to_string_lossy().into_owned();
    assert!(!processes_mentioning(&needle).is_empty());
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
}

#[test]
fn a_script_runs_and_a_saved_run_is_judged_again() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("check.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"args: $*\"\n[ \"$1\" = a1 ]\n").unwrap();
    let out = run(check(&f, &["--json", "--script"])
        .arg(&script)
        .args(["--", "a1", "a2"]));
    assert_eq!(code(&out), 0);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(j["verdict"], "good");
    assert_eq!(j["runs"][0]["stdout"], "args: a1 a2\n");
    let run_dir = j["runs"][0]["run_dir"].as_str().unwrap().to_string();

    // The same run, judged again from its logs: good, then bad with a console regex.
    let again = |extra: &[&str]| {
        let mut c = f.xtask();
        c.args(["check", "--from-run", &run_dir]).args(extra);
        code(&run(&mut c))
    };
    assert_eq!(again(&[]), 0);
    assert_eq!(
        again(&["--bad-if-console", "xtask-init: fast mode ready"]),
        1
    );
}
