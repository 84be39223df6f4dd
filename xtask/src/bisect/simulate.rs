//! A bisect whose runs are a stand-in (a function of the commit, not a boot), for `bench
//! bisect --flaky`: the real engine, judging rules and confirmation plan, and real `git
//! bisect --no-checkout` over a real history; only the check is simulated.

use super::engine::{self, End, Engine, Next, Outcome, Role, StepVerdict, Terms};
use super::evidence::{Evidence, Range};
use super::git::{self, Bisect};
use super::mode::{self, Asked, Mode};
use super::progress;
use crate::cmd::CommandExt;
use crate::git::owned;
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

/// What one simulated bisect ended with.
#[derive(Debug, Clone)]
pub struct Simulated {
    pub culprit: Option<String>,
    /// Runs in all (each would be a boot): endpoints, steps and confirmation.
    pub runs: u32,
    pub mode: Mode,
    /// The confidence the report would state (flaky), else None.
    pub confidence: Option<f64>,
    pub confirmed: bool,
}

/// The runs of one commit until `more` says enough, with `run` standing in for a boot.
fn runs_until(
    commit: &str,
    run: &mut dyn FnMut(&str) -> StepVerdict,
    more: &dyn Fn(&[StepVerdict]) -> bool,
) -> Vec<StepVerdict> {
    let mut runs = Vec::new();
    while runs.is_empty() || more(&runs) {
        runs.push(run(commit));
    }
    runs
}

/// Bisects `good..bad` in the worktree `wt` (made with `git worktree add --no-checkout`),
/// every run of a commit given by `run` (the revert of the culprit is asked as "revert").
pub fn bisect(
    wt: &Path,
    good: &str,
    bad: &str,
    asked: &Asked,
    candidates: u32,
    run: &mut dyn FnMut(&str) -> StepVerdict,
) -> Result<Simulated> {
    let terms = Terms { reverse: false };
    let mut e = Engine::new(terms, good.to_string(), bad.to_string());
    let verdict = |runs: &[StepVerdict]| match runs.contains(&StepVerdict::Bad) {
        true => StepVerdict::Bad,
        false => StepVerdict::Good,
    };
    let default = Mode::Deterministic { repeat: 1 };
    let g = runs_until(good, run, &|r| mode::decide(&default, r, &[]).is_none());
    let b = runs_until(bad, run, &|r| mode::bad_end_needs_more(asked, r));
    e.endpoint(End::Old, verdict(&g))
        .map_err(|w| anyhow!("GOOD is {w}"))?;
    e.endpoint(End::New, verdict(&b))
        .map_err(|w| anyhow!("BAD is {w}"))?;
    let mut mode = mode::from_bad_end(asked, &b, mode::expected_good_steps(candidates))
        .map_err(|w| anyhow!(w))?;
    // Every tested commit with its runs: (commit, is the revert, runs).
    let mut tested = vec![(good.to_string(), false, g), (bad.to_string(), false, b)];
    let git_bisect = Bisect {
        wt: wt.to_path_buf(),
    };
    let _ = git_bisect.reset();
    let out = owned(wt)
        .args(["bisect", "start", "--no-checkout", bad, good, "--"])
        .output_logged()
        .context("git bisect start --no-checkout")?;
    let mut next = e
        .on_git(progress::parse(&String::from_utf8_lossy(&out.stdout)))
        .map_err(|u| anyhow!(u.0))?;
    let outcome = loop {
        let c = match next {
            Next::Test(c) => c,
            Next::Done(o) => break o,
        };
        let r = runs_until(&c, run, &|r| mode::decide(&mode, r, &[]).is_none());
        let v = mode::decide(&mode, &r, &[]).unwrap_or(StepVerdict::Skip);
        mode.learn(&r);
        tested.push((c.clone(), false, r));
        let term = e.mark(&c, v).map_err(|u| anyhow!(u.0))?;
        next = e
            .on_git(git_bisect.mark(term, &c)?)
            .map_err(|u| anyhow!(u.0))?;
    };
    git_bisect.reset()?;
    let total = |tested: &[(String, bool, Vec<StepVerdict>)]| {
        tested.iter().map(|(_, _, r)| r.len() as u32).sum::<u32>()
    };
    let Outcome::Found { culprit } = outcome else {
        return Ok(Simulated {
            culprit: None,
            runs: total(&tested),
            confidence: mode.confidence_asked().map(|_| 0.0),
            mode,
            confirmed: false,
        });
    };
    let range = Range {
        good,
        bad,
        paths: &[],
        reverse: false,
    };
    let evidence = Evidence::gather(wt, &range, tested.iter().map(|t| t.0.as_str()), &culprit)?;
    let parent = git::rev_parse(wt, &format!("{culprit}^")).ok();
    let confidence = |tested: &[(String, bool, Vec<StepVerdict>)]| {
        evidence.confidence(
            tested
                .iter()
                .map(|(c, rv, r)| (c.as_str(), *rv, r.as_slice())),
        )
    };
    let revert = "revert".to_string();
    let plan = engine::confirmation_plan(terms, &culprit, parent.as_ref(), Some(&revert));
    let mut results = Vec::new();
    for t in plan {
        let is_revert = t.role == Role::Revert;
        let earlier: Vec<StepVerdict> = tested
            .iter()
            .filter(|(c, rv, _)| *c == t.candidate && !rv)
            .flat_map(|(_, _, r)| r.iter().copied())
            .collect();
        if mode::shown_already(&mode, t.expect, &earlier) {
            results.push((t, StepVerdict::Bad));
            continue;
        }
        let decide = |r: &[StepVerdict]| match t.expect {
            StepVerdict::Bad => mode::decide(&mode, r, &[]),
            _ => {
                let mut with = tested.clone();
                with.push((t.candidate.clone(), is_revert, r.to_vec()));
                let reached = mode
                    .confidence_asked()
                    .is_some_and(|c| confidence(&with) >= c);
                mode::decide_confirming(&mode, r, reached)
            }
        };
        let r = runs_until(&t.candidate, run, &|r| decide(r).is_none());
        let v = decide(&r).unwrap_or(StepVerdict::Skip);
        tested.push((t.candidate.clone(), is_revert, r));
        results.push((t, v));
    }
    let confirmed =
        engine::judge_confirmation(terms, &results, None) == engine::Confirmation::Confirmed;
    Ok(Simulated {
        culprit: Some(culprit.clone()),
        runs: total(&tested),
        confidence: mode.confidence_asked().map(|_| confidence(&tested)),
        mode,
        confirmed,
    })
}

