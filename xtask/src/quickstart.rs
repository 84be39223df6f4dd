//! `cargo xtask quickstart`: from a fresh Debian 12 machine to a verdict — host packages, the
//! rootfs, a kernel tree (the configured one, or one made from linux-source-6.1), a trimmed
//! config, a build and the clean-boot check — printing each phase's time.

use crate::cli::QuickstartArgs;
use crate::ctx::Ctx;
use crate::settings::workspace_root;
use crate::testrun::{run_self, run_self_code};
use crate::units::human_duration;
use crate::{deps, fixture};
use anyhow::{bail, Result};
use std::time::Instant;

impl QuickstartArgs {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        let start = Instant::now();
        let t = Instant::now();
        eprintln!("==> deps");
        deps::install()?;
        eprintln!("==> deps: done in {}", human_duration(t.elapsed()));
        run_self(ctx, "setup-rootfs", None, &["setup-rootfs"])?;
        let default_tree = workspace_root().join("linux");
        let tree = if ctx.tree == default_tree && !default_tree.exists() {
            let t = Instant::now();
            eprintln!(
                "==> kernel tree: none configured, making {} from linux-source-6.1",
                default_tree.display()
            );
            fixture::linux_source_tree(&default_tree)?;
            eprintln!("==> kernel tree: done in {}", human_duration(t.elapsed()));
            default_tree
        } else {
            ctx.require_tree()?
        };
        run_self(ctx, "trim-config", Some(&tree), &["trim-config"])?;
        run_self(ctx, "build", Some(&tree), &["build"])?;
        let mut check = vec!["check".to_string()];
        check.extend(self.vm_args());
        let check: Vec<&str> = check.iter().map(String::as_str).collect();
        let code = run_self_code(ctx, "check (clean boot)", Some(&tree), &check)?;
        let verdict = match code {
            0 => "good: the kernel boots cleanly",
            1 => "bad: the kernel warned, oopsed or panicked at boot (see the console log above)",
            125 => "untestable: the kernel did not build or boot",
            _ => bail!("check could not run (exit {code})"),
        };
        eprintln!(
            "quickstart: {verdict} ({} in all)",
            human_duration(start.elapsed())
        );
        eprintln!(
            "next: edit {} and run `cargo xtask check -- <your test>`",
            tree.display()
        );
        Ok(code as u8)
    }

    /// The VM options given to quickstart, passed on to check.
    fn vm_args(&self) -> Vec<String> {
        let v = &self.vm;
        let mut a = Vec::new();
        let mut opt = |name: &str, val: &Option<String>| {
            if let Some(x) = val {
                a.push(format!("--{name}={x}"));
            }
        };
        opt("memory", &v.memory);
        opt("append", &v.append);
        opt("timeout", &v.timeout);
        opt("boot-timeout", &v.boot_timeout);
        if let Some(c) = v.cpus {
            a.push(format!("--cpus={c}"));
        }
        if let Some(k) = &v.kernel {
            a.push(format!("--kernel={}", k.display()));
        }
        a
    }
}
