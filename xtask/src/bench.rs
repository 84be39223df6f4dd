//! `cargo xtask bench`: dispatches to one measurement per module.

mod trim;

use crate::cli::{BenchArgs, BenchWhat};
use crate::ctx::Ctx;
use anyhow::Result;

impl BenchArgs {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        match self.what {
            BenchWhat::Trim => trim::run(ctx),
            BenchWhat::Boot { runs, vm } => crate::vm::bench::bench_boot(ctx, runs, &vm),
            BenchWhat::Bisect { commits } => crate::bisect::bench::run(ctx, commits),
        }
    }
}
