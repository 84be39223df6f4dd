//! Shared helpers for the end-to-end tests in `tests/tests/`: they drive the real `cargo xtask`
//! binary against the real rootfs, kernel tree and kernels that `cargo xtask test` prepares.
//!
//! `cargo xtask test` exports:
//! - `XTASK_BIN`: the xtask binary to run;
//! - `XTASK_TEST_STATE`: a state dir holding the rootfs, the trimmed config and the cache;
//! - `XTASK_TEST_TREE`: a kernel git tree (Debian's linux-source-6.1, one commit tagged `base`);
//! - `XTASK_TEST_KERNEL`: a bzImage built from that tree with the trimmed config.

pub mod builds;

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

/// A `check` started in the background, its stderr read until the guest agent was up.
pub struct Running {
    pub child: std::process::Child,
    /// What stderr said so far.
    pub seen: String,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStderr>>,
}

/// Spawns `cmd` (a check whose command runs long) and waits for "guest agent up".
pub fn start_until_agent_up(cmd: &mut Command) -> Running {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("xtask ended before the agent was up:\n{seen}"))
            .unwrap();
        seen += &line;
        seen.push('\n');
        if line.contains("guest agent up") {
            return Running { child, seen, lines };
        }
    }
}

impl Running {
    /// Reads stderr until a line containing `needle`; panics when xtask ends first.
    pub fn wait_for(&mut self, needle: &str) {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            self.seen += &line;
            self.seen.push('\n');
            if line.contains(needle) {
                return;
            }
        }
        panic!("xtask ended before {needle:?}:\n{}", self.seen);
    }

    /// Waits for the exit (at most `limit`); returns the status and all of stderr.
    pub fn finish(mut self, limit: std::time::Duration) -> (std::process::ExitStatus, String) {
        let end = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if std::time::Instant::now() >= end {
                let _ = self.child.kill();
                panic!("still running after {limit:?}:\n{}", self.seen);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        for line in self.lines.map_while(Result::ok) {
            self.seen += &line;
            self.seen.push('\n');
        }
        eprintln!("{}", self.seen);
        (status, self.seen)
    }

    /// Sends SIGINT, as Ctrl-C would, and waits at most `limit` for the exit; returns the
    /// status and how long the exit took.
    pub fn interrupt(
        mut self,
        limit: std::time::Duration,
    ) -> (std::process::ExitStatus, std::time::Duration) {
        std::thread::sleep(std::time::Duration::from_millis(500));
        let sent = std::time::Instant::now();
        // SAFETY: kill(2) on the child we spawned.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            assert!(
                sent.elapsed() < limit,
                "still running {limit:?} after SIGINT"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let took = sent.elapsed();
        let rest: Vec<String> = self.lines.map_while(Result::ok).collect();
        eprintln!("{}{}", self.seen, rest.join("\n"));
        (status, took)
    }
}

/// A check command that writes a kernel-style warning to the console through /dev/kmsg: both
/// backends must call it bad.
pub const KMSG_WARNING: [&str; 4] = [
    "--",
    "sh",
    "-c",
    "echo 'WARNING: CPU: 0 PID: 1 at test' > /dev/kmsg",
];
