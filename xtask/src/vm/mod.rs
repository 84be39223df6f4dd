//! Booting kernels in VMs: `boot` and `check`, and the entry point other tasks (bisect) use
//! to judge one kernel: [`check`].
//!
//! Layers, from the top: [`check`] ([`CheckRequest`] → build → N checks → [`CheckOutcome`]);
//! [`prepare`] (request → [`spec::VmSpec`] + tools, all decided up front); [`run::check`]
//! (one VM through its phases → [`run::Report`]); below that, pure parts a libvirt backend
//! reuses as they are: [`spec`], [`qga`] (agent over any [`qga::Stream`]), [`console`],
//! [`verdict`].

mod b64;
pub mod command;
pub mod console;
pub mod fault;
pub mod guest;
pub mod kmsg;
pub mod qemu;
pub mod qga;
pub mod run;
pub mod spec;
pub mod verdict;
pub mod virtiofsd;

use crate::build::{self, BuildOutcome};
use crate::cli::{BootCmd, CheckCmd};
use crate::ctx::Ctx;
use crate::settings::{BuildRequest, VmRequest};
use crate::{exit, kvm, tools};
use anyhow::{bail, Context, Result};
use guest::{Launcher, Tools};
use run::{Event, Plan, Report};
use serde::{Deserialize, Serialize};
use spec::{Backend, CmdlineInput, Console, RunPaths, VmSpec};
use std::io::Write;
use std::path::PathBuf;
use verdict::{Failure, Judgement, Verdict};

/// A kernel to boot.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub image: PathBuf,
    pub initramfs: Option<PathBuf>,
    /// The lane its config is for (the machine follows it); the PCI lane when unknown.
    pub lane: crate::arch::Lane,
}

impl KernelImage {
    /// `--kernel PATH`: the lane from the config beside it when there is one (a cache
    /// entry's `config`, a build dir's `.config`), else the PCI lane (boots any kernel that
    /// has virtio-pci, as before lanes).
    pub fn given(image: &std::path::Path) -> KernelImage {
        let lane = configs_beside(image)
            .iter()
            .find_map(|c| std::fs::read_to_string(c).ok())
            .map_or(crate::arch::Lane::Pci, |t| crate::arch::Lane::of_config(&t));
        KernelImage {
            image: image.to_path_buf(),
            initramfs: None,
            lane,
        }
    }
}

/// Where the config of a kernel image may be: beside it (a cache entry) or at the root of
/// the build dir it is in (`arch/x86/boot/bzImage`).
fn configs_beside(image: &std::path::Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(dir) = image.parent() {
        v.push(dir.join(build::cache::CONFIG));
        if let Some(root) = dir.parent().and_then(|d| d.parent()) {
            v.push(root.join(".config"));
        }
    }
    v
}

/// What to boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelSource {
    /// A build of `rev` through the cache (None: the tree's working state).
    Build {
        rev: Option<String>,
        build: BuildRequest,
    },
    /// `--kernel`: this image as it is, absolute.
    Image(PathBuf),
}

/// A check, resolved: what to boot, how, what to run and how many times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRequest {
    pub kernel: KernelSource,
    pub vm: VmRequest,
    pub plan: Plan,
    /// `--repeat`: up to this many runs, stopping at the first bad one.
    pub repeat: u32,
    /// `--kunit`, `--ktap`, `--kselftest`: the tests read and judged (kunit/).
    #[serde(default)]
    pub tests: crate::kunit::TestRequest,
}

impl CheckRequest {
    /// The same check of another revision (a bisect step); an image stays as it is.
    pub fn at(&self, rev: &str) -> CheckRequest {
        let mut r = self.clone();
        if let KernelSource::Build { rev: r, .. } = &mut r.kernel {
            *r = Some(rev.to_string());
        }
        r
    }
}

/// A boot, resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootRequest {
    pub kernel: KernelSource,
    pub vm: VmRequest,
    /// `--exec`: run this in the guest and exit with its status; else an interactive console.
    pub exec: Option<String>,
    /// `--print-xml`: print the libvirt domain XML and exit.
    pub print_xml: bool,
}

