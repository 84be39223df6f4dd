//! `cargo xtask bisect`.

use crate::cli::BisectCmd;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl BisectCmd {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("bisect")
    }
}
