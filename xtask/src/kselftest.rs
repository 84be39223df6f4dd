//! `check --kselftest TARGET...`: the selftests of the check's own source (the tree's working
//! state, or the revision a bisect step or `check REV` builds, checked out in the toolkit's
//! worktree) built in the rootfs container (`make headers` into their own output dir, then
//! the selftests' `install`; the source mount stays read-only), a copy shared with the guest,
//! run there by the installed `run_kselftest.sh`. Its TAP is judged as `--ktap` judges a
//! command's stdout.

use crate::build::plan::Invocation;
use crate::build::runner::{Place, Runner};
use crate::build::source::{self, Checkout};
use crate::cmd;
use crate::ctx::Ctx;
use crate::lock::FileLock;
use crate::progress::Progress;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the guest finds the installed selftests: `--share`'s mount point.
pub const GUEST_DIR: &str = "/mnt/share";

/// How long building a few selftests may take (headers alone take a minute on a loaded host).
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The `config` fragment a selftest target ships, relative to the tree.
pub fn config_fragment(target: &str) -> String {
    format!("tools/testing/selftests/{target}/config")
}

/// The command the guest runs: the installed runner, on the shared copy.
pub fn command() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("cd {GUEST_DIR} && ./run_kselftest.sh"),
    ]
}

/// `make` argv for the two steps: headers into `out`, then the selftests of `targets`
/// installed under `out/kselftest/kselftest_install` (container paths).
pub fn make_steps(targets: &[String]) -> [Vec<String>; 2] {
    let s = |x: &str| x.to_string();
    [
        vec![s("make"), s("-C"), s("/src"), s("O=/build"), s("headers")],
        vec![
            s("make"),
            s("-C"),
            s("/src/tools/testing/selftests"),
            s("O=/build"),
            format!("TARGETS={}", targets.join(" ")),
            s("install"),
        ],
    ]
}

/// Where the selftests of one checkout are built.
#[derive(Debug, PartialEq, Eq)]
pub struct Dirs {
    /// The sources: the tree, or the toolkit's worktree (where a revision's kernel is built).
    pub src: PathBuf,
    /// The output dir, one per source dir (headers and objects stay for the next build).
    pub out: PathBuf,
    /// A kernel build's lock of the same source dir (build/miss.rs): while it is held, no
    /// build checks out another revision there.
    pub lock: PathBuf,
}

impl Dirs {
    pub fn of(state: &StateDir, tree: &Path, checkout: Checkout) -> Dirs {
        let src = match checkout {
            Checkout::WorkingState => tree.to_path_buf(),
            Checkout::Worktree => source::worktree_dir(state, tree),
        };
        let tag = source::path_tag(&src);
        Dirs {
            out: state.build_dir(&format!("{tag}-kselftest")),
            lock: state.build_dir(&format!("{tag}.lock")),
            src,
        }
    }
}

/// Builds and installs the selftests `targets` of `rev` (None: the tree's working state);
/// returns a fresh copy of the install dir in the run dir, to share with the guest (the guest
/// may write into it; the build's own stays as built).
pub fn build(ctx: &Ctx, rev: Option<&str>, targets: &[String]) -> Result<PathBuf> {
    let tree = ctx.require_tree()?;
    let source = source::resolve(&ctx.state, &tree, rev)?;
    let dirs = Dirs::of(&ctx.state, &tree, source.checkout);
    let _lock = FileLock::acquire(
        &dirs.lock,
        &format!("another build in {}", dirs.src.display()),
        BUILD_LIMIT,
    )?;
    if source.checkout == Checkout::Worktree {
        let locked_since = std::time::SystemTime::now();
        source::checkout_worktree(&tree, &dirs.src, &source.commit, Some(locked_since))?;
    }
    for t in targets {
        let dir = dirs.src.join("tools/testing/selftests").join(t);
        if t.contains("..") || !dir.join("Makefile").is_file() {
            bail!(
                "--kselftest {t}: {} has no Makefile (a TARGET is a directory of \
                 tools/testing/selftests)",
                dir.display()
            );
        }
    }
    let out = &dirs.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let installed = out.join("kselftest/kselftest_install");
    // Only these targets: a list from an earlier build must not run too.
    if installed.exists() {
        std::fs::remove_dir_all(&installed)
            .with_context(|| format!("removing {}", installed.display()))?;
    }
    let log = ctx.run_dir.join("kselftest-build.log");
    let of = match source.checkout {
        Checkout::WorkingState => "the working state".to_string(),
        Checkout::Worktree => crate::units::short(&source.commit).to_string(),
    };
    eprintln!(
        "kselftest: building {} of {of} (log: {})",
        targets.join(" "),
        log.display()
    );
    let place = Place::container(crate::rootfs::build_container(&ctx.state)?, &dirs.src, out);
    let bar = Progress::start("kselftest build");
    let mut runner = Runner::new(place, log.clone(), Some(bar.clone()), BUILD_LIMIT)?;
    for argv in make_steps(targets) {
        let label = argv.join(" ");
        let step = runner.step(&label, &Invocation { argv, env: vec![] })?;
        if !step.ok {
            runner.finish();
            bail!(
                "building the selftests failed: `{label}` ({})\n{}\n(full log: {})",
                step.status,
                cmd::tail(&step.output, 15),
                log.display()
            );
        }
    }
    bar.done();
    if !installed.join("run_kselftest.sh").is_file() {
        bail!(
            "the selftests' install left no run_kselftest.sh in {} (log: {})",
            installed.display(),
            log.display()
        );
    }
    let copy = ctx.run_dir.join("kselftest");
    copy_tree(&installed, &copy)?;
    Ok(copy)
}

/// `cp -a`, in process.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::symlink;
    for e in walkdir::WalkDir::new(from) {
        let e = e?;
        let dest = to.join(e.path().strip_prefix(from)?);
        let t = e.file_type();
        if t.is_dir() {
            std::fs::create_dir_all(&dest)?;
        } else if t.is_symlink() {
            symlink(std::fs::read_link(e.path())?, &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_builds_in_the_worktree_its_kernel_builds_in() {
        let state = StateDir::new("/s".into());
        let tree = Path::new("/t/linux");
        let here = Dirs::of(&state, tree, Checkout::WorkingState);
        assert_eq!(here.src, tree);
        let rev = Dirs::of(&state, tree, Checkout::Worktree);
        assert_eq!(rev.src, source::worktree_dir(&state, tree));
        // Each source dir its own output, and the lock its kernel builds take.
        assert_ne!(here.out, rev.out);
        assert_eq!(
            rev.lock,
            state.build_dir(&format!("{}.lock", source::path_tag(&rev.src)))
        );
    }

    #[test]
    fn headers_first_then_the_targets_install() {
        let [h, s] = make_steps(&["size".into(), "kcmp".into()]);
        assert_eq!(h.join(" "), "make -C /src O=/build headers");
        assert_eq!(
            s.join(" "),
            "make -C /src/tools/testing/selftests O=/build TARGETS=size kcmp install"
        );
    }
}