/// The image of `kernel`, built through the cache when it is a revision. `Err(judgement)`
/// when the build failed on the kernel's side: the kernel is untestable.
pub fn kernel_for(
    ctx: &Ctx,
    kernel: &KernelSource,
) -> Result<std::result::Result<KernelImage, Judgement>> {
    let (rev, build) = match kernel {
        KernelSource::Image(k) => return Ok(Ok(KernelImage::given(k))),
        KernelSource::Build { rev, build } => (rev.as_deref(), build),
    };
    match build::ensure_kernel(ctx, rev, build)? {
        BuildOutcome::Built(a) => {
            let config = std::fs::read_to_string(&a.config)
                .with_context(|| format!("reading the built kernel's {}", a.config.display()))?;
            Ok(Ok(KernelImage {
                image: a.image,
                initramfs: a.initramfs,
                lane: crate::arch::Lane::of_config(&config),
            }))
        }
        BuildOutcome::Failed {
            log,
            summary,
            config,
            ..
        } => {
            let what = match config {
                true => "the config step of the build",
                false => "the build",
            };
            let reason = format!("{what} failed: {summary} (log: {})", log.display());
            let failure = match config {
                true => Failure::Config { log },
                false => Failure::Build { log },
            };
            Ok(Err(Judgement::failed(failure, reason)))
        }
    }
}

/// The rootfs to share (the generation this process uses throughout), checked to hold the
/// guest init.
fn rootfs(ctx: &Ctx, arch: &crate::arch::Arch) -> Result<PathBuf> {
    let r = crate::rootfs::generation::in_use_for(&ctx.state, arch)?.tree;
    if !r.join(spec::GUEST_INIT.trim_start_matches('/')).is_file() {
        bail!(
            "the rootfs at {} has no {}: run `cargo xtask setup-rootfs --force` to add it",
            r.display(),
            spec::GUEST_INIT
        );
    }
    Ok(r)
}

/// The one line `--backend libvirt` gets from a build without the libvirt backend.
pub const NEEDS_LIBVIRT_FEATURE: &str = "the libvirt backend needs the `libvirt` feature, \
     which this build lacks: run `cargo run -p xtask --features libvirt -- …` with the same \
     arguments instead of `cargo xtask …` (needs libvirt-dev)";

/// Who starts the VM, from `--backend`, `--connect` and `--keep`.
fn launcher(opts: &VmRequest) -> Result<Launcher> {
    match opts.backend {
        Backend::Qemu => Ok(Launcher::Qemu),
        Backend::Libvirt if cfg!(feature = "libvirt") => Ok(Launcher::Libvirt {
            uri: opts.connect.clone(),
            keep: opts.keep,
        }),
        Backend::Libvirt => bail!(NEEDS_LIBVIRT_FEATURE),
    }
}

/// The programs a VM run needs: found before anything is built, so that a missing or
/// unusable tool ends the run at once.
pub fn find_tools(opts: &VmRequest) -> Result<Tools> {
    Ok(Tools {
        qemu: tools::find(&tools::qemu(opts.arch))?,
        virtiofsd: tools::find(&tools::VIRTIOFSD)?,
        launcher: launcher(opts)?,
    })
}

