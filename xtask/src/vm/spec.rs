//! A VM as plain data (what to boot, with what, for how long) and the run dir's file names;
//! every backend starts from these. Building the kernel command line is here too: pure code.

use crate::options::{Accel, InitMode};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::arch::Machine;

/// Where the console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// Only to the run's console log (`check`).
    Log,
    /// The terminal, with QEMU's monitor multiplexed on it, and the log (`boot`).
    Interactive,
}

/// One VM to run.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// The guest's architecture: QEMU's binary, machine and CPU.
    pub arch: &'static crate::arch::Arch,
    pub kernel: PathBuf,
    /// Only when the build made one.
    pub initramfs: Option<PathBuf>,
    /// The whole kernel command line, one argument per element.
    pub cmdline: Vec<String>,
    pub memory_mib: u64,
    pub cpus: u32,
    pub accel: Accel,
    pub machine: Machine,
    /// The directory shared as the guest's root.
    pub rootfs: PathBuf,
    /// `--rw`: the guest writes into this layer, an overlay over the rootfs that virtiofsd
    /// serves; else the share is read-only on both sides.
    pub layer: Option<crate::layer::LayerDirs>,
    /// `--share DIR`: a host dir shared read-write, mounted at [`GUEST_SHARE`].
    pub share: Option<PathBuf>,
    pub init: InitMode,
    pub console: Console,
    /// Until the guest agent answers.
    pub boot_timeout: Duration,
    /// For the command run in the guest.
    pub timeout: Duration,
    /// For the guest to power off before QEMU is told to quit, then killed.
    pub shutdown_timeout: Duration,
}

/// The longest path a Unix socket address holds on Linux (sun_path is 108 bytes with its NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// The virtiofs tag of the root share; the kernel mounts it with `root=rootfs`.
pub const ROOT_TAG: &str = "rootfs";
/// The virtiofs tag of the `--share` dir; xtask-init mounts it at /mnt/share.
pub const SHARE_TAG: &str = "share";
/// The guest's first process (rootfs/overlay/usr/local/sbin/xtask-init).
pub const GUEST_INIT: &str = "/usr/local/sbin/xtask-init";
/// The guest's first process for a fast boot on the read-only root, where the rootfs has it
/// (rootfs/guest-init, compiled by setup-rootfs for the host's architecture): the same work
/// as the script's in one process.
pub const FAST_INIT: &str = "/usr/local/sbin/xtask-init-fast";
/// The virtio-serial port name the guest agent looks for.
pub const AGENT_PORT: &str = "org.qemu.guest_agent.0";

/// Inputs of the kernel command line.
#[derive(Debug, Clone, PartialEq)]
pub struct CmdlineInput<'a> {
    /// The console device and the architecture's own arguments.
    pub arch: &'static crate::arch::Arch,
    pub init: InitMode,
    pub rw: bool,
    /// Whether a `--share` dir is there to mount.
    pub share: bool,
    pub machine: Machine,
    /// The host's TSC rate in kHz, when known.
    pub tsc_khz: Option<u64>,
    /// A root shell on the console (interactive boot); else the console has no login.
    pub shell: bool,
    /// The rootfs has [`FAST_INIT`].
    pub fast_init: bool,
    /// `--append`, split on whitespace; after ours, so it wins (but for `printk.ignore_loglevel`).
    pub append: Option<&'a str>,
}

/// The init to boot: the compiled one for a fast boot on the read-only root without a
/// console shell, where the rootfs has it; the script in every other case.
pub fn guest_init(i: &CmdlineInput) -> &'static str {
    match i.fast_init && i.init == InitMode::Fast && !i.rw && !i.shell {
        true => FAST_INIT,
        false => GUEST_INIT,
    }
}

