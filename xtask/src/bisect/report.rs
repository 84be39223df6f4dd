//! The bisect's record: the inputs it froze, every step's runs, the outcome, the confirmation
//! and the warnings, saved as `bisect.json` and `bisect.md`. Pure code.

pub use super::engine::StepVerdict;
use super::engine::{Confirmation, Outcome, Role};
use super::suspect::Suspicion;
use crate::units::human_secs;
use serde::{Deserialize, Serialize};

/// The report's format; a reader refuses another.
pub const VERSION: u32 = 2;

/// What the bisect took once, at its start, and used at every step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inputs {
    pub good: String,
    pub bad: String,
    pub reverse: bool,
    pub paths: Vec<String>,
    /// The check, as one line.
    pub check: String,
    /// The config's copy every step builds with, and the digest of its content.
    pub config: String,
    pub config_sha256: String,
    /// The rootfs generation every step boots (and builds in).
    pub rootfs: String,
    pub confirm: bool,
    /// The command line (after `cargo xtask`), parsed again by `--resume`.
    pub argv: Vec<String>,
}

/// One boot of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub verdict: StepVerdict,
    pub reason: String,
    pub boot_secs: Option<f64>,
    pub check_secs: Option<f64>,
    /// The number the command printed (a metric bisect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<f64>,
    /// A run of the same kernel under the same check in an earlier bisect (bisect/earlier.rs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub earlier: bool,
}

/// One tested commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub role: Role,
    pub commit: String,
    pub subject: String,
    pub verdict: StepVerdict,
    /// The git term it was marked with (good/bad/skip, or broken/fixed with --reverse).
    pub term: String,
    /// Why, in a few words (the check's summary or the build failure).
    pub reason: String,
    /// None when the cache answered.
    pub build_secs: Option<f64>,
    /// What ccache answered of the step's compilations (a build with ccache on).
    #[serde(default)]
    pub ccache: Option<crate::build::ccache::Stats>,
    pub runs: Vec<Run>,
    /// The run dir with this step's logs.
    pub run_dir: String,
}

/// The culprit as `git show` gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    pub commit: String,
    pub subject: String,
    pub author: String,
    pub stat: String,
}

/// The whole record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub version: u32,
    pub inputs: Inputs,
    pub steps: Vec<Step>,
    pub outcome: Option<Outcome<String>>,
    pub culprit: Option<Culprit>,
    pub confirmation: Confirmation,
    pub suspicions: Vec<Suspicion>,
    pub total_secs: f64,
    /// How the steps were judged (deterministic, flaky with its rate, metric), in words.
    #[serde(default)]
    pub mode: String,
    /// What BAD showed, that a run must show to be bad.
    #[serde(default)]
    pub target: Option<String>,
    /// The confidence reached (flaky): the probability, given every run, that the culprit is
    /// right under the model (bisect/posterior.rs).
    #[serde(default)]
    pub confidence: Option<f64>,
}

fn secs(v: Option<f64>, none: &str) -> String {
    v.map_or_else(|| none.to_string(), human_secs)
}

fn cell(s: &str) -> String {
    s.lines().next().unwrap_or_default().replace('|', "\\|")
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Endpoint(super::engine::End::Old) => "old end",
        Role::Endpoint(super::engine::End::New) => "new end",
        Role::Step => "step",
        Role::Culprit => "confirm: culprit",
        Role::Parent => "confirm: parent",
        Role::Revert => "confirm: revert",
    }
}

impl Report {
    pub fn new(inputs: Inputs) -> Report {
        Report {
            version: VERSION,
            inputs,
            steps: Vec::new(),
            outcome: None,
            culprit: None,
            confirmation: Confirmation::NotRun,
            suspicions: Vec::new(),
            total_secs: 0.0,
            mode: String::new(),
            target: None,
            confidence: None,
        }
    }

