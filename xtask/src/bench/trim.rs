//! `cargo xtask bench trim`: CPU seconds to build a bzImage with the trimmed config (the
//! default lane's) against `make defconfig kvm_guest.config`, both from an empty build dir, in
//! the same run.

use crate::ctx::Ctx;
use crate::trim::{self, KernelMake, TrimOptions};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// The goal: the trimmed build (the default lane's config: the fast lane on x86_64) costs at
/// most a quarter of the CPU time of the usual guest config.
pub const GOAL_RATIO: f64 = 4.0;

/// One build's cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    pub name: String,
    /// User + system time of make and everything below it.
    pub cpu: Duration,
    pub wall: Duration,
    /// Size of the bzImage.
    pub bytes: u64,
}

pub fn run(ctx: &Ctx) -> Result<u8> {
    let tree = ctx.require_tree()?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = format!("-j{jobs}");
    let arch = crate::arch::HOST;

    // The trimmed config as `trim-config` makes it, kept in this run's directory.
    let mut opts = TrimOptions::defaults(ctx, crate::arch::HOST, crate::arch::HOST.default_lane())?;
    opts.output = ctx.run_dir.join("trimmed.config");
    let config = trim::trim(ctx, &opts).context("making the trimmed config")?;

    let dir = fresh_dir(ctx, "bench-trimmed")?;
    std::fs::copy(&config, dir.join(".config"))?;
    let make = KernelMake::new(ctx, &tree, &dir, arch, false)?;
    let log = ctx.run_dir.join("bench-trimmed.log");
    make.run_to_log(&["olddefconfig"], &log)?;
    eprintln!("building with the trimmed config (log: {})", log.display());
    let name = format!("trimmed ({} lane)", opts.lane.name());
    let trimmed = measure(&name, &dir, arch, || {
        make.run_to_log(&[&jobs, arch.image_target], &log)
    })?;

    let dir = fresh_dir(ctx, "bench-defconfig")?;
    let make = KernelMake::new(ctx, &tree, &dir, arch, false)?;
    let log = ctx.run_dir.join("bench-defconfig.log");
    make.run_to_log(&["defconfig", "kvm_guest.config"], &log)?;
    eprintln!(
        "building with defconfig + kvm_guest.config (log: {})",
        log.display()
    );
    let default = measure("defconfig + kvm_guest.config", &dir, arch, || {
        make.run_to_log(&[&jobs, arch.image_target], &log)
    })?;

    print!("{}", report(&trimmed, &default));
    Ok(0)
}

/// An empty build dir under the state dir, so each build starts from nothing.
fn fresh_dir(ctx: &Ctx, name: &str) -> Result<std::path::PathBuf> {
    let dir = ctx.state.build_dir(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs `build` and measures the CPU time of the children it waited for (nspawn's included,
/// which waits for the container's processes), its wall time and the bzImage's size.
fn measure(
    name: &str,
    dir: &Path,
    arch: &crate::arch::Arch,
    build: impl FnOnce() -> Result<()>,
) -> Result<Measurement> {
    // A cold build takes minutes and its output goes to the log: show the elapsed time.
    let bar = crate::progress::Progress::start("building");
    bar.set_message(name);
    let cpu0 = children_cpu();
    let t0 = Instant::now();
    let built = build();
    bar.finish();
    built?;
    let wall = t0.elapsed();
    let cpu = children_cpu().saturating_sub(cpu0);
    let image = dir.join(arch.image_path);
    let bytes = std::fs::metadata(&image)
        .with_context(|| format!("{} was not built", image.display()))?
        .len();
    Ok(Measurement {
        name: name.to_string(),
        cpu,
        wall,
        bytes,
    })
}

/// User + system time of all waited-for children so far: getrusage(RUSAGE_CHILDREN).
fn children_cpu() -> Duration {
    // SAFETY: getrusage writes into the struct we pass; zeroed is a valid rusage.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The table and the ratio, as printed.
pub fn report(trimmed: &Measurement, default: &Measurement) -> String {
    let mut s = format!(
        "{:<30} {:>10} {:>10} {:>10}\n",
        "config", "CPU s", "wall s", "bzImage"
    );
    for m in [trimmed, default] {
        s.push_str(&format!(
            "{:<30} {:>10.1} {:>10.1} {:>6.1} MiB\n",
            m.name,
            m.cpu.as_secs_f64(),
            m.wall.as_secs_f64(),
            m.bytes as f64 / (1024.0 * 1024.0)
        ));
    }
    let ratio = default.cpu.as_secs_f64() / trimmed.cpu.as_secs_f64().max(0.001);
    s.push_str(&format!(
        "ratio: {} took {ratio:.1}x the CPU time of {} (goal: at least {GOAL_RATIO}x, {})\n",
        default.name,
        trimmed.name,
        if ratio >= GOAL_RATIO { "met" } else { "missed" }
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_gives_the_ratio() {
        let m = |name: &str, cpu: u64, bytes: u64| Measurement {
            name: name.into(),
            cpu: Duration::from_secs(cpu),
            wall: Duration::from_secs(cpu / 2),
            bytes,
        };
        let r = report(
            &m("trimmed", 200, 2 << 20),
            &m("defconfig + kvm_guest.config", 1500, 12 << 20),
        );
        assert!(
            r.contains("trimmed                             200.0      100.0    2.0 MiB"),
            "{r}"
        );
        assert!(
            r.contains("took 7.5x the CPU time of trimmed (goal: at least 4x, met)"),
            "{r}"
        );
        let r = report(&m("a", 100, 1), &m("b", 300, 1));
        assert!(r.contains("3.0x") && r.contains("missed"), "{r}");
    }

    #[test]
    fn children_cpu_counts_a_finished_child() {
        let before = children_cpu();
        std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"])
            .status()
            .unwrap();
        assert!(children_cpu() > before);
    }
}
