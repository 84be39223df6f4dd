//! `cargo xtask`: parses the command line and dispatches to one task per module.

mod bench;
mod bisect;
mod build;
mod cache;
mod cli;
mod cmd;
mod container;
mod ctx;
mod deps;
mod doctor;
mod fixture;
mod history;
mod kconfig;
mod kvm;
#[cfg(feature = "libvirt")]
mod libvirt;
mod quickstart;
mod rootfs;
mod settings;
mod signals;
mod state;
mod testrun;
mod tools;
mod trim;
mod units;
mod vm;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use std::process::ExitCode;

/// Exit code for a problem of the setup or an error (aborts `git bisect run`).
pub const EXIT_SETUP: u8 = 128;
/// Exit code for a command line that does not parse (also aborts `git bisect run`).
pub const EXIT_USAGE: u8 = 129;
/// Exit code after Ctrl-C or SIGTERM.
pub const EXIT_INTERRUPTED: u8 = 130;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    signals::install();
    quiet_broken_pipe_panics();
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(result) => result,
        // The reader of our stdout went away (`cargo xtask cache ls | head`). The unwinding has
        // run every guard (VMs, locks, temp dirs); stop as a shell's SIGPIPE would.
        Err(payload) if is_broken_pipe(payload.as_ref()) => return ExitCode::from(EXIT_PIPE),
        Err(payload) => std::panic::resume_unwind(payload),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if signals::is_interrupted(&e) => {
            eprintln!("interrupted: stopped and cleaned up");
            ExitCode::from(EXIT_INTERRUPTED)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_SETUP)
        }
    }
}

/// Exit code when stdout's reader has gone: 128 + SIGPIPE, as a shell reports it.
const EXIT_PIPE: u8 = 141;

/// `println!` panics with this once stdout is a closed pipe.
fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.starts_with("failed printing to stdout") && text.contains("os error 32")
}

/// Keeps the panic message of a closed stdout off the terminal; every other panic is printed
/// as usual.
fn quiet_broken_pipe_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !is_broken_pipe(info.payload()) {
            default(info)
        }
    }));
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Completions(c) = &cli.command {
        clap_complete::generate(
            c.shell,
            &mut Cli::command(),
            "cargo-xtask",
            &mut std::io::stdout(),
        );
        return Ok(0);
    }
    let file = settings::FileConfig::load()?;
    let tree = settings::resolve_tree(
        cli.tree.as_deref(),
        std::env::var_os("KERNEL_TREE").map(Into::into),
        &file,
    );
    let state = state::StateDir::new(settings::resolve_state_dir(cli.state_dir.as_deref(), &file));
    state.ensure()?;
    let task = task_name(&cli.command);
    let run_dir = state.new_run_dir(task)?;
    let log = std::fs::File::create(run_dir.join("commands.log")).ok();
    cmd::init(log, cli.verbose);
    let ctx = ctx::Ctx {
        tree,
        state,
        file,
        run_dir,
        verbose: cli.verbose,
    };
    match cli.command {
        Command::SetupRootfs(a) => a.run(&ctx),
        Command::TrimConfig(a) => a.run(&ctx),
        Command::Build(a) => a.run(&ctx),
        Command::Boot(a) => a.run(&ctx),
        Command::Check(a) => a.run(&ctx),
        Command::Bisect(a) => a.run(&ctx),
        Command::Doctor(a) => a.run(&ctx),
        Command::Deps(a) => a.run(&ctx),
        Command::Quickstart(a) => a.run(&ctx),
        Command::Cache(a) => a.run(&ctx),
        Command::Bench(a) => a.run(&ctx),
        Command::Test(a) => a.run(&ctx),
        Command::MakeHistory(a) => a.run(&ctx),
        Command::Completions(_) => unreachable!("handled above"),
    }
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
        Command::Bench(_) => "bench",
        Command::Test(_) => "test",
        Command::Completions(_) => "completions",
        Command::MakeHistory(_) => "make-history",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_is_a_broken_pipe() {
        let msg = format!(
            "failed printing to stdout: {}",
            std::io::Error::from_raw_os_error(libc::EPIPE)
        );
        assert!(is_broken_pipe(&msg));
        assert!(!is_broken_pipe(
            &"failed printing to stdout: No space left on device (os error 28)".to_string()
        ));
        assert!(!is_broken_pipe(&"index out of bounds"));
    }
}
