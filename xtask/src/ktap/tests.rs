//! The KTAP parser on recorded real logs (`test_data/` by scenario): each file's counts are
//! those the kernel's `kunit.py parse` printed for it.

use super::*;

fn statuses(r: &Results) -> Vec<(String, Status)> {
    r.all().iter().map(|t| (t.name.clone(), t.status)).collect()
}

#[test]
fn kselftests_runner_prints_one_document_per_target() {
    let r = parse(&recorded("kselftest/two_targets_pass.txt"));
    assert_eq!(r.version.as_deref(), Some("TAP version 13"));
    assert_eq!(r.plan, Some(2));
    assert_eq!(
        statuses(&r),
        [
            ("selftests: size: get_size".to_string(), Status::Pass),
            ("selftests: kcmp: kcmp_test".to_string(), Status::Pass),
        ]
    );
    assert_eq!(r.counts.line(), "Ran 2 tests: passed: 2");
    assert!(!r.truncated);
    // The runner's own line before each result is that test's log.
    assert_eq!(r.tests[0].log, ["# selftests: size: get_size"]);
    // No timestamps on a command's stdout.
    assert_eq!(r.tests[0].duration, None);
}

#[test]
fn one_kselftest_document_counts_as_kunit_py_counts() {
    let r = parse(&recorded("kselftest/proc_one_document.txt"));
    // kunit.py parse on this file: "Ran 21 tests: passed: 20, skipped: 1". (On the files with
    // a document per target it counts the first document only; we read them all.)
    assert_eq!(r.counts.line(), "Ran 21 tests: passed: 20, skipped: 1");
    assert_eq!(
        r.find("selftests: proc: proc-self-wchan").unwrap().status,
        Status::Skip
    );
}

#[test]
fn a_skip_directive_without_words_is_a_skip() {
    let r = parse(&recorded("kselftest/skips_without_modules.txt"));
    assert_eq!(
        r.counts,
        Counts {
            passed: 2,
            skipped: 2,
            ..Counts::default()
        }
    );
    let user = r.find("selftests: user: test_user_copy.sh").unwrap();
    assert_eq!(user.status, Status::Skip);
    assert_eq!(user.directive.as_deref(), Some(""));
}

#[test]
fn no_version_line_means_no_ktap() {
    let r = parse("[    0.000000] Linux version 6.1.192\n[    1.0] Run /sbin/init\n");
    assert!(!r.found());
    assert_eq!(r.counts.total(), 0);
    assert_eq!(r.counts.errors, 1);
}

#[test]
fn result_lines_are_read_as_tap_writes_them() {
    let kinds = |s: &str| classify(s);
    assert_eq!(
        kinds("    ok 1 example_simple_test"),
        Kind::Result {
            ok: true,
            number: 1,
            name: "example_simple_test".into(),
            directive: None
        }
    );
    assert_eq!(
        kinds("not ok 12 - a b # TODO not yet"),
        Kind::Result {
            ok: false,
            number: 12,
            name: "a b".into(),
            directive: Some(Directive::Todo("not yet".into()))
        }
    );
    assert_eq!(
        kinds("ok 2 example_skip_test # SKIP this test should be skipped"),
        Kind::Result {
            ok: true,
            number: 2,
            name: "example_skip_test".into(),
            directive: Some(Directive::Skip("this test should be skipped".into()))
        }
    );
    // A directive that is neither: kselftest's `# exit=1` leaves the status alone.
    assert_eq!(
        kinds("not ok 1 selftests: t: x # exit=1"),
        Kind::Result {
            ok: false,
            number: 1,
            name: "selftests: t: x".into(),
            directive: None
        }
    );
    assert_eq!(kinds("okay 1 x"), Kind::Other);
    assert_eq!(kinds("ok x"), Kind::Other);
    assert_eq!(kinds("    1..4"), Kind::Plan(4));
    assert_eq!(
        kinds("  # Subtest: example"),
        Kind::Subtest("example".into())
    );
    assert_eq!(
        kinds("KTAP version 1"),
        Kind::Version("KTAP version 1".into())
    );
}

