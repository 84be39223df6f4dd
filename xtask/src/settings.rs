//! Settings: command-line options over `xtask.toml` over defaults, resolved into plain values.

use crate::cli::{Accel, Backend, BuildArgs, InitMode, InitramfsMode, VmArgs};
use crate::units::{human_bytes, Bound, Count, Size, Span};
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
    pub memory: Option<Size>,
    pub cpus: Option<Count>,
    pub accel: Option<Accel>,
    pub backend: Option<Backend>,
    pub connect: Option<String>,
    pub append: Option<String>,
    pub init: Option<InitMode>,
    pub timeout: Option<Span>,
    pub boot_timeout: Option<Span>,
    pub shutdown_timeout: Option<Span>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct FileBuild {
    pub config: Option<PathBuf>,
    pub jobs: Option<Count>,
    pub host: Option<bool>,
    pub ccache: Option<bool>,
    pub initramfs: Option<InitramfsMode>,
    pub build_timeout: Option<Span>,
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

    /// Parses the file; an error is one line naming the line of the file and what it holds.
    pub fn parse(text: &str) -> Result<FileConfig> {
        toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(span) => {
                    let line_no = text.get(..span.start).unwrap_or(text).matches('\n').count() + 1;
                    let line = text.lines().nth(line_no - 1).unwrap_or_default().trim();
                    anyhow::anyhow!("line {line_no} ({line}): {msg}")
                }
                None => anyhow::anyhow!("{msg}"),
            }
        })
    }
}

/// A path the toolkit passes on as text (QEMU's and systemd-nspawn's arguments, make's `O=`)
/// must be UTF-8; `what` names where it came from.
pub fn require_utf8(path: &Path, what: &str) -> Result<()> {
    if path.to_str().is_none() {
        bail!(
            "{what} {:?} is not UTF-8: QEMU, make and systemd-nspawn take it as text; \
             use a path that is UTF-8",
            path.to_string_lossy()
        );
    }
    Ok(())
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
    /// `--rw`: the layer that keeps the guest's writes; None: read-only, nothing kept.
    pub layer: Option<String>,
    /// `--share DIR`, absolute.
    pub share: Option<PathBuf>,
    pub init: InitMode,
    pub timeout: Duration,
    pub boot_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub keep: bool,
}

/// Default guest memory: enough for systemd and a test, small enough to boot fast.
pub const DEFAULT_MEMORY_MIB: u64 = 1024;
/// The least guest memory: the kernel, the fast init and a small test fit in it.
pub const MIN_MEMORY_MIB: u64 = 128;
/// Default vCPUs (fewer when the host has fewer).
pub const DEFAULT_CPUS: u32 = 2;
/// Default time limit of the command run in the guest.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time limit of the shutdown before the VM is killed.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest time limit of any VM phase: longer than any real test, short of forever.
pub const MAX_TIMEOUT: Bound<'static, Duration> = (Duration::from_secs(7 * 86400), "7d");
/// The shortest: a limit of zero could never be met.
const MIN_TIMEOUT: Bound<'static, Duration> = (Duration::from_millis(1), "1ms");
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

/// What this host can give a guest: the upper bounds of `--memory` and `--cpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    /// MemTotal, in bytes.
    pub mem_bytes: u64,
    /// Online CPUs: more vCPUs than that only slow every one down (and KVM's guests hang).
    pub cpus: u64,
}

impl Host {
    /// Asks /proc/meminfo and sysconf; what cannot be read does not limit.
    pub fn probe() -> Host {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Host {
            mem_bytes: mem_total_bytes(&meminfo).unwrap_or(u64::MAX),
            cpus: u64::try_from(cpus)
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or(u64::MAX),
        }
    }
}

/// MemTotal from /proc/meminfo's text (`MemTotal:   16331040 kB`).
fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The value from the command line, else from xtask.toml, with the name an error blames:
/// `--boot-timeout`, or `vm.boot_timeout in xtask.toml`.
fn given<'a, T>(
    cli: &'a Option<T>,
    file: &'a Option<T>,
    section: &str,
    option: &str,
) -> Option<(&'a T, String)> {
    match (cli, file) {
        (Some(v), _) => Some((v, format!("--{option}"))),
        (None, Some(v)) => Some((
            v,
            format!("{section}.{} in xtask.toml", option.replace('-', "_")),
        )),
        (None, None) => None,
    }
}

impl VmOptions {
    /// Merges options over xtask.toml over defaults, checked against this host; see
    /// [`VmOptions::resolve_for`].
    pub fn resolve(args: &VmArgs, file: &FileVm, default_init: InitMode) -> Result<VmOptions> {
        Self::resolve_for(args, file, default_init, &Host::probe())
    }

