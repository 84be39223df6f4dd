//! One commit's check under the bisect's judging: runs until the rule decides (the mode's,
//! or the BAD end's that finds the mode), each run counted against the target symptom or
//! read as a metric sample. The counting is pure ([`tally`]); [`check`] runs the boots.

use super::engine::StepVerdict;
use super::metric;
use super::mode::{self, Asked, Mode};
use super::report::Run;
use super::symptom::{self, Counted, Symptom};
use crate::ctx::Ctx;
use crate::vm::{self, run::Report, verdict::Verdict, CheckOutcome, CheckRequest};
use anyhow::Result;
use serde::{Deserialize, Serialize};

/// How the bisect judges: frozen at its endpoints, saved for `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judging {
    pub mode: Mode,
    /// What BAD showed; a run is bad only when it shows it (unless `any_failure`).
    pub target: Option<Symptom>,
    pub any_failure: bool,
}

impl Default for Judging {
    fn default() -> Judging {
        Judging {
            mode: Mode::Deterministic { repeat: 1 },
            target: None,
            any_failure: false,
        }
    }
}

/// Which rule ends a commit's runs.
pub enum Rule<'a> {
    /// A step (or GOOD, or the confirmation) under the mode.
    Step,
    /// The BAD end, whose runs decide the mode (and give the target symptom).
    BadEnd(&'a Asked),
    /// An endpoint of a metric bisect: a fixed number of samples.
    MetricEnd,
    /// A confirmation's test that expects clean runs, in a flaky bisect: as a step, but good
    /// at a clean run once the function says the bisect's confidence is reached with them.
    Confirming(&'a dyn Fn(&[StepVerdict]) -> bool),
}

/// The runs so far, counted: each run's verdict (an "other" failure or a run without a number
/// is a skip), the samples, and the target (BAD's first bad run gives it when none is known).
pub struct Tally {
    pub verdicts: Vec<StepVerdict>,
    pub samples: Vec<f64>,
    /// Per run: `other: …`, the failure that was not the target.
    pub notes: Vec<Option<String>>,
    pub target: Option<Symptom>,
}

/// Counts runs: pure, given each run's verdict, facts and printed output. When the check's
/// tests judge its runs (`tests_judged`), their verdict is the run's, and the target is a
/// judged test failing: the boot itself ends without the agent in a KUnit run.
pub fn tally(
    runs: &[(Verdict, &vm::verdict::Facts, Option<&str>)],
    judging: &Judging,
    metric: bool,
    learn_target: bool,
    tests_judged: bool,
) -> Tally {
    let mut t = Tally {
        verdicts: Vec::new(),
        samples: Vec::new(),
        notes: Vec::new(),
        target: judging.target.clone(),
    };
    for (verdict, facts, stdout) in runs {
        if metric {
            let ran = facts.command_end == Some(vm::verdict::CommandEnd::Exited { code: 0 })
                && *verdict != Verdict::Abort;
            match stdout.and_then(metric::sample).filter(|_| ran) {
                Some(x) => {
                    t.samples.push(x);
                    t.verdicts.push(StepVerdict::Good);
                    t.notes.push(None);
                }
                None => {
                    t.verdicts.push(StepVerdict::Skip);
                    t.notes.push(Some("the command printed no number".into()));
                }
            }
            continue;
        }
        if tests_judged {
            if learn_target && t.target.is_none() && *verdict == Verdict::Bad {
                t.target = Some(Symptom::Tests);
            }
            t.verdicts.push(match verdict {
                Verdict::Good => StepVerdict::Good,
                Verdict::Bad => StepVerdict::Bad,
                Verdict::Skip | Verdict::Abort => StepVerdict::Skip,
            });
            t.notes.push(None);
            continue;
        }
        if learn_target && t.target.is_none() && *verdict == Verdict::Bad {
            t.target = symptom::of(facts).into_iter().next();
        }
        match symptom::count(
            *verdict,
            Some(facts),
            t.target.as_ref(),
            judging.any_failure,
        ) {
            Counted::As(v) => {
                t.verdicts.push(v);
                t.notes.push(None);
            }
            Counted::Other(s) => {
                t.verdicts.push(StepVerdict::Skip);
                t.notes.push(Some(format!("other: {}", s.describe())));
            }
        }
    }
    t
}

/// What the counting reads of one run. The BAD end's are kept (bisect/earlier.rs), so that a
/// later bisect of the same kernel under the same check counts them too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub verdict: Verdict,
    pub facts: vm::verdict::Facts,
    /// What the command printed (a metric's number).
    pub stdout: Option<String>,
    /// The check's reason for its verdict.
    pub reason: String,
    /// The run's tests judged it (`--kunit`, `--ktap`, `--kselftest`).
    pub tests_judged: bool,
}

