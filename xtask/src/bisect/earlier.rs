//! The BAD end's runs kept from earlier bisects, one file per kernel and check: a later bisect
//! of the same kernel under the same check counts them toward the mode, so that it boots its
//! BAD end once, to see it still bad, instead of the five times that found the mode.

use super::step::RunRecord;
use crate::state::StateDir;
use crate::vm::CheckRequest;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// The most runs kept for one kernel and check: a flaky BAD end's runs end there too.
const KEPT: usize = super::mode::FLAKY_MAX_RUNS as usize;

/// Bump when what a kept run means changes: older files are then not read.
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Kept {
    version: u32,
    runs: Vec<RunRecord>,
}

/// Where the runs of one kernel under one check are kept.
pub struct EarlierRuns {
    path: PathBuf,
}

impl EarlierRuns {
    /// The place for `kernel` (its cache key) checked by `check` on `rootfs` (the generation's
    /// tree). None when the check reads files that may change between bisects without
    /// changing the request: a `--layer` or a `--share` dir.
    pub fn of(
        state: &StateDir,
        kernel: &str,
        check: &CheckRequest,
        rootfs: &str,
    ) -> Option<EarlierRuns> {
        if check.vm.layer.is_some() || check.vm.share.is_some() {
            return None;
        }
        let request = serde_json::to_string(check).ok()?;
        let digest = Sha256::digest(format!("{VERSION}\n{kernel}\n{rootfs}\n{request}"));
        Some(EarlierRuns {
            path: state.bad_end_runs().join(format!("{digest:x}.json")),
        })
    }

    /// The kept runs, oldest first; none when there is no file or it cannot be read.
    pub fn load(&self) -> Vec<RunRecord> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Kept>(&b).ok())
            .filter(|k| k.version == VERSION)
            .map(|k| k.runs)
            .unwrap_or_default()
    }

    /// Keeps `runs` (the earlier ones and this bisect's), the newest [`KEPT`] of them.
    pub fn save(&self, runs: &[RunRecord]) -> Result<()> {
        let runs = runs[runs.len().saturating_sub(KEPT)..].to_vec();
        let kept = Kept {
            version: VERSION,
            runs,
        };
        crate::atomic::write(&self.path, serde_json::to_vec(&kept)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::verdict::{BootEnd, Facts, Verdict};

    fn record(verdict: Verdict) -> RunRecord {
        RunRecord {
            verdict,
            facts: Facts {
                command: vec!["true".into()],
                boot: BootEnd::AgentUp,
                command_end: None,
                findings: vec![],
                from_userspace: vec![],
                vm_end: None,
                kernel_printed: true,
            },
            stdout: None,
            reason: "the kernel booted cleanly".into(),
            tests_judged: false,
        }
    }

    fn request() -> CheckRequest {
        serde_json::from_str(include_str!("test_data/check-request.json")).unwrap()
    }

    #[test]
    fn runs_are_kept_by_kernel_and_check_and_the_newest_stay() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().into());
        let req = request();
        let here = EarlierRuns::of(&state, "k1", &req, "/r1").unwrap();
        assert!(here.load().is_empty());
        let runs: Vec<_> = (0..KEPT + 2)
            .map(|i| record(if i == 0 { Verdict::Good } else { Verdict::Bad }))
            .collect();
        here.save(&runs).unwrap();
        let back = here.load();
        assert_eq!(back.len(), KEPT);
        assert!(back.iter().all(|r| r.verdict == Verdict::Bad));
        // Another kernel, another rootfs or another check has its own runs.
        assert!(EarlierRuns::of(&state, "k2", &req, "/r1")
            .unwrap()
            .load()
            .is_empty());
        assert!(EarlierRuns::of(&state, "k1", &req, "/r2")
            .unwrap()
            .load()
            .is_empty());
        let mut other = req.clone();
        other.vm.memory_mib += 1;
        assert!(EarlierRuns::of(&state, "k1", &other, "/r1")
            .unwrap()
            .load()
            .is_empty());
        // A file that is not ours is no runs, not an error.
        std::fs::write(&here.path, "not json").unwrap();
        assert!(here.load().is_empty());
    }

    #[test]
    fn a_check_that_reads_host_files_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().into());
        let mut req = request();
        req.vm.share = Some("/tmp/share".into());
        assert!(EarlierRuns::of(&state, "k1", &req, "/r1").is_none());
        let mut req = request();
        req.vm.layer = Some("/tmp/layer".into());
        assert!(EarlierRuns::of(&state, "k1", &req, "/r1").is_none());
    }
}
