//! The external tools the toolkit wraps: where to find each one, whether a found binary is
//! one the toolkit can speak to, and which package provides it. `XTASK_<TOOL>` (upper case,
//! `-` as `_`) overrides the lookup.

use crate::cmd::CommandExt;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Asks a found binary whether the toolkit can use it; `Err` says why not.
pub type Acceptance = fn(&Path) -> Result<(), String>;

/// One external tool.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The program's name.
    pub name: &'static str,
    /// What to install when it is missing.
    pub package: &'static str,
    /// Places to look besides PATH.
    pub extra_dirs: &'static [&'static str],
    /// Arguments that print its version.
    pub version_args: &'static [&'static str],
    /// Whether the toolkit can work without it (optional tools only limit some features).
    pub required: bool,
    /// What it is for, shown by `doctor`.
    pub purpose: &'static str,
    /// The check a found binary must pass; None: any binary of that name will do.
    pub accept: Option<Acceptance>,
}

/// How Debian 12 gets virtiofsd: bookworm has no package for it, so it comes from crates.io.
pub const VIRTIOFSD_INSTALL: &str = "cargo install virtiofsd --locked (needs libseccomp-dev libcap-ng-dev; `cargo xtask deps --install` does it)";

pub const MAKE: Tool = Tool {
    name: "make",
    package: "make",
    extra_dirs: &[],
    version_args: &["--version"],
    required: true,
    purpose: "kernel builds (--host)",
    accept: None,
};
pub const GIT: Tool = Tool {
    name: "git",
    package: "git",
    extra_dirs: &[],
    version_args: &["--version"],
    required: true,
    purpose: "kernel trees, worktrees, bisect",
    accept: None,
};
pub const NSPAWN: Tool = Tool {
    name: "systemd-nspawn",
    package: "systemd-container",
    extra_dirs: &[],
    version_args: &["--version"],
    required: true,
    purpose: "the build container",
    accept: None,
};
pub const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
    extra_dirs: &[],
    version_args: &["--version"],
    required: false,
    purpose: "building the rootfs (preferred)",
    accept: None,
};
pub const DEBOOTSTRAP: Tool = Tool {
    name: "debootstrap",
    package: "debootstrap",
    extra_dirs: &["/usr/sbin", "/sbin"],
    version_args: &["--version"],
    required: false,
    purpose: "building the rootfs (fallback)",
    accept: None,
};
/// QEMU for guests of `arch`.
pub const fn qemu(arch: &'static crate::arch::Arch) -> Tool {
    Tool {
        name: arch.qemu,
        package: arch.qemu_package,
        extra_dirs: &[],
        version_args: &["--version"],
        required: true,
        purpose: "the VM",
        accept: None,
    }
}
/// QEMU for guests of the host's architecture (and the KVM probe).
pub const QEMU: Tool = qemu(crate::arch::HOST);
/// QEMU for arm64 guests (`--arch arm64`): only those need it.
pub const QEMU_ARM64: Tool = Tool {
    required: false,
    purpose: "arm64 guests (--arch arm64)",
    ..qemu(&crate::arch::ARM64)
};
pub const VIRTIOFSD: Tool = Tool {
    name: "virtiofsd",
    package: VIRTIOFSD_INSTALL,
    extra_dirs: &[
        "/usr/libexec",
        "/usr/lib/qemu",
        "/usr/local/libexec",
        "$CARGO_HOME/bin",
    ],
    version_args: &["--version"],
    required: true,
    purpose: "sharing the rootfs with the guest",
    accept: Some(accept_virtiofsd),
};
pub const LIBVIRTD: Tool = Tool {
    name: "libvirtd",
    package: "libvirt-daemon-system",
    extra_dirs: &["/usr/sbin", "/sbin"],
    version_args: &["--version"],
    required: false,
    purpose: "the libvirt backend",
    accept: None,
};
pub const VIRSH: Tool = Tool {
    name: "virsh",
    package: "libvirt-clients",
    extra_dirs: &[],
    version_args: &["--version"],
    required: false,
    purpose: "the libvirt backend (`virsh console`)",
    accept: None,
};

/// Every tool `doctor` reports on, in order.
pub const ALL: &[Tool] = &[
    MAKE,
    GIT,
    NSPAWN,
    MMDEBSTRAP,
    DEBOOTSTRAP,
    QEMU,
    QEMU_ARM64,
    VIRTIOFSD,
    LIBVIRTD,
    VIRSH,
];

/// A dir of `extra_dirs` as a path: `$CARGO_HOME` (default `~/.cargo`, where `cargo install`
/// puts binaries) and `~` expanded.
fn expand_dir(dir: &str) -> PathBuf {
    let home = || PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()));
    if let Some(rest) = dir.strip_prefix("$CARGO_HOME/") {
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cargo"));
        return cargo_home.join(rest);
    }
    match dir.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(dir),
    }
}

/// The environment variable that overrides a tool's path: `XTASK_QEMU_SYSTEM_X86_64`.
pub fn override_var(tool: &Tool) -> String {
    format!("XTASK_{}", tool.name.to_ascii_uppercase().replace('-', "_"))
}

/// A binary that has the tool's name but that the toolkit cannot use, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub path: PathBuf,
    pub reason: String,
}

/// What a search for a tool found: the first usable binary, and those passed over on the way.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub usable: Option<PathBuf>,
    pub rejected: Vec<Rejected>,
}

