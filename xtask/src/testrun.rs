//! `cargo xtask test`: installs what the tests need (packages, the rootfs, a real kernel tree,
//! a trimmed config and a kernel built from it), then runs the whole suite, unit and
//! end-to-end, exactly as CI does.

use crate::cli::TestArgs;
use crate::cmd::CommandExt;
use crate::ctx::Ctx;
use crate::settings::workspace_root;
use crate::units::human_duration;
use crate::{build, deps, exit, fixture};
use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The kernel tree the tests use, inside the state dir.
pub fn test_tree(ctx: &Ctx) -> PathBuf {
    ctx.state.root.join("fixtures/linux-6.1")
}

/// Runs this same binary with `args` (and the context's state dir and verbosity), as one
/// timed phase whose output goes to the terminal; fails unless it exits 0.
pub fn run_self<S: AsRef<OsStr>>(
    ctx: &Ctx,
    phase: &str,
    tree: Option<&Path>,
    args: &[S],
) -> Result<()> {
    match run_self_code(ctx, phase, tree, args)? {
        0 => Ok(()),
        c => bail!("phase {phase} failed (exit {c})"),
    }
}

/// As [`run_self`], returning the exit code (see [`exit::passed_on`]).
pub fn run_self_code<S: AsRef<OsStr>>(
    ctx: &Ctx,
    phase: &str,
    tree: Option<&Path>,
    args: &[S],
) -> Result<u8> {
    let start = Instant::now();
    eprintln!("==> {phase}");
    let mut c = Command::new(self_exe()?);
    c.arg("--state-dir").arg(&ctx.state.root);
    if let Some(t) = tree {
        c.arg("--tree").arg(t);
    }
    if ctx.verbose {
        c.arg("-v");
    }
    c.args(args);
    let mut child = c.spawn_logged().with_context(|| format!("phase {phase}"))?;
    // No limit here: the phase is this binary, whose every command has its own.
    let status = crate::cmd::wait(&mut child, None)?.expect("no deadline");
    let code = exit::passed_on(status.code(), status.signal());
    eprintln!(
        "==> {phase}: exit {code} after {}",
        human_duration(start.elapsed())
    );
    Ok(code)
}

/// This binary's path. When it was rebuilt while running, Linux names the old one
/// "… (deleted)"; the path then holds the new build, which is what the next phase wants.
pub fn self_exe() -> Result<PathBuf> {
    let p = std::env::current_exe()?;
    let s = p.to_string_lossy();
    Ok(match s.strip_suffix(" (deleted)") {
        Some(stripped) => PathBuf::from(stripped),
        None => p,
    })
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

impl TestArgs {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        let start = Instant::now();
        let tree = test_tree(ctx);
        if !self.no_setup {
            eprintln!("==> deps");
            deps::install()?;
            run_self(ctx, "setup-rootfs", None, &["setup-rootfs"])?;
            eprintln!("==> kernel tree");
            fixture::linux_source_tree(&tree)?;
            run_self(ctx, "trim-config", Some(&tree), &["trim-config"])?;
            run_self(ctx, "build", Some(&tree), &["build"])?;
        }
        let kernel = self.fixture_kernel(ctx, &tree)?;
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
        c.args(["--", "--test-threads=1"]);
        if let (Some(f), None) = (&self.filter, target) {
            c.arg(f);
        }
        c.env("XTASK_BIN", &bin)
            .env("XTASK_TEST_STATE", &ctx.state.root)
            .env("XTASK_TEST_TREE", &tree)
            .env("XTASK_TEST_KERNEL", &kernel);
        eprintln!("==> cargo test (kernel {})", kernel.display());
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

    /// The kernel the VM tests boot: the test tree's HEAD, from the cache.
    fn fixture_kernel(&self, ctx: &Ctx, tree: &Path) -> Result<PathBuf> {
        let tctx = Ctx {
            tree: tree.to_path_buf(),
            state: ctx.state.clone(),
            file: ctx.file.clone(),
            run_dir: ctx.run_dir.clone(),
            verbose: ctx.verbose,
        };
        let opts = crate::cli::BuildArgs::default().resolve(&Default::default())?;
        match build::ensure_kernel(&tctx, None, &opts)? {
            build::BuildOutcome::Built(a) => Ok(a.image),
            build::BuildOutcome::Failed { log, summary, .. } => {
                bail!(
                    "the test kernel does not build ({summary}); log: {}",
                    log.display()
                )
            }
        }
    }
}
