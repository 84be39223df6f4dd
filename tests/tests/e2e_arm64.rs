//! arm64 guests end to end: `trim-config --arch arm64`, `build --arch arm64` in the x86_64
//! build container with the cross compiler, `check --arch arm64` in qemu-system-aarch64 (TCG)
//! on the arm64 guest root, and a short arm64 bisect. `cargo xtask test` prepares the arm64
//! root, config and kernel (XTASK_TEST_KERNEL_ARM64).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{arm64_kernel, code, fixture, run, stderr, stdout, Fixture};

/// `cargo xtask check --arch arm64 --kernel <the arm64 kernel> ARGS`.
fn check(f: &Fixture, args: &[&str]) -> Command {
    let mut c = f.xtask();
    c.args(["check", "--arch", "arm64", "--kernel"])
        .arg(arm64_kernel())
        .args(args);
    c
}

/// Runs `cmd`, which must end within `limit`.
fn within(cmd: &mut Command, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    let out = run(cmd);
    assert!(
        start.elapsed() < limit,
        "took {:?}, limit {limit:?}",
        start.elapsed()
    );
    out
}

/// A boot under TCG of an arm64 guest, with its command: well under a minute when it works.
const BOOT_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn trim_config_for_arm64_keeps_every_asked_for_option() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("arm64.config");
    let out = within(
        f.xtask()
            .args(["trim-config", "--arch", "arm64", "-o"])
            .arg(&out_path),
        Duration::from_secs(300),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let o = stdout(&out);
    assert!(o.contains("arch:      arm64"), "{o}");
    assert!(o.contains("kconfig/arm64.config"), "{o}");
    assert!(o.contains(" 0 dropped)"), "{o}");
    let config = std::fs::read_to_string(&out_path).unwrap();
    for want in [
        "CONFIG_ARM64=y",
        "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
        "CONFIG_PCI_HOST_GENERIC=y",
        "CONFIG_VIRTIO_FS=y",
    ] {
        assert!(config.lines().any(|l| l == want), "{want} missing");
    }
    assert!(!config.contains("CONFIG_X86=y"));
}

/// An arm64 Image: its header's magic, "ARM\x64" at offset 56 (the kernel's
/// Documentation/arm64/booting.rst).
fn is_arm64_image(path: &Path) -> bool {
    let bytes = std::fs::read(path).unwrap();
    bytes.len() > 64 && &bytes[56..60] == b"ARM\x64"
}

#[test]
fn build_for_arm64_gives_an_arm64_image_and_the_cache_says_arm64() {
    let f = fixture();
    // `cargo xtask test` built this one: the same key, so a hit.
    let out = within(
        f.xtask().args(["build", "--arch", "arm64"]),
        Duration::from_secs(120),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let o = stdout(&out);
    let image = o
        .lines()
        .find_map(|l| l.strip_prefix("Image:"))
        .unwrap_or_else(|| panic!("no Image: line in\n{o}"));
    let image = image.trim().split(" (").next().unwrap();
    assert!(
        is_arm64_image(Path::new(image)),
        "{image} is no arm64 Image"
    );
    assert!(
        !is_arm64_image(&f.kernel),
        "the x86_64 kernel passes for arm64"
    );
    let ls = run(f.xtask().args(["cache", "ls"]));
    assert_eq!(code(&ls), 0);
    let key = o.split_whitespace().nth(2).unwrap_or_default().to_string();
    let line = stdout(&ls)
        .lines()
        .find(|l| l.starts_with(&key))
        .map(String::from)
        .unwrap_or_else(|| panic!("{key} not in cache ls:\n{}", stdout(&ls)));
    assert!(line.contains(" arm64 "), "{line}");
}

#[test]
fn uname_in_an_arm64_guest_says_aarch64() {
    let f = fixture();
    let out = within(&mut check(&f, &["--", "uname", "-m"]), BOOT_LIMIT);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "aarch64");
    let e = stderr(&out);
    assert!(e.contains("verdict: good"), "{e}");
    assert!(e.contains("Tcg"), "{e}");
}

