//! A cache miss: lock the source dir, check out the revision, run the steps in the build
//! dir, and publish the entry (or the recorded failure) into the cache.

use super::cache::{self, Cache, Metadata, Status};
use super::ccache;
use super::configured;
use super::failure::{self, Failure};
use super::key::KeyInputs;
use super::plan::{self, Ccache, ConfigFacts, Make, Paths, Plan, CCACHE_LINKS, CONTAINER_PATH};
use super::progress;
use super::runner::{Place, Runner, Step};
use super::source::{self, Checkout, Source};
use super::BuildRequest;
use super::{artifacts, BuildOutcome};
use crate::ctx::Ctx;
use crate::kconfig::Config;
use crate::lock::FileLock;
use crate::progress::Progress;
use crate::units::short;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One cache miss to build.
pub struct Request {
    pub tree: PathBuf,
    pub rev: Option<String>,
    pub source: Source,
    pub config_path: PathBuf,
    pub dirs: Dirs,
    pub plan: Plan,
    pub inputs: KeyInputs,
    pub key: String,
}

/// Where a build runs on the host: one source dir (the tree, or the toolkit's worktree) and
/// its build dir, locked together.
pub struct Dirs {
    pub src: PathBuf,
    pub build: PathBuf,
    /// The source dir's tag, which names its lock.
    tag: String,
    /// In the container (else on the host).
    container: bool,
    /// ccache is used: asked for, and its compiler links are there (the rootfs has them; a
    /// host may not).
    ccache: bool,
    /// The rootfs's `/ccache` mount point is used: the state's ccache dir is bound there.
    ccache_mount: bool,
    /// The state's ccache dir for this toolchain ([`ccache::dir`]).
    ccache_host: PathBuf,
}

impl Dirs {
    pub fn of(
        ctx: &Ctx,
        tree: &Path,
        source: &Source,
        opts: &BuildRequest,
        toolchain: &str,
    ) -> Dirs {
        let src = match source.checkout {
            Checkout::WorkingState => tree.to_path_buf(),
            Checkout::Worktree => source::worktree_dir(&ctx.state, tree),
        };
        let tag = source::path_tag(&src);
        // Host and container builds record different paths and compilers in kbuild's .cmd
        // files: in one build dir, each would rebuild everything after the other.
        // Another architecture has its own build dir too (the host's keeps the plain name).
        let arch = if opts.arch.is_host() {
            String::new()
        } else {
            format!("-{}", opts.arch.name)
        };
        let build = ctx.state.build_dir(&if opts.host {
            format!("{tag}{arch}-host")
        } else {
            format!("{tag}{arch}")
        });
        Dirs {
            src,
            build,
            tag,
            container: !opts.host,
            ccache: opts.ccache && (!opts.host || Path::new(CCACHE_LINKS).is_dir()),
            // The rootfs may have a /ccache mount point; otherwise ccache lives in the build dir.
            ccache_mount: !opts.host && opts.ccache && ctx.state.rootfs().join("ccache").is_dir(),
            ccache_host: ccache::dir(&ctx.state.root, toolchain),
        }
    }

    /// What the build runs here.
    pub fn plan(&self, source: &Source, opts: &BuildRequest) -> Plan {
        let paths = if self.container {
            Paths::container()
        } else {
            Paths::host(&self.src, &self.build)
        };
        let ccache = match (self.container, self.ccache_mount) {
            (true, true) => Ccache::new("/ccache".into(), CONTAINER_PATH),
            (true, false) => Ccache::new(format!("{}/.ccache", paths.build), CONTAINER_PATH),
            (false, _) => Ccache::new(
                self.ccache_host.display().to_string(),
                &std::env::var("PATH").unwrap_or_default(),
            ),
        };
        Plan {
            make: Make {
                arch: opts.arch,
                paths,
                jobs: Some(opts.jobs),
                ccache: self.ccache.then_some(ccache),
                timestamp: Some(source.date.clone()),
            },
            initramfs: opts.initramfs,
        }
    }
}

/// What the steps of a build left behind.
struct Record {
    durations: BTreeMap<String, f64>,
    kernelrelease: Option<String>,
}

