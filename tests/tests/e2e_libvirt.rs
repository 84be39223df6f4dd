//! `cargo xtask check --backend libvirt` end to end: a real libvirtd at qemu:///system, the
//! fixture kernel and rootfs. The same verdicts as the QEMU backend, and no domain left
//! behind. Built with the tests' `libvirt` feature, which `cargo xtask test` turns on (with
//! xtask's) when libvirtd answers.
#![cfg(feature = "libvirt")]

use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tests::{arm64_kernel, code, run, run_with_pid, stderr, stdout, Fixture};

const URI: &str = "qemu:///system";

/// The fixture with the PCI lane's kernel: libvirt boots q35, which needs PCI.
fn fixture() -> Fixture {
    Fixture {
        kernel: tests::pci_kernel(),
        ..tests::fixture()
    }
}

/// One libvirt test at a time, so "no xtask- domain left" means this test left none.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The toolkit's domains libvirt knows, running or not.
fn our_domains() -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", URI, "list", "--all", "--name"])
        .output()
        .expect("virsh");
    assert!(out.status.success(), "virsh list failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with("xtask-"))
        .map(String::from)
        .collect()
}

/// Destroys the toolkit's running domains (a test's own cleanup, before it asserts).
fn destroy_our_domains() {
    for d in our_domains() {
        let _ = Command::new("virsh")
            .args(["-c", URI, "destroy", &d])
            .output();
    }
}

fn assert_no_domain_left() {
    assert_eq!(our_domains(), Vec::<String>::new(), "domains left behind");
}

/// `cargo xtask check --backend libvirt --kernel <fixture kernel> ARGS`, with a boot limit
/// that a loaded CI machine meets (the verdicts are the point, not the speed).
fn check(f: &Fixture, args: &[&str]) -> Command {
    let mut c = f.xtask();
    c.args(["check", "--backend", "libvirt", "--connect", URI])
        .arg("--kernel")
        .arg(&f.kernel);
    if !args.contains(&"--boot-timeout") {
        c.args(["--boot-timeout", "180s"]);
    }
    c.args(args);
    c
}

/// Runs a check and asserts its exit code and that it cleaned up.
fn verdict(args: &[&str], want: i32) -> Output {
    let _one = serial();
    let out = run(&mut check(&fixture(), args));
    assert_eq!(code(&out), want, "{}", stderr(&out));
    assert_no_domain_left();
    out
}

#[test]
fn libvirt_a_passing_command_is_good() {
    let out = verdict(&["--", "true"], 0);
    let err = stderr(&out);
    assert!(err.contains("verdict: good"), "{err}");
    assert!(err.contains("guest powered off"), "{err}");
}

#[test]
fn libvirt_output_and_a_failing_command_are_bad() {
    let out = verdict(&["--", "sh", "-c", "echo from-the-guest; false"], 1);
    assert!(stdout(&out).contains("from-the-guest"), "{}", stdout(&out));
    assert!(stderr(&out).contains("exited 1"), "{}", stderr(&out));
}

#[test]
fn libvirt_a_real_kernel_warning_is_bad() {
    let _one = serial();
    let f = fixture();
    let rev = tests::warning_rev(&f);
    let mut c = f.xtask();
    c.args(["check", "--backend", "libvirt", "--connect", URI])
        .args(["--boot-timeout", "180s", &rev, "--", "true"]);
    let start = Instant::now();
    let out = run(&mut c);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(240),
        "{:?}",
        start.elapsed()
    );
    assert!(err.contains("console: warning at line"), "{err}");
    assert!(err.contains(tests::REAL_WARNING), "{err}");
    assert_no_domain_left();
}

