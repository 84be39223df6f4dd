//! Which sources a build compiles: the tree's working state, or a revision checked out in the
//! toolkit's own git worktree so that the user's checkout is never touched.

use super::key::{dirty_digest, sha256_hex};
use crate::cmd::CommandExt;
use crate::git::{self, cmd, shell};
use crate::state::StateDir;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A resolved revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The commit (HEAD for the working state).
    pub commit: String,
    /// The commit's tree id.
    pub tree_id: String,
    /// The committer date in UTC (`2026-12-01T08:42:10Z`): the image's build timestamp.
    pub date: String,
    /// The digest of uncommitted changes; None for a clean working state or a revision.
    pub dirty: Option<String>,
    /// Where it is built.
    pub checkout: Checkout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkout {
    /// The user's tree as it is, uncommitted changes included.
    WorkingState,
    /// The toolkit's worktree, detached at the commit.
    Worktree,
}

/// Resolves `rev` (None: the working state) in `tree` without changing anything of the tree's:
/// the working state is read through the state's own index of it ([`working_index`]).
pub fn resolve(state: &StateDir, tree: &Path, rev: Option<&str>) -> Result<Source> {
    match rev {
        None => {
            let (commit, tree_id, date) = commit_info(tree, "HEAD").with_context(|| {
                format!(
                    "{} has no commit yet: commit once (`git add -A && git commit -m base`)",
                    tree.display()
                )
            })?;
            let dirty = working_state_digest(tree, &commit, &working_index(state, tree))?;
            Ok(Source {
                commit,
                tree_id,
                date,
                dirty,
                checkout: Checkout::WorkingState,
            })
        }
        Some(rev) => {
            // Ctrl-C ends git too: that is an interruption (130), not an unknown revision.
            let (commit, tree_id, date) = commit_info(tree, rev).map_err(|e| {
                if crate::signals::is_interrupted(&e) {
                    e
                } else {
                    anyhow!("unknown revision {rev}: not in {}", tree.display())
                }
            })?;
            Ok(Source {
                commit,
                tree_id,
                date,
                dirty: None,
                checkout: Checkout::Worktree,
            })
        }
    }
}

/// The commit, tree id and committer date (see [`utc_timestamp`]) of `rev`.
fn commit_info(dir: &Path, rev: &str) -> Result<(String, String, String)> {
    let sh = shell()?;
    let spec = format!("{rev}^{{commit}}");
    let commit = git::line(cmd!(
        sh,
        "git -C {dir} rev-parse --verify --quiet --end-of-options {spec}"
    ))
    .read_logged()?;
    let out = git::line(cmd!(sh, "git -C {dir} log -1 --format=%T%n%ct {commit}")).read_logged()?;
    let mut lines = out.lines();
    match (lines.next(), lines.next().and_then(|d| d.parse().ok())) {
        (Some(t), Some(secs)) => Ok((commit, t.to_string(), utc_timestamp(secs))),
        _ => bail!("git log gave no tree or committer date for {commit}"),
    }
}

/// Seconds since the epoch as one UTC form, `2026-12-01T08:42:10Z`, whatever git's version
/// or `TZ` (git 2.39 writes `%cI` as `+00:00`, git 2.47 as `Z`): it goes into the image's
/// version banner and the cache key.
pub fn utc_timestamp(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = crate::state::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// None when the working state is `head`'s tree; otherwise a digest of `git diff HEAD` and the
/// untracked (not ignored) files. Staging (`git add`) changes neither: a build compiles the
/// files, not the index.
///
/// git answers from its index's stat data, hashing only the files whose stat changed, and a
/// refresh writes what it hashed back into the index. The tree's own index is never written
/// (the user may be working in the tree: we take no lock of theirs), so after a copy of the
/// tree, a `touch`, or a checkout's racily-clean files, every run would hash the whole tree
/// again (6 s on the 6.1 tree). So git reads and refreshes a private index of ours instead,
/// with the untracked cache on, which spares it most of the untracked walk too; when that
/// index cannot be made (another run holds its lock), the tree's own is read as it is.
fn working_state_digest(tree: &Path, head: &str, index: &Path) -> Result<Option<String>> {
    let private = match prepare_index(tree, head, index) {
        Ok(()) => Some(index),
        Err(e) if crate::signals::is_interrupted(&e) => return Err(e),
        Err(_) => None,
    };
    let git = |args: &[&str]| {
        let mut c = match private {
            Some(index) => git::with_index(tree, index),
            None => git::git(tree),
        };
        c.args(args);
        c
    };
    let status = git(&[
        "-c",
        "core.untrackedCache=true",
        "status",
        "--porcelain",
        "-z",
        "--untracked-files=normal",
    ])
    .output_logged()
    .context("reading the tree's status")?;
    if status.stdout.is_empty() {
        return Ok(None);
    }
    let diff = git(&["diff", "HEAD", "--binary", "--no-ext-diff", "--no-color"])
        .output_logged()
        .context("reading the tree's uncommitted changes")?;
    let listed = git(&["ls-files", "--others", "--exclude-standard", "-z"]).output_logged()?;
    let mut untracked = Vec::new();
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let path = tree.join(&name);
        let data = match std::fs::read_link(&path) {
            Ok(target) => target.as_os_str().as_encoded_bytes().to_vec(),
            Err(_) => {
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
            }
        };
        untracked.push((name, data));
    }
    Ok(Some(dirty_digest(&diff.stdout, &untracked)))
}

