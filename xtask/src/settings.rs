//! Settings: `xtask.toml`, each option's default and bounds (the requests they resolve into
//! are the VM's, [`crate::vm::VmRequest`], and the build's, [`crate::build::BuildRequest`]).

use crate::options::AccelAsked;
use crate::options::InitramfsMode;
use crate::options::{Backend, InitMode};
use crate::units::{Bound, Count, Size, Span};
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
    pub accel: Option<AccelAsked>,
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
pub fn from_workspace(p: &Path) -> PathBuf {
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
pub const MIN_TIMEOUT: Bound<'static, Duration> = (Duration::from_millis(1), "1ms");
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
pub fn given<'a, T>(
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

/// The most parallel make jobs: far past any machine's CPUs, short of make's own limits.
pub const MAX_JOBS: Bound<'static, u64> = (1024, "1024");

/// A cold build of a large config takes an hour or two on two cores; three hours is a hang.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(3 * 3600);

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
