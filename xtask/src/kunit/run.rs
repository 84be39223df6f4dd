//! `check --kunit` and `check --ktap`, the executing side: the config with the suites built
//! in (made and verified as trim-config makes any `--set`), the command line that filters
//! and ends KUnit, the results read back from a run's recordings.

use super::{judge, report, suite};
use crate::cmd::CommandExt;
use crate::ctx::Ctx;
use crate::kselftest;
use crate::ktap::{self, Source};
use crate::trim::{self, Base, TrimOptions};
use crate::vm::run::{self, read_lossy, Event, Report};
use crate::vm::spec::RunPaths;
use crate::vm::verdict::BootEnd;
use crate::vm::verdict::Verdict;
use crate::vm::{CheckOutcome, CheckRequest, KernelSource, TestRequest};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

fn source(t: &TestRequest) -> Option<Source> {
    if t.kunit.is_some() || !t.kunitconfig.is_empty() {
        Some(Source::Console)
    } else if t.ktap || !t.kselftest.is_empty() {
        Some(Source::Stdout)
    } else {
        None
    }
}

/// The request of a check that reads tests. `--kunit`: the config with the suites built in
/// ([`with_kunit_config`]), and the command line that selects them and ends the VM when
/// they are done. `--kselftest`: the selftests built, shared with the guest, and the command
/// that runs them. Other checks come back as they are.
pub fn prepare(ctx: &Ctx, req: &CheckRequest) -> Result<CheckRequest> {
    let mut req = with_kunit_config(ctx, req)?;
    let t = &req.tests;
    if !t.kselftest.is_empty() {
        if !req.plan.command.is_empty() {
            bail!("--kselftest runs the selftests' own runner: give no command or --script");
        }
        if req.vm.share.is_some() {
            bail!("--kselftest shares the selftests with the guest: it cannot take --share too");
        }
        // The selftests of the revision the kernel is built from (a bisect step's).
        let rev = match &req.kernel {
            KernelSource::Build { rev, .. } => rev.as_deref(),
            KernelSource::Image(_) => None,
        };
        req.vm.share = Some(kselftest::build(ctx, rev, &t.kselftest)?);
        req.plan.command = kselftest::command();
        return Ok(req);
    }
    if source(t) == Some(Source::Console) {
        let words = cmdline(t);
        req.vm.append = Some(match req.vm.append.take() {
            // Before a `--`: the words after it are init's.
            Some(a) => format!("{words} {a}"),
            None => words,
        });
    }
    Ok(req)
}

/// With `--kunit`, the request's build made with the suites built in, and with
/// `--kselftest`, with the options the targets' `config` fragments ask for (a bisect step
/// builds with it before it checks); made once, so a second call changes nothing. A
/// `--kernel` image is booted as it is.
pub fn with_kunit_config(ctx: &Ctx, req: &CheckRequest) -> Result<CheckRequest> {
    let mut req = req.clone();
    if req.tests.kunit_config.is_some() {
        return Ok(req);
    }
    if let KernelSource::Build { rev, build } = &mut req.kernel {
        let mut sets = if source(&req.tests) == Some(Source::Console) {
            options(ctx, &req.tests)?
        } else {
            Vec::new()
        };
        for (origin, option) in kselftest_options(ctx, rev.as_deref(), &req.tests.kselftest)? {
            if !sets.iter().any(|(_, s)| *s == option) {
                sets.push((origin, option));
            }
        }
        if sets.is_empty() {
            return Ok(req);
        }
        let base = crate::build::input_config(ctx, build)?;
        let made = config(ctx, base, build.arch, &sets)?;
        build.config = Some(made.clone());
        req.tests.kunit_config = Some(made);
    }
    Ok(req)
}

/// `(origin, CONFIG_X=VALUE)` for the options the `config` fragment of each selftest
/// target asks for, read at `rev` (None: the working state), `=m` built in (the trimmed
/// config has no modules). A target without a fragment asks for nothing.
fn kselftest_options(
    ctx: &Ctx,
    rev: Option<&str>,
    targets: &[String],
) -> Result<Vec<(String, String)>> {
    let mut sets = Vec::new();
    if targets.is_empty() {
        return Ok(sets);
    }
    let tree = ctx.require_tree()?;
    for t in targets {
        let path = kselftest::config_fragment(t);
        let text = match rev {
            Some(r) => crate::git::git(&tree)
                .args(["show", &format!("{r}:{path}")])
                .output_unchecked()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned()),
            None => std::fs::read_to_string(tree.join(&path)).ok(),
        };
        let Some(text) = text else { continue };
        for o in suite::built_in_options(&text) {
            sets.push((path.clone(), o));
        }
    }
    Ok(sets)
}