    fn new_term(&self) -> &'static str {
        if self.inputs.reverse {
            "fixed"
        } else {
            "bad"
        }
    }

    /// The first line: the answer, and whether to trust it.
    pub fn headline(&self) -> String {
        let first = format!("first {} commit", self.new_term());
        match (&self.outcome, &self.culprit) {
            (Some(Outcome::Found { .. }), Some(c)) => {
                let named = format!("{first} {} {}", short(&c.commit), c.subject);
                if !self.suspicions.is_empty() {
                    return format!("suspicious: {named}");
                }
                let named = match self.confidence {
                    Some(c) => format!("{named}, confidence {c:.3}"),
                    None => named,
                };
                match &self.confirmation {
                    Confirmation::Confirmed => format!("{named} (confirmed)"),
                    Confirmation::NotConfirmed { .. } => format!("{named} (NOT confirmed)"),
                    Confirmation::NotRun => format!("{named} (not confirmed: --no-confirm)"),
                }
            }
            (Some(Outcome::Range { candidates }), _) => format!(
                "the {first} is one of {} commits that could not be tested",
                candidates.len()
            ),
            (Some(Outcome::NoneTestable), _) => {
                "no commit in the range touches the paths given".into()
            }
            _ => "bisect not finished".into(),
        }
    }

    pub fn markdown(&self) -> String {
        let i = &self.inputs;
        let mut m = format!("# {}\n\n", self.headline());
        m.push_str(&format!(
            "Bisect `{}..{}`{}  \nCheck: `{}`  \nConfig: `{}` (sha256 {})  \nRootfs: `{}`  \nTotal: {}\n\n",
            short(&i.good),
            short(&i.bad),
            if i.reverse { " (--reverse: finding a fix)" } else { "" },
            i.check,
            i.config,
            short(&i.config_sha256),
            i.rootfs,
            human_secs(self.total_secs)
        ));
        if !self.mode.is_empty() {
            m.push_str(&format!("Mode: {}  \n", self.mode));
        }
        if let Some(t) = &self.target {
            m.push_str(&format!(
                "Target symptom: {t} (another failure is \"other\", a skip)  \n"
            ));
        }
        if let Some(c) = self.confidence {
            m.push_str(&format!(
                "Confidence reached: {c:.3} (the probability, given every run, that the named \
                 commit is the culprit: a bug in it and every later commit, showing at one \
                 unknown rate; the rate and the culprit's place uniform beforehand)  \n"
            ));
        }
        if !self.mode.is_empty() {
            m.push('\n');
        }
        if !i.paths.is_empty() {
            m.push_str(&format!("Paths: `{}`\n\n", i.paths.join(" ")));
        }
        if !self.suspicions.is_empty() {
            m.push_str("## Warnings\n\n");
            for s in &self.suspicions {
                m.push_str(&format!("- {}\n", s.warning()));
            }
            m.push('\n');
        }
        match &self.outcome {
            Some(Outcome::Range { candidates }) => {
                m.push_str("## Only skipped commits are left\n\nThe culprit is one of:\n\n");
                for c in candidates {
                    m.push_str(&format!("- `{c}`\n"));
                }
                m.push('\n');
            }
            _ => {
                if let Some(c) = &self.culprit {
                    m.push_str(&format!(
                        "## First {} commit\n\n`{}` {}  \nAuthor: {}\n\n```\n{}\n```\n\n",
                        self.new_term(),
                        c.commit,
                        c.subject,
                        c.author,
                        c.stat.trim_end()
                    ));
                }
            }
        }
        match &self.confirmation {
            Confirmation::Confirmed => {
                let culprit = match self.steps.iter().any(|s| s.role == Role::Culprit) {
                    true => "the culprit again",
                    // mode::shown_already: a flaky bisect's bad run at the culprit's step.
                    false => "the culprit (by its bad run at its step, proof in a flaky bisect)",
                };
                m.push_str(&format!(
                    "## Confirmation\n\nConfirmed: {culprit}, its parent, and the new end \
                     with the culprit reverted each gave the expected verdict.\n\n"
                ))
            }
            Confirmation::NotConfirmed { why } => {
                m.push_str("## Confirmation\n\nNot confirmed:\n\n");
                for w in why {
                    m.push_str(&format!("- {w}\n"));
                }
                m.push('\n');
            }
            Confirmation::NotRun => {}
        }
        m.push_str("## Steps\n\n| # | role | commit | verdict | build | runs (boot, check) | reason |\n|---|---|---|---|---|---|---|\n");
        for (n, s) in self.steps.iter().enumerate() {
            let runs = runs_cell(&s.runs);
            m.push_str(&format!(
                "| {} | {} | `{}` {} | {} | {} | {} | {} |\n",
                n + 1,
                role_name(s.role),
                short(&s.commit),
                cell(&s.subject),
                s.term,
                match s.ccache {
                    Some(c) => format!("{} ({})", secs(s.build_secs, "cache hit"), c.describe()),
                    None => secs(s.build_secs, "cache hit"),
                },
                runs,
                cell(&s.reason),
            ));
        }
        m
    }
}

/// A step's runs in one cell: each run for up to 3, else counted; a metric step's samples
/// as their median, min to max.
fn runs_cell(runs: &[Run]) -> String {
    let samples: Vec<f64> = runs.iter().filter_map(|r| r.sample).collect();
    if !samples.is_empty() {
        return super::metric::summary(&samples);
    }
    if runs.len() > 3 {
        let n = |v| runs.iter().filter(|r| r.verdict == v).count();
        let earlier = match runs.iter().filter(|r| r.earlier).count() {
            0 => String::new(),
            k => format!(" ({k} in an earlier bisect)"),
        };
        let mut parts = vec![format!(
            "{} runs{earlier}: {} good",
            runs.len(),
            n(StepVerdict::Good)
        )];
        for (v, word) in [
            (StepVerdict::Bad, "bad"),
            (StepVerdict::Skip, "other or untestable"),
        ] {
            if n(v) > 0 {
                parts.push(format!("{} {word}", n(v)));
            }
        }
        let boot: f64 = runs.iter().filter_map(|r| r.boot_secs).sum();
        if boot > 0.0 {
            return format!("{} (boots {})", parts.join(", "), human_secs(boot));
        }
        return parts.join(", ");
    }
    let each: Vec<String> = runs
        .iter()
        .map(|r| match r.earlier {
            true => format!("{} (an earlier bisect's)", verdict_word(r.verdict)),
            false => format!(
                "{} ({}, {})",
                verdict_word(r.verdict),
                secs(r.boot_secs, "-"),
                secs(r.check_secs, "-")
            ),
        })
        .collect();
    if each.is_empty() {
        "-".into()
    } else {
        each.join("; ")
    }
}

