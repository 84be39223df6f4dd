//! The confidence a flaky bisect states, pure: the probability, given every run, that the
//! named commit is the first with the bug, under the model of a bug that is in the culprit and
//! every commit after it, shows in each run there with one unknown rate and never elsewhere.

use super::engine::StepVerdict;
use super::stats;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The runs of one tested commit that count: with the target symptom, and clean.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub bad: u32,
    pub good: u32,
}

/// Candidates the runs cannot tell apart: `commits` of them, each of which, were it the
/// culprit, would put the bug in exactly the tested commits `affected` (indices of tallies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub commits: u32,
    pub affected: Vec<usize>,
}

/// Groups candidates by the tested commits they would put the bug in: `affected(c)` gives
/// those of candidate `c`, in increasing order.
pub fn places<C>(candidates: &[C], affected: impl Fn(&C) -> Vec<usize>) -> Vec<Place> {
    let mut by: BTreeMap<Vec<usize>, u32> = BTreeMap::new();
    for c in candidates {
        *by.entry(affected(c)).or_default() += 1;
    }
    by.into_iter()
        .map(|(affected, commits)| Place { commits, affected })
        .collect()
}

/// The probability that the culprit is one given commit of `places[named]`, from the runs:
/// each candidate has the same prior (uniform over the range), the rate a uniform prior; a
/// place's weight is its commits times `B(1 + K, 1 + G)`, K and G the bad and clean runs at
/// the commits it affects, and nothing where a bad run fell outside them. 0 when `named` is
/// no place or cannot be the culprit.
pub fn probability(tallies: &[Tally], places: &[Place], named: usize) -> f64 {
    let weight = |p: &Place| -> Option<f64> {
        let inside = |i: usize| p.affected.binary_search(&i).is_ok();
        if (0..tallies.len()).any(|i| tallies[i].bad > 0 && !inside(i)) || p.commits == 0 {
            return None;
        }
        let (bad, good) = p
            .affected
            .iter()
            .filter_map(|&i| tallies.get(i))
            .fold((0u32, 0u32), |(b, g), t| {
                (b.saturating_add(t.bad), g.saturating_add(t.good))
            });
        Some(f64::from(p.commits).ln() + stats::ln_beta_runs(bad, good))
    };
    let weights: Vec<Option<f64>> = places.iter().map(weight).collect();
    let Some(Some(mine)) = weights.get(named).copied() else {
        return 0.0;
    };
    let top = weights.iter().flatten().copied().fold(mine, f64::max);
    let total: f64 = weights.iter().flatten().map(|w| (w - top).exp()).sum();
    let commits = f64::from(places[named].commits);
    ((mine - top).exp() / total / commits).clamp(0.0, 1.0)
}

/// A tested commit's runs, as the bisect recorded them.
pub struct Tested<'a> {
    pub commit: &'a str,
    /// The new end with the culprit reverted: the bug is in it unless the culprit is right.
    pub revert: bool,
    pub runs: &'a [StepVerdict],
}

impl Tally {
    pub fn of(runs: &[StepVerdict]) -> Tally {
        let count = |v| runs.iter().filter(|r| **r == v).count() as u32;
        Tally {
            bad: count(StepVerdict::Bad),
            good: count(StepVerdict::Good),
        }
    }
}

/// The probability that `culprit` is the first commit with the bug (with `reverse`, the first
/// without it: the fix), from every run of `tested`: `candidates` are the range's commits,
/// `ancestors[c]` those that are a tested commit c's ancestors or c (a commit missing there,
/// as the old end, has none).
pub fn confidence(
    candidates: &[String],
    ancestors: &HashMap<String, HashSet<String>>,
    tested: &[Tested],
    culprit: &str,
    reverse: bool,
) -> f64 {
    // Whether the culprit being `c` puts the bug in `t`: forward, t has c; with --reverse, t
    // lacks the fix c. The revert has the culprit taken out: the bug is in it unless the
    // culprit is right (forward), or only if it is (reverse).
    let reaches = |c: &str, t: &Tested| match t.revert {
        true => (c != culprit) != reverse,
        false => ancestors.get(t.commit).is_some_and(|a| a.contains(c)) != reverse,
    };
    let affected = |c: &str| -> Vec<usize> {
        (0..tested.len())
            .filter(|&i| reaches(c, &tested[i]))
            .collect()
    };
    if !candidates.iter().any(|c| c == culprit) {
        return 0.0;
    }
    let all = places(candidates, |c| affected(c));
    let mine = affected(culprit);
    let tallies: Vec<Tally> = tested.iter().map(|t| Tally::of(t.runs)).collect();
    all.iter()
        .position(|p| p.affected == mine)
        .map_or(0.0, |named| probability(&tallies, &all, named))
}

