//! Whose fault a VM's end was, from what the run saw (QEMU's exit status and log, virtiofsd,
//! libvirt, the console): the kernel's, the setup's or the infrastructure's. Pure code.

use serde::{Deserialize, Serialize};

/// How a VM ended before the run ended it, as the backend saw it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "snake_case", tag = "what")]
pub enum VmEnd {
    /// QEMU exited: its exit code, or the signal that killed it; the tail of its log.
    Qemu {
        code: Option<i32>,
        signal: Option<i32>,
        log_tail: String,
    },
    /// virtiofsd exited while QEMU ran: how, and the tail of its log.
    Virtiofsd { status: String, log_tail: String },
    /// The libvirt domain ended: libvirt's stop reason (`shutting down, reason=…` in its log of
    /// the domain) when it wrote one; the tail of that log.
    Domain {
        reason: Option<String>,
        log_tail: String,
    },
    /// libvirt stopped answering about the domain (libvirtd restarted or died).
    Libvirt { why: String },
}

/// Not the kernel's doing: the run's verdict is 128.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// What broke, as one line a person acts on.
    pub what: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultKind {
    /// Broken before anything ran (QEMU refused its options, the guest lacks the command):
    /// the same again on a retry.
    Setup,
    /// Something of ours broke during the run (virtiofsd or QEMU killed, libvirtd restarted,
    /// the agent channel broke): worth one retry.
    Infra,
}

impl Fault {
    pub fn setup(what: impl Into<String>) -> Fault {
        Fault {
            kind: FaultKind::Setup,
            what: what.into(),
        }
    }
    pub fn infra(what: impl Into<String>) -> Fault {
        Fault {
            kind: FaultKind::Infra,
            what: what.into(),
        }
    }
}

/// The line QEMU logs when a signal (SIGTERM, SIGINT, SIGHUP) tells it to quit: it then exits
/// 0, like a guest that reset itself, and only this line tells the two apart.
const QEMU_SIGNAL_LINE: &str = "terminating on signal";

/// The fault in a VM's end, or `None` when the guest ended itself (a panic with `panic=-1`
/// resets it, `-no-reboot` turns that into QEMU's exit 0; a triple fault or a poweroff too).
/// `kernel_printed`: whether the console shows any output; `panicked`: whether its scan found a
/// panic.
pub fn of_vm_end(end: &VmEnd, kernel_printed: bool, panicked: bool) -> Option<Fault> {
    let tail = |t: &str| {
        let t = t.trim();
        if t.is_empty() {
            String::new()
        } else {
            format!(": {}", t.lines().collect::<Vec<_>>().join(" | "))
        }
    };
    match end {
        VmEnd::Qemu {
            code: Some(0),
            log_tail,
            ..
        } => (!panicked && log_tail.contains(QEMU_SIGNAL_LINE)).then(|| {
            Fault::infra(format!(
                "QEMU was told to quit from outside{}",
                tail(signal_line(log_tail))
            ))
        }),
        // A kernel that printed nothing never ran: QEMU refused its options or resources.
        VmEnd::Qemu {
            code: Some(c),
            log_tail,
            ..
        } if !kernel_printed => Some(Fault::setup(format!(
            "QEMU exited at start (exit {c}){}",
            tail(log_tail)
        ))),
        VmEnd::Qemu {
            code: Some(c),
            log_tail,
            ..
        } => Some(Fault::infra(format!(
            "QEMU exited with {c} while the guest ran{}",
            tail(log_tail)
        ))),
        // A signal of its own making (an assertion's abort, a crash): its last words say why,
        // and nobody outside sent it.
        VmEnd::Qemu {
            signal:
                Some(
                    s
                    @ (libc::SIGABRT | libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE),
                ),
            log_tail,
            ..
        } => Some(Fault::infra(format!(
            "QEMU crashed (signal {s}){}",
            tail(log_tail)
        ))),
        // Killed: whatever it logged before says nothing about why.
        VmEnd::Qemu { signal, .. } => Some(Fault::infra(format!(
            "QEMU was killed by signal {} from outside",
            signal.map_or("?".to_string(), |s| s.to_string()),
        ))),
        VmEnd::Virtiofsd { status, log_tail } => Some(Fault::infra(format!(
            "virtiofsd (the rootfs share) exited ({status}) while the VM ran{}",
            if status.starts_with("killed") {
                String::new()
            } else {
                tail(last_line(log_tail))
            }
        ))),
        // libvirt's reason for a domain whose QEMU went away without the guest asking. libvirt
        // itself ends QEMU with SIGTERM after a guest reset (on_reboot destroy): only another
        // sender's signal is a fault.
        VmEnd::Domain { reason, log_tail } if !panicked => match reason.as_deref() {
            Some(r @ ("crashed" | "failed")) => Some(Fault::infra(format!(
                "the domain's QEMU died (libvirt: {r})"
            ))),
            _ if !signal_line(log_tail).is_empty()
                && !signal_line(log_tail).contains("(libvirtd)") =>
            {
                Some(Fault::infra(format!(
                    "the domain's QEMU was told to quit from outside{}",
                    tail(signal_line(log_tail))
                )))
            }
            _ => None,
        },
        VmEnd::Domain { .. } => None,
        VmEnd::Libvirt { why } => Some(Fault::infra(format!(
            "libvirt stopped answering about the domain (libvirtd restarted or died?): {why}"
        ))),
    }
}

