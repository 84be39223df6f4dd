//! `cargo xtask bisect`: the driver. It freezes the inputs, checks the endpoints, then feeds
//! the engine git's answers from the bisect's own, locked worktree and the steps' verdicts,
//! marks every tested commit by id, and at the end confirms and examines the culprit. Its
//! state (git's, the engine's, the report) survives Ctrl-C, so `--resume` continues.

use super::earlier::EarlierRuns;
use super::engine::{self, End, Engine, Next, Outcome, Role, Terms};
use super::evidence::{Evidence, Range};
use super::git::{self, Bisect};
use super::progress::estimate_steps;
use super::report::{short, Culprit, Inputs, Report, Step, StepVerdict};
use super::request::{BisectRequest, StartRequest};
use super::step::{Judging, Rule};
use super::symptom::Symptom;
use super::{mode, suspect};
use crate::build::{self, BuildOutcome};
use crate::ctx::Ctx;
use crate::lock::{self, FileLock};
use crate::units::human_secs;
use crate::vm::{verdict::Verdict, CheckRequest, KernelSource};
use crate::{rootfs, signals};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The saved state's format; `--resume` refuses another.
const SAVED_VERSION: u32 = 2;

/// Where a tree's bisect keeps its things in the state dir.
struct Place {
    /// The saved state: present from the start to the end (or `--reset`).
    saved: PathBuf,
    /// Held by the process driving the bisect (start, resume, reset).
    lock: PathBuf,
    /// The bisect's own git worktree: no `build REV` or `check REV` moves its HEAD.
    worktree: PathBuf,
    /// The config's copy, taken at the start, that every step builds with.
    config: PathBuf,
}

/// The bisect's own worktree of `tree`.
pub fn worktree_dir(state: &crate::state::StateDir, tree: &Path) -> PathBuf {
    Place::of(state, tree).worktree
}

impl Place {
    fn of(state: &crate::state::StateDir, tree: &Path) -> Place {
        let dir = state
            .root
            .join("bisect")
            .join(build::source::path_tag(tree));
        Place {
            saved: dir.join("state.json"),
            lock: dir.with_extension("lock"),
            worktree: dir.join("worktree"),
            config: dir.join("config"),
        }
    }
}

/// What `--resume`, `--status` and `--reset` find.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Saved {
    version: u32,
    run_dir: PathBuf,
    /// The check every step runs, resolved once at the start (its build takes the frozen
    /// config); `--resume` takes it from here, not from the command line.
    request: CheckRequest,
    engine: Engine<String>,
    /// How steps are judged, decided at the endpoints (bisect/mode.rs).
    #[serde(default)]
    judging: Judging,
}

fn read_saved(place: &Place) -> Result<Option<(Saved, Report)>> {
    let Ok(text) = std::fs::read_to_string(&place.saved) else {
        return Ok(None);
    };
    let saved: Saved = serde_json::from_str(&text)
        .ok()
        .filter(|s: &Saved| s.version == SAVED_VERSION)
        .ok_or_else(|| {
            anyhow!(
                "{} is not a bisect state this version reads: `cargo xtask bisect --reset` ends it",
                place.saved.display()
            )
        })?;
    let report_path = saved.run_dir.join("bisect.json");
    let report: Report = serde_json::from_str(
        &std::fs::read_to_string(&report_path)
            .with_context(|| format!("reading {}", report_path.display()))?,
    )
    .with_context(|| format!("reading {}", report_path.display()))?;
    Ok(Some((saved, report)))
}

/// Writes the state and the report (each by rename, so a kill leaves the old or the new).
fn save(place: &Place, saved: &Saved, report: &Report) -> Result<()> {
    let report_path = saved.run_dir.join("bisect.json");
    crate::atomic::write(&report_path, serde_json::to_string_pretty(report)?)?;
    crate::atomic::write(&place.saved, serde_json::to_string_pretty(saved)?)
}

