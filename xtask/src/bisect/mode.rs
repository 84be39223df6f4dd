//! How a bisect judges its steps, pure: deterministic (as `--repeat` says), flaky (found from
//! the BAD end's runs, or `--flaky`: the floor on the rate's lower bound, the clean runs a good
//! step needs as the runs at bad commits tell the rate) or metric (`--metric`: samples against
//! a threshold).

use super::engine::{Judge, Repeat, StepVerdict};
use super::metric::{self, Metric};
use super::stats;
use serde::{Deserialize, Serialize};

/// Runs of the BAD end that tell a flaky check from a deterministic one, by default.
pub const DEFAULT_ENDPOINT_RUNS: u32 = 5;
/// The whole bisect's confidence, by default.
pub const DEFAULT_CONFIDENCE: f64 = 0.95;
/// A flaky BAD end runs until this many bad runs (and a rate bound above the floor)…
pub const FLAKY_BAD_RUNS: u32 = 3;
/// …or this many runs in all.
pub const FLAKY_MAX_RUNS: u32 = 30;
/// Under this rate (its lower bound) a flaky bisect is refused: good steps would need too
/// many runs to mean anything.
pub const RATE_FLOOR: f64 = 0.1;

/// What the command line asked of the judging, resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Asked {
    /// `--repeat N`: the deterministic rule, as before (no flaky detection).
    pub repeat: Option<u32>,
    /// `--flaky`: the flaky rule whatever the BAD end's runs show.
    pub flaky: bool,
    pub endpoint_runs: u32,
    pub confidence: f64,
    /// `--any-failure`: any failure counts as bad, not only the BAD end's symptom.
    pub any_failure: bool,
    /// `--metric`: the command prints a number.
    pub metric: Option<MetricAsked>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricAsked {
    pub threshold: Option<f64>,
    pub higher_is_better: bool,
}

/// The mode a bisect judges its steps in, decided at its endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// Up to `repeat` runs a step, bad at the first bad one.
    Deterministic { repeat: u32 },
    /// BAD was bad in `bad` of `runs` runs; `rate` is that rate's lower 95 % bound (the floor
    /// is on it). `known_bad` and `known_good` are the runs so far at commits known to have the
    /// bug (BAD, and every step judged bad), from which a good step needs `clean_runs` clean
    /// runs: so many that a bug at the rate they tell would have shown with probability
    /// `confidence^(1/good_steps)`.
    Flaky {
        bad: u32,
        runs: u32,
        rate: f64,
        known_bad: u32,
        known_good: u32,
        clean_runs: u32,
        good_steps: u32,
        confidence: f64,
    },
    /// Samples against a threshold.
    Metric(Metric),
}

impl Mode {
    /// The rule for a step's runs (for a metric bisect, see [`Mode::metric`]).
    pub fn runs_rule(&self) -> Repeat {
        match self {
            Mode::Deterministic { repeat } => Repeat(*repeat),
            Mode::Flaky { clean_runs, .. } => Repeat(*clean_runs),
            Mode::Metric(_) => Repeat(1),
        }
    }

    pub fn metric(&self) -> Option<&Metric> {
        match self {
            Mode::Metric(m) => Some(m),
            _ => None,
        }
    }

    /// `flaky: BAD bad in 3 of 6 runs, rate ≥ 0.153 (95 %); a good step needs 23 clean runs`.
    pub fn describe(&self) -> String {
        match self {
            Mode::Deterministic { repeat: 1 } => {
                "deterministic (every run of BAD showed the bug; one run a step)".into()
            }
            Mode::Deterministic { repeat } => {
                format!("deterministic (--repeat {repeat}: bad at a step's first bad run)")
            }
            Mode::Flaky {
                bad,
                runs,
                rate,
                clean_runs,
                good_steps,
                confidence,
                ..
            } => format!(
                "flaky: BAD was bad in {bad} of {runs} runs, a rate of at least {rate:.3} \
                 (95 % bound); a good step needs {clean_runs} clean runs (as the runs at bad \
                 commits tell the rate) for a confidence of {confidence} over {good_steps} good step{}",
                if *good_steps == 1 { "" } else { "s" }
            ),
            Mode::Metric(m) => format!(
                "metric: bad {} {} (the median's 95 % interval decides a step, {} to {} samples)",
                if m.higher_is_better { "below" } else { "above" },
                metric::fmt(m.threshold),
                stats::MIN_SAMPLES_FOR_INTERVAL,
                metric::MAX_SAMPLES
            ),
        }
    }

