//! The command line as a user meets it: help, the exit-code contract (bad input, values out of
//! range, non-UTF-8 arguments, closed output, panics), doctor, completions.

use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use tests::{code, fixture, processes_mentioning, run, run_dir_of, stderr, stdout};

#[test]
fn help_lists_every_subcommand() {
    let f = fixture();
    let out = run(f.xtask().arg("--help"));
    assert_eq!(code(&out), 0);
    let text = stdout(&out);
    // The "Commands:" block: one line per subcommand, its name, then its own about text.
    let lines: Vec<(&str, &str)> = text
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| {
            let l = l.trim_start();
            let (name, about) = l.split_once(' ').unwrap_or((l, ""));
            (name, about.trim())
        })
        .collect();
    let want = [
        ("setup-rootfs", "Build the Debian root filesystem (build container and guest root)"),
        ("trim-config", "Make the smallest kernel config that still boots a real userspace"),
        ("build", "Build a kernel (cached by commit, config and toolchain)"),
        ("boot", "Boot a kernel in a VM with an interactive console, or run one command"),
        (
            "check",
            "Boot a kernel and judge it: exit 0 good, 1 bad, 125 untestable, 128 not the kernel's doing",
        ),
        ("bisect", "Find the first bad commit between GOOD and BAD with `git bisect`"),
        ("doctor", "Check the host: tools, versions, KVM"),
        ("deps", "List (and with --install, install) the Debian packages the toolkit needs"),
        ("quickstart", "From nothing to a verdict: deps, rootfs, kernel tree, config, build, check"),
        ("cache", "Inspect and trim the build cache"),
        ("layer", "List and remove the persistent layers that `--rw` writes the guest's changes into"),
        ("bench", "Measure against baselines run in the same invocation"),
        ("test", "Install what the tests need and run the whole test suite"),
        ("completions", "Print shell completions"),
        ("help", "Print this message or the help of the given subcommand(s)"),
    ];
    assert_eq!(lines, want, "{text}");
    // The hidden one is not listed, and each listed one answers its own --help with its line.
    assert!(!text.contains("make-history"), "{text}");
    for (name, about) in want.iter().filter(|(n, _)| *n != "help") {
        let out = run(f.xtask().args([name, "--help"]));
        assert_eq!(code(&out), 0, "{name}");
        let first = stdout(&out).lines().next().unwrap_or_default().to_string();
        assert_eq!(&first, about, "{name} --help");
    }
}

/// Runs `cargo xtask ARGS` with the fixture's state dir (and tree, unless the case names its
/// own) and checks the contract: this exit code, within `limit`, stderr naming every
/// needle, and no panic.
fn expect(cmd: &mut Command, want: i32, needles: &[&str], limit: Duration) -> Output {
    let start = Instant::now();
    let out = run(cmd);
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(code(&out), want, "{cmd:?}: {err}");
    assert!(took < limit, "{cmd:?} took {took:?}, over {limit:?}");
    for needle in needles {
        assert!(
            err.contains(needle),
            "{cmd:?}: stderr does not name {needle:?}: {err}"
        );
    }
    assert!(!rust_panicked(&err), "{cmd:?} panicked: {err}");
    out
}

/// Whether stderr holds Rust's panic message (`thread 'main' (…) panicked at …`) or its hint.
fn rust_panicked(err: &str) -> bool {
    err.lines()
        .any(|l| l.starts_with("thread '") && l.contains("panicked at"))
        || err.contains("RUST_BACKTRACE")
}

fn xtask(args: &[&str]) -> Command {
    let f = fixture();
    let mut cmd = Command::new(&f.bin);
    cmd.arg("--state-dir").arg(&f.state);
    if !args.contains(&"--tree") {
        cmd.arg("--tree").arg(&f.tree);
    }
    cmd.args(args);
    cmd
}

const QUICK: Duration = Duration::from_secs(10);

#[test]
fn a_value_that_does_not_parse_is_129_naming_the_option() {
    for (args, option) in [
        (&["check", "--memory", "banana"][..], "--memory"),
        (&["check", "--memory", "1.5G"], "--memory"),
        (&["check", "--timeout", "soon"], "--timeout"),
        (&["check", "--boot-timeout", "1e3"], "--boot-timeout"),
        (
            &["check", "--shutdown-timeout", "inf"],
            "--shutdown-timeout",
        ),
        (&["check", "--cpus", "four"], "--cpus"),
        (&["check", "--repeat", "1.5"], "--repeat"),
        (&["build", "--jobs", "many"], "--jobs"),
        (&["cache", "gc", "--max-size", "lots"], "--max-size"),
        (&["bench", "boot", "--runs", "x"], "--runs"),
        (&["check", "--frobnicate"], "--frobnicate"),
    ] {
        expect(&mut xtask(args), 129, &[option], QUICK);
    }
}

