//! From a parsed command line to its task: each subcommand's options resolved into the plain
//! data its task takes, and the task called. The one layer above the domain modules, which
//! never see clap types.

use crate::build::{ensure_kernel, BuildOutcome};
use crate::cli::{BuildCmd, Command, LayerAction, LayerArgs, SetupRootfsArgs};
use crate::ctx::Ctx;
use crate::exit;
use crate::units::{human_bytes, human_duration, short};
use anyhow::Result;

/// Runs `command`'s task; its exit code.
pub fn run(command: Command, ctx: &Ctx) -> Result<u8> {
    match command {
        Command::SetupRootfs(a) => setup_rootfs(a, ctx),
        Command::TrimConfig(a) => a.run(ctx),
        Command::Build(a) => build(a, ctx),
        Command::Boot(a) => a.run(ctx),
        Command::Check(a) => a.run(ctx),
        Command::Bisect(a) => a.run(ctx),
        Command::Doctor(a) => a.run(ctx),
        Command::Deps(a) => a.run(ctx),
        Command::Quickstart(a) => a.run(ctx),
        Command::Cache(a) => a.run(ctx),
        Command::Layer(a) => layer(a, ctx),
        Command::Bench(a) => a.run(ctx),
        Command::Test(a) => a.run(ctx),
        Command::MakeHistory(a) => a.run(ctx),
        Command::Completions(_) => unreachable!("handled above"),
    }
}

fn setup_rootfs(a: SetupRootfsArgs, ctx: &Ctx) -> Result<u8> {
    if a.shell {
        return crate::rootfs::shell(&ctx.state, &a.command);
    }
    let arch = a.arch.unwrap_or(crate::arch::HOST);
    crate::rootfs::setup(ctx, arch, a.suite.as_deref(), a.mirror.as_deref(), a.force)
}

fn layer(a: LayerArgs, ctx: &Ctx) -> Result<u8> {
    match a.action {
        LayerAction::Ls => crate::layer::ls(&ctx.state),
        LayerAction::Rm { name } => crate::layer::rm(&ctx.state, &name),
    }
}

/// `build [REV]`: the kernel through the cache, and where its files are.
fn build(a: BuildCmd, ctx: &Ctx) -> Result<u8> {
    {
        let opts = a.build.resolve(&ctx.file.build)?;
        match ensure_kernel(ctx, a.rev.as_deref(), &opts)? {
            BuildOutcome::Built(a) => {
                let what = a.commit.as_deref().map_or("working state", short);
                if a.cache_hit {
                    println!(
                        "cache hit: {} ({what}) in {}, no make run",
                        short(&a.key),
                        human_duration(a.duration)
                    );
                } else {
                    println!(
                        "built: {} ({what}) in {}, {} make runs",
                        short(&a.key),
                        human_duration(a.duration),
                        a.make_runs
                    );
                }
                println!(
                    "{:<11}{} ({})",
                    format!("{}:", opts.arch.image_target),
                    a.image.display(),
                    human_bytes(std::fs::metadata(&a.image).map_or(0, |m| m.len()))
                );
                if let Some(i) = &a.initramfs {
                    println!("initramfs: {}", i.display());
                }
                if let Some(m) = &a.modules {
                    println!("modules:   {}", m.display());
                }
                println!("config:    {}", a.config.display());
                println!("log:       {}", a.log.display());
                println!("entry:     {}", a.dir.display());
                Ok(exit::OK)
            }
            BuildOutcome::Failed {
                key, log, summary, ..
            } => {
                eprintln!("build failed (key {}):\n{summary}", short(&key));
                eprintln!("full log: {}", log.display());
                eprintln!("the failure is cached for these inputs; --retry-failed builds again");
                // The kernel's failure, as `git bisect run cargo xtask build` reads it: bad.
                Ok(exit::FAILED)
            }
        }
    }
}
