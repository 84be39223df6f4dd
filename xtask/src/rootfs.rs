//! `cargo xtask setup-rootfs`.

use crate::cli::SetupRootfsArgs;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl SetupRootfsArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("setup-rootfs")
    }
}

/// What the build cache keys builds by: the rootfs recipe digest and the gcc inside.
pub fn toolchain_identity(_state: &crate::state::StateDir) -> Result<String> {
    anyhow::bail!("no rootfs yet: run `cargo xtask setup-rootfs`")
}
