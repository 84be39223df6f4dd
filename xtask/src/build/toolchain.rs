//! The toolchain identity in the cache key: which compiler and binutils build the kernel.

use crate::cmd::CommandExt;
use crate::state::StateDir;
use anyhow::{Context, Result};
use std::process::Command;

/// The rootfs's toolchain, or the host's with `--host`.
pub fn identity(state: &StateDir, host: bool) -> Result<String> {
    if host {
        return host_identity();
    }
    match crate::rootfs::toolchain_identity(state) {
        Ok(id) => Ok(id),
        // TODO(rootfs): drop this fallback once `rootfs::toolchain_identity` lands: it reads
        // the versions of the rootfs's toolchain packages straight from its dpkg database.
        Err(_) => rootfs_packages(state),
    }
}

fn rootfs_packages(state: &StateDir) -> Result<String> {
    let status = state.rootfs().join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status).with_context(|| {
        format!(
            "no rootfs at {}: run `cargo xtask setup-rootfs` (or pass --host)",
            state.rootfs().display()
        )
    })?;
    Ok(format!("rootfs: {}", package_versions(&text).join(", ")))
}

/// `name version` of the toolchain packages in a dpkg status file, sorted.
fn package_versions(status: &str) -> Vec<String> {
    let is_toolchain = |name: &str| {
        matches!(name, "binutils" | "make" | "libc6-dev" | "flex" | "bison")
            || name
                .strip_prefix("gcc-")
                .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
    };
    let mut out: Vec<String> = status
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |f: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
            };
            let name = field("Package:")?;
            let installed = field("Status:").is_some_and(|s| s.ends_with(" installed"));
            let version = field("Version:")?;
            (installed && is_toolchain(&name)).then(|| format!("{name} {version}"))
        })
        .collect();
    out.sort();
    out
}

/// The first line of `gcc --version` and `ld --version` on the host.
fn host_identity() -> Result<String> {
    let first = |tool: &str| -> Result<String> {
        let out = Command::new(tool)
            .arg("--version")
            .read_logged()
            .with_context(|| format!("--host needs {tool}: apt-get install build-essential"))?;
        Ok(out.lines().next().unwrap_or_default().to_string())
    };
    Ok(format!("host: {}; {}", first("gcc")?, first("ld")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toolchain_packages_from_dpkg_status() {
        let status = "Package: gcc-12\nStatus: install ok installed\nVersion: 12.2.0-14\n\n\
                      Package: gcc-12-base\nStatus: install ok installed\nVersion: 12.2.0-14\n\n\
                      Package: binutils\nStatus: install ok installed\nVersion: 2.40-2\n\n\
                      Package: make\nStatus: deinstall ok config-files\nVersion: 4.3\n\n\
                      Package: vim\nStatus: install ok installed\nVersion: 9\n";
        assert_eq!(
            package_versions(status),
            ["binutils 2.40-2", "gcc-12 12.2.0-14"]
        );
    }
}