/// `cargo xtask bisect` as `req` asks: its status, its end, its resumption or its start.
pub fn run(ctx: &Ctx, req: BisectRequest) -> Result<u8> {
    let tree = ctx.require_tree()?;
    let place = Place::of(&ctx.state, &tree);
    // Looking takes no lock: a running bisect can be watched.
    if let BisectRequest::Status = req {
        return status(&tree, &place);
    }
    let Some(_lock) = FileLock::try_acquire(&place.lock)? else {
        bail!(
            "a bisect of {} is running ({}): wait for it, or end it",
            tree.display(),
            lock::holder(&place.lock)
        );
    };
    let result = match req {
        BisectRequest::Reset => return reset(&tree, &place),
        BisectRequest::Resume => resume(ctx, &tree, &place),
        BisectRequest::Start(request) => start(*request, ctx, &tree, &place),
        BisectRequest::Status => status(&tree, &place),
    };
    if let Err(e) = &result {
        if signals::is_interrupted(e) && place.saved.exists() {
            eprintln!(
                "bisect: interrupted; `cargo xtask bisect --resume` continues, `--reset` ends it"
            );
        } else if signals::is_interrupted(e) {
            // Interrupted at the endpoints: no state is saved before the first step.
            eprintln!(
                "bisect: interrupted before its first step: nothing to resume, start it again"
            );
        }
    }
    result
}

/// A new bisect: the inputs frozen, the endpoints checked, then [`drive`].
fn start(request: StartRequest, ctx: &Ctx, tree: &Path, place: &Place) -> Result<u8> {
    let start = Instant::now();
    // Every option the steps use was resolved before the first side effect.
    let mut req = request.check;
    let good = git::rev_parse(tree, &request.good)?;
    let bad = git::rev_parse(tree, &request.bad)?;
    if place.saved.exists() {
        bail!("a bisect of {} is already under way: `cargo xtask bisect --resume` continues it, `--reset` ends it", tree.display());
    }
    // The inputs, frozen: the config's content, the rootfs generation, the check.
    let KernelSource::Build { build: opts, .. } = &mut req.kernel else {
        bail!("a bisect builds each step's commit: it cannot boot one image")
    };
    let config_from = crate::build::input_config(ctx, opts)?;
    let config = std::fs::read(&config_from)
        .with_context(|| format!("reading {}", config_from.display()))?;
    std::fs::create_dir_all(place.config.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&place.config, &config)?;
    opts.config = Some(place.config.clone());
    let rootfs = rootfs::generation::in_use(&ctx.state)?.tree;
    let inputs = Inputs {
        good: good.clone(),
        bad: bad.clone(),
        reverse: request.reverse,
        paths: request.paths.clone(),
        check: request.check_line,
        config: place.config.display().to_string(),
        config_sha256: format!("{:x}", Sha256::digest(&config)),
        rootfs: rootfs.display().to_string(),
        confirm: request.confirm,
        argv: request.argv,
    };
    let mut report = Report::new(inputs);
    let terms = Terms {
        reverse: request.reverse,
    };
    let mut engine = Engine::new(terms, good.clone(), bad.clone());
    let asked = request.judging;
    let mut judging = Judging {
        any_failure: asked.any_failure,
        mode: mode::Mode::Deterministic {
            repeat: asked.repeat.unwrap_or(1),
        },
        target: None,
    };
    let good_steps = mode::expected_good_steps(git::count(tree, &good, &bad));
    let mut samples = Vec::new();
    // Endpoints first: a wrong check is caught before hours are spent. The end in the bad
    // state decides how steps are judged (flaky or not) and what symptom counts.
    for (which, end, commit) in [("GOOD", End::Old, &good), ("BAD", End::New, &bad)] {
        eprintln!(
            "bisect: checking the {which} end {} {}",
            short(commit),
            git::subject(tree, commit)
        );
        let dir = ctx
            .run_dir
            .join(format!("endpoint-{}", which.to_lowercase()));
        let is_bad_end = (end == End::New) == (terms.new_verdict() == StepVerdict::Bad);
        let rule = match (&asked.metric, is_bad_end) {
            (Some(_), _) => Rule::MetricEnd,
            (None, true) => Rule::BadEnd(&asked),
            (None, false) => Rule::Step,
        };
        // The BAD end's runs are kept for later bisects of the same kernel and check, where
        // they decide the mode: not under `--repeat`, which fixes it (BAD's first bad run ends).
        let keep_on = (matches!(rule, Rule::BadEnd(_)) && asked.repeat.is_none())
            .then_some(report.inputs.rootfs.as_str());
        let (mut step, seen) = test_commit(
            ctx,
            &req,
            tree,
            commit,
            Role::Endpoint(end),
            dir,
            &judging,
            rule,
            keep_on,
        )?;
        if let (Some(m), false) = (&asked.metric, step.verdict == StepVerdict::Skip) {
            // Both ends sampled, the threshold between them decides their verdicts.
            samples.push(
                step.runs
                    .iter()
                    .filter_map(|r| r.sample)
                    .collect::<Vec<_>>(),
            );
            step.verdict = terms.old_verdict();
            if end == End::New {
                judging.mode = mode::metric_from_ends(m, &samples[0], &samples[1])
                    .map_err(|e| anyhow!("bisect: {e}: the metric does not tell GOOD from BAD"))?;
                step.verdict = terms.new_verdict();
            }
            step.term = super::report::verdict_word(step.verdict).into();
        } else if is_bad_end && step.verdict == StepVerdict::Bad {
            let verdicts: Vec<StepVerdict> = step.runs.iter().map(|r| r.verdict).collect();
            judging.mode = mode::from_bad_end(&asked, &verdicts, good_steps)
                .map_err(|e| anyhow!("bisect: {e}"))?;
            judging.target = seen;
        }
        if let Err(is) = engine.endpoint(end, step.verdict) {
            bail!(
                "{which} {} is {is} ({}): pick other endpoints or another check (logs: {})",
                short(commit),
                step.reason,
                step.run_dir
            );
        }
        eprintln!(
            "bisect: {which} {} is {} as expected ({})",
            short(commit),
            step.term,
            step.reason
        );
        let earlier = step.runs.iter().filter(|r| r.earlier).count();
        if earlier > 0 {
            eprintln!(
                "bisect: {which} was booted {} time(s) now; {earlier} earlier run(s) of the same \
                 kernel under the same check count too",
                step.runs.len() - earlier
            );
        }
        report.steps.push(step);
    }
    report.mode = judging.mode.describe();
    report.target = judging.target.as_ref().map(Symptom::describe);
    eprintln!("bisect: {}", report.mode);
    if let Some(t) = &report.target {
        eprintln!("bisect: a run is bad when it shows {t}; another failure is a skip");
    }
    git::ensure_worktree(tree, &place.worktree, &bad)?;
    if git::worktree_lock(tree, &place.worktree).is_some() {
        // No saved state (checked above): the bisect that locked it is gone.
        eprintln!(
            "bisect: {} was locked by a bisect whose state is gone: this one takes it over",
            place.worktree.display()
        );
    }
    // Locked until the end or --reset, across an interrupt and its --resume.
    git::lock_worktree(tree, &place.worktree)?;
    let bisect = Bisect {
        wt: place.worktree.clone(),
    };
    // A bisect left in the worktree by a state that is gone (removed by hand).
    let answer = bisect.reset().and_then(|()| {
        bisect.start(
            (terms.old_term(), terms.new_term()),
            &good,
            &bad,
            &request.paths,
        )
    });
    // Until the state is saved (in `drive`), a failure leaves no bisect: nor its lock.
    let answer = answer.inspect_err(|_| {
        let _ = git::unlock_worktree(tree, &place.worktree);
    })?;
    let saved = Saved {
        version: SAVED_VERSION,
        run_dir: ctx.run_dir.clone(),
        request: req,
        engine,
        judging,
    };
    drive(ctx, tree, place, &bisect, saved, report, answer, start)
}

