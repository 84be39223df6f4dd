//! The bisect's thin git layer: its own worktree, `git bisect` in it (every mark names its
//! commit), the state git keeps, the culprit's facts and its revert. No decisions here.

use super::progress::{self, Progress};
use super::suspect::CulpritFacts;
use crate::cmd::CommandExt;
use crate::git::git;
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// The identity and date the revert is committed with: the same revert of the same commit on
/// the same end is the same commit, so its cache key is stable.
const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "xtask bisect"),
    ("GIT_AUTHOR_EMAIL", "xtask@localhost"),
    ("GIT_COMMITTER_NAME", "xtask bisect"),
    ("GIT_COMMITTER_EMAIL", "xtask@localhost"),
];

/// The commit `rev` names in `dir`.
pub fn rev_parse(dir: &Path, rev: &str) -> Result<String> {
    git(dir)
        .args(["rev-parse", "--verify", "--quiet", "--end-of-options"])
        .arg(format!("{rev}^{{commit}}"))
        .read_logged()
        .map_err(|e| {
            if crate::signals::is_interrupted(&e) {
                e
            } else {
                anyhow!("unknown revision {rev}: not in {}", dir.display())
            }
        })
}

pub fn subject(dir: &Path, commit: &str) -> String {
    git(dir)
        .args(["log", "-1", "--format=%s", commit])
        .read_logged()
        .unwrap_or_default()
}

/// The commits of `old..new` (those touching `paths`, if any given): a bisect's candidates,
/// or, with a tested commit as `new`, the candidates that are its ancestors (or itself).
pub fn range(dir: &Path, old: &str, new: &str, paths: &[String]) -> Result<Vec<String>> {
    let out = git(dir)
        .args(["rev-list", &format!("{old}..{new}"), "--"])
        .args(paths)
        .read_logged()
        .with_context(|| format!("git rev-list {old}..{new}"))?;
    Ok(out.lines().map(str::to_string).collect())
}

/// For each of `commits`, the commits of `old..commit`: its ancestors in the range, and itself.
pub fn ancestry<'a>(
    dir: &Path,
    old: &str,
    commits: impl IntoIterator<Item = &'a str>,
) -> Result<std::collections::HashMap<String, std::collections::HashSet<String>>> {
    let mut by = std::collections::HashMap::new();
    for c in commits {
        if !by.contains_key(c) {
            by.insert(
                c.to_string(),
                range(dir, old, c, &[])?.into_iter().collect(),
            );
        }
    }
    Ok(by)
}

/// How many commits lie in `old..new`.
pub fn count(dir: &Path, old: &str, new: &str) -> u32 {
    git(dir)
        .args(["rev-list", "--count", &format!("{old}..{new}")])
        .read_logged()
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// The bisect's worktree of `tree` at `dir`, made (detached) on first use; kept between
/// bisects so that later ones do not check out the whole tree again.
pub fn ensure_worktree(tree: &Path, dir: &Path, at: &str) -> Result<()> {
    let usable = dir.join(".git").exists()
        && git(dir)
            .args(["rev-parse", "--git-dir"])
            .output_unchecked()
            .is_ok_and(|o| o.status.success());
    if usable {
        return Ok(());
    }
    git(tree).args(["worktree", "prune"]).output_logged()?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the broken worktree {}", dir.display()))?;
    }
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    eprintln!("bisect: creating its worktree {} (once)", dir.display());
    // --force twice: a worktree removed by hand while its bisect held it locked stays
    // registered as "missing but locked", and one --force does not replace it.
    git(tree)
        .args([
            "worktree", "add", "--quiet", "--force", "--force", "--detach",
        ])
        .arg(dir)
        .arg(at)
        .output_logged()
        .with_context(|| format!("creating the bisect's worktree {}", dir.display()))?;
    Ok(())
}

/// The reason a bisect's worktree is locked with (`git worktree lock`) from its start to its
/// end or `--reset`, an interrupt and the `--resume` after it included: git then refuses to
/// move, remove or prune it, and `git worktree list` says why and how to end it.
pub const LOCK_REASON: &str =
    "a cargo xtask bisect is under way here: `cargo xtask bisect --resume` continues it, `cargo xtask bisect --reset` ends it";

