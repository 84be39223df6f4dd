//! The command-line surface: every subcommand and option, parsed by clap.

mod resolve;

use crate::arch::Arch;
use crate::options::AccelAsked;
use crate::options::InitramfsMode;
use crate::options::{Backend, InitMode};
use crate::units::{Count, Size, Span};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Build, boot, check and bisect Linux kernels in throwaway VMs.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
pub struct Cli {
    /// The kernel git tree [default: $KERNEL_TREE, then xtask.toml, then ./linux]
    #[arg(long, global = true, value_name = "PATH")]
    pub tree: Option<PathBuf>,
    /// Where the rootfs, build dirs, cache and run logs live [default: target/xtask]
    #[arg(long, global = true, value_name = "PATH")]
    pub state_dir: Option<PathBuf>,
    /// Print every external command as it runs
    #[arg(short, long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build the Debian root filesystem (build container and guest root)
    SetupRootfs(SetupRootfsArgs),
    /// Make the smallest kernel config that still boots a real userspace
    TrimConfig(TrimConfigArgs),
    /// Build a kernel (cached by commit, config and toolchain)
    Build(BuildCmd),
    /// Boot a kernel in a VM with an interactive console, or run one command
    Boot(BootCmd),
    /// Boot a kernel and judge it: exit 0 good, 1 bad, 125 untestable, 128 not the kernel's doing
    Check(CheckCmd),
    /// Find the first bad commit between GOOD and BAD with `git bisect`
    Bisect(BisectCmd),
    /// Check the host: tools, versions, KVM
    Doctor(DoctorArgs),
    /// List (and with --install, install) the Debian packages the toolkit needs
    Deps(DepsArgs),
    /// From nothing to a verdict: deps, rootfs, kernel tree, config, build, check
    Quickstart(QuickstartArgs),
    /// Inspect and trim the build cache
    Cache(CacheArgs),
    /// List and remove the persistent layers that `--rw` writes the guest's changes into
    Layer(LayerArgs),
    /// Measure against baselines run in the same invocation
    Bench(BenchArgs),
    /// Install what the tests need and run the whole test suite
    Test(TestArgs),
    /// Print shell completions
    Completions(CompletionsArgs),
    /// Write a synthetic history on a kernel tree (for the bisect tests and benchmark)
    #[command(hide = true)]
    MakeHistory(MakeHistoryArgs),
}

