//! `cargo xtask bisect GOOD BAD`: git bisect in the bisect's own worktree, each step a check,
//! driven by a pure engine; the culprit confirmed and examined.

mod engine;
mod git;
mod progress;
mod report;
mod run;
mod suspect;

pub use run::worktree_dir;
