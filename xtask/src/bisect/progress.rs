//! Reading `git bisect`'s answers and choosing its terms: pure code.

/// Where a bisect stands after git took a verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// git checked out the next commit to test.
    Next {
        revisions_left: u32,
        steps_left: u32,
    },
    /// The first new ("bad", or "fixed" with --reverse) commit.
    Found { commit: String },
    /// Only skipped commits remain: the culprit is one of these.
    OnlySkipped { candidates: Vec<String> },
}

/// Parses what `git bisect start|good|bad|skip` printed. None when it is none of the above.
pub fn parse(out: &str) -> Option<Progress> {
    for line in out.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Bisecting: ") {
            // "Bisecting: 7 revisions left to test after this (roughly 3 steps)"
            let revisions_left = rest.split_whitespace().next()?.parse().ok()?;
            let steps_left = rest
                .split("roughly ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            return Some(Progress::Next {
                revisions_left,
                steps_left,
            });
        }
        if line.contains(" is the first ") && line.ends_with(" commit") {
            let commit = line.split_whitespace().next()?.to_string();
            return Some(Progress::Found { commit });
        }
        if line.starts_with("There are only 'skip'ped commits left to test") {
            let candidates = out
                .lines()
                .map(str::trim)
                .filter(|l| l.len() >= 40 && l.chars().take(40).all(|c| c.is_ascii_hexdigit()))
                .map(|l| l[..40].to_string())
                .collect();
            return Some(Progress::OnlySkipped { candidates });
        }
    }
    None
}

/// The terms this bisect uses: plain good/bad, or for --reverse (finding a fix) "broken" as
/// the old state and "fixed" as the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub old: &'static str,
    pub new: &'static str,
}

impl Terms {
    pub fn new(reverse: bool) -> Terms {
        if reverse {
            Terms {
                old: "broken",
                new: "fixed",
            }
        } else {
            Terms {
                old: "good",
                new: "bad",
            }
        }
    }

    /// The git term for a check verdict that said good (`true`) or bad (`false`).
    pub fn for_verdict(&self, good: bool) -> &'static str {
        match (self.old, good) {
            ("good", true) => "good",
            ("good", false) => "bad",
            // Finding a fix: the old state is broken (a bad verdict), the new one fixed.
            (_, true) => self.new,
            (_, false) => self.old,
        }
    }
}

/// About how many steps a range of `n` commits needs: ceil(log2(n + 1)).
pub fn estimate_steps(n: u32) -> u32 {
    32 - n.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_step() {
        let out =
            "Bisecting: 7 revisions left to test after this (roughly 3 steps)\n[0123abcd] subject";
        assert_eq!(
            parse(out),
            Some(Progress::Next {
                revisions_left: 7,
                steps_left: 3
            })
        );
        let out = "Bisecting: 0 revisions left to test after this (roughly 0 steps)\n[0123] s";
        assert_eq!(
            parse(out),
            Some(Progress::Next {
                revisions_left: 0,
                steps_left: 0
            })
        );
    }

    #[test]
    fn found_with_any_terms() {
        let sha = "4f6c1b7a0d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60";
        let out = format!("{sha} is the first bad commit\ncommit {sha}\nAuthor: xtask\n");
        assert_eq!(parse(&out), Some(Progress::Found { commit: sha.into() }));
        let out = format!("{sha} is the first fixed commit\n");
        assert_eq!(parse(&out), Some(Progress::Found { commit: sha.into() }));
    }

    #[test]
    fn only_skipped() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let out = format!(
            "There are only 'skip'ped commits left to test.\nThe first bad commit could be any of:\n{a}\n{b}\nWe cannot bisect more!\n"
        );
        assert_eq!(
            parse(&out),
            Some(Progress::OnlySkipped {
                candidates: vec![a, b]
            })
        );
    }

    #[test]
    fn terms() {
        let t = Terms::new(false);
        assert_eq!((t.for_verdict(true), t.for_verdict(false)), ("good", "bad"));
        let t = Terms::new(true);
        assert_eq!(
            (t.for_verdict(true), t.for_verdict(false)),
            ("fixed", "broken")
        );
    }

    #[test]
    fn steps() {
        assert_eq!(estimate_steps(1), 1);
        assert_eq!(estimate_steps(15), 4);
        assert_eq!(estimate_steps(16), 5);
        assert_eq!(estimate_steps(64), 7);
    }
}
