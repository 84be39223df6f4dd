//! Booting kernels in VMs: `boot` and `check`.

use crate::cli::{BootCmd, CheckCmd};
use crate::ctx::{not_built, Ctx};
use anyhow::Result;

impl BootCmd {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("boot")
    }
}

impl CheckCmd {
    pub fn run(self, _ctx: &Ctx) -> Result<u8> {
        not_built("check")
    }
}
