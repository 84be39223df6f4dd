//! `cargo xtask bench bisect`: on a synthetic history of N commits, the wall time of
//! `cargo xtask bisect` (fresh cache) against a plain `git bisect run` of the article's
//! script (build in the container, boot QEMU, ask the agent, grep dmesg), in one run, and the
//! time of the fully cached re-run.

use crate::cmd::{self, CommandExt};
use crate::ctx::Ctx;
use crate::git::owned;
use crate::phase::self_exe;
use crate::state::StateDir;
use crate::units::{human_duration, short};
use crate::vm::spec::{kernel_cmdline, tsc_khz_from_cpuinfo, CmdlineInput, Machine};
use crate::{history, kvm, tools};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The article's step, run by `git bisect run`.
const ARTICLE_STEP: &str = include_str!("article_step.sh");

/// Removes a git worktree when dropped, on every exit: errors and Ctrl-C too. Plain
/// `Command::status` because after Ctrl-C the logged runner kills any new child at once.
struct WorktreeGuard<'a> {
    tree: &'a Path,
    worktree: std::path::PathBuf,
}

impl Drop for WorktreeGuard<'_> {
    fn drop(&mut self) {
        if self.worktree.exists() {
            let _ = owned(&self.worktree)
                .args(["bisect", "reset", "--quiet"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
        // Twice: a bisect's worktree is locked while its bisect is under way (bisect/git.rs).
        let _ = owned(self.tree)
            .args(["worktree", "remove", "--force", "--force"])
            .arg(&self.worktree)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Runs our own binary (a bisect) and returns its wall time and stdout; its progress goes to
/// our stderr as it runs.
fn timed_bisect(
    state: &Path,
    tree: &Path,
    good: &str,
    bad: &str,
    extra: &[&str],
) -> Result<(Duration, String)> {
    let t = Instant::now();
    let mut child = Command::new(self_exe()?)
        .arg("--state-dir")
        .arg(state)
        .arg("--tree")
        .arg(tree)
        .args(["bisect", good, bad])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn_logged()?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    // On the main thread, so that Ctrl-C ends the child. No limit: it is this binary, whose
    // every command has its own.
    let status = cmd::wait(&mut child, None)?.expect("no deadline");
    let text = reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "cargo xtask bisect failed ({status}):\n{}",
            cmd::tail(&text, 20)
        );
    }
    Ok((t.elapsed(), text))
}

/// Runs the benchmark on `commits` (at least 4) commits; with `headers`, on a history that
/// touches widely included headers ([`history::header_plan`]).
pub fn run(ctx: &Ctx, commits: u32, headers: bool) -> Result<u8> {
    let tree = ctx.require_tree()?;
    let rootfs = std::fs::canonicalize(ctx.state.rootfs())
        .context("no rootfs: run `cargo xtask setup-rootfs`")?;
    // The PCI lane's config, for both: the article's script boots microvm with virtio-pci
    // devices, which a fast-lane kernel (no PCI) cannot use; ours follows the config's lane.
    let config = ctx
        .state
        .trimmed_config_for_lane(crate::arch::HOST, crate::arch::Lane::Pci);
    if !config.is_file() {
        bail!("no PCI-lane config: run `cargo xtask trim-config --lane pci` first");
    }
    let n = commits as usize;
    let culprit = n * 2 / 3;
    let (branch, changes) = if headers {
        (
            format!("bench-bisect-headers-{n}"),
            history::header_plan(n, culprit)?,
        )
    } else {
        (
            format!("bench-bisect-{n}"),
            history::plan(n, culprit, None)?,
        )
    };
    eprintln!("bench bisect: writing {n} commits as {branch} (the warning at #{culprit})");
    let ids = history::write(&tree, "base", &branch, &changes)?;
    let culprit_id = ids[culprit].clone();
    let bench = ctx.run_dir.join("bench");
    std::fs::create_dir_all(&bench)?;

    // The baseline: a plain worktree, its own build dir, and `git bisect run` of the script.
    let wt = bench.join("article-tree");
    owned(&tree)
        .args(["worktree", "add", "--quiet", "--detach"])
        .arg(&wt)
        .arg(&branch)
        .output_logged()?;
    let article_guard = WorktreeGuard {
        tree: &tree,
        worktree: wt.clone(),
    };
    let script = bench.join("article_step.sh");
    std::fs::write(&script, ARTICLE_STEP)?;
    let qemu = tools::find(&tools::QEMU)?;
    let virtiofsd = tools::find(&tools::VIRTIOFSD)?;
    let accel = kvm::choose(
        crate::arch::HOST,
        crate::options::AccelAsked::Auto,
        &ctx.state,
        &qemu,
        None,
    )?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let append = kernel_cmdline(&CmdlineInput {
        // The article's script boots x86_64 microvm.
        arch: &crate::arch::X86_64,
        init: crate::options::InitMode::Fast,
        rw: false,
        share: false,
        machine: Machine::Microvm,
        tsc_khz: tsc_khz_from_cpuinfo(&cpuinfo),
        shell: false,
        // The article's script boots the rootfs's shell init.
        fast_init: false,
        append: None,
    })
    .join(" ");
    let jobs = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    eprintln!("bench bisect: baseline, `git bisect run` of the article's script");
    let t = Instant::now();
    owned(&wt)
        .args(["bisect", "start", &branch, "base"])
        .output_logged()?;
    let out = owned(&wt)
        .args(["bisect", "run", "bash"])
        .arg(&script)
        .env("XTASK_ROOTFS", &rootfs)
        .env("XTASK_BUILD", bench.join("article-build"))
        .env("XTASK_CONFIG", &config)
        .env("XTASK_RUN", bench.join("article-run"))
        .env("XTASK_QEMU", &qemu)
        .env("XTASK_VIRTIOFSD", &virtiofsd)
        .env("XTASK_ACCEL", accel.name())
        .env("XTASK_APPEND", &append)
        .env("XTASK_JOBS", jobs.to_string())
        .output_logged();
    let baseline = t.elapsed();
    drop(article_guard);
    let out = out.context("the baseline bisect failed")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !text.contains(&format!("{culprit_id} is the first bad commit")) {
        bail!(
            "the baseline did not find {culprit_id}:\n{}",
            cmd::tail(&text, 20)
        );
    }

    // Ours: a fresh state dir (so the cache starts empty) that shares the rootfs and config.
    // It sits high in the tree: a run dir nested deeper makes socket paths too long.
    let bench_state = StateDir::new(ctx.state.root.join("bench-bisect"));
    if bench_state.root.exists() {
        std::fs::remove_dir_all(&bench_state.root)?;
    }
    std::fs::create_dir_all(bench_state.config_dir())?;
    std::os::unix::fs::symlink(&rootfs, bench_state.rootfs())?;
    std::fs::copy(ctx.state.rootfs_meta(), bench_state.rootfs_meta())?;
    std::fs::copy(&config, bench_state.trimmed_config())?;
    // The KVM answer the baseline got from the main state: no second probe boot on our side.
    let _ = std::fs::copy(ctx.state.kvm_probe(), bench_state.kvm_probe());
    let _ours_guard = WorktreeGuard {
        tree: &tree,
        worktree: crate::build::source::worktree_dir(&bench_state, &tree),
    };
    let _bisect_guard = WorktreeGuard {
        tree: &tree,
        worktree: crate::bisect::worktree_dir(&bench_state, &tree),
    };
    let state = &bench_state.root;
    eprintln!("bench bisect: cargo xtask bisect, empty cache");
    let (ours, report) = timed_bisect(state, &tree, "base", &branch, &[])?;
    if !report.contains(&culprit_id) {
        bail!("cargo xtask bisect did not find {culprit_id}");
    }
    eprintln!("bench bisect: cargo xtask bisect --no-confirm again, everything cached");
    let (cached_no_confirm, _) = timed_bisect(state, &tree, "base", &branch, &["--no-confirm"])?;
    eprintln!("bench bisect: cargo xtask bisect again, everything cached");
    let (cached, _) = timed_bisect(state, &tree, "base", &branch, &[])?;
    // The confirmation's cost: the same bisect with and without it, each from an empty cache
    // and the build dir the first run left (so neither pays the cold build; ccache's cache,
    // which the first run filled, is emptied too, and so are the BAD end's kept runs).
    let warm = |extra: &[&str]| -> Result<Duration> {
        std::fs::remove_dir_all(bench_state.cache())?;
        let _ = std::fs::remove_dir_all(bench_state.root.join("ccache"));
        let _ = std::fs::remove_dir_all(bench_state.bad_end_runs());
        eprintln!(
            "bench bisect: cargo xtask bisect {}, empty cache, warm build dir",
            extra.join(" ")
        );
        Ok(timed_bisect(state, &tree, "base", &branch, extra)?.0)
    };
    let no_confirm = warm(&["--no-confirm"])?;
    let confirmed = warm(&[])?;

    println!(
        "bisect of {n} commits{} (first bad: #{culprit} {})",
        if headers {
            ", every fourth touching a widely included header"
        } else {
            ""
        },
        short(&culprit_id)
    );
    println!("{:<48} {:>10} {:>8}", "variant", "wall", "ratio");
    let row = |name: &str, d: Duration| {
        println!(
            "{name:<48} {:>10} {:>7.2}x",
            human_duration(d),
            d.as_secs_f64() / baseline.as_secs_f64()
        )
    };
    row("git bisect run, the article's script", baseline);
    row("cargo xtask bisect, empty cache (ccache on)", ours);
    row("  re-run --no-confirm (all cached)", cached_no_confirm);
    row("  re-run, defaults (all cached)", cached);
    row("  --no-confirm, empty cache, warm build dir", no_confirm);
    row(
        "  defaults (confirmed), empty cache, warm build dir",
        confirmed,
    );
    println!(
        "confirmation costs {:+.0}% over --no-confirm (goal: at most +20%)",
        (confirmed.as_secs_f64() / no_confirm.as_secs_f64() - 1.0) * 100.0
    );
    Ok(0)
}
