//! Reading KTAP (version 1, as Linux 6.1's KUnit prints it) and TAP (13, as kselftest's
//! runner prints it) out of a console log or a command's output: the tests as a tree, their
//! statuses and counts. Pure code; it counts as the kernel's `kunit.py parse` does.

use regex::Regex;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Where a check reads its KTAP.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The serial console (KUnit prints there).
    Console,
    /// The command's stdout (kselftest's runner, a user's harness).
    Stdout,
}

/// What became of one test.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// `# SKIP`, and `# TODO` (TAP: a TODO test is expected to fail; its result is no verdict).
    Skip,
    /// Its result line never came: the kernel crashed in it, or the output was cut.
    Crash,
    /// A test with subtests that ran none.
    NoTests,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Skip => "skip",
            Status::Crash => "crash",
            Status::NoTests => "no tests",
        }
    }
}

/// One test: a case, or a suite (or parameterised case) with its subtests.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Test {
    /// The full name, the parents' names first: `example.example_simple_test`.
    pub name: String,
    pub status: Status,
    /// The words after `# SKIP` or `# TODO`, when the result line has them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directive: Option<String>,
    /// Seconds from the line before the test to its result line, by the console's printk
    /// timestamps (6.1's KTAP prints no durations); None without timestamps.
    pub duration: Option<f64>,
    /// The test's own lines: its diagnostics and any kernel messages printed among them.
    pub log: Vec<String>,
    /// The subtests, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<Test>,
}

impl Test {
    /// The test and every subtest, depth first.
    pub fn walk(&self) -> Vec<&Test> {
        let mut all = vec![self];
        for t in &self.tests {
            all.extend(t.walk());
        }
        all
    }
}

/// Test cases by status, as kunit.py counts them: the leaves of the tree (each parameter of
/// a parameterised case is one), a missing result one crash each.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub crashed: usize,
    pub skipped: usize,
    /// Lines that break the format (a wrong test number, a missing result line).
    pub errors: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.passed + self.failed + self.crashed + self.skipped
    }

    fn add(&mut self, other: &Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.crashed += other.crashed;
        self.skipped += other.skipped;
        self.errors += other.errors;
    }

    fn count(&mut self, s: Status) {
        match s {
            Status::Pass => self.passed += 1,
            Status::Fail => self.failed += 1,
            Status::Skip => self.skipped += 1,
            Status::Crash => self.crashed += 1,
            Status::NoTests => {}
        }
    }

    /// `Ran 8 tests: passed: 6, skipped: 2`: the words of kunit.py's summary line, zeros
    /// left out as it leaves them out.
    pub fn line(&self) -> String {
        let parts: Vec<String> = [
            ("passed", self.passed),
            ("failed", self.failed),
            ("crashed", self.crashed),
            ("skipped", self.skipped),
            ("errors", self.errors),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(w, n)| format!("{w}: {n}"))
        .collect();
        format!("Ran {} tests: {}", self.total(), parts.join(", "))
    }
}

/// Everything read from one output.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Results {
    /// `KTAP version 1` or `TAP version 13`; None when the output has no KTAP at all.
    pub version: Option<String>,
    /// The top plan (`1..N`), when there was one.
    pub plan: Option<usize>,
    pub tests: Vec<Test>,
    pub counts: Counts,
    /// What broke the format, one line each (`kunit executor:` errors among them).
    pub errors: Vec<String>,
    /// The output ended before every planned result came (a crash, a cut log).
    pub truncated: bool,
}

impl Results {
    /// Whether any KTAP was found.
    pub fn found(&self) -> bool {
        self.version.is_some()
    }

    /// Every test, depth first.
    pub fn all(&self) -> Vec<&Test> {
        self.tests.iter().flat_map(Test::walk).collect()
    }

    /// The leaves that failed or crashed, in order.
    pub fn failures(&self) -> Vec<&Test> {
        self.all()
            .into_iter()
            .filter(|t| t.tests.is_empty() && matches!(t.status, Status::Fail | Status::Crash))
            .collect()
    }

    /// The test with this full name (`example.example_simple_test`).
    pub fn find(&self, name: &str) -> Option<&Test> {
        self.all().into_iter().find(|t| t.name == name)
    }
}

