//! `bisect` on a real kernel history: 16 commits on Debian's linux-source-6.1 that change
//! real files (comments, code), one of which adds a boot-time warning and one of which does
//! not build. The bisect must name the warning's commit, skip the broken one, confirm it, find
//! it again with no make run at all, and refuse endpoints that do not fit the check; each
//! option (--reverse, --paths, --resume, --repeat, --status, --reset) is used for real, and
//! a bisect gives the same answer whatever `build REV`, a changed config or a moved HEAD do
//! beside it. Most tests reuse the kernels the first one built (all cached); a few commits
//! made here cost one incremental build each.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::{code, fixture, history, run, start_until, stderr, stdout, Fixture, CULPRIT};

/// The newest bisect run dir in the state dir.
fn last_bisect_run(state: &Path) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .contains("-bisect-")
        })
        .collect();
    dirs.sort();
    dirs.pop().expect("a bisect run dir")
}

/// How many `make` commands a run started, from its command logs (the run's own and each
/// step's, in the step's dir).
fn make_runs(run_dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(run_dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            n += make_runs(&p);
        } else if p.file_name().is_some_and(|f| f == "commands.log") {
            n += std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter(|l| {
                    l.starts_with("+ ") && (l.contains(" -- make ") || l.contains(" make "))
                })
                .count();
        }
    }
    n
}

/// The run dir a bisect's report went to (a resumed bisect's is the one it started in).
/// The config digests of the cache entries that the `building …, key K` lines of `stderr`
/// name.
fn built_configs(state: &Path, stderr: &str) -> Vec<String> {
    let entries = state.join("cache/entries");
    stderr
        .lines()
        .filter(|l| l.starts_with("building "))
        .filter_map(|l| l.rsplit_once(", key ").map(|(_, k)| k.trim().to_string()))
        .filter_map(|short| {
            let dir = std::fs::read_dir(&entries)
                .unwrap()
                .flatten()
                .find(|e| e.file_name().to_string_lossy().starts_with(&short))?;
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.path().join("metadata.json")).ok()?)
                    .ok()?;
            meta["inputs"]["config"].as_str().map(str::to_string)
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The digest of the config a bisect froze, from its report in `run_dir`.
fn frozen_config(run_dir: &Path) -> String {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("bisect.json")).unwrap()).unwrap();
    report["inputs"]["config_sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

fn report_dir(stderr: &str) -> PathBuf {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("bisect: report saved in "))
        .expect("the report's path");
    Path::new(line.trim()).parent().unwrap().to_path_buf()
}

// The deterministic cases after this one pass `--endpoint-runs 1`: their BAD end is bad every
// time, and four more boots of it per bisect would only cost CI minutes; this one runs with the
// default (BAD checked 5 times).
#[test]
fn bisect_finds_the_warning_skips_the_broken_commit_and_is_cached_the_second_time() {
    let f = fixture();
    let ids = history(&f);
    let culprit = &ids[CULPRIT];

    let t = Instant::now();
    let out = run(f.xtask().args(["bisect", "base", "bisect-e2e"]));
    assert_eq!(code(&out), 0, "bisect failed");
    assert!(t.elapsed() < Duration::from_secs(15 * 60));
    let report = stdout(&out);
    assert!(
        report
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("init: warn at boot (confirmed)"),
        "{report}"
    );
    assert!(report.contains("## First bad commit"), "{report}");
    assert!(
        stderr(&out).contains("the culprit's kernel differs from its parent's"),
        "the warning's commit changes the kernel: {}",
        stderr(&out)
    );
    assert!(report.contains("| confirm: revert |"), "{report}");
    assert!(
        report.contains(culprit.as_str()),
        "bisect did not name {culprit}:\n{report}"
    );
    assert!(report.contains("init: warn at boot"), "{report}");
    assert!(
        report.contains("| skip |"),
        "the broken commit was not tested and skipped:\n{report}"
    );
    let first = last_bisect_run(&f.state);
    assert!(first.join("bisect.md").is_file() && first.join("bisect.json").is_file());

    let out = run(f.xtask().args(["bisect", "base", "bisect-e2e"]));
    assert_eq!(code(&out), 0, "second bisect failed");
    assert!(stdout(&out).contains(culprit.as_str()));
    // The first bisect's runs of BAD count (five, or more in a state that bisected it
    // before): the second boots it once, to see it still bad.
    assert!(
        stderr(&out).contains("bisect: BAD was booted 1 time(s) now; "),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(" in an earlier bisect): 0 good, "),
        "{}",
        stdout(&out)
    );
    let second = report_dir(&stderr(&out));
    assert_ne!(first, second);

    assert_eq!(
        make_runs(&second),
        0,
        "the second bisect ran make (the revert's key must be stable): see {}",
        second.join("commands.log").display()
    );
}

