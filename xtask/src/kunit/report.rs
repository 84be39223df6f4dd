//! Test results for people and CI systems: the short terminal table (failing tests with
//! their own log lines) and JUnit XML. Pure code.

use crate::ktap::{Results, Status, Test};

/// How many of a failing test's log lines the table shows (its last ones: the failure).
const LOG_LINES: usize = 8;

/// One line per top-level test (a suite), then each failing or crashed test with the last
/// lines of its log, then kunit.py's count line.
pub fn table(r: &Results) -> String {
    let mut out = String::new();
    for t in &r.tests {
        let c = leaves(t);
        let (pass, fail, skip) = (
            c.iter().filter(|l| l.status == Status::Pass).count(),
            c.iter()
                .filter(|l| matches!(l.status, Status::Fail | Status::Crash))
                .count(),
            c.iter().filter(|l| l.status == Status::Skip).count(),
        );
        out += &format!(
            "  {:<5} {:<32} {:>3} passed {:>3} failed {:>3} skipped{}\n",
            word(t.status),
            t.name,
            pass,
            fail,
            skip,
            t.duration.map_or(String::new(), |d| format!("  {d:.3}s"))
        );
    }
    for f in r.failures() {
        out += &format!("{} {}:\n", word(f.status), f.name);
        let log: Vec<&String> = f.log.iter().filter(|l| !l.trim().is_empty()).collect();
        for l in &log[log.len().saturating_sub(LOG_LINES)..] {
            out += &format!("    {}\n", l.trim());
        }
    }
    out += &r.counts.line();
    out.push('\n');
    out
}

fn word(s: Status) -> &'static str {
    match s {
        Status::Pass => "PASS",
        Status::Fail => "FAIL",
        Status::Skip => "SKIP",
        Status::Crash => "CRASH",
        Status::NoTests => "NONE",
    }
}

/// The test's leaves (itself when it has no subtests).
fn leaves(t: &Test) -> Vec<&Test> {
    t.walk()
        .into_iter()
        .filter(|x| x.tests.is_empty())
        .collect()
}

fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // XML 1.0 allows no other control characters.
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => o.push('?'),
            c => o.push(c),
        }
    }
    o
}

/// JUnit XML: one `<testsuite>` per top-level test (a KUnit suite; `name` holds the
/// top-level leaves, as kselftest's are), one `<testcase>` per leaf, named by its path.
pub fn junit(r: &Results, name: &str) -> String {
    let mut suites: Vec<(String, Vec<&Test>)> = Vec::new();
    let loose: Vec<&Test> = r.tests.iter().filter(|t| t.tests.is_empty()).collect();
    if !loose.is_empty() {
        suites.push((name.to_string(), loose));
    }
    for t in r.tests.iter().filter(|t| !t.tests.is_empty()) {
        suites.push((t.name.clone(), leaves(t)));
    }
    let c = &r.counts;
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"{}\" tests=\"{}\" \
         failures=\"{}\" errors=\"{}\" skipped=\"{}\">\n",
        xml(name),
        c.total(),
        c.failed,
        c.crashed,
        c.skipped
    );
    for (suite, cases) in suites {
        let n = |s: Status| cases.iter().filter(|t| t.status == s).count();
        out += &format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\">\n",
            xml(&suite),
            cases.len(),
            n(Status::Fail),
            n(Status::Crash),
            n(Status::Skip)
        );
        for t in cases {
            let (class, case) = match t.name.rsplit_once('.') {
                Some((c, n)) if t.name != suite || !c.is_empty() => (c, n),
                _ => (suite.as_str(), t.name.as_str()),
            };
            let time = t
                .duration
                .map_or(String::new(), |d| format!(" time=\"{d:.6}\""));
            out += &format!(
                "    <testcase classname=\"{}\" name=\"{}\"{time}>\n",
                xml(class),
                xml(case)
            );
            let log = xml(&t.log.join("\n"));
            match t.status {
                Status::Fail => {
                    out += &format!("      <failure message=\"failed\">{log}</failure>\n")
                }
                Status::Crash => {
                    out += &format!("      <error message=\"crashed\">{log}</error>\n")
                }
                Status::Skip | Status::NoTests => {
                    out += &format!(
                        "      <skipped message=\"{}\"/>\n",
                        xml(t.directive.as_deref().unwrap_or("skipped"))
                    )
                }
                Status::Pass => {}
            }
            if !t.log.is_empty() && t.status == Status::Pass {
                out += &format!("      <system-out>{log}</system-out>\n");
            }
            out += "    </testcase>\n";
        }
        out += "  </testsuite>\n";
    }
    out += "</testsuites>\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ktap::{parse, recorded};

    #[test]
    fn the_table_has_a_line_per_top_level_test() {
        let t = table(&parse(&recorded("kselftest/skips_without_modules.txt")));
        assert!(
            t.contains("SKIP  selftests: user: test_user_copy.sh"),
            "{t}"
        );
        assert!(t.contains("PASS  selftests: size: get_size"), "{t}");
        assert!(
            t.trim_end().ends_with("Ran 4 tests: passed: 2, skipped: 2"),
            "{t}"
        );
    }

    #[test]
    fn junit_has_one_case_per_leaf() {
        let r = parse(&recorded("kselftest/proc_one_document.txt"));
        let x = junit(&r, "kselftest");
        assert_eq!(x.matches("<testcase ").count(), 21);
        assert_eq!(x.matches("<skipped ").count(), 1);
        assert!(
            x.contains("<testsuite name=\"kselftest\" tests=\"21\" failures=\"0\""),
            "{x}"
        );
        assert!(x.contains("name=\"selftests: proc: read\""), "{x}");
    }

    #[test]
    fn the_table_shows_the_failing_case_with_its_own_lines() {
        let t = table(&parse(&recorded("kunit/one_case_fails.log")));
        assert!(t.contains("FAIL  example "), "{t}");
        assert!(t.contains("FAIL example.example_simple_test:\n"), "{t}");
        assert!(
            t.contains("    # example_simple_test: EXPECTATION FAILED at lib/kunit/kunit-example-test.c:30\n"),
            "{t}"
        );
        assert!(
            t.trim_end()
                .ends_with("Ran 7 tests: passed: 4, failed: 1, skipped: 2"),
            "{t}"
        );
    }

    #[test]
    fn junit_names_a_parameter_by_its_case() {
        let r = parse(&recorded("kunit/all_pass.log"));
        let x = junit(&r, "kunit");
        assert_eq!(x.matches("<testcase ").count(), 27);
        assert_eq!(x.matches("<testsuite ").count(), 7);
        assert!(
            x.contains("classname=\"example.example_params_test\" name=\"value 2\""),
            "{x}"
        );
        assert!(
            x.contains("classname=\"example\" name=\"example_simple_test\""),
            "{x}"
        );
    }
}