#[cfg(test)]
mod tests {
    use super::super::mode::{self, Asked};
    use super::super::simulate::Seeded;
    use super::*;
    use StepVerdict::{Bad, Good};

    fn near(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    /// A linear history 1..=n, the tested commits at `at`: candidate j affects every tested
    /// commit at or after it.
    fn linear(n: u32, at: &[u32]) -> Vec<Place> {
        let js: Vec<u32> = (1..=n).collect();
        places(&js, |&j| (0..at.len()).filter(|&i| at[i] >= j).collect())
    }

    #[test]
    fn places_group_the_candidates_that_runs_cannot_tell_apart() {
        // Tested at 4 and 8 of 8: 1..=4 affect both, 5..=8 only the second.
        let p = linear(8, &[4, 8]);
        assert_eq!(
            p,
            [
                Place {
                    commits: 4,
                    affected: vec![0, 1]
                },
                Place {
                    commits: 4,
                    affected: vec![1]
                }
            ]
        );
    }

    #[test]
    fn the_probability_by_hand() {
        // 1..=2 of 2 tested at 1 (2 clean runs) and 2 (1 bad): the culprit is 2 unless 1 hid
        // the bug. Weights: culprit 2: B(2, 1) = 1/2; culprit 1: B(2, 3) = 1/12.
        let p = linear(2, &[1, 2]);
        let t = [Tally { bad: 0, good: 2 }, Tally { bad: 1, good: 0 }];
        let named = p.iter().position(|p| p.affected == [1]).unwrap();
        assert!(near(
            probability(&t, &p, named),
            0.5 / (0.5 + 1.0 / 12.0),
            1e-12
        ));
        // A bad run at 1: 2 cannot be the culprit.
        let t = [Tally { bad: 1, good: 2 }, Tally { bad: 1, good: 0 }];
        assert_eq!(probability(&t, &p, named), 0.0);
        assert_eq!(probability(&t, &p, 7), 0.0, "no such place");
        // A place of several commits: the probability of one of them.
        let p = vec![
            Place {
                commits: 3,
                affected: vec![0],
            },
            Place {
                commits: 1,
                affected: vec![0],
            },
        ];
        let t = [Tally { bad: 1, good: 0 }];
        assert!(near(probability(&t, &p, 0), 0.25, 1e-12));
    }

    #[test]
    fn more_clean_runs_below_the_culprit_raise_it_and_huge_counts_stay_finite() {
        let p = linear(16, &[8, 12, 14, 15, 16]);
        let named = p.iter().position(|p| p.affected == [4]).unwrap();
        let with = |good: u32| {
            let mut t = vec![Tally { bad: 0, good }; 4];
            t.push(Tally { bad: 3, good: 2 });
            probability(&t, &p, named)
        };
        assert!(with(1) < with(3) && with(3) < with(8) && with(8) < 1.0);
        let t = vec![
            Tally {
                bad: 0,
                good: 100_000
            };
            5
        ];
        assert!(probability(&t, &p, named).is_finite());
    }

    #[test]
    fn a_fix_is_found_the_other_way_round() {
        // --reverse: the bug is in every commit without the fix. 1 is broken, 2 clean: the fix
        // is 2 unless 2 hid the bug (then 3).
        let name = |c: u32| c.to_string();
        let candidates: Vec<String> = (1..=3).map(name).collect();
        let ancestry: HashMap<String, HashSet<String>> = (0..=3)
            .map(|c| (name(c), (1..=c).map(name).collect()))
            .collect();
        fn at<'a>(commit: &'a str, runs: &'a [StepVerdict], revert: bool) -> Tested<'a> {
            Tested {
                commit,
                revert,
                runs,
            }
        }
        let (broken, clean) = ([Bad], [Good; 4]);
        let by = |tested: &[Tested]| confidence(&candidates, &ancestry, tested, "2", true);
        let few = by(&[at("1", &broken, false), at("2", &clean[..1], false)]);
        let more = by(&[at("1", &broken, false), at("2", &clean, false)]);
        assert!(0.5 < few && few < more && more < 1.0, "{few} {more}");
        // The new end with the fix reverted is broken: only the fix being 2 does that.
        let sure = by(&[
            at("1", &broken, false),
            at("2", &clean[..1], false),
            at("3", &broken, true),
        ]);
        assert!(near(sure, 1.0, 1e-12), "{sure}");
        // Forward, a bad run at 1 rules 2 out.
        let forward = confidence(
            &candidates,
            &ancestry,
            &[at("1", &broken, false)],
            "2",
            false,
        );
        assert_eq!(forward, 0.0);
    }

    /// One bisect of a linear history 1..=n (the old end 0 without the bug, the new end n)
    /// whose check is bad at rate `p` from `culprit` on, judged by the bisect's own rules
    /// (the BAD end's runs, the steps', the confirmation's), a halving standing in for git:
    /// the commit named and the confidence stated, or None when refused.
    fn linear_bisect(
        asked: &Asked,
        n: u32,
        culprit: u32,
        p: f64,
        rng: &mut Seeded,
    ) -> Option<(u32, f64)> {
        let mut runs_until = |has_bug: bool, more: &dyn Fn(&[StepVerdict]) -> bool| {
            let mut r = Vec::new();
            while r.is_empty() || more(&r) {
                r.push(if has_bug && rng.next() < p { Bad } else { Good });
            }
            r
        };
        let bad_end = runs_until(true, &|r| mode::bad_end_needs_more(asked, r));
        let mut m = mode::from_bad_end(asked, &bad_end, mode::expected_good_steps(n)).ok()?;
        let mut tested: Vec<(u32, bool, Vec<StepVerdict>)> = vec![(n, false, bad_end)];
        let (mut lo, mut hi) = (0, n);
        while hi - lo > 1 {
            let s = (lo + hi) / 2;
            let r = runs_until(s >= culprit, &|r| mode::decide(&m, r, &[]).is_none());
            match mode::decide(&m, &r, &[]) {
                Some(Bad) => hi = s,
                _ => lo = s,
            }
            m.learn(&r);
            tested.push((s, false, r));
        }
        let named = hi;
        let name = |c: u32| c.to_string();
        let candidates: Vec<String> = (1..=n).map(name).collect();
        let ancestry: HashMap<String, HashSet<String>> = (0..=n)
            .map(|c| (name(c), (1..=c).map(name).collect()))
            .collect();
        let confidence = |tested: &[(u32, bool, Vec<StepVerdict>)]| {
            let names: Vec<String> = tested.iter().map(|t| name(t.0)).collect();
            let t: Vec<Tested> = tested
                .iter()
                .zip(&names)
                .map(|((_, revert, runs), commit)| Tested {
                    commit,
                    revert: *revert,
                    runs,
                })
                .collect();
            confidence(&candidates, &ancestry, &t, &name(named), false)
        };
        let c = m.confidence_asked()?;
        // The confirmation: the culprit (its bad run at its step stands: mode::shown_already),
        // its parent and the revert (until the confidence is reached).
        for (commit, revert, has_bug) in [
            (named - 1, false, named > culprit),
            (n, true, named != culprit),
        ] {
            let reached = |r: &[StepVerdict]| {
                let mut with = tested.clone();
                with.push((commit, revert, r.to_vec()));
                confidence(&with) >= c
            };
            let r = runs_until(has_bug, &|r| {
                mode::decide_confirming(&m, r, reached(r)).is_none()
            });
            tested.push((commit, revert, r));
        }
        Some((named, confidence(&tested)))
    }

    /// Over `bisects` bisects of 32 commits, the culprit anywhere (the model's prior), the
    /// check at rate p: (how many were refused, the fraction right, the mean confidence
    /// stated, the fraction right of those that stated at least 0.95).
    fn calibration(asked: &Asked, p: f64, bisects: u32) -> (u32, f64, f64, f64) {
        let mut rng = Seeded::new((p * 1000.0) as u64);
        let (mut refused, mut right, mut stated, mut sure, mut sure_right) = (0, 0, 0.0, 0, 0);
        for _ in 0..bisects {
            let culprit = 1 + (rng.next() * 32.0) as u32;
            let Some((named, c)) = linear_bisect(asked, 32, culprit, p, &mut rng) else {
                refused += 1;
                continue;
            };
            right += u32::from(named == culprit);
            stated += c;
            if c >= 0.95 {
                sure += 1;
                sure_right += u32::from(named == culprit);
            }
        }
        let ran = f64::from((bisects - refused).max(1));
        (
            refused,
            f64::from(right) / ran,
            stated / ran,
            f64::from(sure_right) / f64::from(sure.max(1)),
        )
    }

    #[test]
    fn the_confidence_stated_is_calibrated() {
        let asked = Asked {
            flaky: true,
            ..Asked::default()
        };
        for p in [0.3, 0.5, 0.8] {
            let (refused, right, stated, sure_right) = calibration(&asked, p, 400);
            // The fraction right is at least the mean confidence stated (less 2 standard
            // errors of 400 bisects, 0.022); those that stated 0.95 are right that often.
            assert!(
                right >= stated - 0.022,
                "p {p}: right {right}, stated {stated}"
            );
            assert!(sure_right >= 0.95 - 0.022, "p {p}: {sure_right}");
            assert!(
                stated > 0.9,
                "p {p}: a confidence of {stated} is too low to be of use"
            );
            assert!(refused < 40, "p {p}: {refused} refused");
        }
    }

    #[test]
    fn under_the_floor_bisects_are_refused() {
        let asked = Asked::default();
        let (refused, ..) = calibration(&asked, 0.05, 100);
        assert!(refused >= 90, "{refused} of 100 refused at a rate of 0.05");
    }
}