    /// Merges options over xtask.toml over defaults; `default_init` differs between
    /// `boot` (systemd, for people) and `check` (fast, for verdicts). Every value is checked
    /// against its bounds (the host's RAM and CPUs, [`MAX_TIMEOUT`]).
    pub fn resolve_for(
        args: &VmArgs,
        file: &FileVm,
        default_init: InitMode,
        host: &Host,
    ) -> Result<VmOptions> {
        let ram = format!("{} (this host's RAM)", human_bytes(host.mem_bytes));
        let memory_mib = match given(&args.memory, &file.memory, "vm", "memory") {
            Some((size, name)) => {
                let min = (MIN_MEMORY_MIB << 20, "128M (what a guest needs)");
                size.bytes_within(&name, min, (host.mem_bytes, &ram))? >> 20
            }
            None => DEFAULT_MEMORY_MIB,
        };
        let cpus = match given(&args.cpus, &file.cpus, "vm", "cpus") {
            Some((n, name)) => {
                let max = format!("{} (this host's CPUs)", host.cpus);
                let n = n.within(&name, (1, "1"), (host.cpus.min(u32::MAX.into()), &max))?;
                u32::try_from(n)?
            }
            None => DEFAULT_CPUS.min(u32::try_from(host.cpus).unwrap_or(u32::MAX)),
        };
        let init = args.init.or(file.init).unwrap_or(default_init);
        let dur =
            |cli: &Option<Span>, file: &Option<Span>, option: &str, default: Duration| match given(
                cli, file, "vm", option,
            ) {
                Some((span, name)) => span.within(&name, MIN_TIMEOUT, MAX_TIMEOUT),
                None => Ok(default),
            };
        let kernel = match &args.kernel {
            Some(k) if !k.is_file() => bail!("--kernel {}: no such file", k.display()),
            Some(k) => {
                let k = std::fs::canonicalize(k)?;
                require_utf8(&k, "--kernel")?;
                Some(k)
            }
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
            share: match &args.share {
                Some(d) if !d.is_dir() => bail!("--share {}: no such directory", d.display()),
                Some(d) => {
                    let d = std::fs::canonicalize(d)?;
                    require_utf8(&d, "--share")?;
                    Some(d)
                }
                None => None,
            },
            layer: match (args.rw, &args.layer) {
                (false, _) => None,
                (true, Some(name)) => Some(crate::layer::checked_name(name)?.to_string()),
                (true, None) => Some(crate::layer::DEFAULT.to_string()),
            },
            init,
            timeout: dur(&args.timeout, &file.timeout, "timeout", DEFAULT_TIMEOUT)?,
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
                DEFAULT_SHUTDOWN_TIMEOUT,
            )?,
            keep: args.keep,
        })
    }
}

/// The most parallel make jobs: far past any machine's CPUs, short of make's own limits.
pub const MAX_JOBS: Bound<'static, u64> = (1024, "1024");

/// Build settings, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildOptions {
    /// The kernel's architecture; default: the host's.
    pub arch: &'static crate::arch::Arch,
    /// The config to build; None means the arch's trimmed config in the state dir.
    pub config: Option<PathBuf>,
    pub jobs: u32,
    pub host: bool,
    pub ccache: bool,
    pub initramfs: InitramfsMode,
    pub retry_failed: bool,
    /// How long one make run of the build may take before it is ended (a setup fault).
    pub timeout: Duration,
}

/// A cold build of a large config takes an hour or two on two cores; three hours is a hang.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