#[test]
fn endpoints_that_do_not_fit_the_check_are_caught() {
    let f = fixture();
    history(&f);
    // Swapped: the "good" endpoint warns at boot.
    let out = run(f.xtask().args(["bisect", "bisect-e2e", "base"]));
    assert!(code(&out) >= 128, "swapped endpoints were accepted");
    assert!(stderr(&out).contains("GOOD"), "{}", stderr(&out));
    let out = run(f.xtask().args(["bisect", "base", "no-such-rev"]));
    assert!(code(&out) >= 128);
    assert!(stderr(&out).contains("no-such-rev"), "{}", stderr(&out));
    let out = run(f.xtask().args(["bisect", "--status"]));
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("no bisect under way"),
        "a failed start left a bisect behind"
    );
}

/// The bisect's own worktree (state/bisect/<tree>/worktree).
fn bisect_worktree(f: &Fixture) -> PathBuf {
    std::fs::read_dir(f.state.join("bisect"))
        .unwrap()
        .flatten()
        .map(|e| e.path().join("worktree"))
        .find(|p| p.is_dir())
        .expect("the bisect's worktree")
}

/// The reason git holds worktree `wt` of `tree` locked with, if it does.
fn worktree_lock(tree: &Path, wt: &Path) -> Option<String> {
    let list = read(git(tree).args(["worktree", "list", "--porcelain"]));
    let wt = wt.canonicalize().unwrap();
    list.split("\n\n")
        .find(|b| b.lines().next() == Some(&format!("worktree {}", wt.display())))?
        .lines()
        .find_map(|l| l.strip_prefix("locked"))
        .map(|r| r.trim().to_string())
}

fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir);
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "e2e"),
        ("GIT_AUTHOR_EMAIL", "e2e@localhost"),
        ("GIT_COMMITTER_NAME", "e2e"),
        ("GIT_COMMITTER_EMAIL", "e2e@localhost"),
        // A fixed date: the same commit id, so the same cache key, every run.
        ("GIT_AUTHOR_DATE", "1700100000 +0000"),
        ("GIT_COMMITTER_DATE", "1700100000 +0000"),
    ] {
        c.env(k, v);
    }
    c
}

fn read(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A commit on `parent` that sets `file` to `content`, written with git's plumbing (no
/// checkout touched).
fn commit_on(tree: &Path, parent: &str, file: &str, content: &str, msg: &str) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let index = tmp.path().join("index");
    let g = || {
        let mut c = git(tree);
        c.env("GIT_INDEX_FILE", &index);
        c
    };
    read(g().args(["read-tree", parent]));
    let path = tmp.path().join("blob");
    std::fs::write(&path, content).unwrap();
    let blob = read(g().args(["hash-object", "-w"]).arg(&path));
    read(g().args([
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("100644,{blob},{file}"),
    ]));
    let t = read(g().args(["write-tree"]));
    read(g().args(["commit-tree", &t, "-p", parent, "-m", msg]))
}

#[test]
fn reverse_with_paths_finds_the_fix() {
    let f = fixture();
    let ids = history(&f);
    // A fix on top of the history: init/main.c as it was before the warning.
    let before = read(git(&f.tree).args(["show", &format!("{}:init/main.c", ids[CULPRIT - 1])]));
    let fix = commit_on(
        &f.tree,
        &ids[15],
        "init/main.c",
        &(before + "\n"),
        "init: no warning at boot",
    );
    let t = Instant::now();
    let out = run(f.xtask().args([
        "bisect",
        "--reverse",
        "--no-confirm",
        "--endpoint-runs",
        "1",
        &ids[CULPRIT],
        &fix,
        "--paths",
        "init/main.c",
    ]));
    assert_eq!(code(&out), 0, "reverse bisect failed");
    assert!(t.elapsed() < Duration::from_secs(5 * 60));
    let report = stdout(&out);
    let first = report.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("# first fixed commit {}", &fix[..12])),
        "{report}"
    );
    assert!(
        report.contains("(--reverse: finding a fix)") && report.contains("Paths: `init/main.c`")
    );
}

