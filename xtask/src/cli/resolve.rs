//! The command line resolved into each task's request: an option given here wins over
//! `xtask.toml`, which wins over the defaults in settings.rs; every value checked once.

use super::{
    BenchArgs, BenchWhat, BisectCmd, BootCmd, BuildArgs, CheckArgs, CheckCmd, KernelArg,
    MakeHistoryArgs, QuickstartArgs, ResultArgs, TestArgs, TrimConfigArgs, VmArgs,
};
use crate::bench::{BenchRequest, BootBench};
use crate::bisect::{BisectRequest, StartRequest};
use crate::build::BuildRequest;
use crate::history::{self, Change};
use crate::options::AccelAsked;
use crate::options::InitramfsMode;
use crate::options::{Backend, InitMode};
use crate::quickstart::QuickstartRequest;
use crate::settings::{
    default_boot_timeout, from_workspace, given, require_utf8, workspace_root, FileBuild,
    FileConfig, FileTrim, FileVm, Host, DEFAULT_BUILD_TIMEOUT, DEFAULT_CONNECT, DEFAULT_CPUS,
    DEFAULT_MEMORY_MIB, DEFAULT_SHUTDOWN_TIMEOUT, DEFAULT_TIMEOUT, MAX_JOBS, MAX_TIMEOUT,
    MIN_MEMORY_MIB, MIN_TIMEOUT,
};
use crate::state::StateDir;
use crate::testrun::SuiteRequest;
use crate::trim::{Base, TrimOptions};
use crate::units::{human_bytes, Bound, Count, Span};
use crate::vm::run::Plan;
use crate::vm::{
    command, console, BootRequest, CheckRequest, KernelSource, TestRequest, VmRequest,
};
use anyhow::{anyhow, bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

impl VmArgs {
    /// [`VmArgs::resolve`] for the arch the build's `--arch` names.
    pub fn resolve_with_arch(
        &self,
        file: &FileVm,
        default_init: InitMode,
        build: &BuildArgs,
    ) -> Result<VmRequest> {
        Ok(self.resolve(file, default_init)?.with_arch(build.arch()))
    }

    /// The VM's request on this host; see [`VmArgs::resolve_for`].
    pub fn resolve(&self, file: &FileVm, default_init: InitMode) -> Result<VmRequest> {
        self.resolve_for(file, default_init, &Host::probe())
    }

    /// Merges the options over xtask.toml over the defaults; `default_init` differs between
    /// `boot` (systemd, for people) and `check` (fast, for verdicts). Every value is checked
    /// against its bounds (the host's RAM and CPUs, [`MAX_TIMEOUT`]).
    pub fn resolve_for(
        &self,
        file: &FileVm,
        default_init: InitMode,
        host: &Host,
    ) -> Result<VmRequest> {
        let ram = format!("{} (this host's RAM)", human_bytes(host.mem_bytes));
        let memory_mib = match given(&self.memory, &file.memory, "vm", "memory") {
            Some((size, name)) => {
                let min = (MIN_MEMORY_MIB << 20, "128M (what a guest needs)");
                size.bytes_within(&name, min, (host.mem_bytes, &ram))? >> 20
            }
            None => DEFAULT_MEMORY_MIB,
        };
        let cpus = match given(&self.cpus, &file.cpus, "vm", "cpus") {
            Some((n, name)) => {
                let max = format!("{} (this host's CPUs)", host.cpus);
                let n = n.within(&name, (1, "1"), (host.cpus.min(u32::MAX.into()), &max))?;
                u32::try_from(n)?
            }
            None => DEFAULT_CPUS.min(u32::try_from(host.cpus).unwrap_or(u32::MAX)),
        };
        let init = self.init.or(file.init).unwrap_or(default_init);
        let dur = |cli: &Option<Span>, file: &Option<Span>, option: &str, default: Duration| {
            span_or(given(cli, file, "vm", option), default)
        };
        Ok(VmRequest {
            // The guest is the kernel's architecture: `with_arch` sets it from `--arch`.
            arch: crate::arch::HOST,
            memory_mib,
            cpus,
            accel: self.accel.or(file.accel).unwrap_or(AccelAsked::Auto),
            backend: self.backend.or(file.backend).unwrap_or(Backend::Qemu),
            connect: self
                .connect
                .clone()
                .or_else(|| file.connect.clone())
                .unwrap_or(DEFAULT_CONNECT.into()),
            append: self.append.clone().or_else(|| file.append.clone()),
            share: match &self.share {
                Some(d) if !d.is_dir() => bail!("--share {}: no such directory", d.display()),
                Some(d) => {
                    let d = std::fs::canonicalize(d)?;
                    require_utf8(&d, "--share")?;
                    Some(d)
                }
                None => None,
            },
            layer: match (self.rw, &self.layer) {
                (false, _) => None,
                (true, Some(name)) => Some(crate::layer::checked_name(name)?.to_string()),
                (true, None) => Some(crate::layer::DEFAULT.to_string()),
            },
            init,
            timeout: dur(&self.timeout, &file.timeout, "timeout", DEFAULT_TIMEOUT)?,
            boot_timeout: dur(
                &self.boot_timeout,
                &file.boot_timeout,
                "boot-timeout",
                default_boot_timeout(init),
            )?,
            shutdown_timeout: dur(
                &self.shutdown_timeout,
                &file.shutdown_timeout,
                "shutdown-timeout",
                DEFAULT_SHUTDOWN_TIMEOUT,
            )?,
            keep: self.keep,
        })
    }
}

impl KernelArg {
    /// `--kernel`, checked to be a file and made absolute.
    pub fn image(&self) -> Result<Option<PathBuf>> {
        match &self.kernel {
            Some(k) if !k.is_file() => bail!("--kernel {}: no such file", k.display()),
            Some(k) => {
                let k = std::fs::canonicalize(k)?;
                require_utf8(&k, "--kernel")?;
                Ok(Some(k))
            }
            None => Ok(None),
        }
    }

    /// What to boot: `--kernel` as it is, else `rev` built with these build options.
    pub fn source(
        &self,
        rev: Option<&str>,
        build: &BuildArgs,
        file: &FileBuild,
    ) -> Result<KernelSource> {
        Ok(match self.image()? {
            Some(image) => KernelSource::Image(image),
            None => KernelSource::Build {
                rev: rev.map(str::to_string),
                build: build.resolve(file)?,
            },
        })
    }
}

/// A duration given somewhere (named as the error should name it), within the VM phases'
/// bounds, or the default.
fn span_or(given: Option<(&Span, String)>, default: Duration) -> Result<Duration> {
    match given {
        Some((span, name)) => span.within(&name, MIN_TIMEOUT, MAX_TIMEOUT),
        None => Ok(default),
    }
}

impl BuildArgs {
    /// `--arch`, or the host's.
    pub fn arch(&self) -> &'static crate::arch::Arch {
        self.arch.unwrap_or(crate::arch::HOST)
    }

    /// Merges the build options over xtask.toml's `[build]` over the defaults.
    pub fn resolve(&self, file: &FileBuild) -> Result<BuildRequest> {
        let jobs = match given(&self.jobs, &file.jobs, "build", "jobs") {
            Some((n, name)) => u32::try_from(n.within(&name, (1, "1"), MAX_JOBS)?)?,
            None => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX)),
        };
        let config = match (&self.config, &file.config) {
            (Some(c), _) => Some(std::env::current_dir()?.join(c)),
            (None, Some(c)) => Some(from_workspace(c)),
            (None, None) => None,
        };
        if let Some(c) = &config {
            if !c.is_file() {
                bail!(
                    "config {} does not exist: run `cargo xtask trim-config` or pass --config PATH",
                    c.display()
                );
            }
        }
        let timeout = given(
            &self.build_timeout,
            &file.build_timeout,
            "build",
            "build-timeout",
        );
        Ok(BuildRequest {
            arch: self.arch(),
            config,
            lane: None,
            jobs,
            host: self.host || file.host.unwrap_or(false),
            // On by default: its links first on the search path leave make's command line
            // as it is, so turning it off or on recompiles nothing.
            ccache: match (self.ccache, self.no_ccache) {
                (true, _) => true,
                (_, true) => false,
                _ => file.ccache.unwrap_or(true),
            },
            initramfs: self
                .initramfs
                .or(file.initramfs)
                .unwrap_or(InitramfsMode::Auto),
            retry_failed: self.retry_failed,
            timeout: span_or(timeout, DEFAULT_BUILD_TIMEOUT)?,
        })
    }
}

