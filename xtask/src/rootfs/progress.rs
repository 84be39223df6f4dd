//! Running a long step's command with its whole output going to a log while the progress
//! display ([`crate::progress`]) shows its `I: ` lines.

use crate::cmd::{self, CommandExt};
use crate::progress::Progress;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` with stdout and stderr merged into `log`, showing lines that start with
/// `I: ` (mmdebstrap's and our scripts' progress) on the step. Ctrl-C ends it (see
/// [`cmd::wait`]). Returns the exit status; the caller reads the log to explain a failure.
pub fn run_logged_to(mut cmd: Command, log: &Path, step: &Progress) -> Result<ExitStatus> {
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

    let bar = step.clone();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(reader);
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            let _ = file.write_all(&line);
            let text = String::from_utf8_lossy(&line);
            if let Some(msg) = text.strip_prefix("I: ") {
                bar.set_message(msg);
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
