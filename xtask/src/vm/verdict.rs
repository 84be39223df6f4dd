//! The verdict of a check and how it is decided from what a run recorded: pure code.

use super::console::{Finding, FindingKind};
use super::fault::{self, Fault, FaultKind, VmEnd};
use crate::exit;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// What a check says about a kernel, in `git bisect run` terms.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The kernel passed: exit 0.
    Good,
    /// The kernel failed the check: exit 1.
    Bad,
    /// The kernel could not be tested (did not build, or did not boot far enough to run
    /// the command): exit 125, which `git bisect run` skips.
    Skip,
    /// Not the kernel's doing (a [`Failure::Fault`]: QEMU, virtiofsd or the agent broke):
    /// exit 128, which makes `git bisect run` stop.
    Abort,
}

impl Verdict {
    /// The exit code of `cargo xtask check` for this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Good => exit::OK,
            Verdict::Bad => exit::FAILED,
            Verdict::Skip => exit::UNTESTABLE,
            Verdict::Abort => exit::SETUP,
        }
    }

    /// One word, for the verdict line.
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Good => "good",
            Verdict::Bad => "bad",
            Verdict::Skip => "untestable",
            Verdict::Abort => "abort",
        }
    }

    /// The verdict of `--repeat N` runs: bad if any is bad, else untestable if any is,
    /// else good. An abort wins over everything.
    pub fn combine(all: &[Verdict]) -> Verdict {
        let has = |v| all.contains(&v);
        if has(Verdict::Abort) {
            Verdict::Abort
        } else if has(Verdict::Bad) {
            Verdict::Bad
        } else if has(Verdict::Skip) || all.is_empty() {
            Verdict::Skip
        } else {
            Verdict::Good
        }
    }
}

/// How the command run in the guest ended.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "ended")]
pub enum CommandEnd {
    /// It exited with this code.
    Exited { code: i32 },
    /// A signal killed it.
    Signaled { signal: i32 },
    /// It ran past `--timeout`.
    TimedOut,
    /// The guest could not start it (no such program, the script could not be copied in).
    NotStarted { why: String },
    /// The guest agent failed us while it ran (an error answer, a broken channel).
    #[serde(alias = "lost")]
    AgentFailed { why: String },
    /// The VM ended while it ran ([`Facts::vm_end`] says how).
    VmEnded,
}

/// How far the boot got.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "ended")]
pub enum BootEnd {
    /// The guest agent answered.
    AgentUp,
    /// The VM ended before the agent answered (a panic ends QEMU; [`Facts::vm_end`] says how).
    #[serde(alias = "qemu_exited")]
    VmEnded,
    /// `--boot-timeout` passed without an answer.
    TimedOut,
}

/// Everything a verdict is decided from; saved as `result.json` so a run can be re-judged.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Facts {
    /// The command given (empty: the check is a clean boot).
    pub command: Vec<String>,
    pub boot: BootEnd,
    /// None when no command ran.
    pub command_end: Option<CommandEnd>,
    /// What the console scan found that the kernel reported.
    pub findings: Vec<Finding>,
    /// Lines that look like findings but that userspace wrote to /dev/kmsg: not the kernel's.
    #[serde(default)]
    pub from_userspace: Vec<Finding>,
    /// How the VM ended on its own, before the run ended it.
    #[serde(default)]
    pub vm_end: Option<VmEnd>,
    /// Whether the console shows that the kernel ran at all (it printed something).
    #[serde(default = "yes")]
    pub kernel_printed: bool,
}

fn yes() -> bool {
    true
}

/// What in a run was not the kernel's doing, if anything: the VM's end (QEMU's status and
/// log, virtiofsd, libvirt), or a command the guest could not start, or the agent failing.
pub fn fault(f: &Facts) -> Option<Fault> {
    let panicked = f.findings.iter().any(|x| x.kind == FindingKind::Panic);
    if let Some(fault) = f
        .vm_end
        .as_ref()
        .and_then(|e| fault::of_vm_end(e, f.kernel_printed, panicked))
    {
        return Some(fault);
    }
    match &f.command_end {
        Some(CommandEnd::NotStarted { why }) => Some(Fault::setup(why.clone())),
        // An agent that died with a panicking kernel: the kernel's doing.
        Some(CommandEnd::AgentFailed { why }) if !panicked => {
            Some(Fault::infra(format!("the guest agent failed: {why}")))
        }
        _ => None,
    }
}

