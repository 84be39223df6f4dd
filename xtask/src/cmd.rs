//! Running external commands: each one is logged (argv, duration, status) to the run's
//! `commands.log`, printed with `-v`, interruptible, and fails with argv and stderr's tail.

use crate::signals;
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static VERBOSE: AtomicBool = AtomicBool::new(false);
static LOG: Mutex<Option<File>> = Mutex::new(None);

/// Sets where commands are logged and whether they are printed.
pub fn init(log: Option<File>, verbose: bool) {
    VERBOSE.store(verbose, Ordering::SeqCst);
    *LOG.lock().unwrap() = log;
}

/// The command log goes to another file (a bisect step's own) until this is dropped, then
/// back to where it went before.
pub struct LogRoute {
    previous: Option<File>,
}

/// Logs commands to `log` until the returned route is dropped.
pub fn route_log(log: File) -> LogRoute {
    LogRoute {
        previous: LOG.lock().unwrap().replace(log),
    }
}

impl Drop for LogRoute {
    fn drop(&mut self) {
        if let Ok(mut log) = LOG.lock() {
            *log = self.previous.take();
        }
    }
}

pub fn verbose() -> bool {
    VERBOSE.load(Ordering::SeqCst)
}

/// Writes one line to the run's command log.
pub fn log_line(line: &str) {
    if let Some(f) = LOG.lock().unwrap().as_mut() {
        let _ = writeln!(f, "{line}");
    }
}

/// The command as a shell-like string, for logs and errors.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), quote(v))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Records that a command starts; returns the moment, for [`log_end`].
pub fn log_start(cmd: &Command) -> Instant {
    let line = format!("+ {}", display(cmd));
    if verbose() {
        // Also runs in guards' Drop, where a panic on a closed stderr would abort.
        crate::exit::say(&line);
    }
    log_line(&line);
    Instant::now()
}

/// Records how a command ended.
pub fn log_end(cmd: &Command, start: Instant, status: &str) {
    log_line(&format!(
        "  [{} after {:.2}s] {}",
        status,
        start.elapsed().as_secs_f64(),
        cmd.get_program().to_string_lossy()
    ));
}

pub fn describe(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "unknown status".into(),
    }
}

/// Last `n` lines of a text, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Ends a child and its whole process group: SIGTERM, a grace period, then SIGKILL.
pub fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id() as i32;
    // SAFETY: kill(2) on a pid/process group we spawned; no memory is involved.
    unsafe {
        libc::kill(-pid, libc::SIGTERM);
        libc::kill(pid, libc::SIGTERM);
    }
    let end = Instant::now() + grace;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a child, polling for signals and an optional deadline. On either, the
