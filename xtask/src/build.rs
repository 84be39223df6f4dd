//! `cargo xtask build`.

use crate::cli::BuildCmd;
use crate::ctx::{not_built, Ctx};
use crate::settings::BuildOptions;
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Duration;

/// A kernel ready to boot: what `build` produced or the cache held.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The cache key (hex sha256).
    pub key: String,
    /// The cache entry's directory.
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    /// Present only when booting needs modules (or `--initramfs dracut`).
    pub initramfs: Option<PathBuf>,
    /// The final .config.
    pub config: PathBuf,
    /// The commit built; None for a dirty working state.
    pub commit: Option<String>,
    /// Whether the cache answered (no make ran).
    pub cache_hit: bool,
    /// Wall time of this request (build, or cache lookup).
    pub duration: Duration,
}

/// A build either gives a kernel or fails on the kernel's side (which a bisect skips).
/// Problems of the setup (no rootfs, a bad REV, Ctrl-C) are `Err`, not `Failed`.
#[derive(Debug, Clone)]
pub enum BuildOutcome {
    Built(Artifacts),
    Failed { key: String, log: PathBuf, summary: String },
}

/// Builds `rev` (None: the tree's working state) through the cache.
pub fn ensure_kernel(_ctx: &Ctx, _rev: Option<&str>, _opts: &BuildOptions) -> Result<BuildOutcome> {
    bail!("`build` is not built yet in this version of the toolkit")
}

impl BuildCmd {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("build")
    }
}