#[test]
fn libvirt_a_copy_of_a_warning_written_to_kmsg_is_good() {
    let start = Instant::now();
    let out = verdict(&tests::KMSG_COPY_OF_A_WARNING, 0);
    assert!(
        start.elapsed() < Duration::from_secs(240),
        "{:?}",
        start.elapsed()
    );
    assert!(
        stderr(&out).contains("not the kernel's: userspace wrote line"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn libvirt_a_panic_at_boot_is_untestable_with_a_command_and_bad_without() {
    verdict(&["--append", "init=/nonexistent", "--", "true"], 125);
    let out = verdict(&["--append", "init=/nonexistent"], 1);
    assert!(stderr(&out).contains("panic"), "{}", stderr(&out));
}

#[test]
fn libvirt_a_hung_boot_ends_at_its_timeout() {
    let start = Instant::now();
    // PID 1 sleeps forever: no panic, no agent.
    let out = verdict(
        &[
            "--boot-timeout",
            "15s",
            "--append",
            "init=/bin/sleep -- infinity",
            "--",
            "true",
        ],
        125,
    );
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    assert!(stderr(&out).contains("never answered"), "{}", stderr(&out));
}

#[test]
fn libvirt_the_rootfs_is_read_only_by_default() {
    let f = fixture();
    let marker = f.state.join("rootfs/xtask-libvirt-write-test");
    let _ = std::fs::remove_file(&marker);
    // The guest may write its root (a tmpfs overlay), and the host's copy does not change.
    verdict(
        &[
            "--",
            "sh",
            "-c",
            "echo x > /xtask-libvirt-write-test && grep -q x /xtask-libvirt-write-test",
        ],
        0,
    );
    assert!(!marker.exists(), "the guest wrote to the shared rootfs");
}

/// libvirt 9 cannot make a virtiofs share read-only, so the toolkit's wrapper gives libvirt's
/// virtiofsd `--readonly`: a guest that remounts its root read-write (`xtask.rw=1` asks
/// xtask-init to) still cannot write the rootfs the build container uses.
#[test]
fn libvirt_a_root_remounted_rw_still_cannot_write_the_rootfs() {
    let f = fixture();
    let marker = f.state.join("rootfs/xtask-libvirt-rw-test");
    let _ = std::fs::remove_file(&marker);
    let start = std::time::Instant::now();
    let out = verdict(
        &[
            "--append",
            "xtask.rw=1",
            "--",
            "sh",
            "-c",
            "echo x > /xtask-libvirt-rw-test",
        ],
        1,
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(240));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(!marker.exists(), "the guest wrote to the shared rootfs");
}

#[test]
fn libvirt_ctrl_c_destroys_the_domain() {
    let _one = serial();
    let f = fixture();
    let running = tests::start_until_agent_up(&mut check(&f, &["--", "sleep", "600"]));
    let pid = running.child.id();
    let name = format!("-check-{pid}");
    assert!(
        our_domains().iter().any(|d| d.ends_with(&name)),
        "no domain for {pid}: {:?}",
        our_domains()
    );
    let (status, _) = running.interrupt(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130));
    assert_no_domain_left();
}

/// A run killed outright (SIGKILL: no guard runs) leaves its domain up; the next libvirt run
/// destroys it and says so.
#[test]
fn libvirt_the_domain_of_a_killed_run_is_reaped_by_the_next_run() {
    let _one = serial();
    let f = fixture();
    let mut running = tests::start_until_agent_up(&mut check(&f, &["--", "sleep", "600"]));
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    let orphan = format!("-check-{}", running.child.id());
    let left = our_domains();
    if !left.iter().any(|d| d.ends_with(&orphan)) {
        destroy_our_domains();
        panic!("the killed run left no domain: {left:?}");
    }
    let out = run(&mut check(&f, &["--", "true"]));
    let after = our_domains();
    destroy_our_domains();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the run that started it was killed"),
        "{}",
        stderr(&out)
    );
    assert_eq!(after, Vec::<String>::new(), "domains left behind");
}

#[test]
fn libvirt_keep_leaves_the_domain_for_virsh_console() {
    let _one = serial();
    let f = fixture();
    let out = run(&mut check(&f, &["--keep", "--", "true"]));
    let kept = our_domains();
    // Clean up before asserting, so a failure leaves nothing behind either.
    destroy_our_domains();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        stderr(&out).contains(&format!("virsh -c {URI} console {}", kept[0])),
        "{}",
        stderr(&out)
    );
    assert_no_domain_left();
}

