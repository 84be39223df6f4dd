//! The statistics of flaky and metric bisects, pure: a reproduction rate's lower bound from k
//! bad runs of n, the chance clean runs miss a bug whose rate is known only from runs, the
//! clean runs a good step needs, and the median of samples with its distribution-free 95 %
//! interval.

/// The probability the bounds and intervals are stated at.
pub const LEVEL: f64 = 0.95;

/// P(X ≥ k) for X ~ Binomial(n, p).
fn at_least(k: u32, n: u32, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    // P(X = i) by the recurrence P(i+1) = P(i) (n-i)/(i+1) p/(1-p), summed from k up; in logs
    // so that n up to thousands neither overflows nor underflows.
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let ln_choose = |i: u32| -> f64 {
        (1..=i)
            .map(|j| ((n - i + j) as f64).ln() - (j as f64).ln())
            .sum()
    };
    (k..=n)
        .map(|i| (ln_choose(i) + i as f64 * lp + (n - i) as f64 * lq).exp())
        .sum::<f64>()
        .min(1.0)
}

/// The lower one-sided 95 % (Clopper-Pearson) bound of a rate seen `k` times in `n` runs:
/// the smallest rate under which `k` or more of `n` runs show it with probability 5 %. 0
/// when `k` is 0; `0.05^(1/n)` when every run showed it.
pub fn rate_lower_bound(k: u32, n: u32) -> f64 {
    if k == 0 || n == 0 {
        return 0.0;
    }
    let k = k.min(n);
    // P(X ≥ k) grows with p: bisect p until it is 1 - LEVEL.
    let (mut lo, mut hi) = (0.0_f64, 1.0_f64);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if at_least(k, n, mid) < 1.0 - LEVEL {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

/// What each good step must reach for a whole bisect of `k` good steps to reach `confidence`:
/// `confidence^(1/k)`.
pub fn step_target(confidence: f64, k: u32) -> f64 {
    confidence.powf(1.0 / k.max(1) as f64)
}

/// The most clean runs a good step is given, whatever the rate and target ask.
pub const MAX_CLEAN_RUNS: u32 = 1000;

/// The chance that `m` runs of a commit with the bug all come out clean, the rate unknown:
/// `E[(1-p)^m]` for p from its posterior `Beta(1 + bad, 1 + good)` (a uniform prior, updated
/// with `bad` and `good` runs at commits known to have the bug). In closed form, the product
/// over `i < m` of `(1 + good + i) / (2 + bad + good + i)`.
pub fn miss_chance(bad: u32, good: u32, m: u32) -> f64 {
    let (bad, good) = (f64::from(bad), f64::from(good));
    (0..m)
        .map(|i| (1.0 + good + f64::from(i)) / (2.0 + bad + good + f64::from(i)))
        .product()
}

/// How many clean runs make a step good: the fewest `m` with `1 - miss_chance ≥ target`, that
/// is a bug at the rate the runs so far tell (`bad` and `good` runs at commits known to have
/// it) would have shown in one of them with probability `target`. At most
/// [`MAX_CLEAN_RUNS`].
pub fn clean_runs_needed(bad: u32, good: u32, target: f64) -> u32 {
    (1..=MAX_CLEAN_RUNS)
        .find(|&m| miss_chance(bad, good, m) <= 1.0 - target)
        .unwrap_or(MAX_CLEAN_RUNS)
}

/// `ln B(1 + bad, 1 + good)` = `ln(bad! good! / (bad + good + 1)!)`: the chance of a given
/// sequence of `bad` and `good` runs under a uniform prior of the rate.
pub fn ln_beta_runs(bad: u32, good: u32) -> f64 {
    let ln_fact = |n: u32| (2..=n).map(|i| f64::from(i).ln()).sum::<f64>();
    ln_fact(bad) + ln_fact(good) - ln_fact(bad.saturating_add(good).saturating_add(1))
}

/// The median of `samples` (none: None).
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut s = sorted(samples)?;
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        let hi = s.swap_remove(n / 2);
        (s[n / 2 - 1] + hi) / 2.0
    })
}

fn sorted(samples: &[f64]) -> Option<Vec<f64>> {
    if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    Some(s)
}

/// The fewest samples whose median has a 95 % interval ([`median_interval`]).
pub const MIN_SAMPLES_FOR_INTERVAL: usize = 6;