#[test]
fn a_tools_only_culprit_is_suspicious_and_its_parent_disagrees() {
    let f = fixture();
    let ids = history(&f);
    // `--paths tools` leaves one candidate, a commit that touches only tools/: the check (the
    // warning, there since #11) names it, and the confirmation finds its parent bad too.
    let tools = commit_on(
        &f.tree,
        &ids[15],
        "tools/xtask-e2e.txt",
        "a note\n",
        "tools: a note",
    );
    let t = Instant::now();
    let out = run(f.xtask().args([
        "bisect",
        "--endpoint-runs",
        "1",
        "base",
        &tools,
        "--paths",
        "tools",
    ]));
    assert_eq!(
        code(&out),
        0,
        "a suspicious culprit is still the bisect's answer"
    );
    assert!(t.elapsed() < Duration::from_secs(8 * 60));
    let report = stdout(&out);
    let first = report.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("# suspicious: first bad commit {}", &tools[..12])),
        "{report}"
    );
    assert!(report.contains("it changes only tools/"), "{report}");
    // Its kernel and its parent's are compared by the signatures their cache entries keep
    // (vmlinux, banner masked): the two builds differ only in their dates, so they are equal.
    assert!(
        report.contains("its kernel is the same as its parent's"),
        "{report}"
    );
    assert!(report.contains("- its parent is bad, not good"), "{report}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(last_bisect_run(&f.state).join("bisect.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["confirmation"]["result"], "not_confirmed");
    assert_eq!(json["suspicions"][0], "same_kernel_as_parent");
    assert_eq!(json["suspicions"][1], "only_tools");
}

#[test]
fn repeat_runs_a_good_step_n_times() {
    let f = fixture();
    let ids = history(&f);
    let t = Instant::now();
    let out = run(f.xtask().args([
        "bisect",
        "--no-confirm",
        "--repeat",
        "2",
        &ids[CULPRIT - 1],
        &ids[CULPRIT],
    ]));
    assert_eq!(code(&out), 0);
    assert!(t.elapsed() < Duration::from_secs(4 * 60));
    assert!(stdout(&out).contains(&ids[CULPRIT]));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(last_bisect_run(&f.state).join("bisect.json")).unwrap(),
    )
    .unwrap();
    let runs = |i: usize| json["steps"][i]["runs"].as_array().unwrap().len();
    // GOOD twice; BAD once (a step is bad at its first bad run).
    assert_eq!((runs(0), runs(1)), (2, 1), "{json:#}");
}

/// Ends any bisect a failing test left, so the next test starts clean.
struct Reset<'a>(&'a Fixture);
impl Drop for Reset<'_> {
    fn drop(&mut self) {
        let _ = self.0.xtask().args(["bisect", "--reset"]).output();
    }
}

/// Puts the state's trimmed config back when dropped.
struct Restore(PathBuf, Vec<u8>);
impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(&self.0, &self.1).unwrap();
    }
}