/// The tests a check judges, as its options say, for a bisect's report line.
pub fn describe(t: &TestRequest) -> Option<String> {
    let what = match source(t)? {
        Source::Console if !t.kunitconfig.is_empty() => format!(
            "--kunitconfig {}",
            t.kunitconfig
                .iter()
                .map(|k| k.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Source::Console => format!("--kunit {}", t.kunit.clone().unwrap_or_default().join(" ")),
        Source::Stdout if !t.kselftest.is_empty() => {
            format!("--kselftest {}", t.kselftest.join(" "))
        }
        Source::Stdout => "--ktap".into(),
    };
    Some(match &t.test {
        Some(name) => format!("{} --test {name}", what.trim_end()),
        None => what.trim_end().to_string(),
    })
}

/// How a `--kunit` run says what happened where it differs from any check's: its VM ends
/// without an agent on purpose (`kunit_shutdown`), which is no failed boot.
pub fn event_line(e: &Event, t: &TestRequest) -> Option<String> {
    match e {
        Event::BootFailed(BootEnd::VmEnded, d) if source(t) == Some(Source::Console) => {
            Some(format!(
                "the VM ended after {:.2}s (KUnit done, or the boot ended first)",
                d.as_secs_f64()
            ))
        }
        _ => None,
    }
}

/// `kunit.filter_glob` (from `--kunit-filter`, else the one SUITE_GLOB given) and
/// `kunit_shutdown=reboot`: the kernel resets when KUnit is done, which `reboot=t` and
/// QEMU's `-no-reboot` turn into QEMU's exit, so the VM ends without booting userspace.
pub fn cmdline(t: &TestRequest) -> String {
    let globs = t.kunit.as_deref().unwrap_or_default();
    let filter = match (&t.kunit_filter, globs) {
        (Some(f), _) => Some(f.as_str()),
        (None, [one]) => Some(one.as_str()),
        _ => None,
    };
    let mut w = Vec::new();
    if let Some(f) = filter {
        w.push(format!("kunit.filter_glob={f}"));
    }
    w.push("kunit_shutdown=reboot".to_string());
    w.join(" ")
}

/// `(origin, CONFIG_X=VALUE)` for every option the suites need: from `--kunitconfig`, else
/// from each suite's own `.kunitconfig` or Makefile line; `CONFIG_KUNIT=y` always.
fn options(ctx: &Ctx, t: &TestRequest) -> Result<Vec<(String, String)>> {
    let mut sets = vec![("--kunit".to_string(), suite::KUNIT.to_string())];
    let mut add = |origin: String, options: Vec<String>| {
        for o in options {
            if !sets.iter().any(|(_, s)| *s == o) {
                sets.push((origin.clone(), o));
            }
        }
    };
    if !t.kunitconfig.is_empty() {
        for k in &t.kunitconfig {
            let text = std::fs::read_to_string(k)
                .with_context(|| format!("reading --kunitconfig {}", k.display()))?;
            add(k.display().to_string(), suite::kunitconfig_options(&text));
        }
        return Ok(sets);
    }
    let globs = t.kunit.clone().unwrap_or_default();
    if globs.is_empty() {
        return Ok(sets);
    }
    let tree = ctx.require_tree()?;
    for s in suite::locate(&tree, &globs)? {
        crate::cmd::log_line(&format!(
            "kunit: suite {} in {}, options from {}",
            s.name,
            s.file.display(),
            s.origin.display()
        ));
        add(s.origin.display().to_string(), s.options);
    }
    Ok(sets)
}

/// A check's fix for a suite's option that olddefconfig dropped: it has no `--allow-dropped`
/// (a kernel without the suite would run no test of it).
pub const DROPPED_FIX: &str = "enable their dependencies too: list them with the suite's \
                               options in a --kunitconfig FILE, or build on a --config PATH \
                               that has them";

/// The same for a selftest's fragment (its target would test a kernel without them).
pub const DROPPED_KSELFTEST_FIX: &str =
    "enable their dependencies too: build on a --config PATH that has them";

/// The base config with `sets` merged in, through olddefconfig, each option verified as
/// trim-config verifies a `--set` (a dropped one fails with its explanation). Kept by its
/// inputs in the config dir, so the next check with the same suites reuses it.
fn config(
    ctx: &Ctx,
    base: PathBuf,
    arch: &'static crate::arch::Arch,
    sets: &[(String, String)],
) -> Result<PathBuf> {
    let base_text =
        std::fs::read(&base).with_context(|| format!("reading the config {}", base.display()))?;
    // The fragments of the base's own arch and lane.
    let lane = crate::arch::Lane::of_config(&String::from_utf8_lossy(&base_text));
    let mut opts = TrimOptions::defaults(ctx, arch, lane)?;
    let fragments: Vec<Vec<u8>> = opts
        .fragments
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    let asked: Vec<&str> = sets.iter().map(|(_, s)| s.as_str()).collect();
    let joined = asked.join("\n");
    let mut parts: Vec<&[u8]> = vec![&base_text, joined.as_bytes()];
    parts.extend(fragments.iter().map(Vec::as_slice));
    let key = crate::build::key::sha256_hex(parts);
    let out = ctx
        .state
        .config_dir()
        .join(format!("kunit-{}.config", &key[..12]));
    if out.is_file() {
        return Ok(out);
    }
    let (what, fix) = if asked.contains(&suite::KUNIT) {
        ("kunit", DROPPED_FIX)
    } else {
        ("kselftest", DROPPED_KSELFTEST_FIX)
    };
    eprintln!("{what}: adding {} to {}", asked.join(" "), base.display());
    opts.base = Base::File(base);
    opts.sets = sets.to_vec();
    opts.dropped_fix = fix;
    opts.output = out;
    opts.quiet = true;
    trim::trim(ctx, &opts).with_context(|| format!("making the {what} config"))
}

/// The run judged by its tests: the KTAP of its console (`--kunit`) or of its command's
/// stdout (`--ktap`; as the run was made, for a saved one) read, the tests kept in the report
/// and result.json. A fault of the infrastructure keeps its verdict (abort), and so does a
/// `--ktap` command that never ran (untestable).
pub fn judge_run(mut r: Report, t: &TestRequest) -> Result<Report> {
    let Some(source) = source(t).or(r.ktap) else {
        return Ok(r);
    };
    let paths = RunPaths::new(&r.run_dir);
    let text = match source {
        Source::Console => read_lossy(&paths.console_log()),
        Source::Stdout => match &r.exec {
            Some(e) => String::from_utf8_lossy(&e.stdout).into_owned(),
            None => read_lossy(&paths.stdout()),
        },
    };
    let results = ktap::parse(&text);
    r.ktap = Some(source);
    let keep = r.judgement.verdict() == Verdict::Abort
        || (source == Source::Stdout && r.facts.command_end.is_none());
    if !keep {
        r.judgement = judge::judge(&results, t.test.as_deref());
    }
    r.test_counts = Some(results.counts);
    r.tests = results.tests;
    run::save(&paths, &r)?;
    Ok(r)
}

/// After a check: the table of the last run's tests on stderr, and `--junit FILE`.
pub fn show(o: &CheckOutcome, t: &TestRequest) -> Result<()> {
    let Some(last) = o.runs.last() else {
        return Ok(());
    };
    if last.ktap.is_none() {
        return Ok(());
    }
    let results = ktap::Results {
        version: Some(String::new()),
        tests: last.tests.clone(),
        counts: last.test_counts.unwrap_or_default(),
        ..ktap::Results::default()
    };
    eprint!("{}", report::table(&results));
    if let Some(f) = &t.junit {
        let name = match () {
            _ if !t.kselftest.is_empty() => "kselftest",
            _ if t.ktap => "ktap",
            _ => "kunit",
        };
        std::fs::write(f, report::junit(&results, name))
            .with_context(|| format!("writing --junit {}", f.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kunit(globs: &[&str]) -> TestRequest {
        TestRequest {
            kunit: Some(globs.iter().map(|g| g.to_string()).collect()),
            ..TestRequest::default()
        }
    }

    #[test]
    fn one_suite_is_kunits_filter_and_the_vm_ends_with_kunit() {
        assert_eq!(
            cmdline(&kunit(&["example"])),
            "kunit.filter_glob=example kunit_shutdown=reboot"
        );
        // Two suites: each built in, all that are built in run.
        assert_eq!(
            cmdline(&kunit(&["example", "kunit*"])),
            "kunit_shutdown=reboot"
        );
        let mut t = kunit(&["example"]);
        t.kunit_filter = Some("example.example_simple*".into());
        assert_eq!(
            cmdline(&t),
            "kunit.filter_glob=example.example_simple* kunit_shutdown=reboot"
        );
    }

    #[test]
    fn a_bisect_names_the_tests_it_judges() {
        let mut t = kunit(&["example"]);
        t.test = Some("example_simple_test".into());
        assert_eq!(
            describe(&t).as_deref(),
            Some("--kunit example --test example_simple_test")
        );
        assert_eq!(describe(&TestRequest::default()), None);
        let k = TestRequest {
            kselftest: vec!["size".into()],
            ..TestRequest::default()
        };
        assert_eq!(describe(&k).as_deref(), Some("--kselftest size"));
    }

    #[test]
    fn a_kunit_vm_that_ends_is_no_failed_boot() {
        let ended = Event::BootFailed(BootEnd::VmEnded, std::time::Duration::from_secs(2));
        assert_eq!(
            event_line(&ended, &kunit(&["example"])).as_deref(),
            Some("the VM ended after 2.00s (KUnit done, or the boot ended first)")
        );
        assert_eq!(event_line(&ended, &TestRequest::default()), None);
    }
}
