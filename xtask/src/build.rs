//! `cargo xtask build` and [`ensure_kernel`], which boot, check and bisect call: a kernel for
//! a revision through the cache, built in the rootfs container when the cache has none.

pub mod key;
pub mod lock;
mod plan;
mod progress;
mod runner;
pub mod source;
mod toolchain;

use crate::cache::{self, Cache, Entry, Metadata, Status};
use crate::cli::BuildCmd;
use crate::container::Container;
use crate::ctx::Ctx;
use crate::settings::BuildOptions;
use crate::units::{human_bytes, human_duration};
use anyhow::{bail, Context, Result};
use key::{sha256_hex, KeyInputs};
use lock::FileLock;
use plan::{ConfigFacts, Paths, Plan};
use runner::{Place, Runner};
use source::{Checkout, Source};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A kernel ready to boot: what `build` produced or the cache held.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The cache key (hex sha256).
    pub key: String,
    /// The cache entry's directory.
    pub dir: PathBuf,
    pub bzimage: PathBuf,
    /// Present only when booting needs modules (or `--initramfs dracut`).
    pub initramfs: Option<PathBuf>,
    /// The final .config.
    pub config: PathBuf,
    /// The commit built; None for a dirty working state.
    pub commit: Option<String>,
    /// Whether the cache answered (no make ran).
    pub cache_hit: bool,
    /// Wall time of this request (build, or cache lookup).
    pub duration: Duration,
    /// `make` runs this request made: 0 on a cache hit.
    pub make_runs: u32,
    /// The installed modules (`lib/modules/<release>`), when the config has modules.
    pub modules: Option<PathBuf>,
    /// The build's log, kept in the entry.
    pub log: PathBuf,
}

/// A build either gives a kernel or fails on the kernel's side (which a bisect skips).
/// Problems of the setup (no rootfs, a bad REV, Ctrl-C) are `Err`, not `Failed`.
#[derive(Debug, Clone)]
pub enum BuildOutcome {
    Built(Artifacts),
    Failed {
        key: String,
        log: PathBuf,
        summary: String,
    },
}

/// Builds `rev` (None: the tree's working state, uncommitted changes included) through the
/// cache. A cached kernel, or a cached failure (unless `retry_failed`), answers at once
/// without locking or running anything; otherwise one builder per key builds it and
/// publishes the entry atomically. The user's checkout is never changed: a revision builds
/// in the toolkit's worktree.
pub fn ensure_kernel(ctx: &Ctx, rev: Option<&str>, opts: &BuildOptions) -> Result<BuildOutcome> {
    let start = Instant::now();
    let tree = ctx.require_tree()?;
    let config_path = input_config(ctx, opts)?;
    let config = std::fs::read(&config_path)
        .with_context(|| format!("reading the config {}", config_path.display()))?;
    let source = source::resolve(&tree, rev)?;
    let inputs = KeyInputs {
        tree_id: source.tree_id.clone(),
        dirty: source.dirty.clone(),
        config: sha256_hex([config.as_slice()]),
        toolchain: toolchain::identity(&ctx.state, opts.host)?,
        make_args: plan::key_args(&source.date, opts.initramfs),
    };
    let key = inputs.key();
    let cache = Cache::new(&ctx.state);
    if let Some(answer) = answer_from_cache(&cache, &key, opts, start) {
        return Ok(answer);
    }
    let _key_lock = cache.lock(&key)?;
    // Another builder of the same key may have published it while we waited.
    if let Some(answer) = answer_from_cache(&cache, &key, opts, start) {
        return Ok(answer);
    }
    let request = Request {
        tree,
        rev: rev.map(str::to_string),
        source,
        config_path,
        inputs,
        key,
    };
    build(ctx, &cache, &request, opts, start)
}

/// The config to build: --config, or the one trim-config made.
fn input_config(ctx: &Ctx, opts: &BuildOptions) -> Result<PathBuf> {
    let path = opts
        .config
        .clone()
        .unwrap_or_else(|| ctx.state.trimmed_config());
    if !path.is_file() {
        bail!(
            "no kernel config at {}: run `cargo xtask trim-config` or pass --config PATH",
            path.display()
        );
    }
    Ok(path)
}

fn answer_from_cache(
    cache: &Cache,
    key: &str,
    opts: &BuildOptions,
    start: Instant,
) -> Option<BuildOutcome> {
    let entry = cache.lookup(key)?;
    match entry.meta.status {
        Status::Ok => {
            cache.touch(key);
            Some(BuildOutcome::Built(artifacts(&entry, true, 0, start)))
        }
        Status::Failed if opts.retry_failed => None,
        Status::Failed => Some(BuildOutcome::Failed {
            key: key.to_string(),
            log: entry.path(cache::BUILD_LOG),
            summary: entry.meta.summary.clone().unwrap_or_default(),
        }),
    }
}

