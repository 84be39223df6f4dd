//! `cargo xtask trim-config`.

use crate::cli::TrimConfigArgs;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl TrimConfigArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("trim-config")
    }
}