#[test]
fn libvirt_print_xml_is_a_domain_libvirt_accepts() {
    let _one = serial();
    let f = fixture();
    let out = run(f
        .xtask()
        .args(["boot", "--backend", "libvirt", "--print-xml", "--kernel"])
        .arg(&f.kernel));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let xml = stdout(&out);
    assert!(xml.starts_with("<domain type="), "{xml}");
    let kernel = std::fs::canonicalize(&f.kernel).unwrap();
    assert!(
        xml.contains(&format!("<kernel>{}</kernel>", kernel.display())),
        "{xml}"
    );
    assert_libvirt_accepts(&xml);
}

/// libvirt's own parser and schema take `xml`: define it (persistently, not started), then
/// undefine it.
fn assert_libvirt_accepts(xml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("domain.xml");
    std::fs::write(&file, xml).unwrap();
    let define = run(Command::new("virsh")
        .args(["-c", URI, "define", "--validate"])
        .arg(&file));
    let name = xml
        .split("<name>")
        .nth(1)
        .and_then(|r| r.split("</name>").next())
        .unwrap()
        .to_string();
    let undefine = run(Command::new("virsh").args(["-c", URI, "undefine", &name]));
    assert!(define.status.success(), "{}", stderr(&define));
    assert!(undefine.status.success(), "{}", stderr(&undefine));
    assert_no_domain_left();
}

#[test]
fn libvirt_an_unreadable_kernel_gets_one_clear_error() {
    let _one = serial();
    let f = fixture();
    // A private directory: libvirt's QEMU user cannot enter it.
    let dir = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let kernel = dir.path().join("bzImage");
    std::fs::copy(&f.kernel, &kernel).unwrap();
    let mut c = f.xtask();
    c.args(["check", "--backend", "libvirt", "--kernel"])
        .arg(&kernel)
        .args(["--", "true"]);
    let out = run(&mut c);
    assert_eq!(code(&out), 128);
    let err = stderr(&out);
    assert!(
        err.contains("cannot enter") && err.contains("qemu.conf"),
        "{err}"
    );
    assert_no_domain_left();
}

/// Sends `signal` to the QEMU of the domain of the check with this pid.
fn kill_domain_qemu(check_pid: u32, signal: i32) {
    let out = Command::new("pgrep")
        .arg("-f")
        .arg(format!(
            "^[^ ]*qemu-system.*guest=xtask-[^,]*-check-{check_pid},"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let pid: i32 = text
        .lines()
        .next()
        .expect("the domain's QEMU")
        .parse()
        .unwrap();
    eprintln!("killing the domain's QEMU (pid {pid}) with signal {signal}");
    // SAFETY: kill(2) on a pid we just looked up.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// The domain's QEMU killed while the command runs: libvirt says "crashed"; seen at once,
/// retried once, killed again: 128 naming it.
#[test]
fn libvirt_a_qemu_killed_twice_is_an_infrastructure_fault() {
    let _one = serial();
    let f = fixture();
    let start = Instant::now();
    let mut running = tests::start_until_agent_up(&mut check(&f, &["--", "sleep", "600"]));
    let pid = running.child.id();
    kill_domain_qemu(pid, libc::SIGKILL);
    running.wait_for("running it once more");
    running.wait_for("guest agent up");
    kill_domain_qemu(pid, libc::SIGKILL);
    let (status, err) = running.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(128), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(240),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.contains("verdict: abort (exit 128): the domain's QEMU died (libvirt: crashed)"),
        "{err}"
    );
    assert_no_domain_left();
}

/// libvirtd restarting while the command runs: seen at once (the connection breaks), the
/// old domain destroyed once libvirtd is back, the run retried on a new one.
#[test]
fn libvirt_a_libvirtd_restart_is_seen_and_retried() {
    let _one = serial();
    let f = fixture();
    let mut running =
        tests::start_until_agent_up(&mut check(&f, &["--", "sh", "-c", "sleep 5; true"]));
    let out = Command::new("pgrep")
        .args(["-x", "libvirtd"])
        .output()
        .unwrap();
    let daemon: i32 = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .expect("a running libvirtd")
        .parse()
        .unwrap();
    // SAFETY: kill(2) on libvirtd's pid.
    assert_eq!(unsafe { libc::kill(daemon, libc::SIGTERM) }, 0);
    let gone = Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{daemon}")).exists() && Instant::now() < gone {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(Command::new("libvirtd")
        .arg("-d")
        .status()
        .unwrap()
        .success());
    running.wait_for("running it once more");
    let (status, err) = running.finish(Duration::from_secs(240));
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        err.contains("not the kernel's fault: libvirt stopped answering about the domain"),
        "{err}"
    );
    assert!(err.contains("verdict: good"), "{err}");
    assert_no_domain_left();
}

