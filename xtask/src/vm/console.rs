//! Scanning a recorded serial console for what the kernel reports going wrong (warnings,
//! BUGs, oopses, panics, lockups, stalls, hung tasks, sanitizer reports): pure code.

use anyhow::{Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// What kind of trouble a console line shows. Each matches the first line of the kernel's own
/// report, as Linux 6.1 prints it (the source file is named).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// `WARNING: CPU: 0 PID: 1 at …` (WARN_ON and friends, kernel/panic.c; lockdep's
    /// `WARNING: possible circular locking dependency detected`).
    Warning,
    /// `Oops: 0002 [#1] SMP`, `general protection fault, …: 0000 [#1]`, `invalid opcode:
    /// 0000 [#1]`: the header of every x86 die() (arch/x86/kernel/dumpstack.c); arm64's
    /// `Internal error: Oops: 0000000096000005 [#1] SMP` (arch/arm64/kernel/traps.c).
    Oops,
    /// `BUG: …`, `kernel BUG at …` (lib/bug.c) and the other `BUG:` reports.
    Bug,
    /// `Kernel panic - not syncing: …` (kernel/panic.c).
    Panic,
    /// `watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [sh:1]` (kernel/watchdog.c).
    SoftLockup,
    /// `NMI watchdog: Watchdog detected hard LOCKUP on cpu 1` (kernel/watchdog_hld.c).
    HardLockup,
    /// `rcu: INFO: rcu_sched detected stalls on CPUs/tasks:`, `… self-detected stall on CPU`
    /// (kernel/rcu/tree_stall.h, tree_exp.h, tasks.h).
    RcuStall,
    /// `INFO: task sh:87 blocked for more than 10 seconds.` (kernel/hung_task.c).
    HungTask,
    /// `UBSAN: array-index-out-of-bounds in …` (lib/ubsan.c).
    Ubsan,
    /// `BUG: KASAN: slab-out-of-bounds in …` (mm/kasan/report.c).
    Kasan,
    /// `BUG: KFENCE: use-after-free read in …` (mm/kfence/report.c).
    Kfence,
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
    /// The line's printk timestamp in microseconds, when it has one: the kernel log's
    /// records carry the same, which tells a kernel record from a copy written later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usec: Option<u64>,
}

impl Finding {
    /// `warning at line 12: WARNING: CPU: 0 PID: 1 at …`
    pub fn summary(&self) -> String {
        let kind = match &self.kind {
            FindingKind::Warning => "warning".to_string(),
            FindingKind::Oops => "oops".into(),
            FindingKind::Bug => "BUG".into(),
            FindingKind::Panic => "panic".into(),
            FindingKind::SoftLockup => "soft lockup".into(),
            FindingKind::HardLockup => "hard lockup".into(),
            FindingKind::RcuStall => "RCU stall".into(),
            FindingKind::HungTask => "hung task".into(),
            FindingKind::Ubsan => "UBSAN".into(),
            FindingKind::Kasan => "KASAN".into(),
            FindingKind::Kfence => "KFENCE".into(),
            FindingKind::Matched { regex } => format!("match of /{regex}/"),
        };
        format!("{kind} at line {}: {}", self.line, self.text)
    }
}

/// The marker the kernel prints before a WARN or BUG report.
const CUT_HERE: &str = "------------[ cut here ]------------";

