//! `cargo xtask`: parses the command line and dispatches to one task per module.

mod arch;
#[cfg(test)]
mod arrows;
mod atomic;
mod backend;
mod bench;
mod bisect;
mod build;
mod cache;
mod check;
mod cli;
mod cmd;
mod container;
mod ctx;
mod deps;
mod dispatch;
mod doctor;
mod exit;
mod git;
mod history;
mod kconfig;
mod kselftest;
mod ktap;
mod kunit;
mod kvm;
mod layer;
#[cfg(feature = "libvirt")]
mod libvirt;
mod linux_source;
mod lock;
mod options;
mod phase;
mod progress;
mod quickstart;
mod rootfs;
mod settings;
mod signals;
mod state;
#[cfg(test)]
mod test_data;
mod testrun;
mod tools;
mod trim;
mod units;
mod vm;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A usage error is 129 whether or not it could be printed; help or the version that
        // could not be printed is a closed stdout.
        Err(e) if e.kind() == clap::error::ErrorKind::InvalidUtf8 => {
            // clap does not say which argument; name it.
            let args: Vec<_> = std::env::args_os().collect();
            match cli::non_utf8_argument(&args) {
                Some(line) => exit::say(&format!("error: {line}")),
                None => drop(e.print()),
            }
            return ExitCode::from(exit::USAGE);
        }
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(exit::USAGE);
        }
        Err(e) => {
            let printed = e.print().is_ok();
            return ExitCode::from(if printed {
                exit::OK
            } else {
                exit::CLOSED_OUTPUT
            });
        }
    };
    if let Some(why) = cli::refusal(&cli) {
        exit::say(&format!("error: {why}"));
        return ExitCode::from(exit::USAGE);
    }
    signals::install();
    exit::install_panic_hook();
    ExitCode::from(
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
            Ok(result) => exit::of_result(result),
            Err(payload) => exit::of_panic(payload.as_ref()),
        },
    )
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Completions(c) = &cli.command {
        // Through print!, so that a closed stdout stops quietly (clap_complete's own write
        // would panic as an internal error).
        let mut script = Vec::new();
        clap_complete::generate(c.shell, &mut Cli::command(), "cargo-xtask", &mut script);
        print!("{}", String::from_utf8_lossy(&script));
        return Ok(exit::OK);
    }
    let file = settings::FileConfig::load()?;
    let tree = settings::resolve_tree(
        cli.tree.as_deref(),
        std::env::var_os("KERNEL_TREE").map(Into::into),
        &file,
    );
    let state = state::StateDir::new(settings::resolve_state_dir(cli.state_dir.as_deref(), &file));
    settings::require_utf8(&state.root, "the state dir")?;
    state.ensure()?;
    let task = task_name(&cli.command);
    let run_dir = state.new_run_dir(task)?;
    let ctx = ctx::Ctx::new(tree, state, file, run_dir, cli.verbose);
    // The end-to-end tests' way to reach the last resort: a panic becomes one line and 128.
    if std::env::var_os("XTASK_TEST_PANIC").is_some() {
        panic!("XTASK_TEST_PANIC is set");
    }
    dispatch::run(cli.command, &ctx)
}

fn task_name(c: &Command) -> &'static str {
    match c {
        Command::SetupRootfs(_) => "setup-rootfs",
        Command::TrimConfig(_) => "trim-config",
        Command::Build(_) => "build",
        Command::Boot(_) => "boot",
        Command::Check(_) => "check",
        Command::Bisect(_) => "bisect",
        Command::Doctor(_) => "doctor",
        Command::Deps(_) => "deps",
        Command::Quickstart(_) => "quickstart",
        Command::Cache(_) => "cache",
        Command::Layer(_) => "layer",
        Command::Bench(_) => "bench",
        Command::Test(_) => "test",
        Command::Completions(_) => "completions",
        Command::MakeHistory(_) => "make-history",
    }
}
