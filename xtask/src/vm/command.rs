//! The check's command in the guest: run so that it is judged by its own exit (its output goes
//! to files that are read back, not to pipes its children may hold), under one deadline, with
//! each way it can fail sorted into the kernel's, the setup's or the agent's.

use super::qga::{self, Agent, ExecStatus, Stop};
use super::verdict::CommandEnd;
use anyhow::Result;
use std::time::{Duration, Instant};

/// Where `--script` is put in the guest (a tmpfs in both init modes).
pub const SCRIPT_PATH: &str = "/run/xtask-script";
/// The command's stdout and stderr in the guest (the same tmpfs).
pub const STDOUT_PATH: &str = "/run/xtask-stdout";
pub const STDERR_PATH: &str = "/run/xtask-stderr";
/// Made by the wrapper when the shell could not exec the command.
pub const NOT_STARTED_PATH: &str = "/run/xtask-not-started";
/// As much of each stream as is read back (what qemu-ga would capture, too).
pub const MAX_OUTPUT: usize = 16 << 20;
/// Reading the output back once the command ended, even past its deadline.
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

/// The shell that runs the command: output to the files, then `exec` so that the agent
/// watches the command itself. If the `exec` fails (no such program, not executable), the
/// shell exits (127, 126) through the EXIT trap, which marks it: a command that itself exits
/// 127 leaves no mark.
const WRAPPER: &str = "trap 'echo $? >/run/xtask-not-started' EXIT
exec </dev/null >/run/xtask-stdout 2>/run/xtask-stderr
exec \"$@\"";

/// The wrapper's `$0`: what its error messages start with, and how a transcript tells the
/// command's guest-exec from others.
pub const WRAPPER_NAME: &str = "xtask-command";

/// The argv given to guest-exec for the command's argv.
pub fn wrapped(argv: &[String]) -> Vec<String> {
    let mut v = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        WRAPPER.to_string(),
        WRAPPER_NAME.to_string(),
    ];
    v.extend(argv.iter().cloned());
    v
}

/// The exit codes with which the wrapper's shell may have failed to start the command: 2 (a
/// redirection failed), 126, 127 (exec failed). Only then is the mark looked for.
fn may_not_have_started(code: Option<i32>) -> bool {
    matches!(code, Some(2 | 126 | 127))
}

/// The reason for a command the shell could not start, from its stderr.
pub fn not_started_reason(argv0: &str, stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    // "xtask-command: 3: exec: no-such-cmd: not found" → "exec: no-such-cmd: not found"
    let msg = last.splitn(3, ": ").nth(2).unwrap_or(last).trim();
    format!("the guest cannot run `{argv0}` ({msg}): is it in the rootfs and on PATH?")
}

/// How a failed agent call during the command ends it. The VM being gone and Ctrl-C are
/// not decided here: they come back as `Err`.
fn end_of(e: anyhow::Error, step: &str) -> Result<CommandEnd> {
    if crate::signals::is_interrupted(&e) || qga::stop_of(&e) == Some(Stop::VmExited) {
        return Err(e);
    }
    Ok(match qga::stop_of(&e) {
        Some(Stop::Deadline) => CommandEnd::TimedOut,
        _ => CommandEnd::AgentFailed {
            why: format!("{step}: {e:#}"),
        },
    })
}

