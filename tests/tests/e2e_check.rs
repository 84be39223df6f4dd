//! `cargo xtask check` end to end: real QEMU, virtiofsd, rootfs and kernel (`--kernel`, so
//! nothing is built). Run through `cargo xtask test`, or with the XTASK_TEST_* variables set.

use std::path::{Path, PathBuf};
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

/// The compiled fast init (rootfs/guest-init) gives a check the system the shell init gives
/// it: the same mounts with the same options, the loopback up, the agent's port link, /dev/fd,
/// the hostname, no old root left; only PID 1 differs. The shell init is booted by naming it
/// with `--append init=...` (the last init= wins).
#[test]
fn the_compiled_fast_init_makes_the_system_the_shell_init_makes() {
    let f = fixture();
    let probe = "readlink /proc/1/exe; hostname; cat /sys/class/net/lo/flags; \
                 readlink /dev/fd; ls /dev/virtio-ports; ls -d /oldroot 2>&1; \
                 cut -d' ' -f2-4 /proc/self/mounts | sort";
    let system = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["--", "sh", "-c", probe]);
        let out = run(&mut check(&f, &args));
        assert_eq!(code(&out), 0, "{}", stderr(&out));
        let text = tests::stdout(&out);
        let (pid1, rest) = text.split_once('\n').unwrap();
        (pid1.to_string(), rest.to_string())
    };
    let (fast_pid1, fast) = system(&[]);
    let (script_pid1, script) = system(&["--append", "init=/usr/local/sbin/xtask-init"]);
    assert_eq!(fast_pid1, "/usr/local/sbin/xtask-init-fast");
    assert!(script_pid1.ends_with("/busybox"), "{script_pid1}");
    assert_eq!(fast, script);
    // What the system is, beyond being the same: its name, lo up (IFF_UP), /dev/fd, the
    // agent's port, the overlay root and a /dev/shm of its own.
    let lines: Vec<&str> = fast.lines().collect();
    assert_eq!(lines[0], "xtask", "{fast}");
    let lo = u32::from_str_radix(lines[1].trim_start_matches("0x"), 16).unwrap();
    assert_eq!(lo & 1, 1, "lo is down: {fast}");
    assert_eq!(lines[2], "/proc/self/fd", "{fast}");
    assert!(lines.contains(&"org.qemu.guest_agent.0"), "{fast}");
    assert!(fast.contains("\n/ overlay rw"), "{fast}");
    assert!(fast.contains("\n/dev/shm tmpfs rw,nosuid,nodev"), "{fast}");
    assert!(
        !fast.contains("/oldroot "),
        "the old root is still mounted: {fast}"
    );
}

/// The trimmed config boots systemd to a check's own target (xtask.target: the basic system
/// and the guest agent) with qemu-guest-agent answering, and no unit fails on the way (a
/// failed one is listed).
#[test]
fn systemd_reaches_its_target_with_no_failed_unit() {
    let f = fixture();
    let out = run(&mut check(
        &f,
        &[
            "--init",
            "systemd",
            "--",
            "sh",
            "-c",
            "systemctl is-system-running --wait; s=$?; systemctl --failed --no-legend; \
             systemctl is-active xtask.target multi-user.target; exit $s",
        ],
    ));
    let (o, e) = (tests::stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "stdout: {o}\nstderr: {e}");
    assert!(o.starts_with("running\nactive\ninactive"), "stdout: {o}");
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
fn within(cmd: &mut Command, limit: Duration) -> std::process::Output {
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
        let out = within(c.args(["--", "true"]), Duration::from_secs(90));
        let err = stderr(&out);
        assert_eq!(code(&out), 1, "--append {append:?}: {err}");
        assert!(err.contains("console: warning at line"), "{err}");
        assert!(err.contains(tests::REAL_WARNING), "{err}");
    }
}