#[derive(Args, Debug)]
pub struct MakeHistoryArgs {
    /// The branch to write (replaced when it exists)
    #[arg(long)]
    pub branch: String,
    /// The commit the history starts from
    #[arg(long, default_value = "base")]
    pub base: String,
    /// How many commits
    #[arg(long, default_value_t = 16)]
    pub commits: usize,
    /// Which commit (0-based) adds the boot warning
    #[arg(long, required_unless_present = "changes")]
    pub culprit: Option<usize>,
    /// Which commit (0-based) breaks the build (the next one fixes it)
    #[arg(long)]
    pub broken: Option<usize>,
    /// The commits by name instead, in order (comment, code, warn, break, fix, other-warn,
    /// other-fix, marker, delay)
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["culprit", "broken"])]
    pub changes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SetupRootfsArgs {
    /// The guest root's architecture (the build container is always the host's) [default: the host's]
    #[arg(long, value_name = "ARCH", value_parser = Arch::by_name)]
    pub arch: Option<&'static Arch>,
    /// Debian suite [default: bookworm]
    #[arg(long)]
    pub suite: Option<String>,
    /// Debian mirror [default: http://deb.debian.org/debian]
    #[arg(long)]
    pub mirror: Option<String>,
    /// Rebuild even when the recipe is unchanged
    #[arg(long)]
    pub force: bool,
    /// Open a shell inside the rootfs container instead of building it
    #[arg(long)]
    pub shell: bool,
    /// With --shell: run this command in the container instead, and exit with its status
    #[arg(last = true, requires = "shell", value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TrimConfigArgs {
    /// The architecture to configure for: x86_64 or arm64 [default: the host's]
    #[arg(long, value_name = "ARCH", value_parser = Arch::by_name)]
    pub arch: Option<&'static Arch>,
    /// The machine the config is for: fast (virtio-mmio, no PCI or ACPI) or pci (q35, libvirt) [default: the arch's first: fast on x86_64, pci on arm64]
    #[arg(long, value_name = "LANE")]
    pub lane: Option<crate::arch::Lane>,
    /// tinyconfig, defconfig, localmodconfig, olddefconfig or a config file [default: tinyconfig]
    #[arg(long, value_name = "BASE")]
    pub base: Option<String>,
    /// A config fragment merged after the base (repeatable; kconfig/vm.config and the arch's come first)
    #[arg(long = "fragment", value_name = "FILE")]
    pub fragments: Vec<PathBuf>,
    /// One option merged last: CONFIG_X=y|m|n|VALUE (repeatable)
    #[arg(long = "set", value_name = "CONFIG_X=VALUE")]
    pub sets: Vec<String>,
    /// Warn instead of failing when an asked-for option did not survive olddefconfig
    #[arg(long)]
    pub allow_dropped: bool,
    /// Run make with the host's tools instead of inside the rootfs container
    #[arg(long)]
    pub host: bool,
    /// Where to write the config [default: <state-dir>/config/trimmed.config; trimmed-ARCH.config for another arch, trimmed-pci.config for x86_64's pci lane]
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Options of every command that may build a kernel.
#[derive(Args, Debug, Clone, Default)]
pub struct BuildArgs {
    /// The kernel's architecture (and the guest's): x86_64 or arm64 [default: the host's]
    #[arg(long, value_name = "ARCH", value_parser = Arch::by_name)]
    pub arch: Option<&'static Arch>,
    /// Kernel config to build with [default: the arch's trimmed config in <state-dir>/config/]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Parallel make jobs, 1 to 1024 [default: number of CPUs]
    #[arg(long, short, value_name = "N", value_parser = Count::parse)]
    pub jobs: Option<Count>,
    /// Build with the host's toolchain instead of the rootfs container
    #[arg(long)]
    pub host: bool,
    /// Use ccache (the default; `ccache = false` in xtask.toml turns it off)
    #[arg(long, overrides_with = "no_ccache")]
    pub ccache: bool,
    /// Build without ccache
    #[arg(long, overrides_with = "ccache")]
    pub no_ccache: bool,
    /// When to make an initramfs [default: auto]
    #[arg(long, value_enum)]
    pub initramfs: Option<InitramfsMode>,
    /// Build again even when the cache holds a failure for this key
    #[arg(long)]
    pub retry_failed: bool,
    /// Time limit for each make run of the build [default: 3h]
    #[arg(long, value_name = "DURATION", value_parser = Span::parse)]
    pub build_timeout: Option<Span>,
}

#[derive(Args, Debug)]
pub struct BuildCmd {
    /// Revision to build [default: the tree's working state, uncommitted changes included]
    pub rev: Option<String>,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// `--kernel`: of the commands that boot one kernel (not of bisect, which builds each step).
#[derive(Args, Debug, Clone, Default)]
pub struct KernelArg {
    /// Boot this bzImage instead of building
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
}

/// Options of every command that boots a VM.
#[derive(Args, Debug, Clone, Default)]
pub struct VmArgs {
    /// Guest memory, 128M up to the host's RAM, for example 1G or 512M [default: 1G]
    #[arg(long, value_name = "SIZE", value_parser = Size::parse)]
    pub memory: Option<Size>,
    /// Guest vCPUs, 1 up to the host's CPUs [default: 2, or the host's CPUs when fewer]
    #[arg(long, value_name = "N", value_parser = Count::parse)]
    pub cpus: Option<Count>,
    /// Accelerator [default: auto]
    #[arg(long, value_enum)]
    pub accel: Option<AccelAsked>,
    /// VM backend [default: qemu]
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// libvirt connection URI for --backend libvirt [default: qemu:///system]
    #[arg(long, value_name = "URI")]
    pub connect: Option<String>,
    /// Extra kernel command line arguments
    #[arg(long, value_name = "ARGS")]
    pub append: Option<String>,
    /// Keep the guest's writes in a persistent layer on the host, never in the rootfs
    /// (default: read-only root with a tmpfs overlay, nothing kept)
    #[arg(long)]
    pub rw: bool,
    /// The layer --rw writes into [default: default]
    #[arg(long, value_name = "NAME", requires = "rw")]
    pub layer: Option<String>,
    /// Share this host dir read-write with the guest, at /mnt/share (coredumps, results)
    #[arg(long, value_name = "DIR")]
    pub share: Option<PathBuf>,
    /// Guest init [default: fast for check and bisect, systemd for boot]
    #[arg(long, value_enum)]
    pub init: Option<InitMode>,
    /// Time limit for the command in the guest, at most 7d [default: 10m]
    #[arg(long, value_name = "DURATION", value_parser = Span::parse)]
    pub timeout: Option<Span>,
    /// Time limit from power-on until the guest agent answers [default: 60s fast, 300s systemd]
    #[arg(long, value_name = "DURATION", value_parser = Span::parse)]
    pub boot_timeout: Option<Span>,
    /// Time limit for the guest to power off before it is killed [default: 10s]
    #[arg(long, value_name = "DURATION", value_parser = Span::parse)]
    pub shutdown_timeout: Option<Span>,
    /// Leave the VM running at the end (libvirt backend: for `virsh console`)
    #[arg(long)]
    pub keep: bool,
}

impl VmArgs {
    /// The options as a command line that parses back to the same options: how quickstart
    /// passes every one it was given on to its check.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        use std::ffi::OsString;
        fn value<T: ValueEnum>(v: &T) -> OsString {
            v.to_possible_value()
                .map_or_else(OsString::new, |p| p.get_name().into())
        }
        let text = |x: &dyn std::fmt::Display| OsString::from(x.to_string());
        let given: [(&str, Option<OsString>); 12] = [
            ("share", self.share.clone().map(PathBuf::into_os_string)),
            ("memory", self.memory.as_ref().map(|x| text(x))),
            ("cpus", self.cpus.as_ref().map(|x| text(x))),
            ("accel", self.accel.as_ref().map(value)),
            ("backend", self.backend.as_ref().map(value)),
            ("connect", self.connect.clone().map(Into::into)),
            ("append", self.append.clone().map(Into::into)),
            ("layer", self.layer.clone().map(Into::into)),
            ("init", self.init.as_ref().map(value)),
            ("timeout", self.timeout.as_ref().map(|x| text(x))),
            ("boot-timeout", self.boot_timeout.as_ref().map(|x| text(x))),
            (
                "shutdown-timeout",
                self.shutdown_timeout.as_ref().map(|x| text(x)),
            ),
        ];
        let mut a = Vec::new();
        for (name, value) in given {
            if let Some(value) = value {
                a.push(OsString::from(format!("--{name}")));
                a.push(value);
            }
        }
        for (name, on) in [("rw", self.rw), ("keep", self.keep)] {
            if on {
                a.push(OsString::from(format!("--{name}")));
            }
        }
        a
    }
}

/// Options that parse but make no sense together; the line says why (exit 129, as for any
/// command line that does not parse).
pub fn refusal(cli: &Cli) -> Option<String> {
    match &cli.command {
        Command::Bisect(b) if b.kernel.is_some() => Some(
            "bisect cannot take --kernel: it builds and boots each step's own commit, and one \
             kernel booted at every step would name a culprit without testing any"
                .into(),
        ),
        _ => None,
    }
}

#[derive(Args, Debug)]
pub struct BootCmd {
    /// Revision to boot [default: the tree's working state]
    #[arg(conflicts_with = "kernel")]
    pub rev: Option<String>,
    /// Run this command in the guest, print its output and exit with its status
    #[arg(long, value_name = "CMD")]
    pub exec: Option<String>,
    /// Print the libvirt domain XML and exit (libvirt backend)
    #[arg(long)]
    pub print_xml: bool,
    #[command(flatten)]
    pub kernel: KernelArg,
    #[command(flatten)]
    pub vm: VmArgs,
    #[command(flatten)]
    pub build: BuildArgs,
}

/// How a check judges a kernel.
#[derive(Args, Debug, Clone, Default)]
pub struct CheckArgs {
    /// Bad when the console matches this regex (repeatable)
    #[arg(long = "bad-if-console", value_name = "REGEX")]
    pub bad_if_console: Vec<String>,
    /// A script copied into the guest and run as the check
    #[arg(long, value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Run the check N times, 1 to 1000; bad if any run is bad [default: 1]
    #[arg(long, value_name = "N", value_parser = Count::parse)]
    pub repeat: Option<Count>,
    /// The command to run in the guest [default: none, the check is a clean boot]
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub tests: ResultArgs,
}

/// How a check reads test results (KTAP) instead of an exit code.
#[derive(Args, Debug, Clone, Default)]
pub struct ResultArgs {
    /// Run these KUnit suites (named as their KTAP names them; globs) built into the kernel
    /// [default with no SUITE: every suite the config builds]
    #[arg(long, num_args = 0.., value_name = "SUITE_GLOB")]
    pub kunit: Option<Vec<String>>,
    /// KUnit's filter glob (`kunit.filter_glob`, SUITE[.TEST]) [default: the one SUITE_GLOB]
    #[arg(long, value_name = "GLOB")]
    pub kunit_filter: Option<String>,
    /// A .kunitconfig to build with, instead of the suites' own (repeatable; implies --kunit)
    #[arg(long, value_name = "PATH")]
    pub kunitconfig: Vec<PathBuf>,
    /// The command's stdout is KTAP: judge its tests
    #[arg(long, conflicts_with = "kunit")]
    pub ktap: bool,
    /// Build these selftests of the tree (tools/testing/selftests/TARGET), run them in the
    /// guest with run_kselftest.sh and judge its TAP
    #[arg(long, num_args = 1.., value_name = "TARGET", conflicts_with_all = ["kunit", "ktap"])]
    pub kselftest: Vec<String>,
    /// Judge only this test's result (full name `suite.test`, or a unique last part)
    #[arg(long, value_name = "NAME")]
    pub test: Option<String>,
    /// Write the test results as JUnit XML to FILE
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct CheckCmd {
    /// Revision to check [default: the tree's working state]
    #[arg(conflicts_with = "kernel")]
    pub rev: Option<String>,
    /// Print the result as JSON on stdout
    #[arg(long)]
    pub json: bool,
    /// Judge a saved run again from its logs instead of booting
    #[arg(long, value_name = "DIR")]
    pub from_run: Option<PathBuf>,
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub kernel: KernelArg,
    #[command(flatten)]
    pub vm: VmArgs,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Args, Debug)]
pub struct BisectCmd {
    /// The known good revision
    #[arg(required_unless_present_any = ["resume", "status", "reset"])]
    pub good: Option<String>,
    /// The known bad revision
    #[arg(required_unless_present_any = ["resume", "status", "reset"])]
    pub bad: Option<String>,
    /// Find the first good commit (a fix) instead of the first bad one
    #[arg(long)]
    pub reverse: bool,
    /// Only consider commits that touch these paths
    #[arg(long, num_args = 1.., value_name = "PATH")]
    pub paths: Vec<String>,
    /// Continue an interrupted bisect
    #[arg(long, conflicts_with_all = ["status", "reset"])]
    pub resume: bool,
    /// Show where the bisect stands
    #[arg(long, conflicts_with = "reset")]
    pub status: bool,
    /// End the bisect and clean up its state
    #[arg(long)]
    pub reset: bool,
    /// Do not confirm the culprit (by default it is tested again, with its parent, and the
    /// bad end with the culprit reverted)
    #[arg(long)]
    pub no_confirm: bool,
    /// Judge steps as flaky whatever the BAD end's runs show (they are found flaky when BAD
    /// is good in one of its --endpoint-runs)
    #[arg(long, conflicts_with_all = ["repeat", "metric"])]
    pub flaky: bool,
    /// Runs of the BAD end that tell a flaky check from one that fails every time, 1 to 30
    /// [default: 5]
    #[arg(long, value_name = "N", value_parser = Count::parse)]
    pub endpoint_runs: Option<Count>,
    /// The confidence a flaky bisect must reach (the probability, given its runs, that the
    /// culprit named is right), above 0 and below 1 [default: 0.95]
    #[arg(long, value_name = "C")]
    pub confidence: Option<f64>,
    /// Count any failure of a run as bad, not only the symptom the BAD end showed
    #[arg(long)]
    pub any_failure: bool,
    /// The command prints a number (a boot time, a latency): bisect where it got worse
    #[arg(long, conflicts_with_all = ["repeat", "reverse"], requires = "command")]
    pub metric: bool,
    /// With --metric: bad past this number [default: halfway between the ends' medians]
    #[arg(long, value_name = "X", requires = "metric")]
    pub threshold: Option<f64>,
    /// With --metric: a higher number is better (bad below the threshold)
    #[arg(long, requires = "metric")]
    pub higher_is_better: bool,
    /// Not offered: each step boots its own commit's build. Parsed only so that the refusal
    /// says why ([`refusal`]).
    #[arg(long, hide = true, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    #[command(flatten)]
    pub check: CheckArgs,
    #[command(flatten)]
    pub vm: VmArgs,
    #[command(flatten)]
    pub build: BuildArgs,
}

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Probe KVM again instead of using the answer cached for this host boot
    #[arg(long)]
    pub reprobe: bool,
}