/// Copies the script in (if any), runs the command and waits for its end until `deadline`,
/// then reads its output back. `Err` only when the VM went away or on Ctrl-C.
pub fn run(
    a: &mut Agent,
    argv: &[String],
    script: Option<&[u8]>,
    deadline: Instant,
    watch: qga::Watch,
) -> Result<(CommandEnd, Option<ExecStatus>)> {
    if let Some(script) = script {
        if let Err(e) = a.write_file(SCRIPT_PATH, script, deadline, watch) {
            if qga::is_refusal(&e) {
                let why = format!("copying the script into the guest failed: {e:#}");
                return Ok((CommandEnd::NotStarted { why }, None));
            }
            return Ok((end_of(e, "copying the script into the guest")?, None));
        }
    }
    let pid = match a.exec(&wrapped(argv), false, deadline, watch) {
        Ok(pid) => pid,
        Err(e) if qga::is_refusal(&e) => {
            let why = format!("the guest agent could not start the command: {e:#}");
            return Ok((CommandEnd::NotStarted { why }, None));
        }
        Err(e) => return Ok((end_of(e, "starting the command")?, None)),
    };
    let mut st = match a.wait_exec(pid, deadline, watch) {
        Ok(st) => st,
        Err(e) => return Ok((end_of(e, "waiting for the command")?, None)),
    };
    let out_deadline = deadline.max(Instant::now() + OUTPUT_GRACE);
    let mut read = |a: &mut Agent, path: &str| a.read_file(path, MAX_OUTPUT, out_deadline, watch);
    match read(a, STDERR_PATH) {
        Ok((err, more)) => (st.stderr, st.err_truncated) = (err, more),
        Err(e) => return Ok((end_of(e, "reading the command's stderr")?, Some(st))),
    }
    if may_not_have_started(st.exit_code) && read(a, NOT_STARTED_PATH).is_ok() {
        let why = not_started_reason(&argv[0], &st.stderr);
        return Ok((CommandEnd::NotStarted { why }, Some(st)));
    }
    match read(a, STDOUT_PATH) {
        Ok((out, more)) => (st.stdout, st.out_truncated) = (out, more),
        Err(e) => return Ok((end_of(e, "reading the command's stdout")?, Some(st))),
    }
    let end = st.end().unwrap_or(CommandEnd::AgentFailed {
        why: "the agent said the command exited, then that it had not".into(),
    });
    Ok((end, Some(st)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wrapper_runs_the_command_as_given() {
        let argv: Vec<String> = ["sh", "-c", "exit 3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let w = wrapped(&argv);
        assert_eq!(w[..2], ["/bin/sh", "-c"]);
        assert!(w[2].contains(STDOUT_PATH) && w[2].contains(STDERR_PATH));
        assert!(w[2].contains(NOT_STARTED_PATH));
        assert_eq!(w[4..], argv[..]);
    }

    /// The wrapper in this host's sh: a command that is not there is marked, one that exits
    /// 127 itself is not, and a background child does not hold the exit back.
    #[test]
    fn the_wrapper_in_a_real_shell() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_str().unwrap();
        let run = |argv: &[&str]| {
            let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
            let w = wrapped(&argv);
            let script = w[2].replace("/run/", &format!("{dir}/"));
            let _ = std::fs::remove_file(format!("{dir}/xtask-not-started"));
            let start = Instant::now();
            let st = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(script)
                .args(&w[3..])
                .status()
                .unwrap();
            let marked = std::path::Path::new(&format!("{dir}/xtask-not-started")).exists();
            let err = std::fs::read(format!("{dir}/xtask-stderr")).unwrap_or_default();
            (st.code(), marked, err, start.elapsed())
        };
        let (code, marked, err, _) = run(&["no-such-cmd", "x"]);
        assert_eq!((code, marked), (Some(127), true));
        assert_eq!(
            not_started_reason("no-such-cmd", &err),
            "the guest cannot run `no-such-cmd` (exec: no-such-cmd: not found): is it in the \
             rootfs and on PATH?"
        );
        let (code, marked, _, _) = run(&["sh", "-c", "exit 127"]);
        assert_eq!((code, marked), (Some(127), false));
        let (code, marked, _, took) = run(&["sh", "-c", "sleep 5 & echo hi"]);
        assert_eq!((code, marked), (Some(0), false));
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert_eq!(
            std::fs::read(format!("{dir}/xtask-stdout")).unwrap(),
            b"hi\n"
        );
    }

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    fn replay(name: &str, command: &[&str]) -> (CommandEnd, Option<ExecStatus>) {
        let mut agent = qga::replay::agent(name);
        let mut ok = || Ok(());
        let soon = Instant::now() + Duration::from_secs(5);
        run(&mut agent, &argv(command), None, soon, &mut ok).unwrap()
    }

    /// Recorded: the agent reports the exit at once although `sleep 600` still holds the
    /// output files; the output is read back from them.
    #[test]
    fn a_background_child_does_not_hold_the_exit_back() {
        let (end, st) = replay(
            "exec_background_child.jsonl",
            &["sh", "-c", "sleep 600 & echo hi; echo err >&2; true"],
        );
        assert_eq!(end, CommandEnd::Exited { code: 0 });
        let st = st.unwrap();
        assert_eq!(
            (st.stdout, st.stderr),
            (b"hi\n".to_vec(), b"err\n".to_vec())
        );
    }

    /// Recorded: the shell's exec failed (127) and the wrapper left its mark.
    #[test]
    fn a_program_the_guest_lacks_is_not_started() {
        let (end, _) = replay("exec_wrapper_not_found.jsonl", &["no-such-cmd", "a"]);
        let CommandEnd::NotStarted { why } = end else {
            panic!("{end:?}")
        };
        assert!(
            why.contains("cannot run `no-such-cmd` (exec: no-such-cmd: not found)"),
            "{why}"
        );
    }

    /// Recorded: guest-exec itself refused (no such program): the guest could not start it.
    #[test]
    fn a_refused_guest_exec_is_not_started() {
        let (end, st) = replay("exec_not_found.jsonl", &["/nonexistent"]);
        assert!(matches!(end, CommandEnd::NotStarted { .. }), "{end:?}");
        assert!(st.is_none());
    }

    /// Recorded: the command killed qemu-ga; its successor does not know the pid. A poll that
    /// fails is the agent's fault, not a timeout.
    #[test]
    fn a_failing_status_poll_is_an_agent_fault() {
        let (end, _) = replay(
            "exec_status_after_agent_restart.jsonl",
            &["sh", "-c", "sleep 1; kill $(pidof qemu-ga); sleep 8"],
        );
        let CommandEnd::AgentFailed { why } = end else {
            panic!("{end:?}")
        };
        assert!(why.contains("Invalid parameter 'pid'"), "{why}");
    }

    /// An agent that stops answering mid-command: the command's one deadline ends the wait
    /// (plus the grace of an answer asked for), not a per-poll one.
    #[test]
    fn an_unanswered_poll_ends_at_the_commands_deadline() {
        let mut agent = qga::replay::agent("exec_status_unanswered.jsonl");
        let mut ok = || Ok(());
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let (end, _) = run(
            &mut agent,
            &argv(&["sleep", "600"]),
            None,
            deadline,
            &mut ok,
        )
        .unwrap();
        assert_eq!(end, CommandEnd::TimedOut);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < qga::ANSWER_GRACE + Duration::from_secs(1),
            "{took:?}"
        );
    }

    #[test]
    fn only_the_shells_own_codes_look_for_the_mark() {
        assert!(may_not_have_started(Some(127)));
        assert!(!may_not_have_started(Some(0)));
        assert!(!may_not_have_started(None));
    }
}