#[test]
fn a_value_out_of_range_is_128_naming_the_option_and_its_limit() {
    for (args, message) in [
        (
            &["check", "--memory", "99999G"][..],
            "--memory 99999G is out of range: at most ",
        ),
        (
            &["check", "--memory", "99999999999999T"],
            "--memory 99999999999999T is out of range: at most ",
        ),
        (
            &["check", "--memory", "64M"],
            "--memory 64M is out of range: at least 128M",
        ),
        (
            &["check", "--cpus", "0"],
            "--cpus 0 is out of range: at least 1",
        ),
        (
            &["check", "--cpus", "99999999999999999999999"],
            "(this host's CPUs)",
        ),
        (
            &["check", "--timeout", "99999999999999999999"],
            "--timeout 99999999999999999999 is out of range: at most 7d",
        ),
        (
            &["check", "--boot-timeout", "8d"],
            "--boot-timeout 8d is out of range: at most 7d",
        ),
        (
            &["check", "--shutdown-timeout", "0"],
            "--shutdown-timeout 0 is out of range: at least 1ms",
        ),
        (
            &["check", "--repeat", "0"],
            "--repeat 0 is out of range: at least 1",
        ),
        (
            &["check", "--jobs", "5000"],
            "--jobs 5000 is out of range: at most 1024",
        ),
        (
            &["build", "--build-timeout", "8d"],
            "--build-timeout 8d is out of range: at most 7d",
        ),
        (
            &["build", "--jobs", "0"],
            "--jobs 0 is out of range: at least 1",
        ),
        (
            &["cache", "gc", "--max-size", "17592186044416M"],
            "--max-size 17592186044416M is out of range: at most 1024T",
        ),
        (
            &["bench", "boot", "--runs", "0"],
            "--runs 0 is out of range: at least 1",
        ),
        (
            &["bench", "bisect", "--commits", "99999"],
            "--commits 99999 is out of range: at most 4096",
        ),
        // Checked before anything is installed, built or booted.
        (
            &["quickstart", "--memory", "99999G"],
            "--memory 99999G is out of range",
        ),
        (
            &["bisect", "base", "HEAD", "--timeout", "8d", "--", "true"],
            "--timeout 8d is out of range",
        ),
    ] {
        expect(&mut xtask(args), 128, &[message], QUICK);
    }
    // The host's RAM is the limit, and says so.
    expect(
        &mut xtask(&["check", "--memory", "99999G"]),
        128,
        &["(this host's RAM)"],
        QUICK,
    );
}

#[test]
fn values_in_xtask_toml_get_the_same_checks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("xtask.toml");
    for (text, args, message) in [
        (
            "[vm]\nmemory = \"99999G\"\n",
            &["check"][..],
            "vm.memory in xtask.toml 99999G is out of range: at most ",
        ),
        (
            "[vm]\nboot_timeout = \"9999d\"\n",
            &["check"],
            "vm.boot_timeout in xtask.toml 9999d is out of range: at most 7d",
        ),
        (
            "[build]\njobs = 0\n",
            &["build"],
            "build.jobs in xtask.toml 0 is out of range: at least 1",
        ),
        (
            "[vm]\ntimeout = \"soon\"\n",
            &["doctor"],
            "line 2 (timeout = \"soon\"): invalid duration",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        expect(
            xtask(args).env("XTASK_CONFIG", &cfg),
            128,
            &[message],
            QUICK,
        );
    }
}

#[test]
fn setup_problems_get_one_clear_line_and_128() {
    expect(
        &mut xtask(&["--tree", "/nonexistent/linux", "build"]),
        128,
        &["/nonexistent/linux"],
        QUICK,
    );
    expect(
        &mut xtask(&["--tree", "/usr/share", "build"]),
        128,
        &["not a kernel tree"],
        QUICK,
    );
}

fn non_utf8(prefix: &str) -> std::ffi::OsString {
    let mut b = prefix.as_bytes().to_vec();
    b.extend_from_slice(b"\xff\xfe");
    std::ffi::OsStr::from_bytes(&b).to_owned()
}

