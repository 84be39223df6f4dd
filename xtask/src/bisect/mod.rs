//! `cargo xtask bisect GOOD BAD`: git bisect in the bisect's own worktree, each step a check,
//! driven by a pure engine; the culprit confirmed and examined.

mod earlier;
mod engine;
mod evidence;
mod git;
mod metric;
mod mode;
mod posterior;
mod progress;
mod report;
mod request;
mod run;
pub mod simulate;
mod stats;
mod step;
mod suspect;
mod symptom;

pub use engine::StepVerdict;
pub use mode::{Asked, MetricAsked, DEFAULT_CONFIDENCE, DEFAULT_ENDPOINT_RUNS};
pub use request::{BisectRequest, StartRequest};
pub use run::{run, worktree_dir};
