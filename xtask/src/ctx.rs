//! What every task gets: the shell, the resolved tree and state dir, xtask.toml, the run dir.

use crate::settings::FileConfig;
use crate::state::StateDir;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

pub struct Ctx {
    /// The kernel tree as configured; not yet checked (see [`Ctx::require_tree`]).
    pub tree: PathBuf,
    pub state: StateDir,
    pub file: FileConfig,
    /// This invocation's private directory (0700): command log and any logs of the run.
    pub run_dir: PathBuf,
    pub verbose: bool,
}

impl Ctx {
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