#[derive(Args, Debug)]
pub struct DepsArgs {
    /// apt-get install the missing packages (with sudo when not root)
    #[arg(long)]
    pub install: bool,
    /// Install the peers `bench boot --peers` compares with (virtme-ng in a venv, vmtest)
    /// in the state dir
    #[arg(long)]
    pub peers: bool,
}

#[derive(Args, Debug)]
pub struct QuickstartArgs {
    #[command(flatten)]
    pub kernel: KernelArg,
    #[command(flatten)]
    pub vm: VmArgs,
}

impl QuickstartArgs {
    /// Every option given, as the command line its check is run with.
    pub fn check_args(&self) -> Vec<std::ffi::OsString> {
        let mut a = Vec::new();
        if let Some(k) = &self.kernel.kernel {
            a.push("--kernel".into());
            a.push(k.clone().into_os_string());
        }
        a.extend(self.vm.to_args());
        a
    }
}

#[derive(Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub action: CacheAction,
}

#[derive(Subcommand, Debug)]
pub enum CacheAction {
    /// List cache entries, newest first
    Ls,
    /// Show one entry by key (or key prefix) or revision
    Show {
        /// A cache key, a prefix of one, or a revision of the tree
        what: String,
    },
    /// Drop least recently used entries until the cache fits
    Gc {
        /// Largest total size to keep, for example 20G (0 empties the cache)
        #[arg(long, value_name = "SIZE", value_parser = Size::parse)]
        max_size: Size,
    },
}

