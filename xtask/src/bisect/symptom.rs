//! The target symptom of a bisect, pure: what a bad run showed (the command's end, a
//! `--bad-if-console` match, a console finding's kind and place), and whether a later run
//! shows the same (bad), another failure ("other", a skip) or none (good).

use super::engine::StepVerdict;
use crate::vm::console::{Finding, FindingKind};
use crate::vm::verdict::{BootEnd, CommandEnd, Facts, Verdict};
use serde::{Deserialize, Serialize};

/// One thing a failing run showed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "symptom", rename_all = "snake_case")]
pub enum Symptom {
    /// How the command failed: `exit 1`, `signal 9`, `timeout`, `the VM ended`.
    Command { end: String },
    /// A line matched `--bad-if-console REGEX`.
    Matched { regex: String },
    /// A console finding: its kind, and its place (the source file, with the function when
    /// the console names it; line numbers move between commits).
    Finding { kind: String, place: String },
    /// The boot, being the check, did not reach the agent.
    Boot,
    /// The check's tests (`--kunit`, `--ktap`, `--kselftest`) judged the run bad: a failing
    /// or crashed test, the one `--test` names when it is given.
    Tests,
}

impl Symptom {
    /// `warning at init/main.c`, `exit 1`, `match of /re/`.
    pub fn describe(&self) -> String {
        match self {
            Symptom::Command { end } => end.clone(),
            Symptom::Matched { regex } => format!("match of /{regex}/"),
            Symptom::Finding { kind, place } => format!("{kind} at {place}"),
            Symptom::Boot => "a boot that did not finish".into(),
            Symptom::Tests => "a judged test failing".into(),
        }
    }
}

/// A finding's place: `FILE` (and ` FUNCTION` when the console gives it) from `… at
/// FILE:LINE [FUNCTION+0x…]` or `kernel BUG at FILE:LINE!`; else the line's text with its
/// numbers masked (`Kernel panic - not syncing: …`).
fn place(text: &str) -> String {
    let at = text.split(" at ").skip(1).find_map(|rest| {
        let (file, after) = rest.split_once(':')?;
        let is_path = file.contains('/') || file.ends_with(".c") || file.ends_with(".h");
        let line = after.trim_start_matches(|c: char| c.is_ascii_digit());
        (is_path && line.len() < after.len()).then_some((file.to_string(), line))
    });
    match at {
        Some((file, after)) => {
            let func = after
                .trim_start_matches('!')
                .split_whitespace()
                .next()
                .and_then(|w| w.split_once('+'))
                .map(|(f, _)| f)
                .filter(|f| {
                    !f.is_empty()
                        && !f.starts_with("0x")
                        && f.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                });
            match func {
                Some(f) => format!("{file} {f}"),
                None => file,
            }
        }
        None => {
            let mut out = String::new();
            for c in text.chars() {
                let mask = c.is_ascii_hexdigit() && (c.is_ascii_digit() || out.ends_with('#'));
                if !mask {
                    out.push(c);
                } else if !out.ends_with('#') {
                    out.push('#');
                }
            }
            out
        }
    }
}

fn of_finding(f: &Finding) -> Symptom {
    match &f.kind {
        FindingKind::Matched { regex } => Symptom::Matched {
            regex: regex.clone(),
        },
        _ => {
            let kind = f.summary();
            let kind = kind
                .split(" at line ")
                .next()
                .unwrap_or_default()
                .to_string();
            Symptom::Finding {
                kind,
                place: place(&f.text),
            }
        }
    }
}

/// Everything a bad run showed, the first (the one its verdict names) first: its console
/// findings, then how its command failed or its boot.
pub fn of(facts: &Facts) -> Vec<Symptom> {
    let mut all: Vec<Symptom> = facts.findings.iter().map(of_finding).collect();
    let end = match &facts.command_end {
        Some(CommandEnd::Exited { code }) if *code != 0 => Some(format!("exit {code}")),
        Some(CommandEnd::Signaled { signal }) => Some(format!("signal {signal}")),
        Some(CommandEnd::TimedOut) => Some("timeout".into()),
        Some(CommandEnd::VmEnded) => Some("the VM ended".into()),
        Some(CommandEnd::AgentFailed { .. }) => Some("the guest agent failed".into()),
        _ => None,
    };
    all.extend(end.map(|end| Symptom::Command { end }));
    if facts.command.is_empty() && facts.boot != BootEnd::AgentUp {
        all.push(Symptom::Boot);
    }
    let mut seen = Vec::new();
    all.retain(|s| {
        let new = !seen.contains(s);
        seen.push(s.clone());
        new
    });
    all
}

/// How a run counts against the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counted {
    /// Good, bad (the target, or any failure with `--any-failure`) or untestable.
    As(StepVerdict),
    /// A failure, but not the target: what it showed.
    Other(Symptom),
}

