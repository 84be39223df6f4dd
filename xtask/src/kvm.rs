//! Is KVM usable? `/dev/kvm` existing proves nothing (on some hosts guests hang under it),
//! so the probe runs real guest code under `-accel kvm` with a short deadline. The answer is
//! cached per boot of the host.
//! [`choose`] turns the accelerator asked for into the one a VM runs under.

use crate::cmd::{self, CommandExt};
use crate::lock::FileLock;
use crate::options::{Accel, AccelAsked};
use crate::state::StateDir;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long guest code gets to show it runs under KVM. Under a working KVM a trimmed kernel
/// reaches its first panic in well under a second (under TCG it takes ~5 s).
const PROBE_DEADLINE: Duration = Duration::from_secs(6);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KvmProbe {
    /// `/proc/sys/kernel/random/boot_id` when probed: the answer holds for this boot only.
    pub boot_id: String,
    pub usable: bool,
    /// What ran: "kernel" (a Linux kernel booted to its first panic) or "firmware" (only
    /// the BIOS ran: weaker, since on some hosts firmware runs under KVM and Linux hangs).
    pub method: String,
    /// One line saying why.
    pub detail: String,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The cached answer for this host boot, or a fresh probe. With a kernel, a firmware-only
/// answer is not trusted and the kernel is booted.
pub fn probe(
    state: &StateDir,
    qemu: &Path,
    kernel: Option<&Path>,
    reprobe: bool,
) -> Result<KvmProbe> {
    let path = state.kvm_probe();
    let id = boot_id();
    let kernel = kernel
        .map(Path::to_path_buf)
        .or_else(|| newest_cached_kernel(state));
    let kernel = kernel.as_deref();
    let cached = || -> Option<KvmProbe> {
        let p: KvmProbe = serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
        // Only a kernel's answer is trusted when a kernel is at hand: firmware can run under
        // a KVM that hangs Linux, and a firmware "unusable" may be a fluke.
        let trusted = p.method == "kernel" || kernel.is_none();
        (p.boot_id == id && trusted).then_some(p)
    };
    if let Some(p) = cached().filter(|_| !reprobe) {
        return Ok(p);
    }
    // One probe at a time; whoever waited may find the answer made meanwhile.
    let _lock = FileLock::acquire(
        &state.root.join("kvm-probe.lock"),
        "another run's KVM probe",
        PROBE_LOCK_WAIT,
    )?;
    if let Some(p) = cached().filter(|_| !reprobe) {
        return Ok(p);
    }
    // Holding the lock, any probe directory is a killed probe's.
    sweep_probe_dirs(state);
    let (usable, method, detail) = run_probe(qemu, state, kernel)?;
    let p = KvmProbe {
        boot_id: id,
        usable,
        method: method.into(),
        detail,
    };
    // Replaced, never written through: the answer is a file of our own.
    crate::atomic::write(&path, serde_json::to_string_pretty(&p)?)?;
    Ok(p)
}

/// How long a run waits for another run's probe: longer than the slowest probe (KVM, TCG and
/// firmware in turn).
const PROBE_LOCK_WAIT: Duration = Duration::from_secs(120);

/// Removes what killed probes left: their private directories.
fn sweep_probe_dirs(state: &StateDir) {
    let Ok(dir) = std::fs::read_dir(&state.root) else {
        return;
    };
    for e in dir.filter_map(|e| e.ok()) {
        let name = e.file_name();
        if name.to_string_lossy().starts_with(PROBE_DIR_PREFIX)
            && e.file_type().is_ok_and(|t| t.is_dir())
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The prefix of a probe's private directory in the state dir.
const PROBE_DIR_PREFIX: &str = "kvm-probe.";

/// The most recently built kernel in the cache, to probe with when none is given.
fn newest_cached_kernel(state: &StateDir) -> Option<std::path::PathBuf> {
    walkdir::WalkDir::new(state.cache())
        .max_depth(3)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == crate::build::cache::BZIMAGE)
        .max_by_key(|e| e.metadata().ok().and_then(|m| m.modified().ok()))
        .map(|e| e.into_path())
}

/// Whether the probe's log shows that guest code got where it should.
pub fn judge_probe_log(log: &str, method: &str) -> bool {
    match method {
        // A kernel with no root device prints its banner and panics; a hanging KVM prints
        // nothing at all.
        "kernel" => {
            log.contains("Linux version") && (log.contains("Kernel panic") || log.contains("VFS:"))
        }
        _ => log.contains("No bootable device") || log.contains("Booting from"),
    }
}

/// How long a kernel gets under TCG to show that it boots at all, when it made no progress
/// under KVM: a trimmed kernel reaches its panic in about 5 s here.
const TCG_DEADLINE: Duration = Duration::from_secs(30);

/// How long a kernel gets to print its banner under TCG (about 2 s here): a file that is no
/// kernel prints nothing, and need not be given all of [`TCG_DEADLINE`].
const BANNER_DEADLINE: Duration = Duration::from_secs(15);

/// What the guest code is.
#[derive(Clone, Copy)]
enum Guest<'a> {
    Kernel(&'a Path),
    Firmware,
}

impl Guest<'_> {
    fn method(&self) -> &'static str {
        match self {
            Guest::Kernel(_) => "kernel",
            Guest::Firmware => "firmware",
        }
    }
}

