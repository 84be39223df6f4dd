//! Long steps: a spinner with elapsed time (a plain line when stderr is not a terminal), and
//! running a command with its whole output going to a log while the spinner shows its
//! progress lines.

use crate::cmd::{self, CommandExt};
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// One step the user waits for.
pub struct Step {
    name: String,
    start: Instant,
    bar: ProgressBar,
    /// No terminal: progress messages are printed as lines instead of a spinner.
    plain: bool,
}

impl Step {
    pub fn start(name: &str) -> Step {
        let plain = !std::io::stderr().is_terminal();
        let bar = if !plain {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            eprintln!("{name}...");
            ProgressBar::hidden()
        };
        Step {
            name: name.to_string(),
            start: Instant::now(),
            bar,
            plain,
        }
    }

    pub fn done(self) {
        self.bar.finish_and_clear();
        eprintln!(
            "{}: done in {:.1}s",
            self.name,
            self.start.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        // On an error the line is cleared, so the error stands alone.
        if !self.bar.is_finished() {
            self.bar.finish_and_clear();
        }
    }
}

/// Runs `cmd` with stdout and stderr merged into `log`, showing lines that start with
/// `I: ` (mmdebstrap's and our scripts' progress) on the step. Ctrl-C ends it (see
/// [`cmd::wait`]). Returns the exit status; the caller reads the log to explain a failure.
pub fn run_logged_to(mut cmd: Command, log: &Path, step: &Step) -> Result<ExitStatus> {
    let mut file =
        File::create(log).with_context(|| format!("creating the log {}", log.display()))?;
    writeln!(file, "+ {}", cmd::display(&cmd))?;
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let start = Instant::now();
    let mut child = cmd.spawn_logged()?;
    // Drop our copies of the pipe's write end, or the reader would never see the end.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());

    let (bar, plain) = (step.bar.clone(), step.plain);
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let _ = file.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            if let Some(msg) = text.strip_prefix("I: ") {
                report(&bar, plain, msg);
            }
            line.clear();
        }
        let _ = file.flush();
        let _ = done_tx.send(());
    });

    let limit = cmd::default_limit(&cmd);
    let Some(status) = cmd::wait(&mut child, Some(start + limit))? else {
        cmd::log_end(&cmd, start, "timed out");
        anyhow::bail!(
            "`{}` did not finish within {} and was ended (log: {})",
            cmd::display(&cmd),
            crate::units::human_duration(limit),
            log.display()
        );
    };
    cmd::log_end(&cmd, start, &format!("{status}"));
    // Grandchildren that kept the pipe open must not hang us; the log is then only partial.
    let _ = done_rx.recv_timeout(Duration::from_secs(5));
    Ok(status)
}

/// One progress message: on the spinner, or as a line of its own without a terminal.
fn report(bar: &ProgressBar, plain: bool, msg: &str) {
    let msg: String = msg.trim().chars().take(100).collect();
    if plain {
        eprintln!("  {msg}");
    } else {
        bar.set_message(msg);
    }
}