/// The most `--repeat`: a flaky bug shows long before, and each run is a boot.
const MAX_REPEAT: Bound<'static, u64> = (1000, "1000");

impl CheckArgs {
    /// What to run in the guest: the command, or the script (read now) with the command's
    /// words as its arguments; the `--bad-if-console` regexes, compiled.
    pub fn plan(&self) -> Result<Plan> {
        let bad_if_console = console::compile(&self.bad_if_console)?;
        let (command, script) = match &self.script {
            Some(f) => {
                let text = std::fs::read(f).with_context(|| format!("--script {}", f.display()))?;
                let mut c = vec!["/bin/sh".to_string(), command::SCRIPT_PATH.to_string()];
                c.extend(self.command.iter().cloned());
                (c, Some(text))
            }
            None => (self.command.clone(), None),
        };
        Ok(Plan {
            command,
            script,
            bad_if_console,
        })
    }

    /// How many times to run the check: `--repeat`, checked.
    pub fn repeat(&self) -> Result<u32> {
        match &self.repeat {
            Some(n) => Ok(u32::try_from(n.within(
                "--repeat",
                (1, "1"),
                MAX_REPEAT,
            )?)?),
            None => Ok(1),
        }
    }
}

impl CheckArgs {
    /// The request of a check of `kernel` under `vm`: what to run, how many times, which
    /// tests to read.
    fn request(&self, vm: VmRequest, kernel: KernelSource) -> Result<CheckRequest> {
        Ok(CheckRequest {
            kernel: for_backend(kernel, &vm),
            vm,
            plan: self.plan()?,
            repeat: self.repeat()?,
            tests: self.tests.resolve()?,
        })
    }

    /// The check as one line, as its options name it (a clean boot when none does).
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = &self.script {
            parts.push(format!("--script {}", s.display()));
        }
        for r in &self.bad_if_console {
            parts.push(format!("--bad-if-console {r:?}"));
        }
        if let Some(n) = &self.repeat {
            parts.push(format!("--repeat {n}"));
        }
        if let Ok(t) = self.tests.resolve() {
            parts.extend(crate::kunit::run::describe(&t));
        }
        if !self.command.is_empty() {
            parts.push(format!("-- {}", self.command.join(" ")));
        }
        if parts.is_empty() {
            "clean boot (bad on any warning, oops, BUG or panic)".into()
        } else {
            parts.join(" ")
        }
    }
}

