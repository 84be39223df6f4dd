//! `cargo xtask cache`.

use crate::cli::CacheArgs;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl CacheArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("cache")
    }
}
