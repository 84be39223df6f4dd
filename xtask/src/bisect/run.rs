//! Driving `git bisect` in the toolkit's worktree: endpoints first, then one check per step,
//! every build through the cache. The state (git's own, plus our record of the steps and the
//! original command line) survives Ctrl-C, so `--resume` continues.

use super::engine::Terms;
use super::progress::{self, estimate_steps, Progress};
use super::report::{short, Outcome, Report, Step, StepVerdict};
use crate::build::{self, BuildOutcome};
use crate::cli::{BisectCmd, Cli, Command as CliCommand};
use crate::cmd::CommandExt;
use crate::ctx::Ctx;
use crate::signals;
use crate::units::human_secs;
use crate::vm::{self, verdict::Verdict, CheckRequest, KernelSource};
use anyhow::{bail, Context, Result};
use clap::Parser;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// What `--resume`, `--status` and `--reset` find: saved at the start of a bisect.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Saved {
    /// The original command line (after `cargo xtask`), re-parsed on resume.
    argv: Vec<String>,
    tree: PathBuf,
    worktree: PathBuf,
    run_dir: PathBuf,
    good: String,
    bad: String,
}

fn saved_path(ctx: &Ctx, tree: &Path) -> PathBuf {
    ctx.state
        .root
        .join("bisect")
        .join(format!("{}.json", build::source::path_tag(tree)))
}

fn git(dir: &Path) -> Command {
    crate::git::git(dir)
}

fn rev_parse(dir: &Path, rev: &str) -> Result<String> {
    git(dir)
        .args([
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ])
        .read_logged()
        .map_err(|_| anyhow::anyhow!("unknown revision {rev}: not in {}", dir.display()))
}

fn subject(dir: &Path, commit: &str) -> String {
    git(dir)
        .args(["log", "-1", "--format=%s", commit])
        .read_logged()
        .unwrap_or_default()
}

/// The check as one line, for the report.
fn describe_check(cmd: &BisectCmd) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &cmd.check.script {
        parts.push(format!("--script {}", s.display()));
    }
    for r in &cmd.check.bad_if_console {
        parts.push(format!("--bad-if-console {r:?}"));
    }
    if let Ok(t) = cmd.check.tests.resolve() {
        parts.extend(crate::kunit::run::describe(&t));
    }
    if !cmd.check.command.is_empty() {
        parts.push(format!("-- {}", cmd.check.command.join(" ")));
    }
    if parts.is_empty() {
        "clean boot (bad on any warning, oops, BUG or panic)".into()
    } else {
        parts.join(" ")
    }
}

fn sha256_file(p: &Path) -> Option<String> {
    let data = std::fs::read(p).ok()?;
    Some(format!("{:x}", Sha256::digest(&data)))
}

/// Builds and checks one commit. Setup problems are `Err` (the bisect stops, logs kept).
fn test_commit(
    ctx: &Ctx,
    req: &CheckRequest,
    tree: &Path,
    commit: &str,
    dir: PathBuf,
) -> Result<Step> {
    let sctx = ctx.for_step(dir.clone())?;
    // `--kunit`: the kernel its check boots, with the suites built in (kunit/run.rs).
    let req = &crate::kunit::run::with_kunit_config(&sctx, req)?;
    let KernelSource::Build { build: bopts, .. } = &req.kernel else {
        bail!("a bisect builds each step's commit: it cannot boot one image")
    };
    let t = Instant::now();
    let (build_secs, image) = match build::ensure_kernel(&sctx, Some(commit), bopts)? {
        BuildOutcome::Built(a) => (
            (!a.cache_hit).then(|| t.elapsed().as_secs_f64()),
            sha256_file(&a.image),
        ),
        BuildOutcome::Failed {
            summary, cached, ..
        } => {
            return Ok(Step {
                commit: commit.into(),
                subject: subject(tree, commit),
                verdict: StepVerdict::Skip,
                term: "skip".into(),
                reason: format!(
                    "does not build: {}",
                    summary.lines().next().unwrap_or_default()
                ),
                build_secs: (!cached).then(|| t.elapsed().as_secs_f64()),
                boot_secs: None,
                check_secs: None,
                image_sha256: None,
                run_dir: Some(dir.display().to_string()),
            })
        }
    };
    let out = vm::check(&sctx, &req.at(commit), true)?;
    let verdict = match out.verdict() {
        Verdict::Good => StepVerdict::Good,
        Verdict::Bad => StepVerdict::Bad,
        Verdict::Skip => StepVerdict::Skip,
        Verdict::Abort => bail!(
            "the check could not run at {}: {} (logs: {})",
            short(commit),
            out.judgement.reason,
            dir.display()
        ),
    };
    let boot: f64 = out
        .runs
        .iter()
        .filter_map(|r| r.timings.boot)
        .map(|d| d.as_secs_f64())
        .sum();
    let check: f64 = out
        .runs
        .iter()
        .filter_map(|r| r.timings.command)
        .map(|d| d.as_secs_f64())
        .sum();
    Ok(Step {
        commit: commit.into(),
        subject: subject(tree, commit),
        verdict,
        term: String::new(),
        reason: out.judgement.reason,
        build_secs,
        boot_secs: (boot > 0.0).then_some(boot),
        check_secs: (check > 0.0).then_some(check),
        image_sha256: image,
        run_dir: Some(dir.display().to_string()),
    })
}