impl ResultArgs {
    /// The tests a check reads; paths made absolute.
    pub fn resolve(&self) -> Result<TestRequest> {
        let cwd = std::env::current_dir()?;
        Ok(TestRequest {
            kunit: self.kunit.clone(),
            kunit_filter: self.kunit_filter.clone(),
            kunitconfig: self.kunitconfig.iter().map(|k| cwd.join(k)).collect(),
            ktap: self.ktap,
            kselftest: self.kselftest.clone(),
            test: self.test.clone(),
            junit: self.junit.as_ref().map(|j| cwd.join(j)),
            kunit_config: None,
        })
    }
}

/// `kernel` as `vm`'s backend boots it: a build for libvirt uses the PCI lane's trimmed
/// config (libvirt boots no fast-lane kernel); anything else is as it was.
fn for_backend(mut kernel: KernelSource, vm: &VmRequest) -> KernelSource {
    if let KernelSource::Build { build, .. } = &mut kernel {
        if vm.backend == Backend::Libvirt {
            build.lane = Some(crate::arch::Lane::Pci);
        }
    }
    kernel
}

impl CheckCmd {
    /// The check's request: fast init unless asked otherwise.
    pub fn request(&self, file: &FileConfig) -> Result<CheckRequest> {
        let vm = self
            .vm
            .resolve_with_arch(&file.vm, InitMode::Fast, &self.build)?;
        let kernel = self
            .kernel
            .source(self.rev.as_deref(), &self.build, &file.build)?;
        self.check.request(vm, kernel)
    }
}

impl BisectCmd {
    /// The request every step's check runs under, with the working state as its revision:
    /// each step sets its commit ([`CheckRequest::at`]). `--kernel` is refused by the command
    /// line before this.
    pub fn request(&self, file: &FileConfig) -> Result<CheckRequest> {
        let vm = self
            .vm
            .resolve_with_arch(&file.vm, InitMode::Fast, &self.build)?;
        let kernel = KernelSource::Build {
            rev: None,
            build: self.build.resolve(&file.build)?,
        };
        self.check.request(vm, kernel)
    }
}

impl BisectCmd {
    /// How steps are to be judged (bisect/mode.rs): `--repeat`, `--flaky`, `--metric` and
    /// their options, checked.
    pub fn judging(&self) -> Result<crate::bisect::Asked> {
        let endpoint_runs = match &self.endpoint_runs {
            Some(n) => u32::try_from(n.within("--endpoint-runs", (1, "1"), (30, "30"))?)?,
            None => crate::bisect::DEFAULT_ENDPOINT_RUNS,
        };
        let confidence = self.confidence.unwrap_or(crate::bisect::DEFAULT_CONFIDENCE);
        if !(confidence > 0.0 && confidence < 1.0) {
            bail!("--confidence {confidence}: give a number above 0 and below 1, such as 0.95");
        }
        Ok(crate::bisect::Asked {
            repeat: self
                .check
                .repeat
                .is_some()
                .then(|| self.check.repeat())
                .transpose()?,
            flaky: self.flaky,
            endpoint_runs,
            confidence,
            any_failure: self.any_failure,
            metric: self.metric.then_some(crate::bisect::MetricAsked {
                threshold: self.threshold,
                higher_is_better: self.higher_is_better,
            }),
        })
    }
}

impl BisectCmd {
    /// What this bisect invocation does; a new bisect's every input (`argv` is the command
    /// line after `cargo xtask`) resolved and checked before its first side effect.
    /// `--status`, `--reset` and `--resume` read no other option.
    pub fn resolve(&self, file: &FileConfig, argv: &[OsString]) -> Result<BisectRequest> {
        if self.status {
            return Ok(BisectRequest::Status);
        }
        if self.reset {
            return Ok(BisectRequest::Reset);
        }
        if self.resume {
            return Ok(BisectRequest::Resume);
        }
        let argv = argv_as_text(argv)?;
        let check = self.request(file)?;
        let (Some(good), Some(bad)) = (&self.good, &self.bad) else {
            bail!("a bisect needs GOOD and BAD: `cargo xtask bisect GOOD BAD -- CMD`");
        };
        Ok(BisectRequest::Start(Box::new(StartRequest {
            good: good.clone(),
            bad: bad.clone(),
            reverse: self.reverse,
            paths: self.paths.clone(),
            confirm: !self.no_confirm,
            check,
            check_line: self.check.describe(),
            judging: self.judging()?,
            argv,
        })))
    }
}

/// The command line as text, as a bisect's report keeps it: an argument that is not UTF-8 (a
/// `--script` file name) is refused up front.
fn argv_as_text(argv: &[OsString]) -> Result<Vec<String>> {
    argv.iter()
        .map(|a| {
            a.to_str().map(str::to_string).ok_or_else(|| {
                anyhow!(
                    "the argument {:?} is not UTF-8, and a bisect saves its command line as text \
                     for --resume: rename the file or pass a path that is UTF-8",
                    a.to_string_lossy()
                )
            })
        })
        .collect()
}

impl TrimConfigArgs {
    /// trim-config's options over xtask.toml's `[trim]` over the defaults; see
    /// [`TrimConfigArgs::resolve_in`].
    pub fn resolve(&self, file: &FileTrim, state: &StateDir) -> Result<TrimOptions> {
        let cwd = std::env::current_dir().unwrap_or_default();
        self.resolve_in(file, state, &cwd, &workspace_root())
    }