/// The stage a check failed in, as kunit.py tells its CONFIG, BUILD and TEST failures apart;
/// the verdict follows from it ([`Failure::verdict`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "snake_case", tag = "stage")]
pub enum Failure {
    /// The tree could not make a config of the input one (`make olddefconfig` failed):
    /// untestable.
    Config { log: PathBuf },
    /// The kernel did not build: untestable.
    Build { log: PathBuf },
    /// The guest agent never answered, so the command could not run: untestable.
    Boot,
    /// The kernel failed the check: the command failed, the console shows a warning, oops
    /// or panic, or the boot that was the check did not finish: bad.
    Test,
    /// Not the kernel's doing (QEMU, virtiofsd or the agent broke; the guest lacks the
    /// command): abort.
    Fault { kind: FaultKind },
}

impl Failure {
    pub fn verdict(&self) -> Verdict {
        match self {
            Failure::Config { .. } | Failure::Build { .. } | Failure::Boot => Verdict::Skip,
            Failure::Test => Verdict::Bad,
            Failure::Fault { .. } => Verdict::Abort,
        }
    }
}

/// What a check found: the stage that failed (none: good) and the one line saying why.
#[derive(Deserialize, Debug, Clone, PartialEq)]
pub struct Judgement {
    /// None: every stage passed.
    #[serde(default)]
    pub failure: Option<Failure>,
    pub reason: String,
}

impl Judgement {
    pub fn good(reason: impl Into<String>) -> Judgement {
        Judgement {
            failure: None,
            reason: reason.into(),
        }
    }

    pub fn failed(failure: Failure, reason: impl Into<String>) -> Judgement {
        Judgement {
            failure: Some(failure),
            reason: reason.into(),
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.failure
            .as_ref()
            .map_or(Verdict::Good, Failure::verdict)
    }
}

/// Saved with its verdict, for whoever reads `result.json` (the verdict is not read back:
/// it follows from the failure).
impl Serialize for Judgement {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Judgement", 3)?;
        st.serialize_field("verdict", &self.verdict())?;
        st.serialize_field("failure", &self.failure)?;
        st.serialize_field("reason", &self.reason)?;
        st.end()
    }
}

/// Decides the verdict. The contract:
/// - abort (128) on a [`fault`]: not the kernel's doing;
/// - with a command: untestable (125) when the agent never answered (panic or hang at boot),
///   bad (1) on a failing, killed or timed-out command, a VM that ended while it ran, or a
///   console finding, else good;
/// - without one (the check is the boot): bad on a console finding or a boot that never
///   reached the agent, else good.
pub fn judge(f: &Facts) -> Judgement {
    use Failure::{Boot, Test};
    fn j(failure: Failure, reason: impl Into<String>) -> Judgement {
        Judgement::failed(failure, reason)
    }
    if let Some(fault) = fault(f) {
        return j(Failure::Fault { kind: fault.kind }, fault.what);
    }
    let finding = f.findings.first().map(|x| x.summary());
    if !f.command.is_empty() && f.boot != BootEnd::AgentUp {
        // Untestable, and the console's first finding says why (e.g. the panic).
        let why = finding
            .as_ref()
            .map(|s| format!("; console: {s}"))
            .unwrap_or_default();
        return j(
            Boot,
            format!("{} before the command could run{why}", boot_failure(f)),
        );
    }
    if let Some(s) = finding {
        let more = match f.findings.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        return j(Test, format!("console: {s}{more}"));
    }
    if f.boot != BootEnd::AgentUp {
        return j(Test, boot_failure(f));
    }
    match &f.command_end {
        None if f.command.is_empty() => {
            Judgement::good(format!("the kernel booted cleanly{}", userspace_note(f)))
        }
        None => j(Boot, "the command did not run"),
        Some(CommandEnd::Exited { code: 0 }) => {
            Judgement::good(format!("the command exited 0{}", userspace_note(f)))
        }
        Some(CommandEnd::Exited { code }) => j(Test, format!("the command exited {code}")),
        Some(CommandEnd::Signaled { signal }) => {
            j(Test, format!("the command was killed by signal {signal}"))
        }
        Some(CommandEnd::TimedOut) => j(Test, "the command timed out"),
        Some(CommandEnd::VmEnded) => j(
            Test,
            "the VM ended while the command ran (the guest reset or powered off)",
        ),
        // fault() took this one.
        Some(CommandEnd::NotStarted { why }) => j(
            Failure::Fault {
                kind: FaultKind::Setup,
            },
            why.clone(),
        ),
        Some(CommandEnd::AgentFailed { why }) => j(Test, format!("the guest agent failed: {why}")),
    }
}

