//! `cargo xtask build` and [`ensure_kernel`], which boot, check and bisect call: a kernel for
//! a revision through the cache, built in the rootfs container when the cache has none.

pub mod cache;
pub mod ccache;
mod configured;
pub mod failure;
pub mod key;
mod miss;
pub mod plan;
mod progress;
pub mod runner;
pub mod signature;
pub mod source;
mod toolchain;

use crate::ctx::Ctx;
use crate::options::InitramfsMode;
use crate::units::short;
use anyhow::{bail, Context, Result};
use cache::{Cache, Entry, Status};
use key::{sha256_hex, KeyInputs};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How to build a kernel (any revision), resolved: command line over xtask.toml over the
/// defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRequest {
    /// The kernel's architecture; default: the host's.
    #[serde(with = "crate::arch::by_name")]
    pub arch: &'static crate::arch::Arch,
    /// The config to build; None means the trimmed config of the arch and `lane` in the
    /// state dir.
    pub config: Option<PathBuf>,
    /// The lane whose trimmed config is built when `config` is None: None is the arch's
    /// default lane; the libvirt backend asks for the PCI lane, the only one it boots.
    #[serde(default)]
    pub lane: Option<crate::arch::Lane>,
    pub jobs: u32,
    pub host: bool,
    pub ccache: bool,
    pub initramfs: InitramfsMode,
    pub retry_failed: bool,
    /// How long one make run of the build may take before it is ended (a setup fault).
    pub timeout: Duration,
}

/// A kernel ready to boot: what `build` produced or the cache held.
#[derive(Debug, Clone)]
pub struct Artifacts {
    /// The cache key (hex sha256).
    pub key: String,
    /// The cache entry's directory.
    pub dir: PathBuf,
    /// The kernel image, named in the entry as make named it (`bzImage`, arm64's `Image`).
    pub image: PathBuf,
    /// The same kernel uncompressed, entered through PVH: kept when the config has it.
    pub pvh_image: Option<PathBuf>,
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
    /// What ccache answered of this build's compilations; None on a cache hit or without ccache.
    pub ccache: Option<ccache::Stats>,
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
        /// Whether the cache answered with a recorded failure (no make ran).
        cached: bool,
        /// Whether it was the config step (`make olddefconfig`) that failed, not the build.
        config: bool,
    },
}

/// Whether a failed build's last command, the one that failed, made the config.
pub fn failed_at_config(commands: &[Vec<String>]) -> bool {
    commands
        .last()
        .is_some_and(|argv| argv.last().is_some_and(|t| t == "olddefconfig"))
}

/// Builds `rev` (None: the tree's working state, uncommitted changes included) through the
/// cache. A cached kernel, or a cached failure (unless `retry_failed`), answers at once
/// without locking or running anything; otherwise one builder per key builds it and
/// publishes the entry atomically. The user's checkout is never changed: a revision builds
/// in the toolkit's worktree.
pub fn ensure_kernel(ctx: &Ctx, rev: Option<&str>, opts: &BuildRequest) -> Result<BuildOutcome> {
    let start = Instant::now();
    let tree = ctx.require_tree()?;
    let config_path = input_config(ctx, opts)?;
    let config = std::fs::read(&config_path)
        .with_context(|| format!("reading the config {}", config_path.display()))?;
    let source = source::resolve(&ctx.state, &tree, rev)?;
    let toolchain = toolchain::identity(&ctx.state, opts.host)?;
    let dirs = miss::Dirs::of(ctx, &tree, &source, opts, &toolchain);
    let plan = dirs.plan(&source, opts);
    let inputs = KeyInputs {
        tree_id: source.tree_id.clone(),
        dirty: source.dirty.clone(),
        config: sha256_hex([config.as_slice()]),
        toolchain,
        arch: plan.make.arch.name.to_string(),
        commands: plan.key(),
    };
    let key = inputs.key();
    let cache = Cache::new(&ctx.state);
    if let Some(answer) = answer_from_cache(&cache, &key, opts, start, true) {
        return Ok(answer);
    }
    let _key_lock = cache.lock(&key, opts.timeout)?;
    // Another builder of the same key may have published it while we waited.
    if let Some(answer) = answer_from_cache(&cache, &key, opts, start, false) {
        return Ok(answer);
    }
    let request = miss::Request {
        tree,
        rev: rev.map(str::to_string),
        source,
        config_path,
        dirs,
        plan,
        inputs,
        key,
    };
    miss::build(ctx, &cache, &request, opts, start)
}

/// The config to build: --config, or the one trim-config made for the arch and lane.
pub fn input_config(ctx: &Ctx, opts: &BuildRequest) -> Result<PathBuf> {
    let lane = opts.lane.unwrap_or(opts.arch.default_lane());
    let path = opts
        .config
        .clone()
        .unwrap_or_else(|| ctx.state.trimmed_config_for_lane(opts.arch, lane));
    if !path.is_file() {
        let mut options = String::new();
        if !opts.arch.is_host() {
            options += &format!(" --arch {}", opts.arch.name);
        }
        if lane != opts.arch.default_lane() {
            options += &format!(" --lane {}", lane.name());
        }
        bail!(
            "no kernel config at {}: run `cargo xtask trim-config{options}` or pass --config PATH",
            path.display()
        );
    }
    Ok(path)
}

/// The cache's answer for `key`, if it has one that can be used. A built entry is checked
/// against the sizes and digests recorded at publish first: a broken one (an image missing,
/// truncated or changed) is no answer, so it is rebuilt rather than booted; `say` prints why.
fn answer_from_cache(
    cache: &Cache,
    key: &str,
    opts: &BuildRequest,
    start: Instant,
    say: bool,
) -> Option<BuildOutcome> {
    let entry = cache.lookup(key)?;
    if let Err(why) = entry.verify() {
        if say {
            eprintln!(
                "the cache entry {} is broken ({why}): building it again",
                short(key)
            );
        }
        return None;
    }
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
            cached: true,
            config: failed_at_config(&entry.meta.commands),
        }),
    }
}

fn artifacts(entry: &Entry, cache_hit: bool, make_runs: u32, start: Instant) -> Artifacts {
    let present = |name: &str| Some(entry.path(name)).filter(|p| p.exists());
    Artifacts {
        key: entry.meta.key.clone(),
        dir: entry.dir.clone(),
        image: entry.path(entry.meta.image_name()),
        pvh_image: present(cache::PVH_IMAGE),
        initramfs: present(cache::INITRAMFS),
        config: entry.path(cache::CONFIG),
        commit: (!entry.meta.dirty).then(|| entry.meta.commit.clone()),
        cache_hit,
        duration: start.elapsed(),
        make_runs,
        modules: present(cache::MODULES),
        log: entry.path(cache::BUILD_LOG),
        ccache: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_at_olddefconfig_is_the_config_step() {
        let argv = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let config = argv(&["make", "-C", "/src", "O=/build", "-j2", "olddefconfig"]);
        let make = argv(&[
            "make", "-C", "/src", "O=/build", "-j2", "bzImage", "modules",
        ]);
        assert!(failed_at_config(std::slice::from_ref(&config)));
        assert!(!failed_at_config(&[config, make]));
        assert!(!failed_at_config(&[]));
    }
}