/// The reason `wt` is locked with, if git holds it locked ("" for a lock with no reason).
pub fn worktree_lock(tree: &Path, wt: &Path) -> Option<String> {
    let list = git(tree)
        .args(["worktree", "list", "--porcelain"])
        .read_logged()
        .ok()?;
    let wt = std::fs::canonicalize(wt).unwrap_or_else(|_| wt.to_path_buf());
    lock_reason(&list, &wt)
}

/// In `git worktree list --porcelain`, the reason worktree `wt` is locked with, if it is.
fn lock_reason(list: &str, wt: &Path) -> Option<String> {
    list.split("\n\n")
        .find(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("worktree "))
                .is_some_and(|p| Path::new(p) == wt)
        })?
        .lines()
        .find_map(|l| l.strip_prefix("locked"))
        .map(|r| r.trim().to_string())
}

/// Locks `wt` for the bisect (kept locked if it is).
pub fn lock_worktree(tree: &Path, wt: &Path) -> Result<()> {
    if worktree_lock(tree, wt).is_some() {
        return Ok(());
    }
    git(tree)
        .args(["worktree", "lock", "--reason", LOCK_REASON])
        .arg(wt)
        .output_logged()
        .with_context(|| format!("locking the bisect's worktree {}", wt.display()))
        .map(drop)
}

/// Unlocks `wt` (quiet when it is not locked).
pub fn unlock_worktree(tree: &Path, wt: &Path) -> Result<()> {
    if worktree_lock(tree, wt).is_none() {
        return Ok(());
    }
    git(tree)
        .args(["worktree", "unlock"])
        .arg(wt)
        .output_logged()
        .with_context(|| format!("unlocking the bisect's worktree {}", wt.display()))
        .map(drop)
}

/// The bisect in worktree `wt`.
pub struct Bisect {
    pub wt: PathBuf,
}

impl Bisect {
    /// `git bisect start --term-old --term-new NEW OLD -- PATHS`; git's answer.
    pub fn start(
        &self,
        terms: (&str, &str),
        old: &str,
        new: &str,
        paths: &[String],
    ) -> Result<Option<Progress>> {
        let out = git(&self.wt)
            .arg("bisect")
            .arg("start")
            .arg(format!("--term-old={}", terms.0))
            .arg(format!("--term-new={}", terms.1))
            .args([new, old, "--"])
            .args(paths)
            .output_logged()
            .context("git bisect start")?;
        Ok(progress::parse(&text(&out)))
    }

    /// `git bisect TERM COMMIT`: marks the commit that was tested, whatever HEAD is.
    pub fn mark(&self, term: &str, commit: &str) -> Result<Option<Progress>> {
        let out = git(&self.wt)
            .args(["bisect", term, commit])
            .output_unchecked()?;
        let said = text(&out);
        let answer = progress::parse(&said);
        if !out.status.success() && answer.is_none() {
            bail!("git bisect {term} {commit} failed: {}", said.trim());
        }
        Ok(answer)
    }

    /// Whether git holds a bisect in the worktree.
    pub fn is_bisecting(&self) -> bool {
        git(&self.wt)
            .args(["bisect", "log"])
            .output_unchecked()
            .is_ok_and(|o| o.status.success())
    }

    /// The commit git checked out for the next test, and HEAD.
    pub fn expected_and_head(&self) -> Result<(String, String)> {
        let expected = git(&self.wt)
            .args(["rev-parse", "--verify", "--quiet", "BISECT_EXPECTED_REV"])
            .read_logged()
            .context("git keeps no BISECT_EXPECTED_REV: the bisect's git state is gone; `cargo xtask bisect --reset` and start again")?;
        let head = git(&self.wt).args(["rev-parse", "HEAD"]).read_logged()?;
        Ok((expected, head))
    }

    /// Puts HEAD back on `commit` (detached), as git's bisect state says it should be.
    pub fn restore(&self, commit: &str) -> Result<()> {
        git(&self.wt)
            .args(["checkout", "--quiet", "--force", "--detach", commit])
            .output_logged()
            .map(drop)
    }