/// What one line is, once its prefix is gone.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// `KTAP version 1`, `TAP version 13`.
    Version(String),
    /// `# Subtest: name`.
    Subtest(String),
    /// `1..N`.
    Plan(usize),
    /// `ok 1 - name # SKIP why`.
    Result {
        ok: bool,
        number: usize,
        name: String,
        directive: Option<Directive>,
    },
    /// Anything else: a diagnostic (`# …`) or a kernel message.
    Other,
}

#[derive(Debug, Clone, PartialEq)]
enum Directive {
    Skip(String),
    Todo(String),
}

#[derive(Debug, Clone)]
struct Line {
    kind: Kind,
    text: String,
    /// The printk timestamp, in seconds.
    ts: Option<f64>,
}

fn version_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(K?TAP) version ([0-9]+)\s*$").expect("valid regex"))
}

fn timestamp_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    // `[    0.540000] `, with printk's caller id (`[    T1] `) when the kernel adds one.
    RE.get_or_init(|| {
        Regex::new(r"^\[\s*([0-9]+\.[0-9]+)\](?:\[\s*[TC][0-9]+\])? ?").expect("valid regex")
    })
}

/// Lines that end a KUnit run in the console, as kunit.py ends it, and our `kunit_shutdown`.
const END_MARKERS: [&str; 5] = [
    "List of all partitions:",
    "Kernel panic - not syncing: VFS:",
    "reboot: System halted",
    "reboot: Power down",
    "reboot: Restarting system",
];