    /// The command line laid over [`TrimOptions::from_file`]: its base replaces the file's,
    /// its fragments and `--set`s come after the file's. Its paths are relative to `cwd`,
    /// xtask.toml's to `workspace`.
    pub fn resolve_in(
        &self,
        file: &FileTrim,
        state: &StateDir,
        cwd: &Path,
        workspace: &Path,
    ) -> Result<TrimOptions> {
        let arch = self.arch.unwrap_or(crate::arch::HOST);
        let lane = self.lane.unwrap_or(arch.default_lane());
        let mut opts = TrimOptions::from_file(file, arch, lane, state, workspace)?;
        if let Some(b) = &self.base {
            opts.base = Base::parse(b, cwd);
        }
        opts.fragments
            .extend(self.fragments.iter().map(|f| cwd.join(f)));
        opts.sets
            .extend(self.sets.iter().map(|s| ("--set".to_string(), s.clone())));
        opts.allow_dropped = self.allow_dropped;
        opts.host = self.host;
        if let Some(o) = &self.output {
            opts.output = cwd.join(o);
        }
        Ok(opts)
    }
}

impl QuickstartArgs {
    /// Quickstart's request: the options its check gets, checked now (before anything is
    /// installed or built) and passed on as given.
    pub fn resolve(&self, file: &FileVm) -> Result<QuickstartRequest> {
        self.vm.resolve(file, InitMode::Fast)?;
        Ok(QuickstartRequest {
            kernel: self.kernel.image()?,
            check_args: self.check_args(),
        })
    }
}

impl TestArgs {
    /// The suite's request; its kernels build as `cargo xtask build` with no option and no
    /// xtask.toml would.
    pub fn resolve(&self) -> Result<SuiteRequest> {
        Ok(SuiteRequest {
            setup: !self.no_setup,
            filter: self.filter.clone(),
            build: BuildArgs::default().resolve(&FileBuild::default())?,
        })
    }
}

impl MakeHistoryArgs {
    /// The commits to write: `--changes` by name, else the plan `--commits`, `--culprit` and
    /// `--broken` make.
    pub fn changes(&self) -> Result<Vec<Change>> {
        match (&self.changes[..], self.culprit) {
            ([], Some(culprit)) => history::plan(self.commits, culprit, self.broken),
            ([], None) => bail!("give --culprit N, or --changes"),
            (names, _) => names.iter().map(|n| history::change_named(n)).collect(),
        }
    }
}

