//! Running this same binary as one timed phase of a longer task (quickstart, `test`): its
//! output goes to the terminal, its start and end are announced with the time it took; one
//! may run beside the caller's own work.

use crate::cmd::CommandExt;
use crate::ctx::Ctx;
use crate::exit;
use crate::units::human_duration;
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Runs this same binary with `args` (and the context's state dir and verbosity), as one
/// timed phase whose output goes to the terminal; fails unless it exits 0.
pub fn run_self<S: AsRef<OsStr>>(
    ctx: &Ctx,
    phase: &str,
    tree: Option<&Path>,
    args: &[S],
) -> Result<()> {
    match run_self_code(ctx, phase, tree, args)? {
        0 => Ok(()),
        c => bail!("phase {phase} failed (exit {c})"),
    }
}

/// As [`run_self`], returning the exit code (see [`exit::passed_on`]).
pub fn run_self_code<S: AsRef<OsStr>>(
    ctx: &Ctx,
    phase: &str,
    tree: Option<&Path>,
    args: &[S],
) -> Result<u8> {
    start_self(ctx, phase, tree, args)?.finish()
}

/// A phase running beside the caller's own work: [`Phase::finish`] waits for it; dropped
/// unfinished (the caller failed or was interrupted), it is ended.
pub struct Phase {
    name: String,
    child: Option<std::process::Child>,
    start: Instant,
}

/// Starts this same binary with `args` as a phase (see [`run_self`]) and returns at once.
pub fn start_self<S: AsRef<OsStr>>(
    ctx: &Ctx,
    phase: &str,
    tree: Option<&Path>,
    args: &[S],
) -> Result<Phase> {
    let start = Instant::now();
    eprintln!("==> {phase}");
    let mut c = Command::new(self_exe()?);
    c.arg("--state-dir").arg(&ctx.state.root);
    if let Some(t) = tree {
        c.arg("--tree").arg(t);
    }
    if ctx.verbose {
        c.arg("-v");
    }
    c.args(args);
    let child = c.spawn_logged().with_context(|| format!("phase {phase}"))?;
    Ok(Phase {
        name: phase.to_string(),
        child: Some(child),
        start,
    })
}

impl Phase {
    /// Waits for the phase's end; its exit code.
    pub fn finish(mut self) -> Result<u8> {
        let mut child = self.child.take().expect("a phase is finished once");
        // No limit here: the phase is this binary, whose every command has its own.
        let status = crate::cmd::wait(&mut child, None)?.expect("no deadline");
        let code = exit::passed_on(status.code(), status.signal());
        eprintln!(
            "==> {}: exit {code} after {}",
            self.name,
            human_duration(self.start.elapsed())
        );
        Ok(code)
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::cmd::terminate(&mut child, std::time::Duration::from_secs(5));
        }
    }
}

/// This binary's path. When it was rebuilt while running, Linux names the old one
/// "… (deleted)"; the path then holds the new build, which is what the next phase wants.
pub fn self_exe() -> Result<PathBuf> {
    let p = std::env::current_exe()?;
    let s = p.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(stripped) => PathBuf::from(stripped),
        None => p,
    })
}
