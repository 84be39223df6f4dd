//! `bisect` of what does not fail every time, on a real kernel history (7 commits on
//! linux-source-6.1, `make-history --changes`): a check that fails at 9 runs in 10 once the
//! culprit (a commit that prints a marker at boot) is in, found flaky with no --flaky, named
//! with its confidence and confirmed; a step whose kernel warns in another place ("other",
//! a skip) that does not move the answer; a metric bisect that finds the commit adding
//! 200 ms at boot. Every boot is real; the check's runs are counted in a `--share` dir, so
//! which runs fail is the same every time (and so is the test's cost).

use std::path::Path;
use std::time::{Duration, Instant};
use tests::{code, fixture, run, stdout, Fixture};

/// The history: its commit ids, oldest first (0: a warning in kernel/fork.c, 2: its fix,
/// 3: the marker, 5: 200 ms at boot).
fn flaky_history(f: &Fixture) -> Vec<String> {
    let out = run(f.xtask().args([
        "make-history",
        "--branch",
        "flaky-e2e",
        "--changes",
        "other-warn,comment,other-fix,marker,comment,delay,comment",
    ]));
    assert_eq!(code(&out), 0);
    let ids: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(ids.len(), 7);
    ids
}

/// Seconds from the kernel line before the marker to the marker, by the kernel's clock.
const GAP_BEFORE_MARKER: &str = "dmesg | sed -n 's/^\\[ *\\([0-9.]*\\)\\] .*/\\1 &/p' | \
     awk '/xtask history: marker/ { print $1 - prev; exit } { prev = $1 }'";

const MARKER: usize = 3;
const DELAY: usize = 5;

/// The check: exit 1 when the kernel prints the marker, except at every 10th run (the runs
/// counted in the share dir).
const FLAKY_CHECK: &str = "n=$(cat /mnt/share/runs 2>/dev/null || echo 0); n=$((n+1)); \
     echo $n > /mnt/share/runs; sync; \
     dmesg | grep -q 'xtask history: marker' || exit 0; [ $((n % 10)) -eq 0 ]";

fn report_json(stderr: &str) -> serde_json::Value {
    let md = stderr
        .lines()
        .find_map(|l| l.strip_prefix("bisect: report saved in "))
        .expect("the report's path");
    let json = Path::new(md.trim()).with_file_name("bisect.json");
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

#[test]
fn a_flaky_check_is_found_named_with_its_confidence_and_an_other_failure_does_not_move_it() {
    let f = fixture();
    let ids = flaky_history(&f);
    let share = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let out = run(f
        .xtask()
        .args([
            "bisect",
            "base",
            &ids[4],
            "--endpoint-runs",
            "10",
            "--share",
        ])
        .arg(share.path())
        .args(["--", "sh", "-c", FLAKY_CHECK]));
    assert_eq!(code(&out), 0, "the flaky bisect failed");
    // 26 boots and one revert build: 8 minutes at a load of 13.
    assert!(
        t.elapsed() < Duration::from_secs(12 * 60),
        "{:?}",
        t.elapsed()
    );
    let report = stdout(&out);
    let first = report.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("# first bad commit {}", &ids[MARKER][..12])),
        "{report}"
    );
    assert!(first.contains(", confidence 0.9"), "{first}");
    assert!(first.ends_with("(confirmed)"), "{first}");
    assert!(
        report.contains("Mode: flaky: BAD was bad in 9 of 10 runs"),
        "{report}"
    );
    assert!(report.contains("Target symptom: exit 1"), "{report}");
    let json = report_json(&tests::stderr(&out));
    assert!(json["confidence"].as_f64().unwrap() >= 0.95, "{json:#}");
    // The step at commit 1 warns in kernel/fork.c: another failure than BAD's, skipped.
    let steps = json["steps"].as_array().unwrap();
    let other = steps
        .iter()
        .find(|s| s["commit"] == ids[1].as_str())
        .expect("commit 1 was a step");
    assert_eq!(other["term"], "skip", "{other:#}");
    assert!(
        other["reason"]
            .as_str()
            .unwrap()
            .starts_with("other: warning at kernel/fork.c"),
        "{other:#}"
    );
    // A good step ran until its clean runs were enough; the bad one stopped at its first bad.
    let good = steps
        .iter()
        .find(|s| s["commit"] == ids[MARKER - 1].as_str() && s["role"] == "step")
        .expect("the culprit's parent was a step");
    assert!(good["runs"].as_array().unwrap().len() >= 3, "{good:#}");
}

#[test]
fn a_metric_bisect_finds_the_commit_that_adds_200_ms_at_boot() {
    let f = fixture();
    let ids = flaky_history(&f);
    let t = Instant::now();
    // The kernel's own clock from the line before the marker (printed right after
    // do_basic_setup(), where the culprit adds 200 ms) to the marker: a gap that the host's
    // load does not widen, as it does the boot's whole time.
    let out = run(f.xtask().args([
        "bisect",
        &ids[DELAY - 1],
        &ids[DELAY + 1],
        "--no-confirm",
        "--metric",
        "--",
        "sh",
        "-c",
        GAP_BEFORE_MARKER,
    ]));
    assert_eq!(code(&out), 0, "the metric bisect failed");
    // 16 to 22 boots, two incremental builds.
    assert!(
        t.elapsed() < Duration::from_secs(10 * 60),
        "{:?}",
        t.elapsed()
    );
    let report = stdout(&out);
    assert!(
        report
            .lines()
            .next()
            .unwrap_or_default()
            .starts_with(&format!("# first bad commit {}", &ids[DELAY][..12])),
        "{report}"
    );
    assert!(report.contains("Mode: metric: bad above "), "{report}");
    assert!(report.contains("samples)"), "{report}");
    let json = report_json(&tests::stderr(&out));
    assert_eq!(
        json["steps"][1]["term"], "bad",
        "the BAD end is bad: {json:#}"
    );
    let medians: Vec<f64> = json["steps"]
        .as_array()
        .unwrap()
        .iter()
        .take(2)
        .map(|s| {
            let mut v: Vec<f64> = s["runs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["sample"].as_f64().unwrap())
                .collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        })
        .collect();
    assert!(
        medians[1] - medians[0] > 0.1,
        "the delay is not 200 ms: {medians:?}"
    );
}
