//! The bisect engine, pure: the bisect's state, git's answer turned into the next candidate or
//! the outcome, a step's runs turned into a verdict and that verdict into the term that marks
//! the candidate. Generic over what is bisected (`C`: a commit id today) and over how a step is
//! judged ([`Judge`]), so that flaky statistics and metric steps plug in as other judges.

use super::progress::Progress;
use serde::{Deserialize, Serialize};

/// What one step (or one run of it) decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepVerdict {
    Good,
    Bad,
    /// Did not build, or (with a command) did not boot: `git bisect skip`.
    Skip,
}

/// How a step is judged from its runs so far: `None` asks for one more run.
pub trait Judge {
    fn decide(&self, runs: &[StepVerdict]) -> Option<StepVerdict>;
}

/// `--repeat N` (N ≥ 1): bad at the first bad run, skip at the first untestable one, good
/// after N good runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat(pub u32);

impl Judge for Repeat {
    fn decide(&self, runs: &[StepVerdict]) -> Option<StepVerdict> {
        match runs.last() {
            Some(StepVerdict::Bad) => Some(StepVerdict::Bad),
            Some(StepVerdict::Skip) => Some(StepVerdict::Skip),
            _ if runs.len() >= self.0.max(1) as usize => Some(StepVerdict::Good),
            _ => None,
        }
    }
}

/// The two states a bisect tells apart. Forward, the old state is "good" and the new one "bad"
/// (the first bad commit is found); with `--reverse` (finding a fix) the old state is "broken"
/// (the check fails) and the new one "fixed" (it passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    pub reverse: bool,
}

impl Terms {
    pub fn old_term(self) -> &'static str {
        if self.reverse {
            "broken"
        } else {
            "good"
        }
    }

    pub fn new_term(self) -> &'static str {
        if self.reverse {
            "fixed"
        } else {
            "bad"
        }
    }

    /// The check verdict that means the new state: bad forward, good in reverse.
    pub fn new_verdict(self) -> StepVerdict {
        if self.reverse {
            StepVerdict::Good
        } else {
            StepVerdict::Bad
        }
    }

    pub fn old_verdict(self) -> StepVerdict {
        if self.reverse {
            StepVerdict::Bad
        } else {
            StepVerdict::Good
        }
    }

    /// The git term a step's verdict marks its candidate with.
    pub fn term(self, v: StepVerdict) -> &'static str {
        match v {
            StepVerdict::Skip => "skip",
            v if v == self.new_verdict() => self.new_term(),
            _ => self.old_term(),
        }
    }
}

/// Which endpoint: the older one (good, or broken with --reverse) or the newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum End {
    Old,
    New,
}

/// Why a step was run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Endpoint(End),
    Step,
    /// The confirmation's re-test of the culprit.
    Culprit,
    /// The confirmation's test of the culprit's parent.
    Parent,
    /// The confirmation's test of the new end with the culprit reverted.
    Revert,
}

/// How the bisect ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome<C> {
    /// The first commit in the new state.
    Found { culprit: C },
    /// Only skipped candidates are left: the culprit is one of them.
    Range { candidates: Vec<C> },
    /// No candidate in the range touches the `--paths` given (git: "No testable commit").
    NoneTestable,
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next<C> {
    /// Test this candidate (git checked it out).
    Test(C),
    Done(Outcome<C>),
}

/// The bisect's state between steps: saved after every step, so `--resume` goes on from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engine<C> {
    pub terms: Terms,
    pub old: C,
    pub new: C,
    /// The candidate git checked out and that is to be tested next.
    pub next: Option<C>,
    /// Every candidate tested, with its verdict, in order (endpoints and confirmation too).
    pub marks: Vec<(Role, C, StepVerdict)>,
    pub outcome: Option<Outcome<C>>,
}

/// What went wrong with git's answer: it names no next candidate and no end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexpected(pub String);

impl<C: Clone + PartialEq + std::fmt::Debug> Engine<C> {
    pub fn new(terms: Terms, old: C, new: C) -> Engine<C> {
        Engine {
            terms,
            old,
            new,
            next: None,
            marks: Vec::new(),
            outcome: None,
        }
    }

    /// Whether an endpoint's verdict fits: the old end must be in the old state and the new
    /// end in the new one. The error says what the endpoint is instead.
    pub fn endpoint(&mut self, end: End, v: StepVerdict) -> Result<(), String> {
        let c = match end {
            End::Old => self.old.clone(),
            End::New => self.new.clone(),
        };
        self.marks.push((Role::Endpoint(end), c, v));
        let want = match end {
            End::Old => self.terms.old_verdict(),
            End::New => self.terms.new_verdict(),
        };
        match v {
            v if v == want => Ok(()),
            StepVerdict::Skip => Err("cannot be tested".into()),
            StepVerdict::Good => Err("good under this check".into()),
            StepVerdict::Bad => Err("bad under this check".into()),
        }
    }

