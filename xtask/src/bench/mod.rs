//! `cargo xtask bench`: dispatches to one measurement per module.

mod bisect;
mod flaky;
mod kunit;
mod peers;
mod trim;
mod vm;

use crate::cli::{BenchArgs, BenchWhat, BuildArgs, VmArgs};
use crate::ctx::Ctx;
use crate::vm::spec::InitMode;
use anyhow::Result;

impl BenchArgs {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        match self.what {
            BenchWhat::Trim => trim::run(ctx),
            BenchWhat::Boot {
                runs,
                kernel,
                vm,
                arch,
                peers,
            } => {
                let runs = runs.within("--runs", (1, "1"), (1000, "1000"))?;
                let build = BuildArgs {
                    arch,
                    ..BuildArgs::default()
                };
                let base = vm
                    .resolve(&ctx.file.vm, InitMode::Fast)?
                    .with_arch(build.arch());
                let variants = [InitMode::Fast, InitMode::Systemd]
                    .into_iter()
                    .map(|init| {
                        let args = VmArgs {
                            init: Some(init),
                            ..(*vm).clone()
                        };
                        Ok(args
                            .resolve(&ctx.file.vm, InitMode::Fast)?
                            .with_arch(build.arch()))
                    })
                    .collect::<Result<Vec<_>>>()?;
                // --kernel, else the tree's working state built as xtask.toml says.
                let kernel = kernel.source(None, &build, &ctx.file.build)?;
                let runs = u32::try_from(runs)?;
                vm::bench_boot(ctx, runs, &kernel, &base, &variants, peers)
            }
            BenchWhat::Kunit { runs } => {
                let runs = runs.within("--runs", (1, "1"), (100, "100"))?;
                kunit::run(ctx, u32::try_from(runs)?)
            }
            BenchWhat::Bisect {
                commits,
                flaky,
                headers,
            } => {
                let commits = commits.within("--commits", (4, "4"), (4096, "4096"))?;
                if flaky {
                    return flaky::run(ctx, u32::try_from(commits)?);
                }
                bisect::run(ctx, u32::try_from(commits)?, headers)
            }
        }
    }
}