impl RunRecord {
    pub fn of(r: &Report) -> RunRecord {
        RunRecord {
            verdict: r.judgement.verdict(),
            facts: r.facts.clone(),
            stdout: r
                .exec
                .as_ref()
                .map(|e| String::from_utf8_lossy(&e.stdout).into_owned()),
            reason: r.judgement.reason.clone(),
            tests_judged: r.ktap.is_some(),
        }
    }
}

fn counted(records: &[RunRecord], judging: &Judging, rule: &Rule) -> Tally {
    let runs: Vec<_> = records
        .iter()
        .map(|r| (r.verdict, &r.facts, r.stdout.as_deref()))
        .collect();
    tally(
        &runs,
        judging,
        judging.mode.metric().is_some() || matches!(rule, Rule::MetricEnd),
        matches!(rule, Rule::BadEnd(_)),
        records.iter().any(|r| r.tests_judged),
    )
}

/// Whether the rule wants another run.
fn needs_more(t: &Tally, judging: &Judging, rule: &Rule, aborted: bool) -> bool {
    if aborted {
        return false;
    }
    match rule {
        Rule::Step => mode::decide(&judging.mode, &t.verdicts, &t.samples).is_none(),
        Rule::Confirming(reached) => {
            mode::decide_confirming(&judging.mode, &t.verdicts, reached(&t.verdicts)).is_none()
        }
        Rule::BadEnd(asked) => mode::bad_end_needs_more(asked, &t.verdicts),
        Rule::MetricEnd => mode::metric_end_needs_more(
            t.samples.len(),
            t.verdicts.last() == Some(&StepVerdict::Skip),
        ),
    }
}

/// What [`check`] found.
pub struct Checked {
    pub outcome: CheckOutcome,
    /// The runs counted: `earlier`'s, then this check's.
    pub runs: Vec<Run>,
    pub records: Vec<RunRecord>,
    pub tally: Tally,
    /// The commit's verdict under the rule (a metric endpoint's is good: the threshold,
    /// made from both ends, decides).
    pub verdict: StepVerdict,
    /// Why, when the check's own reason is not it (an other failure, a metric's samples).
    pub reason: Option<String>,
}

/// A commit's verdict from its counted runs under `rule`.
fn verdict_of(t: &Tally, judging: &Judging, rule: &Rule) -> StepVerdict {
    let has = |v| t.verdicts.contains(&v);
    match rule {
        Rule::Step => {
            mode::decide(&judging.mode, &t.verdicts, &t.samples).unwrap_or(StepVerdict::Skip)
        }
        Rule::Confirming(reached) => {
            mode::decide_confirming(&judging.mode, &t.verdicts, reached(&t.verdicts))
                .unwrap_or(StepVerdict::Skip)
        }
        Rule::BadEnd(_) if has(StepVerdict::Bad) => StepVerdict::Bad,
        Rule::BadEnd(_) if has(StepVerdict::Skip) => StepVerdict::Skip,
        Rule::MetricEnd if has(StepVerdict::Skip) => StepVerdict::Skip,
        Rule::BadEnd(_) | Rule::MetricEnd => StepVerdict::Good,
    }
}

