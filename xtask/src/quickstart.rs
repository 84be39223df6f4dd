//! `cargo xtask quickstart`.

use crate::cli::QuickstartArgs;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl QuickstartArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("quickstart")
    }
}
