//! Booting kernels in VMs: the requests of `boot` and `check`, the kernel to boot
//! ([`kernel_for`]) and everything decided before a VM starts.
//!
//! Layers, from the top: `check.rs` ([`CheckRequest`] → build → N checks → [`CheckOutcome`]);
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
pub mod qmp;
pub mod run;
pub mod spec;
pub mod timeline;
pub mod verdict;
pub mod virtiofsd;

use crate::arch::Machine;
use crate::build::BuildRequest;
use crate::build::{self, BuildOutcome};
use crate::ctx::Ctx;
use crate::kvm;
use anyhow::{bail, Context, Result};
use guest::{Launcher, Tools};
use run::{Plan, Report};
use serde::{Deserialize, Serialize};
use spec::{CmdlineInput, Console, VmSpec};
use std::path::PathBuf;
use std::time::Duration;
use verdict::{Failure, Judgement, Verdict};

/// How to run a VM, resolved: every option has its value (command line over xtask.toml
/// over the defaults in settings.rs), checked against this host. The kernel is not here: what to boot
/// is the task's (a build, or `--kernel`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRequest {
    /// The guest's architecture (`--arch`, which the build options carry): QEMU's binary,
    /// machine and CPU, the guest root.
    #[serde(with = "crate::arch::by_name")]
    pub arch: &'static crate::arch::Arch,
    pub memory_mib: u64,
    pub cpus: u32,
    /// As asked; [`crate::kvm::choose`] picks the one the VM runs under.
    pub accel: crate::options::AccelAsked,
    pub backend: crate::options::Backend,
    /// The libvirt URI, for [`spec::Backend::Libvirt`].
    pub connect: String,
    pub append: Option<String>,
    /// `--rw`: the layer that keeps the guest's writes; None: read-only, nothing kept.
    pub layer: Option<String>,
    /// `--share DIR`, absolute.
    pub share: Option<PathBuf>,
    pub init: crate::options::InitMode,
    pub timeout: Duration,
    pub boot_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub keep: bool,
}

impl VmRequest {
    /// The request for a guest of `arch` (the kernel's, from `--arch`).
    pub fn with_arch(self, arch: &'static crate::arch::Arch) -> VmRequest {
        VmRequest { arch, ..self }
    }
}

/// Which tests a check reads and judges, resolved from the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestRequest {
    /// `--kunit [SUITE_GLOB...]`: Some(empty) runs every suite the config builds.
    pub kunit: Option<Vec<String>>,
    /// `--kunit-filter`: KUnit's `kunit.filter_glob`.
    pub kunit_filter: Option<String>,
    /// `--kunitconfig PATH...`, absolute: options from these instead of the suites' own.
    pub kunitconfig: Vec<PathBuf>,
    /// `--ktap`: the command's stdout is KTAP.
    pub ktap: bool,
    /// `--kselftest TARGET...`.
    pub kselftest: Vec<String>,
    /// `--test NAME`: this one test decides.
    pub test: Option<String>,
    /// `--junit FILE`, absolute.
    pub junit: Option<PathBuf>,
    /// The KUnit config once made for this request: a bisect step makes it before it checks.
    #[serde(default)]
    pub kunit_config: Option<PathBuf>,
}

/// A kernel to boot.
#[derive(Debug, Clone)]
pub struct KernelImage {
    pub image: PathBuf,
    /// The same kernel uncompressed, with its PVH entry (a cache entry's `vmlinux`).
    pub pvh_image: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    /// The lane its config is for (the machine follows it); the PCI lane when unknown.
    pub lane: crate::arch::Lane,
}

impl KernelImage {
    /// `--kernel PATH`: the lane from the config beside it when there is one (a cache
    /// entry's `config`, a build dir's `.config`), else the PCI lane (boots any kernel that
    /// has virtio-pci, as before lanes).
    ///
    /// A cache entry's image brings the entry's vmlinux along, when it kept one: the same
    /// build, which the fast lane boots instead ([`KernelImage::to_boot`]).
    pub fn given(image: &std::path::Path) -> KernelImage {
        let lane = config_text_of(image)
            .map_or(crate::arch::Lane::Pci, |t| crate::arch::Lane::of_config(&t));
        KernelImage {
            image: image.to_path_buf(),
            pvh_image: entry_pvh_image(image),
            initramfs: None,
            lane,
        }
    }