#[test]
fn no_input_panics() {
    for text in [
        "",
        "KTAP version 1",
        "KTAP version 1\n1..",
        "KTAP version 1\n1..99999999999999999999999\n",
        "TAP version 13\nok 99999999999999999999999 x\n",
        "KTAP version 1\n# Subtest: a\n# Subtest: b\nok 1 b\n",
        "[ 1.0] KTAP version 1\n\u{fffd}ok\n",
        "\u{e9}KTAP version 1\nok 1 x\n",
    ] {
        let _ = parse(text);
    }
    // A plan no output meets is counted, its missing results listed up to a limit.
    let r = parse("KTAP version 1\n1..200000\nok 1 x\n");
    assert_eq!(r.counts.crashed, 199_999);
    assert!(r.tests.len() <= MAX_MISSING + 1);
    assert!(r.truncated);
}

#[test]
fn kunit_suites_nest_their_cases_and_a_parameterised_case_its_parameters() {
    let r = parse(&recorded("kunit/all_pass.log"));
    assert_eq!(r.version.as_deref(), Some("KTAP version 1"));
    assert_eq!(r.plan, Some(7));
    // kunit.py parse on this log: "Ran 27 tests: passed: 25, skipped: 2".
    assert_eq!(r.counts.line(), "Ran 27 tests: passed: 25, skipped: 2");
    let suites: Vec<&str> = r.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        suites,
        [
            "kunit_executor_test",
            "kunit-try-catch-test",
            "kunit-resource-test",
            "kunit-log-test",
            "kunit_status",
            "string-stream-test",
            "example"
        ]
    );
    let example = &r.tests[6];
    assert_eq!(example.status, Status::Pass);
    assert_eq!(example.tests.len(), 5);
    let params = r.find("example.example_params_test").unwrap();
    let values: Vec<&str> = params.tests.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        values,
        [
            "example.example_params_test.value 1",
            "example.example_params_test.value 2",
            "example.example_params_test.value 3"
        ]
    );
    let skip = r.find("example.example_skip_test").unwrap();
    assert_eq!(skip.status, Status::Skip);
    assert_eq!(
        skip.directive.as_deref(),
        Some("this test should be skipped")
    );
    // A case's diagnostics are its log; the console's timestamps give its duration.
    assert_eq!(
        skip.log,
        [
            "    # example_skip_test: initializing",
            "    # example_skip_test: You should not see a line below."
        ]
    );
    assert!(
        skip.duration.is_some_and(|d| d > 0.0 && d < 1.0),
        "{skip:?}"
    );
    assert!(!r.truncated && r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn a_failing_case_keeps_its_lines_and_a_kernel_message_among_them() {
    let r = parse(&recorded("kunit/one_case_fails.log"));
    // kunit.py parse on this log: "Ran 7 tests: passed: 4, failed: 1, skipped: 2".
    assert_eq!(
        r.counts.line(),
        "Ran 7 tests: passed: 4, failed: 1, skipped: 2"
    );
    let names: Vec<&str> = r.failures().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["example.example_simple_test"]);
    let failed = r.find("example.example_simple_test").unwrap();
    assert_eq!(failed.status, Status::Fail);
    assert!(failed
        .log
        .iter()
        .any(|l| l == "a kernel message among the results"));
    assert!(failed
        .log
        .iter()
        .any(|l| l.contains("EXPECTATION FAILED at lib/kunit/kunit-example-test.c:30")));
    // The suite's own result line says so too.
    assert_eq!(r.find("example").unwrap().status, Status::Fail);
}

#[test]
fn a_crash_mid_suite_leaves_every_missing_result_a_crash() {
    let r = parse(&recorded("kunit/crash_mid_suite.log"));
    // kunit.py parse on this log: "Ran 5 tests: crashed: 5, errors: 6".
    assert_eq!(r.counts.line(), "Ran 5 tests: crashed: 5, errors: 6");
    assert!(r.truncated);
    let example = r.find("example").unwrap();
    assert_eq!(example.status, Status::Crash);
    // The oops is the log of the test that was running: the first missing one.
    let first = &example.tests[0];
    assert_eq!(first.name, "example.<missing test 1>");
    assert!(first.log.iter().any(|l| l.starts_with("Oops: 0000 [#1]")));
    assert!(first
        .log
        .iter()
        .any(|l| l == "Kernel panic - not syncing: Fatal exception"));
}

#[test]
fn a_log_cut_mid_suite_is_read_to_its_end() {
    let r = parse(&recorded("kunit/truncated_by_a_hang.log"));
    // kunit.py parse on this log: "Ran 5 tests: crashed: 5, errors: 6".
    assert_eq!(r.counts.line(), "Ran 5 tests: crashed: 5, errors: 6");
    assert!(r.truncated);
    assert_eq!(
        r.tests[0].tests[0].log,
        ["    # example_simple_test: initializing"]
    );
}