/// A kernel message, with the printk prefix (`[    1.234567]`, maybe `[    T1]`) split off,
/// and its timestamp in microseconds; `None` for a line without a timestamp. The console is
/// shared, so a kernel line may start mid-line, after a shell prompt or other userspace
/// output: the first timestamp found starts the message.
fn message(line: &str) -> Option<(Option<u64>, &str)> {
    static STAMP: OnceLock<Regex> = OnceLock::new();
    static MORE: OnceLock<Regex> = OnceLock::new();
    let stamp = STAMP.get_or_init(|| Regex::new(r"\[\s*(\d+)\.(\d+)\]\s*").unwrap());
    // A caller id (`[    T1]`, `[    C0]`) may follow the timestamp.
    let more = MORE.get_or_init(|| Regex::new(r"^(?:\[\s*[TC]\d+\]\s*)+").unwrap());
    let line = line.trim_end_matches('\r');
    let c = stamp.captures(line)?;
    // printk prints seconds and microseconds (`%5lu.%06lu`); anything else is no stamp.
    let usec = (c[2].len() == 6)
        .then(|| {
            c[1].parse::<u64>()
                .ok()?
                .checked_mul(1_000_000)?
                .checked_add(c[2].parse().ok()?)
        })
        .flatten();
    let rest = &line[c.get(0).map_or(0, |m| m.end())..];
    Some(match more.find(rest) {
        Some(m) => (usec, &rest[m.end()..]),
        None => (usec, rest),
    })
}

/// The kernel's messages of a console, line by line (`None` for a line that is not one).
/// Where the kernel stamps its lines (PRINTK_TIME, or `printk.time=1`, which a check's
/// command line has), a line without a stamp is userspace's, written straight to the
/// console; where it stamps none, every line may be the kernel's.
fn kernel_messages<'a>(lines: &[&'a str]) -> Vec<Option<(Option<u64>, &'a str)>> {
    let stamped = lines.iter().any(|l| message(l).is_some());
    lines
        .iter()
        .map(|l| match message(l) {
            None if !stamped => Some((None, l.trim_end_matches('\r'))),
            m => m,
        })
        .collect()
}

/// The kernel's stamped lines of a console, in order: the byte offset just past each line
/// (its newline included), its printk stamp in microseconds and its message.
pub fn stamped(console: &str) -> Vec<(usize, u64, &str)> {
    let mut out = Vec::new();
    let mut end = 0;
    for line in console.split_inclusive('\n') {
        end += line.len();
        if let Some((Some(usec), msg)) = message(line.trim_end_matches('\n')) {
            out.push((end, usec, msg));
        }
    }
    out
}

/// The kind of the kernel report a message starts, if any. The more specific patterns come
/// first: a KASAN report is also a `BUG:` line.
fn classify(msg: &str) -> Option<FindingKind> {
    static RES: OnceLock<Vec<(Regex, FindingKind)>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            (
                r"^watchdog: BUG: soft lockup - CPU#\d+ stuck for ",
                FindingKind::SoftLockup,
            ),
            (
                r"^(?:NMI watchdog: )?Watchdog detected hard LOCKUP on cpu ",
                FindingKind::HardLockup,
            ),
            (
                r"^(?:rcu: )?INFO: \S+ (?:self-)?detected (?:expedited )?stalls? on ",
                FindingKind::RcuStall,
            ),
            (
                r"^INFO: task .+:\d+ blocked for more than \d+ seconds",
                FindingKind::HungTask,
            ),
            (r"^UBSAN: ", FindingKind::Ubsan),
            (r"^BUG: KASAN: ", FindingKind::Kasan),
            (r"^BUG: KFENCE: ", FindingKind::Kfence),
            (r"^BUG: |^[Kk]ernel BUG at ", FindingKind::Bug),
            // die()'s header is `<what>: <error code> [#<count>]`; arm64's error code has
            // 16 digits after `Internal error: `.
            (
                r"^Oops: |^general protection fault|^[^\[\]]*: [0-9a-f]{4} \[#\d+\]|^Internal error: [^\[\]]*: [0-9a-f]{16} \[#\d+\]",
                FindingKind::Oops,
            ),
            (r"^WARNING: ", FindingKind::Warning),
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
    let kernel = kernel_messages(&lines);
    let kind_at = |i: usize| kernel[i].and_then(|(_, msg)| classify(msg));
    let mut out = Vec::new();
    for (i, raw) in lines.iter().enumerate() {
        let (usec, msg) = kernel[i].unwrap_or((None, raw.trim_end_matches('\r')));
        let finding = |kind| Finding {
            kind,
            line: i + 1,
            text: msg.trim().to_string(),
            usec,
        };
        if let Some(kind) = kind_at(i) {
            out.push(finding(kind));
        } else if kernel[i].is_some() && msg.trim() == CUT_HERE {
            let followed = (i + 1..lines.len()).take(4).any(|j| kind_at(j).is_some());
            if !followed {
                out.push(finding(FindingKind::Warning));
            }
        }
        for re in extra {
            if re.is_match(raw) {
                out.push(finding(FindingKind::Matched {
                    regex: re.as_str().to_string(),
                }));
            }
        }
    }
    out
}

