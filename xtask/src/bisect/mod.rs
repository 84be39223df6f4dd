//! `cargo xtask bisect GOOD BAD`: git bisect in a dedicated worktree, each step a check.

mod progress;
mod report;
mod run;
