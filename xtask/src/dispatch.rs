//! From a parsed command line to its task: each subcommand's options resolved into the plain
//! data its task takes, and the task called. The one layer above the domain modules, which
//! never see clap types.

use crate::build::{ensure_kernel, BuildOutcome};
use crate::cli::{
    BootCmd, BuildCmd, CacheAction, CacheArgs, CheckCmd, Command, LayerAction, LayerArgs,
    SetupRootfsArgs,
};
use crate::ctx::Ctx;
use crate::exit;
use crate::units::{human_bytes, human_duration, short};
use crate::vm::run::Plan;
use crate::vm::spec::{Console, RunPaths};
use crate::vm::{kernel_for, prepare, CheckOutcome};
use anyhow::{bail, Result};
use std::io::Write;

/// Runs `command`'s task; its exit code.
pub fn run(command: Command, ctx: &Ctx) -> Result<u8> {
    match command {
        Command::SetupRootfs(a) => setup_rootfs(a, ctx),
        Command::TrimConfig(a) => {
            crate::trim::trim(ctx, &a.resolve(&ctx.file.trim, &ctx.state)?)?;
            Ok(exit::OK)
        }
        Command::Build(a) => build(a, ctx),
        Command::Boot(a) => boot(a, ctx),
        Command::Check(a) => check(a, ctx),
        Command::Bisect(a) => {
            let argv: Vec<_> = std::env::args_os().skip(1).collect();
            crate::bisect::run(ctx, a.resolve(&ctx.file, &argv)?)
        }
        Command::Doctor(a) => crate::doctor::run(ctx, a.reprobe),
        Command::Deps(a) => crate::deps::run(&ctx.state, a.install, a.peers),
        Command::Quickstart(a) => crate::quickstart::run(ctx, &a.resolve(&ctx.file.vm)?),
        Command::Cache(a) => cache(a, ctx),
        Command::Layer(a) => layer(a, ctx),
        Command::Bench(a) => crate::bench::run(ctx, a.resolve(&ctx.file)?),
        Command::Test(a) => a.resolve()?.run(ctx),
        Command::MakeHistory(a) => crate::history::run(ctx, &a.base, &a.branch, &a.changes()?),
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

fn cache(a: CacheArgs, ctx: &Ctx) -> Result<u8> {
    use crate::cache::{gc, ls, show, MAX_SIZE};
    let cache = crate::build::cache::Cache::new(&ctx.state);
    match a.action {
        CacheAction::Ls => ls(&cache),
        CacheAction::Show { what } => show(ctx, &cache, &what),
        CacheAction::Gc { max_size } => gc(
            &cache,
            max_size.bytes_within("--max-size", (0, "0"), MAX_SIZE)?,
        ),
    }
}

fn layer(a: LayerArgs, ctx: &Ctx) -> Result<u8> {
    match a.action {
        LayerAction::Ls => crate::layer::ls(&ctx.state),
        LayerAction::Rm { name } => crate::layer::rm(&ctx.state, &name),
    }
}

/// `build [REV]`: the kernel through the cache, and where its files are.
fn build(a: BuildCmd, ctx: &Ctx) -> Result<u8> {
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
                let ccache = a.ccache.map(|c| format!(", {}", c.describe()));
                println!(
                    "built: {} ({what}) in {}, {} make runs{}",
                    short(&a.key),
                    human_duration(a.duration),
                    a.make_runs,
                    ccache.unwrap_or_default()
                );
            }
            println!(
                "{:<11}{} ({})",
                format!("{}:", opts.arch.image_target),
                a.image.display(),
                human_bytes(std::fs::metadata(&a.image).map_or(0, |m| m.len()))
            );
            if let Some(v) = &a.pvh_image {
                let size = human_bytes(std::fs::metadata(v).map_or(0, |m| m.len()));
                println!(
                    "vmlinux:   {} ({size}, the fast lane boots it through PVH)",
                    v.display()
                );
            }
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

/// `check`: one kernel judged (or a run judged again from its logs), the verdict its exit code.
fn check(a: CheckCmd, ctx: &Ctx) -> Result<u8> {
    let outcome = match &a.from_run {
        Some(dir) => {
            let re = crate::vm::console::compile(&a.check.bad_if_console)?;
            if let Some(j) = crate::check::unbuilt(dir) {
                bail!(
                    "{} holds no boot to judge again: {}",
                    dir.display(),
                    j.reason
                );
            }
            let r = crate::vm::run::rejudge(dir, &re)?;
            let r = crate::kunit::run::judge_run(r, &a.check.tests.resolve()?)?;
            CheckOutcome {
                judgement: r.judgement.clone(),
                runs: vec![r],
            }
        }
        None => crate::check::run(ctx, &a.request(&ctx.file)?, false)?,
    };
    if a.json {
        println!("{}", crate::check::json(&outcome, &ctx.run_dir)?);
    }
    crate::kunit::run::show(&outcome, &a.check.tests.resolve()?)?;
    crate::check::print_outcome(&outcome, !a.json);
    Ok(outcome.verdict().exit_code())
}

/// `boot`: a console on the kernel, or `--exec`'s command with its exit code passed on.
fn boot(a: BootCmd, ctx: &Ctx) -> Result<u8> {
    let req = a.request(&ctx.file)?;
    let opts = &req.vm;
    let tools = crate::backend::find_tools(opts)?;
    let kernel = match kernel_for(ctx, &req.kernel)? {
        Ok(k) => k,
        Err(j) => {
            eprintln!("{}", j.reason);
            return Ok(j.verdict().exit_code());
        }
    };
    let paths = RunPaths::new(&ctx.run_dir);
    match &req.exec {
        Some(cmdline) => {
            let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Log)?;
            let plan = Plan {
                command: vec!["/bin/sh".into(), "-c".into(), cmdline.clone()],
                ..Plan::default()
            };
            let r = crate::vm::run::check(&spec, &paths, &tools, &plan, &mut |e| {
                crate::check::print_event(&e)
            })?;
            if let Some(e) = &r.exec {
                let _ = std::io::stdout().write_all(&e.stdout);
                let _ = std::io::stderr().write_all(&e.stderr);
            }
            eprintln!("timings: {}", r.timings.line());
            crate::check::print_timeline(&r);
            Ok(match &r.facts.command_end {
                Some(crate::vm::verdict::CommandEnd::Exited { code }) => {
                    exit::passed_on(Some(*code), None)
                }
                Some(crate::vm::verdict::CommandEnd::Signaled { signal }) => {
                    exit::passed_on(None, Some(*signal))
                }
                _ => {
                    eprintln!(
                        "{} (console log: {})",
                        r.judgement.reason,
                        r.console_log.display()
                    );
                    // Not the kernel's doing (the guest lacks sh, virtiofsd died): 128.
                    match r.judgement.verdict() {
                        crate::vm::verdict::Verdict::Abort => crate::vm::verdict::Verdict::Abort,
                        _ => crate::vm::verdict::Verdict::Skip,
                    }
                    .exit_code()
                }
            })
        }
        None if req.print_xml => {
            let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Log)?;
            #[cfg(feature = "libvirt")]
            print!("{}", crate::libvirt::xml_for(&spec, &paths, &tools)?);
            #[cfg(not(feature = "libvirt"))]
            let _ = (spec, tools);
            Ok(0)
        }
        #[cfg(feature = "libvirt")]
        None if opts.backend == crate::options::Backend::Libvirt => {
            let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Interactive)?;
            crate::libvirt::boot_interactive(&spec, &paths, &tools)
        }
        None => {
            let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Interactive)?;
            eprintln!(
                "booting {} ({:?}, {} init); Ctrl-A X quits, Ctrl-A C is the QEMU monitor",
                spec.kernel.display(),
                spec.accel,
                spec.init.name()
            );
            let mut vm = crate::vm::run::Vm::start(&spec, &paths, &tools)?;
            let st = vm.wait_foreground()?;
            eprintln!("console log: {}", paths.console_log().display());
            // A guest that powers off, reboots or panics ends QEMU with 0 (-no-reboot);
            // anything else is QEMU's own failure.
            if !st.success() {
                bail!("QEMU exited with {st}");
            }
            Ok(exit::OK)
        }
    }
}
