//! The verdict from KTAP results: for every test, or for one (a bisect on one test's
//! result). Pure code, the function a bisect step calls.

use crate::ktap::{Results, Status, Test};
use crate::vm::verdict::{Failure, Judgement, Verdict};

/// How many failing names a reason lists before `and N more`.
const NAMED: usize = 3;

/// Judges `results`: bad when any test fails or crashes, good when all pass or skip,
/// untestable when there is no KTAP at all (KUnit never ran: the boot ended first, or the
/// kernel lacks it) or no test ran. With `only`, that one test decides ([`find`] says how a
/// name is looked up); the others are shown, not judged.
pub fn judge(results: &Results, only: Option<&str>) -> Judgement {
    // KTAP that says no test ran is a boot that never reached the tests: untestable.
    let j = |verdict, reason: String| match verdict {
        Verdict::Good => Judgement::good(reason),
        Verdict::Bad => Judgement::failed(Failure::Test, reason),
        _ => Judgement::failed(Failure::Boot, reason),
    };
    if !results.found() {
        return j(
            Verdict::Skip,
            "no KTAP in the output: the tests never ran (the boot ended before them, or the \
             kernel was built without them)"
                .into(),
        );
    }
    if let Some(name) = only {
        return match find(results, name) {
            Err(why) => j(Verdict::Skip, why),
            Ok(t) => match t.status {
                Status::Pass => j(Verdict::Good, format!("{} passed", t.name)),
                Status::Skip => j(Verdict::Good, format!("{} was skipped", t.name)),
                Status::Fail => j(Verdict::Bad, format!("{} failed", t.name)),
                Status::Crash => j(Verdict::Bad, format!("{} crashed", t.name)),
                Status::NoTests => j(Verdict::Skip, format!("{} ran no tests", t.name)),
            },
        };
    }
    let c = &results.counts;
    if c.total() == 0 {
        return j(
            Verdict::Skip,
            "KTAP ran no tests (does the filter match any suite?)".into(),
        );
    }
    let failures = results.failures();
    if !failures.is_empty() {
        let mut names: Vec<String> = failures
            .iter()
            .take(NAMED)
            .map(|t| format!("{} ({})", t.name, t.status.word()))
            .collect();
        if failures.len() > NAMED {
            names.push(format!("and {} more", failures.len() - NAMED));
        }
        // The first crash's own words: the kernel's report in its log, or a cut log.
        let crash = failures
            .iter()
            .find(|t| t.status == Status::Crash)
            .map(|t| match kernel_report(t) {
                Some(line) => format!("; the kernel: {line}"),
                None if results.truncated => "; the output ends there".to_string(),
                None => String::new(),
            })
            .unwrap_or_default();
        return j(
            Verdict::Bad,
            format!(
                "{} of {} tests failed: {}{crash}",
                failures.len(),
                c.total(),
                names.join(", ")
            ),
        );
    }
    let skipped = match c.skipped {
        0 => String::new(),
        n => format!(", {n} skipped"),
    };
    j(
        Verdict::Good,
        format!("{} tests: {} passed{skipped}", c.total(), c.passed),
    )
}

/// The first line of a kernel report (BUG, oops, panic, warning) in a test's log.
fn kernel_report(t: &Test) -> Option<String> {
    const STARTS: [&str; 5] = [
        "BUG:",
        "Oops:",
        "general protection fault",
        "Kernel panic",
        "WARNING:",
    ];
    t.log
        .iter()
        .map(|l| l.trim())
        .find(|l| STARTS.iter().any(|s| l.starts_with(s)))
        .map(str::to_string)
}

/// The test `name` names: its full name (`example.example_simple_test`), else the one test
/// whose name ends with `.name`. Err says why none (or more than one) is.
pub fn find<'a>(results: &'a Results, name: &str) -> Result<&'a Test, String> {
    if let Some(t) = results.find(name) {
        return Ok(t);
    }
    let suffix = format!(".{name}");
    let all: Vec<&Test> = results
        .all()
        .into_iter()
        .filter(|t| t.name.ends_with(&suffix))
        .collect();
    match all.as_slice() {
        [t] => Ok(t),
        [] => Err(format!("test {name} did not run")),
        more => Err(format!(
            "--test {name} names {} tests ({}): give the full name",
            more.len(),
            more.iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::{parse, recorded};

    #[test]
    fn no_ktap_is_untestable() {
        let j = judge(&parse("[    0.1] Linux version 6.1\n"), None);
        assert_eq!(j.verdict(), Verdict::Skip);
        assert!(j.reason.contains("never ran"), "{}", j.reason);
    }

    #[test]
    fn all_passing_or_skipped_is_good() {
        let r = parse(&recorded("kselftest/proc_one_document.txt"));
        let j = judge(&r, None);
        assert_eq!(j.verdict(), Verdict::Good, "{}", j.reason);
        assert_eq!(j.reason, "21 tests: 20 passed, 1 skipped");
        // One test decides, by its full name or its unique last part.
        assert_eq!(
            judge(&r, Some("selftests: proc: proc-self-wchan")).reason,
            "selftests: proc: proc-self-wchan was skipped"
        );
        let j = judge(&r, Some("no_such_test"));
        assert_eq!(j.verdict(), Verdict::Skip);
        assert!(j.reason.contains("did not run"), "{}", j.reason);
    }

    #[test]
    fn a_failing_case_is_bad_and_named() {
        let r = parse(&recorded("kunit/one_case_fails.log"));
        let j = judge(&r, None);
        assert_eq!(j.verdict(), Verdict::Bad);
        assert_eq!(
            j.reason,
            "1 of 7 tests failed: example.example_simple_test (fail)"
        );
        // One test decides: the failing one, or another that passed.
        assert_eq!(
            judge(&r, Some("example_simple_test")).verdict(),
            Verdict::Bad
        );
        assert_eq!(
            judge(&r, Some("example.example_all_expect_macros_test")).verdict(),
            Verdict::Good
        );
        // A suite is a test too: it failed with its case.
        assert_eq!(judge(&r, Some("example")).verdict(), Verdict::Bad);
    }

    #[test]
    fn a_crash_mid_suite_is_bad_with_the_kernels_words() {
        let j = judge(&parse(&recorded("kunit/crash_mid_suite.log")), None);
        assert_eq!(j.verdict(), Verdict::Bad);
        assert_eq!(
            j.reason,
            "5 of 5 tests failed: example.<missing test 1> (crash), example.<missing test 2> \
             (crash), example.<missing test 3> (crash), and 2 more; the kernel: BUG: kernel NULL \
             pointer dereference, address: 0000000000000000"
        );
    }

    #[test]
    fn a_hang_that_cut_the_log_is_bad() {
        let j = judge(&parse(&recorded("kunit/truncated_by_a_hang.log")), None);
        assert_eq!(j.verdict(), Verdict::Bad);
        assert!(
            j.reason.ends_with("; the output ends there"),
            "{}",
            j.reason
        );
    }
}