#[test]
fn non_utf8_arguments_and_paths_are_refused_with_one_line() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    // A text option or argument does not parse: 129, naming it.
    expect(
        xtask(&["check", "--append"]).arg(non_utf8("quiet")),
        129,
        &["the value of --append is not UTF-8"],
        QUICK,
    );
    expect(
        xtask(&["check", "--", "echo"]).arg(non_utf8("x")),
        129,
        &["is not UTF-8 (\"x\u{fffd}\u{fffd}\")"],
        QUICK,
    );
    // Paths that QEMU, make and systemd-nspawn would get as text.
    let state = dir.path().join(non_utf8("state"));
    expect(
        Command::new(&f.bin)
            .arg("--state-dir")
            .arg(&state)
            .arg("doctor"),
        128,
        &["the state dir", "is not UTF-8"],
        QUICK,
    );
    expect(
        xtask(&["--tree"])
            .arg(dir.path().join(non_utf8("linux")))
            .arg("build"),
        128,
        &["the kernel tree", "is not UTF-8"],
        QUICK,
    );
    let kernel = dir.path().join(non_utf8("bzImage"));
    std::fs::copy(&f.kernel, &kernel).unwrap();
    expect(
        xtask(&["check", "--kernel"]).arg(&kernel),
        128,
        &["--kernel", "is not UTF-8"],
        QUICK,
    );
}

/// A bisect whose command line cannot be saved for --resume stops before `git bisect start`:
/// no saved state, no bisecting worktree.
#[test]
fn a_non_utf8_bisect_argument_stops_before_any_side_effect() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(non_utf8("check.sh"));
    std::fs::write(&script, "#!/bin/sh\ntrue\n").unwrap();
    expect(
        xtask(&["bisect", "base", "HEAD", "--script"]).arg(&script),
        128,
        &["is not UTF-8", "--resume"],
        QUICK,
    );
    let out = expect(&mut xtask(&["bisect", "--status"]), 0, &[], QUICK);
    assert!(
        stdout(&out).contains("no bisect under way"),
        "{}",
        stdout(&out)
    );
}

/// The last resort: a panic (here the test hook's) is one line naming where, and 128.
#[test]
fn a_panic_is_one_internal_error_line_and_128() {
    let out = expect(
        xtask(&["doctor"])
            .env("XTASK_TEST_PANIC", "1")
            .env_remove("RUST_BACKTRACE"),
        128,
        &["error: internal error: XTASK_TEST_PANIC is set (at xtask/src/main.rs:"],
        QUICK,
    );
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
}

#[test]
fn doctor_names_every_tool_and_kvm() {
    let f = fixture();
    let out = run(f.xtask().arg("doctor"));
    assert_eq!(code(&out), 0, "doctor says the toolkit cannot work here");
    let text = stdout(&out);
    for tool in [
        "make",
        "git",
        "systemd-nspawn",
        "mmdebstrap",
        "debootstrap",
        "qemu-system-x86_64",
        "virtiofsd",
        "libvirtd",
        "virsh",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(tool)),
            "doctor does not report {tool}"
        );
    }
    assert!(
        text.contains("KVM usable") || text.contains("KVM unusable: falling back to TCG"),
        "{text}"
    );
}

#[test]
fn unknown_key_in_xtask_toml_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("xtask.toml");
    std::fs::write(&cfg, "[vm]\nmemroy = \"1G\"\n").unwrap();
    expect(
        xtask(&["doctor"]).env("XTASK_CONFIG", &cfg),
        128,
        &["memroy"],
        QUICK,
    );
}

#[test]
fn completions_are_printed() {
    let f = fixture();
    let out = run(f.xtask().args(["completions", "bash"]));
    assert_eq!(code(&out), 0);
    assert!(stdout(&out).contains("trim-config"));
}

/// A pipe whose reader has gone.
fn closed_pipe() -> std::process::Stdio {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: pipe() fills both descriptors, which we own from here on.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    std::process::Stdio::from(write)
}

/// `cargo xtask cache ls | head -1`: once the reader has gone, the output stops quietly (as a
/// shell's SIGPIPE would: 141) instead of a panic and its backtrace hint.
#[test]
fn closed_stdout_stops_quietly() {
    let f = fixture();
    for args in [&["cache", "ls"][..], &["completions", "bash"], &["--help"]] {
        let start = Instant::now();
        let out = f
            .xtask()
            .args(args)
            .stdout(closed_pipe())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(code(&out), 141, "{args:?}: {err}");
        assert!(start.elapsed() < QUICK, "{args:?}");
        assert!(err.is_empty(), "{args:?}: {err}");
    }
}