fn print_step(n: usize, total: u32, left: Option<u32>, s: &Step) {
    let build = match s.build_secs {
        Some(b) => format!("build {}", human_secs(b)),
        None => "build cached".into(),
    };
    let boot = s
        .boot_secs
        .map(|b| format!(", boot {}", human_secs(b)))
        .unwrap_or_default();
    let left = left
        .map(|l| format!(", {l} revisions left"))
        .unwrap_or_default();
    eprintln!(
        "bisect: step {n} of ~{total}: {} {} → {} ({build}{boot}{left}): {}",
        short(&s.commit),
        s.subject,
        s.term,
        s.reason
    );
}

impl BisectCmd {
    pub fn run(self, ctx: &Ctx) -> Result<u8> {
        let tree = ctx.require_tree()?;
        let saved_at = saved_path(ctx, &tree);
        if self.status {
            return status(&saved_at);
        }
        if self.reset {
            return reset(&saved_at);
        }
        let (cmd, saved, argv) = if self.resume {
            let text = std::fs::read_to_string(&saved_at).with_context(|| {
                format!(
                    "no bisect to resume for {}: start one with `cargo xtask bisect GOOD BAD`",
                    tree.display()
                )
            })?;
            let saved: Saved = serde_json::from_str(&text)?;
            let cli = Cli::try_parse_from(
                std::iter::once("xtask".to_string()).chain(saved.argv.iter().cloned()),
            )?;
            let CliCommand::Bisect(cmd) = cli.command else {
                bail!("{} does not hold a bisect", saved_at.display())
            };
            eprintln!(
                "bisect: resuming {}..{} (logs in {})",
                short(&saved.good),
                short(&saved.bad),
                saved.run_dir.display()
            );
            (cmd, Some(saved), Vec::new())
        } else {
            (self, None, saved_argv()?)
        };
        // Every option the steps use is checked before the first side effect (a build, `git
        // bisect start`): a bad one must not leave the worktree bisecting.
        let req = cmd.request(&ctx.file)?;
        let result = cmd.drive(ctx, &req, &tree, &saved_at, saved, &argv);
        if let Err(e) = &result {
            if signals::is_interrupted(e) {
                eprintln!("bisect: interrupted; `cargo xtask bisect --resume` continues, `--reset` ends it");
            }
        }
        result
    }