/// A seeded generator (xorshift64*): the same runs for the same seed.
pub struct Seeded(u64);

impl Seeded {
    pub fn new(seed: u64) -> Seeded {
        Seeded(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A number in [0, 1).
    pub fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A worktree of `tree` with no files, for `git bisect --no-checkout`; removed when dropped.
pub struct BareWorktree<'a> {
    tree: &'a Path,
    pub dir: std::path::PathBuf,
}

impl<'a> BareWorktree<'a> {
    pub fn add(tree: &'a Path, dir: &Path, at: &str) -> Result<BareWorktree<'a>> {
        if dir.exists() {
            bail!("{} exists", dir.display());
        }
        owned(tree)
            .args(["worktree", "add", "--no-checkout", "--detach"])
            .arg(dir)
            .arg(at)
            .output_logged()?;
        Ok(BareWorktree {
            tree,
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for BareWorktree<'_> {
    fn drop(&mut self) {
        let _ = owned(self.tree)
            .args(["worktree", "remove", "--force"])
            .arg(&self.dir)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeded_runs_repeat_and_are_uniform_enough() {
        let mut a = Seeded::new(7);
        let mut b = Seeded::new(7);
        let xs: Vec<f64> = (0..1000).map(|_| a.next()).collect();
        assert!(xs
            .iter()
            .zip((0..1000).map(|_| b.next()))
            .all(|(x, y)| *x == y));
        let half = xs.iter().filter(|x| **x < 0.5).count();
        assert!((400..600).contains(&half), "{half}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }
}
