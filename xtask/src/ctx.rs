//! What every task gets: the resolved tree and state dir, xtask.toml, and the run dir its
//! command log and logs go to; [`Ctx::for_step`] gives a part of a run (a bisect step) its own.

use crate::cmd;
use crate::settings::FileConfig;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub struct Ctx {
    /// The kernel tree as configured; not yet checked (see [`Ctx::require_tree`]).
    pub tree: PathBuf,
    pub state: StateDir,
    pub file: FileConfig,
    /// This run's private directory (0700): its command log and every log of the run.
    pub run_dir: PathBuf,
    pub verbose: bool,
    /// A step's: its commands go to its own `commands.log` while it lives.
    _log: Option<cmd::LogRoute>,
}

/// The command log's name in a run dir.
pub const COMMANDS_LOG: &str = "commands.log";

impl Ctx {
    /// The invocation's context; its commands are logged in `run_dir` (and printed with `-v`).
    pub fn new(
        tree: PathBuf,
        state: StateDir,
        file: FileConfig,
        run_dir: PathBuf,
        verbose: bool,
    ) -> Ctx {
        cmd::init(
            std::fs::File::create(run_dir.join(COMMANDS_LOG)).ok(),
            verbose,
        );
        Ctx {
            tree,
            state,
            file,
            run_dir,
            verbose,
            _log: None,
        }
    }

    /// A part of this run (a bisect step) in its own directory `dir` (made, 0700): its logs go
    /// there, and while it lives so do the commands it runs (this run's log says where).
    pub fn for_step(&self, dir: PathBuf) -> Result<Ctx> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let log = dir.join(COMMANDS_LOG);
        cmd::log_line(&format!("# the next commands are in {}", log.display()));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        Ok(Ctx {
            run_dir: dir,
            _log: Some(cmd::route_log(file)),
            ..self.with_tree(&self.tree)
        })
    }

    /// The same run on another kernel tree (its commands in the same log).
    pub fn with_tree(&self, tree: &Path) -> Ctx {
        Ctx {
            tree: tree.to_path_buf(),
            state: self.state.clone(),
            file: self.file.clone(),
            run_dir: self.run_dir.clone(),
            verbose: self.verbose,
            _log: None,
        }
    }

    /// The kernel tree, checked to be a kernel git tree.
    pub fn require_tree(&self) -> Result<PathBuf> {
        check_kernel_tree(&self.tree)?;
        Ok(std::fs::canonicalize(&self.tree)?)
    }
}

/// A kernel git tree: a directory with the kernel's top Makefile and Kconfig, under git.
pub fn check_kernel_tree(tree: &Path) -> Result<()> {
    crate::settings::require_utf8(tree, "the kernel tree")?;
    if !tree.is_dir() {
        bail!(
            "kernel tree {} not found: pass --tree PATH, set KERNEL_TREE, or set `tree` in xtask.toml",
            tree.display()
        );
    }
    if !tree.join("Kconfig").is_file()
        || !tree.join("arch").join(crate::arch::HOST.srcarch).is_dir()
        || !tree.join("scripts/kconfig").is_dir()
    {
        bail!("{} is not a kernel tree (no Kconfig, arch/{} or scripts/kconfig): pass --tree PATH to a Linux source tree", tree.display(), crate::arch::HOST.srcarch);
    }
    if !tree.join(".git").exists() {
        bail!("{} is a kernel tree but not a git repository: run `git init && git add -A && git commit -m base` in it", tree.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A step's commands go to its own log while its context lives, then to the run's again.
    #[test]
    fn a_step_logs_its_commands_in_its_own_dir() {
        use crate::cmd::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let run_dir = dir.path().join("run");
        std::fs::create_dir(&run_dir).unwrap();
        let state = StateDir::new(dir.path().join("state"));
        let ctx = Ctx::new(
            "/tree".into(),
            state,
            FileConfig::default(),
            run_dir.clone(),
            false,
        );
        std::process::Command::new("true")
            .arg("before")
            .output_logged()
            .unwrap();
        {
            let step = ctx.for_step(run_dir.join("step-01")).unwrap();
            assert_eq!(step.tree, ctx.tree);
            std::process::Command::new("true")
                .arg("in-step")
                .output_logged()
                .unwrap();
        }
        std::process::Command::new("true")
            .arg("after")
            .output_logged()
            .unwrap();
        let run_log = std::fs::read_to_string(run_dir.join(COMMANDS_LOG)).unwrap();
        let step_log = std::fs::read_to_string(run_dir.join("step-01").join(COMMANDS_LOG)).unwrap();
        assert!(
            run_log.contains("true before") && run_log.contains("true after"),
            "{run_log}"
        );
        assert!(!run_log.contains("in-step"), "{run_log}");
        assert!(run_log.contains("step-01/commands.log"), "{run_log}");
        assert!(step_log.contains("true in-step"), "{step_log}");
        assert!(
            !step_log.contains("true before") && !step_log.contains("true after"),
            "{step_log}"
        );
    }
}
