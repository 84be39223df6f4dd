//! Scanning a recorded serial console for kernel warnings, oopses, BUGs and panics: pure code.

use anyhow::{Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// What kind of trouble a console line shows.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// `WARNING: CPU: 0 PID: 1 at …` (WARN_ON and friends).
    Warning,
    /// `Oops: …`, `general protection fault`.
    Oops,
    /// `BUG: …`, `kernel BUG at …`.
    Bug,
    /// `Kernel panic - not syncing: …`.
    Panic,
    /// A line matched `--bad-if-console REGEX`.
    Matched { regex: String },
}

/// One line of the console that makes a kernel bad.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: FindingKind,
    /// 1-based line number in the console log.
    pub line: usize,
    /// The line, without its timestamp.
    pub text: String,
}

impl Finding {
    /// `warning at line 12: WARNING: CPU: 0 PID: 1 at …`
    pub fn summary(&self) -> String {
        let kind = match &self.kind {
            FindingKind::Warning => "warning".to_string(),
            FindingKind::Oops => "oops".into(),
            FindingKind::Bug => "BUG".into(),
            FindingKind::Panic => "panic".into(),
            FindingKind::Matched { regex } => format!("match of /{regex}/"),
        };
        format!("{kind} at line {}: {}", self.line, self.text)
    }
}

/// The marker the kernel prints before a WARN or BUG report.
const CUT_HERE: &str = "------------[ cut here ]------------";

/// A kernel message, with the printk prefix (`[    1.234567]`, maybe `[    T1]`) split off.
/// The console is shared, so a kernel line may start mid-line, after a shell prompt or
/// other userspace output: the first timestamp found starts the message. Lines without
/// one are kept whole: a kernel without PRINTK_TIME prints none.
fn message(line: &str) -> &str {
    static STAMP: OnceLock<Regex> = OnceLock::new();
    static MORE: OnceLock<Regex> = OnceLock::new();
    let stamp = STAMP.get_or_init(|| Regex::new(r"\[\s*\d+\.\d+\]\s*").unwrap());
    // A caller id (`[    T1]`, `[    C0]`) may follow the timestamp.
    let more = MORE.get_or_init(|| Regex::new(r"^(?:\[\s*[TC]\d+\]\s*)+").unwrap());
    let line = line.trim_end_matches('\r');
    match stamp.find(line) {
        Some(m) => {
            let rest = &line[m.end()..];
            match more.find(rest) {
                Some(c) => &rest[c.end()..],
                None => rest,
            }
        }
        None => line,
    }
}

fn classify(msg: &str) -> Option<FindingKind> {
    static RES: OnceLock<Vec<(Regex, FindingKind)>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            (r"^WARNING: ", FindingKind::Warning),
            (r"^Oops: |^general protection fault", FindingKind::Oops),
            (r"^BUG: |^kernel BUG at ", FindingKind::Bug),
            (r"^Kernel panic - not syncing", FindingKind::Panic),
        ]
        .into_iter()
        .map(|(re, k)| (Regex::new(re).unwrap(), k))
        .collect()
    });
    res.iter()
        .find(|(re, _)| re.is_match(msg))
        .map(|(_, k)| k.clone())
}

/// The `--bad-if-console` regexes, compiled; an invalid one is an error naming it.
pub fn compile(regexes: &[String]) -> Result<Vec<Regex>> {
    regexes
        .iter()
        .map(|r| {
            Regex::new(r).with_context(|| format!("--bad-if-console {r:?} is not a valid regex"))
        })
        .collect()
}

/// Every finding in a console log, in order. A `cut here` marker counts only when no
/// WARNING/BUG/Oops line follows it closely (those are reported instead).
pub fn scan(console: &str, extra: &[Regex]) -> Vec<Finding> {
    let lines: Vec<&str> = console.lines().collect();
    let mut out = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let msg = message(raw);
        if let Some(kind) = classify(msg) {
            out.push(Finding {
                kind,
                line: i + 1,
                text: msg.trim().to_string(),
            });
        } else if msg.trim() == CUT_HERE {
            let followed = lines[i + 1..]
                .iter()
                .take(4)
                .any(|l| classify(message(l)).is_some());
            if !followed {
                out.push(Finding {
                    kind: FindingKind::Warning,
                    line: i + 1,
                    text: msg.trim().to_string(),
                });
            }
        }
        for re in extra {
            if re.is_match(raw) {
                out.push(Finding {
                    kind: FindingKind::Matched {
                        regex: re.as_str().to_string(),
                    },
                    line: i + 1,
                    text: msg.trim().to_string(),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/vm/test_data/console")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn kinds(f: &[Finding]) -> Vec<FindingKind> {
        f.iter().map(|f| f.kind.clone()).collect()
    }

    #[test]
    fn a_clean_boot_has_no_findings() {
        assert_eq!(scan(&data("clean_boot_fast.log"), &[]), vec![]);
        assert_eq!(scan(&data("clean_boot_systemd.log"), &[]), vec![]);
    }

    #[test]
    fn a_warning_from_kmsg_is_found() {
        let f = scan(&data("warning_from_kmsg.log"), &[]);
        assert_eq!(kinds(&f), vec![FindingKind::Warning]);
        assert_eq!(f[0].text, "WARNING: CPU: 0 PID: 1 at test");
    }

    #[test]
    fn a_warning_after_a_shell_prompt_is_found() {
        // systemd mode: the kernel's line continues the autologin shell's prompt.
        let f = scan(&data("warning_after_prompt_systemd.log"), &[]);
        assert_eq!(kinds(&f), vec![FindingKind::Warning]);
        assert_eq!(f[0].text, "WARNING: CPU: 0 PID: 1 at test");
    }

    #[test]
    fn a_panic_at_boot_is_found() {
        let f = scan(&data("panic_no_init.log"), &[]);
        assert!(kinds(&f).contains(&FindingKind::Panic), "{f:?}");
        assert!(f
            .iter()
            .any(|f| f.text.starts_with("Kernel panic - not syncing")));
    }

    #[test]
    fn prefixes_and_carriage_returns_are_ignored() {
        let log = "[    1.000000][    T1] BUG: kernel NULL pointer dereference, address: 0\r\n\
                   [    1.1] Oops: 0002 [#1] PREEMPT SMP\r\n\
                   a userspace line saying WARNING: nothing\n";
        assert_eq!(
            kinds(&scan(log, &[])),
            vec![FindingKind::Bug, FindingKind::Oops]
        );
    }

    #[test]
    fn cut_here_alone_counts_once() {
        let log =
            format!("[ 1.0] {CUT_HERE}\n[ 1.0] WARNING: CPU: 1 PID: 7 at mm/x.c:1 f+0x1/0x2\n");
        assert_eq!(kinds(&scan(&log, &[])), vec![FindingKind::Warning]);
        let log = format!("[ 1.0] {CUT_HERE}\n[ 1.0] something odd\n");
        assert_eq!(kinds(&scan(&log, &[])), vec![FindingKind::Warning]);
    }

    #[test]
    fn extra_regexes_match_whole_lines() {
        let re = compile(&["hung_task|blocked for more".into()]).unwrap();
        let f = scan(
            "[ 5.0] INFO: task x:1 blocked for more than 120 seconds.\n",
            &re,
        );
        assert_eq!(f.len(), 1);
        assert!(f[0]
            .summary()
            .starts_with("match of /hung_task|blocked for more/ at line 1"));
        assert!(compile(&["(".into()])
            .unwrap_err()
            .to_string()
            .contains("--bad-if-console"));
    }
}
