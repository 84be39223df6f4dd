//! Running external commands: each one is logged (argv, duration, status) to the run's
//! `commands.log`, printed with `-v`, interruptible, and fails with argv and stderr's tail.

use crate::signals;
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
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
        eprintln!("{line}");
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
    /// Runs with output going to our terminal; fails on a non-zero exit.
    fn run_logged(&mut self) -> Result<()>;
    /// Runs capturing output; fails on a non-zero exit with stderr's tail.
    fn output_logged(&mut self) -> Result<Output>;
    /// Runs capturing output, whatever the exit status.
    fn output_unchecked(&mut self) -> Result<Output>;
    /// As [`CommandExt::output_unchecked`], but fails (the child's process group ended) when
    /// it has not finished within `limit`.
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
        let start = log_start(self);
        self.process_group(0);
        let mut child = self
            .spawn()
            .with_context(|| format!("could not start `{}`", display(self)))?;
        let status = wait(&mut child, None)?.expect("no deadline");
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
        output_until(self, None)
    }

    fn output_within(&mut self, limit: Duration) -> Result<Output> {
        output_until(self, Some(limit))
    }

    fn read_logged(&mut self) -> Result<String> {
        let out = self.output_logged()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Runs `cmd` capturing its output, whatever its exit status; with a limit, a run that has
/// not ended by then is ended and is an error naming the command.
fn output_until(cmd: &mut Command, limit: Option<Duration>) -> Result<Output> {
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
    let deadline = limit.map(|l| Instant::now() + l);
    let Some(status) = wait(&mut child, deadline)? else {
        log_end(cmd, start, "timed out");
        bail!(
            "`{}` did not finish within {}s",
            display(cmd),
            limit.unwrap_or_default().as_secs()
        );
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
}