    /// Takes git's answer (to `bisect start` or a mark): the next candidate or the end.
    pub fn on_git(&mut self, answer: Option<Progress<C>>) -> Result<Next<C>, Unexpected> {
        let next = match answer {
            Some(Progress::Next { candidate, .. }) => Next::Test(candidate),
            Some(Progress::Found { commit }) => Next::Done(Outcome::Found { culprit: commit }),
            Some(Progress::OnlySkipped { candidates }) => Next::Done(Outcome::Range { candidates }),
            Some(Progress::NoneTestable) => Next::Done(Outcome::NoneTestable),
            None => return Err(Unexpected("git named no next commit and no end".into())),
        };
        match &next {
            Next::Test(c) => self.next = Some(c.clone()),
            Next::Done(o) => {
                self.next = None;
                self.outcome = Some(o.clone());
            }
        }
        Ok(next)
    }

    /// Records a tested step and gives the term to mark it with (`git bisect TERM <c>`). A
    /// verdict for anything but the candidate git asked for is refused: marking a commit by
    /// what HEAD happens to be is how a bisect goes wrong.
    pub fn mark(&mut self, c: &C, v: StepVerdict) -> Result<&'static str, Unexpected> {
        if self.next.as_ref() != Some(c) {
            return Err(Unexpected(format!(
                "a verdict for {c:?}, but the candidate under test is {:?}",
                self.next
            )));
        }
        self.marks.push((Role::Step, c.clone(), v));
        Ok(self.terms.term(v))
    }

    /// Steps taken, endpoints and confirmation left out.
    pub fn steps(&self) -> usize {
        self.marks
            .iter()
            .filter(|(r, _, _)| *r == Role::Step)
            .count()
    }
}

/// One test of the confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmTest<C> {
    pub role: Role,
    pub candidate: C,
    pub expect: StepVerdict,
}

/// The confirmation's tests: the culprit in the new state, its parent in the old one, and the
/// new end with the culprit reverted in the old one (when the revert applied). Forward: bad,
/// good, good.
pub fn confirmation_plan<C: Clone>(
    terms: Terms,
    culprit: &C,
    parent: Option<&C>,
    revert: Option<&C>,
) -> Vec<ConfirmTest<C>> {
    let mut plan = vec![ConfirmTest {
        role: Role::Culprit,
        candidate: culprit.clone(),
        expect: terms.new_verdict(),
    }];
    for (role, c) in [(Role::Parent, parent), (Role::Revert, revert)] {
        if let Some(c) = c {
            plan.push(ConfirmTest {
                role,
                candidate: c.clone(),
                expect: terms.old_verdict(),
            });
        }
    }
    plan
}

/// The confirmation's result, as the report gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Confirmation {
    /// Every test agreed (and the revert applied).
    Confirmed,
    /// Which tests disagreed, and how; or that the revert did not apply.
    NotConfirmed { why: Vec<String> },
    /// `--no-confirm`, or the bisect named no single commit.
    NotRun,
}

/// Judges the confirmation from its tests' verdicts; `revert_failed` is why the revert did not
/// apply, if it did not (reported, not fatal).
pub fn judge_confirmation<C>(
    terms: Terms,
    results: &[(ConfirmTest<C>, StepVerdict)],
    revert_failed: Option<&str>,
) -> Confirmation {
    let name = |r: Role| match r {
        Role::Culprit => "the culprit",
        Role::Parent => "its parent",
        Role::Revert => "the new end with the culprit reverted",
        _ => "a step",
    };
    let word = |v: StepVerdict| match v {
        StepVerdict::Skip => "untestable".to_string(),
        v => terms.term(v).to_string(),
    };
    let mut why: Vec<String> = results
        .iter()
        .filter(|(t, v)| t.expect != *v)
        .map(|(t, v)| format!("{} is {}, not {}", name(t.role), word(*v), word(t.expect)))
        .collect();
    if let Some(e) = revert_failed {
        why.push(format!(
            "the culprit does not revert cleanly on the new end: {e}"
        ));
    }
    if why.is_empty() {
        Confirmation::Confirmed
    } else {
        Confirmation::NotConfirmed { why }
    }
}

#[cfg(test)]
mod tests {
    use super::super::progress::parse;
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    fn data(scenario: &str, file: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/bisect/test_data")
            .join(scenario)
            .join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// The recorded repository's commits by tag (c0..c9).
    fn commits() -> BTreeMap<String, String> {
        data("", "commits.txt")
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(t, c)| (t.to_string(), c.to_string()))
            .collect()
    }

