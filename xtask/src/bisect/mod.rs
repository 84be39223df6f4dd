//! `cargo xtask bisect GOOD BAD`: git bisect in a dedicated worktree, each step a check.

mod progress;
mod report;

use crate::cli::BisectCmd;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl BisectCmd {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("bisect")
    }
}
