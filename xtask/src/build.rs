//! `cargo xtask build`.

use crate::cli::BuildCmd;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl BuildCmd {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("build")
    }
}
