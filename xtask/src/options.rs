//! The options a user picks among, as plain data that the command line, xtask.toml and the
//! tasks share: the accelerator (what was asked, `auto|kvm|tcg`, and what was chosen,
//! `Kvm|Tcg`, are different types, so a VM never runs under `Auto`), the backend, the guest's
//! init and the initramfs. A leaf: it names no other module of the crate.

use serde::{Deserialize, Serialize};

/// The accelerator asked for (`--accel`, `vm.accel`); [`crate::kvm::choose`] turns it
/// into an [`Accel`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelAsked {
    /// KVM when the probe says it works, else TCG
    Auto,
    Kvm,
    Tcg,
}

/// The accelerator a VM runs under, once chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    /// QEMU's name for it (`-accel kvm`).
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Who starts the VM.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// QEMU started directly; no daemon
    Qemu,
    /// A transient libvirt domain (needs the `libvirt` cargo feature)
    Libvirt,
}

/// The guest's userspace.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitMode {
    /// Full systemd userspace, qemu-guest-agent as a service
    Systemd,
    /// The rootfs's small init: overlay root, guest agent, nothing else
    Fast,
}

impl InitMode {
    /// Its name, as `xtask.init=` and the progress lines say it.
    pub fn name(self) -> &'static str {
        match self {
            InitMode::Fast => "fast",
            InitMode::Systemd => "systemd",
        }
    }
}

/// When a build makes an initramfs.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InitramfsMode {
    /// An initramfs only when booting needs modules
    Auto,
    /// Always make one with dracut
    Dracut,
    /// Never make one
    None,
}
