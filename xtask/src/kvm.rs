//! Is KVM usable? `/dev/kvm` existing proves nothing (on some hosts guests hang under it),
//! so the probe runs real guest code under `-accel kvm` with a short deadline. The answer is
//! cached per boot of the host.

use crate::cli::Accel;
use crate::cmd::{self, CommandExt};
use crate::state::StateDir;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long guest code gets to show it runs under KVM; a working KVM needs well under a second.
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
    if !reprobe {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(p) = serde_json::from_str::<KvmProbe>(&text) {
                let trusted = p.method == "kernel" || !p.usable || kernel.is_none();
                if p.boot_id == id && trusted {
                    return Ok(p);
                }
            }
        }
    }
    let (usable, method, detail) = run_probe(qemu, state, kernel)?;
    let p = KvmProbe {
        boot_id: id,
        usable,
        method: method.into(),
        detail,
    };
    let _ = std::fs::create_dir_all(&state.root);
    let _ = std::fs::write(&path, serde_json::to_string_pretty(&p)?);
    Ok(p)
}

/// The most recently built kernel in the cache, to probe with when none is given.
fn newest_cached_kernel(state: &StateDir) -> Option<std::path::PathBuf> {
    walkdir::WalkDir::new(state.cache())
        .max_depth(3)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "bzImage")
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

/// Runs guest code under `-accel kvm` with its output in a file and waits for it to get
/// through: a Linux kernel to its first panic (no root device), or else the firmware to the
/// end of POST. A hanging KVM never gets there.
fn run_probe(
    qemu: &Path,
    state: &StateDir,
    kernel: Option<&Path>,
) -> Result<(bool, &'static str, String)> {
    let method = if kernel.is_some() {
        "kernel"
    } else {
        "firmware"
    };
    let Ok(kvm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return Ok((
            false,
            method,
            "/dev/kvm cannot be opened (no KVM, or no permission: join the kvm group)".into(),
        ));
    };
    drop(kvm);
    std::fs::create_dir_all(&state.root)?;
    let dir = tempfile::Builder::new()
        .prefix("kvm-probe")
        .tempdir_in(&state.root)?;
    let log = dir.path().join("probe.log");
    let mut c = Command::new(qemu);
    c.args([
        "-accel",
        "kvm",
        "-M",
        "q35",
        "-m",
        "256",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    match kernel {
        Some(k) => {
            // The serial console shows how far the kernel got; panic=-1 with -no-reboot
            // ends QEMU at the panic that a missing root device causes.
            c.arg("-serial").arg(format!("file:{}", log.display()));
            c.arg("-kernel").arg(k).args([
                "-append",
                "console=ttyS0 panic=-1 root=/dev/xtask-probe-none",
            ]);
        }
        None => {
            // SeaBIOS writes its log to I/O port 0x402; the debugcon device makes it a file.
            c.arg("-debugcon").arg(format!("file:{}", log.display()));
            c.args(["-global", "isa-debugcon.iobase=0x402"]);
        }
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn_logged()?;
    let start = Instant::now();
    let mut answer = (
        false,
        format!(
            "guest code under KVM made no progress within {}s",
            PROBE_DEADLINE.as_secs()
        ),
    );
    while start.elapsed() < PROBE_DEADLINE {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if judge_probe_log(&text, method) {
            let what = if method == "kernel" {
                "a Linux kernel booted"
            } else {
                "guest firmware ran (no kernel to try yet)"
            };
            answer = (
                true,
                format!("{what} under KVM in {:.2}s", start.elapsed().as_secs_f64()),
            );
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            if judge_probe_log(&std::fs::read_to_string(&log).unwrap_or_default(), method) {
                continue;
            }
            answer = (false, format!("QEMU with -accel kvm exited early ({st})"));
            break;
        }
        crate::signals::sleep(Duration::from_millis(20))?;
    }
    cmd::terminate(&mut child, Duration::from_millis(500));
    Ok((answer.0, method, answer.1))
}

static SAID: AtomicBool = AtomicBool::new(false);

/// Turns `--accel` into the accelerator to use, probing with the kernel about to boot; says
/// once per invocation when it falls back.
pub fn choose(accel: Accel, state: &StateDir, qemu: &Path, kernel: Option<&Path>) -> Result<Accel> {
    match accel {
        Accel::Tcg => Ok(Accel::Tcg),
        Accel::Kvm => {
            let p = probe(state, qemu, kernel, false)?;
            if !p.usable {
                bail!(
                    "--accel kvm: KVM unusable ({}): use --accel tcg or auto",
                    p.detail
                );
            }
            Ok(Accel::Kvm)
        }
        Accel::Auto => {
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