/// `` (not the kernel's: userspace wrote line 188 to /dev/kmsg: `WARNING: …`)``, or nothing.
fn userspace_note(f: &Facts) -> String {
    match f.from_userspace.first() {
        None => String::new(),
        Some(u) => {
            let more = match f.from_userspace.len() {
                1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            format!(
                " (not the kernel's: userspace wrote line {}{more} to /dev/kmsg: `{}`)",
                u.line, u.text
            )
        }
    }
}

fn boot_failure(f: &Facts) -> String {
    match f.boot {
        BootEnd::AgentUp => "booted".into(),
        BootEnd::VmEnded => "the VM exited during boot".into(),
        BootEnd::TimedOut => "the guest agent never answered (boot timeout)".into(),
    }
}

/// How long each phase took; `None` for a phase that did not run.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Timings {
    #[serde(with = "opt_secs")]
    pub boot: Option<Duration>,
    #[serde(with = "opt_secs")]
    pub command: Option<Duration>,
    #[serde(with = "opt_secs")]
    pub shutdown: Option<Duration>,
}

impl Timings {
    /// `boot-to-agent 1.92s, command 0.10s, shutdown 0.31s`.
    pub fn line(&self) -> String {
        let part =
            |name: &str, d: Option<Duration>| d.map(|d| format!("{name} {:.2}s", d.as_secs_f64()));
        let parts: Vec<String> = [
            part("boot-to-agent", self.boot),
            part("command", self.command),
            part("shutdown", self.shutdown),
        ]
        .into_iter()
        .flatten()
        .collect();
        parts.join(", ")
    }
}