/// Continues the bisect saved in `place`, with the inputs it froze.
fn resume(ctx: &Ctx, tree: &Path, place: &Place) -> Result<u8> {
    let start = Instant::now();
    let Some((mut saved, report)) = read_saved(place)? else {
        bail!(
            "no bisect to resume for {}: start one with `cargo xtask bisect GOOD BAD`",
            tree.display()
        );
    };
    // The same inputs as at the start, or no resume.
    let rootfs = rootfs::generation::in_use(&ctx.state)?.tree;
    if rootfs.display().to_string() != report.inputs.rootfs {
        bail!(
            "the rootfs is now {}, not {} that this bisect started with (setup-rootfs ran): \
             `cargo xtask bisect --reset` and start again",
            rootfs.display(),
            report.inputs.rootfs
        );
    }
    let config = std::fs::read(&place.config).unwrap_or_default();
    if format!("{:x}", Sha256::digest(&config)) != report.inputs.config_sha256 {
        bail!(
            "the bisect's copy of its config {} is gone or changed: `cargo xtask bisect --reset` and start again",
            place.config.display()
        );
    }
    eprintln!(
        "bisect: resuming {}..{} (logs in {})",
        short(&report.inputs.good),
        short(&report.inputs.bad),
        saved.run_dir.display()
    );
    if git::worktree_lock(tree, &place.worktree).is_none() {
        eprintln!(
            "bisect: {} was unlocked while the bisect was interrupted: locking it again",
            place.worktree.display()
        );
        git::lock_worktree(tree, &place.worktree)?;
    }
    let bisect = Bisect {
        wt: place.worktree.clone(),
    };
    let answer = if saved.engine.outcome.is_some() {
        None
    } else {
        // git's bisect state is the truth: BISECT_HEAD goes back where it says, if it moved.
        let (expected, head) = bisect.expected_and_head()?;
        if head != expected {
            eprintln!(
                "bisect: BISECT_HEAD of {} is at {}, not at {} where the bisect left it: restoring it",
                place.worktree.display(),
                short(&head),
                short(&expected)
            );
            bisect.restore(&expected)?;
        }
        Some(super::progress::Progress::Next {
            candidate: expected,
            revisions_left: 0,
            steps_left: 0,
        })
    };
    if answer.is_none() {
        let outcome = saved.engine.outcome.clone().expect("checked");
        return finish(ctx, tree, place, &bisect, saved, report, outcome, start);
    }
    saved.engine.next = None;
    drive(ctx, tree, place, &bisect, saved, report, answer, start)
}

