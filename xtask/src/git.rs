//! The one git command builder: `git -C DIR …` with what every git call of ours gets (no
//! optional locks: a status's index refresh would take the index lock of a tree the user may be
//! working in), written as a line with xshell's `cmd!` ([`line`]) or built up ([`git`]), and
//! run through `CommandExt`; [`with_index`] reads a private index of ours instead; [`owned`]
//! adds the toolkit's identity for commits in trees it owns.

use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;
pub use xshell::{cmd, Shell};

/// Identity for commits the toolkit makes in trees it owns.
pub const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "xtask"),
    ("GIT_AUTHOR_EMAIL", "xtask@localhost"),
    ("GIT_COMMITTER_NAME", "xtask"),
    ("GIT_COMMITTER_EMAIL", "xtask@localhost"),
];

/// The shell `cmd!` lines are written against: the process's directory and environment,
/// nothing of its own (each line names its tree with `-C`).
pub fn shell() -> Result<Shell> {
    Shell::new().context("reading the current directory (is it gone? cd to one that exists)")
}

/// A git line written with `cmd!(sh, "git -C {dir} …")`, as a command for `CommandExt`.
pub fn line(cmd: xshell::Cmd<'_>) -> Command {
    with_our_env(Command::from(cmd))
}

/// `git -C dir`, for callers that add the arguments themselves.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    with_our_env(c)
}

/// `git -C dir` with `index` in place of the tree's own index: a private index in the state
/// dir, which only we use, so git may refresh and write it (optional locks on: nobody else
/// takes its lock).
pub fn with_index(dir: &Path, index: &Path) -> Command {
    let mut c = Command::new("git");
    c.env("GIT_INDEX_FILE", index).arg("-C").arg(dir);
    c
}

/// As [`git`], committing as the toolkit: only for trees it owns (the linux-source tree, the
/// synthetic bisect history).
pub fn owned(dir: &Path) -> Command {
    let mut c = git(dir);
    c.envs(IDENTITY);
    c
}

fn with_our_env(mut c: Command) -> Command {
    c.env("GIT_OPTIONAL_LOCKS", "0");
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_becomes_the_command_it_reads_as() {
        let sh = shell().unwrap();
        let (dir, spec) = (Path::new("/a tree"), "v6.1^{commit}");
        let c = line(cmd!(sh, "git -C {dir} rev-parse --verify {spec}"));
        assert_eq!(
            crate::cmd::display(&c),
            "GIT_OPTIONAL_LOCKS=0 git -C '/a tree' rev-parse --verify 'v6.1^{commit}'"
        );
        assert_eq!(
            crate::cmd::display(git(dir).arg("status")),
            "GIT_OPTIONAL_LOCKS=0 git -C '/a tree' status"
        );
        assert!(crate::cmd::display(&owned(dir)).contains("GIT_COMMITTER_NAME=xtask"));
        let private = with_index(dir, Path::new("/s/index"));
        assert_eq!(
            crate::cmd::display(&private),
            "GIT_INDEX_FILE=/s/index git -C '/a tree'"
        );
    }
}
