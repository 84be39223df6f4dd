//! `cargo xtask quickstart`: from a fresh Debian 12 machine to a verdict — host packages, the
//! rootfs, a kernel tree (the configured one, or one made from linux-source-6.1), a trimmed
//! config, a build and the clean-boot check — printing each phase's time.

use crate::ctx::Ctx;
use crate::phase::{run_self, run_self_code};
use crate::settings::workspace_root;
use crate::units::human_duration;
use crate::{deps, exit, linux_source};
use anyhow::{bail, Result};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Instant;

/// What quickstart was asked, resolved and checked (cli/resolve.rs) before anything is
/// installed or built.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickstartRequest {
    /// `--kernel`, checked to be a file: booted as it is, so no config is trimmed and no
    /// kernel built.
    pub kernel: Option<PathBuf>,
    /// Every option given, as the command line its check is run with.
    pub check_args: Vec<OsString>,
}

/// From nothing to a verdict, each phase a `cargo xtask` of its own; the check's exit code.
pub fn run(ctx: &Ctx, req: &QuickstartRequest) -> Result<u8> {
    let start = Instant::now();
    let t = Instant::now();
    eprintln!("==> deps");
    deps::install()?;
    eprintln!("==> deps: done in {}", human_duration(t.elapsed()));
    run_self(ctx, "setup-rootfs", None, &["setup-rootfs"])?;
    let default_tree = workspace_root().join("linux");
    let tree = if ctx.tree == default_tree && !default_tree.exists() {
        let t = Instant::now();
        eprintln!(
            "==> kernel tree: none configured, making {} from linux-source-6.1",
            default_tree.display()
        );
        linux_source::ensure_tree(&default_tree)?;
        eprintln!("==> kernel tree: done in {}", human_duration(t.elapsed()));
        default_tree
    } else {
        ctx.require_tree()?
    };
    if req.kernel.is_some() {
        eprintln!("==> trim-config, build: skipped, --kernel is booted as it is");
    } else {
        // A config made before (or xtask.toml's) is kept: trimming again takes a minute
        // and gives the same config.
        let config = ctx.state.trimmed_config();
        match &ctx.file.build.config {
            Some(c) => eprintln!(
                "==> trim-config: skipped, xtask.toml builds {}",
                c.display()
            ),
            None if config.is_file() => eprintln!(
                "==> trim-config: kept {} (`cargo xtask trim-config` makes it again)",
                config.display()
            ),
            None => run_self(ctx, "trim-config", Some(&tree), &["trim-config"])?,
        }
        run_self(ctx, "build", Some(&tree), &["build"])?;
    }
    let mut check = vec![OsString::from("check")];
    check.extend(req.check_args.iter().cloned());
    let code = run_self_code(ctx, "check (clean boot)", Some(&tree), &check)?;
    // Its verdict is ours; anything else is check's own error line, and ours is 128.
    let verdict = match code {
        exit::OK => "good: the kernel boots cleanly",
        exit::FAILED => {
            "bad: the kernel warned, oopsed or panicked at boot (see the console log above)"
        }
        exit::UNTESTABLE => "untestable: the kernel did not build or boot",
        _ => bail!("check could not run (exit {code})"),
    };
    eprintln!(
        "quickstart: {verdict} ({} in all)",
        human_duration(start.elapsed())
    );
    eprintln!(
        "next: edit {} and run `cargo xtask check -- <your test>`",
        tree.display()
    );
    Ok(code)
}