/// How one probe boot went.
enum Boot {
    /// The guest code got where it should, in this long.
    Reached(Duration),
    /// It did not: why, in a few words.
    Failed(String),
}

/// Runs guest code under `-accel kvm`: a Linux kernel to its first panic (no root device), or
/// else the firmware to the end of POST. A hanging KVM never gets there. Only a kernel that
/// boots under TCG may prove KVM unusable: one that does not (a garbage `--kernel`) proves
/// nothing, and the firmware answers instead.
fn run_probe(
    qemu: &Path,
    state: &StateDir,
    kernel: Option<&Path>,
) -> Result<(bool, &'static str, String)> {
    let guest = kernel.map_or(Guest::Firmware, Guest::Kernel);
    let Ok(kvm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return Ok((
            false,
            guest.method(),
            "/dev/kvm cannot be opened (no KVM, or no permission: join the kvm group)".into(),
        ));
    };
    drop(kvm);
    std::fs::create_dir_all(&state.root)?;
    let dir = tempfile::Builder::new()
        .prefix(PROBE_DIR_PREFIX)
        .tempdir_in(&state.root)?;
    let what = |g: Guest| match g {
        Guest::Kernel(_) => "a Linux kernel booted",
        Guest::Firmware => "guest firmware ran (no kernel to try yet)",
    };
    let kvm_boot = boot(qemu, dir.path(), "kvm", guest, PROBE_DEADLINE)?;
    let (kernel, failed) = match (kvm_boot, guest) {
        (Boot::Reached(t), g) => {
            let detail = format!("{} under KVM in {:.2}s", what(g), t.as_secs_f64());
            return Ok((true, g.method(), detail));
        }
        (Boot::Failed(why), Guest::Firmware) => return Ok((false, "firmware", why)),
        (Boot::Failed(why), Guest::Kernel(k)) => (k, why),
    };
    match boot(qemu, dir.path(), "tcg", guest, TCG_DEADLINE)? {
        Boot::Reached(t) => Ok((
            false,
            "kernel",
            format!(
                "{failed}, while the same kernel boots under TCG in {:.1}s",
                t.as_secs_f64()
            ),
        )),
        Boot::Failed(why) => {
            let firmware = boot(qemu, dir.path(), "kvm", Guest::Firmware, PROBE_DEADLINE)?;
            let (usable, detail) = match firmware {
                Boot::Reached(t) => (
                    true,
                    format!(
                        "{} under KVM in {:.2}s",
                        what(Guest::Firmware),
                        t.as_secs_f64()
                    ),
                ),
                Boot::Failed(w) => (false, w),
            };
            Ok((
                usable,
                "firmware",
                format!(
                    "{detail}; the kernel {} proves nothing: it does not boot under TCG either ({why})",
                    kernel.display()
                ),
            ))
        }
    }
}

/// QEMU of a probe: ended when dropped (Ctrl-C, an error) and killed with us.
struct ProbeQemu(std::process::Child);

impl Drop for ProbeQemu {
    fn drop(&mut self) {
        cmd::terminate(&mut self.0, Duration::from_millis(500));
    }
}

