//! `cargo xtask test`.

use crate::cli::TestArgs;
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl TestArgs {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("test")
    }
}