/// The accelerator and the spec for one VM, with its tools: everything decided up front.
pub fn prepare(
    ctx: &Ctx,
    opts: &VmRequest,
    tools: Tools,
    kernel: &KernelImage,
    console: Console,
) -> Result<(VmSpec, Tools)> {
    let arch = opts.arch;
    if !arch.is_host() && tools.launcher != Launcher::Qemu {
        // Not tried: libvirt's aarch64 domains want UEFI for ACPI, and -cpu max's
        // pauth-impdef has no libvirt spelling.
        bail!(
            "--backend libvirt boots {} guests only for now: use --backend qemu for {}",
            crate::arch::HOST.name,
            arch.name
        );
    }
    let accel = kvm::choose(
        arch,
        opts.accel,
        &ctx.state,
        &tools.qemu,
        Some(&kernel.image),
    )?;
    // The QEMU backend boots the machine of the kernel's lane; libvirt 9 cannot put
    // virtio-pci devices on microvm ("No PCI buses available"), so it boots the full one,
    // which needs a PCI kernel.
    let machine = match tools.launcher {
        Launcher::Qemu => arch.machine_for(kernel.lane),
        Launcher::Libvirt { .. } if kernel.lane == crate::arch::Lane::Fast => bail!(
            "{} has no PCI (its config is for the fast lane): libvirt boots {} guests on {}, \
             which needs one; make a PCI config with `cargo xtask trim-config --lane pci` and \
             pass it with --config, or use --backend qemu",
            kernel.image.display(),
            arch.name,
            arch.full_machine.name()
        ),
        Launcher::Libvirt { .. } => arch.full_machine,
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let layer = match &opts.layer {
        Some(_) if tools.launcher != Launcher::Qemu => bail!(
            "--rw needs the QEMU backend: libvirt starts a virtiofsd of its own, which cannot serve a layer"
        ),
        Some(name) => Some(crate::layer::hold(&ctx.state, name)?),
        None => None,
    };
    if opts.share.is_some() && tools.launcher != Launcher::Qemu {
        bail!("--share needs the QEMU backend for now");
    }
    let cmdline = spec::kernel_cmdline(&CmdlineInput {
        arch,
        init: opts.init,
        rw: layer.is_some(),
        share: opts.share.is_some(),
        machine,
        tsc_khz: spec::tsc_khz_from_cpuinfo(&cpuinfo),
        shell: console == Console::Interactive,
        append: opts.append.as_deref(),
    });
    let spec = VmSpec {
        arch,
        kernel: kernel.image.clone(),
        initramfs: kernel.initramfs.clone(),
        cmdline,
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        accel,
        machine,
        rootfs: rootfs(ctx, arch)?,
        layer,
        share: opts.share.clone(),
        init: opts.init,
        console,
        boot_timeout: opts.boot_timeout,
        timeout: opts.timeout,
        shutdown_timeout: opts.shutdown_timeout,
    };
    Ok((spec, tools))
}

/// What [`check`] found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The runs' judgement combined (bad if any run is bad), or the build's failure.
    pub judgement: Judgement,
    /// One report per boot (`--repeat`); empty when the build failed.
    pub runs: Vec<Report>,
}

/// Judges one kernel (a revision, or `--kernel`): build if needed, then up to `--repeat`
/// checks, stopping at the first bad one. Prints progress on stderr unless `quiet`.
pub fn check(ctx: &Ctx, req: &CheckRequest, quiet: bool) -> Result<CheckOutcome> {
    // `--kunit`, `--kselftest`: the suites' config and KUnit's command line, the selftests
    // built and shared (kunit/run.rs).
    let req = &crate::kunit::run::prepare(ctx, req)?;
    let (opts, plan, repeat) = (&req.vm, &req.plan, req.repeat);
    let tools = find_tools(opts)?;
    let kernel = match kernel_for(ctx, &req.kernel)? {
        Ok(k) => k,
        Err(j) => {
            // The run's result.json says which stage failed, as a boot's does.
            let saved = serde_json::json!({ "judgement": &j });
            let path = RunPaths::new(&ctx.run_dir).result();
            std::fs::write(&path, format!("{saved:#}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(CheckOutcome {
                judgement: j,
                runs: vec![],
            });
        }
    };
    let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Log)?;
    let mut runs = Vec::new();
    for i in 1..=repeat {
        let dir = if repeat == 1 {
            ctx.run_dir.clone()
        } else {
            let d = ctx.run_dir.join(format!("run-{i}"));
            std::fs::create_dir_all(&d)?;
            d
        };
        if !quiet {
            let nth = if repeat > 1 {
                format!(" ({i}/{repeat})")
            } else {
                String::new()
            };
            eprintln!(
                "booting {}{nth}: {:?}, {} init, {} vCPUs, {} MiB",
                spec.kernel.display(),
                spec.accel,
                spec.init.name(),
                spec.cpus,
                spec.memory_mib
            );
        }
        let mut print = |e: Event| {
            if quiet {
            } else if let Some(line) = crate::kunit::run::event_line(&e, &req.tests) {
                eprintln!("{line}")
            } else {
                print_event(&e)
            }
        };
        let r = run::check(&spec, &RunPaths::new(&dir), &tools, plan, &mut print)?;
        let r = crate::kunit::run::judge_run(r, &req.tests)?;
        let bad = r.judgement.verdict() == Verdict::Bad;
        runs.push(r);
        if bad {
            break;
        }
    }
    let verdicts: Vec<Verdict> = runs.iter().map(|r| r.judgement.verdict()).collect();
    let verdict = Verdict::combine(&verdicts);
    let judgement = runs
        .iter()
        .find(|r| r.judgement.verdict() == verdict)
        .map(|r| r.judgement.clone())
        .expect("at least one run, and the combined verdict is one of theirs");
    Ok(CheckOutcome { judgement, runs })
}

