//! `cargo xtask bench kunit`: `check --kunit example` against the kernel's own `kunit.py run`
//! of the same suite on the same tree, in the same run: kunit.py in UML (its default) and in
//! its QEMU mode (`--arch x86_64`, TCG here as ours is), both on the host as its users run
//! them. Each variant's first run (a cold build when its build dir is new, a cache hit or an
//! incremental build when not) and the median of `--runs` more with nothing changed.

use crate::cmd::{self, CommandExt};
use crate::ctx::Ctx;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The suite both run: the one the e2e tests compare counts on.
pub const SUITE: &str = "example";

/// A cold build of either, on a loaded 2-core host.
const LIMIT: Duration = Duration::from_secs(3 * 60 * 60);

/// One way to run the suite.
struct Variant {
    name: &'static str,
    cmd: Command,
}

/// One variant's times and the count line its own output ends with.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub first: Duration,
    pub again: Vec<Duration>,
    /// `Ran 4 tests: passed: 2, skipped: 2`, as each prints it: both counted the same suite.
    pub ran: String,
}

pub fn run(ctx: &Ctx, runs: u32) -> Result<u8> {
    let tree = ctx.require_tree()?;
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut rows = Vec::new();
    for v in variants(ctx, &tree, jobs)? {
        rows.push(measure(ctx, v, runs)?);
    }
    print!("{}", report(&rows));
    Ok(0)
}

/// Ours through this binary as a user runs it (same state dir and tree), and kunit.py's two
/// modes, each in a build dir of its own under the state dir, with the suite's `.kunitconfig`
/// (`lib/kunit`), which is where ours takes its options from too.
fn variants(ctx: &Ctx, tree: &Path, jobs: usize) -> Result<Vec<Variant>> {
    let mut ours = Command::new(std::env::current_exe().context("finding this binary")?);
    ours.arg("--state-dir")
        .arg(&ctx.state.root)
        .arg("--tree")
        .arg(tree)
        .args(["check", "--kunit", SUITE]);
    let kunit_py = |arch: Option<&str>| {
        let dir = ctx
            .state
            .build_dir(&format!("bench-kunit-py-{}", arch.unwrap_or("um")));
        let mut c = Command::new("python3");
        c.current_dir(tree)
            .arg("tools/testing/kunit/kunit.py")
            .arg("run")
            .arg(format!("--build_dir={}", dir.display()))
            .arg("--kunitconfig=lib/kunit")
            .arg(format!("--jobs={jobs}"));
        if let Some(a) = arch {
            c.arg(format!("--arch={a}"));
        }
        c.arg(SUITE);
        c
    };
    Ok(vec![
        Variant {
            name: "check --kunit example",
            cmd: ours,
        },
        Variant {
            name: "kunit.py run (UML)",
            cmd: kunit_py(None),
        },
        Variant {
            name: "kunit.py run --arch x86_64 (QEMU)",
            cmd: kunit_py(Some("x86_64")),
        },
    ])
}

/// Runs `v` once, then `runs` more times, each to its end; a run that fails ends the bench
/// with its output's tail (kept in the run dir).
fn measure(ctx: &Ctx, mut v: Variant, runs: u32) -> Result<Row> {
    let log = ctx
        .run_dir
        .join(format!("{}.log", v.name.replace([' ', '/'], "_")));
    let bar = crate::progress::Progress::start("bench kunit");
    let mut once = |i: u32| -> Result<(Duration, String)> {
        bar.set_message(&format!("{} ({i} of {})", v.name, runs + 1));
        let t = Instant::now();
        let out = v.cmd.output_within(LIMIT)?;
        let took = t.elapsed();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&log, &text).with_context(|| format!("writing {}", log.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}):\n{}\n(log: {})",
                v.name,
                cmd::describe(&out.status),
                cmd::tail(&text, 15),
                log.display()
            );
        }
        let ran = ran_line(&text).with_context(|| {
            format!(
                "{} printed no `Ran N tests` line ({})",
                v.name,
                log.display()
            )
        })?;
        Ok((took, ran))
    };
    let (first, ran) = once(1)?;
    let mut again = Vec::new();
    for i in 0..runs {
        again.push(once(i + 2)?.0);
    }
    bar.finish();
    Ok(Row {
        name: v.name.to_string(),
        first,
        again,
        ran,
    })
}

