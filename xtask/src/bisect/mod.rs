//! `cargo xtask bisect GOOD BAD`: git bisect in a dedicated worktree, each step a check.

// Wired into the driver (run.rs) by the next commit.
#[allow(dead_code)]
mod engine;
mod progress;
mod report;
mod run;
#[allow(dead_code)]
mod suspect;
