//! Why a named culprit may not be the cause, from facts about it: pure code. A suspicious
//! culprit is still the bisect's answer (exit 0), but the report's first line says so.

use serde::{Deserialize, Serialize};

/// What the git layer and the cache know about the culprit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CulpritFacts {
    /// How many parents the commit has (more than one: a merge).
    pub parents: usize,
    /// The files it changes against its first parent.
    pub files: Vec<String>,
    /// `git diff -U0 <parent> <culprit>`: to tell a change of comments only.
    pub diff: String,
    /// The `arch/` directory the kernels are built for (`x86`).
    pub arch_dir: String,
    /// Whether its kernel equals its parent's (None: not compared).
    pub same_kernel_as_parent: Option<bool>,
}

/// One reason to doubt the culprit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Suspicion {
    SameKernelAsParent,
    Merge,
    OnlyDocumentation,
    OnlyTools,
    OnlyOtherArches,
    OnlyComments,
}

impl Suspicion {
    /// The warning the report gives.
    pub fn warning(&self) -> &'static str {
        match self {
            Suspicion::SameKernelAsParent => {
                "its kernel is the same as its parent's (allocated sections of vmlinux, version \
                 banner aside): the change cannot be the cause; the check is flaky, or the \
                 problem is outside the kernel"
            }
            Suspicion::Merge => {
                "it is a merge: the cause is one of the commits it brings in; bisect again \
                 between the merge's parents"
            }
            Suspicion::OnlyDocumentation => {
                "it changes only Documentation/, which no kernel builds"
            }
            Suspicion::OnlyTools => "it changes only tools/, which is not part of the kernel image",
            Suspicion::OnlyOtherArches => {
                "it changes only other architectures' arch/ directories than the one built"
            }
            Suspicion::OnlyComments => "it changes only comments",
        }
    }
}

/// Every reason to doubt the culprit given these facts.
pub fn suspicions(f: &CulpritFacts) -> Vec<Suspicion> {
    let mut found = Vec::new();
    if f.same_kernel_as_parent == Some(true) {
        found.push(Suspicion::SameKernelAsParent);
    }
    if f.parents > 1 {
        found.push(Suspicion::Merge);
    }
    let all = |p: &dyn Fn(&str) -> bool| !f.files.is_empty() && f.files.iter().all(|x| p(x));
    if all(&|x| x.starts_with("Documentation/")) {
        found.push(Suspicion::OnlyDocumentation);
    } else if all(&|x| x.starts_with("tools/")) {
        found.push(Suspicion::OnlyTools);
    } else if all(&|x| {
        x.strip_prefix("arch/")
            .is_some_and(|rest| rest.split('/').next() != Some(f.arch_dir.as_str()))
    }) {
        found.push(Suspicion::OnlyOtherArches);
    } else if !f.files.is_empty() && only_comments(&f.diff) {
        found.push(Suspicion::OnlyComments);
    }
    found
}

/// Whether a `git diff -U0` changes only comments and blank lines in C sources and headers
/// (and `#` comments in Kconfig and Makefiles); a file of another kind makes it false.
pub fn only_comments(diff: &str) -> bool {
    let mut style = None;
    let mut changed = 0;
    for line in diff.lines() {
        if let Some(name) = line.strip_prefix("+++ ") {
            let name = name.trim_start_matches("b/");
            style = if name.ends_with(".c") || name.ends_with(".h") {
                Some('c')
            } else if name.contains("Kconfig") || name.contains("Makefile") || name.ends_with(".mk")
            {
                Some('#')
            } else if name == "/dev/null" {
                style
            } else {
                return false;
            };
            continue;
        }
        if line.starts_with("--- ") || line.starts_with("diff ") || line.starts_with("@@") {
            continue;
        }
        let Some(body) = line.strip_prefix('+').or_else(|| line.strip_prefix('-')) else {
            continue;
        };
        changed += 1;
        let body = body.trim();
        let comment = body.is_empty()
            || match style {
                Some('c') => {
                    body.starts_with("//")
                        || body.starts_with("/*")
                        || body.starts_with('*')
                        || (body.ends_with("*/") && !body.contains("/*"))
                }
                Some('#') => body.starts_with('#'),
                _ => false,
            };
        if !comment {
            return false;
        }
    }
    changed > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(files: &[&str], diff: &str) -> CulpritFacts {
        CulpritFacts {
            parents: 1,
            files: files.iter().map(|s| s.to_string()).collect(),
            diff: diff.into(),
            arch_dir: "x86".into(),
            same_kernel_as_parent: Some(false),
        }
    }

    const CODE: &str = "diff --git a/init/main.c b/init/main.c\n--- a/init/main.c\n+++ b/init/main.c\n@@ -1 +1,2 @@\n+\tWARN(1, \"x\");\n";

    #[test]
    fn a_plain_culprit_is_not_suspicious() {
        assert_eq!(suspicions(&facts(&["init/main.c"], CODE)), []);
        assert_eq!(suspicions(&facts(&["arch/x86/kernel/setup.c"], CODE)), []);
    }

    #[test]
    fn each_reason_is_named() {
        assert_eq!(
            suspicions(&facts(&["tools/perf/builtin.c"], CODE)),
            [Suspicion::OnlyTools]
        );
        assert_eq!(
            suspicions(&facts(&["Documentation/process/howto.rst"], "")),
            [Suspicion::OnlyDocumentation]
        );
        assert_eq!(
            suspicions(&facts(&["arch/arm64/kernel/a.c", "arch/riscv/b.c"], CODE)),
            [Suspicion::OnlyOtherArches]
        );
        let comment = "--- a/kernel/fork.c\n+++ b/kernel/fork.c\n@@ -9,0 +10 @@\n+/* xtask history: commit 3 */\n";
        assert_eq!(
            suspicions(&facts(&["kernel/fork.c"], comment)),
            [Suspicion::OnlyComments]
        );
        let mut f = facts(&["init/main.c"], CODE);
        f.parents = 2;
        f.same_kernel_as_parent = Some(true);
        assert_eq!(
            suspicions(&f),
            [Suspicion::SameKernelAsParent, Suspicion::Merge]
        );
    }

    #[test]
    fn comments_only_in_sources_we_can_read() {
        let multi = "+++ b/a.h\n@@ @@\n- * old words\n+ * new words\n+\n";
        assert!(only_comments(multi));
        assert!(!only_comments("+++ b/a.c\n@@ @@\n+int x;\n"));
        assert!(!only_comments(
            "+++ b/a.c\n@@ @@\n+\tmdelay(200); /* why */\n"
        ));
        assert!(!only_comments("+++ b/a.rs\n@@ @@\n+// a comment\n"));
        assert!(only_comments("+++ b/drivers/Kconfig\n@@ @@\n+# note\n"));
        assert!(!only_comments(""), "no change at all is no comment change");
    }
}
