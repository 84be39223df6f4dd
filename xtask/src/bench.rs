//! `cargo xtask bench`: dispatches to one measurement per module.

mod trim;

use crate::cli::{BenchArgs, BenchWhat};
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl BenchArgs {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        match self.what {
            BenchWhat::Trim => trim::run(ctx),
            BenchWhat::Boot { .. } => not_built("bench boot"),
            BenchWhat::Bisect { .. } => not_built("bench bisect"),
        }
    }
}
