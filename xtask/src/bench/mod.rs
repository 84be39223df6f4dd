//! `cargo xtask bench`: dispatches to one measurement per module.

mod bisect;
mod flaky;
mod kunit;
mod peers;
mod trim;
mod vm;

use crate::ctx::Ctx;
use crate::vm::{KernelSource, VmRequest};
use anyhow::Result;

/// What `cargo xtask bench` measures, resolved and checked (cli/resolve.rs).
#[derive(Debug)]
pub enum BenchRequest {
    /// CPU seconds to build the trimmed config against defconfig + kvm_guest.config.
    Trim,
    /// `check -- true` in both init modes against a hand-written minimal QEMU command.
    Boot(Box<BootBench>),
    /// `check --kunit example` against the kernel's `kunit.py run`, `runs` times after the
    /// first.
    Kunit { runs: u32 },
    /// `bisect` over a synthetic history of `commits` against a plain `git bisect run`.
    Bisect {
        commits: u32,
        /// Seeded bisects of a flaky stand-in check instead.
        flaky: bool,
        /// Every fourth commit touches a widely included header.
        headers: bool,
    },
}

/// The boot bench's inputs.
#[derive(Debug)]
pub struct BootBench {
    /// Boots per variant; medians are reported.
    pub runs: u32,
    /// `--kernel`, else the tree's working state built as xtask.toml says.
    pub kernel: KernelSource,
    /// The VM options as given (the hand-written QEMU command's memory, CPUs, accelerator).
    pub base: VmRequest,
    /// The same options in each init mode: fast (the rootfs's compiled init where it has
    /// one), the fast mode's shell init, then systemd.
    pub variants: Vec<BootVariant>,
    /// Add rows for the peers `deps --peers` installed.
    pub peers: bool,
}

/// One row of `bench boot`: `check -- true` with these options.
#[derive(Debug)]
pub struct BootVariant {
    /// What the row says after `check -- true, `.
    pub label: String,
    pub vm: VmRequest,
}

/// Runs the measurement `req` names; its exit code.
pub fn run(ctx: &Ctx, req: BenchRequest) -> Result<u8> {
    match req {
        BenchRequest::Trim => trim::run(ctx),
        BenchRequest::Boot(b) => {
            vm::bench_boot(ctx, b.runs, &b.kernel, &b.base, &b.variants, b.peers)
        }
        BenchRequest::Kunit { runs } => kunit::run(ctx, runs),
        BenchRequest::Bisect {
            commits,
            flaky: true,
            ..
        } => flaky::run(ctx, commits),
        BenchRequest::Bisect {
            commits, headers, ..
        } => bisect::run(ctx, commits, headers),
    }
}