/// A panic after the agent answered: libvirt ends the reset domain itself (SIGTERM from
/// libvirtd), which is no fault of ours. Bad, named.
#[test]
fn libvirt_a_panic_after_the_agent_answered_is_bad_and_named() {
    let start = Instant::now();
    let out = verdict(
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
        1,
    );
    assert!(
        start.elapsed() < Duration::from_secs(180),
        "{:?}",
        start.elapsed()
    );
    let err = stderr(&out);
    assert!(
        err.contains("verdict: bad (exit 1): console: panic at line")
            && err.contains("Kernel panic - not syncing: Out of memory"),
        "{err}"
    );
    assert!(!err.contains("running it once more"), "{err}");
}

/// SIGKILL to the virtiofsd libvirt started for the domain of the check with this pid (by
/// libvirt's pid file, `<domain id>-<short name>-fs0-fs.pid`).
fn kill_domain_virtiofsd(check_pid: u32) {
    let name = our_domains()
        .into_iter()
        .find(|d| d.ends_with(&format!("-check-{check_pid}")))
        .expect("the check's domain");
    let out = Command::new("virsh")
        .args(["-c", URI, "domid", &name])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let file = std::fs::read_dir("/run/libvirt/qemu")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with(&format!("{id}-")) && n.ends_with("-fs.pid")
        })
        .expect("libvirt's virtiofsd pid file");
    let pid: i32 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("killing the domain's virtiofsd (pid {pid})");
    // SAFETY: kill(2) on a pid libvirt's pid file names.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// libvirt does not watch the virtiofsd it starts; the run does: seen at once (not at the
/// timeout, and not as a boot that hung: 125), retried, killed again: 128 naming it.
#[test]
fn libvirt_a_virtiofsd_killed_twice_is_an_infrastructure_fault() {
    let _one = serial();
    let f = fixture();
    let start = Instant::now();
    let mut running = tests::start_until_agent_up(&mut check(&f, &["--", "sleep", "600"]));
    let pid = running.child.id();
    kill_domain_virtiofsd(pid);
    running.wait_for("running it once more");
    running.wait_for("guest agent up");
    kill_domain_virtiofsd(pid);
    let (status, err) = running.finish(Duration::from_secs(60));
    assert_eq!(status.code(), Some(128), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(240),
        "{:?}",
        start.elapsed()
    );
    assert!(
        err.contains("verdict: abort (exit 128): virtiofsd (the rootfs share) exited"),
        "{err}"
    );
    assert_no_domain_left();
}

/// `cargo xtask check --backend libvirt --arch arm64 --kernel <the arm64 Image> ARGS`.
fn check_arm64(f: &Fixture, args: &[&str]) -> Command {
    let mut c = f.xtask();
    c.args([
        "check",
        "--backend",
        "libvirt",
        "--connect",
        URI,
        "--arch",
        "arm64",
    ])
    .arg("--kernel")
    .arg(arm64_kernel())
    .args(["--boot-timeout", "180s"])
    .args(args);
    c
}

/// An arm64 guest under TCG on a loaded CI machine: well under this when it works.
const ARM64_LIMIT: Duration = Duration::from_secs(240);