fn print_event(e: &Event) {
    match e {
        Event::Started => {}
        Event::AgentUp(d) => eprintln!("guest agent up after {:.2}s", d.as_secs_f64()),
        Event::BootFailed(b, d) => eprintln!("boot failed after {:.2}s: {b:?}", d.as_secs_f64()),
        Event::CommandDone(end, d) => {
            eprintln!("command ended after {:.2}s: {end:?}", d.as_secs_f64())
        }
        Event::ShutDown(how, d) => eprintln!("shut down in {:.2}s ({how})", d.as_secs_f64()),
        Event::Retrying(what) => eprintln!("not the kernel's fault: {what}; running it once more"),
    }
}

/// The command's output, the timings and the verdict line, as a person reads them.
fn print_outcome(o: &CheckOutcome, print_output: bool) {
    if let Some(last) = o.runs.last() {
        if let (Some(e), true) = (&last.exec, print_output) {
            let _ = std::io::stdout().write_all(&e.stdout);
            let _ = std::io::stderr().write_all(&e.stderr);
            let _ = std::io::stdout().flush();
        }
        if last.out_truncated {
            eprintln!("note: the guest agent truncated the command's output");
        }
        eprintln!("timings: {}", last.timings.line());
    }
    eprintln!(
        "verdict: {} (exit {}): {}",
        o.verdict().word(),
        o.verdict().exit_code(),
        o.judgement.reason
    );
    if o.verdict() != Verdict::Good {
        if let Some(last) = o.runs.last() {
            eprintln!("console log: {}", last.console_log.display());
        }
    }
}

/// The judgement saved in a run dir whose kernel did not build (so nothing booted).
fn unbuilt(dir: &std::path::Path) -> Option<Judgement> {
    #[derive(Deserialize)]
    struct Saved {
        judgement: Judgement,
        facts: Option<serde::de::IgnoredAny>,
    }
    let text = std::fs::read_to_string(RunPaths::new(dir).result()).ok()?;
    let saved: Saved = serde_json::from_str(&text).ok()?;
    let unbuilt = matches!(
        saved.judgement.failure,
        Some(Failure::Config { .. } | Failure::Build { .. })
    );
    (unbuilt && saved.facts.is_none()).then_some(saved.judgement)
}

impl CheckOutcome {
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict()
    }
}

/// `--json`: the outcome, with each run's output as text.
#[derive(Serialize)]
struct JsonOutcome<'a> {
    verdict: Verdict,
    exit_code: u8,
    /// The stage that failed; null when good.
    failure: &'a Option<Failure>,
    reason: &'a str,
    /// The check's run dir: its command log, build log, and each run's logs.
    run_dir: &'a std::path::Path,
    runs: Vec<JsonRun<'a>>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    #[serde(flatten)]
    report: &'a Report,
    stdout: Option<String>,
    stderr: Option<String>,
}

fn json(o: &CheckOutcome, run_dir: &std::path::Path) -> Result<String> {
    let runs = o
        .runs
        .iter()
        .map(|r| JsonRun {
            report: r,
            stdout: r
                .exec
                .as_ref()
                .map(|e| String::from_utf8_lossy(&e.stdout).into()),
            stderr: r
                .exec
                .as_ref()
                .map(|e| String::from_utf8_lossy(&e.stderr).into()),
        })
        .collect();
    Ok(serde_json::to_string_pretty(&JsonOutcome {
        verdict: o.verdict(),
        exit_code: o.verdict().exit_code(),
        failure: &o.judgement.failure,
        reason: &o.judgement.reason,
        run_dir,
        runs,
    })?)
}

impl CheckCmd {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        let outcome = match &self.from_run {
            Some(dir) => {
                let re = console::compile(&self.check.bad_if_console)?;
                if let Some(j) = unbuilt(dir) {
                    bail!(
                        "{} holds no boot to judge again: {}",
                        dir.display(),
                        j.reason
                    );
                }
                let r = run::rejudge(dir, &re)?;
                let r = crate::kunit::run::judge_run(r, &self.check.tests.resolve()?)?;
                CheckOutcome {
                    judgement: r.judgement.clone(),
                    runs: vec![r],
                }
            }
            None => check(ctx, &self.request(&ctx.file)?, false)?,
        };
        if self.json {
            println!("{}", json(&outcome, &ctx.run_dir)?);
        }
        crate::kunit::run::show(&outcome, &self.check.tests.resolve()?)?;
        print_outcome(&outcome, !self.json);
        Ok(outcome.verdict().exit_code())
    }
}