/// child's process group is ended. `Ok(None)` means the deadline passed.
pub fn wait(child: &mut Child, deadline: Option<Instant>) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if signals::interrupted() {
            terminate(child, Duration::from_secs(5));
            return Err(signals::Interrupted.into());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            terminate(child, Duration::from_secs(2));
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Running commands with logging, interruption and good errors.
pub trait CommandExt {
    /// Spawns in its own process group (so a terminal's Ctrl-C reaches only us, and we
    /// end the child in order), logged.
    fn spawn_logged(&mut self) -> Result<Child>;
    /// Runs with output going to our terminal; fails on a non-zero exit. Like every method
    /// here without a limit of its own, it is ended after [`default_limit`].
    fn run_logged(&mut self) -> Result<()>;
    /// As [`CommandExt::run_logged`], ended after `limit`.
    fn run_within(&mut self, limit: Duration) -> Result<()>;
    /// Runs capturing output; fails on a non-zero exit with stderr's tail.
    fn output_logged(&mut self) -> Result<Output>;
    /// Runs capturing output, whatever the exit status.
    fn output_unchecked(&mut self) -> Result<Output>;
    /// As [`CommandExt::output_unchecked`], ended after `limit`.
    fn output_within(&mut self, limit: Duration) -> Result<Output>;
    /// Captured stdout, trimmed, of a successful run.
    fn read_logged(&mut self) -> Result<String>;
    /// The child is SIGKILLed when we die, even by SIGKILL (which runs no guard): for the VM's
    /// processes, which would otherwise run on with nobody to end them. Spawn it from the main
    /// thread: the kernel sends the signal when the spawning thread exits.
    fn die_with_us(&mut self) -> &mut Self;
}

impl CommandExt for Command {
    fn die_with_us(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt as _;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork
        // and exec.
        unsafe {
            self.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // We died between the fork and the prctl: nobody would send the signal.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            })
        }
    }

    fn spawn_logged(&mut self) -> Result<Child> {
        log_start(self);
        self.process_group(0);
        self.spawn()
            .with_context(|| format!("could not start `{}`", display(self)))
    }

    fn run_logged(&mut self) -> Result<()> {
        let limit = default_limit(self);
        self.run_within(limit)
    }

    fn run_within(&mut self, limit: Duration) -> Result<()> {
        let start = log_start(self);
        self.process_group(0);
        let mut child = self
            .spawn()
            .with_context(|| format!("could not start `{}`", display(self)))?;
        let Some(status) = wait(&mut child, Some(start + limit))? else {
            log_end(self, start, "timed out");
            bail!(timed_out(self, limit));
        };
        log_end(self, start, &describe(&status));
        if !status.success() {
            bail!("`{}` failed ({})", display(self), describe(&status));
        }
        Ok(())
    }

    fn output_logged(&mut self) -> Result<Output> {
        let out = self.output_unchecked()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let err = if err.trim().is_empty() {
                String::from_utf8_lossy(&out.stdout)
            } else {
                err
            };
            bail!(
                "`{}` failed ({}):\n{}",
                display(self),
                describe(&out.status),
                tail(&err, 10)
            );
        }
        Ok(out)
    }

    fn output_unchecked(&mut self) -> Result<Output> {
        let limit = default_limit(self);
        output_until(self, limit)
    }

    fn output_within(&mut self, limit: Duration) -> Result<Output> {
        output_until(self, limit)
    }

    fn read_logged(&mut self) -> Result<String> {
        let out = self.output_logged()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// How long a command may run when its caller names no limit of its own: long enough for the
/// slowest honest run here, short enough that a hung one ends a bisect instead of stalling it.
/// Builds set theirs from `--build-timeout`.
pub fn default_limit(cmd: &Command) -> Duration {
    const MINUTE: u64 = 60;
    let program = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // git's subcommand is its first argument that is not an option or an option's value.
    let git_sub = args
        .iter()
        .enumerate()
        .find(|(i, a)| {
            !a.starts_with('-') && (*i == 0 || args[i - 1] != "-C" && args[i - 1] != "-c")
        })
        .map(|(_, a)| a.as_str());
    let minutes = match program.as_str() {
        // Package installs, the rootfs bootstrap and building virtiofsd download and compile.
        "apt-get" | "cargo" | "mmdebstrap" | "debootstrap" => 60,
        // A whole kernel tree: unpacking it, committing it, checking out far-apart commits.
        "tar" => 15,
        "git"
            if matches!(
                git_sub,
                Some(
                    "add"
                        | "commit"
                        | "checkout"
                        | "worktree"
                        | "bisect"
                        | "reset"
                        | "stash"
                        | "clean"
                )
            ) =>
        {
            15
        }
        "git" => 2,
        // A kernel build outside the build runner (which applies --build-timeout): its default.
        "make" => crate::settings::DEFAULT_BUILD_TIMEOUT.as_secs() / MINUTE,
        _ => 10,
    };
    Duration::from_secs(minutes * MINUTE)
}

/// The error of a command ended at its limit.
fn timed_out(cmd: &Command, limit: Duration) -> String {
    format!(
        "`{}` did not finish within {} and was ended",
        display(cmd),
        crate::units::human_duration(limit)
    )
}

/// Runs `cmd` capturing its output, whatever its exit status; a run that has not ended within
/// `limit` is ended and is an error naming the command.
fn output_until(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let start = log_start(cmd);
    cmd.process_group(0);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if cmd.get_program() != "sh" {
        cmd.stdin(Stdio::null());
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t2 = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let Some(status) = wait(&mut child, Some(start + limit))? else {
        log_end(cmd, start, "timed out");
        bail!(timed_out(cmd, limit));
    };
    let out = Output {
        status,
        stdout: t1.join().unwrap_or_default(),
        stderr: t2.join().unwrap_or_default(),
    };
    log_end(cmd, start, &describe(&status));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_needs_it() {
        let mut c = Command::new("make");
        c.arg("O=/b d").arg("-j2").env("KBUILD_BUILD_USER", "xtask");
        assert_eq!(display(&c), "KBUILD_BUILD_USER=xtask make 'O=/b d' -j2");
    }

    #[test]
    fn failure_names_command_and_stderr() {
        let e = Command::new("sh")
            .args(["-c", "echo boom >&2; exit 3"])
            .output_logged()
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("exit 3") && e.contains("boom") && e.contains("sh -c"),
            "{e}"
        );
    }

    #[test]
    fn deadline_ends_the_child() {
        let mut child = Command::new("sleep").arg("30").spawn_logged().unwrap();
        let t = Instant::now();
        let r = wait(
            &mut child,
            Some(Instant::now() + Duration::from_millis(200)),
        )
        .unwrap();
        assert!(r.is_none());
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn every_command_has_a_limit() {
        let limit = |prog: &str, args: &[&str]| {
            let mut c = Command::new(prog);
            c.args(args);
            default_limit(&c).as_secs() / 60
        };
        assert_eq!(limit("git", &["-C", "/t", "rev-parse", "HEAD"]), 2);
        assert_eq!(
            limit("/usr/bin/git", &["-C", "/t", "checkout", "-q", "x"]),
            15
        );
        assert_eq!(limit("git", &["-c", "a=b", "worktree", "add", "/w"]), 15);
        // An option's value that reads like a subcommand is not one.
        assert_eq!(limit("git", &["-C", "commit", "status"]), 2);
        assert_eq!(limit("mmdebstrap", &[]), 60);
        assert_eq!(limit("systemd-nspawn", &["--quiet"]), 10);
        assert_eq!(limit("make", &["-j2"]), 180);
    }

    #[test]
    fn a_command_past_its_limit_is_ended_and_named() {
        let t = Instant::now();
        let e = Command::new("sleep")
            .arg("30")
            .output_within(Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sleep 30` did not finish within"), "{e}");
        let e = Command::new("sleep")
            .arg("30")
            .run_within(Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(e.contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
