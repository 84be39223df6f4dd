//! Synthetic kernel histories for the bisect test and benchmark: N commits on top of a real
//! tree, each changing real files (comments, code), one of them adding a boot-time warning
//! and optionally one breaking the build (fixed by the next). Commits are written with git's
//! plumbing into a private index, so no checkout is touched.

use crate::cmd::CommandExt;
use crate::git::owned;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::Path;
use std::process::Stdio;

/// What one commit of the history does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Appends a comment to a file (compiled or not).
    Comment(&'static str),
    /// Adds a global to a compiled file: the image changes, behaviour does not.
    Code(&'static str),
    /// Adds `WARN(1, …)` after do_basic_setup() in init/main.c: every later kernel warns at boot.
    Warn,
    /// Adds an `#error` to a compiled file: this commit does not build.
    Break,
    /// Removes that `#error` again.
    Fix,
    /// Adds a `late_initcall` that warns at boot in kernel/fork.c: a failure other than the
    /// culprit's (another kind of trouble in another place), for `bisect`'s target symptom.
    OtherWarn,
    /// Removes that warning again.
    OtherFix,
    /// Prints a marker line at boot after do_basic_setup(): a check tells the kernels with it
    /// apart (the flaky bisect's culprit).
    Marker,
    /// Adds `mdelay(200)` after do_basic_setup(): every later boot is 200 ms slower.
    Delay,
    /// Declares a new global in a header that most of the kernel includes: every file that
    /// includes it compiles again (what ccache's effect on a bisect is measured with).
    Header(&'static str),
}

/// Files that a trimmed config compiles, and one it does not.
const COMPILED: [&str; 6] = [
    "kernel/fork.c",
    "kernel/exit.c",
    "fs/open.c",
    "fs/read_write.c",
    "mm/mmap.c",
    "lib/string.c",
];
const NOT_COMPILED: &str = "Documentation/process/howto.rst";
/// Headers that most compiled files include, each by another set of files.
const WIDE_HEADERS: [&str; 4] = [
    "include/linux/slab.h",
    "include/linux/fs.h",
    "include/linux/mm.h",
    "include/linux/sched.h",
];
/// The file the build break goes into.
const BREAK_FILE: &str = "kernel/panic.c";
const BREAK_LINE: &str = "#error \"xtask history: this commit does not build\"\n";
const WARN_ANCHOR: &str = "\tdo_basic_setup();\n";
const WARN_LINE: &str = "\tWARN(1, \"xtask history: injected boot warning\\n\");\n";
const OTHER_FILE: &str = "kernel/fork.c";
const OTHER_WARN: &str = "static int __init xtask_history_other(void)\n{\n\tWARN(1, \"xtask history: another warning\\n\");\n\treturn 0;\n}\nlate_initcall(xtask_history_other);\n";
/// What [`Change::Marker`] prints at boot.
pub const MARKER: &str = "xtask history: marker";
const DELAY_LINE: &str = "\tmdelay(200); /* xtask history: 200 ms at boot */\n";

/// A change by the name `make-history --changes` gives it.
pub fn change_named(name: &str) -> Result<Change> {
    Ok(match name {
        "comment" => Change::Comment(COMPILED[0]),
        "code" => Change::Code(COMPILED[2]),
        "warn" => Change::Warn,
        "break" => Change::Break,
        "fix" => Change::Fix,
        "other-warn" => Change::OtherWarn,
        "other-fix" => Change::OtherFix,
        "marker" => Change::Marker,
        "delay" => Change::Delay,
        _ => bail!("no change named {name:?}: comment, code, warn, break, fix, other-warn, other-fix, marker or delay"),
    })
}

/// The plan: `n` commits, the warning at index `culprit` (0-based), a broken commit at
/// `broken` (fixed at `broken + 1`) when given. Others alternate comments and code.
pub fn plan(n: usize, culprit: usize, broken: Option<usize>) -> Result<Vec<Change>> {
    if culprit >= n {
        bail!("culprit {culprit} is outside a history of {n} commits");
    }
    if let Some(b) = broken {
        if b + 1 >= n || b == culprit || b + 1 == culprit {
            bail!("the broken commit {b} and its fix must lie inside the history and apart from the culprit");
        }
    }
    Ok((0..n)
        .map(|i| {
            if i == culprit {
                Change::Warn
            } else if Some(i) == broken {
                Change::Break
            } else if broken.is_some_and(|b| i == b + 1) {
                Change::Fix
            } else if i % 3 == 2 {
                Change::Code(COMPILED[i % COMPILED.len()])
            } else if i % 5 == 4 {
                Change::Comment(NOT_COMPILED)
            } else {
                Change::Comment(COMPILED[i % COMPILED.len()])
            }
        })
        .collect())
}

/// As [`plan`], but every fourth commit (from the second on) declares a global in a widely
/// included header, each time another one: a history on which a plain incremental step
/// recompiles hundreds of files, most of which some earlier build already compiled.
pub fn header_plan(n: usize, culprit: usize) -> Result<Vec<Change>> {
    let mut changes = plan(n, culprit, None)?;
    for (i, c) in changes.iter_mut().enumerate() {
        if i % 4 == 1 && i != culprit {
            *c = Change::Header(WIDE_HEADERS[(i / 4) % WIDE_HEADERS.len()]);
        }
    }
    Ok(changes)
}

/// The new content of the file a change touches, from its old content.
pub fn apply(change: &Change, index: usize, old: &str) -> Result<(&'static str, String)> {
    Ok(match change {
        Change::Comment(f) if f.ends_with(".c") => {
            (f, format!("{old}/* xtask history: commit {index} */\n"))
        }
        Change::Comment(f) => (f, format!("{old}\n.. xtask history: commit {index}\n")),
        Change::Code(f) => (f, format!("{old}int xtask_history_{index} = {index};\n")),
        // After the include guard: a repeated `extern` declaration is valid C.
        Change::Header(f) => (f, format!("{old}extern int xtask_history_{index};\n")),
        Change::Warn | Change::Delay | Change::Marker => {
            if !old.contains(WARN_ANCHOR) {
                bail!("init/main.c has no `do_basic_setup();` line to put the change after");
            }
            let line = match change {
                Change::Warn => WARN_LINE.to_string(),
                Change::Delay => DELAY_LINE.to_string(),
                _ => format!("\tpr_info(\"{MARKER}\\n\");\n"),
            };
            (
                "init/main.c",
                old.replacen(WARN_ANCHOR, &format!("{WARN_ANCHOR}{line}"), 1),
            )
        }
        Change::OtherWarn => (OTHER_FILE, format!("{old}{OTHER_WARN}")),
        Change::OtherFix => (OTHER_FILE, old.replacen(OTHER_WARN, "", 1)),
        Change::Break => (BREAK_FILE, format!("{old}{BREAK_LINE}")),
        Change::Fix => (BREAK_FILE, old.replacen(BREAK_LINE, "", 1)),
    })
}

fn path_of(change: &Change) -> &'static str {
    match change {
        Change::Comment(f) | Change::Code(f) | Change::Header(f) => f,
        Change::Warn | Change::Delay | Change::Marker => "init/main.c",
        Change::Break | Change::Fix => BREAK_FILE,
        Change::OtherWarn | Change::OtherFix => OTHER_FILE,
    }
}

fn subject(change: &Change, i: usize) -> String {
    match change {
        Change::Comment(f) => format!("history {i}: comment in {f}"),
        Change::Code(f) => format!("history {i}: a global in {f}"),
        Change::Warn => format!("history {i}: init: warn at boot"),
        Change::Break => format!("history {i}: panic: break the build"),
        Change::Fix => format!("history {i}: panic: fix the build"),
        Change::OtherWarn => format!("history {i}: fork: warn at boot"),
        Change::OtherFix => format!("history {i}: fork: no warning at boot"),
        Change::Marker => format!("history {i}: init: print a marker at boot"),
        Change::Delay => format!("history {i}: init: 200 ms more at boot"),
        Change::Header(f) => format!("history {i}: a declaration in {f}"),
    }
}

/// Writes the history on top of `base` as branch `branch` in `tree`; returns the commit ids
/// in order. The tree's checkout and index are not touched.
pub fn write(tree: &Path, base: &str, branch: &str, changes: &[Change]) -> Result<Vec<String>> {
    let tmp = tempfile::tempdir()?;
    let index = tmp.path().join("index");
    let g = |args: &[&str]| -> Result<String> {
        let mut c = owned(tree);
        c.env("GIT_INDEX_FILE", &index).args(args);
        c.read_logged()
    };
    let mut parent = g(&["rev-parse", "--verify", &format!("{base}^{{commit}}")])
        .with_context(|| format!("{base} is not a commit"))?;
    g(&["read-tree", &parent])?;
    let mut ids = Vec::new();
    for (i, change) in changes.iter().enumerate() {
        let path = path_of(change);
        let old = g(&["cat-file", "blob", &format!("{parent}:{path}")]).map(|s| s + "\n")?;
        let (path, new) = apply(change, i, &old)?;
        let mut c = owned(tree);
        let mut child = c
            .args(["hash-object", "-w", "--stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(new.as_bytes())?;
        let out = child.wait_with_output()?;
        let blob = String::from_utf8_lossy(&out.stdout).trim().to_string();
        g(&[
            "update-index",
            "--cacheinfo",
            &format!("100644,{blob},{path}"),
        ])?;
        let tree_id = g(&["write-tree"])?;
        // A fixed date per commit makes the history, and so the bisect, reproducible.
        let date = format!("{} +0000", 1_700_000_000 + i * 60);
        let mut c = owned(tree);
        c.env("GIT_INDEX_FILE", &index)
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date);
        parent = c
            .args([
                "commit-tree",
                &tree_id,
                "-p",
                &parent,
                "-m",
                &subject(change, i),
            ])
            .read_logged()?;
        ids.push(parent.clone());
    }
    g(&["update-ref", &format!("refs/heads/{branch}"), &parent])?;
    Ok(ids)
}

/// `make-history`: writes `changes` on `base` as `branch` of the tree and prints one commit
/// id a line, oldest first.
pub fn run(ctx: &crate::ctx::Ctx, base: &str, branch: &str, changes: &[Change]) -> Result<u8> {
    let tree = ctx.require_tree()?;
    for id in write(&tree, base, branch, changes)? {
        println!("{id}");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_places_culprit_break_and_fix() {
        let p = plan(16, 11, Some(7)).unwrap();
        assert_eq!(p.len(), 16);
        assert_eq!(p[11], Change::Warn);
        assert_eq!(p[7], Change::Break);
        assert_eq!(p[8], Change::Fix);
        assert!(p.iter().any(|c| matches!(c, Change::Code(_))));
        assert!(p
            .iter()
            .any(|c| matches!(c, Change::Comment(f) if !f.ends_with(".c"))));
        assert!(plan(4, 4, None).is_err());
        assert!(plan(16, 8, Some(7)).is_err());
    }

    #[test]
    fn a_header_plan_touches_a_wide_header_every_fourth_commit() {
        let p = header_plan(16, 9).unwrap();
        let headers: Vec<usize> = (0..16)
            .filter(|&i| matches!(p[i], Change::Header(_)))
            .collect();
        assert_eq!(headers, [1, 5, 13], "the culprit (9) stays the warning");
        assert_eq!(p[9], Change::Warn);
        assert_ne!(p[1], p[5], "another header each time");
        let (path, new) = apply(&p[1], 1, "#endif\n").unwrap();
        assert_eq!(path, "include/linux/slab.h");
        assert_eq!(new, "#endif\nextern int xtask_history_1;\n");
    }

    #[test]
    fn warn_goes_after_basic_setup() {
        let old = "a\n\tdo_basic_setup();\nb\n";
        let (path, new) = apply(&Change::Warn, 3, old).unwrap();
        assert_eq!(path, "init/main.c");
        assert!(new.contains("do_basic_setup();\n\tWARN(1,"));
        assert!(apply(&Change::Warn, 3, "nothing").is_err());
        let (_, broken) = apply(&Change::Break, 1, "x\n").unwrap();
        let (_, fixed) = apply(&Change::Fix, 2, &broken).unwrap();
        assert_eq!(fixed, "x\n");
        let (path, other) = apply(&Change::OtherWarn, 1, "x\n").unwrap();
        assert_eq!(path, "kernel/fork.c");
        assert!(other.contains("late_initcall(xtask_history_other);"));
        assert_eq!(apply(&Change::OtherFix, 2, &other).unwrap().1, "x\n");
        let (_, slow) = apply(&Change::Delay, 4, old).unwrap();
        let (_, both) = apply(&Change::Marker, 5, &slow).unwrap();
        assert!(both.contains(
            "do_basic_setup();\n\tpr_info(\"xtask history: marker\\n\");\n\tmdelay(200);"
        ));
        assert!(change_named("delay").is_ok() && change_named("nope").is_err());
    }

    #[test]
    fn writes_commits_without_touching_the_checkout() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        for (f, body) in [
            ("init/main.c", "int x;\n\tdo_basic_setup();\n"),
            (BREAK_FILE, "int p;\n"),
        ] {
            std::fs::create_dir_all(t.join(f).parent().unwrap()).unwrap();
            std::fs::write(t.join(f), body).unwrap();
        }
        for f in COMPILED.iter().chain([&NOT_COMPILED]) {
            std::fs::create_dir_all(t.join(f).parent().unwrap()).unwrap();
            std::fs::write(t.join(f), "/* file */\n").unwrap();
        }
        owned(t).args(["init", "-q"]).output_logged().unwrap();
        owned(t).args(["add", "-A"]).output_logged().unwrap();
        owned(t)
            .args(["commit", "-qm", "base"])
            .output_logged()
            .unwrap();
        let ids = write(t, "HEAD", "hist", &plan(6, 4, Some(1)).unwrap()).unwrap();
        assert_eq!(ids.len(), 6);
        let main = owned(t)
            .args(["show", "hist:init/main.c"])
            .read_logged()
            .unwrap();
        assert!(main.contains("WARN(1"));
        let panic = owned(t)
            .args(["show", &format!("{}:{BREAK_FILE}", ids[1])])
            .read_logged()
            .unwrap();
        assert!(panic.contains("#error"));
        let panic = owned(t)
            .args(["show", &format!("hist:{BREAK_FILE}")])
            .read_logged()
            .unwrap();
        assert!(!panic.contains("#error"));
        let status = owned(t)
            .args(["status", "--porcelain"])
            .read_logged()
            .unwrap();
        assert_eq!(status, "", "the checkout changed");
    }
}
