//! `cargo xtask bench boot`: `check -- true` in both init modes against a hand-written
//! minimal QEMU + virtiofsd command line that boots the same kernel and rootfs to the same
//! command and powers off. Medians of N runs each, and the ratio to the baseline.

use super::peers;
use crate::cmd::{self, CommandExt};
use crate::ctx::Ctx;
use crate::vm::run::{self, Plan};
use crate::vm::spec::{Console, RunPaths, VmSpec};
use crate::vm::timeline::{self, Timeline};
use crate::vm::virtiofsd;
use crate::vm::KernelSource;
use crate::vm::VmRequest;
use crate::vm::{kernel_for, prepare};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long one run of a peer may take (a peer that hangs under TCG gets a row saying so).
const PEER_LIMIT: Duration = Duration::from_secs(180);

/// The median of some durations.
pub fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// The hand-written boots that our rows are measured against: what a person would type to
/// boot the kernel on the rootfs, with no agent, overlay or checks; only what booting needs.
#[derive(Clone, Copy, Debug)]
enum Baseline {
    /// The floor: init is `/bin/sh -c 'true; reboot -f'`, the command our rows run and the
    /// end of the VM. A reboot ends it on every machine (`reboot=t` and `-no-reboot`; the fast
    /// lane has no ACPI to power off with), as our rows end. The words after `init=` that are
    /// not the kernel's are init's arguments, so QEMU's `virtio_mmio.device=` entries, which it
    /// appends on the fast lane, still reach the kernel (after `--` they would not).
    Floor,
    /// The kernel to its first program and no further: `init=/bin/true`, whose exit panics
    /// the kernel (`panic=-1` and `-no-reboot` end QEMU). No shell, no command, no reboot.
    Bare,
}

impl Baseline {
    const ALL: [Baseline; 2] = [Baseline::Floor, Baseline::Bare];

    fn init(self) -> &'static str {
        match self {
            Baseline::Floor => r#"init=/bin/sh -c "true; reboot -f""#,
            Baseline::Bare => "init=/bin/true",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Baseline::Floor => "floor: QEMU + virtiofsd, sh -c 'true; reboot -f'",
            Baseline::Bare => "bare: QEMU + virtiofsd, init=/bin/true",
        }
    }

    /// The run's directory name.
    fn name(self) -> &'static str {
        match self {
            Baseline::Floor => "floor",
            Baseline::Bare => "bare",
        }
    }

    /// Whether the console shows that the kernel ran this init and that it ended as asked:
    /// the shell's reboot, or `true`'s exit 0 ("Attempted to kill init!"). A kernel that found
    /// no root, or no device for it, says otherwise.
    fn ran(self, console: &str) -> bool {
        match self {
            Baseline::Floor => {
                console.contains("Run /bin/sh as init process")
                    && console.contains("reboot: Restarting system")
                    && !console.contains("Kernel panic")
            }
            Baseline::Bare => {
                console.contains("Run /bin/true as init process")
                    && console.contains("Attempted to kill init! exitcode=0x00000000")
            }
        }
    }
}

/// One hand-written boot of the bench: a baseline, and the kernel file it boots.
struct BaseRow {
    baseline: Baseline,
    kernel: PathBuf,
    label: String,
    /// Its runs' directory names.
    name: String,
}

/// The floor and the bare boot of the file our rows boot (`booted`), then, when that is the
/// PVH image, the floor of the bzImage (`image`) beside them: what PVH saves.
fn base_rows(booted: &Path, image: &Path) -> Vec<BaseRow> {
    let mut rows: Vec<BaseRow> = Baseline::ALL
        .into_iter()
        .map(|baseline| BaseRow {
            baseline,
            kernel: booted.to_path_buf(),
            label: baseline.label().to_string(),
            name: baseline.name().to_string(),
        })
        .collect();
    if booted != image {
        let name = image
            .file_name()
            .map_or("image".into(), |n| n.to_string_lossy());
        rows.push(BaseRow {
            baseline: Baseline::Floor,
            kernel: image.to_path_buf(),
            label: format!("floor, {name} instead of the PVH vmlinux"),
            name: format!("floor-{name}"),
        });
    }
    rows
}