/// What libvirt keeps for a domain while it runs (its agent channel and virtiofsd sockets,
/// monitor socket, pid and XML files), left after the run of this pid ended: the entries of
/// libvirt's directories named by the domain's name or its 20-character short name.
fn libvirt_files_left(f: &Fixture, pid: u32) -> Vec<std::path::PathBuf> {
    let run_dir = tests::run_dir_of(f, pid);
    let name = format!("xtask-{}", run_dir.file_name().unwrap().to_string_lossy());
    let short: String = name.chars().take(20).collect();
    let mut left = vec![];
    for dir in [
        "/var/lib/libvirt/qemu",
        "/var/lib/libvirt/qemu/channel/target",
        "/var/lib/libvirt/qemu/ram",
        "/run/libvirt/qemu",
    ] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().contains(&short) {
                left.push(e.path());
            }
        }
    }
    // Nor a socket in the run's own dir.
    for e in std::fs::read_dir(&run_dir).unwrap().flatten() {
        use std::os::unix::fs::FileTypeExt;
        if e.file_type().unwrap().is_socket() {
            left.push(e.path());
        }
    }
    left
}

/// An arm64 guest as a libvirt domain: an aarch64 `virt` machine under TCG with the arm64
/// root over virtiofs, its console scanned and the agent reached through libvirt; powered
/// off at the end, leaving no domain, socket or process.
#[test]
fn libvirt_arm64_uname_says_aarch64_and_nothing_is_left() {
    let _one = serial();
    // The arm64 kernel is its own: no PCI-lane x86_64 kernel needed.
    let f = tests::fixture();
    let (out, took, pid) = run_with_pid(&mut check_arm64(&f, &["--", "uname", "-m"]));
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(took < ARM64_LIMIT, "{took:?}");
    assert_eq!(stdout(&out).trim(), "aarch64");
    assert!(
        err.contains("verdict: good (exit 0): the command exited 0"),
        "{err}"
    );
    assert!(err.contains("guest powered off"), "{err}");
    assert_no_domain_left();
    let left = libvirt_files_left(&f, pid);
    assert!(left.is_empty(), "left behind: {left:?}");
    let run_dir = tests::run_dir_of(&f, pid);
    let xml = std::fs::read_to_string(run_dir.join("domain.xml")).unwrap();
    assert!(
        xml.contains("<type arch='aarch64' machine='virt'>"),
        "{xml}"
    );
    // The QEMU that ran had the pointer authentication TCG emulates fast.
    let log = std::fs::read_to_string(run_dir.join("qemu.log")).unwrap();
    assert!(log.contains("-global max-arm-cpu.pauth-impdef=on"), "{log}");
    let procs = tests::processes_mentioning(&run_dir.to_string_lossy());
    assert!(procs.is_empty(), "{procs:?}");
}

#[test]
fn libvirt_arm64_a_panic_at_boot_is_untestable_and_named() {
    let _one = serial();
    // The arm64 kernel is its own: no PCI-lane x86_64 kernel needed.
    let f = tests::fixture();
    let (out, took, pid) = run_with_pid(&mut check_arm64(
        &f,
        &["--append", "init=/nonexistent", "--", "true"],
    ));
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert!(took < ARM64_LIMIT, "{took:?}");
    assert!(
        err.contains("verdict: untestable (exit 125)")
            && err.contains("console: panic at line")
            && err.contains("Kernel panic - not syncing: Requested init /nonexistent failed"),
        "{err}"
    );
    assert_no_domain_left();
    let left = libvirt_files_left(&f, pid);
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn libvirt_arm64_print_xml_is_a_domain_libvirt_accepts() {
    let _one = serial();
    // The arm64 kernel is its own: no PCI-lane x86_64 kernel needed.
    let f = tests::fixture();
    let out = run(f
        .xtask()
        .args([
            "boot",
            "--backend",
            "libvirt",
            "--arch",
            "arm64",
            "--print-xml",
        ])
        .arg("--kernel")
        .arg(arm64_kernel()));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let xml = stdout(&out);
    for want in [
        "<type arch='aarch64' machine='virt'>hvm</type>",
        "<emulator>/usr/bin/qemu-system-aarch64</emulator>",
        "console=ttyAMA0",
        "guest-arm64/rootfs",
    ] {
        assert!(xml.contains(want), "{want} not in\n{xml}");
    }
    assert!(!xml.contains("<acpi/>"), "{xml}");
    assert_libvirt_accepts(&xml);
    assert_no_domain_left();
}
