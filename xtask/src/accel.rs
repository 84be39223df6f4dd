//! The accelerator as plain data: what was asked (`auto`, `kvm`, `tcg`) and what was chosen
//! (`Kvm`, `Tcg`) are different types, so a VM never runs under `Auto`.

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