fn baseline_qemu_args(row: &BaseRow, spec: &VmSpec, socket: &Path, console: &Path) -> Vec<String> {
    let accel = spec.accel.name();
    // The TSC's rate and reliability, as ours say them (spec::kernel_cmdline).
    let tsc = spec
        .cmdline
        .iter()
        .filter(|a| a.starts_with("tsc_early_khz=") || *a == "tsc=reliable")
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let machine = crate::vm::qemu::machine(spec);
    let mut v: Vec<String> = machine
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    v.extend([
        "-accel".into(),
        accel.into(),
        "-cpu".into(),
        spec.arch.tcg_cpu.into(),
        "-smp".into(),
        spec.cpus.to_string(),
        "-m".into(),
        format!("{}M", spec.memory_mib),
        "-object".into(),
        format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            spec.memory_mib
        ),
        "-nodefaults".into(),
        "-no-reboot".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", console.display()),
        "-chardev".into(),
        format!("socket,id=fs,path={}", socket.display()),
        "-device".into(),
        format!(
            "{},chardev=fs,tag=rootfs",
            crate::vm::qemu::virtio_device(spec.machine, "vhost-user-fs")
        ),
        "-kernel".into(),
        row.kernel.display().to_string(),
        "-append".into(),
        format!(
            "console={} root=rootfs rootfstype=virtiofs ro panic=-1 {} {tsc} {}",
            spec.arch.console,
            spec.arch.cmdline.join(" "),
            row.baseline.init()
        ),
    ]);
    v
}