/// One probe boot of `guest` under `accel`, its output in a file in `dir`, for at most
/// `deadline`.
fn boot(qemu: &Path, dir: &Path, accel: &str, guest: Guest, deadline: Duration) -> Result<Boot> {
    let log = dir.join(format!("probe-{accel}-{}.log", guest.method()));
    let mut c = Command::new(qemu);
    c.args([
        "-accel",
        accel,
        "-M",
        crate::arch::HOST.full_machine.name(),
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    match guest {
        Guest::Kernel(k) => {
            // The serial console shows how far the kernel got; panic=-1 with -no-reboot
            // ends QEMU at the panic that a missing root device causes.
            c.arg("-serial").arg(format!("file:{}", log.display()));
            let append = format!(
                "console={} panic=-1 root=/dev/xtask-probe-none",
                crate::arch::HOST.console
            );
            c.arg("-kernel").arg(k).arg("-append").arg(append);
        }
        Guest::Firmware => {
            // SeaBIOS writes its log to I/O port 0x402; the debugcon device makes it a file.
            c.arg("-debugcon").arg(format!("file:{}", log.display()));
            c.args(["-global", "isa-debugcon.iobase=0x402"]);
        }
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut vm = ProbeQemu(c.die_with_us().spawn_logged()?);
    let start = Instant::now();
    let reached = || {
        judge_probe_log(
            &std::fs::read_to_string(&log).unwrap_or_default(),
            guest.method(),
        )
    };
    while start.elapsed() < deadline {
        if reached() {
            return Ok(Boot::Reached(start.elapsed()));
        }
        if matches!(guest, Guest::Kernel(_))
            && start.elapsed() > BANNER_DEADLINE
            && !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Linux version")
        {
            return Ok(Boot::Failed(format!(
                "no kernel banner under {} within {}s",
                accel.to_uppercase(),
                BANNER_DEADLINE.as_secs()
            )));
        }
        if let Ok(Some(st)) = vm.0.try_wait() {
            if reached() {
                return Ok(Boot::Reached(start.elapsed()));
            }
            return Ok(Boot::Failed(format!(
                "QEMU with -accel {accel} exited early ({st})"
            )));
        }
        crate::signals::sleep(Duration::from_millis(20))?;
    }
    Ok(Boot::Failed(format!(
        "guest code under {} made no progress within {}s",
        accel.to_uppercase(),
        deadline.as_secs()
    )))
}

static SAID: AtomicBool = AtomicBool::new(false);

/// Turns `--accel` into the accelerator to use for a guest of `arch`, probing with the kernel
/// about to boot; says once per invocation when it falls back. A guest of another
/// architecture than the host's runs under TCG: KVM runs the host's own.
pub fn choose(
    arch: &crate::arch::Arch,
    asked: AccelAsked,
    state: &StateDir,
    qemu: &Path,
    kernel: Option<&Path>,
) -> Result<Accel> {
    if !arch.is_host() {
        if asked == AccelAsked::Kvm {
            bail!(
                "--accel kvm: an {} guest cannot use KVM on this {} host (KVM runs guests of \
                 the host's own architecture): use --accel tcg or auto",
                arch.name,
                crate::arch::HOST.name
            );
        }
        return Ok(Accel::Tcg);
    }
    match asked {
        AccelAsked::Tcg => Ok(Accel::Tcg),
        AccelAsked::Kvm => {
            let p = probe(state, qemu, kernel, false)?;
            if !p.usable {
                bail!(
                    "--accel kvm: KVM unusable ({}): use --accel tcg or auto",
                    p.detail
                );
            }
            Ok(Accel::Kvm)
        }
        AccelAsked::Auto => {
            let p = probe(state, qemu, kernel, false)?;
            if p.usable {
                Ok(Accel::Kvm)
            } else {
                if !SAID.swap(true, Ordering::SeqCst) {
                    eprintln!("KVM unusable: falling back to TCG (slower) ({})", p.detail);
                }
                Ok(Accel::Tcg)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_logs() {
        let panic = "[    0.000000] Linux version 6.1.0\n[    1.2] VFS: Cannot open root device\n[    1.3] Kernel panic - not syncing: VFS";
        assert!(judge_probe_log(panic, "kernel"));
        assert!(!judge_probe_log("", "kernel"));
        assert!(!judge_probe_log(
            "[    0.000000] Linux version 6.1.0\n",
            "kernel"
        ));
        assert!(judge_probe_log(
            "SeaBIOS\nNo bootable device.\n",
            "firmware"
        ));
        assert!(!judge_probe_log("SeaBIOS\n", "firmware"));
    }
}