#[test]
fn a_build_and_a_config_change_beside_a_bisect_and_a_moved_head_change_nothing() {
    let f = fixture();
    let ids = history(&f);
    let config = f.state.join("config/trimmed.config");
    let _restore = Restore(config.clone(), std::fs::read(&config).unwrap());
    let _reset = Reset(&f);
    let bisect = start_until(
        f.xtask().args([
            "bisect",
            "--no-confirm",
            "--endpoint-runs",
            "1",
            "base",
            "bisect-e2e",
        ]),
        "bisect: step 1 ",
    );
    // Beside it: a real trim-config that changes the state's config, and a build of another
    // commit (it moves the build worktree and waits on its lock).
    let out = run(f.xtask().args([
        "trim-config",
        "--set",
        "CONFIG_LOCALVERSION=\"-trimmed-during-a-bisect\"",
    ]));
    assert_eq!(code(&out), 0, "trim-config failed: {}", stderr(&out));
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("-trimmed-during-a-bisect"),
        "trim-config did not change {}",
        config.display()
    );
    let out = run(f.xtask().args(["build", "--retry-failed", &ids[7]]));
    assert_eq!(code(&out), 1, "the broken commit built");
    let (status, seen) = bisect.finish(Duration::from_secs(8 * 60));
    assert_eq!(status.code(), Some(0));
    let dir = report_dir(&seen);
    let md = std::fs::read_to_string(dir.join("bisect.md")).unwrap();
    assert!(md.contains(&ids[CULPRIT]), "another culprit:\n{md}");
    // Every step built with the frozen config, not the changed one: the bisect froze the
    // original's content, and each build it made is keyed by that content.
    let frozen = frozen_config(&dir);
    assert_eq!(
        frozen,
        sha256_hex(&_restore.1),
        "the bisect froze another config"
    );
    // A fresh state builds the steps; a warm one has them all cached (the changed config,
    // never built, could not be a hit), and then no make ran.
    let configs = built_configs(&f.state, &seen);
    assert!(
        configs.iter().all(|c| *c == frozen),
        "a step built with another config: {configs:?}, frozen {frozen}"
    );
    if configs.is_empty() {
        assert_eq!(
            make_runs(&dir),
            0,
            "see the commands.log files in {}",
            dir.display()
        );
    }

    // Interrupted, its BISECT_HEAD moved by someone (and its worktree checked out), then
    // resumed: the same answer.
    let bisect = start_until(
        f.xtask().args([
            "bisect",
            "--no-confirm",
            "--endpoint-runs",
            "1",
            "base",
            "bisect-e2e",
        ]),
        "bisect: step 1 ",
    );
    let (status, took) = bisect.interrupt(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130));
    assert!(took < Duration::from_secs(30));
    let wt = bisect_worktree(&f);
    assert_eq!(
        std::fs::read_dir(&wt).unwrap().count(),
        1,
        "the bisect's worktree holds more than its .git file"
    );
    read(git(&wt).args(["checkout", "--quiet", "--force", "--detach", &ids[1]]));
    read(git(&wt).args(["update-ref", "--no-deref", "BISECT_HEAD", &ids[1]]));
    let out = run(f.xtask().args(["bisect", "--status"]));
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("BISECT_HEAD has moved"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("git bisect skip"), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("its worktree is locked for it"),
        "{}",
        stdout(&out)
    );
    let t = Instant::now();
    let out = run(f.xtask().args(["bisect", "--resume"]));
    assert_eq!(code(&out), 0, "resume failed");
    assert!(t.elapsed() < Duration::from_secs(8 * 60));
    assert!(stderr(&out).contains("restoring it"), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains(&ids[CULPRIT]),
        "resume named another culprit:\n{report}"
    );
    // The resumed steps build with the inputs the bisect froze when it started (this second
    // bisect started after the config changed, so its steps are new builds, or hits).
    let resumed = report_dir(&stderr(&out));
    let frozen = frozen_config(&resumed);
    let configs = built_configs(&f.state, &stderr(&out));
    assert!(
        configs.iter().all(|c| *c == frozen),
        "a resumed step built with another config: {configs:?}, frozen {frozen}"
    );
    let out = run(f.xtask().args(["bisect", "--status"]));
    assert!(stdout(&out).contains("no bisect under way"));
}

#[test]
fn reset_ends_an_interrupted_bisect() {
    let f = fixture();
    history(&f);
    let _reset = Reset(&f);
    let bisect = start_until(
        f.xtask().args([
            "bisect",
            "--no-confirm",
            "--endpoint-runs",
            "1",
            "base",
            "bisect-e2e",
        ]),
        "bisect: step 1 ",
    );
    let (status, _) = bisect.interrupt(Duration::from_secs(60));
    assert_eq!(status.code(), Some(130));
    // Interrupted, the bisect still holds its worktree: git keeps it locked, saying how to
    // end it, and a second bisect is refused with the fix named and leaves BISECT_HEAD alone.
    let wt = bisect_worktree(&f);
    let head = read(git(&wt).args(["rev-parse", "BISECT_HEAD"]));
    let lock = worktree_lock(&f.tree, &wt);
    assert!(
        lock.as_deref()
            .is_some_and(|r| r.contains("--resume") && r.contains("--reset")),
        "the interrupted bisect's worktree is not locked: {lock:?}"
    );
    let t = Instant::now();
    let out = run(f.xtask().args(["bisect", "base", "bisect-e2e"]));
    assert_eq!(code(&out), 128, "{}", stderr(&out));
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(
        stderr(&out).contains("already under way")
            && stderr(&out).contains("--resume")
            && stderr(&out).contains("--reset"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(git(&wt).args(["rev-parse", "BISECT_HEAD"])), head);
    let out = run(f.xtask().args(["bisect", "--reset"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("bisect ended"), "{}", stdout(&out));
    assert_eq!(worktree_lock(&f.tree, &wt), None, "--reset left it locked");
    let out = run(f.xtask().args(["bisect", "--status"]));
    assert!(stdout(&out).contains("no bisect under way"));
    let log = git(&wt).args(["bisect", "log"]).output().unwrap();
    assert!(!log.status.success(), "the worktree is still bisecting");
}
