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
        f.xtask().args([
            "bisect",
            "--arch",
            "arm64",
            "--endpoint-runs",
            "1",
            "base",
            "bisect-arm64",
        ]),
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

/// `setup-rootfs --arch arm64`'s binfmt_misc step on a machine made for it, whatever this one
/// has registered: stand-ins for every tool it runs (and nothing else) on the search path,
/// binfmt_misc at a directory of the test's (XTASK_BINFMT_MISC), a clean HOME, a fresh state
/// dir. The stand-in mmdebstrap stops the set-up right after the step, before any download.
struct BinfmtMachine {
    dir: tempfile::TempDir,
}

/// What `update-binfmts --enable qemu-aarch64` leaves in binfmt_misc on Debian 12.
const QEMU_AARCH64_ENTRY: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n";

impl BinfmtMachine {
    /// `update_binfmts_entry`: what the stand-in update-binfmts writes as the handler's entry.
    fn new(qemu_user: bool, update_binfmts_entry: &str) -> BinfmtMachine {
        let m = BinfmtMachine {
            dir: tempfile::tempdir().unwrap(),
        };
        for d in ["stubs", "binfmt_misc", "home"] {
            std::fs::create_dir(m.path(d)).unwrap();
        }
        let log = m.path("calls.log");
        let log = log.display();
        // Shell builtins only: the search path has nothing but the stand-ins.
        m.stub(
            "mount",
            &format!("echo \"mount $*\" >> {log}\n: > \"$4/register\""),
        );
        m.stub(
            "update-binfmts",
            &format!(
                "echo \"update-binfmts $*\" >> {log}\nprintf '%s' '{update_binfmts_entry}' > {}/qemu-aarch64",
                m.path("binfmt_misc").display()
            ),
        );
        m.stub(
            "mmdebstrap",
            &format!("echo \"mmdebstrap $*\" >> {log}\necho 'E: stand-in mmdebstrap stops here' >&2\nexit 1"),
        );
        if qemu_user {
            m.stub("qemu-aarch64-static", "exit 0");
        }
        m
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn stub(&self, name: &str, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path("stubs").join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// binfmt_misc as mounted (its `register` file), with the handler's entry if given.
    fn mounted(self, entry: Option<&str>) -> BinfmtMachine {
        std::fs::write(self.path("binfmt_misc/register"), "").unwrap();
        if let Some(e) = entry {
            std::fs::write(self.path("binfmt_misc/qemu-aarch64"), e).unwrap();
        }
        self
    }

    /// The stand-ins' calls, one a line.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// `cargo xtask setup-rootfs --arch arm64` on this machine, within a minute.
    fn setup_rootfs(&self) -> std::process::Output {
        let f = fixture();
        let mut c = Command::new(&f.bin);
        c.env_clear()
            .env("HOME", self.path("home"))
            .env("PATH", self.path("stubs"))
            .env("TERM", "dumb")
            .env("XTASK_BINFMT_MISC", self.path("binfmt_misc"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .arg("--tree")
            .arg(&f.tree)
            .args(["setup-rootfs", "--arch", "arm64"]);
        within(&mut c, Duration::from_secs(60))
    }

    /// Nothing of a root under construction is left in the fresh state dir.
    fn assert_no_root_left(&self) {
        let roots = self.path("state/guest-arm64");
        for leftover in ["rootfs", "rootfs.tmp", "rootfs.json"] {
            assert!(!roots.join(leftover).exists(), "{leftover} left behind");
        }
    }
}

/// The bootstrap the stand-in was asked for: an arm64 root.
fn asked_for_an_arm64_root(call: &str) -> bool {
    call.starts_with("mmdebstrap ") && call.contains("arm64")
}

#[test]
fn binfmt_unmounted_and_unregistered_is_mounted_registered_and_said() {
    let m = BinfmtMachine::new(true, QEMU_AARCH64_ENTRY);
    let out = m.setup_rootfs();
    let err = stderr(&out);
    let calls = m.calls();
    let dir = m.path("binfmt_misc");
    assert_eq!(
        calls[..2],
        [
            format!("mount -t binfmt_misc binfmt_misc {}", dir.display()),
            "update-binfmts --enable qemu-aarch64".to_string()
        ],
        "{err}"
    );
    assert!(
        err.contains("registering qemu-aarch64 with binfmt_misc")
            && err.contains("a host-wide setting"),
        "{err}"
    );
    // Registered, the set-up went on to the bootstrap (which the stand-in ends: 128).
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(asked_for_an_arm64_root(&calls[2]), "{calls:?}");
    assert_eq!(code(&out), 128, "{err}");
    m.assert_no_root_left();
}

#[test]
fn binfmt_already_registered_is_left_alone() {
    let m = BinfmtMachine::new(true, "").mounted(Some(QEMU_AARCH64_ENTRY));
    let out = m.setup_rootfs();
    let err = stderr(&out);
    let calls = m.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(asked_for_an_arm64_root(&calls[0]), "{calls:?}");
    assert!(!err.contains("registering"), "{err}");
    assert_eq!(code(&out), 128, "{err}");
}

#[test]
fn binfmt_registered_without_f_stops_with_the_fix() {
    let no_f = QEMU_AARCH64_ENTRY.replace("flags: PF", "flags: P");
    let m = BinfmtMachine::new(true, &no_f).mounted(None);
    let out = m.setup_rootfs();
    let err = stderr(&out);
    assert_eq!(code(&out), 128, "{err}");
    assert_eq!(m.calls(), ["update-binfmts --enable qemu-aarch64"]);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("without the F flag")
            && errors[0].contains("update-binfmts --enable qemu-aarch64"),
        "{err}"
    );
    m.assert_no_root_left();
}

#[test]
fn binfmt_without_qemu_user_static_registers_nothing_and_names_the_package() {
    let m = BinfmtMachine::new(false, QEMU_AARCH64_ENTRY).mounted(None);
    let out = m.setup_rootfs();
    let err = stderr(&out);
    assert_eq!(code(&out), 128, "{err}");
    assert_eq!(m.calls(), Vec::<String>::new());
    assert!(
        err.contains("qemu-user-static, which is not installed")
            && err.contains("apt-get install qemu-user-static binfmt-support"),
        "{err}"
    );
    m.assert_no_root_left();
}
