//! The one git command builder: `git -C DIR …`, committing as the toolkit.

use std::path::Path;
use std::process::Command;

/// Identity for commits the toolkit makes in trees it owns.
pub const IDENTITY: [(&str, &str); 4] = [
    ("GIT_AUTHOR_NAME", "xtask"),
    ("GIT_AUTHOR_EMAIL", "xtask@localhost"),
    ("GIT_COMMITTER_NAME", "xtask"),
    ("GIT_COMMITTER_EMAIL", "xtask@localhost"),
];

/// A git command in `dir` with a fixed identity.
pub fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    for (k, v) in IDENTITY {
        c.env(k, v);
    }
    c
}