/// A recording under `src/vm/test_data/`, without its header line.
#[cfg(test)]
pub fn recorded(path: &str) -> String {
    crate::test_data::recorded("vm/test_data", path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> String {
        recorded(&format!("console/{name}"))
    }

    fn kinds(f: &[Finding]) -> Vec<FindingKind> {
        f.iter().map(|f| f.kind.clone()).collect()
    }

    #[test]
    fn a_clean_boot_has_no_findings() {
        assert_eq!(scan(&data("clean_boot_fast.log"), &[]), vec![]);
        assert_eq!(scan(&data("clean_boot_systemd.log"), &[]), vec![]);
    }

    /// Findings as (kind, line, text) for a compact comparison.
    fn found(name: &str) -> Vec<(FindingKind, usize, String)> {
        scan(&data(name), &[])
            .into_iter()
            .map(|f| (f.kind, f.line, f.text))
            .collect()
    }

    fn want(v: &[(FindingKind, usize, &str)]) -> Vec<(FindingKind, usize, String)> {
        v.iter()
            .map(|(k, l, t)| (k.clone(), *l, t.to_string()))
            .collect()
    }

    // Each of the following is a real kernel's report, provoked with LKDTM on a kernel built
    // with kconfig/findings.config (each log's header names the trigger).

    #[test]
    fn a_clean_boot_of_the_debug_kernel_has_no_findings() {
        // KASAN, KFENCE, UBSAN and the detectors announce themselves; none is a finding.
        assert_eq!(found("clean_boot_findings_config.log"), vec![]);
    }

    #[test]
    fn a_warning() {
        use FindingKind::*;
        assert_eq!(
            found("lkdtm_warning.log"),
            want(&[(
                Warning,
                208,
                "WARNING: CPU: 1 PID: 54 at drivers/misc/lkdtm/bugs.c:85 lkdtm_WARNING+0x8/0xb"
            )])
        );
    }

    #[test]
    fn a_bug_its_oops_and_the_panic() {
        use FindingKind::*;
        assert_eq!(
            found("lkdtm_bug.log"),
            want(&[
                (Bug, 208, "kernel BUG at drivers/misc/lkdtm/bugs.c:78!"),
                (Oops, 209, "invalid opcode: 0000 [#1] SMP KASAN"),
                (Panic, 258, "Kernel panic - not syncing: Fatal exception"),
            ])
        );
    }

    #[test]
    fn a_null_pointer_oops() {
        use FindingKind::*;
        assert_eq!(
            found("lkdtm_exception.log"),
            want(&[
                (
                    Kasan,
                    207,
                    "BUG: KASAN: null-ptr-deref in lkdtm_EXCEPTION+0x7/0x11"
                ),
                (
                    Bug,
                    240,
                    "BUG: kernel NULL pointer dereference, address: 0000000000000000"
                ),
                (Oops, 244, "Oops: 0002 [#1] SMP KASAN"),
                (Panic, 294, "Kernel panic - not syncing: Fatal exception"),
            ])
        );
    }

    #[test]
    fn a_panic() {
        assert_eq!(
            found("lkdtm_panic.log"),
            want(&[(
                FindingKind::Panic,
                207,
                "Kernel panic - not syncing: dumptest"
            )])
        );
    }

    #[test]
    fn a_soft_lockup_and_its_rcu_stalls() {
        use FindingKind::*;
        assert_eq!(
            found("lkdtm_softlockup.log"),
            want(&[
                (
                    RcuStall,
                    207,
                    "rcu: INFO: rcu_sched self-detected stall on CPU"
                ),
                (
                    SoftLockup,
                    245,
                    "watchdog: BUG: soft lockup - CPU#1 stuck for 34s! [sh:54]"
                ),
                (
                    RcuStall,
                    281,
                    "rcu: INFO: rcu_sched self-detected stall on CPU"
                ),
            ])
        );
    }

    #[test]
    fn a_hard_lockup_under_tcg_is_an_rcu_stall() {
        // TCG has no PMU, so no NMI watchdog: the other CPU reports the stall. The NMI
        // backtrace's "INFO: NMI handler … took too long" is no finding.
        use FindingKind::*;
        let stall = "rcu: INFO: rcu_sched detected stalls on CPUs/tasks:";
        assert_eq!(
            found("lkdtm_hardlockup_tcg.log"),
            want(&[(RcuStall, 206, stall), (RcuStall, 247, stall)])
        );
    }

    #[test]
    fn a_hard_lockup_in_the_kernels_format() {
        // kernel/watchdog_hld.c: pr_emerg("Watchdog detected hard LOCKUP on cpu %d\n") with
        // pr_fmt "NMI watchdog: ". Not recordable here: TCG has no PMU, KVM does not run.
        let log = "[   31.000001] NMI watchdog: Watchdog detected hard LOCKUP on cpu 1\n\
                   [   31.000002] NMI watchdog: Perf NMI watchdog permanently disabled\n";
        assert_eq!(
            kinds(&scan(log, &[])),
            vec![FindingKind::HardLockup],
            "{log}"
        );
    }

    #[test]
    fn a_hung_task() {
        use FindingKind::*;
        let f = found("lkdtm_hung_task.log");
        assert_eq!(
            f,
            want(&[
                (
                    HungTask,
                    207,
                    "INFO: task sh:54 blocked for more than 10 seconds."
                ),
                (
                    HungTask,
                    235,
                    "INFO: task sh:54 blocked for more than 20 seconds."
                ),
                (
                    HungTask,
                    263,
                    "INFO: task sh:54 blocked for more than 30 seconds."
                ),
            ])
        );
    }

    #[test]
    fn a_ubsan_report() {
        assert_eq!(
            found("lkdtm_array_bounds.log"),
            want(&[(
                FindingKind::Ubsan,
                210,
                "UBSAN: array-index-out-of-bounds in /src/drivers/misc/lkdtm/bugs.c:349:16"
            )])
        );
    }

    #[test]
    fn a_kasan_report() {
        assert_eq!(
            found("lkdtm_slab_linear_overflow.log"),
            want(&[(
                FindingKind::Kasan,
                209,
                "BUG: KASAN: slab-out-of-bounds in lkdtm_SLAB_LINEAR_OVERFLOW+0x43/0x58"
            )])
        );
    }

    #[test]
    fn kfence_reports_and_kasans_first() {
        use FindingKind::*;
        let f = found("lkdtm_read_after_free_kfence.log");
        let uaf = "BUG: KFENCE: use-after-free read in lkdtm_READ_AFTER_FREE+0xcd/0x16c";
        assert_eq!(f[0], (Kfence, 210, uaf.to_string()));
        assert_eq!(
            f[2],
            (
                Kasan,
                292,
                "BUG: KASAN: use-after-free in lkdtm_READ_AFTER_FREE+0xca/0x16c".to_string()
            )
        );
        // KASAN reports only its first: every other one is KFENCE's.
        assert_eq!(f.iter().filter(|x| x.0 == Kasan).count(), 1);
        assert_eq!(f.iter().filter(|x| x.0 == Kfence).count(), 7);
    }

    /// The console alone cannot tell a /dev/kmsg write from the kernel's line (the kernel
    /// log's facility does: vm::kmsg).
    #[test]
    fn a_warning_from_kmsg_looks_like_one() {
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
    fn an_unstamped_line_beside_stamped_ones_is_userspace() {
        // Written straight to /dev/console (a unit's output), not through printk.
        let log = "[    1.000000] Linux version 6.1\nBUG: a test prints this\n\
                   [    2.000000] WARNING: CPU: 0 PID: 1 at x.c:1 f+0x0/0x1\n";
        let f = scan(log, &[]);
        assert_eq!(kinds(&f), vec![FindingKind::Warning]);
        assert_eq!((f[0].line, f[0].usec), (3, Some(2_000_000)));
        // A console with no stamps at all (printk.time=0): every line may be the kernel's.
        let log = "Linux version 6.1\nBUG: unable to handle page fault for address: 0\n";
        assert_eq!(kinds(&scan(log, &[])), vec![FindingKind::Bug]);
        // --bad-if-console still sees every line.
        let re = compile(&["a test prints".into()]).unwrap();
        assert_eq!(scan("[ 1.0] x\nBUG: a test prints this\n", &re).len(), 1);
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
        let re = compile(&["xtask-init: .*ready".into()]).unwrap();
        let f = scan("[ 5.0] xtask-init: fast mode ready\n", &re);
        assert_eq!(f.len(), 1);
        assert!(f[0]
            .summary()
            .starts_with("match of /xtask-init: .*ready/ at line 1"));
        assert!(compile(&["(".into()])
            .unwrap_err()
            .to_string()
            .contains("--bad-if-console"));
    }

    #[test]
    fn a_boot_time_warning_is_found_alike_on_arm64_and_x86_64() {
        // Recorded on each: the same WARN(1, …) in kernel_init_freeable (the synthetic
        // history's warning commit), built without KALLSYMS (the function is an address);
        // arm64's report (`pstate:`, `Call trace:`) differs from x86's after the header only.
        use FindingKind::Warning;
        assert_eq!(
            found("arm64_warning_at_boot.log"),
            want(&[(
                Warning,
                131,
                "WARNING: CPU: 0 PID: 1 at init/main.c:1600 0xffffffc008380e00"
            )])
        );
        assert_eq!(
            found("warning_at_boot.log"),
            want(&[(
                Warning,
                189,
                "WARNING: CPU: 1 PID: 1 at init/main.c:1600 0xffffffff81ae61eb"
            )])
        );
    }

    #[test]
    fn an_arm64_warning_made_a_panic_is_both() {
        use FindingKind::*;
        assert_eq!(
            found("arm64_panic_on_warn_at_boot.log"),
            want(&[
                (
                    Warning,
                    130,
                    "WARNING: CPU: 0 PID: 1 at init/main.c:1600 0xffffffc008380e00"
                ),
                (
                    Panic,
                    151,
                    "Kernel panic - not syncing: kernel: panic_on_warn set ..."
                ),
            ])
        );
    }

    #[test]
    fn an_oom_panic_is_found_alike_on_arm64_and_x86_64() {
        // Recorded on each: panic_on_oom, then /dev/shm filled; the OOM report before the
        // panic (arm64's `Call trace:`, x86's `Call Trace:`) is no finding.
        let oom = "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled";
        assert_eq!(
            found("arm64_panic_after_agent_oom.log"),
            want(&[(FindingKind::Panic, 189, oom)])
        );
        let x86: Vec<_> = found("panic_after_agent_oom.log")
            .into_iter()
            .map(|(k, _, t)| (k, t))
            .collect();
        assert_eq!(x86, [(FindingKind::Panic, oom.to_string())]);
    }

    #[test]
    fn arm64s_die_header_is_an_oops() {
        // The format of arch/arm64/kernel/traps.c:189 in Linux 6.1, filled in as an arm64
        // NULL dereference prints it (no recording: the trimmed arm64 kernel has no LKDTM).
        for line in [
            "[    3.412345] Internal error: Oops: 0000000096000005 [#1] SMP",
            "[    3.412345] Internal error: Oops - BUG: 00000000f2000800 [#1] PREEMPT SMP",
        ] {
            assert_eq!(kinds(&scan(line, &[])), [FindingKind::Oops], "{line}");
        }
        // `Unable to handle kernel NULL pointer dereference …` comes before the header; the
        // header alone is the finding.
        assert_eq!(
            scan(
                "[    3.41] Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000\n",
                &[]
            ),
            []
        );
    }
}
