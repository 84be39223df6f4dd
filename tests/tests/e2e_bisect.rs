//! `bisect` on a real kernel history: 16 commits on Debian's linux-source-6.1 that change
//! real files (comments, code), one of which adds a boot-time warning and one of which does
//! not build. The bisect must name the warning's commit, skip the broken one, find it again
//! with no make run at all, and refuse endpoints that do not fit the check.

use std::path::{Path, PathBuf};
use tests::{code, fixture, history, run, stderr, stdout, CULPRIT};

/// The newest bisect run dir in the state dir.
fn last_bisect_run(state: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("-bisect-")
        })
        .collect();
    dirs.sort();
    dirs.pop().expect("a bisect run dir")
}

/// How many `make` commands a run started, from its command log.
fn make_runs(run_dir: &Path) -> usize {
    let log = std::fs::read_to_string(run_dir.join("commands.log")).unwrap();
    log.lines()
        .filter(|l| l.starts_with("+ ") && (l.contains(" -- make ") || l.contains(" make ")))
        .count()
}

#[test]
fn bisect_finds_the_warning_skips_the_broken_commit_and_is_cached_the_second_time() {
    let f = fixture();
    let ids = history(&f);
    let culprit = &ids[CULPRIT];

    let out = run(f.xtask().args(["bisect", "base", "bisect-e2e"]));
    assert_eq!(code(&out), 0, "bisect failed");
    let report = stdout(&out);
    assert!(report.contains("## First bad commit"), "{report}");
    assert!(
        report.contains(culprit.as_str()),
        "bisect did not name {culprit}:\n{report}"
    );
    assert!(report.contains("init: warn at boot"), "{report}");
    assert!(
        report.contains("| skip |"),
        "the broken commit was not tested and skipped:\n{report}"
    );
    let first = last_bisect_run(&f.state);
    assert!(first.join("bisect.md").is_file() && first.join("bisect.json").is_file());

    let out = run(f.xtask().args(["bisect", "base", "bisect-e2e"]));
    assert_eq!(code(&out), 0, "second bisect failed");
    assert!(stdout(&out).contains(culprit.as_str()));
    let second = last_bisect_run(&f.state);
    assert_ne!(first, second);
    assert_eq!(
        make_runs(&second),
        0,
        "the second bisect ran make: see {}",
        second.join("commands.log").display()
    );
}

#[test]
fn endpoints_that_do_not_fit_the_check_are_caught() {
    let f = fixture();
    history(&f);
    // Swapped: the "good" endpoint warns at boot.
    let out = run(f.xtask().args(["bisect", "bisect-e2e", "base"]));
    assert!(code(&out) >= 128, "swapped endpoints were accepted");
    assert!(stderr(&out).contains("GOOD"), "{}", stderr(&out));
    let out = run(f.xtask().args(["bisect", "base", "no-such-rev"]));
    assert!(code(&out) >= 128);
    assert!(stderr(&out).contains("no-such-rev"), "{}", stderr(&out));
    let out = run(f.xtask().args(["bisect", "--status"]));
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("no bisect under way"),
        "a failed start left a bisect behind"
    );
}
