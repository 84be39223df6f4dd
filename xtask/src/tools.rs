//! The external tools the toolkit wraps: where to find each one and which Debian package
//! provides it. `XTASK_<TOOL>` (upper case, `-` as `_`) overrides the lookup.

use anyhow::{bail, Result};
use std::path::PathBuf;

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
};
pub const GIT: Tool = Tool {
    name: "git",
    package: "git",
    extra_dirs: &[],
    version_args: &["--version"],
    required: true,
    purpose: "kernel trees, worktrees, bisect",
};
pub const NSPAWN: Tool = Tool {
    name: "systemd-nspawn",
    package: "systemd-container",
    extra_dirs: &[],
    version_args: &["--version"],
    required: true,
    purpose: "the build container",
};
pub const MMDEBSTRAP: Tool = Tool {
    name: "mmdebstrap",
    package: "mmdebstrap",
    extra_dirs: &[],
    version_args: &["--version"],
    required: false,
    purpose: "building the rootfs (preferred)",
};
pub const DEBOOTSTRAP: Tool = Tool {
    name: "debootstrap",
    package: "debootstrap",
    extra_dirs: &["/usr/sbin", "/sbin"],
    version_args: &["--version"],
    required: false,
    purpose: "building the rootfs (fallback)",
};
pub const QEMU: Tool = Tool {
    name: "qemu-system-x86_64",
    package: "qemu-system-x86",
    extra_dirs: &[],
    version_args: &["--version"],
    required: true,
    purpose: "the VM",
};
pub const VIRTIOFSD: Tool = Tool {
    name: "virtiofsd",
    package: VIRTIOFSD_INSTALL,
    extra_dirs: &[
        "/usr/libexec",
        "/usr/lib/qemu",
        "/usr/local/libexec",
        "~/.cargo/bin",
    ],
    version_args: &["--version"],
    required: true,
    purpose: "sharing the rootfs with the guest",
};
pub const LIBVIRTD: Tool = Tool {
    name: "libvirtd",
    package: "libvirt-daemon-system",
    extra_dirs: &["/usr/sbin", "/sbin"],
    version_args: &["--version"],
    required: false,
    purpose: "the libvirt backend",
};
pub const VIRSH: Tool = Tool {
    name: "virsh",
    package: "libvirt-clients",
    extra_dirs: &[],
    version_args: &["--version"],
    required: false,
    purpose: "the libvirt backend (`virsh console`)",
};

/// Every tool `doctor` reports on, in order.
pub const ALL: &[Tool] = &[
    MAKE,
    GIT,
    NSPAWN,
    MMDEBSTRAP,
    DEBOOTSTRAP,
    QEMU,
    VIRTIOFSD,
    LIBVIRTD,
    VIRSH,
];

fn expand_home(dir: &str) -> PathBuf {
    match dir.strip_prefix("~/") {
        Some(rest) => {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(rest)
        }
        None => PathBuf::from(dir),
    }
}

/// The environment variable that overrides a tool's path: `XTASK_QEMU_SYSTEM_X86_64`.
pub fn override_var(tool: &Tool) -> String {
    format!("XTASK_{}", tool.name.to_ascii_uppercase().replace('-', "_"))
}

/// Finds a tool, or None.
pub fn locate(tool: &Tool) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(override_var(tool)) {
        return Some(PathBuf::from(p));
    }
    if let Ok(p) = which::which(tool.name) {
        return Some(p);
    }
    tool.extra_dirs
        .iter()
        .map(|d| expand_home(d).join(tool.name))
        .find(|p| p.is_file())
}

/// Finds a tool, or fails with the package to install.
pub fn find(tool: &Tool) -> Result<PathBuf> {
    match locate(tool) {
        Some(p) => Ok(p),
        None => bail!("{} not found: {}", tool.name, install_hint(tool)),
    }
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
}