impl BenchArgs {
    /// The bench's request: counts within their bounds, the boot bench's VM options in each
    /// init mode.
    pub fn resolve(&self, file: &FileConfig) -> Result<BenchRequest> {
        let count = |n: &Count, option: &str, min: Bound<u64>, max: Bound<u64>| {
            Ok::<_, anyhow::Error>(u32::try_from(n.within(option, min, max)?)?)
        };
        Ok(match &self.what {
            BenchWhat::Trim => BenchRequest::Trim,
            BenchWhat::Boot {
                runs,
                kernel,
                vm,
                arch,
                peers,
            } => {
                let runs = count(runs, "--runs", (1, "1"), (1000, "1000"))?;
                let build = BuildArgs {
                    arch: *arch,
                    ..BuildArgs::default()
                };
                let base = vm.resolve_with_arch(&file.vm, InitMode::Fast, &build)?;
                // The shell init's row names it with init= (the last one wins): the A/B of
                // the compiled fast init in one run.
                let script = format!("init={}", crate::vm::spec::GUEST_INIT);
                let script_append = match &vm.append {
                    Some(a) => format!("{a} {script}"),
                    None => script,
                };
                let variants = [
                    ("fast init", InitMode::Fast, vm.append.clone()),
                    (
                        "fast init, shell script",
                        InitMode::Fast,
                        Some(script_append),
                    ),
                    ("systemd init", InitMode::Systemd, vm.append.clone()),
                ]
                .into_iter()
                .map(|(label, init, append)| {
                    let args = VmArgs {
                        init: Some(init),
                        append,
                        ..(**vm).clone()
                    };
                    Ok(crate::bench::BootVariant {
                        label: label.to_string(),
                        vm: args.resolve_with_arch(&file.vm, InitMode::Fast, &build)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
                BenchRequest::Boot(Box::new(BootBench {
                    runs,
                    kernel: kernel.source(None, &build, &file.build)?,
                    base,
                    variants,
                    peers: *peers,
                }))
            }
            BenchWhat::Kunit { runs } => BenchRequest::Kunit {
                runs: count(runs, "--runs", (1, "1"), (100, "100"))?,
            },
            BenchWhat::Bisect {
                commits,
                flaky,
                headers,
            } => BenchRequest::Bisect {
                commits: count(commits, "--commits", (4, "4"), (4096, "4096"))?,
                flaky: *flaky,
                headers: *headers,
            },
        })
    }
}

impl BootCmd {
    /// The boot's request: systemd init unless asked otherwise.
    pub fn request(&self, file: &FileConfig) -> Result<BootRequest> {
        let vm = self
            .vm
            .resolve_with_arch(&file.vm, InitMode::Systemd, &self.build)?;
        if self.print_xml && vm.backend != Backend::Libvirt {
            bail!("--print-xml prints the libvirt domain XML: add --backend libvirt");
        }
        let kernel = self
            .kernel
            .source(self.rev.as_deref(), &self.build, &file.build)?;
        Ok(BootRequest {
            kernel: for_backend(kernel, &vm),
            vm,
            exec: self.exec.clone(),
            print_xml: self.print_xml,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host with 4 GiB and 4 CPUs.
    const HOST: Host = Host {
        mem_bytes: 4 << 30,
        cpus: 4,
    };

    fn resolve(args: &VmArgs, file: &FileVm) -> Result<VmRequest> {
        args.resolve_for(file, InitMode::Fast, &HOST)
    }

    fn cli(line: &[&str]) -> VmArgs {
        use clap::Parser;
        let argv = ["x", "check"].iter().chain(line);
        match super::super::Cli::try_parse_from(argv).unwrap().command {
            super::super::Command::Check(c) => c.vm,
            _ => unreachable!(),
        }
    }

    #[test]
    fn options_override_file_and_file_overrides_defaults() {
        let file = FileConfig::parse("[vm]\nmemory = \"2G\"\ncpus = 4\n").unwrap();
        let o = resolve(&cli(&["--cpus", "1"]), &file.vm).unwrap();
        assert_eq!(o.memory_mib, 2048);
        assert_eq!(o.cpus, 1);
        assert_eq!(o.init, InitMode::Fast);
        assert_eq!(o.boot_timeout, Duration::from_secs(60));
        let o = VmArgs::default()
            .resolve_for(&FileVm::default(), InitMode::Systemd, &HOST)
            .unwrap();
        assert_eq!(o.memory_mib, 1024);
        assert_eq!(o.cpus, DEFAULT_CPUS);
        assert_eq!(o.boot_timeout, Duration::from_secs(300));
        assert_eq!(o.timeout, Duration::from_secs(600));
        // A host with one CPU gets one by default.
        let one = Host { cpus: 1, ..HOST };
        let o = VmArgs::default().resolve_for(&FileVm::default(), InitMode::Fast, &one);
        assert_eq!(o.unwrap().cpus, 1);
    }

    #[test]
    fn values_out_of_range_name_the_option_and_the_limit() {
        let bad = |line: &[&str]| {
            resolve(&cli(line), &FileVm::default())
                .unwrap_err()
                .to_string()
        };
        // Each line is refused with the option, its value and the limit.
        for (line, limit) in [
            ("--memory 99999G", "at most 4.0 GiB (this host's RAM)"),
            (
                "--memory 99999999999999T",
                "at most 4.0 GiB (this host's RAM)",
            ),
            ("--memory 64M", "at least 128M (what a guest needs)"),
            ("--cpus 5", "at most 4 (this host's CPUs)"),
            ("--cpus 0", "at least 1"),
            ("--timeout 99999999999999999999", "at most 7d"),
            ("--boot-timeout 8d", "at most 7d"),
            ("--shutdown-timeout 0", "at least 1ms"),
        ] {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(bad(&words), format!("{line} is out of range: {limit}"));
        }
        // The edges themselves are in range.
        let o = resolve(
            &cli(&["--memory", "4G", "--cpus", "4", "--timeout", "7d"]),
            &FileVm::default(),
        )
        .unwrap();
        assert_eq!((o.memory_mib, o.cpus, o.timeout), (4096, 4, MAX_TIMEOUT.0));
        assert!(resolve(&cli(&["--memory", "128M"]), &FileVm::default()).is_ok());
    }

    #[test]
    fn xtask_toml_values_get_the_same_checks() {
        let file = |text: &str| FileConfig::parse(text).unwrap();
        let e = resolve(&VmArgs::default(), &file("[vm]\nmemory = \"99999G\"\n").vm);
        assert_eq!(
            e.unwrap_err().to_string(),
            "vm.memory in xtask.toml 99999G is out of range: at most 4.0 GiB (this host's RAM)"
        );
        let e = resolve(
            &VmArgs::default(),
            &file("[vm]\nboot_timeout = \"9999d\"\n").vm,
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "vm.boot_timeout in xtask.toml 9999d is out of range: at most 7d"
        );
        let e = BuildArgs::default().resolve(&file("[build]\njobs = 0\n").build);
        assert_eq!(
            e.unwrap_err().to_string(),
            "build.jobs in xtask.toml 0 is out of range: at least 1"
        );
        // Malformed values are named with their line.
        for (text, want) in [
            (
                "[vm]\nmemory = \"banana\"\n",
                "line 2 (memory = \"banana\"): invalid size",
            ),
            (
                "[vm]\ntimeout = \"soon\"\n",
                "line 2 (timeout = \"soon\"): invalid duration",
            ),
            ("[vm]\ncpus = -1\n", "line 2 (cpus = -1): invalid value"),
        ] {
            let e = FileConfig::parse(text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
    }

    #[test]
    fn jobs_are_bounded() {
        let jobs = |n: u64| {
            let args = BuildArgs {
                jobs: Some(n.into()),
                ..Default::default()
            };
            args.resolve(&FileBuild::default()).map(|o| o.jobs)
        };
        assert_eq!(jobs(1024).unwrap(), 1024);
        assert_eq!(
            jobs(1025).unwrap_err().to_string(),
            "--jobs 1025 is out of range: at most 1024"
        );
        assert_eq!(
            jobs(0).unwrap_err().to_string(),
            "--jobs 0 is out of range: at least 1"
        );
    }

    fn command(line: &[&str]) -> super::super::Command {
        use clap::Parser;
        let argv = ["x"].iter().chain(line);
        super::super::Cli::try_parse_from(argv).unwrap().command
    }

    /// ccache: on in a bisect and in a check unless `--no-ccache` or xtask.toml turns it off;
    /// the last of `--ccache` and `--no-ccache` wins.
    #[test]
    fn ccache_is_on_unless_turned_off() {
        let ccache = |args: &[&str], file: Option<bool>| {
            let file = FileConfig {
                build: FileBuild {
                    ccache: file,
                    ..Default::default()
                },
                ..Default::default()
            };
            let req = match command(args) {
                super::super::Command::Bisect(b) => b.request(&file).unwrap(),
                super::super::Command::Check(c) => c.request(&file).unwrap(),
                other => panic!("{other:?}"),
            };
            match req.kernel {
                KernelSource::Build { build, .. } => build.ccache,
                other => panic!("{other:?}"),
            }
        };
        assert!(ccache(&["bisect", "v1", "v2"], None));
        assert!(ccache(&["bisect", "v1", "v2"], Some(true)));
        assert!(!ccache(&["bisect", "v1", "v2"], Some(false)));
        assert!(ccache(&["bisect", "v1", "v2", "--ccache"], Some(false)));
        assert!(ccache(&["check"], None));
        assert!(!ccache(&["check", "--no-ccache"], None));
        assert!(!ccache(&["check", "--no-ccache"], Some(true)));
        assert!(ccache(&["check", "--no-ccache", "--ccache"], None));
        assert!(!ccache(&["check", "--ccache", "--no-ccache"], None));
    }

    /// A build for the libvirt backend uses the PCI lane's trimmed config (libvirt boots no
    /// fast-lane kernel), in a check, a bisect and a boot; the QEMU backend the arch's own.
    #[test]
    fn the_libvirt_backend_builds_the_pci_lane() {
        let lane = |args: &[&str]| {
            let file = FileConfig::default();
            let kernel = match command(args) {
                super::super::Command::Bisect(b) => b.request(&file).unwrap().kernel,
                super::super::Command::Check(c) => c.request(&file).unwrap().kernel,
                super::super::Command::Boot(b) => b.request(&file).unwrap().kernel,
                other => panic!("{other:?}"),
            };
            match kernel {
                KernelSource::Build { build, .. } => build.lane,
                other => panic!("{other:?}"),
            }
        };
        let pci = Some(crate::arch::Lane::Pci);
        assert_eq!(lane(&["check", "v1", "--backend", "libvirt"]), pci);
        assert_eq!(lane(&["bisect", "v1", "v2", "--backend", "libvirt"]), pci);
        assert_eq!(lane(&["boot", "--backend", "libvirt"]), pci);
        assert_eq!(lane(&["check", "v1"]), None);
        assert_eq!(lane(&["bisect", "v1", "v2", "--backend", "qemu"]), None);
    }

    /// A bisect stores its request for `--resume`: it reads back as the same request, the
    /// script's bytes and the regexes included, and each step checks its own commit.
    #[test]
    fn a_check_request_round_trips_as_json() {
        let dir = std::env::temp_dir().join(format!("xtask-request-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("t.sh");
        std::fs::write(&script, b"exit 0\n\xff").unwrap();
        let script = script.to_str().unwrap();
        let super::super::Command::Bisect(b) = command(&[
            "bisect",
            "v1",
            "v2",
            "--script",
            script,
            "--bad-if-console",
            "oops.*x",
            "--repeat",
            "3",
            "--accel",
            "tcg",
            "--init",
            "systemd",
            "--",
            "a",
            "b",
        ]) else {
            unreachable!()
        };
        let req = b.request(&FileConfig::default()).unwrap();
        let text = serde_json::to_string(&req).unwrap();
        let again: CheckRequest = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&again).unwrap(), text);
        assert_eq!(again.plan.script.as_deref(), Some(&b"exit 0\n\xff"[..]));
        assert_eq!(again.plan.bad_if_console[0].as_str(), "oops.*x");
        assert_eq!(again.plan.command[2..], ["a", "b"]);
        assert_eq!((again.repeat, again.vm.accel), (3, AccelAsked::Tcg));
        assert_eq!(
            again.vm.boot_timeout,
            default_boot_timeout(InitMode::Systemd)
        );
        let step = again.at("abc123");
        let KernelSource::Build { rev, build } = &step.kernel else {
            panic!("{:?}", step.kernel)
        };
        assert_eq!(
            (rev.as_deref(), build),
            (
                Some("abc123"),
                &b.build.resolve(&FileBuild::default()).unwrap()
            )
        );
        // A saved regex that no longer compiles is an error, not a panic.
        let bad = text.replace("oops.*x", "oops(");
        assert!(serde_json::from_str::<CheckRequest>(&bad).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `--kernel` boots that image: no build options are resolved for it.
    #[test]
    fn a_given_kernel_is_the_image_and_a_revision_is_a_build() {
        let exe = std::env::current_exe().unwrap();
        let super::super::Command::Check(c) =
            command(&["check", "--kernel", exe.to_str().unwrap()])
        else {
            unreachable!()
        };
        let req = c.request(&FileConfig::default()).unwrap();
        assert_eq!(req.kernel, KernelSource::Image(exe.canonicalize().unwrap()));
        assert_eq!(req.at("v1").kernel, req.kernel);
        let super::super::Command::Check(c) = command(&["check", "v6.1"]) else {
            unreachable!()
        };
        let req = c.request(&FileConfig::default()).unwrap();
        assert!(matches!(&req.kernel, KernelSource::Build { rev: Some(r), .. } if r == "v6.1"));
        let super::super::Command::Check(c) = command(&["check", "--kernel", "/no/such"]) else {
            unreachable!()
        };
        let e = c.request(&FileConfig::default()).unwrap_err().to_string();
        assert_eq!(e, "--kernel /no/such: no such file");
    }

    /// A bisect's line resolved: `--status`, `--reset` and `--resume` read no other option (a
    /// bad one among them is no error); a start has every input, its check as one line.
    #[test]
    fn a_bisect_resolves_to_what_it_does() {
        let file = FileConfig::default();
        let resolve = |line: &[&str]| {
            let super::super::Command::Bisect(b) = command(line) else {
                unreachable!()
            };
            let argv: Vec<OsString> = line.iter().map(OsString::from).collect();
            b.resolve(&file, &argv)
        };
        for (flag, want) in [
            ("--status", "Status"),
            ("--reset", "Reset"),
            ("--resume", "Resume"),
        ] {
            let r = resolve(&["bisect", flag, "--memory", "1T"]).unwrap();
            assert_eq!(format!("{r:?}"), want);
        }
        let line = [
            "bisect",
            "v1",
            "v2",
            "--reverse",
            "--paths",
            "fs",
            "mm",
            "--no-confirm",
            "--repeat",
            "3",
            "--bad-if-console",
            "oops",
            "--",
            "uname",
            "-r",
        ];
        let BisectRequest::Start(s) = resolve(&line).unwrap() else {
            panic!()
        };
        assert_eq!((s.good.as_str(), s.bad.as_str()), ("v1", "v2"));
        assert!(s.reverse && !s.confirm);
        assert_eq!(s.paths, ["fs", "mm"]);
        assert_eq!(s.argv, line);
        assert_eq!(s.judging.repeat, Some(3));
        assert_eq!(s.check.repeat, 3);
        assert_eq!(
            s.check_line,
            "--bad-if-console \"oops\" --repeat 3 -- uname -r"
        );
        let BisectRequest::Start(s) = resolve(&["bisect", "v1", "v2"]).unwrap() else {
            panic!()
        };
        assert!(!s.reverse && s.confirm && s.paths.is_empty());
        assert_eq!(
            s.check_line,
            "clean boot (bad on any warning, oops, BUG or panic)"
        );
        assert_eq!(s.judging, crate::bisect::Asked::default());
        // A start's options are checked: one out of range is an error naming it.
        let e = resolve(&["bisect", "v1", "v2", "--confidence", "1"]).unwrap_err();
        assert!(e.to_string().starts_with("--confidence 1:"), "{e}");
        let e = resolve(&["bisect", "v1", "v2", "--memory", "1T"]).unwrap_err();
        assert!(
            e.to_string().starts_with("--memory 1T is out of range"),
            "{e}"
        );
    }

    /// A bisect keeps its command line as text: an argument that is not UTF-8 is refused
    /// before anything is done, naming it.
    #[test]
    fn a_bisect_refuses_a_command_line_that_is_not_text() {
        use std::os::unix::ffi::OsStringExt;
        let super::super::Command::Bisect(b) = command(&["bisect", "v1", "v2"]) else {
            unreachable!()
        };
        let argv = [
            OsString::from("bisect"),
            OsString::from_vec(b"x\xff".to_vec()),
        ];
        let e = b.resolve(&FileConfig::default(), &argv).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("the argument \"x\u{fffd}\" is not UTF-8"),
            "{e}"
        );
    }

    /// trim-config's options over xtask.toml's: the base replaced, fragments and sets after
    /// the file's, the output and paths against the current directory.
    #[test]
    fn trim_options_merge_command_line_over_xtask_toml() {
        let args = TrimConfigArgs {
            arch: None,
            lane: None,
            base: None,
            fragments: vec!["mine.config".into()],
            sets: vec!["CONFIG_KASAN=y".into()],
            allow_dropped: false,
            host: true,
            output: None,
        };
        let file = FileTrim {
            base: Some("defconfig".into()),
            fragments: vec!["kconfig/debug.config".into()],
            set: vec!["CONFIG_SLUB=y".into()],
        };
        let state = StateDir::new("/state".into());
        let o = args
            .resolve_in(&file, &state, Path::new("/cwd"), Path::new("/ws"))
            .unwrap();
        assert_eq!(o.lane, crate::arch::Lane::Fast);
        assert_eq!(o.base, Base::Target("defconfig".into()));
        let f: Vec<&str> = o.fragments.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            f,
            [
                "/ws/kconfig/vm.config",
                "/ws/kconfig/x86_64.config",
                "/ws/kconfig/debug.config",
                "/cwd/mine.config"
            ]
        );
        assert_eq!(
            o.sets,
            [
                (
                    "xtask.toml [trim] set".to_string(),
                    "CONFIG_SLUB=y".to_string()
                ),
                ("--set".to_string(), "CONFIG_KASAN=y".to_string())
            ]
        );
        assert!(o.host);
        assert_eq!(o.output, Path::new("/state/config/trimmed.config"));

        let args = TrimConfigArgs {
            base: Some("old.config".into()),
            output: Some("out.config".into()),
            ..args
        };
        let o = args
            .resolve_in(
                &FileTrim::default(),
                &state,
                Path::new("/cwd"),
                Path::new("/ws"),
            )
            .unwrap();
        assert_eq!(o.base, Base::File("/cwd/old.config".into()));
        assert_eq!(o.output, Path::new("/cwd/out.config"));
        assert_eq!(o.fragments.len(), 3);

        // The PCI lane's fragments follow the arch's, before the user's.
        let pci = TrimConfigArgs {
            lane: Some(crate::arch::Lane::Pci),
            output: None,
            ..args
        };
        let o = pci
            .resolve_in(&file, &state, Path::new("/c"), Path::new("/ws"))
            .unwrap();
        assert_eq!(o.output, Path::new("/state/config/trimmed-pci.config"));
        let f: Vec<&str> = o.fragments.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            f,
            [
                "/ws/kconfig/vm.config",
                "/ws/kconfig/x86_64.config",
                "/ws/kconfig/pci.config",
                "/ws/kconfig/x86_64-pci.config",
                "/ws/kconfig/debug.config",
                "/c/mine.config"
            ]
        );
        // arm64 has the PCI lane only.
        let arm = TrimConfigArgs {
            arch: Some(&crate::arch::ARM64),
            lane: Some(crate::arch::Lane::Fast),
            ..pci
        };
        let e = arm
            .resolve_in(&file, &state, Path::new("/c"), Path::new("/ws"))
            .unwrap_err();
        assert!(e.to_string().contains("arm64 has no fast lane"), "{e}");
    }

    /// Quickstart checks its check's options before anything is done, and passes each on.
    #[test]
    fn quickstart_checks_its_options_and_passes_them_on() {
        let resolve = |line: &[&str]| {
            let super::super::Command::Quickstart(q) = command(line) else {
                unreachable!()
            };
            q.resolve(&FileVm::default())
        };
        let r = resolve(&["quickstart", "--init", "systemd", "--keep"]).unwrap();
        assert_eq!(r.kernel, None);
        assert_eq!(r.check_args, ["--init", "systemd", "--keep"]);
        let exe = std::env::current_exe().unwrap();
        let r = resolve(&["quickstart", "--kernel", exe.to_str().unwrap()]).unwrap();
        assert_eq!(r.kernel, Some(exe.canonicalize().unwrap()));
        let e = resolve(&["quickstart", "--kernel", "/no/such"]).unwrap_err();
        assert_eq!(e.to_string(), "--kernel /no/such: no such file");
        let e = resolve(&["quickstart", "--cpus", "0"]).unwrap_err();
        assert_eq!(e.to_string(), "--cpus 0 is out of range: at least 1");
    }

    /// The benches' counts are checked against their bounds, each error naming its option;
    /// the boot bench gets its VM options in both init modes.
    #[test]
    fn a_bench_resolves_its_counts_and_variants() {
        let resolve = |line: &[&str]| {
            let super::super::Command::Bench(b) = command(line) else {
                unreachable!()
            };
            b.resolve(&FileConfig::default())
        };
        for (line, want) in [
            (
                "bench boot --runs 0",
                "--runs 0 is out of range: at least 1",
            ),
            (
                "bench kunit --runs 101",
                "--runs 101 is out of range: at most 100",
            ),
            (
                "bench bisect --commits 3",
                "--commits 3 is out of range: at least 4",
            ),
        ] {
            let words: Vec<&str> = line.split(' ').collect();
            assert_eq!(resolve(&words).unwrap_err().to_string(), want);
        }
        let exe = std::env::current_exe().unwrap();
        let line = [
            "bench",
            "boot",
            "--kernel",
            exe.to_str().unwrap(),
            "--cpus",
            "1",
        ];
        let crate::bench::BenchRequest::Boot(b) = resolve(&line).unwrap() else {
            panic!()
        };
        assert_eq!(b.runs, 5);
        assert_eq!(b.kernel, KernelSource::Image(exe.canonicalize().unwrap()));
        let inits: Vec<InitMode> = b.variants.iter().map(|v| v.vm.init).collect();
        assert_eq!(inits, [InitMode::Fast, InitMode::Fast, InitMode::Systemd]);
        let appends: Vec<Option<&str>> =
            b.variants.iter().map(|v| v.vm.append.as_deref()).collect();
        assert_eq!(
            appends,
            [None, Some("init=/usr/local/sbin/xtask-init"), None]
        );
        assert!(b.variants.iter().all(|v| v.vm.cpus == 1) && b.base.cpus == 1);
        let r = resolve(&["bench", "bisect", "--flaky"]).unwrap();
        assert_eq!(
            format!("{r:?}"),
            "Bisect { commits: 64, flaky: true, headers: false }"
        );
    }

    /// make-history's commits: by name, or planned around the culprit; neither is an error.
    #[test]
    fn a_history_is_named_or_planned() {
        let changes = |line: &[&str]| {
            let super::super::Command::MakeHistory(h) = command(line) else {
                unreachable!()
            };
            h.changes()
        };
        let c = changes(&["make-history", "--branch", "b", "--changes", "warn,fix"]).unwrap();
        assert_eq!(c.len(), 2);
        let c = changes(&["make-history", "--branch", "b", "--culprit", "3"]).unwrap();
        assert_eq!((c.len(), &c[3]), (16, &Change::Warn));
        let e = changes(&["make-history", "--branch", "b", "--changes", "nope"]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