/// Steps until git names the end, then [`finish`].
#[allow(clippy::too_many_arguments)]
fn drive(
    ctx: &Ctx,
    tree: &Path,
    place: &Place,
    bisect: &Bisect,
    mut saved: Saved,
    mut report: Report,
    answer: Option<super::progress::Progress>,
    start: Instant,
) -> Result<u8> {
    let unexpected = |e: engine::Unexpected| anyhow!("bisect: {}", e.0);
    let mut next = saved.engine.on_git(answer).map_err(unexpected)?;
    save(place, &saved, &report)?;
    let total = estimate_steps(git::count(tree, &report.inputs.good, &report.inputs.bad))
        + saved.engine.steps() as u32;
    let outcome = loop {
        let commit = match next {
            Next::Test(c) => c,
            Next::Done(o) => break o,
        };
        signals::check()?;
        let n = saved.engine.steps() + 1;
        let dir = saved
            .run_dir
            .join(format!("step-{n:02}-{}", short(&commit)));
        let (mut step, _) = test_commit(
            ctx,
            &saved.request,
            tree,
            &commit,
            Role::Step,
            dir,
            &saved.judging,
            Rule::Step,
            None,
        )?;
        let term = saved
            .engine
            .mark(&commit, step.verdict)
            .map_err(unexpected)?;
        // A bad step's runs tell the rate (flaky): the next good step may need fewer.
        let verdicts: Vec<StepVerdict> = step.runs.iter().map(|r| r.verdict).collect();
        let before = saved.judging.mode.runs_rule();
        saved.judging.mode.learn(&verdicts);
        step.term = term.into();
        print_step(n, total.max(n as u32), &step);
        if saved.judging.mode.runs_rule() != before {
            eprintln!(
                "bisect: the runs at bad commits tell the rate: a good step now needs {} clean runs",
                saved.judging.mode.runs_rule().0
            );
        }
        report.steps.push(step);
        save(place, &saved, &report)?;
        let answer = bisect.mark(term, &commit)?;
        next = saved.engine.on_git(answer).map_err(unexpected)?;
        save(place, &saved, &report)?;
    };
    finish(ctx, tree, place, bisect, saved, report, outcome, start)
}

