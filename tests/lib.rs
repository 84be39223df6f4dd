//! Shared helpers for the end-to-end tests in `tests/tests/`: they drive the real `cargo xtask`
//! binary against the real rootfs, kernel tree and kernels that `cargo xtask test` prepares.
//!
//! `cargo xtask test` exports:
//! - `XTASK_BIN`: the xtask binary to run;
//! - `XTASK_TEST_STATE`: a state dir holding the rootfs, the trimmed config and the cache;
//! - `XTASK_TEST_TREE`: a kernel git tree (Debian's linux-source-6.1, one commit tagged `base`);
//! - `XTASK_TEST_KERNEL`: a bzImage built from that tree with the trimmed config.

use std::path::PathBuf;
use std::process::{Command, Output};

fn env_path(name: &str) -> PathBuf {
    match std::env::var_os(name) {
        Some(v) => PathBuf::from(v),
        None => panic!("{name} is not set: run the end-to-end tests through `cargo xtask test`, which prepares them"),
    }
}

/// What `cargo xtask test` prepared.
pub struct Fixture {
    pub bin: PathBuf,
    pub state: PathBuf,
    pub tree: PathBuf,
    pub kernel: PathBuf,
}

pub fn fixture() -> Fixture {
    Fixture {
        bin: env_path("XTASK_BIN"),
        state: env_path("XTASK_TEST_STATE"),
        tree: env_path("XTASK_TEST_TREE"),
        kernel: env_path("XTASK_TEST_KERNEL"),
    }
}

impl Fixture {
    /// `cargo xtask` with the fixture's state dir and tree.
    pub fn xtask(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--state-dir")
            .arg(&self.state)
            .arg("--tree")
            .arg(&self.tree);
        c
    }
}

/// Runs a command and returns its output, echoing both streams so a failing test shows them.
pub fn run(cmd: &mut Command) -> Output {
    eprintln!("$ {cmd:?}");
    let out = cmd.output().expect("spawn");
    eprintln!(
        "--- stdout\n{}--- stderr\n{}--- {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    out
}

/// The exit code, with a signal death as a failure of the test.
pub fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {:?}", out.status))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