    pub fn log(&self) -> String {
        git(&self.wt)
            .args(["bisect", "log"])
            .read_logged()
            .unwrap_or_default()
    }

    /// `git bisect reset` (to the worktree's HEAD before the start); quiet when not bisecting.
    pub fn reset(&self) -> Result<()> {
        if self.is_bisecting() {
            // The worktree is the bisect's own: a checkout that Ctrl-C ended half-way leaves
            // files that would stop git from going back.
            git(&self.wt)
                .args(["reset", "--hard", "--quiet"])
                .output_logged()?;
            git(&self.wt).args(["bisect", "reset"]).output_logged()?;
        }
        Ok(())
    }

    /// The culprit reverted on top of `on`, committed in the worktree with a fixed identity
    /// and `on`'s committer date; Err(why) when it does not apply (the worktree is left clean).
    pub fn revert(&self, culprit: &str, on: &str) -> Result<std::result::Result<String, String>> {
        self.restore(on)?;
        let date = git(&self.wt)
            .args(["log", "-1", "--format=%cD", on])
            .read_logged()?;
        let mut c = git(&self.wt);
        c.args(["revert", "--no-edit", culprit]);
        for (k, v) in IDENTITY {
            c.env(k, v);
        }
        c.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        let out = c.output_unchecked()?;
        if out.status.success() {
            return Ok(Ok(git(&self.wt)
                .args(["rev-parse", "HEAD"])
                .read_logged()?));
        }
        let why = text(&out)
            .lines()
            .find(|l| l.starts_with("CONFLICT") || l.starts_with("error:"))
            .unwrap_or("git revert failed")
            .to_string();
        let _ = git(&self.wt).args(["revert", "--abort"]).output_unchecked();
        self.restore(on)?;
        Ok(Err(why))
    }
}

/// What the culprit changes, against its first parent.
pub fn culprit_facts(tree: &Path, culprit: &str, arch_dir: &str) -> Result<CulpritFacts> {
    let parents = git(tree)
        .args(["rev-list", "--parents", "-n", "1", culprit])
        .read_logged()?
        .split_whitespace()
        .count()
        .saturating_sub(1);
    let range = [format!("{culprit}^"), culprit.to_string()];
    let files = git(tree)
        .args(["diff", "--name-only"])
        .args(&range)
        .read_logged()
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let diff = git(tree)
        .args(["diff", "-U0", "--no-color", "--no-ext-diff"])
        .args(&range)
        .read_logged()
        .unwrap_or_default();
    Ok(CulpritFacts {
        parents,
        files,
        diff,
        arch_dir: arch_dir.into(),
        same_kernel_as_parent: None,
    })
}

/// `git show --stat` of the culprit: subject, author and the files, for the report.
pub fn describe(tree: &Path, commit: &str) -> (String, String, String) {
    let show = git(tree)
        .args(["show", "--stat", "--format=%s%n%an <%ae>", commit])
        .read_logged()
        .unwrap_or_default();
    let mut lines = show.lines();
    let subject = lines.next().unwrap_or_default().to_string();
    let author = lines.next().unwrap_or_default().to_string();
    let stat = lines
        .skip_while(|l| l.trim().is_empty())
        .collect::<Vec<_>>();
    (subject, author, stat.join("\n"))
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worktrees_lock_is_read_from_gits_list() {
        let list = crate::test_data::recorded("bisect", "test_data/worktree_list_locked.txt");
        assert_eq!(lock_reason(&list, Path::new("/tmp/wtrec/a")), None);
        assert_eq!(
            lock_reason(&list, Path::new("/tmp/wtrec/b")).as_deref(),
            Some(LOCK_REASON)
        );
        assert_eq!(
            lock_reason(&list, Path::new("/tmp/wtrec/c")).as_deref(),
            Some("")
        );
        assert_eq!(lock_reason(&list, Path::new("/tmp/wtrec")), None);
        assert_eq!(lock_reason("", Path::new("/tmp/wtrec/b")), None);
    }
}