/// The kernel command line, each argument with the reason it is there.
pub fn kernel_cmdline(i: &CmdlineInput) -> Vec<String> {
    let mut v: Vec<String> = vec![
        // The serial port is the console the run's log records.
        format!("console={}", i.arch.console),
        // The root is the virtiofs share tagged "rootfs", mounted read-only: xtask-init puts
        // a tmpfs overlay on it (or remounts it rw with xtask.rw=1).
        format!("root={ROOT_TAG}"),
        "rootfstype=virtiofs".into(),
        "ro".into(),
        format!("init={}", guest_init(i)),
        // A panic reboots at once, and QEMU's -no-reboot turns that into an exit.
        "panic=-1".into(),
        // Oopses are fatal too: a guest that oopsed is not worth waiting for.
        "oops=panic".into(),
    ];
    // The architecture's own (its record says why each is there).
    v.extend(i.arch.cmdline.iter().map(|a| a.to_string()));
    // Tell xtask-init which userspace to bring up.
    v.push(format!("xtask.init={}", i.init.name()));
    if i.rw {
        v.push("xtask.rw=1".into());
    }
    if i.shell {
        v.push("xtask.shell=1".into());
    }
    if i.share {
        v.push("xtask.share=1".into());
    }
    if let (Machine::Microvm | Machine::MicrovmMmio, Some(khz)) = (i.machine, i.tsc_khz) {
        // microvm has no PIT/HPET to calibrate the TSC against; under TCG the calibration
        // can hang. The guest TSC runs at the host's rate, so say it.
        v.push(format!("tsc_early_khz={khz}"));
        // TCG's CPU is no Intel and has no constant TSC, so with two vCPUs the kernel
        // calls the TSC unsynchronised and keeps time with refined-jiffies: clocks of a
        // tick's resolution for the tests. Every vCPU reads the same host clock here.
        v.push("tsc=reliable".into());
    }
    if i.init == InitMode::Systemd {
        // No "Welcome" colours and status noise over the slow serial port.
        v.push("systemd.show_status=error".into());
    }
    // Words after a `--` in --append are init's arguments, not the kernel's: ours go before.
    let append: Vec<String> = i
        .append
        .map(|a| a.split_whitespace().map(String::from).collect())
        .unwrap_or_default();
    let split = append
        .iter()
        .position(|w| w == "--")
        .unwrap_or(append.len());
    let (kernel_part, init_args) = append.split_at(split);
    v.extend(kernel_part.iter().cloned());
    if !i.shell {
        // The console is scanned: every message reaches it whatever `quiet`, `loglevel=` or
        // `dmesg -n` say, so no finding is hidden; and every kernel line has its timestamp,
        // which tells it from userspace's lines (console.rs). After --append, so that a
        // `printk.ignore_loglevel=0` there loses (module parameters are set in command line
        // order). A person at an interactive console gets what they asked for.
        v.push("printk.time=1".into());
        v.push("printk.ignore_loglevel=1".into());
    }
    v.extend(init_args.iter().cloned());
    v
}

/// Fails, with the fix, on init arguments (`--` in `--append`) on the fast lane's machine:
/// QEMU 7.2's microvm appends its `virtio_mmio.device=` entries after the whole command line,
/// so after a `--` the kernel would pass them to init and find no root device.
pub fn check_init_args(machine: Machine, cmdline: &[String]) -> anyhow::Result<()> {
    if machine == Machine::MicrovmMmio && cmdline.iter().any(|w| w == "--") {
        anyhow::bail!(
            "init arguments (`--` in --append) do not work on the fast lane: microvm puts its \
             virtio_mmio.device= entries after them; drop the `--` (the kernel passes words \
             without `=` to init anyway) or boot a PCI-lane kernel (`trim-config --lane pci`)"
        );
    }
    Ok(())
}

/// The host TSC rate in kHz from /proc/cpuinfo's `cpu MHz` (the kernel's calibrated value
/// when it has `tsc_known_freq`; close enough for the guest's early TSC otherwise).
pub fn tsc_khz_from_cpuinfo(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (mhz > 0.0).then(|| (mhz * 1000.0).round() as u64)
}

