//! The exit-code contract of every command, in one place (README.md's "Exit codes" says the
//! same), and how a run that fails, panics or loses its output ends.
//!
//! | code | meaning                                                                        |
//! |------|--------------------------------------------------------------------------------|
//! | 0    | success; `check`: good                                                         |
//! | 1    | the kernel's failure: `check` bad, `build` does not build; `deps` something is missing; `test` a test failed |
//! | 125  | `check`: the kernel cannot be tested (does not build, or does not come up)     |
//! | 128  | anything that is not the kernel's doing: setup, tools, an option out of range, an internal error |
//! | 129  | a command line that does not parse                                             |
//! | 130  | interrupted (Ctrl-C, SIGTERM, SIGHUP), everything cleaned up                   |
//! | 141  | stdout or stderr was closed (`… \| head`), as a shell reports SIGPIPE          |
//!
//! `quickstart` ends with its check's code; `boot --exec` and `setup-rootfs --shell -- CMD`
//! with the command's own ([`passed_on`]).

use std::io::Write;

/// Success; for `check`, the kernel is good.
pub const OK: u8 = 0;
/// The kernel's failure: bad (`check`), does not build (`build`); `deps`: missing packages;
/// `test`: a test failed.
pub const FAILED: u8 = 1;
/// `check`: the kernel cannot be tested; `git bisect run` skips the commit.
pub const UNTESTABLE: u8 = 125;
/// Not the kernel's doing (setup, tools, an option out of range, an internal error): aborts
/// `git bisect run`.
pub const SETUP: u8 = 128;
/// A command line that does not parse (also aborts `git bisect run`).
pub const USAGE: u8 = 129;
/// Interrupted by Ctrl-C, SIGTERM or SIGHUP; every guard has cleaned up.
pub const INTERRUPTED: u8 = 130;
/// Our stdout or stderr was closed: 128 + SIGPIPE, as a shell reports it.
pub const CLOSED_OUTPUT: u8 = 141;

/// The code a child's own exit gives ours, when a command passes it on: its code, or 128 + N
/// for signal N; what fits in no exit code is [`SETUP`].
pub fn passed_on(code: Option<i32>, signal: Option<i32>) -> u8 {
    match (code, signal) {
        (Some(c), _) => u8::try_from(c).unwrap_or(SETUP),
        (None, Some(s)) => u8::try_from(s)
            .ok()
            .and_then(|s| SETUP.checked_add(s))
            .unwrap_or(SETUP),
        (None, None) => SETUP,
    }
}

/// Writes one line on stderr, and never panics (as `eprintln!` does once stderr is closed).
pub fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// The exit code of a task's result, after its one line on stderr.
pub fn of_result(result: anyhow::Result<u8>) -> u8 {
    match result {
        Ok(code) => code,
        Err(e) if crate::signals::is_interrupted(&e) => {
            say("interrupted: stopped and cleaned up");
            INTERRUPTED
        }
        Err(e) => {
            say(&format!("error: {e:#}"));
            SETUP
        }
    }
}

/// The exit code after a panic reached `main` (the hook has printed its line, and unwinding
/// has run every guard: VMs, locks, temp dirs): a closed output stops as a shell's SIGPIPE
/// would, anything else is an internal error.
pub fn of_panic(payload: &(dyn std::any::Any + Send)) -> u8 {
    if !is_closed_output(payload) {
        SETUP
    } else if crate::signals::interrupted() {
        // A hung-up terminal after SIGHUP.
        INTERRUPTED
    } else {
        CLOSED_OUTPUT
    }
}

/// Turns every panic into one line, `error: internal error: … (at file:line)` (and the
/// backtrace when RUST_BACKTRACE asks for it), and says nothing for a closed output.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        if is_closed_output(info.payload()) {
            return;
        }
        let at = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        let thread = match thread.name() {
            Some("main") => String::new(),
            Some(name) => format!(" in thread {name}"),
            None => " in a thread".into(),
        };
        say(&format!(
            "error: internal error{thread}: {}{at}",
            panic_text(info.payload())
        ));
        let bt = std::backtrace::Backtrace::capture();
        if bt.status() == std::backtrace::BacktraceStatus::Captured {
            say(&bt.to_string());
        }
    }));
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message")
}

/// `println!` and `eprintln!` panic with this once their stream is closed: a reader of stdout
/// that went away (EPIPE), or any failure of stderr, where nothing could be said anyway.
fn is_closed_output(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = panic_text(payload);
    (text.starts_with("failed printing to stdout") && text.contains("(os error 32)"))
        || text.starts_with("failed printing to stderr")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printing_failed(stream: &str, errno: i32) -> String {
        format!(
            "failed printing to {stream}: {}",
            std::io::Error::from_raw_os_error(errno)
        )
    }

    #[test]
    fn a_closed_stdout_or_stderr_stops_quietly() {
        assert!(is_closed_output(&printing_failed("stdout", libc::EPIPE)));
        assert!(is_closed_output(&printing_failed("stderr", libc::EPIPE)));
        assert!(is_closed_output(&printing_failed("stderr", libc::EIO)));
        assert_eq!(of_panic(&printing_failed("stdout", libc::EPIPE)), 141);
        assert_eq!(of_panic(&printing_failed("stderr", libc::EPIPE)), 141);
    }

    #[test]
    fn every_other_panic_is_an_internal_error() {
        // A full disk under stdout is an error to report, not a reader that went away.
        assert!(!is_closed_output(&printing_failed("stdout", libc::ENOSPC)));
        assert_eq!(of_panic(&printing_failed("stdout", libc::ENOSPC)), SETUP);
        assert_eq!(of_panic(&"index out of bounds"), SETUP);
        assert_eq!(of_panic(&42), SETUP);
        assert_eq!(panic_text(&42), "a panic without a message");
    }

    #[test]
    fn a_childs_status_passes_on() {
        assert_eq!(passed_on(Some(0), None), 0);
        assert_eq!(passed_on(Some(3), None), 3);
        assert_eq!(passed_on(Some(255), None), 255);
        assert_eq!(passed_on(None, Some(9)), 137);
        // What no exit code can hold is not the child's verdict.
        assert_eq!(passed_on(Some(256), None), SETUP);
        assert_eq!(passed_on(Some(-1), None), SETUP);
        assert_eq!(passed_on(None, Some(200)), SETUP);
        assert_eq!(passed_on(None, None), SETUP);
    }

    #[test]
    fn errors_are_setup_and_interruptions_130() {
        assert_eq!(of_result(Ok(125)), 125);
        assert_eq!(of_result(Err(anyhow::anyhow!("no rootfs"))), SETUP);
        let e = anyhow::Error::new(crate::signals::Interrupted).context("booting");
        assert_eq!(of_result(Err(e)), INTERRUPTED);
    }
}