/// Durations as seconds (a float) in result.json.
mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        // A saved file may hold anything: a negative or huge number is an error, not a panic.
        Option::<f64>::deserialize(d)?
            .map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::fault::FaultKind;

    fn facts(command: &[&str], boot: BootEnd, end: Option<CommandEnd>) -> Facts {
        Facts {
            command: command.iter().map(|s| s.to_string()).collect(),
            boot,
            command_end: end,
            findings: vec![],
            from_userspace: vec![],
            vm_end: None,
            kernel_printed: true,
        }
    }

    fn warning() -> Finding {
        Finding {
            kind: FindingKind::Warning,
            line: 12,
            text: "WARNING: CPU: 0 PID: 1 at test".into(),
            usec: None,
        }
    }

    /// Each stage's failure has its verdict, and result.json names the stage.
    #[test]
    fn the_failed_stage_decides_the_verdict() {
        let log = PathBuf::from("/run/build.log");
        for (failure, verdict, stage) in [
            (
                Failure::Config { log: log.clone() },
                Verdict::Skip,
                "config",
            ),
            (Failure::Build { log: log.clone() }, Verdict::Skip, "build"),
            (Failure::Boot, Verdict::Skip, "boot"),
            (Failure::Test, Verdict::Bad, "test"),
            (
                Failure::Fault {
                    kind: FaultKind::Infra,
                },
                Verdict::Abort,
                "fault",
            ),
        ] {
            let j = Judgement::failed(failure, "why");
            assert_eq!(j.verdict(), verdict);
            let json: serde_json::Value = serde_json::to_value(&j).unwrap();
            assert_eq!(json["failure"]["stage"], stage, "{json}");
            assert_eq!(json["verdict"], serde_json::to_value(verdict).unwrap());
            let again: Judgement = serde_json::from_value(json).unwrap();
            assert_eq!(again, j);
        }
        let good = serde_json::to_value(Judgement::good("fine")).unwrap();
        assert_eq!(
            (&good["verdict"], &good["failure"]),
            (&"good".into(), &serde_json::Value::Null)
        );
    }

    /// A command that could not run because the boot failed is the boot's failure; the boot
    /// failing when it is the check is the test's.
    #[test]
    fn a_boot_failure_is_the_boot_stage_unless_the_boot_is_the_test() {
        let f = facts(&["true"], BootEnd::TimedOut, None);
        assert_eq!(judge(&f).failure, Some(Failure::Boot));
        let f = facts(&[], BootEnd::TimedOut, None);
        assert_eq!(judge(&f).failure, Some(Failure::Test));
        let f = facts(
            &["x"],
            BootEnd::AgentUp,
            Some(CommandEnd::Exited { code: 2 }),
        );
        assert_eq!(judge(&f).failure, Some(Failure::Test));
        let f = facts(
            &["x"],
            BootEnd::AgentUp,
            Some(CommandEnd::Exited { code: 0 }),
        );
        assert_eq!(judge(&f).failure, None);
    }

    /// A boot that panics before the command: untestable, and the reason names the panic
    /// (recorded: arm64, `--append init=/nonexistent -- true`).
    #[test]
    fn a_panic_before_the_command_is_named_in_the_boot_failure() {
        let console = crate::vm::console::recorded("console/arm64_panic_no_init.log");
        let mut f = facts(&["true"], BootEnd::VmEnded, None);
        f.findings = crate::vm::console::scan(&console, &[]);
        let j = judge(&f);
        assert_eq!(j.failure, Some(Failure::Boot));
        assert!(
            j.reason
                .starts_with("the VM exited during boot before the command could run; console: ")
                && j.reason
                    .contains("Kernel panic - not syncing: Requested init /nonexistent failed"),
            "{}",
            j.reason
        );
    }

    #[test]
    fn exit_codes_follow_git_bisect_run() {
        assert_eq!(Verdict::Good.exit_code(), 0);
        assert_eq!(Verdict::Bad.exit_code(), 1);
        assert_eq!(Verdict::Skip.exit_code(), 125);
        assert_eq!(Verdict::Abort.exit_code(), 128);
    }

    #[test]
    fn command_results() {
        let v = |end| judge(&facts(&["x"], BootEnd::AgentUp, Some(end))).verdict();
        assert_eq!(v(CommandEnd::Exited { code: 0 }), Verdict::Good);
        assert_eq!(v(CommandEnd::Exited { code: 1 }), Verdict::Bad);
        assert_eq!(v(CommandEnd::Signaled { signal: 9 }), Verdict::Bad);
        assert_eq!(v(CommandEnd::TimedOut), Verdict::Bad);
    }

    #[test]
    fn a_boot_that_never_reaches_the_agent() {
        for boot in [BootEnd::VmEnded, BootEnd::TimedOut] {
            // With a command: the kernel could not be tested.
            let mut f = facts(&["true"], boot.clone(), None);
            f.findings.push(Finding {
                kind: FindingKind::Panic,
                line: 3,
                text: "Kernel panic - not syncing: no init".into(),
                usec: None,
            });
            assert_eq!(judge(&f).verdict(), Verdict::Skip);
            // Without: the boot is the check, and it failed.
            f.command.clear();
            assert_eq!(judge(&f).verdict(), Verdict::Bad);
            assert!(judge(&f).reason.contains("panic"), "{:?}", judge(&f));
            f.findings.clear();
            assert_eq!(judge(&f).verdict(), Verdict::Bad);
        }
    }

    #[test]
    fn console_findings_make_a_passing_command_bad() {
        let mut f = facts(
            &["true"],
            BootEnd::AgentUp,
            Some(CommandEnd::Exited { code: 0 }),
        );
        assert_eq!(judge(&f).verdict(), Verdict::Good);
        f.findings = vec![warning(), warning()];
        let j = judge(&f);
        assert_eq!(j.verdict(), Verdict::Bad);
        assert_eq!(
            j.reason,
            "console: warning at line 12: WARNING: CPU: 0 PID: 1 at test (and 1 more)"
        );
    }

    #[test]
    fn what_userspace_wrote_to_kmsg_is_named_but_not_judged() {
        let mut f = facts(
            &["true"],
            BootEnd::AgentUp,
            Some(CommandEnd::Exited { code: 0 }),
        );
        f.from_userspace = vec![warning()];
        let j = judge(&f);
        assert_eq!(j.verdict(), Verdict::Good);
        assert_eq!(
            j.reason,
            "the command exited 0 (not the kernel's: userspace wrote line 12 to /dev/kmsg: \
             `WARNING: CPU: 0 PID: 1 at test`)"
        );
    }

    #[test]
    fn a_clean_boot_is_good() {
        assert_eq!(
            judge(&facts(&[], BootEnd::AgentUp, None)).verdict(),
            Verdict::Good
        );
    }

    #[test]
    fn repeat_combines() {
        use Verdict::*;
        assert_eq!(Verdict::combine(&[Good, Good]), Good);
        assert_eq!(Verdict::combine(&[Good, Skip, Bad]), Bad);
        assert_eq!(Verdict::combine(&[Good, Skip]), Skip);
    }

    fn recorded(p: &str) -> String {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/vm/test_data")
            .join(p);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn ended(end: Option<CommandEnd>, vm_end: VmEnd, console: &str) -> Judgement {
        let mut f = facts(&["sh", "-c", "x"], BootEnd::AgentUp, end);
        f.findings = crate::vm::console::scan(console, &[]);
        f.kernel_printed = !console.trim().is_empty();
        f.vm_end = Some(vm_end);
        judge(&f)
    }

    fn qemu_exit(code: Option<i32>, signal: Option<i32>, log: &str) -> VmEnd {
        VmEnd::Qemu {
            code,
            signal,
            log_tail: log.into(),
        }
    }

    /// Recorded: the command filled memory with panic_on_oom set; the kernel panicked, QEMU
    /// exited 0 (panic=-1, -no-reboot). Bad, and the panic is named.
    #[test]
    fn a_panic_after_the_agent_answered_is_bad_and_named() {
        let console = recorded("console/panic_after_agent_oom.log");
        let j = ended(
            Some(CommandEnd::VmEnded),
            qemu_exit(Some(0), None, ""),
            &console,
        );
        assert_eq!(j.verdict(), Verdict::Bad);
        assert!(
            j.reason
                .contains("Kernel panic - not syncing: Out of memory"),
            "{}",
            j.reason
        );
    }

    /// Recorded: QEMU told to quit by SIGTERM mid-command exits 0 too; its log tells.
    #[test]
    fn qemu_terminated_from_outside_is_an_abort() {
        let console = recorded("console/clean_boot_fast.log");
        let log = recorded("qemu/terminated_by_signal.log");
        let j = ended(
            Some(CommandEnd::VmEnded),
            qemu_exit(Some(0), None, &log),
            &console,
        );
        assert_eq!(j.verdict(), Verdict::Abort);
        assert!(
            j.reason.contains("terminating on signal 15"),
            "{}",
            j.reason
        );
        let j = ended(
            Some(CommandEnd::VmEnded),
            qemu_exit(None, Some(9), ""),
            &console,
        );
        assert_eq!(
            (j.verdict(), j.reason.as_str()),
            (Verdict::Abort, "QEMU was killed by signal 9 from outside")
        );
    }

    /// Recorded: QEMU could not allocate the guest's memory. With a command, that is not
    /// "untestable" (125): the kernel never ran.
    #[test]
    fn qemu_failing_at_start_is_an_abort_with_its_words() {
        let log = recorded("qemu/memory_at_start.log");
        let mut f = facts(&["true"], BootEnd::VmEnded, None);
        f.kernel_printed = false;
        f.vm_end = Some(qemu_exit(Some(1), None, &log));
        let j = judge(&f);
        assert_eq!(j.verdict(), Verdict::Abort);
        assert!(
            j.reason.starts_with(
                "QEMU exited at start (exit 1): qemu-system-x86_64: unable to map backing store"
            ),
            "{}",
            j.reason
        );
        assert!(fault(&f).is_some_and(|x| x.kind == FaultKind::Setup));
    }

    #[test]
    fn the_command_not_starting_and_the_agent_failing_are_aborts() {
        let v = |end| {
            let f = facts(&["x"], BootEnd::AgentUp, Some(end));
            (judge(&f).verdict(), fault(&f).map(|x| x.kind))
        };
        assert_eq!(
            v(CommandEnd::NotStarted { why: "no x".into() }),
            (Verdict::Abort, Some(FaultKind::Setup))
        );
        assert_eq!(
            v(CommandEnd::AgentFailed {
                why: "closed".into()
            }),
            (Verdict::Abort, Some(FaultKind::Infra))
        );
        // The VM ending on its own (a reset, no panic) while the command ran: bad.
        assert_eq!(v(CommandEnd::VmEnded), (Verdict::Bad, None));
    }

    #[test]
    fn facts_round_trip_as_json() {
        let f = facts(
            &["false"],
            BootEnd::AgentUp,
            Some(CommandEnd::Exited { code: 1 }),
        );
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(serde_json::from_str::<Facts>(&text).unwrap(), f);
    }

    #[test]
    fn saved_timings_that_are_no_duration_are_an_error_not_a_panic() {
        let t: Timings =
            serde_json::from_str(r#"{"boot":1.5,"command":null,"shutdown":null}"#).unwrap();
        assert_eq!(t.boot, Some(Duration::from_millis(1500)));
        for bad in ["-1.0", "1e300"] {
            let text = format!(r#"{{"boot":{bad},"command":null,"shutdown":null}}"#);
            assert!(serde_json::from_str::<Timings>(&text).is_err(), "{bad}");
        }
    }
}