fn classify(text: &str) -> Kind {
    let t = text.trim();
    if let Some(c) = version_re()
        .captures(t)
        .filter(|c| c.get(0).unwrap().start() == 0)
    {
        return Kind::Version(format!("{} version {}", &c[1], &c[2]));
    }
    if let Some(name) = t.strip_prefix("# Subtest:") {
        return Kind::Subtest(name.trim().to_string());
    }
    if let Some(n) = t.strip_prefix("1..") {
        let digits: String = n.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            return Kind::Plan(n);
        }
    }
    let (ok, rest) = match (t.strip_prefix("ok "), t.strip_prefix("not ok ")) {
        (Some(r), _) => (true, r),
        (_, Some(r)) => (false, r),
        _ => return Kind::Other,
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let Ok(number) = digits.parse() else {
        return Kind::Other;
    };
    let rest = &rest[digits.len()..];
    if !(rest.is_empty() || rest.starts_with(' ')) {
        return Kind::Other;
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix("- ").unwrap_or(rest);
    let (name, directive) = match rest.split_once(" # ").or_else(|| {
        // `ok 1 # SKIP why`: no name at all.
        rest.strip_prefix("# ").map(|d| ("", d))
    }) {
        Some((n, d)) => (n, directive_of(d)),
        None => (rest, None),
    };
    Kind::Result {
        ok,
        number,
        name: name.trim().to_string(),
        directive,
    }
}

fn directive_of(d: &str) -> Option<Directive> {
    let d = d.trim();
    let word = |w: &str| {
        d.get(..w.len())
            .filter(|head| head.eq_ignore_ascii_case(w))
            .map(|_| d[w.len()..].trim().to_string())
    };
    word("SKIP")
        .map(Directive::Skip)
        .or_else(|| word("TODO").map(Directive::Todo))
}

/// How the start line's prefix is taken off every line.
enum Prefix {
    /// The console's printk timestamp, line by line (kernel messages have theirs).
    Timestamp,
    /// So many bytes, as the start line had before `KTAP version`.
    Bytes(usize),
}

/// The KTAP lines of `output`, from the first version line to an end marker or the end.
/// `kunit executor:` errors before the start are returned apart.
fn extract(output: &str) -> (Vec<Line>, Vec<String>) {
    let mut lines = Vec::new();
    let mut executor = Vec::new();
    let mut prefix = None;
    for raw in output.lines() {
        let raw = raw.trim_end_matches(['\r', '\n']);
        let (ts, after_ts) = match timestamp_re().captures(raw) {
            Some(c) => (c[1].parse().ok(), &raw[c.get(0).unwrap().end()..]),
            None => (None, raw),
        };
        let text = match &prefix {
            None => {
                let Some(m) = version_re().find(raw) else {
                    if let Some(i) = raw.find("kunit executor:") {
                        executor.push(raw[i..].to_string());
                    }
                    continue;
                };
                let p = if ts.is_some() {
                    Prefix::Timestamp
                } else {
                    Prefix::Bytes(m.start())
                };
                let text = match p {
                    Prefix::Timestamp => after_ts.to_string(),
                    Prefix::Bytes(n) => raw[n..].to_string(),
                };
                prefix = Some(p);
                text
            }
            Some(Prefix::Timestamp) => after_ts.to_string(),
            Some(Prefix::Bytes(n)) => raw.get(*n..).unwrap_or(raw.trim_start()).to_string(),
        };
        if END_MARKERS.iter().any(|m| text.contains(m)) {
            break;
        }
        lines.push(Line {
            kind: classify(&text),
            text,
            ts,
        });
    }
    (lines, executor)
}

/// Reads the KTAP in `output` (a console log or a command's stdout). Documents one after
/// another (kselftest's runner prints one per target) are read as one run.
pub fn parse(output: &str) -> Results {
    let (lines, executor) = extract(output);
    let mut p = Parser {
        lines,
        pos: 0,
        last_ts: None,
        error_count: executor.len(),
        errors: executor,
        truncated: false,
    };
    let mut r = Results::default();
    while let Some(version) = p.next_document() {
        let plan = match p.peek() {
            Some(Kind::Plan(n)) => {
                let n = *n;
                p.next();
                Some(n)
            }
            _ => None,
        };
        let mut counts = Counts::default();
        let (tests, _rest) = p.children("", None, plan, &mut counts);
        if tests.is_empty() {
            p.error("no tests ran".into());
        }
        r.version.get_or_insert(version);
        r.plan = match (r.plan, plan) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        r.counts.add(&counts);
        r.tests.extend(tests);
    }
    if r.version.is_none() {
        p.error("no KTAP or TAP version line: no tests ran".into());
    }
    r.counts.errors += p.error_count;
    r.errors = p.errors;
    r.truncated = p.truncated;
    r
}

struct Parser {
    lines: Vec<Line>,
    pos: usize,
    last_ts: Option<f64>,
    errors: Vec<String>,
    /// Every error, listed or not.
    error_count: usize,
    truncated: bool,
}

/// The most missing results listed as tests, and errors listed as lines (a plan of millions
/// is counted, not listed).
const MAX_MISSING: usize = 1000;

impl Parser {
    fn error(&mut self, line: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_MISSING {
            self.errors.push(line);
        }
    }

    /// Moves to the next document's version line, past it; its words.
    fn next_document(&mut self) -> Option<String> {
        loop {
            match self.next()?.kind {
                Kind::Version(v) => return Some(v),
                _ => continue,
            }
        }
    }

    fn peek(&self) -> Option<&Kind> {
        self.lines.get(self.pos).map(|l| &l.kind)
    }

    fn next(&mut self) -> Option<Line> {
        let l = self.lines.get(self.pos).cloned()?;
        self.pos += 1;
        if l.ts.is_some() {
            self.last_ts = l.ts;
        }
        Some(l)
    }

    /// The lines up to the next result, subtest or version line.
    fn diagnostics(&mut self) -> Vec<String> {
        let mut log = Vec::new();
        while let Some(Kind::Other | Kind::Plan(_)) = self.peek() {
            log.push(self.next().expect("peeked").text);
        }
        log
    }

    /// The subtests of a test named `own` (empty for the top level) at `path`, up to its plan
    /// or, without one, up to its own result line. A result that never came is one crash.
    /// Returns the subtests and the lines after the last one.
    fn children(
        &mut self,
        path: &str,
        own: Option<&str>,
        plan: Option<usize>,
        counts: &mut Counts,
    ) -> (Vec<Test>, Vec<String>) {
        let mut tests = Vec::new();
        let mut number = 1;
        loop {
            if plan.is_some_and(|n| number > n) {
                return (tests, Vec::new());
            }
            let start = self.last_ts;
            let log = self.diagnostics();
            let closes_parent = matches!(
                (self.peek(), own),
                (Some(Kind::Result { name, .. }), Some(own)) if name == own
            );
            if self.peek().is_none() || closes_parent {
                let Some(n) = plan.filter(|n| number <= *n) else {
                    return (tests, log);
                };
                // The rest never came: each missing result is a crash.
                self.truncated |= self.peek().is_none();
                let mut log = Some(log);
                let where_ = if path.is_empty() { "the run" } else { path };
                for k in number..=n {
                    self.error(format!("{where_}: subtest {k} of {n} has no result"));
                    counts.count(Status::Crash);
                    if k - number >= MAX_MISSING {
                        // A plan no output could meet: counted, not listed.
                        continue;
                    }
                    tests.push(Test {
                        name: join(path, &format!("<missing test {k}>")),
                        status: Status::Crash,
                        directive: None,
                        duration: None,
                        log: log.take().unwrap_or_default(),
                        tests: Vec::new(),
                    });
                }
                return (tests, Vec::new());
            }
            let mut own_counts = Counts::default();
            let t = self.test(path, number, start, log, &mut own_counts);
            counts.add(&own_counts);
            tests.push(t);
            number += 1;
        }
    }

    /// One test at the cursor: a result line, or a version/subtest header with subtests
    /// and the result line that closes them.
    fn test(
        &mut self,
        path: &str,
        number: usize,
        start: Option<f64>,
        mut log: Vec<String>,
        counts: &mut Counts,
    ) -> Test {
        let mut name = String::new();
        let mut parent = false;
        if let Some(Kind::Version(_)) = self.peek() {
            self.next();
            parent = true;
        }
        if let Some(Kind::Subtest(n)) = self.peek().cloned() {
            self.next();
            name = n;
            parent = true;
        }
        let mut subtests = Vec::new();
        let mut children = Counts::default();
        if parent {
            let plan = match self.peek() {
                Some(Kind::Plan(n)) => {
                    let n = *n;
                    self.next();
                    Some(n)
                }
                _ => None,
            };
            let full = join(path, &name);
            let (tests, rest) = self.children(&full, Some(&name), plan, &mut children);
            subtests = tests;
            log.extend(rest);
            log.extend(self.diagnostics());
        }
        let result = match self.peek().cloned() {
            Some(Kind::Result {
                ok,
                number: n,
                name: result_name,
                directive,
            }) if !parent || name.is_empty() || result_name == name => {
                let line = self.next().expect("peeked");
                if n != number {
                    self.error(format!(
                        "expected test number {number}, found {n}: {}",
                        line.text.trim()
                    ));
                }
                if name.is_empty() {
                    name = result_name;
                }
                let (status, directive) = match directive {
                    Some(Directive::Skip(d)) => (Status::Skip, Some(d)),
                    Some(Directive::Todo(d)) => (Status::Skip, Some(format!("TODO {d}"))),
                    None if ok => (Status::Pass, None),
                    None => (Status::Fail, None),
                };
                Some((status, directive, line.ts))
            }
            _ => {
                self.error(format!("{}: missing its result line", join(path, &name)));
                self.truncated |= self.peek().is_none();
                None
            }
        };
        let (mut status, directive, end) = result.unwrap_or((Status::Crash, None, None));
        if parent && subtests.is_empty() && matches!(status, Status::Pass | Status::Crash) {
            status = Status::NoTests;
            self.error(format!("{}: no subtests ran", join(path, &name)));
        }
        if children.total() == 0 {
            counts.count(status);
        } else if children.crashed > 0 {
            status = Status::Crash;
        }
        counts.add(&children);
        Test {
            name: join(path, &name),
            status,
            directive,
            duration: match (start, end) {
                (Some(s), Some(e)) if e >= s => Some(((e - s) * 1e6).round() / 1e6),
                _ => None,
            },
            log,
            tests: subtests,
        }
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

/// A recording under `src/ktap/test_data/`, without its header line.
#[cfg(test)]
pub fn recorded(path: &str) -> String {
    crate::test_data::recorded("ktap/test_data", path)
}

#[cfg(test)]
mod tests;
