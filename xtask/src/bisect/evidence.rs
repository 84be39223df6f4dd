//! What a flaky bisect's confidence is computed from besides its runs: the range's candidates
//! and each tested commit's ancestors among them, asked of git once; then the runs go in.

use super::engine::StepVerdict;
use super::{git, posterior};
use anyhow::Result;
use std::collections::{HashMap, HashSet};
use std::path::Path;

pub struct Evidence {
    candidates: Vec<String>,
    ancestry: HashMap<String, HashSet<String>>,
    culprit: String,
    reverse: bool,
}

/// What a bisect is: its range, the `--paths` its candidates touch, and its direction.
pub struct Range<'a> {
    pub good: &'a str,
    pub bad: &'a str,
    pub paths: &'a [String],
    pub reverse: bool,
}

impl Evidence {
    /// Asks git for the candidates of `range` and the ancestors of each of `tested` (the
    /// commits of the history that were or will be tested: the culprit and its parent too).
    pub fn gather<'a>(
        dir: &Path,
        range: &Range,
        tested: impl IntoIterator<Item = &'a str>,
        culprit: &str,
    ) -> Result<Evidence> {
        let parent = git::rev_parse(dir, &format!("{culprit}^")).ok();
        let mut commits: Vec<&str> = tested.into_iter().collect();
        commits.push(culprit);
        commits.extend(parent.as_deref());
        Ok(Evidence {
            candidates: git::range(dir, range.good, range.bad, range.paths)?,
            ancestry: git::ancestry(dir, range.good, commits)?,
            culprit: culprit.to_string(),
            reverse: range.reverse,
        })
    }

    /// The confidence that the culprit is right, from the runs of each tested commit
    /// (commit, whether it is the revert, its runs).
    pub fn confidence<'a>(
        &self,
        runs: impl IntoIterator<Item = (&'a str, bool, &'a [StepVerdict])>,
    ) -> f64 {
        let tested: Vec<posterior::Tested> = runs
            .into_iter()
            .map(|(commit, revert, runs)| posterior::Tested {
                commit,
                revert,
                runs,
            })
            .collect();
        posterior::confidence(
            &self.candidates,
            &self.ancestry,
            &tested,
            &self.culprit,
            self.reverse,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::CommandExt;
    use crate::git::owned;
    use StepVerdict::{Bad, Good};

    /// A real repository: base, then c1..c4; the confidence that c3 is the culprit from git's
    /// own answers on ancestry.
    #[test]
    fn git_tells_the_candidates_and_their_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        owned(t).args(["init", "-q"]).output_logged().unwrap();
        let mut ids = Vec::new();
        for n in 0..=4 {
            owned(t)
                .args(["commit", "-q", "--allow-empty", "-m", &format!("c{n}")])
                .output_logged()
                .unwrap();
            ids.push(git::rev_parse(t, "HEAD").unwrap());
        }
        let range = Range {
            good: &ids[0],
            bad: &ids[4],
            paths: &[],
            reverse: false,
        };
        let tested = [ids[2].as_str(), ids[4].as_str()];
        let e = Evidence::gather(t, &range, tested, &ids[3]).unwrap();
        assert_eq!(e.candidates.len(), 4);
        assert_eq!(e.ancestry[&ids[2]].len(), 2, "c1 and c2");
        assert_eq!(
            e.ancestry[&ids[3]].len(),
            3,
            "the culprit's own, gathered too"
        );
        let (bad_end, clean, culprit) = ([Bad, Good, Bad, Bad], [Good; 6], [Bad]);
        let few = e.confidence([
            (ids[4].as_str(), false, &bad_end[..]),
            (ids[2].as_str(), false, &clean[..]),
            (ids[3].as_str(), false, &culprit[..]),
        ]);
        let more = e.confidence([
            (ids[4].as_str(), false, &bad_end[..]),
            (ids[2].as_str(), false, &clean[..]),
            (ids[3].as_str(), false, &culprit[..]),
            ("revert", true, &clean[..]),
        ]);
        assert!(0.8 < few && few < more && more < 1.0, "{few} {more}");
        // A bad run at the parent: c3 cannot be the culprit.
        let wrong = e.confidence([
            (ids[4].as_str(), false, &bad_end[..]),
            (ids[2].as_str(), false, &culprit[..]),
        ]);
        assert_eq!(wrong, 0.0);
    }
}