    /// The file `machine` boots: the PVH image on the fast lane's microvm, where it saves
    /// the bzImage's decompression (about 0.15 s under TCG); the image on every other
    /// machine, which is what a PCI config (which keeps no vmlinux, kconfig/x86_64-pci.config)
    /// and libvirt's q35 boot.
    pub fn to_boot(&self, machine: Machine) -> &std::path::Path {
        match (&self.pvh_image, machine) {
            (Some(vmlinux), Machine::MicrovmMmio) => vmlinux,
            _ => &self.image,
        }
    }
}

/// The PVH image of the cache entry `image` is in, when it is an entry's and it kept one.
fn entry_pvh_image(image: &std::path::Path) -> Option<PathBuf> {
    let dir = image.parent()?;
    let vmlinux = dir.join(build::cache::PVH_IMAGE);
    (dir.join(build::cache::METADATA).is_file() && vmlinux.is_file() && vmlinux != image)
        .then_some(vmlinux)
}

/// The config of a kernel image, where one is found beside it ([`configs_beside`]).
pub fn config_of(image: &std::path::Path) -> Option<crate::kconfig::Config> {
    config_text_of(image).and_then(|t| crate::kconfig::Config::parse(&t).ok())
}

/// The text of the first config found beside a kernel image.
fn config_text_of(image: &std::path::Path) -> Option<String> {
    configs_beside(image)
        .iter()
        .find_map(|c| std::fs::read_to_string(c).ok())
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
    pub tests: TestRequest,
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
                pvh_image: a.pvh_image,
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

/// The accelerator and the spec for one VM, with its tools: everything decided up front.
pub fn prepare(
    ctx: &Ctx,
    opts: &VmRequest,
    tools: Tools,
    kernel: &KernelImage,
    console: Console,
) -> Result<(VmSpec, Tools)> {
    let arch = opts.arch;
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
    let rootfs = rootfs(ctx, arch)?;
    let cmdline = spec::kernel_cmdline(&CmdlineInput {
        arch,
        init: opts.init,
        rw: layer.is_some(),
        share: opts.share.is_some(),
        machine,
        tsc_khz: spec::tsc_khz_from_cpuinfo(&cpuinfo),
        shell: console == Console::Interactive,
        fast_init: rootfs
            .join(spec::FAST_INIT.trim_start_matches('/'))
            .is_file(),
        append: opts.append.as_deref(),
    });
    spec::check_init_args(machine, &cmdline)?;
    let spec = VmSpec {
        arch,
        kernel: kernel.to_boot(machine).to_path_buf(),
        initramfs: kernel.initramfs.clone(),
        cmdline,
        memory_mib: opts.memory_mib,
        cpus: opts.cpus,
        accel,
        machine,
        rootfs,
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

/// What `check::run` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// The runs' judgement combined (bad if any run is bad), or the build's failure.
    pub judgement: Judgement,
    /// One report per boot (`--repeat`); empty when the build failed.
    pub runs: Vec<Report>,
}

impl CheckOutcome {
    pub fn verdict(&self) -> Verdict {
        self.judgement.verdict()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache entry's bzImage brings its vmlinux along, which only the fast lane's microvm
    /// boots; a bzImage elsewhere (a build dir) and the vmlinux itself are booted as given.
    #[test]
    fn the_fast_lane_boots_an_entrys_pvh_image() {
        let d = tempfile::tempdir().unwrap();
        let entry = d.path().join("entry");
        std::fs::create_dir(&entry).unwrap();
        for name in [build::cache::BZIMAGE, build::cache::PVH_IMAGE] {
            std::fs::write(entry.join(name), name).unwrap();
        }
        let bz = entry.join(build::cache::BZIMAGE);
        let vmlinux = entry.join(build::cache::PVH_IMAGE);
        assert_eq!(KernelImage::given(&bz).pvh_image, None, "not an entry yet");
        std::fs::write(entry.join(build::cache::METADATA), "{}").unwrap();
        let k = KernelImage::given(&bz);
        assert_eq!(k.pvh_image.as_deref(), Some(vmlinux.as_path()));
        assert_eq!(k.to_boot(Machine::MicrovmMmio), vmlinux);
        for other in [Machine::Microvm, Machine::Q35, Machine::Virt] {
            assert_eq!(k.to_boot(other), bz, "{other:?}");
        }
        let given = KernelImage::given(&vmlinux);
        assert_eq!(given.pvh_image, None);
        assert_eq!(given.to_boot(Machine::MicrovmMmio), vmlinux);
    }
}