#[test]
fn a_copy_of_a_warning_written_to_kmsg_is_good() {
    let f = fixture();
    let out = within(
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

/// Straight to the console, not through printk: no timestamp, so not the kernel's.
#[test]
fn a_kernel_looking_line_written_to_the_console_is_good() {
    let f = fixture();
    let line = "BUG: kernel NULL pointer dereference, address: 0000000000000000";
    let echo = format!("echo '{line}' > /dev/console");
    let out = within(
        &mut check(&f, &["--json", "--", "sh", "-c", &echo]),
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(j["verdict"], "good");
    // It did reach the console.
    let run_dir = j["runs"][0]["run_dir"].as_str().unwrap();
    let console = std::fs::read_to_string(Path::new(run_dir).join("console.log")).unwrap();
    assert!(console.contains(line), "{console}");
}

#[test]
fn a_panic_at_boot_is_untestable_with_a_command_and_bad_without() {
    let f = fixture();
    // The stage that failed, as --json and the run's result.json say it.
    let stage = |out: &std::process::Output| {
        let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        let run_dir = Path::new(j["run_dir"].as_str().unwrap());
        let saved: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run_dir.join("result.json")).unwrap()).unwrap();
        assert_eq!(saved["judgement"]["failure"], j["failure"], "{saved}");
        j["failure"]["stage"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let out = within(
        &mut check(
            &f,
            &["--json", "--append", "init=/nonexistent", "--", "true"],
        ),
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 125);
    // The command never ran: the boot failed.
    assert_eq!(stage(&out), "boot");
    let out = within(
        &mut check(&f, &["--json", "--append", "init=/nonexistent"]),
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("panic"), "{}", stderr(&out));
    // The boot was the test, and it failed.
    assert_eq!(stage(&out), "test");
}

#[test]
fn a_hung_boot_ends_at_its_timeout() {
    let f = fixture();
    let start = Instant::now();
    // PID 1 reads the console forever: no panic, no agent. (Not `init=/bin/sleep --
    // infinity`: the fast lane's microvm puts its devices after a `--`, see spec.rs.)
    let out = run(&mut check(
        &f,
        &[
            "--boot-timeout",
            "15s",
            "--append",
            "init=/bin/cat",
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

/// `--rw` keeps the guest's writes in a layer on the host: a guest that breaks /usr/bin/gcc
/// sees its change again in the next `--rw` run, while the rootfs, a read-only run and the
/// build container's gcc stay as they were; `layer rm` removes it. Nothing is mounted on the
/// host at any point (the overlay lives in virtiofsd's own mount namespace).
#[test]
fn a_guest_that_writes_gcc_with_rw_changes_only_its_layer() {
    let f = fixture();
    let layer = format!("e2e-{}", std::process::id());
    let gcc = std::fs::canonicalize(f.state.join("rootfs/usr/bin/gcc")).unwrap();
    let before = std::fs::read(&gcc).unwrap();
    let start = Instant::now();
    let out = run(&mut check(
        &f,
        &[
            "--rw",
            "--layer",
            &layer,
            "--",
            "sh",
            "-c",
            "echo broken > /usr/bin/gcc",
        ],
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        std::fs::read(&gcc).unwrap(),
        before,
        "the guest wrote into the rootfs"
    );
    assert!(
        !std::fs::read_to_string("/proc/mounts")
            .unwrap()
            .contains(&layer),
        "the layer's overlay is mounted on the host"
    );
    let again = run(&mut check(
        &f,
        &["--rw", "--layer", &layer, "--", "cat", "/usr/bin/gcc"],
    ));
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    assert_eq!(
        tests::stdout(&again).trim(),
        "broken",
        "the layer did not keep the write"
    );
    let ro = run(&mut check(
        &f,
        &["--", "sh", "-c", "head -c 4 /usr/bin/gcc | tail -c 3"],
    ));
    assert_eq!(code(&ro), 0, "{}", stderr(&ro));
    assert_eq!(
        tests::stdout(&ro).trim(),
        "ELF",
        "a read-only run sees the layer"
    );
    assert!(
        start.elapsed() < Duration::from_secs(240),
        "{:?}",
        start.elapsed()
    );

    // The build container's toolchain is the rootfs's own: gcc runs, and the key is the same.
    let cc = run(f
        .xtask()
        .args(["setup-rootfs", "--shell", "--", "gcc", "--version"]));
    assert_eq!(code(&cc), 0, "{}", stderr(&cc));
    let build = run(f.xtask().arg("build"));
    assert_eq!(code(&build), 0, "{}", stderr(&build));
    assert!(
        tests::stdout(&build).contains("no make run"),
        "{}",
        tests::stdout(&build)
    );

    let ls = run(f.xtask().args(["layer", "ls"]));
    assert!(
        tests::stdout(&ls).lines().any(|l| l.starts_with(&layer)),
        "{}",
        tests::stdout(&ls)
    );
    let rm = run(f.xtask().args(["layer", "rm", &layer]));
    assert_eq!(code(&rm), 0, "{}", stderr(&rm));
    assert!(!f.state.join("layers").join(&layer).exists());
    let gone = run(f.xtask().args(["layer", "rm", &layer]));
    assert_eq!(code(&gone), 128);
    assert!(stderr(&gone).contains("no layer"), "{}", stderr(&gone));
}

/// `--share DIR` is the one read-write place both sides see: the guest reads what the host put
/// there and the host finds what the guest wrote (the article's coredumps).
#[test]
fn a_share_dir_is_read_write_on_both_sides() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("from-host"), "host\n").unwrap();
    let share = dir.path().to_string_lossy().into_owned();
    let start = Instant::now();
    let out = run(&mut check(
        &f,
        &[
            "--share",
            &share,
            "--",
            "sh",
            "-c",
            "cat /mnt/share/from-host && echo guest > /mnt/share/from-guest",
        ],
    ));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(tests::stdout(&out).trim(), "host");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("from-guest")).unwrap(),
        "guest\n"
    );
    let gone = processes_mentioning(&share);
    assert!(gone.is_empty(), "the share's virtiofsd is left: {gone:?}");
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
    // Nothing ran its cleanup: the next run removes the sockets it left (the logs stay).
    let next = run(f.xtask().args(["cache", "ls"]));
    assert_eq!(code(&next), 0);
    let left: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".sock"))
        .collect();
    assert!(
        left.is_empty(),
        "sockets left in {}: {left:?}",
        run_dir.display()
    );
    assert!(run_dir.join("console.log").exists());
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

// ---- Verdicts that match reality: the kernel's doing, or not (exit 128) ------------------

/// A check run to its end: its output, how long it took and its run dir.
fn run_to_end(f: &Fixture, cmd: &mut Command) -> (std::process::Output, Duration, PathBuf) {
    let (out, took, pid) = tests::run_with_pid(cmd);
    (out, took, run_dir_of(f, pid))
}

/// The run ended with `code`, within `secs` seconds, and its stderr `says` why.
fn assert_ended(out: &std::process::Output, took: Duration, code: i32, secs: u64, says: &str) {
    assert_eq!(tests::code(out), code, "{}", stderr(out));
    assert!(took < Duration::from_secs(secs), "{took:?}");
    assert!(stderr(out).contains(says), "{}", stderr(out));
}

/// No QEMU or virtiofsd of the run is left, and none of its sockets.
fn assert_nothing_left(run_dir: &Path) {
    assert_eq!(
        processes_mentioning(&run_dir.to_string_lossy()),
        Vec::<String>::new()
    );
    for s in ["qga.sock", "qmp.sock", "virtiofs.sock", "virtiofs.sock.pid"] {
        assert!(!run_dir.join(s).exists(), "{s} left behind");
    }
}

/// Sends `signal` to the run's process whose command line starts with `program`.
fn kill_run_process(run_dir: &Path, program: &str, signal: i32) {
    let pid = match program {
        // virtiofsd writes its pid beside its socket.
        "virtiofsd" => std::fs::read_to_string(run_dir.join("virtiofs.sock.pid"))
            .unwrap()
            .trim()
            .parse::<i32>()
            .unwrap(),
        _ => {
            let out = Command::new("pgrep")
                .arg("-f")
                .arg(format!("^[^ ]*{program}.*{}", run_dir.display()))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .next()
                .expect("the run's process")
                .parse()
                .unwrap()
        }
    };
    eprintln!("killing {program} (pid {pid}) with signal {signal}");
    // SAFETY: kill(2) on a pid we just looked up.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

#[test]
fn a_background_child_holding_the_output_does_not_hold_the_verdict() {
    let f = fixture();
    let (out, took, run_dir) = run_to_end(
        &f,
        &mut check(
            &f,
            &["--", "sh", "-c", "sleep 600 & echo out; echo err >&2; true"],
        ),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(took < Duration::from_secs(45), "{took:?}");
    assert!(
        stderr(&out).contains("the command exited 0"),
        "{}",
        stderr(&out)
    );
    assert_eq!(tests::stdout(&out), "out\n");
    assert!(stderr(&out).contains("err\n"));
    assert_nothing_left(&run_dir);
}

#[test]
fn a_command_the_guest_lacks_is_a_setup_fault() {
    let f = fixture();
    let (out, took, run_dir) = run_to_end(&f, &mut check(&f, &["--", "no-such-cmd", "x"]));
    assert_ended(&out, took, 128, 45, "the guest cannot run `no-such-cmd`");
    assert_nothing_left(&run_dir);
}

/// The script goes to the guest's /run, a tmpfs of half the guest's memory: 70 MB do not
/// fit in 64.
#[test]
fn a_failed_script_upload_is_a_setup_fault() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("big.sh");
    let mut text = b"#!/bin/sh\nexit 0\n".to_vec();
    text.resize(70_000_000, b'#');
    std::fs::write(&script, text).unwrap();
    let (out, took, run_dir) = run_to_end(
        &f,
        check(&f, &["--memory", "128M", "--script"]).arg(&script),
    );
    assert_eq!(code(&out), 128);
    assert!(took < Duration::from_secs(180), "{took:?}");
    let err = stderr(&out);
    assert!(
        err.contains("copying the script into the guest failed") && err.contains("No space left"),
        "{err}"
    );
    assert_nothing_left(&run_dir);
}

/// QEMU refuses to start (here: a kernel file that is not a kernel): 128 with QEMU's words,
/// not 125 (a kernel that did not boot) or 1.
#[test]
fn qemu_exiting_at_start_is_a_setup_fault_with_its_words() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bzImage");
    std::fs::write(&bogus, vec![0x5a; 4096]).unwrap();
    let mut c = f.xtask();
    c.arg("check")
        .arg("--kernel")
        .arg(&bogus)
        .args(["--", "true"]);
    let (out, took, run_dir) = run_to_end(&f, &mut c);
    assert_ended(
        &out,
        took,
        128,
        20,
        "QEMU exited at start (exit 1): qemu: invalid kernel header",
    );
    assert_nothing_left(&run_dir);
}

/// QEMU splits option values at `,`: a state dir named with one must still work.
#[test]
fn a_state_dir_with_a_comma_works() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state,1");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::symlink(
        std::fs::canonicalize(f.state.join("rootfs")).unwrap(),
        state.join("rootfs"),
    )
    .unwrap();
    let mut c = Command::new(&f.bin);
    c.arg("--state-dir")
        .arg(&state)
        .args(["check", "--kernel"])
        .arg(&f.kernel)
        .args(["--", "true"]);
    let start = Instant::now();
    let out = run(&mut c);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert!(
        stderr(&out).contains("the command exited 0"),
        "{}",
        stderr(&out)
    );
}

/// virtiofsd killed while the command runs: seen at once (not at the command's timeout),
/// retried once, killed again: 128 naming virtiofsd.
#[test]
fn a_virtiofsd_killed_twice_is_an_infrastructure_fault() {
    let f = fixture();
    let start = Instant::now();
    let mut running =
        tests::start_until_agent_up(&mut check(&f, &["--timeout", "300s", "--", "sleep", "600"]));
    let run_dir = run_dir_of(&f, running.child.id());
    kill_run_process(&run_dir, "virtiofsd", libc::SIGKILL);
    running.wait_for("running it once more");
    running.wait_for("guest agent up");
    kill_run_process(&run_dir, "virtiofsd", libc::SIGKILL);
    let (status, err) = running.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(128));
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.contains("verdict: abort (exit 128): virtiofsd (the rootfs share) exited (killed by signal 9) while the VM ran"),
        "{err}"
    );
    assert!(
        run_dir.join("attempt-1/console.log").exists(),
        "the first attempt's logs stay"
    );
    assert_nothing_left(&run_dir);
}

