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