/// Counts one run: bad only when it shows `target` (or, with `any_failure` or no target
/// known, any failure); another failure is [`Counted::Other`].
pub fn count(
    verdict: Verdict,
    facts: Option<&Facts>,
    target: Option<&Symptom>,
    any_failure: bool,
) -> Counted {
    match verdict {
        Verdict::Good => Counted::As(StepVerdict::Good),
        Verdict::Skip | Verdict::Abort => Counted::As(StepVerdict::Skip),
        Verdict::Bad => {
            let (Some(target), Some(facts), false) = (target, facts, any_failure) else {
                return Counted::As(StepVerdict::Bad);
            };
            let shown = of(facts);
            if shown.contains(target) {
                Counted::As(StepVerdict::Bad)
            } else {
                match shown.into_iter().next() {
                    Some(s) => Counted::Other(s),
                    None => Counted::As(StepVerdict::Bad),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(command: &[&str], end: Option<CommandEnd>, findings: &[(FindingKind, &str)]) -> Facts {
        Facts {
            command: command.iter().map(|s| s.to_string()).collect(),
            boot: BootEnd::AgentUp,
            command_end: end,
            findings: findings
                .iter()
                .enumerate()
                .map(|(i, (kind, text))| Finding {
                    kind: kind.clone(),
                    line: 10 + i,
                    text: text.to_string(),
                    usec: None,
                })
                .collect(),
            from_userspace: vec![],
            vm_end: None,
            kernel_printed: true,
        }
    }

    #[test]
    fn a_finding_is_its_kind_and_place_not_its_line() {
        let w = |t: &str| of(&facts(&[], None, &[(FindingKind::Warning, t)]));
        let at_1627 = w("WARNING: CPU: 1 PID: 1 at init/main.c:1627 kernel_init+0x57/0x120");
        let at_1630 = w("WARNING: CPU: 0 PID: 1 at init/main.c:1630 kernel_init+0x50/0x120");
        assert_eq!(at_1627, at_1630, "line numbers move between commits");
        assert_eq!(at_1627[0].describe(), "warning at init/main.c kernel_init");
        // No KALLSYMS (the trimmed config): the file only.
        let bare = w("WARNING: CPU: 0 PID: 1 at init/main.c:1600 0xffffffff81000000");
        assert_eq!(bare[0].describe(), "warning at init/main.c");
        let other = w("WARNING: CPU: 0 PID: 1 at kernel/fork.c:3400 0xffffffff81000000");
        assert_ne!(bare, other);
        let bug = of(&facts(
            &[],
            None,
            &[(FindingKind::Bug, "kernel BUG at mm/slub.c:379!")],
        ));
        assert_eq!(bug[0].describe(), "BUG at mm/slub.c");
        let panic = of(&facts(
            &[],
            None,
            &[(
                FindingKind::Panic,
                "Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000009",
            )],
        ));
        assert_eq!(
            panic[0].describe(),
            "panic at Kernel panic - not syncing: Attempted to kill init! exitcode=#x#"
        );
    }

    #[test]
    fn a_run_is_bad_only_for_the_target() {
        let exit = |code| facts(&["x"], Some(CommandEnd::Exited { code }), &[]);
        let target = of(&exit(1)).remove(0);
        assert_eq!(target.describe(), "exit 1");
        let t = Some(&target);
        assert_eq!(
            count(Verdict::Bad, Some(&exit(1)), t, false),
            Counted::As(StepVerdict::Bad)
        );
        assert_eq!(
            count(Verdict::Bad, Some(&exit(2)), t, false),
            Counted::Other(Symptom::Command {
                end: "exit 2".into()
            })
        );
        assert_eq!(
            count(Verdict::Bad, Some(&exit(2)), t, true),
            Counted::As(StepVerdict::Bad),
            "--any-failure"
        );
        // The target among other symptoms still counts.
        let both = facts(
            &["x"],
            Some(CommandEnd::Exited { code: 1 }),
            &[(
                FindingKind::Warning,
                "WARNING: CPU: 0 PID: 1 at kernel/fork.c:1 x+0x1/0x2",
            )],
        );
        assert_eq!(
            count(Verdict::Bad, Some(&both), t, false),
            Counted::As(StepVerdict::Bad)
        );
        let warned = facts(
            &["x"],
            None,
            &[(
                FindingKind::Warning,
                "WARNING: CPU: 0 PID: 1 at kernel/fork.c:1 x+0x1/0x2",
            )],
        );
        assert!(matches!(
            count(Verdict::Bad, Some(&warned), t, false),
            Counted::Other(Symptom::Finding { .. })
        ));
        assert_eq!(
            count(Verdict::Good, None, t, false),
            Counted::As(StepVerdict::Good)
        );
        assert_eq!(
            count(Verdict::Skip, None, t, false),
            Counted::As(StepVerdict::Skip)
        );
        let m = of(&facts(
            &[],
            None,
            &[(
                FindingKind::Matched {
                    regex: "oom".into(),
                },
                "oom-kill",
            )],
        ));
        assert_eq!(m[0].describe(), "match of /oom/");
    }
}
