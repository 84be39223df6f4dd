//! Shared helpers for the end-to-end tests in `tests/tests/`: they drive the real `cargo xtask`
//! binary against the real rootfs, kernel tree and kernels that `cargo xtask test` prepares.
//!
//! `cargo xtask test` exports:
//! - `XTASK_BIN`: the xtask binary to run;
//! - `XTASK_TEST_STATE`: a state dir holding the rootfs, the trimmed config and the cache;
//! - `XTASK_TEST_TREE`: a kernel git tree (Debian's linux-source-6.1, one commit tagged `base`);
//! - `XTASK_TEST_KERNEL`: a bzImage built from that tree with the trimmed config (fast lane);
//! - `XTASK_TEST_KERNEL_PCI`: one built with the PCI lane's config, for libvirt (q35);
//! - `XTASK_TEST_KERNEL_ARM64`: the arm64 Image built from it (`tests/tests/e2e_arm64.rs`).

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

/// The PCI lane's kernel (`XTASK_TEST_KERNEL_PCI`): what the libvirt backend boots on q35.
pub fn pci_kernel() -> PathBuf {
    env_path("XTASK_TEST_KERNEL_PCI")
}

pub fn fixture() -> Fixture {
    Fixture {
        bin: env_path("XTASK_BIN"),
        state: env_path("XTASK_TEST_STATE"),
        tree: env_path("XTASK_TEST_TREE"),
        kernel: env_path("XTASK_TEST_KERNEL"),
    }
}

/// The arm64 Image `cargo xtask test` built from the tree (XTASK_TEST_KERNEL_ARM64).
pub fn arm64_kernel() -> PathBuf {
    env_path("XTASK_TEST_KERNEL_ARM64")
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
    let start = std::time::Instant::now();
    let out = cmd.output().expect("spawn");
    eprintln!(
        "--- stdout\n{}--- stderr\n{}--- {} after {:.2}s",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status,
        start.elapsed().as_secs_f64()
    );
    out
}

/// As [`run`], asserting that it ended within `limit` (a bound only a broken case misses).
pub fn run_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    let start = std::time::Instant::now();
    let out = run(cmd);
    assert!(start.elapsed() < limit, "took {:?}", start.elapsed());
    out
}

/// As [`run`], also giving how long it took and the pid xtask ran as (its run dir is named
/// after it).
pub fn run_with_pid(cmd: &mut Command) -> (Output, std::time::Duration, u32) {
    eprintln!("$ {cmd:?}");
    let start = std::time::Instant::now();
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}--- {} after {took:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status
    );
    (out, took, pid)
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

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(c);
            }
        }
    }
    found
}

/// The run dir of the check with this pid: runs/<time>-check-<pid>.
pub fn run_dir_of(f: &Fixture, pid: u32) -> PathBuf {
    std::fs::read_dir(f.state.join("runs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(&format!("-check-{pid}")))
        .expect("run dir")
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
    start_until(cmd, "guest agent up")
}

/// Spawns `cmd` and reads its stderr until a line containing `needle`.
pub fn start_until(cmd: &mut Command, needle: &str) -> Running {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    loop {
        let Some(Ok(line)) = lines.next() else {
            let status = child.wait();
            panic!("xtask ended ({status:?}) before {needle:?}:\n{seen}");
        };
        seen += &line;
        seen.push('\n');
        if line.contains(needle) {
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

/// A check command that writes a copy of a kernel warning to the console through /dev/kmsg,
/// in the kernel's own format: userspace wrote it, so both backends must call it good.
pub const KMSG_COPY_OF_A_WARNING: [&str; 4] = [
    "--",
    "sh",
    "-c",
    "echo 'WARNING: CPU: 0 PID: 1 at kernel/panic.c:1 copy+0x0/0x1' > /dev/kmsg",
];

/// The synthetic history's commit that adds a `WARN` at boot (see [`history`]).
pub const CULPRIT: usize = 11;
/// Its commit that does not build (fixed by the next).
pub const BROKEN: usize = 7;

/// Writes the synthetic history as branch `bisect-e2e` (16 commits on `base` that change real
/// files, one warning at boot, one not building); returns its commit ids. The same history
/// every time, so its kernels are built once and then found in the cache.
pub fn history(f: &Fixture) -> Vec<String> {
    let out = run(f
        .xtask()
        .args(["make-history", "--branch", "bisect-e2e", "--commits", "16"])
        .args([
            "--culprit",
            &CULPRIT.to_string(),
            "--broken",
            &BROKEN.to_string(),
        ]));
    assert_eq!(code(&out), 0);
    let ids: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(ids.len(), 16);
    ids
}

/// A commit whose kernel warns at boot for real (`WARN(1, …)` in init/main.c), built: the
/// history's culprit. Its build is incremental on the toolkit's worktree, cached afterwards.
pub fn warning_rev(f: &Fixture) -> String {
    let rev = history(f)[CULPRIT].clone();
    let out = run(f.xtask().args(["build", &rev]));
    assert_eq!(code(&out), 0, "the warning commit did not build");
    rev
}

/// What the culprit's warning says on the console (`WARNING: CPU: 0 PID: 1 at
/// init/main.c:…`).
pub const REAL_WARNING: &str = "at init/main.c:";

/// A process's state letter in `/proc/PID/stat` (`R`, `S`, `T` stopped, `Z` zombie…), or
/// `None` when it is gone.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

/// Whether a process is gone (or a zombie that nobody needs to end).
pub fn gone(pid: u32) -> bool {
    matches!(process_state(pid), None | Some('Z'))
}

/// Polls `done` every 50 ms; panics naming `what` when it is not true within `limit`.
pub fn wait_until(limit: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every process below `pid`.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if let Some(pp) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok())
        {
            parents.push((p, pp));
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out.remove(0);
    out
}
