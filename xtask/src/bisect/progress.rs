//! Reading `git bisect`'s answers (to `start`, `good`, `bad`, `skip`): pure code, tested on the
//! transcripts recorded in `test_data/` (see `test_data/record.sh`).

/// Where a bisect stands after git took a mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress<C = String> {
    /// git checked out the next candidate.
    Next {
        candidate: C,
        revisions_left: u32,
        steps_left: u32,
    },
    /// The first new ("bad", or "fixed" with --reverse) commit.
    Found { commit: C },
    /// Only skipped commits remain: the culprit is one of these.
    OnlySkipped { candidates: Vec<C> },
    /// No commit in the range touches the paths given.
    NoneTestable,
}

fn is_commit_id(s: &str) -> bool {
    s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// Parses what `git bisect start|good|bad|skip` printed. None when it is none of the above.
pub fn parse(out: &str) -> Option<Progress> {
    let mut lines = out.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("Bisecting: ") {
            // "Bisecting: 7 revisions left to test after this (roughly 3 steps)", then
            // "[<commit>] <subject>". With --paths none touch, git says -1.
            let revisions_left = rest.split_whitespace().next()?.parse::<i64>().ok()?;
            let steps_left = rest
                .split("roughly ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let candidate = lines
                .next()?
                .strip_prefix('[')?
                .split(']')
                .next()
                .filter(|c| is_commit_id(c))?
                .to_string();
            return Some(Progress::Next {
                candidate,
                revisions_left: u32::try_from(revisions_left.max(0)).unwrap_or(0),
                steps_left,
            });
        }
        if line.contains(" is the first ") && line.ends_with(" commit") {
            let commit = line.split_whitespace().next().filter(|c| is_commit_id(c))?;
            return Some(Progress::Found {
                commit: commit.to_string(),
            });
        }
        if line.starts_with("There are only 'skip'ped commits left to test") {
            let candidates = out
                .lines()
                .map(str::trim)
                .filter(|l| is_commit_id(l))
                .map(str::to_string)
                .collect();
            return Some(Progress::OnlySkipped { candidates });
        }
        if line == "No testable commit found." {
            return Some(Progress::NoneTestable);
        }
    }
    None
}

/// About how many steps a range of `n` commits needs: ceil(log2(n + 1)).
pub fn estimate_steps(n: u32) -> u32 {
    32 - n.leading_zeros()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(path: &str) -> String {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/bisect/test_data")
                .join(path),
        )
        .unwrap()
    }

    #[test]
    fn next_step() {
        assert_eq!(
            parse(&data("found/start.txt")),
            Some(Progress::Next {
                candidate: "494019eba5235c8aba8b6125b389d9df219731f8".into(),
                revisions_left: 4,
                steps_left: 2
            })
        );
        let Some(Progress::Next {
            revisions_left: 0,
            steps_left: 0,
            ..
        }) = parse(&data("found/03-bad.txt"))
        else {
            panic!("the last step")
        };
        // --paths that no commit touches: git still names one, with -1 left.
        let Some(Progress::Next {
            revisions_left: 0, ..
        }) = parse(&data("paths_untestable/start.txt"))
        else {
            panic!("-1 revisions left")
        };
        assert_eq!(parse("Bisecting: 3 revisions left\n[abc] short id"), None);
    }

    #[test]
    fn found_with_any_terms() {
        let sha = "cb8e3b2a94269f0b12217373057aa759f6f4fc13";
        let found = Some(Progress::Found { commit: sha.into() });
        assert_eq!(parse(&data("found/04-bad.txt")), found);
        assert_eq!(parse(&data("reverse/04-fixed.txt")), found);
        assert_eq!(parse(&data("adjacent/start.txt")), found);
    }

    #[test]
    fn only_skipped_and_none_testable() {
        let Some(Progress::OnlySkipped { candidates }) = parse(&data("only_skipped/01-skip.txt"))
        else {
            panic!("only skipped")
        };
        assert_eq!(candidates.len(), 3);
        assert_eq!(
            parse(&data("paths_untestable/01-good.txt")),
            Some(Progress::NoneTestable)
        );
        assert_eq!(parse("fatal: bad revision"), None);
    }

    #[test]
    fn steps() {
        assert_eq!(estimate_steps(1), 1);
        assert_eq!(estimate_steps(15), 4);
        assert_eq!(estimate_steps(16), 5);
        assert_eq!(estimate_steps(64), 7);
    }
}
