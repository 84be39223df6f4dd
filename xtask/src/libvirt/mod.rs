//! The libvirt backend: the VM as a transient libvirt domain, started from the same spec as
//! the QEMU backend, with the guest agent reached through libvirt's API.

pub mod access;
pub mod agent;
pub mod domain;
pub mod xml;
