//! The pure kernel-config model: `.config` files, merging fragments, reading Kconfig files,
//! and verifying what olddefconfig kept. No I/O beyond what callers inject.

pub mod config;
pub mod merge;
pub mod symbols;
pub mod verify;

pub use config::Config;
pub use merge::{merge, Layer};
pub use symbols::SymbolIndex;
