//! `check --kselftest TARGET...`: the tree's selftests built in the rootfs container (`make
//! headers` into their own output dir, then the selftests' `install`; the source mount stays
//! read-only), a copy shared with the guest, run there by the installed `run_kselftest.sh`.
//! Its TAP is judged as `--ktap` judges a command's stdout.

use crate::cmd::{self, CommandExt};
use crate::container::Container;
use crate::ctx::Ctx;
use crate::lock::FileLock;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// Where the guest finds the installed selftests: `--share`'s mount point.
pub const GUEST_DIR: &str = "/mnt/share";

/// How long building a few selftests may take (headers alone take a minute on a loaded host).
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

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

/// Builds and installs the selftests `targets` of the tree's working state; returns a fresh
/// copy of the install dir in the run dir, to share with the guest (the guest may write into
/// it; the build's own stays as built).
pub fn build(ctx: &Ctx, targets: &[String]) -> Result<PathBuf> {
    let tree = ctx.require_tree()?;
    for t in targets {
        let dir = tree.join("tools/testing/selftests").join(t);
        if t.contains("..") || !dir.join("Makefile").is_file() {
            bail!(
                "--kselftest {t}: {} has no Makefile (a TARGET is a directory of \
                 tools/testing/selftests)",
                dir.display()
            );
        }
    }
    let out = ctx.state.build_dir("kselftest");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = FileLock::acquire(
        &out.with_extension("lock"),
        "another kselftest build",
        BUILD_LIMIT,
    )?;
    let installed = out.join("kselftest/kselftest_install");
    // Only these targets: a list from an earlier build must not run too.
    if installed.exists() {
        std::fs::remove_dir_all(&installed)
            .with_context(|| format!("removing {}", installed.display()))?;
    }
    let container = Container::new(&ctx.state)?
        .bind_ro(&tree, "/src")
        .bind(&out, "/build")
        .workdir("/build");
    let log = ctx.run_dir.join("kselftest-build.log");
    eprintln!(
        "kselftest: building {} (log: {})",
        targets.join(" "),
        log.display()
    );
    for argv in make_steps(targets) {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut c = container.command(&argv)?;
        c.stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        if let Err(e) = c.run_within(BUILD_LIMIT) {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "building the selftests failed: {e:#}\n{}\n(full log: {})",
                cmd::tail(&text, 15),
                log.display()
            );
        }
    }
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
    fn headers_first_then_the_targets_install() {
        let [h, s] = make_steps(&["size".into(), "kcmp".into()]);
        assert_eq!(h.join(" "), "make -C /src O=/build headers");
        assert_eq!(
            s.join(" "),
            "make -C /src/tools/testing/selftests O=/build TARGETS=size kcmp install"
        );
    }
}
