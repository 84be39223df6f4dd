//! What `cargo xtask bisect` was asked to do, resolved once from the command line: the plain
//! data its driver (run.rs) takes.

use super::mode::Asked;
use crate::vm::CheckRequest;

/// One bisect invocation: look, end, continue, or start.
#[derive(Debug)]
pub enum BisectRequest {
    /// `--status`: where the bisect stands.
    Status,
    /// `--reset`: end the bisect and clean up its state.
    Reset,
    /// `--resume`: continue with the inputs its start froze (no option of this line is read).
    Resume,
    /// `GOOD BAD`: a new bisect.
    Start(Box<StartRequest>),
}

/// A new bisect's inputs, each resolved and checked before its first side effect.
#[derive(Debug)]
pub struct StartRequest {
    /// The known good revision, as given (the tree resolves it at the start).
    pub good: String,
    /// The known bad revision, as given.
    pub bad: String,
    /// `--reverse`: find the first good commit (a fix) instead of the first bad one.
    pub reverse: bool,
    /// `--paths`: only commits that touch these are considered.
    pub paths: Vec<String>,
    /// Not `--no-confirm`: the culprit is tested again, with its parent and its revert.
    pub confirm: bool,
    /// The check every step runs, with the working state as its revision: each step sets its
    /// commit ([`CheckRequest::at`]).
    pub check: CheckRequest,
    /// That check as one line, for the report.
    pub check_line: String,
    /// How steps are judged: `--repeat`, `--flaky`, `--metric` and their options.
    pub judging: Asked,
    /// The command line after `cargo xtask`, as text, for the report.
    pub argv: Vec<String>,
}
