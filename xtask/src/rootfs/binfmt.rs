//! binfmt_misc for a guest root of another architecture: whether the host runs that
//! architecture's binaries through qemu-user-static, and registering it when it does not.

use crate::arch::Arch;
use crate::cmd::CommandExt;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the kernel lists binfmt_misc's handlers.
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// qemu-user-static's handler name for `arch` (Debian's binfmt-support names).
fn handler(arch: &Arch) -> String {
    format!("qemu-{}", arch.uname)
}

/// What a handler's file says, when it can run binaries inside a container: enabled, and
/// with the `F` flag (the interpreter opened at registration, so a chroot or container
/// without it can still use it).
pub fn usable(entry: &str) -> std::result::Result<(), String> {
    if entry.lines().next() != Some("enabled") {
        return Err("registered but disabled".into());
    }
    let flags = entry
        .lines()
        .find_map(|l| l.strip_prefix("flags: "))
        .unwrap_or("");
    if !flags.contains('F') {
        return Err(format!(
            "registered without the F flag (flags: {flags:?}): the interpreter is not found inside the new root"
        ));
    }
    Ok(())
}

/// Whether binaries of `arch` run here now (through qemu-user-static), or why not.
pub fn status(arch: &Arch) -> std::result::Result<(), String> {
    let entry = Path::new(BINFMT_DIR).join(handler(arch));
    match std::fs::read_to_string(&entry) {
        Ok(text) => usable(&text),
        Err(_) if !Path::new(BINFMT_DIR).join("register").exists() => {
            Err(format!("binfmt_misc is not mounted at {BINFMT_DIR}"))
        }
        Err(_) => Err(format!("{} is not registered", handler(arch))),
    }
}

/// qemu-user-static's binary for `arch`, when installed.
pub fn qemu_user_installed(arch: &Arch) -> Option<PathBuf> {
    Some(qemu_user(arch)).filter(|p| p.exists())
}

/// Makes sure binaries of `arch` run here; registers qemu-user-static's handler (a
/// privileged, host-wide setting, said on stderr) when it is not. Fails with the fix.
pub fn ensure(arch: &Arch) -> Result<()> {
    if status(arch).is_ok() {
        return Ok(());
    }
    let entry = Path::new(BINFMT_DIR).join(handler(arch));
    let fix = format!(
        "apt-get install qemu-user-static binfmt-support, then `update-binfmts --enable {}`",
        handler(arch)
    );
    if qemu_user_installed(arch).is_none() {
        bail!(
            "an {} root runs its package scripts under qemu-user-static, which is not installed: {fix}",
            arch.name
        );
    }
    eprintln!(
        "registering {} with binfmt_misc, so that the {} root's package scripts run under \
         qemu-user-static: a host-wide setting, until the next reboot",
        handler(arch),
        arch.name
    );
    if !Path::new(BINFMT_DIR).join("register").exists() {
        // Without systemd nothing mounts it (proc-sys-fs-binfmt_misc.automount does).
        Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR])
            .run_logged()
            .with_context(|| format!("mounting binfmt_misc at {BINFMT_DIR}: {fix}"))?;
    }
    Command::new("update-binfmts")
        .args(["--enable", &handler(arch)])
        .run_logged()
        .with_context(|| format!("registering {}: {fix}", handler(arch)))?;
    let text = std::fs::read_to_string(&entry).unwrap_or_default();
    usable(&text).map_err(|why| anyhow::anyhow!("{} is {why}: {fix}", handler(arch)))
}

/// qemu-user-static's binary for `arch`.
fn qemu_user(arch: &Arch) -> PathBuf {
    PathBuf::from(format!("/usr/bin/qemu-{}-static", arch.uname))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registered_handler_must_be_enabled_with_f() {
        // /proc/sys/fs/binfmt_misc/qemu-aarch64 on this Debian 12 host after
        // `update-binfmts --enable qemu-aarch64`.
        let ok = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: PF\n\
                  offset 0\nmagic 7f454c460201010000000000000000000200b700\n";
        assert!(usable(ok).is_ok());
        assert!(usable(&ok.replace("enabled", "disabled")).is_err());
        let e = usable(&ok.replace("flags: PF", "flags: P")).unwrap_err();
        assert!(e.contains("F flag"), "{e}");
        assert_eq!(handler(&crate::arch::ARM64), "qemu-aarch64");
    }
}