/// QEMU killed once while the command runs: retried, and the retry's verdict stands.
#[test]
fn a_qemu_killed_once_is_retried_and_the_retry_judges() {
    let f = fixture();
    let running = tests::start_until_agent_up(&mut check(&f, &["--", "sh", "-c", "sleep 3; true"]));
    let run_dir = run_dir_of(&f, running.child.id());
    kill_run_process(&run_dir, "qemu-system", libc::SIGKILL);
    let (status, err) = running.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("not the kernel's fault: QEMU was killed by signal 9 from outside; running it once more"),
        "{err}"
    );
    assert!(err.contains("verdict: good"), "{err}");
    assert_nothing_left(&run_dir);
}

/// QEMU told to quit (SIGTERM) exits 0 like a guest that reset itself: its log tells them
/// apart. Twice: 128.
#[test]
fn a_qemu_terminated_twice_is_an_infrastructure_fault() {
    let f = fixture();
    let start = Instant::now();
    let mut running = tests::start_until_agent_up(&mut check(&f, &["--", "sleep", "600"]));
    let run_dir = run_dir_of(&f, running.child.id());
    kill_run_process(&run_dir, "qemu-system", libc::SIGTERM);
    running.wait_for("running it once more");
    running.wait_for("guest agent up");
    kill_run_process(&run_dir, "qemu-system", libc::SIGTERM);
    let (status, err) = running.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(128));
    assert!(
        start.elapsed() < Duration::from_secs(90),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.contains("verdict: abort (exit 128): QEMU was told to quit from outside: qemu-system-x86_64: terminating on signal 15"),
        "{err}"
    );
    assert_nothing_left(&run_dir);
}