/// Runs the check of one commit (already built) until the rule decides, counting `earlier`
/// (runs of the same kernel under the same check, from earlier bisects) before its own; it
/// boots the commit at least once.
pub fn check(
    sctx: &Ctx,
    req: &CheckRequest,
    judging: &Judging,
    rule: Rule,
    earlier: &[RunRecord],
) -> Result<Checked> {
    let with_earlier = |reports: &[Report]| {
        let mut all = earlier.to_vec();
        all.extend(reports.iter().map(RunRecord::of));
        all
    };
    let outcome = crate::check::run_until(sctx, req, true, &mut |reports: &[Report]| {
        let aborted = reports
            .last()
            .is_some_and(|r| r.judgement.verdict() == Verdict::Abort);
        reports.is_empty()
            || needs_more(
                &counted(&with_earlier(reports), judging, &rule),
                judging,
                &rule,
                aborted,
            )
    })?;
    let records = with_earlier(&outcome.runs);
    let tally = counted(&records, judging, &rule);
    let timings = earlier
        .iter()
        .map(|_| None)
        .chain(outcome.runs.iter().map(|r| Some(&r.timings)));
    let runs = records
        .iter()
        .zip(timings)
        .enumerate()
        .map(|(i, (r, timings))| Run {
            verdict: tally.verdicts[i],
            reason: match &tally.notes[i] {
                Some(n) => format!("{n} ({})", r.reason),
                None => r.reason.clone(),
            },
            boot_secs: timings.and_then(|t| t.boot).map(|d| d.as_secs_f64()),
            check_secs: timings.and_then(|t| t.command).map(|d| d.as_secs_f64()),
            sample: tally
                .samples
                .get(i)
                .copied()
                .filter(|_| tally.notes[i].is_none()),
            earlier: timings.is_none(),
        })
        .collect();
    let verdict = verdict_of(&tally, judging, &rule);
    let reason = if !tally.samples.is_empty() {
        Some(metric::summary(&tally.samples))
    } else {
        tally.notes.iter().flatten().last().cloned()
    };
    Ok(Checked {
        outcome,
        runs,
        records,
        tally,
        verdict,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::console::{Finding, FindingKind};
    use crate::vm::verdict::{BootEnd, CommandEnd, Facts};

    fn facts(code: i32, warn_at: Option<&str>) -> Facts {
        Facts {
            command: vec!["x".into()],
            boot: BootEnd::AgentUp,
            command_end: Some(CommandEnd::Exited { code }),
            findings: warn_at
                .map(|f| Finding {
                    kind: FindingKind::Warning,
                    line: 3,
                    text: format!("WARNING: CPU: 0 PID: 1 at {f}:10 0xffffffff81000000"),
                    usec: None,
                })
                .into_iter()
                .collect(),
            from_userspace: vec![],
            vm_end: None,
            kernel_printed: true,
        }
    }

    #[test]
    fn the_bad_end_names_the_target_and_other_failures_are_skips() {
        let good = facts(0, None);
        let main = facts(1, Some("init/main.c"));
        let fork = facts(1, Some("kernel/fork.c"));
        let j = Judging::default();
        let runs = [
            (Verdict::Good, &good, None),
            (Verdict::Bad, &main, None),
            (Verdict::Bad, &fork, None),
        ];
        let t = tally(&runs, &j, false, true, false);
        assert_eq!(
            t.target.as_ref().unwrap().describe(),
            "warning at init/main.c"
        );
        assert_eq!(
            t.verdicts,
            [StepVerdict::Good, StepVerdict::Bad, StepVerdict::Skip]
        );
        assert_eq!(
            t.notes[2].as_deref(),
            Some("other: warning at kernel/fork.c")
        );
        let any = Judging {
            any_failure: true,
            ..j
        };
        assert_eq!(
            tally(&runs, &any, false, true, false).verdicts[2],
            StepVerdict::Bad
        );
    }

    #[test]
    fn a_metric_run_is_its_number() {
        let ok = facts(0, None);
        let failed = facts(3, None);
        let j = Judging::default();
        let t = tally(
            &[
                (Verdict::Good, &ok, Some("1.5\n")),
                (Verdict::Bad, &failed, Some("2.0\n")),
                (Verdict::Good, &ok, Some("no number")),
            ],
            &j,
            true,
            false,
            false,
        );
        assert_eq!(t.samples, [1.5]);
        assert_eq!(
            t.verdicts,
            [StepVerdict::Good, StepVerdict::Skip, StepVerdict::Skip]
        );
    }

    /// A KUnit run ends its VM without the agent: its tests' verdict is the run's, and the
    /// target BAD shows is a judged test failing, not the boot.
    #[test]
    fn a_run_judged_by_its_tests_counts_as_its_tests_say() {
        let kunit = vm::verdict::Facts {
            boot: vm::verdict::BootEnd::VmEnded,
            ..facts(0, None)
        };
        let kunit = vm::verdict::Facts {
            command: Vec::new(),
            command_end: None,
            ..kunit
        };
        let j = Judging::default();
        let runs = [
            (Verdict::Bad, &kunit, None),
            (Verdict::Good, &kunit, None),
            (Verdict::Skip, &kunit, None),
        ];
        let t = tally(&runs, &j, false, true, true);
        assert_eq!(t.target, Some(Symptom::Tests));
        assert_eq!(
            t.verdicts,
            [StepVerdict::Bad, StepVerdict::Good, StepVerdict::Skip]
        );
        assert_eq!(Symptom::Tests.describe(), "a judged test failing");
        // Not judged by tests, the same run shows a boot that did not finish.
        let t = tally(&runs[..1], &j, false, true, false);
        assert_eq!(t.target, Some(Symptom::Boot));
    }
}
