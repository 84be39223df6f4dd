//! `cargo xtask bench`.

use crate::cli::BenchArgs;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl BenchArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("bench")
    }
}