#[test]
fn a_failing_command_in_an_arm64_guest_is_bad() {
    let f = fixture();
    let out = within(&mut check(&f, &["--", "false"]), BOOT_LIMIT);
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("exited 1"), "{}", stderr(&out));
}

#[test]
fn an_arm64_panic_at_boot_is_untestable_with_a_command() {
    let f = fixture();
    let out = within(
        &mut check(&f, &["--append", "init=/nonexistent", "--", "true"]),
        BOOT_LIMIT,
    );
    assert_eq!(code(&out), 125);
    assert!(stderr(&out).contains("panic"), "{}", stderr(&out));
}

#[test]
fn a_clean_arm64_boot_is_good() {
    let f = fixture();
    let out = within(&mut check(&f, &[]), BOOT_LIMIT);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("verdict: good"), "{}", stderr(&out));
}

#[test]
fn the_arm64_root_is_read_only() {
    let f = fixture();
    let usr = std::fs::canonicalize(f.state.join("guest-arm64/rootfs/usr/bin")).unwrap();
    let before: Vec<_> = std::fs::read_dir(&usr)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    // The guest's write goes to its tmpfs overlay: it succeeds there, and the host's copy
    // keeps every file.
    let out = within(
        &mut check(
            &f,
            &[
                "--",
                "sh",
                "-c",
                "rm -f /usr/bin/uname && ! test -e /usr/bin/uname",
            ],
        ),
        BOOT_LIMIT,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let after: Vec<_> = std::fs::read_dir(&usr)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "the guest changed the shared arm64 root");
    assert!(usr.join("uname").exists());
}

#[test]
fn kvm_for_an_arm64_guest_is_refused() {
    let f = fixture();
    let out = within(
        &mut check(&f, &["--accel", "kvm", "--", "true"]),
        Duration::from_secs(60),
    );
    assert_eq!(code(&out), 128);
    let e = stderr(&out);
    assert!(
        e.contains("cannot use KVM") && e.contains("--accel tcg"),
        "{e}"
    );
}

#[test]
fn an_unknown_arch_lists_the_known_ones() {
    let f = fixture();
    let out = within(
        f.xtask().args(["build", "--arch", "sparc"]),
        Duration::from_secs(10),
    );
    assert_eq!(code(&out), 129);
    let e = stderr(&out);
    assert!(e.contains("x86_64, arm64"), "{e}");
}

#[test]
fn a_missing_arm64_root_names_setup_rootfs() {
    let f = fixture();
    let state = tempfile::tempdir().unwrap();
    let mut c = Command::new(&f.bin);
    c.arg("--state-dir")
        .arg(state.path())
        .arg("--tree")
        .arg(&f.tree);
    c.args(["check", "--arch", "arm64", "--kernel"])
        .arg(arm64_kernel())
        .args(["--", "true"]);
    let out = within(&mut c, Duration::from_secs(30));
    assert_eq!(code(&out), 128);
    let e = stderr(&out);
    assert!(e.contains("setup-rootfs --arch arm64"), "{e}");
}

#[test]
fn an_arm64_bisect_names_the_commit_that_warns() {
    let f = fixture();
    // Four commits on base, the third adds a boot-time warning.
    let out = run(f.xtask().args([
        "make-history",
        "--branch",
        "bisect-arm64",
        "--commits",
        "4",
        "--culprit",
        "2",
    ]));
    assert_eq!(code(&out), 0);
    let ids: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(ids.len(), 4);
    let out = within(
        f.xtask()
            .args(["bisect", "--arch", "arm64", "base", "bisect-arm64"]),
        Duration::from_secs(20 * 60),
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let report = stdout(&out);
    assert!(report.contains("## First bad commit"), "{report}");
    assert!(
        report.contains(ids[2].as_str()),
        "bisect did not name {}:\n{report}",
        ids[2]
    );
}
