//! `cargo xtask test`: installs what the tests need (packages, the rootfs, a real kernel tree,
//! a trimmed config and a kernel built from it, and the same for arm64), then runs the whole
//! suite, unit and end-to-end, exactly as CI does.

use crate::build::BuildRequest;
use crate::cmd::CommandExt;
use crate::ctx::Ctx;
use crate::phase::{run_self, self_exe, start_self};
use crate::settings::workspace_root;
use crate::units::human_duration;
use crate::{build, deps, exit, linux_source};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The kernel tree the tests use, inside the state dir.
pub fn test_tree(ctx: &Ctx) -> PathBuf {
    ctx.state.root.join("fixtures/linux-6.1")
}

/// Whether the libvirt daemon answers, so the libvirt feature can be built and tested.
fn libvirt_available() -> bool {
    Command::new("virsh")
        .args(["-c", "qemu:///system", "version"])
        .output_unchecked()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Builds xtask with the libvirt backend (`cargo xtask` builds it without) and returns the
/// binary. Same target dir, so only xtask and virt compile; the running binary is replaced
/// on disk, which does not disturb it.
fn build_with_libvirt() -> Result<PathBuf> {
    Command::new("cargo")
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--package",
            "xtask",
            "--features",
            "libvirt",
        ])
        .run_logged()
        .context("building xtask with the libvirt feature")?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    Ok(target.join("debug/xtask"))
}

/// What `cargo xtask test` was asked, resolved (cli/resolve.rs).
#[derive(Debug, Clone)]
pub struct SuiteRequest {
    /// Not `--no-setup`: install packages and make the rootfs, tree, configs and kernels first.
    pub setup: bool,
    /// A file of tests/tests (`e2e_cli`) to run, or a substring of test names.
    pub filter: Option<String>,
    /// How the suite's own kernels are built: `cargo xtask build`'s defaults (xtask.toml
    /// left out); each kernel sets its arch and config.
    pub build: BuildRequest,
}