/// The end: git's bisect reset, the culprit's examination and confirmation, the report.
#[allow(clippy::too_many_arguments)]
fn finish(
    ctx: &Ctx,
    tree: &Path,
    place: &Place,
    bisect: &Bisect,
    saved: Saved,
    mut report: Report,
    outcome: Outcome<String>,
    start: Instant,
) -> Result<u8> {
    bisect.reset()?;
    if let Outcome::Found { culprit } = &outcome {
        let (subject, author, stat) = git::describe(tree, culprit);
        report.culprit = Some(Culprit {
            commit: culprit.clone(),
            subject,
            author,
            stat,
        });
        let KernelSource::Build { build, .. } = &saved.request.kernel else {
            bail!("a bisect builds each step's commit: it cannot boot one image")
        };
        let mut facts = git::culprit_facts(tree, culprit, build.arch.srcarch)?;
        if report.inputs.confirm {
            report.confirmation = confirm(ctx, tree, bisect, &saved, &mut report, culprit)?;
        }
        // After the confirmation, which built the parent: here its kernel is a cache hit.
        facts.same_kernel_as_parent = same_kernel_as_parent(ctx, tree, &saved, culprit)?;
        report.suspicions = suspect::suspicions(&facts);
    }
    report.confidence = match (&outcome, saved.judging.mode.confidence_asked()) {
        (Outcome::Found { culprit }, Some(_)) => {
            gather_evidence(tree, &report, culprit)?.map(|e| confidence_of(&e, &report.steps, None))
        }
        _ => None,
    };
    report.outcome = Some(outcome);
    report.total_secs += start.elapsed().as_secs_f64();
    save(place, &saved, &report)?;
    let md = report.markdown();
    std::fs::write(saved.run_dir.join("bisect.md"), &md)?;
    println!("{md}");
    eprintln!(
        "bisect: report saved in {}",
        saved.run_dir.join("bisect.md").display()
    );
    std::fs::remove_file(&place.saved)?;
    git::unlock_worktree(tree, &place.worktree)?;
    Ok(0)
}

/// Tests the culprit again, its parent, and the new end with the culprit reverted (made in
/// the bisect's worktree, see [`Bisect::revert`]).
fn confirm(
    ctx: &Ctx,
    tree: &Path,
    bisect: &Bisect,
    saved: &Saved,
    report: &mut Report,
    culprit: &str,
) -> Result<engine::Confirmation> {
    let terms = saved.engine.terms;
    let parent = git::rev_parse(tree, &format!("{culprit}^")).ok();
    let revert = bisect.revert(culprit, &report.inputs.bad)?;
    let revert_failed = revert.as_ref().err().cloned();
    if let Some(why) = &revert_failed {
        eprintln!("bisect: the culprit does not revert on the BAD end: {why}");
    }
    let plan = engine::confirmation_plan(
        terms,
        &culprit.to_string(),
        parent.as_ref(),
        revert.ok().as_ref(),
    );
    // Flaky: a test that expects clean runs (forward, the parent's and the revert's) runs until
    // the confidence, with its runs, is reached.
    let evidence = match saved.judging.mode.confidence_asked() {
        Some(_) => gather_evidence(tree, report, culprit)?,
        None => None,
    };
    let mut results = Vec::new();
    for t in plan {
        signals::check()?;
        let earlier: Vec<StepVerdict> = report
            .steps
            .iter()
            .filter(|s| s.commit == t.candidate && s.role != Role::Revert)
            .flat_map(|s| s.runs.iter().map(|r| r.verdict))
            .collect();
        if mode::shown_already(&saved.judging.mode, t.expect, &earlier) {
            eprintln!(
                "bisect: confirming: the culprit {} showed BAD's symptom in a run already, which in a flaky bisect only a commit with the bug does: not booted again",
                short(&t.candidate)
            );
            results.push((t, StepVerdict::Bad));
            continue;
        }
        let reached =
            |runs: &[StepVerdict]| match (&evidence, saved.judging.mode.confidence_asked()) {
                (Some(e), Some(c)) => confidence_of(e, &report.steps, Some((&t, runs))) >= c,
                _ => false,
            };
        let rule = match (t.expect, &evidence) {
            (StepVerdict::Good, Some(_)) => Rule::Confirming(&reached),
            _ => Rule::Step,
        };
        let name = match t.role {
            Role::Culprit => "culprit",
            Role::Parent => "parent",
            _ => "revert",
        };
        eprintln!(
            "bisect: confirming: the {name} {} {}",
            short(&t.candidate),
            git::subject(tree, &t.candidate)
        );
        let dir = saved.run_dir.join(format!("confirm-{name}"));
        let (mut step, _) = test_commit(
            ctx,
            &saved.request,
            tree,
            &t.candidate,
            t.role,
            dir,
            &saved.judging,
            rule,
            None,
        )?;
        step.term = terms.term(step.verdict).into();
        eprintln!(
            "bisect: the {name} is {} (expected {}): {}",
            step.term,
            terms.term(t.expect),
            step.reason
        );
        results.push((t, step.verdict));
        report.steps.push(step);
    }
    Ok(engine::judge_confirmation(
        terms,
        &results,
        revert_failed.as_deref(),
    ))
}

