//! Judging one kernel, which `check` and every bisect step do: [`run`] builds it if needed
//! (through the cache), boots it up to `--repeat` times and judges each run with the tests
//! asked for (kunit/); and how its outcome is shown (the verdict line, `--json`).

use crate::ctx::Ctx;
use crate::vm::run::{Event, Report};
use crate::vm::spec::{Console, RunPaths};
use crate::vm::verdict::{Failure, Judgement, Verdict};
use crate::vm::{self, kernel_for, prepare, CheckOutcome, CheckRequest};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;

/// Judges one kernel (a revision, or `--kernel`): build if needed, then up to `--repeat`
/// checks, stopping at the first bad one. Prints progress on stderr unless `quiet`.
pub fn run(ctx: &Ctx, req: &CheckRequest, quiet: bool) -> Result<CheckOutcome> {
    let repeat = req.repeat as usize;
    run_until(ctx, req, quiet, &mut |runs: &[Report]| {
        runs.len() < repeat && runs.last().map(|r| r.judgement.verdict()) != Some(Verdict::Bad)
    })
}

/// As [`run`], with runs until `more` (given the runs so far) says no: a bisect's judge
/// decides how many (flaky checks, metric samples). Each run has its own dir unless
/// `--repeat` is 1 and `more` stops after one.
pub fn run_until(
    ctx: &Ctx,
    req: &CheckRequest,
    quiet: bool,
    more: &mut dyn FnMut(&[Report]) -> bool,
) -> Result<CheckOutcome> {
    // `--kunit`, `--kselftest`: the suites' config and KUnit's command line, the selftests
    // built and shared (kunit/run.rs).
    let req = &crate::kunit::run::prepare(ctx, req)?;
    let (opts, plan, repeat) = (&req.vm, &req.plan, req.repeat);
    let tools = crate::backend::find_tools(opts)?;
    let kernel = match kernel_for(ctx, &req.kernel)? {
        Ok(k) => k,
        Err(j) => {
            // The run's result.json says which stage failed, as a boot's does.
            let saved = serde_json::json!({ "judgement": &j });
            let path = RunPaths::new(&ctx.run_dir).result();
            std::fs::write(&path, format!("{saved:#}\n"))
                .with_context(|| format!("writing {}", path.display()))?;
            return Ok(CheckOutcome {
                judgement: j,
                runs: vec![],
            });
        }
    };
    let (spec, tools) = prepare(ctx, opts, tools, &kernel, Console::Log)?;
    let mut runs: Vec<Report> = Vec::new();
    let mut i = 0;
    while more(&runs) {
        i += 1;
        let dir = if repeat == 1 && i == 1 {
            ctx.run_dir.clone()
        } else {
            let d = ctx.run_dir.join(format!("run-{i}"));
            std::fs::create_dir_all(&d)?;
            d
        };
        if !quiet {
            let nth = if repeat > 1 {
                format!(" ({i}/{repeat})")
            } else {
                String::new()
            };
            eprintln!(
                "booting {}{nth}: {:?}, {} init, {} vCPUs, {} MiB",
                spec.kernel.display(),
                spec.accel,
                spec.init.name(),
                spec.cpus,
                spec.memory_mib
            );
        }
        let mut print = |e: Event| {
            if quiet {
            } else if let Some(line) = crate::kunit::run::event_line(&e, &req.tests) {
                eprintln!("{line}")
            } else {
                print_event(&e)
            }
        };
        let r = vm::run::check(&spec, &RunPaths::new(&dir), &tools, plan, &mut print)?;
        let r = crate::kunit::run::judge_run(r, &req.tests)?;
        runs.push(r);
    }
    let verdicts: Vec<Verdict> = runs.iter().map(|r| r.judgement.verdict()).collect();
    let verdict = Verdict::combine(&verdicts);
    let judgement = runs
        .iter()
        .find(|r| r.judgement.verdict() == verdict)
        .map(|r| r.judgement.clone())
        .context("no run was asked for")?;
    Ok(CheckOutcome { judgement, runs })
}

