//! The bisect's thin git layer: its own worktree, `git bisect` in it (every mark names its
//! commit), the state git keeps, the culprit's facts and its revert. No decisions here.
//!
//! The worktree holds no files: it is added with `--no-checkout` and git bisects in it with
//! `--no-checkout`, so the candidate is `BISECT_HEAD` and no step writes the kernel's 80,000
//! files (the build checks each commit out in its own worktree anyway).

use super::progress::{self, Progress};
use super::suspect::CulpritFacts;
use crate::cmd::CommandExt;
use crate::git::{git, with_index};
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

/// `commit`'s committer date, as git prints it for `GIT_COMMITTER_DATE`.
fn committer_date(dir: &Path, commit: &str) -> Result<String> {
    git(dir)
        .args(["log", "-1", "--format=%cD", commit])
        .read_logged()
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

/// The bisect's worktree of `tree` at `dir`, made (detached, with no files) on first use and
/// kept between bisects.
pub fn ensure_worktree(tree: &Path, dir: &Path, at: &str) -> Result<()> {
    // A worktree with files is one an older toolkit checked out: it is made again, empty.
    let only_git = std::fs::read_dir(dir).is_ok_and(|d| d.count() == 1);
    let usable = only_git
        && dir.join(".git").exists()
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
            "worktree",
            "add",
            "--quiet",
            "--force",
            "--force",
            "--detach",
            "--no-checkout",
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
    /// `git bisect start --no-checkout --term-old --term-new NEW OLD -- PATHS`; git's answer.
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
            .arg("--no-checkout")
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

    /// The commit git chose for the next test, and `BISECT_HEAD` (where it put it).
    pub fn expected_and_head(&self) -> Result<(String, String)> {
        let expected = git(&self.wt)
            .args(["rev-parse", "--verify", "--quiet", "BISECT_EXPECTED_REV"])
            .read_logged()
            .context("git keeps no BISECT_EXPECTED_REV: the bisect's git state is gone; `cargo xtask bisect --reset` and start again")?;
        let head = git(&self.wt)
            .args(["rev-parse", "--verify", "--quiet", "BISECT_HEAD"])
            .read_logged()
            .context("git keeps no BISECT_HEAD: the bisect's git state is gone; `cargo xtask bisect --reset` and start again")?;
        Ok((expected, head))
    }

    /// Puts `BISECT_HEAD` back on `commit`, as git's bisect state says it should be.
    pub fn restore(&self, commit: &str) -> Result<()> {
        git(&self.wt)
            .args(["update-ref", "--no-deref", "BISECT_HEAD", commit])
            .output_logged()
            .map(drop)
    }

    pub fn log(&self) -> String {
        git(&self.wt)
            .args(["bisect", "log"])
            .read_logged()
            .unwrap_or_default()
    }

    /// `git bisect reset` (no checkout: the worktree has no files); quiet when not bisecting.
    pub fn reset(&self) -> Result<()> {
        if self.is_bisecting() {
            git(&self.wt).args(["bisect", "reset"]).output_logged()?;
        }
        Ok(())
    }

    /// The culprit reverted on top of `on` (against its first parent), committed with a fixed
    /// identity, `on`'s committer date and `git revert`'s message: the same commit `git revert`
    /// makes. Done in a private index, with no files; Err(why) when the reverse patch does not
    /// apply to `on`, even three-way.
    pub fn revert(&self, culprit: &str, on: &str) -> Result<std::result::Result<String, String>> {
        let tmp = tempfile::tempdir()?;
        let index = tmp.path().join("index");
        with_index(&self.wt, &index)
            .args(["read-tree", on])
            .output_logged()?;
        let patch = tmp.path().join("revert.patch");
        git(&self.wt)
            .args([
                "diff",
                "--binary",
                "--no-color",
                "--no-ext-diff",
                "--no-renames",
            ])
            .arg(format!("--output={}", patch.display()))
            .arg(culprit)
            .arg(format!("{culprit}^"))
            .output_logged()?;
        let out = with_index(&self.wt, &index)
            .args(["apply", "--cached", "--3way"])
            .arg(&patch)
            .output_unchecked()?;
        if !out.status.success() {
            let said = text(&out);
            let why = said
                .lines()
                .find(|l| l.starts_with("error:") || l.contains("conflict"))
                .unwrap_or("git apply --cached of the reverse patch failed")
                .to_string();
            return Ok(Err(why));
        }
        let tree = with_index(&self.wt, &index)
            .arg("write-tree")
            .read_logged()?;
        let date = committer_date(&self.wt, on)?;
        let message = format!(
            "Revert \"{}\"\n\nThis reverts commit {culprit}.",
            subject(&self.wt, culprit)
        );
        let mut c = git(&self.wt);
        c.args(["commit-tree", &tree, "-p", on, "-m", &message]);
        for (k, v) in IDENTITY {
            c.env(k, v);
        }
        c.env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        Ok(Ok(c.read_logged()?))
    }
}

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

    /// A repo of four commits, each changing its own line of file `f`: `base`, `one`, `two`
    /// (the culprit), `three`.
    fn repo() -> (tempfile::TempDir, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = crate::git::owned(dir.path()).args(args).output().unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        run(&["init", "--quiet"]);
        let mut lines: Vec<String> = (0..40).map(|n| format!("line {n}")).collect();
        let mut ids = Vec::new();
        for (i, name) in ["base", "one", "two", "three"].iter().enumerate() {
            lines[i * 10] = name.to_string();
            std::fs::write(dir.path().join("f"), lines.join("\n") + "\n").unwrap();
            run(&["add", "f"]);
            run(&["commit", "--quiet", "-m", name]);
            ids.push(run(&["rev-parse", "HEAD"]));
        }
        (dir, ids)
    }

    #[test]
    fn the_revert_is_the_commit_git_revert_makes_and_touches_no_files() {
        let (dir, ids) = repo();
        let wt = dir.path().join("wt");
        ensure_worktree(dir.path(), &wt, &ids[3]).unwrap();
        assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 1, "only .git");
        let bisect = Bisect { wt: wt.clone() };
        let ours = bisect.revert(&ids[2], &ids[3]).unwrap().unwrap();
        assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 1, "only .git");
        // git's own revert, in a checkout of the same end, with the same identity and date.
        let date = committer_date(dir.path(), &ids[3]).unwrap();
        let mut c = git(dir.path());
        c.args(["revert", "--no-edit", &ids[2]]);
        for (k, v) in IDENTITY {
            c.env(k, v);
        }
        let out = c
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let theirs = rev_parse(dir.path(), "HEAD").unwrap();
        assert_eq!(ours, theirs);
        // A revert that cannot apply, even three-way, is an answer, not an error.
        std::fs::write(dir.path().join("f"), "nothing in common\n").unwrap();
        let out = crate::git::owned(dir.path())
            .args(["commit", "--quiet", "-am", "rewrite"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let rewritten = rev_parse(dir.path(), "HEAD").unwrap();
        let why = bisect.revert(&ids[2], &rewritten).unwrap().unwrap_err();
        assert!(!why.is_empty());
    }

    #[test]
    fn git_bisects_with_no_checkout_and_its_head_is_restored() {
        let (dir, ids) = repo();
        let wt = dir.path().join("wt");
        ensure_worktree(dir.path(), &wt, &ids[3]).unwrap();
        let bisect = Bisect { wt: wt.clone() };
        let answer = bisect
            .start(("good", "bad"), &ids[0], &ids[3], &[])
            .unwrap();
        assert!(answer.is_some());
        let (expected, head) = bisect.expected_and_head().unwrap();
        assert_eq!(expected, head);
        assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 1, "only .git");
        // One that an older toolkit checked out is made again, with no files.
        bisect.reset().unwrap();
        std::fs::write(wt.join("f"), "a file\n").unwrap();
        ensure_worktree(dir.path(), &wt, &ids[3]).unwrap();
        assert_eq!(std::fs::read_dir(&wt).unwrap().count(), 1, "only .git");
        bisect
            .start(("good", "bad"), &ids[0], &ids[3], &[])
            .unwrap();
        bisect.restore(&ids[0]).unwrap();
        assert_eq!(bisect.expected_and_head().unwrap().1, ids[0]);
        bisect.restore(&expected).unwrap();
        bisect.reset().unwrap();
        assert!(!bisect.is_bisecting());
    }
}
