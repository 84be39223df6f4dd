//! The bisect's record: every step, and the report saved as Markdown and JSON. Pure code.

use crate::units::human_secs;
use serde::{Deserialize, Serialize};

pub use super::engine::StepVerdict;

/// One tested commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub commit: String,
    pub subject: String,
    pub verdict: StepVerdict,
    /// The git term it was marked with (good/bad/skip, or broken/fixed with --reverse).
    pub term: String,
    /// Why, in a few words (the check's summary or the build failure).
    pub reason: String,
    /// None when the cache answered.
    pub build_secs: Option<f64>,
    pub boot_secs: Option<f64>,
    pub check_secs: Option<f64>,
    /// sha256 of the kernel image, when one was built.
    pub image_sha256: Option<String>,
    /// The run dir with this step's logs.
    pub run_dir: Option<String>,
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    Found {
        commit: String,
        subject: String,
        author: String,
        stat: String,
    },
    /// Only skipped commits are left: the culprit is one of them.
    Range { candidates: Vec<String> },
}

/// The whole record, saved as `bisect.json` and `bisect.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub good: String,
    pub bad: String,
    pub terms: (String, String),
    pub check: String,
    pub steps: Vec<Step>,
    pub outcome: Option<Outcome>,
    /// Set when the culprit's kernel image equals its parent's.
    pub warning: Option<String>,
    pub total_secs: f64,
}

fn secs(v: Option<f64>, cached: &str) -> String {
    match v {
        Some(s) => human_secs(s),
        None => cached.to_string(),
    }
}

impl Report {
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        m.push_str(&format!(
            "# Bisect {}..{}\n\n",
            short(&self.good),
            short(&self.bad)
        ));
        m.push_str(&format!(
            "Check: `{}`  \nTerms: {} / {}  \nTotal: {}\n\n",
            self.check,
            self.terms.0,
            self.terms.1,
            human_secs(self.total_secs)
        ));
        match &self.outcome {
            Some(Outcome::Found {
                commit,
                subject,
                author,
                stat,
            }) => {
                m.push_str(&format!(
                    "## First {} commit\n\n`{}` {}  \nAuthor: {}\n\n```\n{}\n```\n\n",
                    self.terms.1,
                    commit,
                    subject,
                    author,
                    stat.trim_end()
                ));
            }
            Some(Outcome::Range { candidates }) => {
                m.push_str("## Only skipped commits are left\n\nThe culprit is one of:\n\n");
                for c in candidates {
                    m.push_str(&format!("- `{c}`\n"));
                }
                m.push('\n');
            }
            None => m.push_str("## Not finished\n\n"),
        }
        if let Some(w) = &self.warning {
            m.push_str(&format!("**Warning:** {w}\n\n"));
        }
        m.push_str("| # | commit | verdict | build | boot | check | reason |\n|---|---|---|---|---|---|---|\n");
        for (i, s) in self.steps.iter().enumerate() {
            m.push_str(&format!(
                "| {} | `{}` {} | {} | {} | {} | {} | {} |\n",
                i + 1,
                short(&s.commit),
                s.subject.replace('|', "\\|"),
                s.term,
                secs(s.build_secs, "cache hit"),
                secs(s.boot_secs, "-"),
                secs(s.check_secs, "-"),
                s.reason
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .replace('|', "\\|"),
            ));
        }
        m
    }

    /// The warning for a culprit whose image equals its parent's: the change cannot be it.
    pub fn identical_image_warning(
        culprit_image: Option<&str>,
        parent_image: Option<&str>,
    ) -> Option<String> {
        match (culprit_image, parent_image) {
            (Some(a), Some(b)) if a == b => Some(
                "the first bad commit's kernel image is identical to its parent's: the change cannot be the cause (a flaky check, or the problem is outside the kernel image)".into(),
            ),
            _ => None,
        }
    }
}

pub use crate::units::short;

#[cfg(test)]
mod tests {
    use super::*;

    fn step(v: StepVerdict, build: Option<f64>) -> Step {
        Step {
            commit: "0123456789abcdef0123".into(),
            subject: "init: warn | at boot".into(),
            verdict: v,
            term: format!("{v:?}").to_lowercase(),
            reason: "WARNING at init/main.c\nsecond line of the reason".into(),
            build_secs: build,
            boot_secs: Some(1.5),
            check_secs: Some(0.2),
            image_sha256: None,
            run_dir: None,
        }
    }

    #[test]
    fn markdown_has_outcome_and_table() {
        let r = Report {
            good: "aaaaaaaaaaaaaaaa".into(),
            bad: "bbbbbbbbbbbbbbbb".into(),
            terms: ("good".into(), "bad".into()),
            check: "clean boot".into(),
            steps: vec![
                step(StepVerdict::Good, Some(12.0)),
                step(StepVerdict::Bad, None),
            ],
            outcome: Some(Outcome::Found {
                commit: "c".repeat(40),
                subject: "s".into(),
                author: "a".into(),
                stat: " f | 1 +".into(),
            }),
            warning: None,
            total_secs: 61.0,
        };
        let md = r.markdown();
        assert!(md.contains("## First bad commit"));
        assert!(md.contains("cache hit"));
        assert!(md.contains("warn \\| at boot"));
        assert!(
            !md.contains("second line"),
            "a multi-line reason breaks the table"
        );
        assert_eq!(
            md.lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| #"))
                .count(),
            2
        );
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn identical_images_warn() {
        assert!(Report::identical_image_warning(Some("x"), Some("x")).is_some());
        assert!(Report::identical_image_warning(Some("x"), Some("y")).is_none());
        assert!(Report::identical_image_warning(None, Some("y")).is_none());
    }
}