    /// Learns from a step's runs: a step with a bad run has the bug, so its runs tell the rate,
    /// and the clean runs the next good step needs follow (flaky only).
    pub fn learn(&mut self, step_runs: &[StepVerdict]) {
        let Mode::Flaky {
            known_bad,
            known_good,
            clean_runs,
            good_steps,
            confidence,
            ..
        } = self
        else {
            return;
        };
        if !step_runs.contains(&StepVerdict::Bad) {
            return;
        }
        let count = |v| step_runs.iter().filter(|r| **r == v).count() as u32;
        *known_bad = known_bad.saturating_add(count(StepVerdict::Bad));
        *known_good = known_good.saturating_add(count(StepVerdict::Good));
        *clean_runs = stats::clean_runs_needed(
            *known_bad,
            *known_good,
            stats::step_target(*confidence, *good_steps),
        );
    }

    /// The confidence a flaky bisect must state (None: not flaky).
    pub fn confidence_asked(&self) -> Option<f64> {
        match self {
            Mode::Flaky { confidence, .. } => Some(*confidence),
            _ => None,
        }
    }
}

/// The good steps a bisect of `candidates` commits expects: half its steps, at least one. It
/// takes about log2(candidates) steps to single one out of `candidates`: 6 for 64.
pub fn expected_good_steps(candidates: u32) -> u32 {
    super::progress::estimate_steps(candidates.saturating_sub(1))
        .div_ceil(2)
        .max(1)
}

/// Whether the BAD end needs another run, from its runs so far (counted against the target
/// symptom).
pub fn bad_end_needs_more(asked: &Asked, runs: &[StepVerdict]) -> bool {
    if runs.last() == Some(&StepVerdict::Skip) {
        return false;
    }
    let n = runs.len() as u32;
    let bad = runs.iter().filter(|v| **v == StepVerdict::Bad).count() as u32;
    if let Some(repeat) = asked.repeat {
        return n < repeat && bad == 0;
    }
    if n < asked.endpoint_runs.max(1) {
        return true;
    }
    if bad == n && !asked.flaky {
        return false;
    }
    // 3 bad runs, and a rate known above the floor (else a rate of one half would be
    // refused whenever its first 3 bad runs came late), or 30 runs.
    let known = bad >= FLAKY_BAD_RUNS && stats::rate_lower_bound(bad, n) >= RATE_FLOOR;
    !known && n < FLAKY_MAX_RUNS
}

/// The mode the BAD end's runs call for, or why the bisect is refused.
pub fn from_bad_end(asked: &Asked, runs: &[StepVerdict], good_steps: u32) -> Result<Mode, String> {
    let n = runs.iter().filter(|v| **v != StepVerdict::Skip).count() as u32;
    let bad = runs.iter().filter(|v| **v == StepVerdict::Bad).count() as u32;
    if let Some(repeat) = asked.repeat {
        return Ok(Mode::Deterministic { repeat });
    }
    if bad == n && !asked.flaky {
        return Ok(Mode::Deterministic { repeat: 1 });
    }
    let rate = stats::rate_lower_bound(bad, n);
    let target = stats::step_target(asked.confidence, good_steps);
    let clean_runs = stats::clean_runs_needed(bad, n - bad, target);
    if rate < RATE_FLOOR {
        return Err(format!(
            "BAD was bad in {bad} of {n} runs: the rate's lower 95 % bound {rate:.3} is under \
             the floor {RATE_FLOOR}, where good steps would need too many clean runs to mean \
             anything ({clean_runs} at first): make the check reproduce the bug more often (a \
             stress loop in the command, more CPUs), then bisect again"
        ));
    }
    Ok(Mode::Flaky {
        bad,
        runs: n,
        rate,
        known_bad: bad,
        known_good: n - bad,
        clean_runs,
        good_steps,
        confidence: asked.confidence,
    })
}

/// The metric mode from the endpoints' samples, or why not.
pub fn metric_from_ends(asked: &MetricAsked, good: &[f64], bad: &[f64]) -> Result<Mode, String> {
    Metric::from_endpoints(good, bad, asked.threshold, asked.higher_is_better).map(Mode::Metric)
}

/// Whether an endpoint of a metric bisect needs another sample.
pub fn metric_end_needs_more(samples: usize, last_failed: bool) -> bool {
    !last_failed && samples < metric::ENDPOINT_SAMPLES
}