/// The places a tool may be, in order: only the override when it is set, else every match
/// on PATH and then the tool's extra dirs, each once.
fn candidates(tool: &Tool) -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os(override_var(tool)) {
        return vec![PathBuf::from(p)];
    }
    let on_path = which::which_all(tool.name).into_iter().flatten();
    let extra = tool
        .extra_dirs
        .iter()
        .map(|d| expand_dir(d).join(tool.name))
        .filter(|p| p.is_file());
    let mut seen = Vec::new();
    for p in on_path.chain(extra) {
        let id = std::fs::canonicalize(&p).unwrap_or_else(|_| p.clone());
        if !seen.iter().any(|(_, s)| *s == id) {
            seen.push((p, id));
        }
    }
    seen.into_iter().map(|(p, _)| p).collect()
}

/// Looks for a tool: the first candidate that the tool accepts, and the ones it did not.
pub fn search(tool: &Tool) -> Search {
    let mut found = Search::default();
    for path in candidates(tool) {
        match tool.accept.map_or(Ok(()), |accept| accept(&path)) {
            Ok(()) => {
                found.usable = Some(path);
                break;
            }
            Err(reason) => found.rejected.push(Rejected { path, reason }),
        }
    }
    found
}

/// Finds a usable tool, or None.
pub fn locate(tool: &Tool) -> Option<PathBuf> {
    search(tool).usable
}

/// Finds a usable tool, or fails naming the binaries passed over and what to install.
pub fn find(tool: &Tool) -> Result<PathBuf> {
    let found = search(tool);
    match (found.usable, found.rejected.first()) {
        (Some(p), _) => Ok(p),
        (None, Some(r)) => bail!(
            "{} at {} cannot be used: {}; {}",
            tool.name,
            r.path.display(),
            r.reason,
            install_hint(tool)
        ),
        (None, None) => bail!("{} not found: {}", tool.name, install_hint(tool)),
    }
}

/// How long a tool gets to print its help when asked what it is.
const HELP_DEADLINE: Duration = Duration::from_secs(10);

/// Accepts only the Rust virtiofsd, asked through its `--help`: QEMU 7.2's legacy C one (in
/// Debian 12's qemu-system-common) takes `-o source=` and fails on the options we pass.
fn accept_virtiofsd(bin: &Path) -> Result<(), String> {
    let out = Command::new(bin)
        .arg("--help")
        .output_within(HELP_DEADLINE)
        .map_err(|e| format!("asking it for --help failed ({e:#})"))?;
    let help = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    virtiofsd_from_help(&help)
}

/// Judges a virtiofsd by its help text: the Rust one lists `--shared-dir`, and `--readonly`
/// since the versions that have it (we pass it for every read-only share).
pub fn virtiofsd_from_help(help: &str) -> Result<(), String> {
    if help.contains("-o source=") {
        return Err(
            "it is QEMU's legacy C virtiofsd (it takes `-o source=`, not the Rust virtiofsd's `--shared-dir`)"
                .into(),
        );
    }
    if !help.contains("--shared-dir") {
        return Err("its --help lists no --shared-dir, so it is not the Rust virtiofsd".into());
    }
    if !help.contains("--readonly") {
        return Err("this Rust virtiofsd is too old to have --readonly".into());
    }
    Ok(())
}

/// How to get a missing tool.
pub fn install_hint(tool: &Tool) -> String {
    if tool.package.starts_with("cargo ") || tool.package.contains(' ') {
        tool.package.to_string()
    } else {
        format!("apt-get install {}", tool.package)
    }
}

/// The rootfs is built with mmdebstrap when present, else debootstrap.
pub fn bootstrapper() -> Result<(Tool, PathBuf)> {
    if let Some(p) = locate(&MMDEBSTRAP) {
        return Ok((MMDEBSTRAP, p));
    }
    if let Some(p) = locate(&DEBOOTSTRAP) {
        return Ok((DEBOOTSTRAP, p));
    }
    bail!("neither mmdebstrap nor debootstrap found: apt-get install mmdebstrap")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tool_names_its_package() {
        let t = Tool {
            name: "surely-not-a-real-tool",
            package: "some-pkg",
            extra_dirs: &[],
            version_args: &[],
            required: true,
            purpose: "",
            accept: None,
        };
        let e = find(&t).unwrap_err().to_string();
        assert_eq!(
            e,
            "surely-not-a-real-tool not found: apt-get install some-pkg"
        );
    }

    #[test]
    fn override_variable_name() {
        assert_eq!(override_var(&QEMU), "XTASK_QEMU_SYSTEM_X86_64");
    }

    fn help(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/test_data/virtiofsd")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn legacy_virtiofsd_is_named_and_refused() {
        let e = virtiofsd_from_help(&help("legacy_qemu_7.2_help.txt")).unwrap_err();
        assert!(e.contains("legacy C virtiofsd"), "{e}");
    }

    #[test]
    fn rust_virtiofsd_is_accepted() {
        assert_eq!(virtiofsd_from_help(&help("rust_1.14_help.txt")), Ok(()));
    }

    #[test]
    fn something_else_called_virtiofsd_is_refused() {
        assert!(virtiofsd_from_help("usage: virtiofsd [FILE]").is_err());
        let old_rust = help("rust_1.14_help.txt").replace("--readonly", "--other");
        assert!(virtiofsd_from_help(&old_rust)
            .unwrap_err()
            .contains("too old"));
    }

    #[test]
    fn a_rejected_candidate_is_named_with_its_reason() {
        fn refuse(_: &Path) -> Result<(), String> {
            Err("a stand-in".into())
        }
        let t = Tool {
            name: "sh",
            package: "dash",
            extra_dirs: &[],
            version_args: &[],
            required: true,
            purpose: "",
            accept: Some(refuse),
        };
        let found = search(&t);
        assert!(found.usable.is_none());
        assert!(!found.rejected.is_empty());
        let e = find(&t).unwrap_err().to_string();
        assert!(
            e.contains("cannot be used: a stand-in; apt-get install dash"),
            "{e}"
        );
    }
}