/// `cargo xtask check … 2>&1 | head -1` while the VM runs: the next line on stderr ends the
/// run as quietly as a closed stdout would (141), and the guards still end QEMU and
/// virtiofsd.
#[test]
fn closed_stderr_mid_run_stops_quietly_and_cleans_up() {
    use std::io::BufRead;
    let f = fixture();
    let mut child = f
        .xtask()
        .arg("check")
        .arg("--kernel")
        .arg(&f.kernel)
        .args(["--", "sleep", "600"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("xtask ended before booting").unwrap();
        eprintln!("{line}");
        if line.starts_with("booting ") {
            break;
        }
    }
    let run_dir = run_dir_of(&f, child.id());
    let needle = run_dir.to_string_lossy().into_owned();
    let start = Instant::now();
    // The reader goes; "guest agent up" is the next line written.
    drop(lines);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("still running 90 s after stderr closed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(141), "{status:?}");
    assert_eq!(processes_mentioning(&needle), Vec::<String>::new());
    for s in ["qga.sock", "qmp.sock", "virtiofs.sock"] {
        assert!(!run_dir.join(s).exists(), "{s} left behind");
    }
}

/// A directory with a stand-in `dpkg-query` that answers every package with `status`
/// (`ii` installed, `un` not), first on the search path.
fn dpkg_saying(status: &str) -> (tempfile::TempDir, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("dpkg-query");
    // dpkg-query -W -f FORMAT PACKAGE...
    std::fs::write(
        &script,
        format!("#!/bin/sh\nshift 3\nfor p in \"$@\"; do echo \"$p {status} \"; done\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (dir, path)
}

/// `deps` answers as `test -e` would: 0 when everything is there, 1 when something is missing.
#[test]
fn deps_is_1_when_something_is_missing() {
    let (_dir, path) = dpkg_saying("un");
    let out = expect(xtask(&["deps"]).env("PATH", &path), 1, &[], QUICK);
    let text = stdout(&out);
    assert!(text.contains("missing  make"), "{text}");
    assert!(text.contains("cargo xtask deps --install"), "{text}");
    let (_dir, path) = dpkg_saying("ii");
    let out = expect(xtask(&["deps"]).env("PATH", &path), 0, &[], QUICK);
    assert!(!stdout(&out).contains("missing"), "{}", stdout(&out));
}

/// quickstart ends with its check's verdict: a kernel that panics at boot (no init) is bad, 1.
#[test]
fn quickstart_returns_the_checks_verdict() {
    let out = expect(
        &mut xtask(&["quickstart", "--append", "init=/nonexistent"]),
        1,
        &["==> check (clean boot): exit 1", "quickstart: bad"],
        Duration::from_secs(300),
    );
    assert!(stderr(&out).contains("panic"), "{}", stderr(&out));
}

/// quickstart passes every VM option it accepts on to its check: `--init systemd` and
/// `--cpus 1` reach the boot (they used to be dropped without a word).
#[test]
fn quickstart_passes_its_vm_options_on_to_the_check() {
    expect(
        &mut xtask(&[
            "quickstart",
            "--init",
            "systemd",
            "--cpus",
            "1",
            "--shutdown-timeout",
            "20s",
        ]),
        0,
        &[
            "systemd init, 1 vCPUs",
            "quickstart: good",
            // On a state that has everything: the config is kept (the build is a hit).
            "==> trim-config: kept",
        ],
        // The systemd boot on one vCPU takes 20 s on a quiet host and 150 s on a loaded one;
        // the needle above catches a trim that runs again, this bound a build that does.
        Duration::from_secs(480),
    );
}

/// `bisect --kernel` would boot one kernel at every step and name a culprit without testing
/// any: the command line refuses it, saying why.
#[test]
fn bisect_refuses_kernel_saying_why() {
    let f = fixture();
    let kernel = f.kernel.to_string_lossy().into_owned();
    expect(
        &mut xtask(&["bisect", "base", "HEAD", "--kernel", &kernel]),
        129,
        &["bisect cannot take --kernel", "each step's own commit"],
        QUICK,
    );
}