fn artifacts(entry: &Entry, cache_hit: bool, make_runs: u32, start: Instant) -> Artifacts {
    let present = |name: &str| Some(entry.path(name)).filter(|p| p.exists());
    Artifacts {
        key: entry.meta.key.clone(),
        dir: entry.dir.clone(),
        bzimage: entry.path(cache::BZIMAGE),
        initramfs: present(cache::INITRAMFS),
        config: entry.path(cache::CONFIG),
        commit: (!entry.meta.dirty).then(|| entry.meta.commit.clone()),
        cache_hit,
        duration: start.elapsed(),
        make_runs,
        modules: present(cache::MODULES),
        log: entry.path(cache::BUILD_LOG),
    }
}

/// One cache miss to build.
struct Request {
    tree: PathBuf,
    rev: Option<String>,
    source: Source,
    config_path: PathBuf,
    inputs: KeyInputs,
    key: String,
}

/// What the steps of a build left behind.
struct Record {
    durations: BTreeMap<String, f64>,
    kernelrelease: Option<String>,
}

fn build(
    ctx: &Ctx,
    cache: &Cache,
    req: &Request,
    opts: &BuildOptions,
    start: Instant,
) -> Result<BuildOutcome> {
    let container = if opts.host {
        None
    } else {
        Some(Container::new(&ctx.state)?)
    };
    // One source dir (the tree, or the worktree) and its build dir, locked together.
    let src_dir = match req.source.checkout {
        Checkout::WorkingState => req.tree.clone(),
        Checkout::Worktree => source::worktree_dir(&ctx.state, &req.tree),
    };
    let tag = source::path_tag(&src_dir);
    let build_dir = ctx.state.build_dir(&tag);
    let _src_lock = FileLock::acquire(
        &ctx.state.build_dir(&format!("{tag}.lock")),
        &format!("the build dir of {}", src_dir.display()),
    )?;
    if req.source.checkout == Checkout::Worktree {
        source::checkout_worktree(&req.tree, &src_dir, &req.source.commit)?;
    }
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("creating the build dir {}", build_dir.display()))?;
    let staging = build_dir.join(plan::STAGING);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;

    let ccache_host = ctx.state.root.join("ccache");
    let (place, paths, ccache_dir) = match container {
        Some(c) => {
            let paths = Paths::container();
            // The rootfs may have a /ccache mount point; otherwise ccache lives in the build dir.
            let has_mount_point = ctx.state.rootfs().join("ccache").is_dir();
            let (c, dir) = if opts.ccache && has_mount_point {
                std::fs::create_dir_all(&ccache_host)?;
                (c.bind(&ccache_host, "/ccache"), "/ccache".to_string())
            } else {
                (c, format!("{}/.ccache", paths.build))
            };
            (Place::container(c, &src_dir, &build_dir), paths, dir)
        }
        None => (
            Place::Host {
                build_dir: build_dir.clone(),
            },
            Paths::host(&src_dir, &build_dir),
            ccache_host.display().to_string(),
        ),
    };
    let plan = Plan {
        paths,
        jobs: opts.jobs,
        ccache_dir: opts.ccache.then_some(ccache_dir),
        timestamp: req.source.date.clone(),
        initramfs: opts.initramfs,
    };
    std::fs::copy(&req.config_path, build_dir.join(".config"))
        .with_context(|| format!("copying {} into the build dir", req.config_path.display()))?;

    let what = match (&req.rev, &req.source.dirty) {
        (Some(rev), _) => format!("{rev} ({})", &req.source.commit[..12]),
        (None, Some(_)) => format!("the working state ({}+changes)", &req.source.commit[..12]),
        (None, None) => format!("the working state ({})", &req.source.commit[..12]),
    };
    eprintln!("building {what}, key {}", &req.key[..12]);
    let log_path = ctx.run_dir.join("build.log");
    let mut runner = Runner::new(place, &plan, log_path, "build")?;
    let mut record = Record {
        durations: BTreeMap::new(),
        kernelrelease: None,
    };

    let step = runner.step("olddefconfig", &plan.olddefconfig())?;
    record
        .durations
        .insert("olddefconfig".into(), step.duration.as_secs_f64());
    if !step.ok {
        return failed(ctx, cache, req, &runner, record, &step.output);
    }
    let final_config = std::fs::read_to_string(build_dir.join(".config"))?;
    let facts = ConfigFacts::parse(&final_config);
    let step = runner.step("make", &plan.build(facts.modules))?;
    record
        .durations
        .insert("make".into(), step.duration.as_secs_f64());
    if !step.ok {
        return failed(ctx, cache, req, &runner, record, &step.output);
    }
    record.kernelrelease = std::fs::read_to_string(build_dir.join("include/config/kernel.release"))
        .ok()
        .map(|s| s.trim().to_string());
    if facts.modules {
        let step = runner.step("modules_install", &plan.modules_install())?;
        record
            .durations
            .insert("modules_install".into(), step.duration.as_secs_f64());
        if !step.ok {
            return failed(ctx, cache, req, &runner, record, &step.output);
        }
    }
    if facts.wants_initramfs(opts.initramfs) {
        let release = record
            .kernelrelease
            .clone()
            .context("the build made no include/config/kernel.release")?;
        let step = runner.step("dracut", &plan.dracut(&release, facts.modules))?;
        record
            .durations
            .insert("dracut".into(), step.duration.as_secs_f64());
        if !step.ok {
            // dracut is ours, not the kernel's: a setup problem, never cached.
            bail!(
                "dracut failed (log: {}):\n{}",
                runner.log_path.display(),
                crate::cmd::tail(&step.output, 10)
            );
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
    sizes.insert(
        cache::BZIMAGE.to_string(),
        copy(build_dir.join("arch/x86/boot/bzImage"), cache::BZIMAGE)?,
    );
    copy(build_dir.join("System.map"), cache::SYSTEM_MAP)?;
    copy(build_dir.join(".config"), cache::CONFIG)?;
    if facts.modules {
        if let Some(release) = &record.kernelrelease {
            let modules = staging.join("modules/lib/modules").join(release);
            if modules.is_dir() {
                std::fs::rename(&modules, out.join(cache::MODULES))?;
                sizes.insert(cache::MODULES.into(), dir_size(&out.join(cache::MODULES)));
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
    let meta = metadata(req, &src_dir, &runner, record, sizes, Status::Ok, None);
    let entry = cache.publish(staged, &meta)?;
    Ok(BuildOutcome::Built(artifacts(
        &entry,
        false,
        runner.make_runs,
        start,
    )))
}

/// Records a failed step: a failure of the kernel becomes a cached `Failed`; a command that
/// never got to build is a setup problem (`Err`), not cached.
fn failed(
    ctx: &Ctx,
    cache: &Cache,
    req: &Request,
    runner: &Runner,
    record: Record,
    output: &str,
) -> Result<BuildOutcome> {
    runner.finish();
    if !progress::make_failed(output) {
        bail!(
            "the build did not start (log: {}):\n{}",
            runner.log_path.display(),
            crate::cmd::tail(output, 10)
        );
    }
    let log = std::fs::read_to_string(&runner.log_path).unwrap_or_default();
    let summary = progress::error_summary(&log, 10);
    let staged = cache.staging(&req.key)?;
    std::fs::copy(&runner.log_path, staged.path().join(cache::BUILD_LOG))?;
    let src_dir = match req.source.checkout {
        Checkout::WorkingState => req.tree.clone(),
        Checkout::Worktree => source::worktree_dir(&ctx.state, &req.tree),
    };
    let meta = metadata(
        req,
        &src_dir,
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
    })
}

fn metadata(
    req: &Request,
    src_dir: &Path,
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
        source_dir: src_dir.to_path_buf(),
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
    }
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn dir_size(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

impl BuildCmd {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        let opts = BuildOptions::resolve(&self.build, &ctx.file.build)?;
        match ensure_kernel(ctx, self.rev.as_deref(), &opts)? {
            BuildOutcome::Built(a) => {
                let what = a.commit.as_deref().map_or("working state", |c| &c[..12]);
                if a.cache_hit {
                    println!(
                        "cache hit: {} ({what}) in {}, no make run",
                        &a.key[..12],
                        human_duration(a.duration)
                    );
                } else {
                    println!(
                        "built: {} ({what}) in {}, {} make runs",
                        &a.key[..12],
                        human_duration(a.duration),
                        a.make_runs
                    );
                }
                println!(
                    "bzImage:   {} ({})",
                    a.bzimage.display(),
                    human_bytes(file_size(&a.bzimage))
                );
                if let Some(i) = &a.initramfs {
                    println!("initramfs: {}", i.display());
                }
                if let Some(m) = &a.modules {
                    println!("modules:   {}", m.display());
                }
                println!("entry:     {}", a.dir.display());
                Ok(0)
            }
            BuildOutcome::Failed { key, log, summary } => {
                eprintln!("build failed (key {}):\n{summary}", &key[..12]);
                eprintln!("full log: {}", log.display());
                eprintln!("the failure is cached for these inputs; --retry-failed builds again");
                Ok(1)
            }
        }
    }
}
