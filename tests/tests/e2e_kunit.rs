//! `check --kunit`, `--ktap`, `--kselftest` and `--from-run` end to end: the example suite
//! built into the fixture tree's kernel (one KUnit config, shared by the tests here: the
//! passing working state and the one with a failing case are one file apart in one build
//! dir), booted in real QEMU, its counts compared with the kernel's own `kunit.py parse` on
//! the same console log; a bisect on one KUnit test's result, and a revision's own kselftest.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tests::builds::{commit_on, git, Restore};
use tests::{code, fixture, run, run_with_pid, run_within, stderr, stdout, Fixture};

/// A KUnit build (the first one of its config is near a full build) and a boot.
const BUILD_AND_BOOT: Duration = Duration::from_secs(30 * 60);
/// A boot of a kernel the cache holds.
const BOOT: Duration = Duration::from_secs(120);

const EXAMPLE: &str = "lib/kunit/kunit-example-test.c";

/// The example test with `example_simple_test` failing (1 + 1 is not 3).
fn failing_example(f: &Fixture) -> String {
    failing_example_of(&std::fs::read_to_string(f.tree.join(EXAMPLE)).unwrap())
}

fn failing_example_of(text: &str) -> String {
    replaced(
        text,
        "KUNIT_EXPECT_EQ(test, 1 + 1, 2);",
        "KUNIT_EXPECT_EQ(test, 1 + 1, 3);",
    )
}

/// `text` with the first `from` written as `to`; `from` must be there (the tree's sources
/// are what the tests were written against).
fn replaced(text: &str, from: &str, to: &str) -> String {
    let changed = text.replacen(from, to, 1);
    assert_ne!(
        changed, text,
        "{from:?} is no longer in the source: it changed upstream"
    );
    changed
}

/// `Ran 8 tests: passed: 6, skipped: 2` from kunit.py's output.
fn kunit_py_counts(tree: &Path, console: &Path) -> String {
    let out = run(Command::new("python3")
        .current_dir(tree)
        .arg("tools/testing/kunit/kunit.py")
        .arg("parse")
        .arg(console));
    let text = stdout(&out);
    let line = text
        .lines()
        .find_map(|l| {
            l.split_once("Testing complete. ")
                .map(|(_, r)| r.to_string())
        })
        .unwrap_or_else(|| panic!("no summary line from kunit.py: {text}"));
    // kunit.py colours its lines.
    line.replace("\u{1b}[0m", "")
        .split('\u{1b}')
        .next()
        .unwrap()
        .trim()
        .to_string()
}

/// Our counts in kunit.py's words.
fn our_counts(run: &Value) -> String {
    let c = &run["test_counts"];
    let n = |k: &str| c[k].as_u64().unwrap();
    let parts: Vec<String> = ["passed", "failed", "crashed", "skipped", "errors"]
        .iter()
        .filter(|k| n(k) > 0)
        .map(|k| format!("{k}: {}", n(k)))
        .collect();
    let total = n("passed") + n("failed") + n("crashed") + n("skipped");
    format!("Ran {total} tests: {}", parts.join(", "))
}

fn names(tests: &Value, out: &mut Vec<(String, String)>) {
    for t in tests.as_array().into_iter().flatten() {
        out.push((
            t["name"].as_str().unwrap().to_string(),
            t["status"].as_str().unwrap().to_string(),
        ));
        names(&t["tests"], out);
    }
}

