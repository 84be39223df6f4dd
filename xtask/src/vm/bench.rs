//! `cargo xtask bench boot`: `check -- true` in both init modes against a hand-written
//! minimal QEMU + virtiofsd command line.