/// The distribution-free 95 % interval of the median of `samples`: the order statistics
/// `[x(j), x(n+1-j)]` with the largest `j` such that `P(j ≤ B ≤ n-j) ≥ 0.95`, B ~
/// Binomial(n, 1/2). None with fewer than [`MIN_SAMPLES_FOR_INTERVAL`] samples (five give at
/// most 93.75 %).
pub fn median_interval(samples: &[f64]) -> Option<(f64, f64)> {
    let s = sorted(samples)?;
    let n = s.len() as u32;
    // Coverage of [x(j), x(n+1-j)] is 1 - 2 P(B < j) = 1 - 2 (1 - P(B ≥ j)).
    let covers = |j: u32| 1.0 - 2.0 * (1.0 - at_least(j, n, 0.5));
    let j = (1..=n / 2).take_while(|&j| covers(j) >= LEVEL).last()?;
    Some((s[j as usize - 1], s[(n - j) as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn the_lower_bound_matches_clopper_pearson() {
        // Every run bad: 0.05^(1/n), in closed form.
        assert!(near(rate_lower_bound(5, 5), 0.05f64.powf(0.2), 1e-9));
        assert!(near(rate_lower_bound(1, 1), 0.05, 1e-9));
        // Beta(k, n-k+1)'s 5 % quantile (tables of the exact binomial interval).
        assert!(near(rate_lower_bound(3, 6), 0.1531, 1e-3));
        assert!(near(rate_lower_bound(1, 10), 0.0051, 1e-3));
        assert_eq!(rate_lower_bound(0, 30), 0.0);
        // Under the floor (0.1) after 30 runs with 3 bad.
        assert!(rate_lower_bound(3, 30) < 0.1 && rate_lower_bound(3, 30) > 0.02);
        // More evidence, a higher bound.
        assert!(rate_lower_bound(30, 60) > rate_lower_bound(3, 6));
        assert!(rate_lower_bound(7, 3) > 0.3, "k over n is taken as n of n");
    }

    #[test]
    fn clean_runs_needed_reach_the_target_and_no_fewer_would() {
        for (bad, good, c, k) in [
            (3, 3, 0.95, 3),
            (3, 2, 0.95, 2),
            (9, 1, 0.99, 5),
            (3, 27, 0.95, 4),
        ] {
            let t = step_target(c, k);
            let m = clean_runs_needed(bad, good, t);
            assert!(1.0 - miss_chance(bad, good, m) >= t, "{bad} {good}: {m}");
            assert!(
                m == 1 || 1.0 - miss_chance(bad, good, m - 1) < t,
                "{bad} {good}: {m}"
            );
        }
        // Beta(4, 3) (3 bad of 5): 3/7 · 4/8 · 5/9 · 6/10 · 7/11 after 5 clean runs.
        assert!(near(miss_chance(3, 2, 5), 2520.0 / 55440.0, 1e-12));
        assert_eq!(miss_chance(3, 2, 0), 1.0);
        // The posterior's spread costs runs: a rate known to be 1/2 needs 6 for 0.983, the
        // rate told by 3 bad of 5 needs 8.
        assert_eq!(clean_runs_needed(3, 2, step_target(0.95, 3)), 8);
        // Much evidence of a rate of 1/2: close to the 6 the known rate needs.
        assert_eq!(clean_runs_needed(500, 500, step_target(0.95, 3)), 6);
        assert_eq!(clean_runs_needed(0, 1000, 0.999), MAX_CLEAN_RUNS);
    }

    #[test]
    fn the_beta_function_of_runs() {
        assert!(near(ln_beta_runs(0, 0), 0.0, 1e-12));
        // 2! 1! / 4! = 1/12.
        assert!(near(ln_beta_runs(2, 1), (1.0f64 / 12.0).ln(), 1e-12));
        assert!(ln_beta_runs(5000, 5000).is_finite());
    }

    #[test]
    fn the_median_and_its_interval() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
        // Six: the extremes (coverage 1 - 2/64).
        assert_eq!(
            median_interval(&[6.0, 1.0, 5.0, 2.0, 4.0, 3.0]),
            Some((1.0, 6.0))
        );
        // Fifteen: x(4) to x(12) (coverage 0.965; x(5)..x(11) would be 0.88).
        let s: Vec<f64> = (1..=15).map(f64::from).collect();
        assert_eq!(median_interval(&s), Some((4.0, 12.0)));
    }
}