/// The `Ran N tests: passed: …` part of the last line that has one (kunit.py's summary, our
/// table's last line), without terminal colours.
pub fn ran_line(output: &str) -> Option<String> {
    let plain = strip_colours(output);
    plain.lines().rev().find_map(|l| {
        let at = l.find("Ran ")?;
        let rest = l[at..].trim_end();
        rest.contains(" tests").then(|| rest.to_string())
    })
}

/// Text without ANSI SGR sequences (`ESC [ … m`), which kunit.py prints on a terminal.
fn strip_colours(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn median(d: &[Duration]) -> Option<Duration> {
    let mut v = d.to_vec();
    v.sort();
    v.get(v.len() / 2).copied()
}

/// The table and each kunit.py mode's ratio to ours, with nothing changed.
pub fn report(rows: &[Row]) -> String {
    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    let mut s = format!(
        "{:<36} {:>8} {:>14}  {}\n",
        "variant", "first s", "again s (med)", "tests"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<36} {:>8} {:>14}  {}\n",
            r.name,
            secs(Some(r.first)),
            secs(median(&r.again)),
            r.ran
        ));
    }
    let Some((ours, theirs)) = rows.split_first() else {
        return s;
    };
    for t in theirs {
        if let (Some(a), Some(b)) = (median(&ours.again), median(&t.again)) {
            s.push_str(&format!(
                "ratio: {} took {:.2}x the time of {} (nothing changed)\n",
                t.name,
                b.as_secs_f64() / a.as_secs_f64().max(0.001),
                ours.name
            ));
        }
        if t.ran != ours.ran {
            s.push_str(&format!(
                "note: {} counted `{}`, {} `{}`\n",
                t.name, t.ran, ours.name, ours.ran
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_count_line_of_kunit_py_and_of_our_table() {
        let kunit_py = crate::test_data::recorded("bench/test_data", "kunit_py/parse_all_pass.txt");
        assert_eq!(
            ran_line(&kunit_py).as_deref(),
            Some("Ran 27 tests: passed: 25, skipped: 2")
        );
        // On a terminal kunit.py colours its lines.
        let coloured = "[16:00:54] Testing complete. \u{1b}[1;32mRan 4 tests: passed: 2, skipped: 2\u{1b}[0m\n";
        assert_eq!(
            ran_line(coloured).as_deref(),
            Some("Ran 4 tests: passed: 2, skipped: 2")
        );
        let ours = "  PASS  example   2 passed   0 failed   2 skipped  0.028s\n\
                    Ran 4 tests: passed: 2, skipped: 2\n\
                    verdict: good (exit 0): 4 tests: 2 passed, 2 skipped\n";
        assert_eq!(
            ran_line(ours).as_deref(),
            Some("Ran 4 tests: passed: 2, skipped: 2")
        );
        assert_eq!(ran_line("no tests here"), None);
    }

    #[test]
    fn the_report_gives_each_mode_against_ours() {
        let row = |name: &str, first: u64, again: &[u64], ran: &str| Row {
            name: name.into(),
            first: Duration::from_secs(first),
            again: again.iter().map(|s| Duration::from_secs(*s)).collect(),
            ran: ran.into(),
        };
        let ran = "Ran 4 tests: passed: 2, skipped: 2";
        let r = report(&[
            row("check --kunit example", 300, &[8, 6, 7], ran),
            row("kunit.py run (UML)", 400, &[14, 14, 20], ran),
            row(
                "kunit.py run --arch x86_64 (QEMU)",
                500,
                &[21],
                "Ran 3 tests: passed: 3",
            ),
        ]);
        assert!(
            r.contains("check --kunit example                   300.0            7.0  Ran 4 tests"),
            "{r}"
        );
        assert!(
            r.contains("ratio: kunit.py run (UML) took 2.00x the time of check --kunit example"),
            "{r}"
        );
        assert!(
            r.contains("ratio: kunit.py run --arch x86_64 (QEMU) took 3.00x"),
            "{r}"
        );
        assert!(
            r.contains("note: kunit.py run --arch x86_64 (QEMU) counted `Ran 3 tests"),
            "{r}"
        );
        assert!(!r.contains("note: kunit.py run (UML)"), "{r}");
    }
}