impl BuildOptions {
    pub fn resolve(args: &BuildArgs, file: &FileBuild) -> Result<BuildOptions> {
        let jobs = match given(&args.jobs, &file.jobs, "build", "jobs") {
            Some((n, name)) => u32::try_from(n.within(&name, (1, "1"), MAX_JOBS)?)?,
            None => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        };
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
            arch: args.arch.unwrap_or(crate::arch::HOST),
            config,
            jobs,
            host: args.host || file.host.unwrap_or(false),
            ccache: args.ccache || file.ccache.unwrap_or(false),
            initramfs: args
                .initramfs
                .or(file.initramfs)
                .unwrap_or(InitramfsMode::Auto),
            retry_failed: args.retry_failed,
            timeout: match given(
                &args.build_timeout,
                &file.build_timeout,
                "build",
                "build-timeout",
            ) {
                Some((span, name)) => span.within(&name, MIN_TIMEOUT, MAX_TIMEOUT)?,
                None => DEFAULT_BUILD_TIMEOUT,
            },
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

    /// A host with 4 GiB and 4 CPUs.
    const HOST: Host = Host {
        mem_bytes: 4 << 30,
        cpus: 4,
    };

    fn resolve(args: &VmArgs, file: &FileVm) -> Result<VmOptions> {
        VmOptions::resolve_for(args, file, InitMode::Fast, &HOST)
    }

    fn cli(line: &[&str]) -> VmArgs {
        use clap::Parser;
        let argv = ["x", "check"].iter().chain(line);
        match crate::cli::Cli::try_parse_from(argv).unwrap().command {
            crate::cli::Command::Check(c) => c.vm,
            _ => unreachable!(),
        }
    }

    #[test]
    fn options_override_file_and_file_overrides_defaults() {
        let file = FileConfig::parse("[vm]\nmemory = \"2G\"\ncpus = 4\n").unwrap();
        let o = resolve(&cli(&["--cpus", "1"]), &file.vm).unwrap();
        assert_eq!(o.memory_mib, 2048);
        assert_eq!(o.cpus, 1);
        assert_eq!(o.init, InitMode::Fast);
        assert_eq!(o.boot_timeout, Duration::from_secs(60));
        let o = VmOptions::resolve_for(
            &VmArgs::default(),
            &FileVm::default(),
            InitMode::Systemd,
            &HOST,
        )
        .unwrap();
        assert_eq!(o.memory_mib, 1024);
        assert_eq!(o.cpus, DEFAULT_CPUS);
        assert_eq!(o.boot_timeout, Duration::from_secs(300));
        assert_eq!(o.timeout, Duration::from_secs(600));
        // A host with one CPU gets one by default.
        let one = Host { cpus: 1, ..HOST };
        let o =
            VmOptions::resolve_for(&VmArgs::default(), &FileVm::default(), InitMode::Fast, &one);
        assert_eq!(o.unwrap().cpus, 1);
    }

    #[test]
    fn values_out_of_range_name_the_option_and_the_limit() {
        let bad = |line: &[&str]| {
            resolve(&cli(line), &FileVm::default())
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(&["--memory", "99999G"]),
            "--memory 99999G is out of range: at most 4.0 GiB (this host's RAM)"
        );
        assert_eq!(
            bad(&["--memory", "99999999999999T"]),
            "--memory 99999999999999T is out of range: at most 4.0 GiB (this host's RAM)"
        );
        assert_eq!(
            bad(&["--memory", "64M"]),
            "--memory 64M is out of range: at least 128M (what a guest needs)"
        );
        assert_eq!(
            bad(&["--cpus", "5"]),
            "--cpus 5 is out of range: at most 4 (this host's CPUs)"
        );
        assert_eq!(
            bad(&["--cpus", "0"]),
            "--cpus 0 is out of range: at least 1"
        );
        assert_eq!(
            bad(&["--timeout", "99999999999999999999"]),
            "--timeout 99999999999999999999 is out of range: at most 7d"
        );
        assert_eq!(
            bad(&["--boot-timeout", "8d"]),
            "--boot-timeout 8d is out of range: at most 7d"
        );
        assert_eq!(
            bad(&["--shutdown-timeout", "0"]),
            "--shutdown-timeout 0 is out of range: at least 1ms"
        );
        // The edges themselves are in range.
        let o = resolve(
            &cli(&["--memory", "4G", "--cpus", "4", "--timeout", "7d"]),
            &FileVm::default(),
        )
        .unwrap();
        assert_eq!((o.memory_mib, o.cpus, o.timeout), (4096, 4, MAX_TIMEOUT.0));
        assert!(resolve(&cli(&["--memory", "128M"]), &FileVm::default()).is_ok());
    }

    #[test]
    fn xtask_toml_values_get_the_same_checks() {
        let file = |text: &str| FileConfig::parse(text).unwrap();
        let e = resolve(&VmArgs::default(), &file("[vm]\nmemory = \"99999G\"\n").vm);
        assert_eq!(
            e.unwrap_err().to_string(),
            "vm.memory in xtask.toml 99999G is out of range: at most 4.0 GiB (this host's RAM)"
        );
        let e = resolve(
            &VmArgs::default(),
            &file("[vm]\nboot_timeout = \"9999d\"\n").vm,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "vm.boot_timeout in xtask.toml 9999d is out of range: at most 7d"
        );
        let e = BuildOptions::resolve(&BuildArgs::default(), &file("[build]\njobs = 0\n").build);
        assert_eq!(
            e.unwrap_err().to_string(),
            "build.jobs in xtask.toml 0 is out of range: at least 1"
        );
        // Malformed values are named with their line.
        for (text, want) in [
            (
                "[vm]\nmemory = \"banana\"\n",
                "line 2 (memory = \"banana\"): invalid size",
            ),
            (
                "[vm]\ntimeout = \"soon\"\n",
                "line 2 (timeout = \"soon\"): invalid duration",
            ),
            ("[vm]\ncpus = -1\n", "line 2 (cpus = -1): invalid value"),
        ] {
            let e = FileConfig::parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn jobs_are_bounded() {
        let jobs = |n: u64| {
            let args = BuildArgs {
                jobs: Some(n.into()),
                ..Default::default()
            };
            BuildOptions::resolve(&args, &FileBuild::default()).map(|o| o.jobs)
        };
        assert_eq!(jobs(1024).unwrap(), 1024);
        assert_eq!(
            jobs(1025).unwrap_err().to_string(),
            "--jobs 1025 is out of range: at most 1024"
        );
        assert_eq!(
            jobs(0).unwrap_err().to_string(),
            "--jobs 0 is out of range: at least 1"
        );
    }

    #[test]
    fn host_ram_from_meminfo() {
        let text = "MemTotal:       16331040 kB\nMemFree:         1000 kB\n";
        assert_eq!(mem_total_bytes(text), Some(16331040 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: 99999999999999999999 kB\n"), None);
        let h = Host::probe();
        assert!(h.cpus >= 1 && h.mem_bytes > 0);
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
