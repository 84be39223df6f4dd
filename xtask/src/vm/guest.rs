//! What a run needs of a started VM, whichever backend started it ([`Guest`]), and what it is
//! given to start one with ([`Tools`], [`Launcher`]): the QEMU backend (`run::Vm`) and the
//! libvirt one both implement this, so neither imports the other's module.

use super::fault::VmEnd;
use super::qga::{self, Agent, Stop};
use super::spec::{RunPaths, VmSpec};
use crate::signals;
use anyhow::Result;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The programs a run needs, found beforehand, and who starts the VM.
#[derive(Debug, Clone)]
pub struct Tools {
    pub qemu: PathBuf,
    pub virtiofsd: PathBuf,
    pub launcher: Launcher,
    /// What starts a libvirt domain (the libvirt backend's, given by `backend.rs`, so that
    /// vm/ never names libvirt/); None in a build without the `libvirt` feature.
    pub start_domain: Option<StartDomain>,
}

/// Starts `spec` as a libvirt domain at `uri`; `keep` leaves it running at the end.
pub type StartDomain = fn(&VmSpec, &RunPaths, &Tools, &str, bool) -> Result<Box<dyn Guest>>;

/// Who starts and owns the VM; the agent, the verdict and the logs are the same for both.
#[derive(Debug, Clone, PartialEq)]
pub enum Launcher {
    /// QEMU and virtiofsd as our children ([`Vm`]).
    Qemu,
    /// A transient libvirt domain at `uri`; `keep` leaves it running at the end.
    Libvirt { uri: String, keep: bool },
}

/// What a backend saw of its VM's life on the host's clock, for the boot timeline.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub virtiofsd_ready: Option<Instant>,
    pub qemu_started: Option<Instant>,
    pub qemu_exit: Option<Instant>,
}

/// A started VM as a run sees it, whichever backend started it.
pub trait Guest {
    /// When the VM was started: the boot deadline counts from here.
    fn started(&self) -> Instant;
    /// How the VM ended, once it has (QEMU or virtiofsd exited, the domain is gone, libvirt
    /// stopped answering); the first end seen is kept.
    fn ended(&mut self) -> Option<VmEnd>;
    /// For agent calls: fails when the VM is gone ([`Stop::VmExited`]) or on Ctrl-C.
    fn watch(&mut self) -> Result<()> {
        signals::check()?;
        if self.ended().is_some() {
            return Err(Stop::VmExited.into());
        }
        Ok(())
    }
    /// When its parts started and ended, as far as the backend sees them.
    fn seen(&self) -> Seen {
        Seen {
            qemu_started: Some(self.started()),
            ..Seen::default()
        }
    }
    /// Waits until the guest has opened the agent's port, where the backend can tell (the
    /// agent can answer from then on), else returns at once; `Err` as [`Guest::watch`].
    fn wait_agent_port(&mut self, _deadline: Instant) -> Result<()> {
        Ok(())
    }
    /// Opens connections to the guest agent.
    fn agent(&self) -> Box<dyn qga::Connect>;
    /// Ends the VM: politely through the agent, then by force; says which worked.
    fn shut_down(&mut self, agent: Option<&mut Agent>, timeout: Duration) -> Result<&'static str>;
}