/// Judges a step of a metric bisect (its samples) or of the others (its runs).
pub fn decide(mode: &Mode, runs: &[StepVerdict], samples: &[f64]) -> Option<StepVerdict> {
    match mode {
        Mode::Metric(m) => match runs.last() {
            // A run that gave no number: the step cannot be measured.
            Some(StepVerdict::Skip) => Some(StepVerdict::Skip),
            _ => m.decide(samples),
        },
        _ => mode.runs_rule().decide(runs),
    }
}

/// Judges a confirmation's test that expects clean runs (forward, the parent and the revert)
/// in a flaky bisect: as a step, but good already once `reached` says the bisect's confidence
/// is reached with these runs (at least one run).
pub fn decide_confirming(mode: &Mode, runs: &[StepVerdict], reached: bool) -> Option<StepVerdict> {
    match (runs.last(), mode) {
        (Some(StepVerdict::Good), Mode::Flaky { .. }) if reached => Some(StepVerdict::Good),
        _ => decide(mode, runs, &[]),
    }
}

/// Whether a flaky bisect's confirmation takes a test's verdict from the runs the bisect
/// already made of that commit (`earlier`) instead of booting it again: when the test expects
/// the bug (forward, the culprit) and one of those runs showed BAD's symptom, which in this
/// mode only a commit with the bug shows, however often it runs. A deterministic bisect boots
/// the culprit again, to see that its verdict repeats.
pub fn shown_already(mode: &Mode, expect: StepVerdict, earlier: &[StepVerdict]) -> bool {
    matches!(mode, Mode::Flaky { .. })
        && expect == StepVerdict::Bad
        && earlier.contains(&StepVerdict::Bad)
}