/// The state's private git index of `tree` (see [`working_state_digest`]).
pub fn working_index(state: &StateDir, tree: &Path) -> PathBuf {
    state
        .root
        .join("git-index")
        .join(path_tag(tree))
        .join("index")
}

/// Makes the private `index` hold `head`'s tree, unless it already does (its `.head` file
/// names the commit it was made for). A new one starts as a copy of the tree's own index, whose
/// stat data spares hashing the files that did not change; `read-tree -m` then keeps the stat
/// data of every entry whose content is `head`'s.
fn prepare_index(tree: &Path, head: &str, index: &Path) -> Result<()> {
    let made_for = index.with_file_name("head");
    if index.exists() && std::fs::read_to_string(&made_for).is_ok_and(|h| h == head) {
        return Ok(());
    }
    if let Some(dir) = index.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if !index.exists() {
        let sh = shell()?;
        let theirs =
            git::line(cmd!(sh, "git -C {tree} rev-parse --git-path index")).read_logged()?;
        // A tree without an index yet: git makes ours from nothing.
        let _ = copy_index(&tree.join(theirs), index);
    }
    let merged = git::with_index(tree, index)
        .args(["read-tree", "-m", head])
        .output_logged();
    if let Err(e) = merged {
        if crate::signals::is_interrupted(&e) {
            return Err(e);
        }
        // A copy with unmerged entries (a conflict under way) cannot be merged: start afresh.
        git::with_index(tree, index)
            .args(["read-tree", head])
            .output_logged()?;
    }
    crate::atomic::write(&made_for, head)
}

/// A short, stable name for a path: the build dir and worktree of each tree are named by it.
pub fn path_tag(path: &Path) -> String {
    let base = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    let hash = sha256_hex([path.as_os_str().as_encoded_bytes()]);
    format!("{base}-{}", &hash[..12])
}

/// The toolkit's worktree of `tree`: one per repository.
pub fn worktree_dir(state: &StateDir, tree: &Path) -> PathBuf {
    state.worktree().join(path_tag(tree))
}

/// Detaches the worktree at `commit`, creating it on first use. `checkout --force` also
/// repairs a worktree that an interrupted checkout left half-way; only changed files get new
/// mtimes, so the next build stays incremental. `locked_since`: when the caller took the
/// build dir's lock, under which alone we run git here; an `index.lock` older than that is a
/// killed run's, and is removed.
pub fn checkout_worktree(
    tree: &Path,
    worktree: &Path,
    commit: &str,
    locked_since: Option<SystemTime>,
) -> Result<()> {
    let sh = shell()?;
    let usable = worktree.join(".git").exists()
        && git::line(cmd!(sh, "git -C {worktree} rev-parse --git-dir"))
            .output_unchecked()
            .is_ok_and(|o| o.status.success());
    if usable {
        if let Some(since) = locked_since {
            recover_index_lock(worktree, since)?;
        }
        let at = git::line(cmd!(sh, "git -C {worktree} rev-parse HEAD"))
            .read_logged()
            .ok();
        if at.as_deref() == Some(commit) && is_clean(worktree)? {
            return Ok(());
        }
        // Dies with us: a checkout that ran on after a killed run would race the next one.
        git::line(cmd!(
            sh,
            "git -C {worktree} -c checkout.workers=0 checkout --quiet --force --detach {commit}"
        ))
        .die_with_us()
        .output_logged()
        .with_context(|| format!("checking out {commit} in {}", worktree.display()))?;
        return Ok(());
    }
    // A stale registration (the directory was deleted) would make `worktree add` refuse.
    git::line(cmd!(sh, "git -C {tree} worktree prune")).output_logged()?;
    if worktree.exists() {
        std::fs::remove_dir_all(worktree)
            .with_context(|| format!("removing the broken worktree {}", worktree.display()))?;
    }
    if let Some(parent) = worktree.parent() {
        std::fs::create_dir_all(parent)?;
    }
    eprintln!("creating the build worktree {} (once)", worktree.display());
    // `checkout.workers=0`: one checkout worker a core; the kernel's 80,000 files are written
    // in about two thirds of the time one worker takes here.
    git::line(cmd!(
        sh,
        "git -C {tree} -c checkout.workers=0 worktree add --quiet --force --detach {worktree} {commit}"
    ))
    .die_with_us()
    .output_logged()
    .with_context(|| format!("creating the worktree {}", worktree.display()))?;
    Ok(())
}

