//! The toolchain identity in the cache key: which compiler and binutils build the kernel.

use crate::cmd::CommandExt;
use crate::state::StateDir;
use anyhow::{Context, Result};
use std::process::Command;

/// The rootfs's toolchain (its recipe digest and gcc, recorded when it was built), or the
/// host's with `--host`.
pub fn identity(state: &StateDir, host: bool) -> Result<String> {
    if host {
        return host_identity();
    }
    crate::rootfs::toolchain_identity(state)
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
