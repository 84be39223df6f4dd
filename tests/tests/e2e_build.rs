//! End-to-end tests of `cargo xtask build` on the real kernel tree: cache hits that run no
//! make, incremental rebuilds, other revisions built without touching the checkout, clear
//! errors. Every test leaves the fixture tree as it found it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tests::builds::{
    build, checkout_state, clean_build, command_log, entry_of, side_commit, unique, Restore, Run,
    EDITED,
};
use tests::{code, fixture, run, run_with_pid, stderr, stdout};

#[test]
fn a_second_build_is_a_cache_hit_that_runs_no_make() {
    let f = fixture();
    let first = clean_build(&f);
    let again = build(&f, &[]);
    assert_eq!(code(&again.out), 0);
    assert!(
        stdout(&again.out).contains("cache hit"),
        "{}",
        stdout(&again.out)
    );
    assert_eq!(again.make_runs(), 0, "{}", again.commands);
    assert!(
        !again.commands.contains("systemd-nspawn"),
        "{}",
        again.commands
    );
    // A hit reads the entry's metadata and digests its files; a miss would run make in the
    // container, which alone takes longer than this (olddefconfig ~8 s here).
    assert!(again.took < Duration::from_secs(5), "{:?}", again.took);
    assert_eq!(entry_of(&first), entry_of(&again));
    let entry = PathBuf::from(entry_of(&again));
    for name in [
        "bzImage",
        "System.map",
        "config",
        "build.log",
        "metadata.json",
    ] {
        assert!(entry.join(name).is_file(), "{name} in {}", entry.display());
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["status"], "ok");
    assert_eq!(meta["dirty"], false);
}

/// Which git runs and the time zone change neither the key nor the image: git 2.39 (Debian's
/// /usr/bin/git) writes the committer date `%cI` as `+00:00`, git 2.47 (/usr/local/bin/git)
/// as `Z`, and the date goes into the version banner. A new working state built with one git
/// and `TZ` is, with the other git and another `TZ`, one entry and no make run. (The working
/// state, not a revision: its build dir is the one the suite builds anyway, so this costs one
/// incremental build.)
#[test]
fn the_key_ignores_which_git_runs_and_the_time_zone() {
    let f = fixture();
    let before = checkout_state(&f.tree);
    let plain = "/usr/sbin:/usr/bin:/sbin:/bin".to_string();
    let other = format!("/usr/local/bin:{plain}");
    // The two gits must write HEAD's date differently, or this test proves nothing.
    let iso = |path: &str| {
        let out = Command::new("git")
            .env("PATH", path)
            .arg("-C")
            .arg(&f.tree)
            .args(["log", "-1", "--format=%cI", "HEAD"])
            .output()
            .unwrap();
        stdout(&out).trim().to_string()
    };
    let (old_iso, new_iso) = (iso(&plain), iso(&other));
    assert!(old_iso.ends_with("+00:00"), "{old_iso}: HEAD's date is UTC");
    assert!(
        new_iso.ends_with('Z'),
        "{new_iso}: this test needs git 2.47 at /usr/local/bin/git"
    );
    let utc = new_iso;
    let with = |path: &str, tz: &str| {
        let (out, took, pid) = run_with_pid(f.xtask().env("PATH", path).env("TZ", tz).arg("build"));
        Run {
            commands: command_log(&f.state, pid),
            out,
            took,
        }
    };
    let (first, second) = {
        let mut restore = Restore::new();
        restore.append(
            f.tree.join(EDITED),
            // Unique per run, so that it is never in the cache already.
            &format!("\n/* xtask e2e: git and TZ, {} */\n", unique()),
        );
        let first = with(&plain, "America/New_York");
        assert_eq!(code(&first.out), 0, "{}", stderr(&first.out));
        assert!(
            stdout(&first.out).contains("built:"),
            "{}",
            stdout(&first.out)
        );
        assert!(first.make_runs() > 0, "{}", first.commands);
        let second = with(&other, "Asia/Kolkata");
        (first, second)
    };
    assert_eq!(checkout_state(&f.tree), before);
    assert_eq!(code(&second.out), 0, "{}", stderr(&second.out));
    assert!(
        stdout(&second.out).contains("cache hit"),
        "the second build missed the cache: {}",
        stdout(&second.out)
    );
    assert_eq!(second.make_runs(), 0, "{}", second.commands);
    assert_eq!(entry_of(&first), entry_of(&second));
    // A cache hit reads git and the cache: seconds, not a build's minutes.
    assert!(second.took < Duration::from_secs(30), "{:?}", second.took);
    // make was given the date in the one UTC form, which is 2.47's `%cI` here.
    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&entry_of(&first)).join("metadata.json")).unwrap(),
    )
    .unwrap();
    let make = meta["inputs"]["commands"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["step"] == "make")
        .expect("a make step in the key");
    let stamp = format!("KBUILD_BUILD_TIMESTAMP={utc}");
    assert!(
        make["env"].as_array().unwrap().iter().any(|v| *v == *stamp),
        "{make}"
    );
}