/// Copies a git index with its mtime: git trusts an entry's stat data only when the entry is
/// older than the index file (an entry as new as the index may be "racily clean", a file
/// changed in the second the index was written, so git compares its content), and a copy
/// with a new mtime would make every such entry look trustworthy.
fn copy_index(from: &Path, to: &Path) -> Result<()> {
    let modified = std::fs::metadata(from)?.modified()?;
    std::fs::copy(from, to)?;
    std::fs::File::options()
        .write(true)
        .open(to)?
        .set_modified(modified)?;
    Ok(())
}

/// Removes the worktree's `index.lock` when it is older than our hold on the build dir's
/// lock: git left it when a run of ours was killed mid-checkout, and every later checkout
/// would fail on it.
fn recover_index_lock(worktree: &Path, locked_since: SystemTime) -> Result<()> {
    let sh = shell()?;
    let Ok(git_dir) =
        git::line(cmd!(sh, "git -C {worktree} rev-parse --absolute-git-dir")).read_logged()
    else {
        return Ok(());
    };
    let lock = Path::new(&git_dir).join("index.lock");
    let Ok(modified) = std::fs::symlink_metadata(&lock).and_then(|m| m.modified()) else {
        return Ok(());
    };
    if is_stale(modified, locked_since) {
        std::fs::remove_file(&lock)
            .with_context(|| format!("removing the stale {}", lock.display()))?;
        eprintln!(
            "removed {}, which an interrupted checkout left",
            lock.display()
        );
    }
    Ok(())
}

/// Whether a lock file made at `made` predates our lock, taken at `locked_since` (a second's
/// slack for file systems with coarse times).
fn is_stale(made: SystemTime, locked_since: SystemTime) -> bool {
    made + std::time::Duration::from_secs(1) < locked_since
}