#[test]
fn the_example_suite_passes_and_counts_as_kunit_py_counts() {
    let f = fixture();
    let start = Instant::now();
    let (out, _, pid) = run_with_pid(f.xtask().args(["check", "--kunit", "example", "--json"]));
    assert!(
        start.elapsed() < BUILD_AND_BOOT,
        "took {:?}",
        start.elapsed()
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(err.contains("passed, 2 skipped"), "{err}");
    let json: Value = serde_json::from_str(&stdout(&out)).expect("--json is JSON");
    let r = &json["runs"][0];
    let mut all = Vec::new();
    names(&r["tests"], &mut all);
    let status = |n: &str| all.iter().find(|(x, _)| x == n).map(|(_, s)| s.as_str());
    assert_eq!(status("example"), Some("pass"), "{all:?}");
    assert_eq!(status("example.example_simple_test"), Some("pass"));
    assert_eq!(status("example.example_skip_test"), Some("skip"));
    assert_eq!(status("example.example_mark_skipped_test"), Some("skip"));
    assert_eq!(
        status("example.example_all_expect_macros_test"),
        Some("pass")
    );
    // kunit.filter_glob ran the one suite, though the config builds kunit-test's too.
    assert!(all.iter().all(|(n, _)| n.starts_with("example")), "{all:?}");
    // The kernel's own parser counts the same on the same console log.
    let dir = tests::run_dir_of(&f, pid);
    let console = dir.join("console.log");
    assert_eq!(our_counts(r), kunit_py_counts(&f.tree, &console));

    // The saved run is judged again from its logs, with the same tests.
    let again = run(f
        .xtask()
        .arg("check")
        .arg("--from-run")
        .arg(&dir)
        .arg("--json"));
    assert_eq!(code(&again), 0, "{}", stderr(&again));
    let j: Value = serde_json::from_str(&stdout(&again)).unwrap();
    assert_eq!(j["runs"][0]["test_counts"], r["test_counts"]);
}

#[test]
fn one_failing_example_case_is_bad_and_named() {
    let f = fixture();
    let mut restore = Restore::new();
    restore.write(f.tree.join(EXAMPLE), failing_example(&f).as_bytes());
    let junit = tempfile::NamedTempFile::new().unwrap();
    let out = run_within(
        f.xtask()
            .args(["check", "--kunit", "example"])
            .arg("--junit")
            .arg(junit.path()),
        BUILD_AND_BOOT,
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(
            "verdict: bad (exit 1): 1 of 4 tests failed: example.example_simple_test (fail)"
        ),
        "{err}"
    );
    // The table shows the failing case with its own lines.
    assert!(err.contains("FAIL example.example_simple_test:"), "{err}");
    assert!(
        err.contains("EXPECTATION FAILED at lib/kunit/kunit-example-test.c"),
        "{err}"
    );
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(xml.contains("name=\"example_simple_test\""), "{xml}");

    // One test judged: another case of the same kernel passes, so the check is good.
    let out = run_within(
        f.xtask()
            .args(["check", "--kunit", "example", "--test", "example_skip_test"]),
        BOOT,
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("example.example_skip_test was skipped"));
}

/// `--ktap`: a command's stdout in TAP 13 (as kselftest's runner prints it), judged by its
/// tests; the fixture kernel, nothing built.
#[test]
fn a_commands_ktap_is_judged_by_its_tests() {
    let f = fixture();
    let script = "printf 'TAP version 13\\n1..3\\n# a diagnostic\\nok 1 selftests: t: one\\n\
                  not ok 2 selftests: t: two # exit=1\\nok 3 selftests: t: three # SKIP no\\n'";
    let out = run_within(
        f.xtask()
            .arg("check")
            .arg("--kernel")
            .arg(&f.kernel)
            .args(["--ktap", "--", "sh", "-c", script]),
        BOOT,
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("1 of 3 tests failed: selftests: t: two (fail)"),
        "{err}"
    );
    // The command's stdout is still the command's.
    assert!(stdout(&out).starts_with("TAP version 13\n"));
}

/// No KUnit in the kernel: `--kunit` with the plain fixture kernel is untestable (125).
#[test]
fn a_kernel_without_kunit_is_untestable() {
    let f = fixture();
    let out = run_within(
        f.xtask().arg("check").arg("--kernel").arg(&f.kernel).args([
            "--kunit",
            "example",
            "--boot-timeout",
            "60s",
        ]),
        BOOT,
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 125, "{err}");
    assert!(err.contains("no KTAP in the output"), "{err}");
}

/// `--kselftest size`: one small C selftest (static, freestanding, no config fragment of its
/// own, so the fixture kernel runs it as it is), built in the container with the headers,
/// shared into the guest, run by run_kselftest.sh; its result per test in JSON and JUnit.
#[test]
fn a_kselftest_target_gives_per_test_results() {
    let f = fixture();
    let junit = tempfile::NamedTempFile::new().unwrap();
    let out = run_within(
        f.xtask()
            .arg("check")
            .arg("--kernel")
            .arg(&f.kernel)
            .args(["--kselftest", "size", "--json", "--junit"])
            .arg(junit.path()),
        Duration::from_secs(15 * 60),
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(
        err.contains("verdict: good (exit 0): 1 tests: 1 passed"),
        "{err}"
    );
    // The build shows progress (stderr is a pipe here: plain lines), and says when done.
    assert!(
        err.contains("kselftest: building size of the working state"),
        "{err}"
    );
    assert!(
        err.contains("kselftest build...\n") && err.contains("kselftest build: done in"),
        "{err}"
    );
    let json: Value = serde_json::from_str(&stdout(&out)).expect("--json is JSON");
    let mut all = Vec::new();
    names(&json["runs"][0]["tests"], &mut all);
    assert_eq!(
        all,
        [("selftests: size: get_size".to_string(), "pass".to_string())]
    );
    let xml = std::fs::read_to_string(junit.path()).unwrap();
    assert!(
        xml.contains("<testsuite name=\"kselftest\" tests=\"1\" failures=\"0\""),
        "{xml}"
    );
}

/// A suite's option that olddefconfig drops (ext4's tests without ext4) fails the check
/// before any build, with the option explained and a fix that `check` takes: it has no
/// `--allow-dropped` (trim-config's), which the error named before.
#[test]
fn a_dropped_kunit_option_names_a_fix_that_check_takes() {
    let f = fixture();
    let kunitconfig = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        kunitconfig.path(),
        "CONFIG_KUNIT=y\nCONFIG_EXT4_KUNIT_TESTS=y\n",
    )
    .unwrap();
    let out = run_within(
        f.xtask()
            .arg("check")
            .arg("--kunitconfig")
            .arg(kunitconfig.path()),
        BOOT,
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 128, "{err}");
    assert!(err.contains("CONFIG_EXT4_KUNIT_TESTS: asked y"), "{err}");
    assert!(err.contains("depends on EXT4_FS"), "{err}");
    assert!(
        err.contains("1 asked-for option(s) did not keep their value"),
        "{err}"
    );
    assert!(err.contains("in a --kunitconfig FILE"), "{err}");
    assert!(!err.contains("--allow-dropped"), "{err}");
    // No build ran: the config was refused first.
    assert!(!err.contains("building"), "{err}");
}

/// `--kselftest sync`: the target's `config` fragment asks for CONFIG_SW_SYNC, which needs
/// DEBUG_FS and SYNC_FILE, off in the trimmed config: refused before any build, explained.
#[test]
fn a_kselftest_fragments_option_that_cannot_be_kept_is_explained() {
    let f = fixture();
    let out = run_within(f.xtask().args(["check", "--kselftest", "sync"]), BOOT);
    let err = stderr(&out);
    assert_eq!(code(&out), 128, "{err}");
    assert!(
        err.contains("kselftest: adding CONFIG_STAGING=y CONFIG_SW_SYNC=y"),
        "{err}"
    );
    assert!(err.contains("CONFIG_SW_SYNC: asked y"), "{err}");
    assert!(err.contains("tools/testing/selftests/sync/config"), "{err}");
    assert!(err.contains("depends on"), "{err}");
    assert!(
        err.contains("build on a --config PATH that has them"),
        "{err}"
    );
    assert!(!err.contains("building"), "{err}");
}

/// A bisect whose first build is the KUnit config's first in the toolkit's worktree (ccache
/// answers it with the objects of the KUnit builds above, which libtest runs first: it
/// orders by name), then one-file builds and a boot per step.
const BISECT: Duration = Duration::from_secs(20 * 60);
const SIZE_TEST: &str = "tools/testing/selftests/size/get_size.c";

/// The example test with another case, `example_all_expect_macros_test`, failing.
fn other_case_failing(text: &str) -> String {
    replaced(
        text,
        "KUNIT_EXPECT_TRUE(test, true);",
        "KUNIT_EXPECT_TRUE(test, false);",
    )
}

/// What a wrong endpoint verdict is read from: the endpoint's build log (whether the example
/// test was compiled), and the toolkit worktree's commit, state and example file.
fn build_evidence(f: &Fixture, err: &str, commit: &str) -> String {
    let mut out = String::new();
    if let Some(logs) = err
        .lines()
        .find_map(|l| l.split("(logs: ").nth(1))
        .map(|l| l.trim_end_matches(')'))
    {
        let log = std::fs::read_to_string(Path::new(logs).join("build.log")).unwrap_or_default();
        for l in log
            .lines()
            .filter(|l| l.starts_with("###") || l.contains("kunit-example"))
        {
            out += &format!("build.log: {l}\n");
        }
    }
    // Not `git`, which asserts: this runs while a failure is being reported.
    let ask = |dir: &Path, args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    out += &format!(
        "the example at {commit}: {}",
        ask(&f.tree, &["rev-parse", &format!("{commit}:{EXAMPLE}")])
    );
    for wt in std::fs::read_dir(f.state.join("worktree"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let wt = wt.path();
        let head = ask(&wt, &["rev-parse", "HEAD"]);
        let status = ask(&wt, &["status", "--short", "--untracked-files=no"]);
        let blob = ask(&wt, &["hash-object", EXAMPLE]);
        out += &format!(
            "worktree {}: HEAD {} example {} status [{}]\n",
            wt.display(),
            head.trim(),
            blob.trim(),
            status.trim()
        );
    }
    out
}

/// `bisect GOOD BAD --kunit example --test example_simple_test` over three commits of the
/// example test: another case breaks (not judged: that step is good), then the judged case
/// breaks (the culprit), then a comment. The steps build the KUnit kernel in the bisect's
/// worktree: the first one ccache answers, the rest one file each.
#[test]
fn with_one_kunit_test_a_bisect_names_the_commit_that_broke_it() {
    let f = fixture();
    let base = git(&f.tree, &["rev-parse", "HEAD"]).trim().to_string();
    let text = git(&f.tree, &["show", &format!("HEAD:{EXAMPLE}")]);
    let other = other_case_failing(&text);
    let c1 = commit_on(&f.tree, &base, EXAMPLE, &other, "kunit: another case fails");
    let c2 = commit_on(
        &f.tree,
        &c1,
        EXAMPLE,
        &failing_example_of(&other),
        "kunit: 1 + 1 is 3",
    );
    let c3 = commit_on(
        &f.tree,
        &c2,
        EXAMPLE,
        &format!("{}/* e2e: a comment */\n", failing_example_of(&other)),
        "kunit: a comment",
    );
    let out = run_within(
        f.xtask().args([
            "bisect",
            &base,
            &c3,
            "--no-confirm",
            "--kunit",
            "example",
            "--test",
            "example_simple_test",
        ]),
        BISECT,
    );
    let (report, err) = (stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "{err}\n{}", build_evidence(&f, &err, &c3));
    assert!(
        report.contains(&format!("# first bad commit {}", &c2[..12])),
        "{report}"
    );
    assert!(report.contains("kunit: 1 + 1 is 3"), "{report}");
    // The tests judge each run: the target is a failing test, not the VM that KUnit ends.
    assert!(
        report.contains("Target symptom: a judged test failing"),
        "{report}"
    );
    assert!(
        report.contains("--kunit example --test example_simple_test"),
        "{report}"
    );
    // The judged case decides each step: the one where only another case fails is good.
    assert!(
        err.lines().any(|l| l.contains(&c1[..12])
            && l.contains("→ good")
            && l.contains("example.example_simple_test passed")),
        "{err}"
    );
    assert!(err.contains("example.example_simple_test failed"), "{err}");
}

/// `check REV --kselftest size`: the selftest is built from REV (where it exits 1), not from
/// the checkout (where it passes, as `a_kselftest_target_gives_per_test_results` shows).
/// REV's kernel differs from HEAD's in tools/ only; it is built with the example suite's
/// KUnit options in the config, as the bisect above builds in the same worktree, so that it
/// is a one-file build there, not a full one (libtest runs this test after the bisect).
#[test]
fn with_one_revision_its_kselftest_is_built_from_it() {
    let f = fixture();
    let head = git(&f.tree, &["rev-parse", "HEAD"]).trim().to_string();
    let text = git(&f.tree, &["show", &format!("HEAD:{SIZE_TEST}")]);
    let failing = replaced(&text, "syscall(SYS_exit, 0);", "syscall(SYS_exit, 1);");
    let rev = commit_on(
        &f.tree,
        &head,
        SIZE_TEST,
        &failing,
        "selftests: size: exit 1",
    );
    let config = tempfile::NamedTempFile::new().unwrap();
    let trimmed = std::fs::read_to_string(f.state.join("config/trimmed.config")).unwrap();
    std::fs::write(
        config.path(),
        format!("{trimmed}CONFIG_KUNIT=y\nCONFIG_KUNIT_TEST=y\nCONFIG_KUNIT_EXAMPLE_TEST=y\n"),
    )
    .unwrap();
    let out = run_within(
        f.xtask()
            .args(["check", &rev, "--kselftest", "size", "--config"])
            .arg(config.path()),
        BUILD_AND_BOOT,
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!("kselftest: building size of {}", &rev[..12])),
        "{err}"
    );
    assert!(
        err.contains("1 of 1 tests failed: selftests: size: get_size (fail)"),
        "{err}"
    );
}
