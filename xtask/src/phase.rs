//! Running this same binary as one timed phase of a longer task (quickstart, `test`): its
//! output goes to the terminal, its start and end are announced with the time it took.

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
    let mut child = c.spawn_logged().with_context(|| format!("phase {phase}"))?;
    // No limit here: the phase is this binary, whose every command has its own.
    let status = crate::cmd::wait(&mut child, None)?.expect("no deadline");
    let code = exit::passed_on(status.code(), status.signal());
    eprintln!(
        "==> {phase}: exit {code} after {}",
        human_duration(start.elapsed())
    );
    Ok(code)
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