#[test]
fn a_one_file_change_rebuilds_incrementally_into_a_new_entry() {
    let f = fixture();
    let clean = clean_build(&f);
    let before = checkout_state(&f.tree);
    {
        let mut restore = Restore::new();
        restore.append(
            f.tree.join(EDITED),
            // Unique per run, so that it is never in the cache already.
            &format!("\n/* xtask e2e: a one-file change, {} */\n", unique()),
        );
        // Without ccache, after a build with it (the default): make's command line is the
        // same, so this build is as incremental.
        let changed = build(&f, &["--no-ccache"]);
        assert_eq!(code(&changed.out), 0);
        assert!(
            stdout(&changed.out).contains("built:"),
            "{}",
            stdout(&changed.out)
        );
        assert!(
            !stdout(&changed.out).contains("ccache"),
            "{}",
            stdout(&changed.out)
        );
        assert_ne!(entry_of(&changed), entry_of(&clean));
        // Incremental: the edited file and what links it, not the whole kernel.
        let log =
            std::fs::read_to_string(Path::new(&entry_of(&changed)).join("build.log")).unwrap();
        let compiled = log.lines().filter(|l| l.starts_with("  CC ")).count();
        assert!(compiled < 50, "{compiled} files compiled:\n{log}");
        assert!(log.contains("init/version.o"), "{log}");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(Path::new(&entry_of(&changed)).join("metadata.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["dirty"], true);
    }
    assert_eq!(checkout_state(&f.tree), before);
    // Back to the committed state: the first entry answers again.
    let again = build(&f, &[]);
    assert_eq!(entry_of(&again), entry_of(&clean));
    assert_eq!(again.make_runs(), 0);
}

/// A file changed and changed back is compiled again (its time is newer than its object),
/// and ccache, on by default, answers it with what it compiled before.
#[test]
fn a_file_changed_back_is_compiled_from_ccache() {
    let f = fixture();
    clean_build(&f);
    let before = checkout_state(&f.tree);
    {
        let mut edit = Restore::new();
        edit.append(
            f.tree.join(EDITED),
            &format!("\n/* xtask e2e: changed, then back, {} */\n", unique()),
        );
        assert_eq!(code(&build(&f, &[]).out), 0);
    }
    let mut restore = Restore::new();
    // Another change (not compiled), so that this is a new cache key and make runs.
    restore.append(
        f.tree.join("README"),
        &format!("\nxtask e2e: another change, {}\n", unique()),
    );
    let back = build(&f, &[]);
    assert_eq!(code(&back.out), 0, "{}", stderr(&back.out));
    let out = stdout(&back.out);
    let log = std::fs::read_to_string(Path::new(&entry_of(&back)).join("build.log")).unwrap();
    assert!(log.contains("init/version.o"), "{log}");
    // `built: … ccache 100% (3 of 3 compilations)`: at least the file changed back is a hit.
    let hits: u32 = out
        .split("ccache ")
        .nth(1)
        .and_then(|t| t.split('(').nth(1))
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ccache hits in: {out}"));
    assert!(hits >= 1, "{out}");
    drop(restore);
    assert_eq!(checkout_state(&f.tree), before);
}

#[test]
fn a_kernel_that_does_not_compile_fails_with_its_errors_and_the_failure_is_cached() {
    let f = fixture();
    clean_build(&f);
    let before = checkout_state(&f.tree);
    {
        let mut restore = Restore::new();
        restore.append(
            f.tree.join(EDITED),
            &format!("\nint xtask_e2e_broken_{} = ;\n", unique()),
        );
        let failed = build(&f, &[]);
        assert_eq!(code(&failed.out), 1);
        let err = stderr(&failed.out);
        assert!(err.contains("error:"), "{err}");
        assert!(err.contains("init/version.c"), "{err}");
        assert!(err.contains("full log: "), "{err}");
        // The same inputs again: the recorded failure answers without building.
        let again = build(&f, &[]);
        assert_eq!(code(&again.out), 1);
        assert_eq!(again.make_runs(), 0, "{}", again.commands);
        assert!(stderr(&again.out).contains("error:"));
        // A check of it is untestable (125): the build stage failed, as --json and the run's
        // result.json say; nothing booted, so there is nothing to judge again.
        let j = failed_check(&f, "build");
        assert!(
            j["reason"]
                .as_str()
                .unwrap()
                .starts_with("the build failed: "),
            "{j}"
        );
        let out = run(f
            .xtask()
            .args(["check", "--from-run"])
            .arg(j["run_dir"].as_str().unwrap()));
        assert_eq!(code(&out), 128);
        assert!(
            stderr(&out).contains("holds no boot to judge again"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(checkout_state(&f.tree), before);
}

/// `check --json` on the tree as it is, expected to be untestable because the `stage` of the
/// build failed (answered from the cache: no make runs); its JSON.
fn failed_check(f: &tests::Fixture, stage: &str) -> serde_json::Value {
    let (out, took, pid) = tests::run_with_pid(f.xtask().args(["check", "--json"]));
    assert_eq!(code(&out), 125, "{}", stderr(&out));
    // A cached failure answers at once; a boot would take seconds more.
    assert!(took < Duration::from_secs(30), "{took:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(j["failure"]["stage"], stage, "{j}");
    assert_eq!(j["runs"], serde_json::json!([]), "{j}");
    let run_dir = Path::new(j["run_dir"].as_str().unwrap());
    let name = run_dir.file_name().unwrap().to_string_lossy();
    assert!(
        name.ends_with(&format!("-check-{pid}")),
        "{}",
        run_dir.display()
    );
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("result.json")).unwrap()).unwrap();
    assert_eq!(saved["judgement"]["failure"]["stage"], stage, "{saved}");
    assert_eq!(saved["judgement"]["verdict"], "skip", "{saved}");
    j
}

/// A tree whose Kconfig does not parse fails at the config step (`make olddefconfig`), which
/// build says, and which a check reports as the config stage, not the build: 125.
#[test]
fn a_kconfig_that_does_not_parse_is_a_config_failure() {
    let f = fixture();
    clean_build(&f);
    let before = checkout_state(&f.tree);
    {
        let mut restore = Restore::new();
        restore.append(
            f.tree.join("init/Kconfig"),
            &format!("\nxtask_e2e_not_a_statement_{}\n", unique()),
        );
        let failed = build(&f, &[]);
        assert_eq!(code(&failed.out), 1, "{}", stderr(&failed.out));
        // The config step fails in seconds; a build that went on to compile takes minutes.
        assert!(failed.took < Duration::from_secs(120), "{:?}", failed.took);
        assert!(!failed.commands.contains("bzImage"), "{}", failed.commands);
        assert!(
            failed.commands.contains("olddefconfig"),
            "{}",
            failed.commands
        );
        let j = failed_check(&f, "config");
        let reason = j["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("the config step of the build failed: "),
            "{reason}"
        );
        assert!(reason.contains("olddefconfig"), "{reason}");
    }
    assert_eq!(checkout_state(&f.tree), before);
}

#[test]
fn another_revision_builds_in_the_worktree_and_leaves_the_checkout_as_it_was() {
    let f = fixture();
    let rev = side_commit(&f.tree);
    let mut restore = Restore::new();
    restore.append(f.tree.join("README"), "\nuncommitted change, xtask e2e\n");
    restore.write(f.tree.join("xtask-e2e-untracked.txt"), b"untracked\n");
    let before = checkout_state(&f.tree);
    let readme = std::fs::read(f.tree.join("README")).unwrap();
    let mtime = std::fs::metadata(f.tree.join(EDITED))
        .unwrap()
        .modified()
        .unwrap();

    let built = build(&f, &[&rev]);
    assert_eq!(code(&built.out), 0);
    let entry = PathBuf::from(entry_of(&built));
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta["commit"], rev);
    assert_eq!(meta["dirty"], false);
    assert!(
        !Path::new(meta["source_dir"].as_str().unwrap()).starts_with(&f.tree),
        "{meta}"
    );

    assert_eq!(checkout_state(&f.tree), before);
    assert_eq!(std::fs::read(f.tree.join("README")).unwrap(), readme);
    assert_eq!(
        std::fs::metadata(f.tree.join(EDITED))
            .unwrap()
            .modified()
            .unwrap(),
        mtime
    );
    // Asked again, the revision is a cache hit.
    let again = build(&f, &[&rev]);
    assert_eq!(code(&again.out), 0);
    assert_eq!(again.make_runs(), 0);
    assert_eq!(entry_of(&again), entry.display().to_string());
    drop(restore);
}

#[test]
fn bad_input_fails_with_one_clear_line() {
    let f = fixture();
    let before = checkout_state(&f.tree);
    let r = build(&f, &["no-such-rev"]);
    assert_eq!(code(&r.out), 128);
    let err = stderr(&r.out);
    assert!(
        err.contains("unknown revision no-such-rev: not in"),
        "{err}"
    );
    assert_eq!(r.make_runs(), 0);

    let r = build(&f, &["--config", "/nonexistent/kernel.config"]);
    assert_eq!(code(&r.out), 128);
    assert!(stderr(&r.out).contains("/nonexistent/kernel.config does not exist"));

    let not_a_tree = tempfile::tempdir().unwrap();
    let out = tests::run(
        Command::new(&f.bin)
            .arg("--state-dir")
            .arg(&f.state)
            .arg("--tree")
            .arg(not_a_tree.path())
            .arg("build"),
    );
    assert_eq!(code(&out), 128);
    assert!(
        stderr(&out).contains("is not a kernel tree"),
        "{}",
        stderr(&out)
    );
    assert_eq!(checkout_state(&f.tree), before);
}

#[test]
fn cache_ls_and_show_list_the_entries() {
    let f = fixture();
    clean_build(&f);
    let out = tests::run(f.xtask().args(["cache", "ls"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains(" ok "), "{}", stdout(&out));
    let out = tests::run(f.xtask().args(["cache", "show", "HEAD"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("\"status\": \"ok\""));
    let out = tests::run(f.xtask().args(["cache", "gc", "--max-size", "1000G"]));
    assert_eq!(code(&out), 0);
    assert!(
        stdout(&out).contains("dropped 0 entries"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn ctrl_c_mid_build_exits_130_and_publishes_nothing() {
    let f = fixture();
    clean_build(&f);
    let entries = |state: &Path| {
        std::fs::read_dir(state.join("cache/entries"))
            .unwrap()
            .count()
    };
    let before_entries = entries(&f.state);
    let before = checkout_state(&f.tree);
    {
        let mut restore = Restore::new();
        restore.append(f.tree.join(EDITED), "\n/* xtask e2e: interrupted */\n");
        let child = f
            .xtask()
            .arg("build")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Interrupt once make runs.
        let deadline = Instant::now() + Duration::from_secs(120);
        while !command_log(&f.state, pid).contains(" bzImage") {
            assert!(Instant::now() < deadline, "make never started");
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        eprintln!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(code(&out), 130);
    }
    assert_eq!(entries(&f.state), before_entries);
    let leftovers = std::fs::read_dir(f.state.join("cache/tmp"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(leftovers, 0, "staging directories left in cache/tmp");
    assert_eq!(checkout_state(&f.tree), before);
}

/// A build after a one-file change keeps the build dir's .config: the same input config
/// made it from the same Kconfig files, so neither olddefconfig nor make's syncconfig runs.
/// A Kconfig file changed (a comment: the result is the same) runs olddefconfig again.
#[test]
fn an_incremental_build_keeps_the_config_until_a_kconfig_file_changes() {
    let f = fixture();
    let mut restore = Restore::new();
    let change = |restore: &mut Restore| {
        restore.append(
            f.tree.join(EDITED),
            &format!("\n/* xtask e2e: config kept, {} */\n", unique()),
        );
    };
    change(&mut restore);
    let first = build(&f, &[]);
    assert_eq!(code(&first.out), 0, "{}", stderr(&first.out));
    change(&mut restore);
    let second = build(&f, &[]);
    assert_eq!(code(&second.out), 0, "{}", stderr(&second.out));
    assert!(
        !second.commands.contains("olddefconfig"),
        "{}",
        second.commands
    );
    assert_eq!(second.make_runs(), 1, "{}", second.commands);
    let log = std::fs::read_to_string(Path::new(&entry_of(&second)).join("build.log")).unwrap();
    assert!(
        log.contains("### olddefconfig: kept the build dir's .config"),
        "{log}"
    );
    assert!(!log.contains("SYNC    include/config/auto.conf"), "{log}");
    let config = |r: &Run| std::fs::read(Path::new(&entry_of(r)).join("config")).unwrap();
    assert_eq!(config(&first), config(&second));

    restore.append(
        f.tree.join("init/Kconfig"),
        "\n# xtask e2e: a Kconfig file changed\n",
    );
    change(&mut restore);
    let third = build(&f, &[]);
    assert_eq!(code(&third.out), 0, "{}", stderr(&third.out));
    assert!(
        third.commands.contains("olddefconfig"),
        "{}",
        third.commands
    );
    assert_eq!(config(&third), config(&second));
}