    /// Runs the bisect; `argv` is the command line to save for `--resume` (unused when
    /// resuming `saved`).
    fn drive(
        &self,
        ctx: &Ctx,
        req: &CheckRequest,
        tree: &Path,
        saved_at: &Path,
        saved: Option<Saved>,
        argv: &[String],
    ) -> Result<u8> {
        let start = Instant::now();
        let terms = Terms {
            reverse: self.reverse,
        };
        let worktree = build::source::worktree_dir(&ctx.state, tree);
        let (saved, mut report) = match saved {
            Some(s) => {
                let report: Report =
                    serde_json::from_str(&std::fs::read_to_string(s.run_dir.join("bisect.json"))?)?;
                (s, report)
            }
            None => {
                let good = rev_parse(tree, self.good.as_deref().unwrap_or_default())?;
                let bad = rev_parse(tree, self.bad.as_deref().unwrap_or_default())?;
                if saved_at.exists() {
                    bail!("a bisect of {} is already under way: `cargo xtask bisect --resume` continues it, `--reset` ends it", tree.display());
                }
                let mut report = Report {
                    good: good.clone(),
                    bad: bad.clone(),
                    terms: (terms.old_term().into(), terms.new_term().into()),
                    check: describe_check(self),
                    steps: Vec::new(),
                    outcome: None,
                    warning: None,
                    total_secs: 0.0,
                };
                // Endpoints first: a wrong check is caught before hours are spent.
                for (which, commit, want_good) in
                    [("GOOD", &good, !self.reverse), ("BAD", &bad, self.reverse)]
                {
                    eprintln!(
                        "bisect: checking the {} endpoint {} {}",
                        which,
                        short(commit),
                        subject(tree, commit)
                    );
                    let s = test_commit(
                        ctx,
                        req,
                        tree,
                        commit,
                        ctx.run_dir
                            .join(format!("endpoint-{}", which.to_lowercase())),
                    )?;
                    let ok = match s.verdict {
                        StepVerdict::Good => want_good,
                        StepVerdict::Bad => !want_good,
                        StepVerdict::Skip => bail!(
                            "{which} {} cannot be tested: {} (logs: {})",
                            short(commit),
                            s.reason,
                            s.run_dir.unwrap_or_default()
                        ),
                    };
                    if !ok {
                        let is = if s.verdict == StepVerdict::Good {
                            "good"
                        } else {
                            "bad"
                        };
                        bail!("{which} {} is {is} under this check ({}): pick other endpoints or another check (logs: {})", short(commit), s.reason, s.run_dir.unwrap_or_default());
                    }
                    eprintln!(
                        "bisect: {which} {} is {} as expected",
                        short(commit),
                        if want_good { "good" } else { "bad" }
                    );
                }
                build::source::checkout_worktree(tree, &worktree, &bad, None)?;
                let mut args = vec![
                    "bisect".to_string(),
                    "start".into(),
                    format!("--term-old={}", terms.old_term()),
                    format!("--term-new={}", terms.new_term()),
                ];
                if self.reverse {
                    // With --reverse the old state is the bad one and the new state the good one.
                    args.extend([good.clone(), bad.clone()]);
                } else {
                    args.extend([bad.clone(), good.clone()]);
                }
                args.push("--".into());
                args.extend(self.paths.iter().cloned());
                let out = git(&worktree)
                    .args(&args)
                    .output_logged()
                    .context("git bisect start")?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let saved = Saved {
                    argv: argv.to_vec(),
                    tree: tree.to_path_buf(),
                    worktree: worktree.clone(),
                    run_dir: ctx.run_dir.clone(),
                    good,
                    bad,
                };
                if let Some(dir) = saved_at.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(saved_at, serde_json::to_string_pretty(&saved)?)?;
                std::fs::write(
                    ctx.run_dir.join("bisect.json"),
                    serde_json::to_string_pretty(&report)?,
                )?;
                if let Some(done) =
                    self.finish_if_done(&text, tree, &saved, saved_at, &mut report, start)?
                {
                    return Ok(done);
                }
                (saved, report)
            }
        };
        let commits = git(tree)
            .args([
                "rev-list",
                "--count",
                &format!("{}..{}", saved.good, saved.bad),
            ])
            .read_logged()?
            .parse()
            .unwrap_or(1);
        let total = estimate_steps(commits) + report.steps.len() as u32;
        let mut left = None;
        loop {
            signals::check()?;
            let commit = git(&saved.worktree)
                .args(["rev-parse", "HEAD"])
                .read_logged()?;
            let n = report.steps.len() + 1;
            let mut step = test_commit(
                ctx,
                req,
                tree,
                &commit,
                saved
                    .run_dir
                    .join(format!("step-{n:02}-{}", short(&commit))),
            )?;
            step.term = match step.verdict {
                StepVerdict::Good => terms.term(StepVerdict::Good).into(),
                StepVerdict::Bad => terms.term(StepVerdict::Bad).into(),
                StepVerdict::Skip => "skip".into(),
            };
            let term = step.term.clone();
            let out = git(&saved.worktree)
                .args(["bisect", &term])
                .output_unchecked()?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if let Some(Progress::Next { revisions_left, .. }) = progress::parse(&text) {
                left = Some(revisions_left);
            }
            print_step(n, total.max(n as u32), left, &step);
            report.steps.push(step);
            std::fs::write(
                saved.run_dir.join("bisect.json"),
                serde_json::to_string_pretty(&report)?,
            )?;
            if let Some(done) =
                self.finish_if_done(&text, tree, &saved, saved_at, &mut report, start)?
            {
                return Ok(done);
            }
            if !out.status.success() {
                bail!("git bisect {term} failed: {}", text.trim());
            }
        }
    }

