//! Metric bisects, pure: the number a check's command prints, the threshold between the
//! endpoints' medians, and a step decided once the 95 % interval of its median lies on one
//! side of it.

use super::engine::StepVerdict;
use super::stats::{median, median_interval};
use serde::{Deserialize, Serialize};

/// Samples taken of each endpoint.
pub const ENDPOINT_SAMPLES: usize = 5;
/// Samples a step takes at most; undecided then, it is skipped.
pub const MAX_SAMPLES: usize = 15;

/// The number a run's command printed: the last word of its output that reads as a number.
pub fn sample(stdout: &str) -> Option<f64> {
    stdout
        .split_whitespace()
        .rev()
        .find_map(|w| w.trim_end_matches(['s', ',', ';']).parse::<f64>().ok())
        .filter(|x| x.is_finite())
}

/// How a metric bisect judges a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// A step is bad past this (above it, or below it with `higher_is_better`).
    pub threshold: f64,
    pub higher_is_better: bool,
}

impl Metric {
    /// The threshold from the endpoints' samples: `asked`, else halfway between their
    /// medians. The error says why the endpoints cannot be told apart.
    pub fn from_endpoints(
        good: &[f64],
        bad: &[f64],
        asked: Option<f64>,
        higher_is_better: bool,
    ) -> Result<Metric, String> {
        let (Some(g), Some(b)) = (median(good), median(bad)) else {
            return Err("an endpoint gave no number".into());
        };
        let worse = if higher_is_better { b < g } else { b > g };
        if !worse {
            return Err(format!(
                "BAD's median {} is not {} GOOD's {}{}",
                fmt(b),
                if higher_is_better { "below" } else { "above" },
                fmt(g),
                if higher_is_better {
                    ""
                } else {
                    " (if a higher number is better, pass --higher-is-better)"
                }
            ));
        }
        let threshold = asked.unwrap_or((g + b) / 2.0);
        let m = Metric {
            threshold,
            higher_is_better,
        };
        if m.side(g) != Some(StepVerdict::Good) || m.side(b) != Some(StepVerdict::Bad) {
            return Err(format!(
                "the threshold {} does not lie between GOOD's median {} and BAD's {}",
                fmt(threshold),
                fmt(g),
                fmt(b)
            ));
        }
        Ok(m)
    }

    fn side(&self, x: f64) -> Option<StepVerdict> {
        let above = x > self.threshold;
        let below = x < self.threshold;
        match (above, below, self.higher_is_better) {
            (true, _, false) | (_, true, true) => Some(StepVerdict::Bad),
            (_, true, false) | (true, _, true) => Some(StepVerdict::Good),
            _ => None,
        }
    }

    /// A step's verdict from its samples so far: good or bad once its median's interval
    /// lies on one side of the threshold, a skip after [`MAX_SAMPLES`] undecided; None asks
    /// for another sample.
    pub fn decide(&self, samples: &[f64]) -> Option<StepVerdict> {
        if let Some((lo, hi)) = median_interval(samples) {
            let (a, b) = (self.side(lo), self.side(hi));
            if a.is_some() && a == b {
                return a;
            }
        }
        (samples.len() >= MAX_SAMPLES).then_some(StepVerdict::Skip)
    }
}

/// A number as a person reads it: 3 significant digits at least.
pub fn fmt(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.3}")
    } else {
        format!("{x:.4}")
    }
}

/// `1.234 (1.200 to 1.300, 6 samples)`.
pub fn summary(samples: &[f64]) -> String {
    let (Some(m), Some(lo), Some(hi)) = (
        median(samples),
        samples.iter().copied().reduce(f64::min),
        samples.iter().copied().reduce(f64::max),
    ) else {
        return "no samples".into();
    };
    format!(
        "median {} ({} to {}, {} samples)",
        fmt(m),
        fmt(lo),
        fmt(hi),
        samples.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_number_is_the_last_one_printed() {
        assert_eq!(sample("boot took 1.25\n"), Some(1.25));
        assert_eq!(sample("[    1.234567] x\n3.5s\n"), Some(3.5));
        assert_eq!(sample("nothing here"), None);
        assert_eq!(sample("NaN inf"), None);
    }

    #[test]
    fn the_threshold_is_halfway_and_the_direction_is_checked() {
        let good = [1.0, 1.1, 0.9, 1.0, 1.05];
        let bad = [1.2, 1.25, 1.2, 1.3, 1.15];
        let m = Metric::from_endpoints(&good, &bad, None, false).unwrap();
        assert!((m.threshold - 1.1).abs() < 1e-9);
        let e = Metric::from_endpoints(&bad, &good, None, false).unwrap_err();
        assert!(e.contains("--higher-is-better"), "{e}");
        let m = Metric::from_endpoints(&bad, &good, None, true).unwrap();
        assert!((m.threshold - 1.1).abs() < 1e-9);
        assert!(Metric::from_endpoints(&good, &bad, Some(5.0), false).is_err());
        assert!(Metric::from_endpoints(&[], &bad, None, false).is_err());
    }

    #[test]
    fn a_step_is_decided_when_its_interval_is_on_one_side() {
        let m = Metric {
            threshold: 1.1,
            higher_is_better: false,
        };
        let fast = [1.0, 1.01, 0.99, 1.02, 1.0];
        assert_eq!(m.decide(&fast), None, "five samples give no 95 % interval");
        assert_eq!(
            m.decide(&[&fast[..], &[1.03]].concat()),
            Some(StepVerdict::Good)
        );
        let slow = [1.3, 1.2, 1.25, 1.22, 1.31, 1.28];
        assert_eq!(m.decide(&slow), Some(StepVerdict::Bad));
        // Straddling: more samples, then a skip at 15.
        let mixed: Vec<f64> = (0..14)
            .map(|i| if i % 2 == 0 { 1.0 } else { 1.2 })
            .collect();
        assert_eq!(m.decide(&mixed), None);
        assert_eq!(
            m.decide(&[&mixed[..], &[1.0]].concat()),
            Some(StepVerdict::Skip)
        );
        let up = Metric {
            threshold: 100.0,
            higher_is_better: true,
        };
        assert_eq!(up.decide(&[90.0; 6]), Some(StepVerdict::Bad));
        assert_eq!(
            summary(&[1.0, 3.0, 2.0]),
            "median 2.000 (1.000 to 3.000, 3 samples)"
        );
    }
}
