//! `cargo xtask bench`: dispatches to one measurement per module.

mod trim;

use crate::cli::{BenchArgs, BenchWhat};
use crate::ctx::Ctx;
use anyhow::Result;

impl BenchArgs {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        match self.what {
            BenchWhat::Trim => trim::run(ctx),
            BenchWhat::Boot { runs, vm, arch } => {
                let runs = runs.within("--runs", (1, "1"), (1000, "1000"))?;
                let arch = arch.unwrap_or(crate::arch::HOST);
                crate::vm::bench::bench_boot(ctx, u32::try_from(runs)?, &vm, arch)
            }
            BenchWhat::Bisect { commits } => {
                let commits = commits.within("--commits", (4, "4"), (4096, "4096"))?;
                crate::bisect::bench::run(ctx, u32::try_from(commits)?)
            }
        }
    }
}
