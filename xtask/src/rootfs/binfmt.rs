//! binfmt_misc for a guest root of another architecture: whether the host runs that
//! architecture's binaries through qemu-user-static, and registering it when it does not.
//! What the host has (binfmt_misc's directory, its entries, qemu-user-static) is read once
//! into [`Facts`]; what to do is decided from them in pure code ([`plan`]).

use crate::arch::Arch;
use crate::cmd::CommandExt;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the kernel lists binfmt_misc's handlers, unless `XTASK_BINFMT_MISC` names another
/// directory (the tests point it at one of their own).
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";

/// The environment variable that overrides [`BINFMT_DIR`].
pub const BINFMT_DIR_VAR: &str = "XTASK_BINFMT_MISC";

/// binfmt_misc's directory: `XTASK_BINFMT_MISC`, else [`BINFMT_DIR`].
pub fn dir_from_env() -> PathBuf {
    std::env::var_os(BINFMT_DIR_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BINFMT_DIR))
}

/// qemu-user-static's handler name for `arch` (Debian's binfmt-support names).
fn handler(arch: &Arch) -> String {
    format!("qemu-{}", arch.uname)
}

/// qemu-user-static's binary for `arch`, on the search path, when installed.
pub fn qemu_user_installed(arch: &Arch) -> Option<PathBuf> {
    which::which(format!("qemu-{}-static", arch.uname)).ok()
}

/// What this host has, for one architecture.
#[derive(Debug, Clone, PartialEq)]
pub struct Facts {
    /// binfmt_misc's directory.
    pub dir: PathBuf,
    /// Whether binfmt_misc is mounted there (its `register` file exists).
    pub mounted: bool,
    /// The handler's file, when registered.
    pub entry: Option<String>,
    /// qemu-user-static's binary for the architecture, when installed.
    pub qemu_user: Option<PathBuf>,
}

impl Facts {
    /// Reads them for `arch` from `dir`.
    pub fn read(arch: &Arch, dir: &Path) -> Facts {
        Facts {
            dir: dir.to_path_buf(),
            mounted: dir.join("register").exists(),
            entry: std::fs::read_to_string(dir.join(handler(arch))).ok(),
            qemu_user: qemu_user_installed(arch),
        }
    }
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
pub fn status(arch: &Arch, f: &Facts) -> std::result::Result<(), String> {
    match &f.entry {
        Some(text) => usable(text),
        None if !f.mounted => Err(format!("binfmt_misc is not mounted at {}", f.dir.display())),
        None => Err(format!("{} is not registered", handler(arch))),
    }
}

/// What [`ensure`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The handler is there and usable: nothing.
    Nothing,
    /// Register the handler with `update-binfmts --enable`, mounting binfmt_misc first when
    /// nothing has (without systemd nothing does: proc-sys-fs-binfmt_misc.automount would).
    Register { mount: bool },
}

/// The fix every failure names.
fn fix(arch: &Arch) -> String {
    format!(
        "apt-get install qemu-user-static binfmt-support, then `update-binfmts --enable {}`",
        handler(arch)
    )
}

/// What to do for `arch` on a host with these facts; an error when it cannot be done.
pub fn plan(arch: &Arch, f: &Facts) -> Result<Plan> {
    if status(arch, f).is_ok() {
        return Ok(Plan::Nothing);
    }
    if f.qemu_user.is_none() {
        bail!(
            "an {} root runs its package scripts under qemu-user-static, which is not installed: {}",
            arch.name,
            fix(arch)
        );
    }
    Ok(Plan::Register { mount: !f.mounted })
}

/// Makes sure binaries of `arch` run here, with binfmt_misc at `dir`; registers
/// qemu-user-static's handler (a privileged, host-wide setting, said on stderr) when it is
/// not. Fails with the fix.
pub fn ensure(arch: &Arch, dir: &Path) -> Result<()> {
    let mount = match plan(arch, &Facts::read(arch, dir))? {
        Plan::Nothing => return Ok(()),
        Plan::Register { mount } => mount,
    };
    eprintln!(
        "registering {} with binfmt_misc, so that the {} root's package scripts run under \
         qemu-user-static: a host-wide setting, until the next reboot",
        handler(arch),
        arch.name
    );
    if mount {
        Command::new("mount")
            .args(["-t", "binfmt_misc", "binfmt_misc"])
            .arg(dir)
            .run_logged()
            .with_context(|| format!("mounting binfmt_misc at {}: {}", dir.display(), fix(arch)))?;
    }
    Command::new("update-binfmts")
        .args(["--enable", &handler(arch)])
        .run_logged()
        .with_context(|| format!("registering {}: {}", handler(arch), fix(arch)))?;
    let after = Facts::read(arch, dir);
    status(arch, &after).map_err(|why| anyhow::anyhow!("{}: {why}: {}", handler(arch), fix(arch)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::ARM64;

    /// /proc/sys/fs/binfmt_misc/qemu-aarch64 on this Debian 12 host after
    /// `update-binfmts --enable qemu-aarch64`.
    const REGISTERED: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
                              flags: PF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n";

    fn facts(mounted: bool, entry: Option<&str>, qemu_user: bool) -> Facts {
        Facts {
            dir: BINFMT_DIR.into(),
            mounted,
            entry: entry.map(String::from),
            qemu_user: qemu_user.then(|| "/usr/bin/qemu-aarch64-static".into()),
        }
    }

    #[test]
    fn a_registered_handler_must_be_enabled_with_f() {
        assert!(usable(REGISTERED).is_ok());
        assert!(usable(&REGISTERED.replace("enabled", "disabled")).is_err());
        let e = usable(&REGISTERED.replace("flags: PF", "flags: P")).unwrap_err();
        assert!(e.contains("F flag"), "{e}");
        assert_eq!(handler(&ARM64), "qemu-aarch64");
    }

    #[test]
    fn what_is_done_follows_from_the_facts() {
        // Registered and usable: nothing, whether qemu-user-static is on the path or not.
        assert_eq!(
            plan(&ARM64, &facts(true, Some(REGISTERED), false)).unwrap(),
            Plan::Nothing
        );
        // Mounted, not registered: register.
        assert_eq!(
            plan(&ARM64, &facts(true, None, true)).unwrap(),
            Plan::Register { mount: false }
        );
        // Not mounted (no systemd): mount, then register.
        assert_eq!(
            plan(&ARM64, &facts(false, None, true)).unwrap(),
            Plan::Register { mount: true }
        );
        // Registered without F: registered again (update-binfmts --enable).
        let no_f = REGISTERED.replace("flags: PF", "flags: P");
        assert_eq!(
            plan(&ARM64, &facts(true, Some(&no_f), true)).unwrap(),
            Plan::Register { mount: false }
        );
        // No qemu-user-static: nothing to register, and the fix.
        let e = plan(&ARM64, &facts(true, None, false))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("qemu-user-static, which is not installed")
                && e.contains("apt-get install qemu-user-static binfmt-support"),
            "{e}"
        );
    }

    #[test]
    fn the_status_says_why() {
        assert_eq!(
            status(&ARM64, &facts(false, None, true)).unwrap_err(),
            "binfmt_misc is not mounted at /proc/sys/fs/binfmt_misc"
        );
        assert_eq!(
            status(&ARM64, &facts(true, None, true)).unwrap_err(),
            "qemu-aarch64 is not registered"
        );
        assert!(status(&ARM64, &facts(true, Some(REGISTERED), true)).is_ok());
    }
}