/// One baseline boot: wall time from starting virtiofsd to QEMU's exit, after checking that
/// QEMU ran the kernel to its init (a QEMU that fails at start exits at once).
fn baseline_once(
    row: &BaseRow,
    spec: &VmSpec,
    tools: &crate::vm::guest::Tools,
    dir: &Path,
) -> Result<Duration> {
    let paths = RunPaths::new(dir);
    let start = Instant::now();
    let rootfs = std::fs::canonicalize(&spec.rootfs)?;
    let mut vfs = virtiofsd::start(
        &tools.virtiofsd,
        &virtiofsd::ShareInput {
            shared_dir: &rootfs,
            socket: &paths.virtiofs_socket(),
            access: virtiofsd::Access::ReadOnly,
            root: unsafe { libc::geteuid() } == 0,
        },
        &paths.virtiofsd_log(),
    )?;
    let qemu_log = std::fs::File::create(paths.qemu_log())?;
    let mut q = Command::new(&tools.qemu)
        .args(baseline_qemu_args(
            row,
            spec,
            &paths.virtiofs_socket(),
            &paths.console_log(),
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(qemu_log)
        .spawn_logged()?;
    let st = cmd::wait(&mut q, Some(start + spec.boot_timeout))?;
    let took = start.elapsed();
    cmd::terminate(&mut vfs, Duration::from_secs(1));
    let Some(st) = st else {
        bail!("the baseline VM did not end within {:?}", spec.boot_timeout)
    };
    let console = std::fs::read_to_string(paths.console_log()).unwrap_or_default();
    if !st.success() || !row.baseline.ran(&console) {
        bail!(
            "the {} VM did not run its init ({}): see {} and {}",
            row.name,
            cmd::describe(&st),
            paths.console_log().display(),
            paths.qemu_log().display()
        );
    }
    Ok(took)
}

/// Runs the benchmark, `runs` (at least 1) boots per variant of `kernel`: the baseline with
/// `base`'s VM, then `check -- true` with each of `variants`.
pub fn bench_boot(
    ctx: &Ctx,
    runs: u32,
    kernel: &KernelSource,
    base: &VmRequest,
    variants: &[super::BootVariant],
    with_peers: bool,
) -> Result<u8> {
    let base_opts = base;
    let tools = crate::backend::find_tools(base_opts)?;
    let kernel = match kernel_for(ctx, kernel)? {
        Ok(k) => k,
        Err(j) => bail!("cannot bench: {}", j.reason),
    };
    let plan = Plan {
        command: vec!["true".into()],
        ..Plan::default()
    };
    // The variants, each prepared once.
    let variants = variants
        .iter()
        .map(|v| {
            let prepared = prepare(ctx, &v.vm, tools.clone(), &kernel, Console::Log)?;
            Ok((v.label.as_str(), prepared))
        })
        .collect::<Result<Vec<_>>>()?;
    let (base_spec, base_tools) = prepare(ctx, base_opts, tools, &kernel, Console::Log)?;
    let peer_rows = match with_peers {
        true => peers::installed(
            &crate::deps::Peers::of(&ctx.state),
            &kernel.image,
            crate::vm::config_of(&kernel.image).as_ref(),
            base_spec.accel == crate::options::Accel::Kvm,
            base_spec.cpus,
            base_spec.memory_mib,
        ),
        false => Vec::new(),
    };
    // Each peer's times, or the first reason a run of it did not count.
    let mut peer_times: Vec<std::result::Result<Vec<Duration>, String>> =
        vec![Ok(Vec::new()); peer_rows.len()];
    // Round-robin, so that a busy moment of the host weighs on every variant alike.
    let base_rows = base_rows(&base_spec.kernel, &kernel.image);
    let mut base_times: Vec<Vec<Duration>> = vec![Vec::new(); base_rows.len()];
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
    let mut timelines: Vec<Vec<Timeline>> = vec![Vec::new(); variants.len()];
    for i in 0..runs {
        for (b, row) in base_rows.iter().enumerate() {
            let dir = ctx.run_dir.join(format!("{}-{i}", row.name));
            std::fs::create_dir_all(&dir)?;
            let took = baseline_once(row, &base_spec, &base_tools, &dir)
                .with_context(|| format!("{} run {i}", row.name))?;
            eprintln!("{} #{i}: {:.2}s", row.name, took.as_secs_f64());
            base_times[b].push(took);
        }
        for (v, (label, (spec, tools))) in variants.iter().enumerate() {
            let dir = ctx
                .run_dir
                .join(format!("{}-{i}", label.replace([' ', ','], "-")));
            std::fs::create_dir_all(&dir)?;
            let t = Instant::now();
            let r = run::check(spec, &RunPaths::new(&dir), tools, &plan, &mut |_| {})?;
            let took = t.elapsed();
            if r.judgement.verdict() != crate::vm::verdict::Verdict::Good {
                bail!(
                    "check -- true was not good ({}); see {}",
                    r.judgement.reason,
                    dir.display()
                );
            }
            eprintln!(
                "{label} #{i}: {:.2}s ({})",
                took.as_secs_f64(),
                r.timings.line()
            );
            times[v].push(took);
            timelines[v].extend(r.timeline);
        }
        for (p, row) in peer_rows.iter().enumerate() {
            let (Ok(peer), Ok(times)) = (row, &mut peer_times[p]) else {
                continue;
            };
            let log = ctx.run_dir.join(format!("peer-{p}-{i}.log"));
            match peers::run_once(peer, &log, PEER_LIMIT)? {
                Ok(took) => {
                    eprintln!("{} #{i}: {:.2}s", peer.name, took.as_secs_f64());
                    times.push(took);
                }
                Err(why) => {
                    eprintln!("{} #{i}: {why} (log: {})", peer.name, log.display());
                    peer_times[p] = Err(why);
                }
            }
        }
    }
    // The baselines' medians, in base_rows' order: the floor, then the bare boot.
    let base: Vec<Duration> = base_times
        .into_iter()
        .map(|t| median(t).expect("runs > 0"))
        .collect();
    let (floor, bare) = (base[0], base[1]);
    let mut rows: Vec<(String, Duration)> = base_rows
        .into_iter()
        .zip(base)
        .map(|(b, t)| (b.label, t))
        .collect();
    for ((label, _), t) in variants.iter().zip(&times) {
        rows.push((
            format!("check -- true, {label}"),
            median(t.clone()).expect("runs > 0"),
        ));
    }
    // Each row as a ratio to the floor, and to the bare boot beside it.
    let ratios = |t: Duration| {
        format!(
            "{:>7.2}x {:>7.2}x",
            t.as_secs_f64() / floor.as_secs_f64(),
            t.as_secs_f64() / bare.as_secs_f64()
        )
    };
    println!(
        "{:<50} {:>9} {:>8} {:>8}",
        "variant", "median", "ratio", "to bare"
    );
    for (name, t) in &rows {
        println!("{name:<50} {:>8.2}s {}", t.as_secs_f64(), ratios(*t));
    }
    for (row, t) in peer_rows.iter().zip(&peer_times) {
        match (row, t) {
            (Err(missing), _) => println!("{missing}"),
            (Ok(p), Ok(t)) => {
                let t = median(t.clone()).expect("runs > 0");
                println!(
                    "{:<50} {:>8.2}s {}  (needed: {})",
                    p.name,
                    t.as_secs_f64(),
                    ratios(t),
                    if p.needs.is_empty() {
                        "nothing more".to_string()
                    } else {
                        p.needs.join("; ")
                    }
                );
            }
            (Ok(p), Err(why)) => println!(
                "{:<50} failed: {why} (needed: {})",
                p.name,
                p.needs.join("; ")
            ),
        }
    }
    for ((label, _), t) in variants.iter().zip(&timelines) {
        println!(
            "\ntimeline of check -- true, {label} (medians; seconds since the run started, and since the step before):"
        );
        for line in timeline::median(t).lines() {
            println!("  {line}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        let s = Duration::from_secs;
        assert_eq!(median(vec![s(3), s(1), s(2)]), Some(s(2)));
        assert_eq!(
            median(vec![s(4), s(1), s(2), s(3)]),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(median(vec![]), None);
    }

    /// Recorded boots of the two baselines (fast lane, TCG): init ran and ended as asked. A
    /// kernel that found no root says otherwise, and a QEMU that failed at start wrote no
    /// console.
    #[test]
    fn each_baseline_ran_its_init() {
        let bare = include_str!("test_data/baseline/init-exited.log");
        let floor = include_str!("test_data/baseline/sh-rebooted.log");
        for (b, ran, init) in [
            (Baseline::Bare, bare, "/bin/true"),
            (Baseline::Floor, floor, "/bin/sh"),
        ] {
            assert!(b.ran(ran), "{b:?}");
            assert!(!b.ran(""), "{b:?}");
            let no_root = ran.replace(
                &format!("Run {init} as init process"),
                "VFS: Cannot open root device \"rootfs\" or unknown-block(0,0)",
            );
            assert!(!b.ran(&no_root), "{b:?}");
        }
        assert!(!Baseline::Bare.ran(&bare.replace("exitcode=0x00000000", "exitcode=0x00000100")));
        // The shell could not run `reboot`: it exited, and the kernel panicked.
        let sh_exited = floor.replace(
            "reboot: Restarting system",
            "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00007f00",
        );
        assert!(!Baseline::Floor.ran(&sh_exited));
        assert!(!Baseline::Floor.ran(bare) && !Baseline::Bare.ran(floor));
    }

    /// The floors and the bare boot boot what our rows boot; the bzImage gets a floor of its
    /// own beside the PVH image's.
    #[test]
    fn a_pvh_boot_adds_the_bzimages_floor() {
        let (bz, vmlinux) = (Path::new("/e/bzImage"), Path::new("/e/vmlinux"));
        let rows = base_rows(bz, bz);
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.kernel == bz));
        let rows = base_rows(vmlinux, bz);
        let got: Vec<_> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.kernel.as_path()))
            .collect();
        assert_eq!(
            got,
            [("floor", vmlinux), ("bare", vmlinux), ("floor-bzImage", bz)]
        );
        assert!(matches!(rows[2].baseline, Baseline::Floor));
        assert_eq!(rows[2].label, "floor, bzImage instead of the PVH vmlinux");
    }

    /// The floor's shell command reaches init as one argument, before the entries QEMU
    /// appends, which stay the kernel's.
    #[test]
    fn the_floors_command_line_ends_with_its_init() {
        let floor = include_str!("test_data/baseline/sh-rebooted.log");
        let line = floor
            .lines()
            .find(|l| l.contains("Kernel command line:"))
            .unwrap();
        assert!(
            line.contains(r#"init=/bin/sh -c "true; reboot -f" virtio_mmio.device="#),
            "{line}"
        );
        assert!(floor.contains("virtio-mmio: Registering device virtio-mmio.0"));
    }
}