/// What a bisect asks with no judging option: BAD checked DEFAULT_ENDPOINT_RUNS times, the
/// default confidence, the target symptom only.
impl Default for Asked {
    fn default() -> Asked {
        Asked {
            repeat: None,
            flaky: false,
            endpoint_runs: DEFAULT_ENDPOINT_RUNS,
            confidence: DEFAULT_CONFIDENCE,
            any_failure: false,
            metric: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use StepVerdict::*;

    fn asked() -> Asked {
        Asked::default()
    }

    #[test]
    fn a_flaky_bisect_takes_a_bad_run_it_has_as_the_culprits_confirmation() {
        let flaky = from_bad_end(&asked(), &[Bad, Good, Bad, Good, Good, Bad], 2).unwrap();
        assert!(shown_already(&flaky, Bad, &[Good, Bad]));
        assert!(
            !shown_already(&flaky, Bad, &[Good, Good]),
            "no bad run: boot it"
        );
        assert!(!shown_already(&flaky, Bad, &[]), "never tested: boot it");
        assert!(
            !shown_already(&flaky, Good, &[Bad]),
            "clean runs are not proof"
        );
        let det = Mode::Deterministic { repeat: 1 };
        assert!(
            !shown_already(&det, Bad, &[Bad]),
            "deterministic: boot it again"
        );
    }

    #[test]
    fn a_bad_end_bad_every_time_is_deterministic() {
        let a = asked();
        assert!(bad_end_needs_more(&a, &[Bad; 4]));
        assert!(!bad_end_needs_more(&a, &[Bad; 5]));
        assert_eq!(
            from_bad_end(&a, &[Bad; 5], 2),
            Ok(Mode::Deterministic { repeat: 1 })
        );
        // --repeat keeps its meaning: up to N runs, stop at the first bad, no detection.
        let r = Asked {
            repeat: Some(3),
            ..asked()
        };
        assert!(!bad_end_needs_more(&r, &[Bad]));
        assert!(bad_end_needs_more(&r, &[Good]));
        assert_eq!(
            from_bad_end(&r, &[Good, Bad], 2),
            Ok(Mode::Deterministic { repeat: 3 })
        );
    }

    #[test]
    fn a_bad_end_good_once_is_flaky_and_runs_until_three_bad() {
        let a = asked();
        let runs = [Bad, Good, Bad, Good, Good];
        assert!(bad_end_needs_more(&a, &runs), "2 bad: on to 3");
        let runs = [Bad, Good, Bad, Good, Good, Bad];
        assert!(!bad_end_needs_more(&a, &runs));
        let Ok(Mode::Flaky {
            bad,
            runs: n,
            rate,
            clean_runs,
            ..
        }) = from_bad_end(&a, &runs, 2)
        else {
            panic!("not flaky")
        };
        assert_eq!((bad, n), (3, 6));
        assert!((rate - 0.1531).abs() < 1e-3);
        // 0.95 over 2 good steps: each 0.9747, which the rate told by 3 bad of 6 (Beta(4, 4))
        // reaches at 9 clean runs (its lower bound 0.153 plugged in would ask 23).
        assert_eq!(clean_runs, 9);
        assert!(!bad_end_needs_more(&a, &[Good; 30]), "30 runs at most");
        // 3 bad of 9 is under the floor (0.098): on until the bound is above it.
        let late = [Good, Good, Good, Good, Good, Good, Bad, Bad, Bad];
        assert!(bad_end_needs_more(&a, &late));
        assert!(!bad_end_needs_more(&a, &[&late[..], &[Bad]].concat()));
        // --flaky with every run bad: still flaky, the rate from 5 of 5.
        let f = Asked {
            flaky: true,
            ..asked()
        };
        assert!(!bad_end_needs_more(&f, &[Bad; 5]));
        assert!(matches!(
            from_bad_end(&f, &[Bad; 5], 1),
            Ok(Mode::Flaky { clean_runs: 2, .. })
        ));
        assert!(
            !bad_end_needs_more(&a, &[Bad, Skip]),
            "an untestable run ends it"
        );
    }

    #[test]
    fn under_the_floor_the_bisect_is_refused_and_says_why() {
        let mut runs = vec![Good; 27];
        runs.extend([Bad; 3]);
        let e = from_bad_end(&asked(), &runs, 2).unwrap_err();
        assert!(e.starts_with("BAD was bad in 3 of 30 runs"), "{e}");
        assert!(e.contains("under the floor 0.1"), "{e}");
        // Just above it (3 bad of 8: 0.111), flaky; 3 of 9 (0.098) is not.
        let mut runs = vec![Good; 5];
        runs.extend([Bad; 3]);
        assert!(from_bad_end(&asked(), &runs, 2).is_ok());
        runs.insert(0, Good);
        assert!(from_bad_end(&asked(), &runs, 2).is_err());
    }

    #[test]
    fn bad_steps_tell_the_rate_and_good_steps_need_fewer_runs() {
        let mut m = from_bad_end(&asked(), &[Bad, Good, Bad, Good, Bad], 3).unwrap();
        let first = m.runs_rule();
        assert_eq!(first, Repeat(8));
        m.learn(&[Good, Good, Good]);
        assert_eq!(
            m.runs_rule(),
            first,
            "a good step tells nothing of the rate"
        );
        m.learn(&[Good, Bad]);
        m.learn(&[Bad]);
        let Mode::Flaky {
            known_bad,
            known_good,
            clean_runs,
            ..
        } = m
        else {
            panic!("not flaky")
        };
        assert_eq!((known_bad, known_good), (5, 3));
        assert_eq!(clean_runs, 6);
        let mut d = Mode::Deterministic { repeat: 1 };
        d.learn(&[Bad]);
        assert_eq!(d, Mode::Deterministic { repeat: 1 });
    }

    #[test]
    fn steps_are_judged_by_the_mode() {
        let flaky = Mode::Flaky {
            bad: 3,
            runs: 6,
            rate: 0.15,
            known_bad: 3,
            known_good: 3,
            clean_runs: 3,
            good_steps: 1,
            confidence: 0.95,
        };
        assert_eq!(decide(&flaky, &[Good, Good], &[]), None);
        assert_eq!(decide(&flaky, &[Good, Good, Good], &[]), Some(Good));
        assert_eq!(decide(&flaky, &[Good, Bad], &[]), Some(Bad));
        assert!(flaky
            .describe()
            .starts_with("flaky: BAD was bad in 3 of 6 runs"));
        assert_eq!(flaky.confidence_asked(), Some(0.95));
        // A confirmation's old-state test: good at its first clean run once the confidence is
        // reached, else as a step.
        assert_eq!(decide_confirming(&flaky, &[Good], true), Some(Good));
        assert_eq!(decide_confirming(&flaky, &[Good], false), None);
        assert_eq!(decide_confirming(&flaky, &[Bad], true), Some(Bad));
        assert_eq!(decide_confirming(&flaky, &[], true), None);
        let m = metric_from_ends(
            &MetricAsked {
                threshold: None,
                higher_is_better: false,
            },
            &[1.0; 5],
            &[1.2; 5],
        )
        .unwrap();
        assert_eq!(decide(&m, &[Good; 6], &[1.0; 6]), Some(Good));
        assert_eq!(decide(&m, &[Skip], &[]), Some(Skip));
        assert_eq!(expected_good_steps(2), 1);
        assert_eq!(expected_good_steps(16), 2);
        assert_eq!(expected_good_steps(64), 3);
        assert_eq!(expected_good_steps(0), 1);
        assert!(metric_end_needs_more(4, false) && !metric_end_needs_more(5, false));
    }
}
