//! `cargo xtask bench bisect --flaky`: 10 seeded bisects of a check that is bad half the time
//! at and after the culprit, against the same bisect with a check that is bad every time; how
//! many named the right culprit, the runs (boots) each took, the confidence stated. Real: the
//! engine, the judging rules, the confirmation plan and `git bisect --no-checkout` over the
//! synthetic history; simulated: each run is a seeded coin, not a boot (10 flaky bisects
//! of about 45 boots each do not fit in a bench run).

use crate::bisect::simulate::{self, BareWorktree, Seeded};
use crate::bisect::{Asked, StepVerdict};
use crate::ctx::Ctx;
use crate::history;
use crate::units::short;
use anyhow::Result;

/// Seeded bisects.
const SEEDS: u64 = 10;
/// The stand-in check's rate at and after the culprit.
const RATE: f64 = 0.5;

fn median(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

pub fn run(ctx: &Ctx, commits: u32) -> Result<u8> {
    let tree = ctx.require_tree()?;
    let n = commits as usize;
    let culprit = n * 2 / 3;
    let branch = format!("bench-bisect-{n}");
    eprintln!("bench bisect --flaky: writing {n} commits as {branch} (the culprit at #{culprit})");
    let ids = history::write(&tree, "base", &branch, &history::plan(n, culprit, None)?)?;
    let index = |c: &str| {
        ids.iter()
            .position(|id| id == c)
            .map_or(c == "revert", |i| i >= culprit)
    };
    let wt = BareWorktree::add(&tree, &ctx.run_dir.join("bench-flaky-wt"), &branch)?;
    let asked = Asked::default();
    // The revert is of the culprit on the bad end: the bug is gone there.
    let has_bug = |c: &str| c != "revert" && index(c);
    let mut always = |c: &str| {
        if has_bug(c) {
            StepVerdict::Bad
        } else {
            StepVerdict::Good
        }
    };
    let det = simulate::bisect(&wt.dir, "base", &ids[n - 1], &asked, commits, &mut always)?;
    println!(
        "bench bisect --flaky: {n} commits (culprit #{culprit} {}), a check bad half the time at and after it",
        short(&ids[culprit])
    );
    println!("real: the engine, judging, confirmation plan, git bisect over the history; simulated: each run is a seeded coin, not a boot");
    println!(
        "deterministic check (bad every time): {} runs, culprit {}",
        det.runs,
        det.culprit.as_deref().map_or("none", short)
    );
    println!(
        "{:<6} {:<14} {:>6} {:>11} {:>10}  mode",
        "seed", "culprit", "runs", "confidence", "confirmed"
    );
    let (mut right, mut runs, mut confidences) = (0, Vec::new(), Vec::new());
    for seed in 1..=SEEDS {
        let mut rng = Seeded::new(seed);
        let mut flaky = |c: &str| {
            if has_bug(c) && rng.next() < RATE {
                StepVerdict::Bad
            } else {
                StepVerdict::Good
            }
        };
        match simulate::bisect(&wt.dir, "base", &ids[n - 1], &asked, commits, &mut flaky) {
            Ok(s) => {
                let ok = s.culprit.as_deref() == Some(ids[culprit].as_str());
                right += u32::from(ok);
                runs.push(s.runs);
                confidences.push(s.confidence.unwrap_or(1.0));
                println!(
                    "{seed:<6} {:<14} {:>6} {:>11} {:>10}  {}",
                    format!(
                        "{}{}",
                        s.culprit.as_deref().map_or("none", short),
                        if ok { "" } else { " WRONG" }
                    ),
                    s.runs,
                    s.confidence.map_or("-".into(), |c| format!("{c:.3}")),
                    s.confirmed,
                    s.mode.describe()
                );
            }
            Err(e) => println!("{seed:<6} refused: {e:#}"),
        }
    }
    let med = median(runs);
    let min_conf = confidences.iter().copied().fold(1.0, f64::min);
    println!(
        "right culprit: {right} of {SEEDS} (goal: at least 9); median runs {med}, {:.1}x the deterministic bisect's {} (goal: at most 3x); lowest stated confidence {min_conf:.3} (goal: at least 0.95)",
        med as f64 / det.runs.max(1) as f64,
        det.runs
    );
    Ok(0)
}
