//! Runs make (and a build's other commands) in the container or on the host: each through
//! `CommandExt`, its output teed into a log, a status line with the current target and
//! elapsed time. The one make runner: builds and trim-config both run make here.

use super::plan::Invocation;
use super::progress::step_of;
use crate::cmd::{self, CommandExt};
use crate::container::Container;
use crate::progress::Progress;
use anyhow::{Context, Result};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a build's commands run.
#[derive(Clone)]
pub enum Place {
    /// The rootfs container, with the sources at /src (read-only) and the build dir at /build.
    Container(Container),
    /// The host, in the build dir.
    Host { build_dir: PathBuf },
}

impl Place {
    pub fn container(container: Container, src: &Path, build_dir: &Path) -> Place {
        Place::Container(
            container
                // Read-only: an `O=` build never writes into the sources.
                .bind_ro(src, "/src")
                .bind(build_dir, "/build")
                .workdir("/build"),
        )
    }
}

pub struct Runner {
    place: Place,
    log: Arc<Mutex<File>>,
    pub log_path: PathBuf,
    /// The progress display; None when the caller shows its own.
    bar: Option<Progress>,
    /// The commands run, in order, for the metadata.
    pub commands: Vec<Vec<String>>,
    /// How many `make` runs this build made.
    pub make_runs: u32,
    /// How long one step may run (`--build-timeout`).
    limit: Duration,
}

/// How a step ended.
pub struct Step {
    pub ok: bool,
    /// How it ended, as the log says it (`exit 2`, `killed by a signal`).
    pub status: String,
    pub duration: Duration,
    /// What the step printed (its part of the build log).
    pub output: String,
}

impl Runner {
    /// A runner whose steps append to `log_path`, shown on `bar` (None: not shown).
    pub fn new(
        place: Place,
        log_path: PathBuf,
        bar: Option<Progress>,
        limit: Duration,
    ) -> Result<Runner> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening the log {}", log_path.display()))?;
        Ok(Runner {
            place,
            log: Arc::new(Mutex::new(log)),
            log_path,
            bar,
            commands: Vec::new(),
            make_runs: 0,
            limit,
        })
    }

    /// The command with exactly the invocation's environment: the container starts from an
    /// empty one; on the host ours is cleared but `PATH` (whose compiler the toolchain
    /// identity names) and `HOME` (ccache's config), so a user's `ARCH`, `KCFLAGS` or `TZ`
    /// cannot reach make without being in the key.
    fn command(&self, run: &Invocation) -> Result<Command> {
        let argv = &run.argv;
        Ok(match &self.place {
            Place::Container(c) => {
                let mut c = c.clone();
                for (k, v) in &run.env {
                    c = c.env(k, v);
                }
                // Tied: a make that outlived a killed run would race the next build.
                c.tied_command(argv)?
            }
            Place::Host { build_dir } => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]).env_clear();
                for name in ["PATH", "HOME"] {
                    if let Some(v) = std::env::var_os(name) {
                        c.env(name, v);
                    }
                }
                c.envs(run.env.iter().map(|(k, v)| (k, v)));
                c.current_dir(build_dir).stdin(Stdio::null());
                c
            }
        })
    }

    /// Runs one step; a non-zero exit is `ok: false` (the kernel's failure), while a command
    /// that cannot start, one still running at the limit, or Ctrl-C, is an error.
    pub fn step(&mut self, label: &str, run: &Invocation) -> Result<Step> {
        let argv = &run.argv;
        let mut cmd = self.command(run)?;
        self.commands.push(argv.to_vec());
        if argv.first().is_some_and(|p| p == "make") {
            self.make_runs += 1;
        }
        if let Some(bar) = &self.bar {
            bar.set_message(label);
        }
        let offset = {
            let mut log = self.log.lock().unwrap();
            writeln!(log, "### {label}: {}", argv.join(" "))?;
            log.metadata()?.len()
        };
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let start = Instant::now();
        let mut child = cmd.spawn_logged()?;
        // A tied command's stdin: held until it ends.
        let _tie = child.stdin.take();
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| {
            let log = Arc::clone(&self.log);
            let bar = self.bar.clone();
            std::thread::spawn(move || tee(stream, &log, &bar))
        })
        .collect();
        let status = cmd::wait(&mut child, Some(start + self.limit));
        for r in readers {
            let _ = r.join();
        }
        let Some(status) = status? else {
            cmd::log_end(&cmd, start, "timed out");
            writeln!(self.log.lock().unwrap(), "### {label}: timed out")?;
            anyhow::bail!(
                "{label} did not finish within {} and was ended (--build-timeout sets the limit; log: {})",
                crate::units::human_duration(self.limit),
                self.log_path.display()
            );
        };
        let duration = start.elapsed();
        let code = status
            .code()
            .map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
        cmd::log_end(&cmd, start, &code);
        writeln!(self.log.lock().unwrap(), "### {label}: {code}")?;
        let output = std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b[offset as usize..]).into_owned())
            .unwrap_or_default();
        Ok(Step {
            ok: status.success(),
            status: code,
            duration,
            output,
        })
    }

    /// Writes a line of our own into the build log (a step that did not need to run).
    pub fn note(&self, line: &str) -> Result<()> {
        writeln!(self.log.lock().unwrap(), "{line}")?;
        Ok(())
    }

    /// Clears the status line.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Copies a stream into the log line by line, showing each kbuild step on the status line.
fn tee(stream: Box<dyn Read + Send>, log: &Mutex<File>, bar: &Option<Progress>) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let text = String::from_utf8_lossy(&line);
        if let (Some(step), Some(bar)) = (step_of(text.trim_end()), bar) {
            bar.set_message(&step);
        }
        let _ = log.lock().unwrap().write_all(&line);
        line.clear();
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.finish();
    }
}