pub fn print_event(e: &Event) {
    match e {
        Event::Started => {}
        Event::AgentUp(d) => eprintln!("guest agent up after {:.2}s", d.as_secs_f64()),
        Event::BootFailed(b, d) => eprintln!("boot failed after {:.2}s: {b:?}", d.as_secs_f64()),
        Event::CommandDone(end, d) => {
            eprintln!("command ended after {:.2}s: {end:?}", d.as_secs_f64())
        }
        Event::ShutDown(how, d) => eprintln!("shut down in {:.2}s ({how})", d.as_secs_f64()),
        Event::Retrying(what) => eprintln!("not the kernel's fault: {what}; running it once more"),
    }
}

/// With `-v`: the run's boot timeline, a step a line.
pub fn print_timeline(r: &crate::vm::run::Report) {
    if let (true, Some(t)) = (crate::cmd::verbose(), &r.timeline) {
        eprintln!("timeline (seconds since the run started, and since the step before):");
        for line in t.lines() {
            eprintln!("  {line}");
        }
    }
}

/// The command's output, the timings and the verdict line, as a person reads them.
pub fn print_outcome(o: &CheckOutcome, print_output: bool) {
    if let Some(last) = o.runs.last() {
        if let (Some(e), true) = (&last.exec, print_output) {
            let _ = std::io::stdout().write_all(&e.stdout);
            let _ = std::io::stderr().write_all(&e.stderr);
            let _ = std::io::stdout().flush();
        }
        if last.out_truncated {
            eprintln!("note: the guest agent truncated the command's output");
        }
        eprintln!("timings: {}", last.timings.line());
        print_timeline(last);
    }
    eprintln!(
        "verdict: {} (exit {}): {}",
        o.verdict().word(),
        o.verdict().exit_code(),
        o.judgement.reason
    );
    if o.verdict() != Verdict::Good {
        if let Some(last) = o.runs.last() {
            eprintln!("console log: {}", last.console_log.display());
        }
    }
}

/// The judgement saved in a run dir whose kernel did not build (so nothing booted).
pub fn unbuilt(dir: &std::path::Path) -> Option<Judgement> {
    #[derive(Deserialize)]
    struct Saved {
        judgement: Judgement,
        facts: Option<serde::de::IgnoredAny>,
    }
    let text = std::fs::read_to_string(RunPaths::new(dir).result()).ok()?;
    let saved: Saved = serde_json::from_str(&text).ok()?;
    let unbuilt = matches!(
        saved.judgement.failure,
        Some(Failure::Config { .. } | Failure::Build { .. })
    );
    (unbuilt && saved.facts.is_none()).then_some(saved.judgement)
}

/// `--json`: the outcome, with each run's output as text.
#[derive(Serialize)]
struct JsonOutcome<'a> {
    verdict: Verdict,
    exit_code: u8,
    /// The stage that failed; null when good.
    failure: &'a Option<Failure>,
    reason: &'a str,
    /// The check's run dir: its command log, build log, and each run's logs.
    run_dir: &'a std::path::Path,
    runs: Vec<JsonRun<'a>>,
}

#[derive(Serialize)]
struct JsonRun<'a> {
    #[serde(flatten)]
    report: &'a Report,
    stdout: Option<String>,
    stderr: Option<String>,
}

pub fn json(o: &CheckOutcome, run_dir: &std::path::Path) -> Result<String> {
    let runs = o
        .runs
        .iter()
        .map(|r| JsonRun {
            report: r,
            stdout: r
                .exec
                .as_ref()
                .map(|e| String::from_utf8_lossy(&e.stdout).into()),
            stderr: r
                .exec
                .as_ref()
                .map(|e| String::from_utf8_lossy(&e.stderr).into()),
        })
        .collect();
    Ok(serde_json::to_string_pretty(&JsonOutcome {
        verdict: o.verdict(),
        exit_code: o.verdict().exit_code(),
        failure: &o.judgement.failure,
        reason: &o.judgement.reason,
        run_dir,
        runs,
    })?)
}