/// The confidence of a flaky bisect's culprit from the report's steps and a confirmation test
/// under way (`runs` of it).
fn confidence_of(
    evidence: &Evidence,
    steps: &[Step],
    under_way: Option<(&engine::ConfirmTest<String>, &[StepVerdict])>,
) -> f64 {
    let verdicts: Vec<(&str, bool, Vec<StepVerdict>)> = steps
        .iter()
        .map(|s| {
            let v = s.runs.iter().map(|r| r.verdict).collect();
            (s.commit.as_str(), s.role == Role::Revert, v)
        })
        .chain(under_way.map(|(t, r)| (t.candidate.as_str(), t.role == Role::Revert, r.to_vec())))
        .collect();
    evidence.confidence(verdicts.iter().map(|(c, rv, v)| (*c, *rv, v.as_slice())))
}

/// The git facts a flaky bisect's confidence needs (its tested commits but the revert's);
/// None, said, when git does not give them: the bisect's answer stands without a confidence.
fn gather_evidence(tree: &Path, report: &Report, culprit: &str) -> Result<Option<Evidence>> {
    let i = &report.inputs;
    let range = Range {
        good: &i.good,
        bad: &i.bad,
        paths: &i.paths,
        reverse: i.reverse,
    };
    let tested = report
        .steps
        .iter()
        .filter(|s| s.role != Role::Revert)
        .map(|s| s.commit.as_str());
    match Evidence::gather(tree, &range, tested, culprit) {
        Ok(e) => Ok(Some(e)),
        Err(e) if signals::is_interrupted(&e) => Err(e),
        Err(e) => {
            eprintln!("bisect: no confidence can be stated: {e:#}");
            Ok(None)
        }
    }
}

/// Whether the culprit's kernel is its parent's, from the signatures their cache entries
/// keep (`build::signature`); the parent is built if no step did. None when it cannot be
/// told: no parent, a build that fails, an entry made before signatures were kept.
fn same_kernel_as_parent(
    ctx: &Ctx,
    tree: &Path,
    saved: &Saved,
    culprit: &str,
) -> Result<Option<bool>> {
    let Ok(parent) = git::rev_parse(tree, &format!("{culprit}^")) else {
        return Ok(None);
    };
    let sctx = ctx.for_step(saved.run_dir.join("compare-parent"))?;
    let req = crate::kunit::run::with_kunit_config(&sctx, &saved.request)?;
    let KernelSource::Build { build: bopts, .. } = &req.kernel else {
        bail!("a bisect builds each step's commit: it cannot boot one image")
    };
    let cache = build::cache::Cache::new(&ctx.state);
    let mut signatures = Vec::new();
    for commit in [culprit, parent.as_str()] {
        let signature = match build::ensure_kernel(&sctx, Some(commit), bopts) {
            Ok(BuildOutcome::Built(a)) => {
                cache.lookup(&a.key).and_then(|e| e.meta.kernel_signature)
            }
            Ok(BuildOutcome::Failed { .. }) => None,
            Err(e) if signals::is_interrupted(&e) => return Err(e),
            Err(e) => {
                eprintln!("bisect: the culprit's kernel is not compared with its parent's: {e:#}");
                None
            }
        };
        let Some(signature) = signature else {
            return Ok(None);
        };
        signatures.push(signature);
    }
    let same = signatures[0] == signatures[1];
    eprintln!(
        "bisect: the culprit's kernel {} its parent's (signature {})",
        if same {
            "is the same as"
        } else {
            "differs from"
        },
        &signatures[0][..12]
    );
    Ok(Some(same))
}