/// The trimmed config has no MAGIC_SYSRQ: the command makes the kernel panic by running it
/// out of memory with panic_on_oom set. Bad, found when QEMU goes (not at the timeout), named.
#[test]
fn a_panic_after_the_agent_answered_is_bad_and_named() {
    let f = fixture();
    let (out, took, run_dir) = run_to_end(
        &f,
        &mut check(
            &f,
            &[
                "--memory",
                "128M",
                "--timeout",
                "300s",
                "--",
                "sh",
                "-c",
                "echo 1 >/proc/sys/vm/panic_on_oom && mount -o remount,size=100% /dev/shm && cat /dev/zero >/dev/shm/fill",
            ],
        ),
    );
    assert_eq!(code(&out), 1);
    assert!(took < Duration::from_secs(90), "{took:?}");
    assert!(
        stderr(&out).contains("verdict: bad (exit 1): console: panic at line")
            && stderr(&out).contains("Kernel panic - not syncing: Out of memory"),
        "{}",
        stderr(&out)
    );
    assert_nothing_left(&run_dir);
}

/// One deadline for the whole command.
#[test]
fn a_command_past_its_timeout_is_bad_at_the_timeout() {
    let f = fixture();
    let (out, took, run_dir) = run_to_end(
        &f,
        &mut check(&f, &["--timeout", "5s", "--", "sleep", "600"]),
    );
    assert_ended(&out, took, 1, 45, "the command timed out");
    assert_nothing_left(&run_dir);
}