fn is_clean(dir: &Path) -> Result<bool> {
    let sh = shell()?;
    let out = git::line(cmd!(
        sh,
        "git -C {dir} status --porcelain -z --untracked-files=no"
    ))
    .output_logged()?;
    Ok(out.stdout.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn sh(dir: &Path, script: &str) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@t")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@t")
            .status()
            .unwrap()
            .success();
        assert!(ok, "{script}");
    }

    #[test]
    fn working_state_revisions_and_worktree() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(&repo, "git init -q && echo a > f && git add f && git commit -qm one && git tag one && echo b > f && git commit -qam two");
        let state = StateDir::new(t.path().join("state"));
        let resolve = |rev| resolve(&state, &repo, rev);

        let clean = resolve(None).unwrap();
        assert_eq!(clean.dirty, None);
        assert_eq!(clean.checkout, Checkout::WorkingState);
        let head = resolve(Some("HEAD")).unwrap();
        assert_eq!(head.tree_id, clean.tree_id);
        let one = resolve(Some("one")).unwrap();
        assert_ne!(one.tree_id, clean.tree_id);

        // An edit, then an untracked file, each give a different digest; ignored files do not.
        sh(&repo, "echo c > f");
        let edited = resolve(None).unwrap().dirty.expect("dirty");
        sh(&repo, "echo n > new");
        let with_new = resolve(None).unwrap().dirty.expect("dirty");
        assert_ne!(edited, with_new);
        sh(
            &repo,
            "echo new > .gitignore && git add .gitignore && git commit -qm ign && echo c > f",
        );
        let a = resolve(None).unwrap().dirty;
        sh(&repo, "echo other > new");
        assert_eq!(a, resolve(None).unwrap().dirty);

        let e = resolve(Some("nope")).unwrap_err().to_string();
        assert!(e.starts_with("unknown revision nope: not in"), "{e}");
        assert!(resolve(Some("--all")).is_err());

        // The worktree follows revisions and leaves the checkout alone.
        let before = std::fs::read(repo.join("f")).unwrap();
        let wt = t.path().join("state/worktree/x");
        checkout_worktree(&repo, &wt, &one.commit, None).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "a\n");
        checkout_worktree(&repo, &wt, &clean.commit, None).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "b\n");
        std::fs::write(wt.join("f"), "half-way").unwrap();
        checkout_worktree(&repo, &wt, &clean.commit, None).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "b\n");
        assert_eq!(std::fs::read(repo.join("f")).unwrap(), before);
        // A killed checkout's index.lock: kept while it may be live, removed once it predates
        // our lock.
        let git_dir = git::git(&wt)
            .args(["rev-parse", "--absolute-git-dir"])
            .read_logged()
            .unwrap();
        let lock = Path::new(&git_dir).join("index.lock");
        std::fs::write(&lock, "").unwrap();
        let now = SystemTime::now();
        assert!(checkout_worktree(
            &repo,
            &wt,
            &one.commit,
            Some(now - std::time::Duration::from_secs(60))
        )
        .is_err());
        checkout_worktree(
            &repo,
            &wt,
            &one.commit,
            Some(now + std::time::Duration::from_secs(5)),
        )
        .unwrap();
        assert!(!lock.exists());
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "a\n");
        checkout_worktree(&repo, &wt, &clean.commit, None).unwrap();
        // A deleted worktree is made again.
        std::fs::remove_dir_all(&wt).unwrap();
        checkout_worktree(&repo, &wt, &one.commit, None).unwrap();
        assert_eq!(std::fs::read_to_string(wt.join("f")).unwrap(), "a\n");
    }

    /// The working state is read through the private index, which a run refreshes: after a
    /// `touch` of every file the next run finds every stat matching (git hashes nothing), and
    /// the tree's own index is never written.
    #[test]
    fn the_private_index_is_refreshed_and_the_trees_is_untouched() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(&repo, "git init -q && for i in 1 2 3 4 5; do echo $i > f$i; done && git add . && git commit -qm one");
        let state = StateDir::new(t.path().join("state"));
        let theirs = std::fs::read(repo.join(".git/index")).unwrap();
        assert_eq!(resolve(&state, &repo, None).unwrap().dirty, None);
        let index = working_index(&state, &repo);
        // Stat data that no longer matches: new mtimes (and a later second than the index's).
        sh(&repo, "sleep 1 && touch f1 f2 f3 f4 f5");
        let stale = |index: &Path| {
            let out = git::with_index(&repo, index)
                .args(["diff-files", "--name-only"])
                .output_logged()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().count()
        };
        assert_eq!(stale(&index), 5);
        assert_eq!(resolve(&state, &repo, None).unwrap().dirty, None);
        assert_eq!(stale(&index), 0, "the refresh was written back");
        assert_eq!(std::fs::read(repo.join(".git/index")).unwrap(), theirs);
        // A new commit: the private index follows HEAD.
        sh(&repo, "echo x > f1 && git commit -qam two");
        assert_eq!(resolve(&state, &repo, None).unwrap().dirty, None);
        sh(&repo, "echo y > f1");
        assert!(resolve(&state, &repo, None).unwrap().dirty.is_some());
    }

    /// What is staged does not matter: the same files give the same digest.
    #[test]
    fn staging_leaves_the_digest_alone() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path().join("repo");
        std::fs::create_dir(&repo).unwrap();
        sh(
            &repo,
            "git init -q && echo a > f && echo b > g && git add . && git commit -qm one",
        );
        let state = StateDir::new(t.path().join("state"));
        let digest = || resolve(&state, &repo, None).unwrap().dirty.expect("dirty");
        sh(&repo, "echo c > f && echo n > new && rm g");
        let unstaged = digest();
        sh(&repo, "git add -A");
        assert_eq!(digest(), unstaged);
        sh(&repo, "git reset -q && git add new");
        assert_eq!(digest(), unstaged);
        // A private index that is gone is made again.
        std::fs::remove_file(working_index(&state, &repo)).unwrap();
        assert_eq!(digest(), unstaged);
    }

    #[test]
    fn path_tags_differ_by_path() {
        assert_ne!(
            path_tag(Path::new("/a/linux")),
            path_tag(Path::new("/b/linux"))
        );
        assert!(path_tag(Path::new("/a/linux")).starts_with("linux-"));
    }

    #[test]
    fn timestamps_are_one_utc_form() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_764_578_530), "2025-12-01T08:42:10Z");
        assert_eq!(utc_timestamp(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59Z");
    }
}
