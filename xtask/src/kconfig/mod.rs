//! The pure kernel-config model: `.config` files, merging fragments, reading Kconfig files,
//! and verifying what olddefconfig kept. No I/O beyond what callers inject.

pub mod config;
pub mod merge;
pub mod symbols;
pub mod verify;

pub use config::{Config, Setting};
pub use merge::{merge, Layer, Merged};
pub use symbols::SymbolIndex;
pub use verify::Dropped;