/// The run dir's files: sockets and logs, all in the run's private directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn new(dir: &Path) -> RunPaths {
        RunPaths {
            dir: dir.to_path_buf(),
        }
    }
    /// The serial console, as the kernel and userspace wrote it.
    pub fn console_log(&self) -> PathBuf {
        self.dir.join("console.log")
    }
    /// Every message to and from the guest agent, one JSON object a line.
    pub fn agent_transcript(&self) -> PathBuf {
        self.dir.join("agent.jsonl")
    }
    /// The guest's kernel log as /dev/kmsg gave it, read when the console showed a finding.
    pub fn kernel_log(&self) -> PathBuf {
        self.dir.join("kmsg.log")
    }
    /// The facts and verdict of the run.
    pub fn result(&self) -> PathBuf {
        self.dir.join("result.json")
    }
    pub fn qemu_log(&self) -> PathBuf {
        self.dir.join("qemu.log")
    }
    /// The `--share` dir's virtiofsd socket, and its log.
    pub fn share_socket(&self) -> PathBuf {
        self.dir.join("share.sock")
    }
    pub fn share_log(&self) -> PathBuf {
        self.dir.join("share-virtiofsd.log")
    }
    pub fn virtiofsd_log(&self) -> PathBuf {
        self.dir.join("virtiofsd.log")
    }
    /// The command's captured output.
    pub fn stdout(&self) -> PathBuf {
        self.dir.join("stdout")
    }
    pub fn stderr(&self) -> PathBuf {
        self.dir.join("stderr")
    }
    pub fn agent_socket(&self) -> PathBuf {
        self.dir.join("qga.sock")
    }
    /// Every line QEMU sent over QMP (its events are stamped), and the host's clock
    /// readings: the boot timeline's recordings (vm/timeline.rs).
    pub fn qmp_transcript(&self) -> PathBuf {
        self.dir.join("qmp.jsonl")
    }
    pub fn clock(&self) -> PathBuf {
        self.dir.join("clock.json")
    }
    pub fn qmp_socket(&self) -> PathBuf {
        self.dir.join("qmp.sock")
    }
    pub fn virtiofs_socket(&self) -> PathBuf {
        self.dir.join("virtiofs.sock")
    }
    /// Fails with the fix when a socket path does not fit a Unix socket address (107 bytes
    /// on Linux): a deep --state-dir would otherwise fail inside virtiofsd or QEMU.
    pub fn check_socket_lengths(&self) -> anyhow::Result<()> {
        for s in [
            self.agent_socket(),
            self.qmp_socket(),
            self.virtiofs_socket(),
        ] {
            let n = s.as_os_str().len();
            if n > MAX_SOCKET_PATH {
                anyhow::bail!(
                    "the run dir's socket path {} is {n} bytes, more than a Unix socket allows ({MAX_SOCKET_PATH}): use a shorter --state-dir",
                    s.display()
                );
            }
        }
        Ok(())
    }

    /// Every socket, for cleanup.
    pub fn sockets(&self) -> Vec<PathBuf> {
        vec![
            self.agent_socket(),
            self.qmp_socket(),
            self.virtiofs_socket(),
            // virtiofsd's pid file sits beside its socket.
            self.dir.join("virtiofs.sock.pid"),
            self.share_socket(),
            self.dir.join("share.sock.pid"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_must_fit() {
        assert!(RunPaths::new(Path::new("/s/runs/x"))
            .check_socket_lengths()
            .is_ok());
        let deep = format!("/{}", "d".repeat(100));
        let e = RunPaths::new(Path::new(&deep))
            .check_socket_lengths()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--state-dir"), "{e}");
    }

    fn input() -> CmdlineInput<'static> {
        CmdlineInput {
            arch: &crate::arch::X86_64,
            init: InitMode::Fast,
            rw: false,
            share: false,
            machine: Machine::Microvm,
            tsc_khz: Some(2_445_406),
            shell: false,
            fast_init: false,
            append: None,
        }
    }

    #[test]
    fn default_cmdline() {
        let c = kernel_cmdline(&input()).join(" ");
        assert_eq!(
            c,
            "console=ttyS0 root=rootfs rootfstype=virtiofs ro init=/usr/local/sbin/xtask-init \
             panic=-1 oops=panic reboot=t 8250.nr_uarts=1 xtask.init=fast tsc_early_khz=2445406 \
             tsc=reliable printk.time=1 printk.ignore_loglevel=1"
        );
    }

    #[test]
    fn options_change_the_cmdline() {
        let c = kernel_cmdline(&CmdlineInput {
            init: InitMode::Systemd,
            rw: true,
            share: false,
            machine: Machine::Q35,
            append: Some(" init=/bin/sleep  quiet"),
            ..input()
        });
        assert!(c.contains(&"xtask.rw=1".to_string()));
        assert!(c.contains(&"xtask.init=systemd".to_string()));
        assert!(!c.iter().any(|a| a.starts_with("tsc_early_khz")));
        // --append comes after ours, so its init= wins.
        assert_eq!(&c[c.len() - 4..c.len() - 2], ["init=/bin/sleep", "quiet"]);
    }

    #[test]
    fn the_users_loglevel_cannot_hide_a_finding() {
        for append in [
            "quiet",
            "loglevel=1",
            "printk.ignore_loglevel=0 printk.time=0 quiet",
        ] {
            let c = kernel_cmdline(&CmdlineInput {
                append: Some(append),
                ..input()
            });
            assert_eq!(
                c[c.len() - 2..],
                ["printk.time=1", "printk.ignore_loglevel=1"],
                "{c:?}"
            );
        }
        let interactive = kernel_cmdline(&CmdlineInput {
            shell: true,
            append: Some("quiet"),
            ..input()
        });
        assert_eq!(interactive.last().unwrap(), "quiet");
    }

    #[test]
    fn tsc_rate() {
        let cpuinfo =
            "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2445.406\ncache size\t: 512 KB\n";
        assert_eq!(tsc_khz_from_cpuinfo(cpuinfo), Some(2_445_406));
        assert_eq!(tsc_khz_from_cpuinfo("processor : 0\n"), None);
    }

    #[test]
    fn init_arguments_need_the_pci_lane() {
        let c: Vec<String> = ["ro", "--", "infinity"].map(String::from).to_vec();
        let e = check_init_args(Machine::MicrovmMmio, &c)
            .unwrap_err()
            .to_string();
        assert!(e.contains("trim-config --lane pci"), "{e}");
        assert!(check_init_args(Machine::Microvm, &c).is_ok());
        assert!(check_init_args(Machine::MicrovmMmio, &c[..1]).is_ok());
    }

    #[test]
    fn the_compiled_init_boots_a_fast_read_only_boot_only() {
        let with = CmdlineInput {
            fast_init: true,
            ..input()
        };
        let init = |i: &CmdlineInput| {
            kernel_cmdline(i)
                .into_iter()
                .find(|a| a.starts_with("init="))
                .unwrap()
        };
        assert_eq!(init(&with), format!("init={FAST_INIT}"));
        // A rootfs without it (another architecture's), and every other case: the script.
        assert_eq!(init(&input()), format!("init={GUEST_INIT}"));
        for other in [
            CmdlineInput {
                rw: true,
                ..with.clone()
            },
            CmdlineInput {
                shell: true,
                ..with.clone()
            },
            CmdlineInput {
                init: InitMode::Systemd,
                ..with.clone()
            },
        ] {
            assert_eq!(init(&other), format!("init={GUEST_INIT}"), "{other:?}");
        }
        // --share is the compiled init's too.
        assert_eq!(
            init(&CmdlineInput {
                share: true,
                ..with.clone()
            }),
            format!("init={FAST_INIT}")
        );
    }

    #[test]
    fn init_arguments_after_dashes_stay_last() {
        let c = kernel_cmdline(&CmdlineInput {
            arch: &crate::arch::X86_64,
            init: InitMode::Fast,
            rw: false,
            share: false,
            machine: Machine::Microvm,
            tsc_khz: None,
            shell: false,
            fast_init: true,
            append: Some("init=/bin/sleep -- infinity"),
        });
        let dashes = c.iter().position(|w| w == "--").unwrap();
        assert_eq!(&c[dashes..], ["--", "infinity"]);
        assert!(c[..dashes].contains(&"printk.ignore_loglevel=1".to_string()));
        assert!(c[..dashes].contains(&"init=/bin/sleep".to_string()));
    }
}
