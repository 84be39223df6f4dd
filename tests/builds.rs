//! Helpers for the tests of `build`: runs of `cargo xtask build` with their command log,
//! edits of the fixture tree that are undone even on a panic, and side commits.

use crate::{code, stderr, stdout, Fixture};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A file of the tree that every config compiles.
pub const EDITED: &str = "init/version.c";

/// Restores files of the tree (their bytes, or their absence) when dropped, even on a panic.
#[derive(Default)]
pub struct Restore {
    saved: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Restore {
    pub fn new() -> Restore {
        Restore::default()
    }

    pub fn write(&mut self, path: PathBuf, data: &[u8]) {
        if !self.saved.iter().any(|(p, _)| *p == path) {
            self.saved.push((path.clone(), std::fs::read(&path).ok()));
        }
        std::fs::write(&path, data).unwrap();
    }

    pub fn append(&mut self, path: PathBuf, text: &str) {
        let mut data = std::fs::read(&path).unwrap();
        data.extend_from_slice(text.as_bytes());
        self.write(path, &data);
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        for (path, data) in self.saved.drain(..).rev() {
            match data {
                Some(d) => std::fs::write(&path, d).unwrap(),
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

/// One `build` run: its output, how long it took, and its command log.
pub struct Run {
    pub out: Output,
    pub took: Duration,
    pub commands: String,
}

impl Run {
    pub fn make_runs(&self) -> usize {
        self.commands
            .lines()
            .filter(|l| l.starts_with('+') && l.contains(" make "))
            .count()
    }
}

pub fn build(f: &Fixture, args: &[&str]) -> Run {
    let (out, took, pid) = crate::run_with_pid(f.xtask().arg("build").args(args));
    Run {
        commands: command_log(&f.state, pid),
        out,
        took,
    }
}

/// The command log of the `build` run with this pid.
pub fn command_log(state: &Path, pid: u32) -> String {
    let suffix = format!("-build-{pid}");
    // Empty until the run has made its directory.
    std::fs::read_dir(state.join("runs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().ends_with(&suffix))
        .and_then(|dir| std::fs::read_to_string(dir.path().join("commands.log")).ok())
        .unwrap_or_default()
}

pub fn git(tree: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(tree)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// What the checkout looks like to git, byte for byte.
pub fn checkout_state(tree: &Path) -> (String, String, String) {
    (
        git(tree, &["status", "--porcelain", "--untracked-files=all"]),
        git(tree, &["diff", "HEAD", "--binary"]),
        git(tree, &["rev-parse", "HEAD"]),
    )
}

/// The entry directory a successful build printed.
pub fn entry_of(run: &Run) -> String {
    stdout(&run.out)
        .lines()
        .find_map(|l| l.strip_prefix("entry:").map(|s| s.trim().to_string()))
        .expect("an entry line")
}

/// A number no earlier run used.
pub fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Builds the clean working state (a cache hit when the fixture's HEAD was built already).
pub fn clean_build(f: &Fixture) -> Run {
    let r = build(f, &[]);
    assert_eq!(code(&r.out), 0);
    r
}

/// A commit of the tree with one changed line, made without touching the checkout, its
/// index or its refs (only unreachable objects are added, which git gc drops).
pub fn side_commit(tree: &Path) -> String {
    let mut text = git(tree, &["show", &format!("HEAD:{EDITED}")]);
    // Unique per run, so that the revision is built, not found in the cache.
    text.push_str(&format!(
        "\n/* xtask e2e: another revision, {} */\n",
        unique()
    ));
    commit_with(tree, EDITED, &text)
}

/// A commit on HEAD where `path` holds `text`, made without touching the checkout, its index
/// or its refs. Its author, committer and dates are fixed: the same text gives the same commit.
pub fn commit_with(tree: &Path, path: &str, text: &str) -> String {
    let head = git(tree, &["rev-parse", "HEAD"]).trim().to_string();
    commit_on(tree, &head, path, text, "xtask e2e")
}

/// As [`commit_with`], on `parent`, with this subject.
pub fn commit_on(tree: &Path, parent: &str, path: &str, text: &str, subject: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let index = scratch.path().join("index");
    let blob_src = scratch.path().join("blob");
    let head = parent.to_string();
    std::fs::write(&blob_src, text).unwrap();
    let with_index = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(tree)
            .args(args)
            .env("GIT_INDEX_FILE", &index)
            .env("GIT_AUTHOR_NAME", "xtask e2e")
            .env("GIT_AUTHOR_EMAIL", "e2e@xtask")
            .env("GIT_COMMITTER_NAME", "xtask e2e")
            .env("GIT_COMMITTER_EMAIL", "e2e@xtask")
            .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        stdout(&out).trim().to_string()
    };
    with_index(&["read-tree", &head]);
    let blob = with_index(&["hash-object", "-w", blob_src.to_str().unwrap()]);
    with_index(&[
        "update-index",
        "--cacheinfo",
        &format!("100644,{blob},{path}"),
    ]);
    let new_tree = with_index(&["write-tree"]);
    with_index(&["commit-tree", &new_tree, "-p", &head, "-m", subject])
}