pub fn build(
    ctx: &Ctx,
    cache: &Cache,
    req: &Request,
    opts: &BuildRequest,
    start: Instant,
) -> Result<BuildOutcome> {
    let container = if opts.host {
        None
    } else {
        Some(crate::rootfs::build_container(&ctx.state)?)
    };
    let (src_dir, build_dir) = (&req.dirs.src, &req.dirs.build);
    let _src_lock = FileLock::acquire(
        &ctx.state.build_dir(&format!("{}.lock", req.dirs.tag)),
        &format!("another build in the build dir of {}", src_dir.display()),
        opts.timeout,
    )?;
    let locked_since = std::time::SystemTime::now();
    if req.source.checkout == Checkout::Worktree {
        source::checkout_worktree(&req.tree, src_dir, &req.source.commit, Some(locked_since))?;
    }
    std::fs::create_dir_all(build_dir)
        .with_context(|| format!("creating the build dir {}", build_dir.display()))?;
    let staging = build_dir.join(plan::STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;

    let place = match container {
        Some(c) if req.dirs.ccache_mount => {
            let ccache_host = &req.dirs.ccache_host;
            std::fs::create_dir_all(ccache_host)?;
            Place::container(c.bind(ccache_host, "/ccache"), src_dir, build_dir)
        }
        Some(c) => Place::container(c, src_dir, build_dir),
        None => Place::Host {
            build_dir: build_dir.clone(),
        },
    };
    let plan = &req.plan;
    let steps = plan.steps();
    // The .config the build dir has is olddefconfig's result for this build when the same
    // inputs made it from the same Kconfig files: kept, it spares olddefconfig and make's
    // syncconfig (build/configured.rs). Otherwise the input config replaces it.
    let input = std::fs::read(&req.config_path)
        .with_context(|| format!("reading {}", req.config_path.display()))?;
    let dirty = req.source.dirty.is_some();
    let config_inputs = configured::inputs_digest(
        &input,
        &req.inputs.toolchain,
        &req.inputs.arch,
        &configured::configure_command(&steps.configure.key()),
    );
    let keep_config = configured::reusable(
        configured::read(build_dir).as_ref(),
        &config_inputs,
        configured::file_digest(&build_dir.join(".config")).as_deref(),
        |commit| configured::kconfig_same_as(src_dir, commit, dirty),
    );
    if !keep_config {
        configured::forget(build_dir)?;
        std::fs::write(build_dir.join(".config"), &input)
            .with_context(|| format!("copying {} into the build dir", req.config_path.display()))?;
    }

    let what = match (&req.rev, &req.source.dirty) {
        (Some(rev), _) => format!("{rev} ({})", short(&req.source.commit)),
        (None, Some(_)) => format!("the working state ({}+changes)", short(&req.source.commit)),
        (None, None) => format!("the working state ({})", short(&req.source.commit)),
    };
    eprintln!("building {what}, key {}", short(&req.key));
    let log_path = ctx.run_dir.join("build.log");
    // One build's log: a run that builds again starts it afresh.
    std::fs::write(&log_path, "")
        .with_context(|| format!("creating the build log {}", log_path.display()))?;
    let mut runner = Runner::new(
        place,
        log_path,
        Some(Progress::start("build")),
        opts.timeout,
    )?;
    let mut record = Record {
        durations: BTreeMap::new(),
        kernelrelease: None,
    };

    if keep_config {
        runner.note(&format!(
            "### {}: kept the build dir's .config (the same input config, toolchain and \
             Kconfig files made it)",
            steps.configure.label
        ))?;
    } else {
        let step = runner.step(steps.configure.label, &steps.configure.run)?;
        record
            .durations
            .insert(steps.configure.label.into(), step.duration.as_secs_f64());
        if !step.ok {
            return failed(cache, req, &runner, record, &step);
        }
        // Recorded only for Kconfig files that are the commit's (uncommitted ones may go).
        if !dirty || configured::kconfig_same_as(src_dir, &req.source.commit, true) {
            if let Some(config) = configured::file_digest(&build_dir.join(".config")) {
                configured::write(
                    build_dir,
                    &configured::Configured {
                        inputs: config_inputs,
                        commit: req.source.commit.clone(),
                        config,
                    },
                )?;
            }
        }
    }
    let final_config = Config::parse(&std::fs::read_to_string(build_dir.join(".config"))?)
        .context("the .config olddefconfig wrote")?;
    let facts = ConfigFacts::of(&final_config);
    let runs_dracut = steps
        .then
        .iter()
        .any(|s| s.label == plan::DRACUT && s.when.holds(&facts));
    if runs_dracut && !opts.arch.is_host() {
        // dracut in the build container would pack the host's binaries.
        bail!(
            "an initramfs for {} cannot be made here (dracut packs the build container's own, \
             {}, binaries): build virtio, virtiofs and fuse in (=y) and pass --initramfs none",
            opts.arch.name,
            crate::arch::HOST.name
        );
    }
    for planned in steps.then.iter().filter(|s| s.when.holds(&facts)) {
        let mut run = planned.run.clone();
        if run.argv.iter().any(|a| a.contains(plan::RELEASE)) {
            let release = record
                .kernelrelease
                .as_deref()
                .context("the build made no include/config/kernel.release")?;
            run = run.with_release(release);
        }
        let step = runner.step(planned.label, &run)?;
        record
            .durations
            .insert(planned.label.into(), step.duration.as_secs_f64());
        if !step.ok && planned.kernels {
            return failed(cache, req, &runner, record, &step);
        }
        if !step.ok {
            // Our own tool, not the kernel's: a setup problem, never cached.
            bail!(
                "{} failed (log: {}):\n{}",
                planned.label,
                runner.log_path.display(),
                crate::cmd::tail(&step.output, 10)
            );
        }
        if record.kernelrelease.is_none() {
            record.kernelrelease =
                std::fs::read_to_string(build_dir.join("include/config/kernel.release"))
                    .ok()
                    .map(|s| s.trim().to_string());
        }
    }
    runner.finish();

    // Assemble the entry in the cache's staging area, then publish it in one rename.
    let staged = cache.staging(&req.key)?;
    let out = staged.path();
    let copy = |from: PathBuf, name: &str| -> Result<u64> {
        std::fs::copy(&from, out.join(name)).with_context(|| format!("copying {}", from.display()))
    };
    let mut sizes = BTreeMap::new();
    // Named as make named it (`bzImage`, arm64's `Image`): cache::image_for.
    let image = plan.make.arch.image_target;
    sizes.insert(
        image.to_string(),
        copy(build_dir.join(plan.make.arch.image_path), image)?,
    );
    copy(build_dir.join("System.map"), cache::SYSTEM_MAP)?;
    copy(build_dir.join(".config"), cache::CONFIG)?;
    if facts.pvh_image {
        sizes.insert(
            cache::PVH_IMAGE.into(),
            copy(build_dir.join("vmlinux"), cache::PVH_IMAGE)?,
        );
    }
    if facts.modules {
        if let Some(release) = &record.kernelrelease {
            let modules = staging.join("modules/lib/modules").join(release);
            if modules.is_dir() {
                std::fs::rename(&modules, out.join(cache::MODULES))?;
                sizes.insert(
                    cache::MODULES.into(),
                    crate::state::dir_size(&out.join(cache::MODULES)),
                );
            }
        }
    }
    let initramfs = staging.join("initramfs.img");
    if initramfs.exists() {
        std::fs::rename(&initramfs, out.join(cache::INITRAMFS))?;
        sizes.insert(
            cache::INITRAMFS.into(),
            file_size(&out.join(cache::INITRAMFS)),
        );
    }
    std::fs::copy(&runner.log_path, out.join(cache::BUILD_LOG))?;
    record
        .durations
        .insert("total".into(), start.elapsed().as_secs_f64());
    let meta = metadata(req, &runner, record, sizes, Status::Ok, None);
    let entry = cache.publish(staged, &meta)?;
    let mut built = artifacts(&entry, false, runner.make_runs, start);
    built.ccache = plan.make.ccache.as_ref().map(|_| {
        let log = std::fs::read_to_string(staging.join(ccache::STATS_LOG)).unwrap_or_default();
        ccache::Stats::parse(&log)
    });
    Ok(BuildOutcome::Built(built))
}

/// Records a failed step: an error of the sources becomes a cached `Failed`; anything else
/// (a full disk, a killed compiler, a tree configured in-tree, a build that never started)
/// is an `Err` naming the cause, and nothing is cached.
fn failed(
    cache: &Cache,
    req: &Request,
    runner: &Runner,
    record: Record,
    step: &Step,
) -> Result<BuildOutcome> {
    runner.finish();
    if let Failure::Host(why) = failure::classify(&step.output, &step.status) {
        bail!(
            "{why}; nothing was cached (log: {}):\n{}",
            runner.log_path.display(),
            crate::cmd::tail(&step.output, 10)
        );
    }
    let log = std::fs::read_to_string(&runner.log_path).unwrap_or_default();
    let summary = progress::error_summary(&log, 10);
    let staged = cache.staging(&req.key)?;
    std::fs::copy(&runner.log_path, staged.path().join(cache::BUILD_LOG))?;
    let meta = metadata(
        req,
        runner,
        record,
        BTreeMap::new(),
        Status::Failed,
        Some(summary.clone()),
    );
    let entry = cache.publish(staged, &meta)?;
    Ok(BuildOutcome::Failed {
        key: req.key.clone(),
        log: entry.path(cache::BUILD_LOG),
        summary,
        cached: false,
        config: super::failed_at_config(&meta.commands),
    })
}

fn metadata(
    req: &Request,
    runner: &Runner,
    record: Record,
    sizes: BTreeMap<String, u64>,
    status: Status,
    summary: Option<String>,
) -> Metadata {
    Metadata {
        key: req.key.clone(),
        status,
        inputs: req.inputs.clone(),
        commit: req.source.commit.clone(),
        dirty: req.source.dirty.is_some(),
        rev: req.rev.clone(),
        tree: req.tree.clone(),
        source_dir: req.dirs.src.clone(),
        config_path: req.config_path.clone(),
        commands: runner.commands.clone(),
        durations: record.durations,
        sizes,
        kernelrelease: record.kernelrelease,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        summary,
        // Recorded by `Cache::publish` from the staged files.
        files: BTreeMap::new(),
        kernel_signature: (status == Status::Ok)
            .then(|| super::signature::of_file(&req.dirs.build.join("vmlinux")))
            .flatten(),
    }
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