pub fn verdict_word(v: StepVerdict) -> &'static str {
    match v {
        StepVerdict::Good => "good",
        StepVerdict::Bad => "bad",
        StepVerdict::Skip => "untestable",
    }
}

pub use crate::units::short;

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            good: "a".repeat(40),
            bad: "b".repeat(40),
            reverse: false,
            paths: vec![],
            check: "clean boot".into(),
            config: "/s/bisect/config".into(),
            config_sha256: "f".repeat(64),
            rootfs: "/s/rootfs.d/gen1".into(),
            confirm: true,
            argv: vec!["bisect".into()],
        }
    }

    fn step(role: Role, v: StepVerdict, build: Option<f64>) -> Step {
        Step {
            role,
            commit: "0123456789abcdef0123".into(),
            subject: "init: warn | at boot".into(),
            verdict: v,
            term: verdict_word(v).into(),
            reason: "WARNING at init/main.c\nsecond line of the reason".into(),
            build_secs: build,
            ccache: None,
            runs: vec![Run {
                verdict: v,
                reason: "r".into(),
                boot_secs: Some(1.5),
                check_secs: None,
                sample: None,
                earlier: false,
            }],
            run_dir: "/r".into(),
        }
    }

    fn found() -> Report {
        let mut r = Report::new(inputs());
        r.steps = vec![
            step(Role::Step, StepVerdict::Good, Some(12.0)),
            step(Role::Step, StepVerdict::Bad, None),
        ];
        r.outcome = Some(Outcome::Found {
            culprit: "c".repeat(40),
        });
        r.culprit = Some(Culprit {
            commit: "c".repeat(40),
            subject: "tools: x".into(),
            author: "a".into(),
            stat: " f | 1 +".into(),
        });
        r
    }

    #[test]
    fn markdown_has_the_answer_first_the_inputs_and_every_run() {
        let mut r = found();
        r.confirmation = Confirmation::Confirmed;
        let md = r.markdown();
        assert_eq!(
            md.lines().next().unwrap(),
            "# first bad commit cccccccccccc tools: x (confirmed)"
        );
        assert!(md.contains("cache hit"));
        assert!(md.contains("warn \\| at boot"));
        assert!(md.contains("bad (1.5s, -)"), "{md}");
        assert!(md.contains("/s/rootfs.d/gen1") && md.contains("ffffffffffff"));
        assert!(!md.contains("Confidence reached"), "not flaky: none stated");
        r.confidence = Some(0.9712);
        let md = r.markdown();
        assert!(md.contains("first bad commit cccccccccccc tools: x, confidence 0.971 (confirmed)"));
        assert!(md.contains("Confidence reached: 0.971 (the probability, given every run"));
        assert!(
            !md.contains("second line"),
            "a multi-line reason breaks the table"
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    /// Runs kept from an earlier bisect are said to be so; a run without a boot time (a KUnit
    /// run ends without the agent) adds no "boots" figure.
    #[test]
    fn a_cell_says_which_runs_an_earlier_bisect_made() {
        let run = |earlier, boot_secs| Run {
            verdict: StepVerdict::Bad,
            reason: "r".into(),
            boot_secs,
            check_secs: None,
            sample: None,
            earlier,
        };
        let mut runs = vec![run(true, None); 4];
        runs.push(run(false, Some(1.25)));
        assert_eq!(
            runs_cell(&runs),
            "5 runs (4 in an earlier bisect): 0 good, 5 bad (boots 1.2s)"
        );
        runs[4].boot_secs = None;
        assert_eq!(
            runs_cell(&runs),
            "5 runs (4 in an earlier bisect): 0 good, 5 bad"
        );
        assert_eq!(
            runs_cell(&[run(true, None), run(false, Some(1.5))]),
            "bad (an earlier bisect's); bad (1.5s, -)"
        );
        let back: Vec<Run> = serde_json::from_str(&serde_json::to_string(&runs).unwrap()).unwrap();
        assert_eq!(back, runs);
    }

    #[test]
    fn a_suspicious_or_unconfirmed_culprit_says_so_first() {
        let mut r = found();
        r.suspicions = vec![Suspicion::OnlyTools];
        let md = r.markdown();
        assert!(md.starts_with("# suspicious: first bad commit"), "{md}");
        assert!(md.contains("only tools/"));
        let mut r = found();
        r.confirmation = Confirmation::NotConfirmed {
            why: vec!["its parent is bad, not good".into()],
        };
        let md = r.markdown();
        assert!(md.lines().next().unwrap().ends_with("(NOT confirmed)"));
        assert!(md.contains("- its parent is bad, not good"));
        let mut r = Report::new(inputs());
        r.outcome = Some(Outcome::NoneTestable);
        assert_eq!(
            r.headline(),
            "no commit in the range touches the paths given"
        );
    }
}