#[derive(Args, Debug)]
pub struct LayerArgs {
    #[command(subcommand)]
    pub action: LayerAction,
}

#[derive(Subcommand, Debug)]
pub enum LayerAction {
    /// List the layers with their sizes
    Ls,
    /// Remove a layer (the guest's writes in it are lost)
    Rm {
        /// The layer's name
        name: String,
    },
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchWhat,
}

#[derive(Subcommand, Debug)]
pub enum BenchWhat {
    /// CPU seconds to build the trimmed config against defconfig + kvm_guest.config
    Trim,
    /// `check -- true` in both init modes against a hand-written minimal QEMU command
    Boot {
        /// Boots per variant, 1 to 1000; medians are reported
        #[arg(long, default_value = "5", value_parser = Count::parse)]
        runs: Count,
        /// The guest's architecture [default: the host's]
        #[arg(long, value_name = "ARCH", value_parser = Arch::by_name)]
        arch: Option<&'static Arch>,
        #[command(flatten)]
        kernel: KernelArg,
        #[command(flatten)]
        vm: Box<VmArgs>,
        /// Add rows for virtme-ng and vmtest booting the same kernel to the same command
        /// (those `deps --peers` installed)
        #[arg(long)]
        peers: bool,
    },
    /// `check --kunit example` against the kernel's `kunit.py run` (UML and QEMU), same suite
    Kunit {
        /// Runs per variant after the first, 1 to 100; medians are reported
        #[arg(long, default_value = "3", value_parser = Count::parse)]
        runs: Count,
    },
    /// `bisect` against a plain `git bisect run` of the article's script
    Bisect {
        /// Commits in the synthetic history, 4 to 4096
        #[arg(long, default_value = "64", value_parser = Count::parse)]
        commits: Count,
        /// 10 seeded bisects of a check bad half the time at and after the culprit (each run
        /// a seeded stand-in, not a boot; git bisect over the real history)
        #[arg(long)]
        flaky: bool,
        /// Every fourth commit declares a global in a widely included header (ccache's case)
        #[arg(long)]
        headers: bool,
    },
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Skip installing packages and preparing the rootfs, kernel tree and kernel
    #[arg(long)]
    pub no_setup: bool,
    /// Only run the tests of this file of tests/tests (e2e_cli), or whose name contains this
    pub filter: Option<String>,
}

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    pub shell: clap_complete::Shell,
}