impl BootCmd {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        let req = self.request(&ctx.file)?;
        let opts = &req.vm;
        let tools = find_tools(opts)?;
        let kernel = match kernel_for(ctx, &req.kernel)? {
            Ok(k) => k,
            Err(j) => {
                eprintln!("{}", j.reason);
                return Ok(j.verdict().exit_code());
            }
        };
        let paths = RunPaths::new(&ctx.run_dir);
        match &req.exec {
            Some(cmdline) => {
                let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Log)?;
                let plan = Plan {
                    command: vec!["/bin/sh".into(), "-c".into(), cmdline.clone()],
                    ..Plan::default()
                };
                let r = run::check(&spec, &paths, &tools, &plan, &mut |e| print_event(&e))?;
                if let Some(e) = &r.exec {
                    let _ = std::io::stdout().write_all(&e.stdout);
                    let _ = std::io::stderr().write_all(&e.stderr);
                }
                eprintln!("timings: {}", r.timings.line());
                Ok(match &r.facts.command_end {
                    Some(verdict::CommandEnd::Exited { code }) => {
                        exit::passed_on(Some(*code), None)
                    }
                    Some(verdict::CommandEnd::Signaled { signal }) => {
                        exit::passed_on(None, Some(*signal))
                    }
                    _ => {
                        eprintln!(
                            "{} (console log: {})",
                            r.judgement.reason,
                            r.console_log.display()
                        );
                        // Not the kernel's doing (the guest lacks sh, virtiofsd died): 128.
                        match r.judgement.verdict() {
                            verdict::Verdict::Abort => verdict::Verdict::Abort,
                            _ => verdict::Verdict::Skip,
                        }
                        .exit_code()
                    }
                })
            }
            None if req.print_xml => {
                let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Log)?;
                #[cfg(feature = "libvirt")]
                print!("{}", crate::libvirt::xml_for(&spec, &paths, &tools)?);
                #[cfg(not(feature = "libvirt"))]
                let _ = (spec, tools);
                Ok(0)
            }
            #[cfg(feature = "libvirt")]
            None if opts.backend == Backend::Libvirt => {
                let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Interactive)?;
                crate::libvirt::boot_interactive(&spec, &paths, &tools)
            }
            None => {
                let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Interactive)?;
                eprintln!(
                    "booting {} ({:?}, {} init); Ctrl-A X quits, Ctrl-A C is the QEMU monitor",
                    spec.kernel.display(),
                    spec.accel,
                    spec.init.name()
                );
                let mut vm = run::Vm::start(&spec, &paths, &tools)?;
                let st = vm.wait_foreground()?;
                eprintln!("console log: {}", paths.console_log().display());
                // A guest that powers off, reboots or panics ends QEMU with 0 (-no-reboot);
                // anything else is QEMU's own failure.
                if !st.success() {
                    bail!("QEMU exited with {st}");
                }
                Ok(exit::OK)
            }
        }
    }
}

#[cfg(test)]
mod backend_tests {
    use super::*;
    use crate::settings::FileVm;

    fn opts(backend: Backend) -> VmRequest {
        let args = crate::cli::VmArgs {
            backend: Some(backend),
            keep: true,
            ..Default::default()
        };
        args.resolve(&FileVm::default(), spec::InitMode::Fast)
            .unwrap()
    }

    #[test]
    fn the_backend_picks_the_launcher() {
        assert_eq!(launcher(&opts(Backend::Qemu)).unwrap(), Launcher::Qemu);
        let l = launcher(&opts(Backend::Libvirt));
        if cfg!(feature = "libvirt") {
            assert_eq!(
                l.unwrap(),
                Launcher::Libvirt {
                    uri: "qemu:///system".into(),
                    keep: true
                }
            );
        } else {
            // One line that says how to get the feature.
            let e = l.unwrap_err().to_string();
            assert!(e.contains("--features libvirt") && !e.contains('\n'), "{e}");
        }
    }
}