fn last_line(log: &str) -> &str {
    log.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

fn signal_line(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains(QEMU_SIGNAL_LINE))
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qemu(code: Option<i32>, signal: Option<i32>, log: &str) -> VmEnd {
        VmEnd::Qemu {
            code,
            signal,
            log_tail: log.into(),
        }
    }

    #[test]
    fn a_guest_reset_is_the_kernels_doing() {
        // panic=-1 after a panic, with -no-reboot: QEMU exits 0 and says nothing.
        assert_eq!(of_vm_end(&qemu(Some(0), None, ""), true, true), None);
        assert_eq!(of_vm_end(&qemu(Some(0), None, ""), true, false), None);
    }

    #[test]
    fn qemu_told_to_quit_by_a_signal_is_infrastructure() {
        let log = "qemu-system-x86_64: terminating on signal 15 from pid 4242 (bash)";
        let f = of_vm_end(&qemu(Some(0), None, log), true, false).unwrap();
        assert_eq!(f.kind, FaultKind::Infra);
        assert!(f.what.contains("signal 15 from pid 4242"), "{}", f.what);
        // Unless the kernel had panicked first: that reset is what ended it.
        assert_eq!(of_vm_end(&qemu(Some(0), None, log), true, true), None);
    }

    #[test]
    fn qemu_killed_is_infrastructure() {
        let f = of_vm_end(&qemu(None, Some(9), ""), true, false).unwrap();
        assert_eq!(f.kind, FaultKind::Infra);
        assert_eq!(f.what, "QEMU was killed by signal 9 from outside");
    }

    /// Recorded: a garbage kernel booted under a KVM that cannot run guests here.
    #[test]
    fn qemu_aborting_itself_is_a_crash_with_its_words_not_a_kill_from_outside() {
        let log = "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n\
                   qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: kvm_buf_set_msrs: \
                   Assertion `ret == cpu->kvm_msr_buf->nmsrs' failed.";
        let f = of_vm_end(&qemu(None, Some(6), log), false, false).unwrap();
        assert_eq!(f.kind, FaultKind::Infra);
        assert!(
            f.what.starts_with(
                "QEMU crashed (signal 6): qemu-system-x86_64: error: failed to set MSR"
            ) && f.what.contains("Assertion"),
            "{}",
            f.what
        );
    }

    #[test]
    fn qemu_failing_before_the_kernel_printed_is_setup() {
        let log = "qemu-system-x86_64: cannot set up guest memory 'mem': Cannot allocate memory";
        let f = of_vm_end(&qemu(Some(1), None, log), false, false).unwrap();
        assert_eq!(f.kind, FaultKind::Setup);
        assert_eq!(f.what, format!("QEMU exited at start (exit 1): {log}"));
        // Once the kernel ran, a failing QEMU is a fault of the run, worth a retry.
        let f = of_vm_end(&qemu(Some(1), None, log), true, false).unwrap();
        assert_eq!(f.kind, FaultKind::Infra);
    }

    #[test]
    fn virtiofsd_dying_is_infrastructure() {
        let end = VmEnd::Virtiofsd {
            status: "killed by signal 9".into(),
            log_tail: String::new(),
        };
        let f = of_vm_end(&end, true, false).unwrap();
        assert_eq!(f.kind, FaultKind::Infra);
        assert_eq!(
            f.what,
            "virtiofsd (the rootfs share) exited (killed by signal 9) while the VM ran"
        );
    }

    #[test]
    fn libvirt_reasons() {
        let end = |r: &str| VmEnd::Domain {
            reason: Some(r.into()),
            log_tail: String::new(),
        };
        assert_eq!(
            of_vm_end(&end("crashed"), true, false).unwrap().kind,
            FaultKind::Infra
        );
        assert_eq!(of_vm_end(&end("shutdown"), true, false), None);
        // Recorded: after a guest reset, libvirt ends QEMU itself (on_reboot destroy).
        let by_libvirt = VmEnd::Domain {
            reason: Some("shutdown".into()),
            log_tail: "2026-12-01T09:19:22.169354Z qemu-system-x86_64: terminating on signal 15 \
                       from pid 8535 (libvirtd)\n2026-12-01 09:19:23.414+0000: shutting down, \
                       reason=shutdown"
                .into(),
        };
        assert_eq!(of_vm_end(&by_libvirt, true, false), None);
        let by_someone = VmEnd::Domain {
            reason: Some("shutdown".into()),
            log_tail: "qemu-system-x86_64: terminating on signal 15 from pid 42 (bash)".into(),
        };
        assert_eq!(
            of_vm_end(&by_someone, true, false).unwrap().kind,
            FaultKind::Infra
        );
        let gone = VmEnd::Libvirt {
            why: "End of file while reading data".into(),
        };
        assert!(of_vm_end(&gone, true, false)
            .unwrap()
            .what
            .contains("libvirtd"));
    }
}
