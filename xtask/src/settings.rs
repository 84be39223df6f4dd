//! Settings: command-line options over `xtask.toml` over defaults, resolved into plain values.

use crate::cli::{Accel, Backend, BuildArgs, InitMode, InitramfsMode, VmArgs};
use crate::units::{parse_duration, parse_size_mib};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The workspace root: where `xtask.toml` and the default state dir live.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ has a parent")
        .to_path_buf()
}

/// `xtask.toml`, every key optional. Unknown keys are an error that names them.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The kernel git tree, relative to the workspace root.
    pub tree: Option<PathBuf>,
    /// The state dir, relative to the workspace root.
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub vm: FileVm,
    #[serde(default)]
    pub build: FileBuild,
    #[serde(default)]
    pub trim: FileTrim,
    #[serde(default)]
    pub rootfs: FileRootfs,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileVm {
    pub memory: Option<String>,
    pub cpus: Option<u32>,
    pub accel: Option<Accel>,
    pub backend: Option<Backend>,
    pub connect: Option<String>,
    pub append: Option<String>,
    pub init: Option<InitMode>,
    pub timeout: Option<String>,
    pub boot_timeout: Option<String>,
    pub shutdown_timeout: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileBuild {
    pub config: Option<PathBuf>,
    pub jobs: Option<u32>,
    pub host: Option<bool>,
    pub ccache: Option<bool>,
    pub initramfs: Option<InitramfsMode>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileTrim {
    pub base: Option<String>,
    #[serde(default)]
    pub fragments: Vec<PathBuf>,
    #[serde(default)]
    pub set: Vec<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileRootfs {
    pub suite: Option<String>,
    pub mirror: Option<String>,
}

impl FileConfig {
    /// Reads `xtask.toml` ($XTASK_CONFIG, else the workspace root's); a missing file is empty.
    pub fn load() -> Result<FileConfig> {
        let path = match std::env::var_os("XTASK_CONFIG") {
            Some(p) => PathBuf::from(p),
            None => workspace_root().join("xtask.toml"),
        };
        if !path.exists() {
            return Ok(FileConfig::default());
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    pub fn parse(text: &str) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message().trim()))
    }
}

/// Resolves a path from xtask.toml: relative paths are relative to the workspace root.
fn from_workspace(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        workspace_root().join(p)
    }
}

/// Where the kernel tree is: --tree, then $KERNEL_TREE, then xtask.toml, then ./linux.
pub fn resolve_tree(cli: Option<&Path>, env: Option<PathBuf>, file: &FileConfig) -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(p) = cli {
        return cwd.join(p);
    }
    if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        return cwd.join(p);
    }
    if let Some(p) = &file.tree {
        return from_workspace(p);
    }
    workspace_root().join("linux")
}

/// The state dir: --state-dir, then xtask.toml, then `target/xtask` under the workspace root.
pub fn resolve_state_dir(cli: Option<&Path>, file: &FileConfig) -> PathBuf {
    if let Some(p) = cli {
        return std::env::current_dir().unwrap_or_default().join(p);
    }
    match &file.state_dir {
        Some(p) => from_workspace(p),
        None => workspace_root().join("target/xtask"),
    }
}

/// Everything a VM run needs to know, resolved and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct VmOptions {
    pub kernel: Option<PathBuf>,
    pub memory_mib: u64,
    pub cpus: u32,
    pub accel: Accel,
    pub backend: Backend,
    pub connect: String,
    pub append: Option<String>,
    pub rw: bool,
    pub init: InitMode,
    pub timeout: Duration,
    pub boot_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub keep: bool,
}

/// Default guest memory: enough for systemd and a test, small enough to boot fast.
pub const DEFAULT_MEMORY: &str = "1G";
/// Default vCPUs.
pub const DEFAULT_CPUS: u32 = 2;
/// Default time limit of the command run in the guest.
pub const DEFAULT_TIMEOUT: &str = "10m";
/// Default time limit of the shutdown before the VM is killed.
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "10s";
/// libvirt's system instance, where the qemu driver runs guests as a service.
pub const DEFAULT_CONNECT: &str = "qemu:///system";

/// Default boot limit until the agent answers: the fast init boots in ~2 s under TCG and
/// systemd in ~40 s (over 200 s on a loaded host), so each gets a generous multiple of that.
pub fn default_boot_timeout(init: InitMode) -> Duration {
    match init {
        InitMode::Fast => Duration::from_secs(60),
        InitMode::Systemd => Duration::from_secs(300),
    }
}