/// The line that names the first argument that is not UTF-8, for clap's error that does not:
/// `the value of --append is not UTF-8 ("quiet\u{fffd}"): …`. Only paths may be any bytes.
pub fn non_utf8_argument(args: &[std::ffi::OsString]) -> Option<String> {
    let i = args.iter().position(|a| a.to_str().is_none())?;
    let lossy = args[i].to_string_lossy();
    let what = match lossy.split_once('=') {
        Some((opt, _)) if opt.starts_with("--") => format!("the value of {opt}"),
        _ => match i.checked_sub(1).and_then(|p| args[p].to_str()) {
            Some(opt) if opt.starts_with('-') && opt != "--" => format!("the value of {opt}"),
            _ => format!("argument {i}"),
        },
    };
    Some(format!(
        "{what} is not UTF-8 ({lossy:?}): only paths may hold other bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn quickstart(args: &[&str]) -> QuickstartArgs {
        let cli = Cli::try_parse_from(["xtask", "quickstart"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Quickstart(q) => q,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_vm_option_is_passed_on() {
        let all = [
            "--kernel",
            "/k",
            "--memory",
            "2G",
            "--cpus",
            "1",
            "--accel",
            "tcg",
            "--backend",
            "libvirt",
            "--connect",
            "qemu:///session",
            "--append",
            "quiet loglevel=1",
            "--rw",
            "--layer",
            "bug",
            "--share",
            "/tmp",
            "--init",
            "systemd",
            "--timeout",
            "5m",
            "--boot-timeout",
            "90s",
            "--shutdown-timeout",
            "3s",
            "--keep",
        ];
        let q = quickstart(&all);
        let again: Vec<String> = q
            .check_args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        // Every option, and each once: the same options parse back.
        assert_eq!(again.len(), all.len());
        let again: Vec<&str> = again.iter().map(String::as_str).collect();
        assert_eq!(format!("{:?}", quickstart(&again)), format!("{q:?}"));
        assert!(quickstart(&[]).check_args().is_empty());
        // And check takes that line.
        let check = ["x", "check"].iter().chain(&again);
        assert!(Cli::try_parse_from(check).is_ok());
    }

    /// `check REV --kernel IMG` would boot IMG and say nothing of REV: the line is refused.
    #[test]
    fn a_revision_and_a_kernel_image_are_refused_together() {
        for cmd in ["check", "boot"] {
            let e = Cli::try_parse_from(["xtask", cmd, "v1", "--kernel", "/k"]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict, "{e}");
            assert!(Cli::try_parse_from(["xtask", cmd, "v1"]).is_ok());
            assert!(Cli::try_parse_from(["xtask", cmd, "--kernel", "/k"]).is_ok());
        }
    }

    #[test]
    fn bisect_refuses_kernel() {
        let cli = Cli::try_parse_from(["xtask", "bisect", "v1", "v2", "--kernel", "/k"]).unwrap();
        assert!(refusal(&cli).unwrap().contains("--kernel"));
        let cli = Cli::try_parse_from(["xtask", "check", "--kernel", "/k"]).unwrap();
        assert_eq!(refusal(&cli), None);
        // Not offered: bisect's help does not list it.
        let mut cmd = Cli::command();
        let bisect = cmd.find_subcommand_mut("bisect").unwrap();
        let help = bisect.render_long_help().to_string();
        assert!(!help.contains("--kernel"), "{help}");
        assert!(help.contains("--memory"), "{help}");
    }

    #[test]
    fn check_takes_trailing_command() {
        let cli =
            Cli::try_parse_from(["x", "check", "v6.1", "--memory", "2G", "--", "uname", "-r"])
                .unwrap();
        let Command::Check(c) = cli.command else {
            panic!()
        };
        assert_eq!(c.rev.as_deref(), Some("v6.1"));
        assert_eq!(c.check.command, ["uname", "-r"]);
        assert_eq!(c.vm.memory.unwrap().to_string(), "2G");
    }

    #[test]
    fn a_non_utf8_argument_is_named() {
        use std::os::unix::ffi::OsStringExt;
        let bad = || std::ffi::OsString::from_vec(b"quiet\xff".to_vec());
        let args = |v: Vec<std::ffi::OsString>| {
            let mut all: Vec<std::ffi::OsString> = vec!["xtask".into(), "check".into()];
            all.extend(v);
            non_utf8_argument(&all)
        };
        assert_eq!(
            args(vec!["--append".into(), bad()]).unwrap(),
            "the value of --append is not UTF-8 (\"quiet\u{fffd}\"): only paths may hold other bytes"
        );
        let mut eq = std::ffi::OsString::from("--append=");
        eq.push(bad());
        assert!(args(vec![eq])
            .unwrap()
            .starts_with("the value of --append is not"));
        let n = args(vec!["--".into(), "echo".into(), bad()]).unwrap();
        assert!(n.starts_with("argument 4 is not UTF-8"), "{n}");
        assert_eq!(args(vec!["--append".into(), "quiet".into()]), None);
    }

    #[test]
    fn unknown_option_is_an_error() {
        assert!(Cli::try_parse_from(["x", "check", "--frobnicate"]).is_err());
    }

    #[test]
    fn bisect_needs_endpoints_unless_resuming() {
        assert!(Cli::try_parse_from(["x", "bisect"]).is_err());
        assert!(Cli::try_parse_from(["x", "bisect", "--resume"]).is_ok());
        assert!(Cli::try_parse_from(["x", "bisect", "v1", "v2", "--", "true"]).is_ok());
    }
}
