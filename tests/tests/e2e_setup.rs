//! Set-up as a fresh Debian 12 machine meets it, whatever this machine has installed: a clean
//! `HOME`, a plain `PATH` with stand-in tools first, and QEMU 7.2's legacy C virtiofsd (what
//! Debian 12's qemu-system-common ships) in front of everything else.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{code, fixture, run, stderr, stdout};

/// Recorded `--help` of Debian 12's /usr/lib/qemu/virtiofsd and of the Rust virtiofsd.
const LEGACY_HELP: &str =
    include_str!("../../xtask/src/test_data/virtiofsd/legacy_qemu_7.2_help.txt");
const RUST_HELP: &str = include_str!("../../xtask/src/test_data/virtiofsd/rust_1.14_help.txt");

/// A clean home and a directory of stand-in tools, first on a plain search path.
struct FreshMachine {
    home: tempfile::TempDir,
    stubs: tempfile::TempDir,
}

impl FreshMachine {
    fn new() -> FreshMachine {
        let m = FreshMachine {
            home: tempfile::tempdir().unwrap(),
            stubs: tempfile::tempdir().unwrap(),
        };
        // A virtiofsd that answers as the legacy one does, and fails as it does on our options.
        m.stub(
            "virtiofsd",
            &help_script(LEGACY_HELP, "fuse: invalid argument"),
        );
        m
    }

    fn stub(&self, name: &str, script: &str) -> PathBuf {
        write_script(&self.stubs.path().join(name), script)
    }

    fn path(&self) -> String {
        format!(
            "{}:/usr/sbin:/usr/bin:/sbin:/bin",
            self.stubs.path().display()
        )
    }

    /// xtask with only this machine's environment.
    fn xtask(&self, args: &[&str]) -> Command {
        let f = fixture();
        let mut c = Command::new(&f.bin);
        c.env_clear()
            .env("HOME", self.home.path())
            .env("PATH", self.path())
            .env("TERM", "dumb")
            .arg("--state-dir")
            .arg(&f.state)
            .arg("--tree")
            .arg(&f.tree)
            .args(args);
        c
    }
}

fn write_script(path: &Path, body: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_path_buf()
}

/// A script that prints `help` for `--help` and otherwise fails with `error`.
fn help_script(help: &str, error: &str) -> String {
    format!(
        "if [ \"$1\" = --help ] || [ \"$1\" = -h ]; then cat <<'HELP'\n{help}HELP\nexit 0; fi\necho '{error}' >&2\nexit 1"
    )
}

/// `doctor` on such a machine names the legacy virtiofsd and refuses it; `check` agrees with
/// it: when doctor finds no usable virtiofsd, check ends at once with 128 naming virtiofsd.
#[test]
fn doctor_and_check_agree_on_a_legacy_virtiofsd() {
    let m = FreshMachine::new();
    let doctor = run(&mut m.xtask(&["doctor"]));
    let text = stdout(&doctor);
    let stub = m.stubs.path().join("virtiofsd");
    let refused = text
        .lines()
        .find(|l| l.starts_with("virtiofsd") && l.contains(&*stub.to_string_lossy()))
        .unwrap_or_else(|| {
            panic!(
                "doctor does not name the stand-in {}:\n{text}",
                stub.display()
            )
        });
    assert!(
        refused.contains("refused") && refused.contains("legacy C virtiofsd"),
        "{refused}"
    );

    let start = Instant::now();
    let check = run(&mut m.xtask(&["check", "--", "true"]));
    let took = start.elapsed();
    if code(&doctor) == 0 {
        // A Rust virtiofsd outside HOME and the stand-ins (say /usr/libexec): both must work.
        assert_eq!(code(&check), 0, "doctor says ok, check does not agree");
    } else {
        assert!(
            stderr(&doctor).contains("virtiofsd"),
            "doctor failed for another reason: {}",
            stderr(&doctor)
        );
        assert_eq!(code(&check), 128, "check with no usable virtiofsd");
        let err = stderr(&check);
        assert!(
            err.contains("virtiofsd") && err.contains("cargo xtask deps --install"),
            "{err}"
        );
        assert!(
            took < Duration::from_secs(60),
            "check took {took:?} to refuse"
        );
    }
}

/// `deps --install` on such a machine installs the Rust virtiofsd from crates.io (a stand-in
/// cargo records the call and installs a stand-in that answers as the Rust one does) and then
/// reports it; a second run installs nothing.
#[test]
fn deps_install_replaces_a_legacy_virtiofsd() {
    let m = FreshMachine::new();
    let calls = m.home.path().join("calls.log");
    let installed = m.home.path().join(".cargo/bin/virtiofsd");
    m.stub(
        "cargo",
        &format!(
            "echo \"cargo $*\" >> {calls}\n[ \"$1 $2\" = 'install virtiofsd' ] || exit 3\nmkdir -p {dir}\ncat > {bin} <<'STUB'\n#!/bin/sh\n{script}\nSTUB\nchmod 755 {bin}",
            calls = calls.display(),
            dir = installed.parent().unwrap().display(),
            bin = installed.display(),
            script = help_script(RUST_HELP, "a stand-in"),
        ),
    );
    // Packages: whatever dpkg says is missing is "installed" by a stand-in apt-get.
    m.stub(
        "apt-get",
        &format!("echo \"apt-get $*\" >> {}", calls.display()),
    );
    let doctor = run(&mut m.xtask(&["doctor"]));
    if code(&doctor) == 0 {
        eprintln!("a usable virtiofsd is installed outside HOME: deps has nothing to install");
        return;
    }
    let out = run(&mut m.xtask(&["deps", "--install"]));
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        log.lines().any(|l| l == "cargo install virtiofsd --locked"),
        "deps --install did not install the Rust virtiofsd:\n{log}"
    );
    let text = stdout(&out);
    assert!(text.contains("legacy C virtiofsd"), "{text}");
    assert!(
        text.contains(&format!("virtiofsd at {}", installed.display())),
        "{text}"
    );

    let again = run(&mut m.xtask(&["deps", "--install"]));
    assert_eq!(code(&again), 0);
    let log = std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("cargo")).count(),
        1,
        "the second run installed again:\n{log}"
    );
    let doctor = run(&mut m.xtask(&["doctor"]));
    assert!(
        stdout(&doctor).lines().any(|l| l.starts_with("virtiofsd")
            && l.contains("found")
            && l.contains(&*installed.to_string_lossy())),
        "{}",
        stdout(&doctor)
    );
}