impl VmOptions {
    /// Merges options over xtask.toml over defaults; `default_init` differs between
    /// `boot` (systemd, for people) and `check` (fast, for verdicts).
    pub fn resolve(args: &VmArgs, file: &FileVm, default_init: InitMode) -> Result<VmOptions> {
        let memory = args
            .memory
            .clone()
            .or_else(|| file.memory.clone())
            .unwrap_or(DEFAULT_MEMORY.into());
        let memory_mib = parse_size_mib(&memory).context("--memory")?;
        if memory_mib < 128 {
            bail!("--memory {memory} is too small: a guest needs at least 128M");
        }
        let cpus = args.cpus.or(file.cpus).unwrap_or(DEFAULT_CPUS);
        if cpus == 0 || cpus > 64 {
            bail!("--cpus {cpus} is out of range: use 1 to 64");
        }
        let init = args.init.or(file.init).unwrap_or(default_init);
        let dur = |cli: &Option<String>,
                   file: &Option<String>,
                   name: &str,
                   default: Duration|
         -> Result<Duration> {
            match cli.as_ref().or(file.as_ref()) {
                Some(t) => parse_duration(t).with_context(|| format!("--{name}")),
                None => Ok(default),
            }
        };
        let kernel = match &args.kernel {
            Some(k) if !k.is_file() => bail!("--kernel {}: no such file", k.display()),
            Some(k) => Some(std::fs::canonicalize(k)?),
            None => None,
        };
        Ok(VmOptions {
            kernel,
            memory_mib,
            cpus,
            accel: args.accel.or(file.accel).unwrap_or(Accel::Auto),
            backend: args.backend.or(file.backend).unwrap_or(Backend::Qemu),
            connect: args
                .connect
                .clone()
                .or_else(|| file.connect.clone())
                .unwrap_or(DEFAULT_CONNECT.into()),
            append: args.append.clone().or_else(|| file.append.clone()),
            rw: args.rw,
            init,
            timeout: dur(
                &args.timeout,
                &file.timeout,
                "timeout",
                parse_duration(DEFAULT_TIMEOUT)?,
            )?,
            boot_timeout: dur(
                &args.boot_timeout,
                &file.boot_timeout,
                "boot-timeout",
                default_boot_timeout(init),
            )?,
            shutdown_timeout: dur(
                &args.shutdown_timeout,
                &file.shutdown_timeout,
                "shutdown-timeout",
                parse_duration(DEFAULT_SHUTDOWN_TIMEOUT)?,
            )?,
            keep: args.keep,
        })
    }
}

/// Build settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// The config to build; None means the trimmed config in the state dir.
    pub config: Option<PathBuf>,
    pub jobs: u32,
    pub host: bool,
    pub ccache: bool,
    pub initramfs: InitramfsMode,
    pub retry_failed: bool,
}

impl BuildOptions {
    pub fn resolve(args: &BuildArgs, file: &FileBuild) -> Result<BuildOptions> {
        let jobs = args.jobs.or(file.jobs).unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(1)
        });
        if jobs == 0 {
            bail!("--jobs 0 is invalid: use 1 or more");
        }
        let config = match (&args.config, &file.config) {
            (Some(c), _) => Some(std::env::current_dir()?.join(c)),
            (None, Some(c)) => Some(from_workspace(c)),
            (None, None) => None,
        };
        if let Some(c) = &config {
            if !c.is_file() {
                bail!(
                    "config {} does not exist: run `cargo xtask trim-config` or pass --config PATH",
                    c.display()
                );
            }
        }
        Ok(BuildOptions {
            config,
            jobs,
            host: args.host || file.host.unwrap_or(false),
            ccache: args.ccache || file.ccache.unwrap_or(false),
            initramfs: args
                .initramfs
                .or(file.initramfs)
                .unwrap_or(InitramfsMode::Auto),
            retry_failed: args.retry_failed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let e = FileConfig::parse("[vm]\nmemroy = \"1G\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("memroy"), "{e}");
    }

    #[test]
    fn options_override_file_and_file_overrides_defaults() {
        let file = FileConfig::parse("[vm]\nmemory = \"2G\"\ncpus = 4\n").unwrap();
        let args = VmArgs {
            cpus: Some(1),
            ..Default::default()
        };
        let o = VmOptions::resolve(&args, &file.vm, InitMode::Fast).unwrap();
        assert_eq!(o.memory_mib, 2048);
        assert_eq!(o.cpus, 1);
        assert_eq!(o.init, InitMode::Fast);
        assert_eq!(o.boot_timeout, Duration::from_secs(60));
        let o =
            VmOptions::resolve(&VmArgs::default(), &FileVm::default(), InitMode::Systemd).unwrap();
        assert_eq!(o.memory_mib, 1024);
        assert_eq!(o.cpus, DEFAULT_CPUS);
        assert_eq!(o.boot_timeout, Duration::from_secs(300));
    }

    #[test]
    fn bad_values_are_rejected() {
        let bad = |args: VmArgs| {
            VmOptions::resolve(&args, &FileVm::default(), InitMode::Fast)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(VmArgs {
            memory: Some("banana".into()),
            ..Default::default()
        })
        .contains("--memory"));
        assert!(bad(VmArgs {
            cpus: Some(0),
            ..Default::default()
        })
        .contains("--cpus 0"));
        assert!(bad(VmArgs {
            timeout: Some("soon".into()),
            ..Default::default()
        })
        .contains("--timeout"));
        let e = BuildOptions::resolve(
            &BuildArgs {
                jobs: Some(0),
                ..Default::default()
            },
            &FileBuild::default(),
        );
        assert!(e.unwrap_err().to_string().contains("--jobs"));
    }

    #[test]
    fn tree_precedence() {
        let file = FileConfig::parse("tree = \"/from/file\"").unwrap();
        assert_eq!(
            resolve_tree(Some(Path::new("/cli")), Some("/env".into()), &file),
            Path::new("/cli")
        );
        assert_eq!(
            resolve_tree(None, Some("/env".into()), &file),
            Path::new("/env")
        );
        assert_eq!(resolve_tree(None, None, &file), Path::new("/from/file"));
        assert_eq!(
            resolve_tree(None, None, &FileConfig::default()),
            workspace_root().join("linux")
        );
    }
}
