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
const PROBE_DEADLINE: Duration = Duration::from_secs(4);

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct KvmProbe {
    /// `/proc/sys/kernel/random/boot_id` when probed: the answer holds for this boot only.
    pub boot_id: String,
    pub usable: bool,
    /// One line saying why.
    pub detail: String,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The cached answer for this host boot, or a fresh probe.
pub fn probe(state: &StateDir, qemu: &Path, reprobe: bool) -> Result<KvmProbe> {
    let path = state.kvm_probe();
    let id = boot_id();
    if !reprobe {
        if let Ok(text) = std::fs::read_to_string(&path) {
            if let Ok(p) = serde_json::from_str::<KvmProbe>(&text) {
                if p.boot_id == id {
                    return Ok(p);
                }
            }
        }
    }
    let (usable, detail) = run_probe(qemu, state)?;
    let p = KvmProbe {
        boot_id: id,
        usable,
        detail,
    };
    let _ = std::fs::create_dir_all(&state.root);
    let _ = std::fs::write(&path, serde_json::to_string_pretty(&p)?);
    Ok(p)
}

/// Boots the firmware under KVM with its debug port written to a file, and waits for it to
/// finish POST ("No bootable device"). A hanging KVM never gets there.
fn run_probe(qemu: &Path, state: &StateDir) -> Result<(bool, String)> {
    let Ok(kvm) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    else {
        return Ok((
            false,
            "/dev/kvm cannot be opened (no KVM, or no permission: join the kvm group)".into(),
        ));
    };
    drop(kvm);
    let dir = tempfile::Builder::new().prefix("kvm-probe").tempdir_in({
        std::fs::create_dir_all(&state.root)?;
        &state.root
    })?;
    let debugcon = dir.path().join("debugcon.log");
    let mut c = Command::new(qemu);
    c.args([
        "-accel",
        "kvm",
        "-M",
        "q35",
        "-m",
        "64",
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
    ])
    // SeaBIOS writes its log to I/O port 0x402; QEMU's debugcon device turns it into a file.
    .arg("-debugcon")
    .arg(format!("file:{}", debugcon.display()))
    .args(["-global", "isa-debugcon.iobase=0x402"])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let mut child = c.spawn_logged()?;
    let start = Instant::now();
    let mut answer = (
        false,
        format!(
            "guest code under KVM did not finish firmware start-up within {}s",
            PROBE_DEADLINE.as_secs()
        ),
    );
    while start.elapsed() < PROBE_DEADLINE {
        let log = std::fs::read_to_string(&debugcon).unwrap_or_default();
        if log.contains("No bootable device") || log.contains("Booting from") {
            answer = (
                true,
                format!(
                    "guest firmware ran under KVM in {:.2}s",
                    start.elapsed().as_secs_f64()
                ),
            );
            break;
        }
        if let Ok(Some(st)) = child.try_wait() {
            answer = (false, format!("QEMU with -accel kvm exited at once ({st})"));
            break;
        }
        crate::signals::sleep(Duration::from_millis(20))?;
    }
    cmd::terminate(&mut child, Duration::from_millis(500));
    Ok(answer)
}

static SAID: AtomicBool = AtomicBool::new(false);

/// Turns `--accel` into the accelerator to use; says once per invocation when it falls back.
pub fn choose(accel: Accel, state: &StateDir, qemu: &Path) -> Result<Accel> {
    match accel {
        Accel::Tcg => Ok(Accel::Tcg),
        Accel::Kvm => {
            let p = probe(state, qemu, false)?;
            if !p.usable {
                bail!(
                    "--accel kvm: KVM unusable ({}): use --accel tcg or auto",
                    p.detail
                );
            }
            Ok(Accel::Kvm)
        }
        Accel::Auto => {
            let p = probe(state, qemu, false)?;
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