    /// The recorded step files of a scenario in order: (verdict's term, git's answer).
    fn recorded_steps(scenario: &str) -> Vec<(String, String)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/bisect/test_data")
            .join(scenario);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.as_bytes()[0].is_ascii_digit())
            .collect();
        names.sort();
        names
            .into_iter()
            .map(|n| {
                let term = n
                    .trim_end_matches(".txt")
                    .split('-')
                    .nth(1)
                    .unwrap()
                    .to_string();
                (term, data(scenario, &n))
            })
            .collect()
    }

    /// The recording's check: bad once c6 is in, c4 untestable (see test_data/record.sh).
    fn check(c: &str, by_tag: &BTreeMap<String, String>) -> StepVerdict {
        let n: usize = by_tag
            .iter()
            .find(|(_, id)| *id == c)
            .map(|(t, _)| t[1..].parse().unwrap())
            .unwrap();
        match n {
            4 => StepVerdict::Skip,
            n if n >= 6 => StepVerdict::Bad,
            _ => StepVerdict::Good,
        }
    }

    /// Replays a recorded bisect: every candidate git named is tested by the recording's
    /// check, marked with the term the engine chose (the same the recording used), until git's
    /// recorded last answer ends it.
    fn replay(scenario: &str, terms: Terms) -> (Engine<String>, Vec<String>) {
        let by_tag = commits();
        let mut e = Engine::new(terms, by_tag["c0"].clone(), by_tag["c9"].clone());
        let mut tested = Vec::new();
        let mut next = e.on_git(parse(&data(scenario, "start.txt"))).unwrap();
        for (recorded_term, answer) in recorded_steps(scenario) {
            let Next::Test(c) = next else {
                panic!("{scenario}: the engine ended before the recording did")
            };
            let mut v = check(&c, &by_tag);
            if terms.reverse && v != StepVerdict::Skip {
                // The recording reads BUG as "fixed": the inverted check.
                v = if v == StepVerdict::Bad {
                    StepVerdict::Good
                } else {
                    StepVerdict::Bad
                };
            }
            assert_eq!(e.mark(&c, v).unwrap(), recorded_term, "{scenario} at {c}");
            tested.push(c);
            next = e.on_git(parse(&answer)).unwrap();
        }
        assert!(
            matches!(next, Next::Done(_)),
            "{scenario}: not done: {next:?}"
        );
        (e, tested)
    }

    #[test]
    fn a_recorded_bisect_names_the_culprit_and_skips_the_untestable() {
        let c = commits();
        let (e, tested) = replay("found", Terms { reverse: false });
        assert_eq!(
            e.outcome,
            Some(Outcome::Found {
                culprit: c["c6"].clone()
            })
        );
        assert_eq!(
            tested,
            [
                c["c4"].clone(),
                c["c5"].clone(),
                c["c7"].clone(),
                c["c6"].clone()
            ]
        );
        assert_eq!(e.steps(), 4);
        assert_eq!(e.next, None);
    }

    #[test]
    fn reverse_marks_broken_and_fixed() {
        let c = commits();
        let (e, _) = replay("reverse", Terms { reverse: true });
        assert_eq!(
            e.outcome,
            Some(Outcome::Found {
                culprit: c["c6"].clone()
            })
        );
    }

    #[test]
    fn paths_narrow_the_candidates_and_may_leave_none() {
        let c = commits();
        let (e, tested) = replay("paths", Terms { reverse: false });
        assert_eq!(
            e.outcome,
            Some(Outcome::Found {
                culprit: c["c6"].clone()
            })
        );
        assert_eq!(
            tested,
            [c["c5"].clone(), c["c7"].clone(), c["c6"].clone()],
            "c3 touches only docs/"
        );
        let (e, tested) = replay("paths_untestable", Terms { reverse: false });
        assert_eq!(tested, [c["c3"].clone()]);
        assert_eq!(e.outcome, Some(Outcome::NoneTestable));
    }

    #[test]
    fn only_skipped_commits_left_give_the_range() {
        let c = commits();
        let mut e = Engine::new(Terms { reverse: false }, c["c3"].clone(), c["c6"].clone());
        let Next::Test(first) = e.on_git(parse(&data("only_skipped", "start.txt"))).unwrap() else {
            panic!("no first candidate")
        };
        assert_eq!(first, c["c5"]);
        assert_eq!(e.mark(&first, StepVerdict::Skip).unwrap(), "skip");
        let next = e
            .on_git(parse(&data("only_skipped", "01-skip.txt")))
            .unwrap();
        assert_eq!(
            next,
            Next::Done(Outcome::Range {
                candidates: vec![c["c4"].clone(), c["c5"].clone(), c["c6"].clone()]
            })
        );
    }

    #[test]
    fn adjacent_endpoints_end_at_the_start() {
        let c = commits();
        let mut e = Engine::new(Terms { reverse: false }, c["c5"].clone(), c["c6"].clone());
        let next = e.on_git(parse(&data("adjacent", "start.txt"))).unwrap();
        assert_eq!(
            next,
            Next::Done(Outcome::Found {
                culprit: c["c6"].clone()
            })
        );
    }

    #[test]
    fn a_verdict_for_another_commit_than_the_candidate_is_refused() {
        let c = commits();
        let mut e = Engine::new(Terms { reverse: false }, c["c0"].clone(), c["c9"].clone());
        e.on_git(parse(&data("moved", "start.txt"))).unwrap();
        // HEAD moved to c1 under the bisect (test_data/moved/head.txt): its verdict is refused.
        let head = data("moved", "head.txt");
        let moved_to = head.lines().next().unwrap().split(' ').nth(1).unwrap();
        assert_eq!(moved_to, c["c1"]);
        assert!(e.mark(&moved_to.to_string(), StepVerdict::Good).is_err());
        assert_eq!(e.mark(&c["c4"], StepVerdict::Skip).unwrap(), "skip");
        assert!(e.on_git(parse("fatal: something else")).is_err());
    }

    #[test]
    fn endpoints_must_fit_the_check() {
        let mut e = Engine::new(Terms { reverse: false }, "old", "new");
        assert!(e.endpoint(End::Old, StepVerdict::Good).is_ok());
        assert_eq!(
            e.endpoint(End::New, StepVerdict::Good).unwrap_err(),
            "good under this check"
        );
        let mut e = Engine::new(Terms { reverse: true }, "old", "new");
        assert!(e.endpoint(End::Old, StepVerdict::Bad).is_ok());
        assert!(e.endpoint(End::New, StepVerdict::Good).is_ok());
        assert_eq!(
            e.endpoint(End::New, StepVerdict::Skip).unwrap_err(),
            "cannot be tested"
        );
        assert_eq!(e.marks.len(), 3);
    }

    #[test]
    fn repeat_judges_by_the_first_bad_run() {
        let j = Repeat(3);
        use StepVerdict::*;
        assert_eq!(j.decide(&[]), None);
        assert_eq!(j.decide(&[Good, Good]), None);
        assert_eq!(j.decide(&[Good, Good, Good]), Some(Good));
        assert_eq!(j.decide(&[Good, Bad]), Some(Bad));
        assert_eq!(j.decide(&[Skip]), Some(Skip));
        assert_eq!(Repeat(0).decide(&[Good]), Some(Good));
    }

    #[test]
    fn confirmation_agrees_or_says_which_test_did_not() {
        use StepVerdict::*;
        let t = Terms { reverse: false };
        let plan = confirmation_plan(t, &"c6", Some(&"c5"), Some(&"revert"));
        let expect: Vec<_> = plan.iter().map(|p| (p.role, p.expect)).collect();
        assert_eq!(
            expect,
            [
                (Role::Culprit, Bad),
                (Role::Parent, Good),
                (Role::Revert, Good)
            ]
        );
        let all = |vs: [StepVerdict; 3]| -> Vec<_> { plan.iter().cloned().zip(vs).collect() };
        assert_eq!(
            judge_confirmation(t, &all([Bad, Good, Good]), None),
            Confirmation::Confirmed
        );
        assert_eq!(
            judge_confirmation(t, &all([Bad, Bad, Good]), None),
            Confirmation::NotConfirmed {
                why: vec!["its parent is bad, not good".into()]
            }
        );
        assert_eq!(
            judge_confirmation(t, &all([Bad, Good, Skip]), None),
            Confirmation::NotConfirmed {
                why: vec!["the new end with the culprit reverted is untestable, not good".into()]
            }
        );
        // A revert that does not apply: two tests, and the report says why.
        let plan = confirmation_plan(t, &"c6", Some(&"c5"), None);
        assert_eq!(plan.len(), 2);
        let r: Vec<_> = plan.into_iter().zip([Bad, Good]).collect();
        let Confirmation::NotConfirmed { why } = judge_confirmation(t, &r, Some("conflict in f"))
        else {
            panic!("confirmed without its revert")
        };
        assert_eq!(
            why,
            ["the culprit does not revert cleanly on the new end: conflict in f"]
        );
        // Reverse: the fix is good, its parent broken, the new end without the fix broken.
        let t = Terms { reverse: true };
        let plan = confirmation_plan(t, &"c6", Some(&"c5"), Some(&"revert"));
        let r: Vec<_> = plan.into_iter().zip([Good, Bad, Bad]).collect();
        assert_eq!(judge_confirmation(t, &r, None), Confirmation::Confirmed);
    }

    #[test]
    fn the_state_survives_a_save() {
        let (e, _) = replay("found", Terms { reverse: false });
        let back: Engine<String> =
            serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