/// Builds and checks one commit by id, with the frozen request (its build takes the bisect's
/// copy of the config), its runs as `rule` and `judging` say; also gives the symptom the BAD
/// end showed. Setup problems are `Err` (the bisect stops, its state kept for --resume).
#[allow(clippy::too_many_arguments)]
fn test_commit(
    ctx: &Ctx,
    req: &CheckRequest,
    tree: &Path,
    commit: &str,
    role: Role,
    dir: PathBuf,
    judging: &Judging,
    rule: Rule,
    keep_on: Option<&str>,
) -> Result<(Step, Option<Symptom>)> {
    let sctx = ctx.for_step(dir.clone())?;
    // `--kunit`: the kernel its check boots, with the suites built in (kunit/run.rs).
    let req = &crate::kunit::run::with_kunit_config(&sctx, req)?;
    let KernelSource::Build { build: bopts, .. } = &req.kernel else {
        bail!("a bisect builds each step's commit: it cannot boot one image")
    };
    let t = Instant::now();
    let mut step = Step {
        role,
        commit: commit.into(),
        subject: git::subject(tree, commit),
        verdict: StepVerdict::Skip,
        term: "skip".into(),
        reason: String::new(),
        build_secs: None,
        ccache: None,
        runs: Vec::new(),
        run_dir: dir.display().to_string(),
    };
    let kernel = match build::ensure_kernel(&sctx, Some(commit), bopts)? {
        BuildOutcome::Built(a) => {
            step.build_secs = (!a.cache_hit).then(|| t.elapsed().as_secs_f64());
            step.ccache = a.ccache;
            a.key
        }
        BuildOutcome::Failed {
            summary, cached, ..
        } => {
            step.reason = format!(
                "does not build: {}",
                summary.lines().next().unwrap_or_default()
            );
            step.build_secs = (!cached).then(|| t.elapsed().as_secs_f64());
            return Ok((step, None));
        }
    };
    let req = &req.at(commit);
    let kept = keep_on.and_then(|rootfs| EarlierRuns::of(&ctx.state, &kernel, req, rootfs));
    let earlier = kept.as_ref().map(EarlierRuns::load).unwrap_or_default();
    // The build is in the cache now: the check finds it there.
    let checked = super::step::check(&sctx, req, judging, rule, &earlier)?;
    let out = checked.outcome;
    if out.verdict() == Verdict::Abort {
        bail!(
            "the check could not run at {}: {} (logs: {})",
            short(commit),
            out.judgement.reason,
            dir.display()
        );
    }
    if let Some(kept) = &kept {
        kept.save(&checked.records)?;
    }
    step.runs = checked.runs;
    step.verdict = checked.verdict;
    step.term = super::report::verdict_word(step.verdict).into();
    step.reason = checked.reason.unwrap_or(out.judgement.reason);
    Ok((step, checked.tally.target))
}

fn print_step(n: usize, total: u32, s: &Step) {
    let build = match (s.build_secs, s.ccache) {
        (Some(b), Some(c)) => format!("build {}, {}", human_secs(b), c.describe()),
        (Some(b), None) => format!("build {}", human_secs(b)),
        (None, _) => "build cached".into(),
    };
    let boot: f64 = s.runs.iter().filter_map(|r| r.boot_secs).sum();
    let boot = if boot > 0.0 {
        format!(", boot {}", human_secs(boot))
    } else {
        String::new()
    };
    eprintln!(
        "bisect: step {n} of ~{total}: {} {} → {} ({build}{boot}): {}",
        short(&s.commit),
        s.subject,
        s.term,
        s.reason
    );
}

fn status(tree: &Path, place: &Place) -> Result<u8> {
    let Some((saved, report)) = read_saved(place)? else {
        println!("no bisect under way");
        return Ok(0);
    };
    println!(
        "bisect {}..{} in {}, {} steps so far",
        short(&report.inputs.good),
        short(&report.inputs.bad),
        place.worktree.display(),
        saved.engine.steps()
    );
    println!("{}", report.markdown());
    match git::worktree_lock(tree, &place.worktree) {
        Some(_) => println!("its worktree is locked for it until it ends or `--reset` ends it"),
        None => println!("its worktree is not locked: `--resume` locks it again"),
    }
    let bisect = Bisect {
        wt: place.worktree.clone(),
    };
    if let Ok((expected, head)) = bisect.expected_and_head() {
        println!(
            "next to test: {} {}",
            short(&expected),
            git::subject(&place.worktree, &expected)
        );
        if head != expected {
            println!(
                "BISECT_HEAD has moved to {}; --resume puts it back",
                short(&head)
            );
        }
    }
    println!("git bisect log:\n{}", bisect.log());
    Ok(0)
}

fn reset(tree: &Path, place: &Place) -> Result<u8> {
    let saved = read_saved(place).ok().flatten();
    Bisect {
        wt: place.worktree.clone(),
    }
    .reset()?;
    let _ = std::fs::remove_file(&place.saved);
    git::unlock_worktree(tree, &place.worktree)?;
    match saved {
        Some((s, _)) => println!("bisect ended; its logs stay in {}", s.run_dir.display()),
        None => println!("no bisect under way"),
    }
    Ok(0)
}