/// The agent channel breaking mid-command (here the command kills qemu-ga; the one init
/// restarts knows nothing of the command): an agent fault, retried, then 128, not a timeout.
#[test]
fn the_agent_failing_mid_command_is_an_infrastructure_fault() {
    let f = fixture();
    let (out, took, run_dir) = run_to_end(
        &f,
        &mut check(
            &f,
            &[
                "--timeout",
                "120s",
                "--",
                "sh",
                "-c",
                "sleep 1; kill $(pidof qemu-ga); sleep 8",
            ],
        ),
    );
    assert_eq!(code(&out), 128);
    assert!(took < Duration::from_secs(90), "{took:?}");
    let err = stderr(&out);
    assert!(err.contains("running it once more"), "{err}");
    assert!(
        err.contains("verdict: abort (exit 128): the guest agent failed: waiting for the command"),
        "{err}"
    );
    assert_nothing_left(&run_dir);
}

/// virtiofsd exiting at start (a stand-in that gives the real one an option it refuses, and
/// passes `--version`/`--help` through so that it is accepted): 128 with its words, on one
/// line.
#[test]
fn virtiofsd_exiting_at_start_is_a_setup_fault_with_its_words() {
    let f = fixture();
    let real = std::env::var("XTASK_VIRTIOFSD").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cargo/bin/virtiofsd")
    });
    let dir = tempfile::tempdir().unwrap();
    let stand_in = dir.path().join("virtiofsd");
    std::fs::write(
        &stand_in,
        format!(
            "#!/bin/sh\ncase \"$1\" in --version|--help|-V|-h) exec {real} \"$@\";; esac\n\
             exec {real} --thread-pool-size=lots \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&stand_in, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut c = check(&f, &["--", "true"]);
    c.env("XTASK_VIRTIOFSD", &stand_in);
    let (out, took, run_dir) = run_to_end(&f, &mut c);
    assert_eq!(code(&out), 128);
    assert!(took < Duration::from_secs(20), "{took:?}");
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("virtiofsd exited at start"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains("invalid value 'lots'"), "{err}");
    assert_nothing_left(&run_dir);
}

/// The fixture's config is the fast lane's (no PCI, no ACPI): the check boots it on microvm
/// without ACPI, its virtio-mmio devices named on the kernel command line by QEMU, and the
/// guest ends the VM itself (a reboot, which -no-reboot turns into QEMU's exit) rather than
/// halting until the host quits QEMU.
#[test]
fn the_fast_lane_boots_on_virtio_mmio_and_ends_by_itself() {
    let f = fixture();
    let out = within(
        &mut check(&f, &["-v", "--", "cat", "/proc/cmdline"]),
        Duration::from_secs(90),
    );
    let (o, e) = (tests::stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "stdout: {o}\nstderr: {e}");
    assert!(e.contains("microvm,acpi=off"), "{e}");
    assert!(
        e.contains("vhost-user-fs-device") && !e.contains("-pci,"),
        "{e}"
    );
    assert!(o.contains("virtio_mmio.device="), "{o}");
    assert!(e.contains("(guest powered off)"), "{e}");
}

/// A PCI-lane kernel boots where it did before lanes: microvm with PCIe (and ACPI), virtio-pci.
#[test]
fn a_pci_lane_kernel_boots_on_pcie() {
    let f = Fixture {
        kernel: tests::pci_kernel(),
        ..fixture()
    };
    let out = within(
        &mut check(&f, &["-v", "--", "test", "-d", "/sys/bus/pci/devices"]),
        Duration::from_secs(90),
    );
    let e = stderr(&out);
    assert_eq!(code(&out), 0, "{e}");
    assert!(e.contains("microvm,pcie=on"), "{e}");
    assert!(e.contains("vhost-user-fs-pci"), "{e}");
    assert!(e.contains("(guest powered off)"), "{e}");
}

/// `bench boot` on both lanes: the floor (`sh -c 'true; reboot -f'`) and the bare boot
/// (`init=/bin/true`) boot the same kernel to their init and end, and our rows are ratios to
/// the floor. On the PCI lane the floor's reboot ends a machine that has ACPI, too.
#[test]
fn bench_boot_measures_against_the_floor_on_both_lanes() {
    for kernel in [fixture().kernel, tests::pci_kernel()] {
        let f = fixture();
        let mut c = f.xtask();
        c.args(["bench", "boot", "--runs", "1", "--kernel"])
            .arg(&kernel);
        let out = within(&mut c, Duration::from_secs(180));
        let (o, e) = (tests::stdout(&out), stderr(&out));
        assert_eq!(code(&out), 0, "stdout: {o}\nstderr: {e}");
        let row = |start: &str| {
            o.lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no row {start:?}: {o}"))
                .to_string()
        };
        assert!(row("floor: ").contains(" 1.00x "), "{o}");
        for name in [
            "bare: ",
            "check -- true, fast init ",
            "check -- true, systemd init ",
        ] {
            let line = row(name);
            let cells: Vec<&str> = line.rsplit(' ').filter(|c| !c.is_empty()).collect();
            let secs: f64 = cells[2].trim_end_matches('s').parse().unwrap();
            assert!(secs > 0.1, "{o}");
            assert!(cells[1].ends_with('x') && cells[0].ends_with('x'), "{o}");
        }
        assert!(o.contains("timeline of check -- true, fast init"), "{o}");
        // The fast lane's rows boot the entry's vmlinux through PVH, the floor too, and the
        // bzImage's floor stands beside; the PCI lane boots its bzImage and has no such row.
        let pvh_floor = "floor, bzImage instead of the PVH vmlinux";
        assert_eq!(
            o.contains(pvh_floor),
            kernel == fixture().kernel,
            "{}: {o}",
            kernel.display()
        );
    }
}

/// The fast lane's kernel comes with its vmlinux from the cache, and QEMU enters it through
/// PVH: the check boots the vmlinux, and the kernel starts without the bzImage's
/// decompression. The PCI lane's entry keeps no vmlinux and boots its bzImage.
#[test]
fn the_fast_lane_boots_the_vmlinux_through_pvh() {
    let f = fixture();
    let vmlinux = f.kernel.with_file_name("vmlinux");
    assert!(vmlinux.is_file(), "no {}", vmlinux.display());
    let out = within(
        &mut check(&f, &["-v", "--json", "--", "true"]),
        Duration::from_secs(120),
    );
    let e = stderr(&out);
    assert_eq!(code(&out), 0, "{e}");
    assert!(
        e.contains(&format!("-kernel {} ", vmlinux.display())),
        "{e}"
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    let run_dir = j["runs"][0]["run_dir"].as_str().unwrap();
    let console = std::fs::read_to_string(Path::new(run_dir).join("console.log")).unwrap();
    assert!(
        console.contains("Run /usr/local/sbin/xtask-init-fast as init process"),
        "{console}"
    );
    let pci = tests::pci_kernel();
    assert!(!pci.with_file_name("vmlinux").exists(), "{}", pci.display());
}

/// The fast init reads the files qemu-ga and the command's shell start from into the page
/// cache while it mounts: by the time the command runs, each file on its list is cached
/// whole. Without it, a library is cached only where its start touched it (libc, glib and
/// libm were a half to nine tenths).
#[test]
fn the_fast_init_has_read_the_agents_files_ahead() {
    let f = fixture();
    let out = within(
        &mut check(
            &f,
            &[
                "--",
                "sh",
                "-c",
                "xargs fincore --bytes --noheadings --output RES,SIZE,FILE \
                 </usr/local/lib/xtask/prefetch",
            ],
        ),
        Duration::from_secs(120),
    );
    let o = tests::stdout(&out);
    assert_eq!(code(&out), 0, "{o}{}", stderr(&out));
    let files: Vec<Vec<&str>> = o.lines().map(|l| l.split_whitespace().collect()).collect();
    assert!(files.len() >= 4, "{o}");
    assert_eq!(files[0].get(2), Some(&"/usr/sbin/qemu-ga"), "{o}");
    for f in &files {
        let [cached, size, _] = f[..] else {
            panic!("not RES SIZE FILE: {f:?}")
        };
        let (cached, size): (u64, u64) = (cached.parse().unwrap(), size.parse().unwrap());
        assert!(cached >= size, "not cached whole: {f:?}\n{o}");
    }
}