    /// When git says the bisect is over: the report, saved and printed.
    fn finish_if_done(
        &self,
        git_out: &str,
        tree: &Path,
        saved: &Saved,
        saved_at: &Path,
        report: &mut Report,
        start: Instant,
    ) -> Result<Option<u8>> {
        let outcome = match progress::parse(git_out) {
            Some(Progress::Found { commit }) => {
                let show = git(tree)
                    .args(["show", "--stat", "--format=%s%n%an <%ae>", &commit])
                    .read_logged()?;
                let mut lines = show.lines();
                let subject = lines.next().unwrap_or_default().to_string();
                let author = lines.next().unwrap_or_default().to_string();
                let stat = lines.collect::<Vec<_>>().join("\n");
                report.warning = self.identical_parent_image(tree, &commit, report)?;
                Outcome::Found {
                    commit,
                    subject,
                    author,
                    stat,
                }
            }
            Some(Progress::OnlySkipped { candidates }) => Outcome::Range { candidates },
            _ => return Ok(None),
        };
        report.outcome = Some(outcome);
        report.total_secs = start.elapsed().as_secs_f64();
        std::fs::write(
            saved.run_dir.join("bisect.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        let md = report.markdown();
        std::fs::write(saved.run_dir.join("bisect.md"), &md)?;
        println!("{md}");
        eprintln!(
            "bisect: report saved in {}",
            saved.run_dir.join("bisect.md").display()
        );
        let _ = git(&saved.worktree)
            .args(["bisect", "reset"])
            .output_unchecked();
        let _ = std::fs::remove_file(saved_at);
        Ok(Some(0))
    }

    /// Compares the culprit's kernel image with its parent's (both through the cache).
    fn identical_parent_image(
        &self,
        tree: &Path,
        commit: &str,
        report: &Report,
    ) -> Result<Option<String>> {
        let parent = format!("{commit}^");
        let Ok(parent) = rev_parse(tree, &parent) else {
            return Ok(None);
        };
        let mine = report
            .steps
            .iter()
            .find(|s| s.commit == commit)
            .and_then(|s| s.image_sha256.clone());
        let theirs = report
            .steps
            .iter()
            .find(|s| s.commit == parent)
            .and_then(|s| s.image_sha256.clone());
        Ok(Report::identical_image_warning(
            mine.as_deref(),
            theirs.as_deref(),
        ))
    }
}

/// This command line (after `cargo xtask`), saved as text so that `--resume` can parse it
/// again: an argument that is not UTF-8 (a `--script` file name) is refused up front.
fn saved_argv() -> Result<Vec<String>> {
    std::env::args_os()
        .skip(1)
        .map(|a| {
            a.into_string().map_err(|a| {
                anyhow::anyhow!(
                    "the argument {:?} is not UTF-8, and a bisect saves its command line as text \
                     for --resume: rename the file or pass a path that is UTF-8",
                    a.to_string_lossy()
                )
            })
        })
        .collect()
}

fn status(saved_at: &Path) -> Result<u8> {
    let Ok(text) = std::fs::read_to_string(saved_at) else {
        println!("no bisect under way");
        return Ok(0);
    };
    let saved: Saved = serde_json::from_str(&text)?;
    let report: Option<Report> = std::fs::read_to_string(saved.run_dir.join("bisect.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    println!(
        "bisect {}..{} in {}",
        short(&saved.good),
        short(&saved.bad),
        saved.worktree.display()
    );
    if let Some(r) = report {
        println!("{}", r.markdown());
    }
    let next = git(&saved.worktree)
        .args(["log", "-1", "--format=%h %s"])
        .read_logged()
        .unwrap_or_default();
    println!("next to test: {next}");
    let log = git(&saved.worktree)
        .args(["bisect", "log"])
        .read_logged()
        .unwrap_or_default();
    println!("git bisect log:\n{log}");
    Ok(0)
}

fn reset(saved_at: &Path) -> Result<u8> {
    let Ok(text) = std::fs::read_to_string(saved_at) else {
        println!("no bisect under way");
        return Ok(0);
    };
    let saved: Saved = serde_json::from_str(&text)?;
    let _ = git(&saved.worktree)
        .args(["bisect", "reset"])
        .output_unchecked();
    std::fs::remove_file(saved_at)?;
    println!("bisect ended; its logs stay in {}", saved.run_dir.display());
    Ok(0)
}