impl SuiteRequest {
    /// Sets up (unless asked not to) and runs the whole suite; 0 when every test passed.
    pub fn run(&self, ctx: &Ctx) -> Result<u8> {
        let start = Instant::now();
        let tree = test_tree(ctx);
        if self.setup {
            eprintln!("==> deps");
            deps::install()?;
            run_self(ctx, "setup-rootfs", None, &["setup-rootfs"])?;
            eprintln!("==> kernel tree");
            linux_source::ensure_tree(&tree)?;
            // The PCI lane's kernel (libvirt boots q35) first, then the default fast lane's:
            // the second builds incrementally in the same build dir (only what ACPI and PCI
            // touch), and the tests' own builds then start from the fast lane's objects.
            // arm64's guest root meanwhile: fetching and unpacking it is mostly waiting on
            // the network and on qemu-user, beside the x86_64 builds.
            let arm64 = ["--arch", crate::arch::ARM64.name];
            let arm64_root = start_self(
                ctx,
                "setup-rootfs arm64",
                None,
                &[&["setup-rootfs"][..], &arm64].concat(),
            )?;
            let pci = ["--lane", crate::arch::Lane::Pci.name()];
            run_self(
                ctx,
                "trim-config pci",
                Some(&tree),
                &[&["trim-config"][..], &pci].concat(),
            )?;
            let pci_config = self.pci_config(ctx);
            run_self(
                ctx,
                "build pci",
                Some(&tree),
                &["build", "--config", &pci_config.to_string_lossy()],
            )?;
            run_self(ctx, "trim-config", Some(&tree), &["trim-config"])?;
            // With ccache (the default), as every build of the suite: the toolkit's worktree
            // then finds this config's objects in it, and the PCI lane's for the PCI kernel.
            run_self(ctx, "build", Some(&tree), &["build"])?;
            // arm64: its config and kernel (built as `base` in the toolkit's worktree, where
            // the arm64 bisect test's steps then build incrementally), on its guest root.
            match arm64_root.finish()? {
                0 => {}
                c => bail!("phase setup-rootfs arm64 failed (exit {c})"),
            }
            run_self(
                ctx,
                "trim-config arm64",
                Some(&tree),
                &[&["trim-config"][..], &arm64].concat(),
            )?;
            run_self(
                ctx,
                "build arm64",
                Some(&tree),
                &[&["build", "base"][..], &arm64].concat(),
            )?;
        }
        let kernel = self.fixture_kernel(ctx, &tree, crate::arch::HOST, None)?;
        // With --no-setup on a state dir made before lanes: the libvirt tests say what is missing.
        let kernel_pci = if self.pci_config(ctx).is_file() {
            Some(self.fixture_kernel(ctx, &tree, crate::arch::HOST, Some(self.pci_config(ctx)))?)
        } else {
            eprintln!("no PCI-lane config in the state dir: the libvirt tests will fail (run without --no-setup)");
            None
        };
        // With --no-setup on a state dir made before arm64: the arm64 tests say what is missing.
        let kernel_arm64 = if ctx.state.trimmed_config_for(&crate::arch::ARM64).is_file() {
            Some(self.fixture_kernel(ctx, &tree, &crate::arch::ARM64, None)?)
        } else {
            eprintln!("no arm64 config in the state dir: the arm64 tests will fail (run without --no-setup)");
            None
        };
        // The binary the end-to-end tests drive: this one, or one with the libvirt backend.
        let mut bin = self_exe()?;
        let mut c = Command::new("cargo");
        c.current_dir(workspace_root())
            .args(["test", "--workspace", "--no-fail-fast"]);
        if libvirt_available() {
            if !cfg!(feature = "libvirt") {
                bin = build_with_libvirt()?;
            }
            c.args(["--features", "xtask/libvirt,tests/libvirt"]);
        } else {
            eprintln!("libvirt does not answer at qemu:///system: the libvirt backend is not tested (start libvirtd)");
        }
        // A filter that names a file of tests/tests (`e2e_cli`) runs that file's tests;
        // anything else is a substring of test names.
        let target = self.filter.as_deref().filter(|f| {
            workspace_root()
                .join("tests/tests")
                .join(format!("{f}.rs"))
                .is_file()
        });
        if let Some(t) = target {
            c.args(["--test", t]);
        }
        // --include-ignored: the unit tests that need a real tree and config (trim.rs's
        // `real_tree`) run on the ones the suite made.
        c.args(["--", "--test-threads=1", "--include-ignored"]);
        if let (Some(f), None) = (&self.filter, target) {
            c.arg(f);
        }
        c.env("XTASK_BIN", &bin)
            .env("XTASK_TEST_STATE", &ctx.state.root)
            .env("XTASK_TEST_TREE", &tree)
            .env("XTASK_TEST_KERNEL", &kernel.image)
            .env("XTASK_TEST_CONFIG", &kernel.config);
        if let Some(k) = &kernel_pci {
            c.env("XTASK_TEST_KERNEL_PCI", &k.image);
        }
        if let Some(k) = &kernel_arm64 {
            c.env("XTASK_TEST_KERNEL_ARM64", &k.image);
        }
        eprintln!("==> cargo test (kernel {})", kernel.image.display());
        // The whole suite: far longer than cargo's default limit, well inside CI's.
        let limit = Duration::from_secs(3 * 3600);
        let mut child = c.spawn_logged().context("starting cargo test")?;
        let status = crate::cmd::wait(&mut child, Some(Instant::now() + limit))?;
        eprintln!("==> test: {} in all", human_duration(start.elapsed()));
        // A test that failed is 1; cargo that could not run or ran past the limit is not.
        match status {
            Some(st) if st.success() => Ok(exit::OK),
            Some(_) => Ok(exit::FAILED),
            None => bail!("cargo test ran past {}: ended", human_duration(limit)),
        }
    }

    /// The host's PCI-lane config, which the libvirt tests' kernel is built with.
    fn pci_config(&self, ctx: &Ctx) -> PathBuf {
        ctx.state
            .trimmed_config_for_lane(crate::arch::HOST, crate::arch::Lane::Pci)
    }

    /// The kernel of `arch` the VM tests boot (and its final .config): the test tree's HEAD
    /// with `config` (default: the arch's trimmed config), from the cache.
    fn fixture_kernel(
        &self,
        ctx: &Ctx,
        tree: &Path,
        arch: &'static crate::arch::Arch,
        config: Option<PathBuf>,
    ) -> Result<build::Artifacts> {
        let tctx = ctx.with_tree(tree);
        let opts = BuildRequest {
            arch,
            config,
            ..self.build.clone()
        };
        match build::ensure_kernel(&tctx, None, &opts)? {
            build::BuildOutcome::Built(a) => Ok(a),
            build::BuildOutcome::Failed { log, summary, .. } => {
                bail!(
                    "the test kernel does not build ({summary}); log: {}",
                    log.display()
                )
            }
        }
    }
}
