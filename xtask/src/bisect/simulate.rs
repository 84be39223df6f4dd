//! A bisect whose runs are a stand-in (a function of the commit, not a boot), for `bench
//! bisect --flaky`: the real engine, judging rules and confirmation plan, and real `git
//! bisect --no-checkout` over a real history; only the check is simulated.

use super::engine::{self, End, Engine, Next, Outcome, Role, StepVerdict, Terms};
use super::git::Bisect;
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

/// The runs of one commit until `decide` says, with `run` standing in for a boot.
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
    let mut total = 0u32;
    let default = Mode::Deterministic { repeat: 1 };
    let g = runs_until(good, run, &|r| mode::decide(&default, r, &[]).is_none());
    total += g.len() as u32;
    let b = runs_until(bad, run, &|r| mode::bad_end_needs_more(asked, r));
    total += b.len() as u32;
    let good_v = if g.contains(&StepVerdict::Bad) {
        StepVerdict::Bad
    } else {
        StepVerdict::Good
    };
    let bad_v = if b.contains(&StepVerdict::Bad) {
        StepVerdict::Bad
    } else {
        StepVerdict::Good
    };
    e.endpoint(End::Old, good_v)
        .map_err(|w| anyhow!("GOOD is {w}"))?;
    e.endpoint(End::New, bad_v)
        .map_err(|w| anyhow!("BAD is {w}"))?;
    let mode = mode::from_bad_end(asked, &b, mode::expected_good_steps(candidates))
        .map_err(|w| anyhow!(w))?;
    let judge = |r: &[StepVerdict]| mode::decide(&mode, r, &[]).is_none();
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
    let mut good_runs = Vec::new();
    let outcome = loop {
        let c = match next {
            Next::Test(c) => c,
            Next::Done(o) => break o,
        };
        let r = runs_until(&c, run, &judge);
        total += r.len() as u32;
        let v = mode::decide(&mode, &r, &[]).unwrap_or(StepVerdict::Skip);
        if v == StepVerdict::Good {
            good_runs.push(r.len() as u32);
        }
        let term = e.mark(&c, v).map_err(|u| anyhow!(u.0))?;
        next = e
            .on_git(git_bisect.mark(term, &c)?)
            .map_err(|u| anyhow!(u.0))?;
    };
    git_bisect.reset()?;
    let Outcome::Found { culprit } = outcome else {
        return Ok(Simulated {
            culprit: None,
            runs: total,
            confidence: mode.confidence_reached(&good_runs),
            mode,
            confirmed: false,
        });
    };
    let parent = crate::bisect::git::rev_parse(wt, &format!("{culprit}^")).ok();
    let revert = "revert".to_string();
    let plan = engine::confirmation_plan(terms, &culprit, parent.as_ref(), Some(&revert));
    let mut results = Vec::new();
    for t in plan {
        let r = runs_until(&t.candidate, run, &judge);
        total += r.len() as u32;
        let v = mode::decide(&mode, &r, &[]).unwrap_or(StepVerdict::Skip);
        debug_assert!(matches!(
            t.role,
            Role::Culprit | Role::Parent | Role::Revert
        ));
        results.push((t, v));
    }
    let confirmed =
        engine::judge_confirmation(terms, &results, None) == engine::Confirmation::Confirmed;
    Ok(Simulated {
        culprit: Some(culprit),
        runs: total,
        confidence: mode.confidence_reached(&good_runs),
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
