//! `bench boot --peers`: virtme-ng (`vng --exec true`) and vmtest booting the kernel of the
//! other rows to the same command, timed as they are (start to exit), when `deps --peers`
//! installed them. Each peer's command line is built by a pure function that says what the
//! peer needs to run here; a peer that fails or hangs gets a row saying so.

use crate::cmd::{self, CommandExt};
use crate::deps::Peers;
use anyhow::Result;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One peer's run: what to start, and what it needed here that a plain run would not have.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerRun {
    /// The row's name.
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// What the row says about how it ran.
    pub needs: Vec<&'static str>,
    /// A dir to put first on PATH (virtme-ng's venv: `vng` starts `virtme-run` by name).
    pub path_first: Option<PathBuf>,
}

/// virtme-ng booting `kernel` to `true`, with the host's root (its default), 2 vCPUs and the
/// memory of our rows.
pub fn vng(vng: &Path, kernel: &Path, kvm: bool, cpus: u32, memory_mib: u64) -> PeerRun {
    let mut args: Vec<OsString> = vec!["--run".into(), kernel.into()];
    // Its guest runs on the host's root and finds its command's ports with the host's udevd
    // (without one it exits 255); `deps --peers` installs udev.
    let mut needs = vec!["udev on the host", "a PCI kernel"];
    if !kvm {
        // KVM guests hang here: vng would use /dev/kvm because it exists.
        args.push("--disable-kvm".into());
        needs.push("--disable-kvm (TCG)");
    }
    args.extend([
        "--cpus".into(),
        cpus.to_string().into(),
        "--memory".into(),
        format!("{memory_mib}M").into(),
        "--exec".into(),
        "true".into(),
    ]);
    PeerRun {
        name: "virtme-ng, vng --exec true",
        program: vng.to_path_buf(),
        args,
        needs,
        path_first: vng.parent().map(Path::to_path_buf),
    }
}

/// A /dev of what QEMU needs but /dev/kvm, over the real one (run by `unshare --mount`, so
/// nothing outside sees it), then the command.
const DEV_WITHOUT_KVM: &str = "mount -t tmpfs -o mode=0755 xtask-dev /mnt && \
     for n in null zero full random urandom tty ptmx; do \
     : >/mnt/$n && mount --bind /dev/$n /mnt/$n || exit 1; done && \
     mkdir /mnt/pts /mnt/shm && mount --rbind /dev/pts /mnt/pts && \
     mount --rbind /dev/shm /mnt/shm && ln -s /proc/self/fd /mnt/fd && \
     mount --move /mnt /dev && exec \"$@\"";

/// What a kernel's config lacks for `peer`, in one line naming the fix; None when it has
/// what the peer needs (or its config is not known: the run then tells). Both peers' guests
/// find their devices on virtio-pci; vmtest's root is the host's over 9P.
pub fn kernel_lacks(peer: &str, config: Option<&crate::kconfig::Config>) -> Option<String> {
    let c = config?;
    let missing = |opts: &[&str]| -> Vec<String> {
        opts.iter()
            .filter(|o| c.value(o) != "y")
            .map(|o| format!("CONFIG_{o}"))
            .collect()
    };
    let pci = missing(&["PCI", "VIRTIO_PCI"]);
    if !pci.is_empty() {
        return Some(format!(
            "{peer}: the kernel has no {} (its devices are virtio-pci): pass --kernel a PCI-lane \
             kernel (trim-config --lane pci, then build --config it)",
            pci.join(", ")
        ));
    }
    let ninep = missing(&["NET_9P", "NET_9P_VIRTIO", "9P_FS"]);
    if peer.starts_with("vmtest") && !ninep.is_empty() {
        return Some(format!(
            "{peer}: the kernel has no {} (its root is the host's over 9P): trim-config --lane \
             pci --set CONFIG_NET_9P=y --set CONFIG_NET_9P_VIRTIO=y --set CONFIG_9P_FS=y",
            ninep.join(", ")
        ));
    }
    None
}

/// vmtest booting `kernel` to `true` (it shares the host's root over 9P: the kernel needs
/// CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS, which the trimmed config leaves out).
pub fn vmtest(vmtest: &Path, kernel: &Path, kvm: bool) -> PeerRun {
    // Its guest runs on the host's root over 9P and starts the host's qemu-ga.
    let mut needs = vec![
        "a PCI kernel with 9P (CONFIG_NET_9P_VIRTIO, CONFIG_9P_FS)",
        "qemu-guest-agent on the host",
    ];
    let mut args: Vec<OsString> = Vec::new();
    let program = if kvm {
        vmtest.to_path_buf()
    } else {
        // vmtest takes KVM whenever /dev/kvm exists (vmtest 0.18's host_supports_kvm), and
        // covering the node leaves it there: in a mount namespace of its own it gets a /dev
        // without it, so that it falls back to TCG.
        needs.push("KVM hidden (a /dev without kvm, in a mount namespace)");
        args.extend(["--mount", "--", "sh", "-c", DEV_WITHOUT_KVM, "vmtest"].map(OsString::from));
        args.push(vmtest.into());
        PathBuf::from("unshare")
    };
    args.extend(["-k".into(), kernel.into(), "true".into()]);
    PeerRun {
        name: "vmtest -k KERNEL true",
        program,
        args,
        needs,
        path_first: None,
    }
}

/// The peers installed (by `deps --peers` in the state dir), each with its command line, or
/// why it has no run: not installed, or a kernel (of `config`) it cannot boot.
pub fn installed(
    peers: &Peers,
    kernel: &Path,
    config: Option<&crate::kconfig::Config>,
    kvm: bool,
    cpus: u32,
    memory_mib: u64,
) -> Vec<Result<PeerRun, String>> {
    let row = |installed: bool, name: &str, run: &dyn Fn() -> PeerRun| {
        if !installed {
            return Err(format!("{name}: not installed (cargo xtask deps --peers)"));
        }
        match kernel_lacks(name, config) {
            Some(why) => Err(why),
            None => Ok(run()),
        }
    };
    vec![
        row(peers.vng().is_file(), "virtme-ng", &|| {
            vng(&peers.vng(), kernel, kvm, cpus, memory_mib)
        }),
        row(peers.vmtest().is_file(), "vmtest", &|| {
            vmtest(&peers.vmtest(), kernel, kvm)
        }),
    ]
}

/// One run of a peer: its time from start to exit, or why it did not count (its exit, or
/// that it was ended at `limit`), with its output in `log`.
pub fn run_once(p: &PeerRun, log: &Path, limit: Duration) -> Result<Result<Duration, String>> {
    let out = std::fs::File::create(log)?;
    let start = Instant::now();
    let mut c = Command::new(&p.program);
    if let Some(dir) = &p.path_first {
        let mut path = OsString::from(dir);
        path.push(":");
        path.push(std::env::var_os("PATH").unwrap_or_default());
        c.env("PATH", path);
    }
    let mut child = c
        .args(&p.args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .die_with_us()
        .spawn_logged()?;
    let st = cmd::wait(&mut child, Some(start + limit))?;
    let took = start.elapsed();
    Ok(match st {
        Some(st) if st.success() => Ok(took),
        Some(st) => {
            let text =
                String::from_utf8_lossy(&std::fs::read(log).unwrap_or_default()).into_owned();
            Err(format!(
                "{} ({})",
                cmd::describe(&st),
                cmd::tail(&text, 1).trim()
            ))
        }
        None => {
            cmd::terminate(&mut child, Duration::from_secs(2));
            Err(format!(
                "did not finish within {}s and was ended",
                limit.as_secs()
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[OsString]) -> Vec<String> {
        v.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn vng_under_tcg_says_so() {
        let r = vng(Path::new("/p/vng"), Path::new("/k/bzImage"), false, 2, 1024);
        assert_eq!(
            s(&r.args),
            [
                "--run",
                "/k/bzImage",
                "--disable-kvm",
                "--cpus",
                "2",
                "--memory",
                "1024M",
                "--exec",
                "true"
            ]
        );
        assert_eq!(
            r.needs,
            ["udev on the host", "a PCI kernel", "--disable-kvm (TCG)"]
        );
        assert_eq!(r.path_first, Some(PathBuf::from("/p")));
        let kvm = vng(Path::new("/p/vng"), Path::new("/k/bzImage"), true, 2, 1024);
        assert!(!s(&kvm.args).contains(&"--disable-kvm".to_string()));
    }

    #[test]
    fn vmtest_without_kvm_runs_with_the_device_covered() {
        let r = vmtest(Path::new("/p/vmtest"), Path::new("/k/bzImage"), false);
        assert_eq!(r.program, PathBuf::from("unshare"));
        let a = s(&r.args);
        assert_eq!(&a[a.len() - 4..], ["/p/vmtest", "-k", "/k/bzImage", "true"]);
        assert!(r.needs.iter().any(|n| n.contains("KVM hidden")));
        assert!(a.contains(&DEV_WITHOUT_KVM.to_string()));
        let kvm = vmtest(Path::new("/p/vmtest"), Path::new("/k/bzImage"), true);
        assert_eq!(s(&kvm.args), ["-k", "/k/bzImage", "true"]);
    }

    #[test]
    fn a_peer_not_installed_says_how_to_install_it() {
        let t = tempfile::tempdir().unwrap();
        let peers = Peers {
            dir: t.path().to_path_buf(),
        };
        let rows = installed(&peers, Path::new("/k"), None, false, 2, 1024);
        assert!(rows
            .iter()
            .all(|r| r.as_ref().unwrap_err().contains("deps --peers")));
    }

    #[test]
    fn a_kernel_a_peer_cannot_boot_is_said_with_the_fix() {
        let cfg = |t: &str| crate::kconfig::Config::parse(t).unwrap();
        let fast = cfg("CONFIG_VIRTIO_MMIO=y\n# CONFIG_PCI is not set\n");
        let pci = cfg("CONFIG_PCI=y\nCONFIG_VIRTIO_PCI=y\n");
        let ninep = cfg("CONFIG_PCI=y\nCONFIG_VIRTIO_PCI=y\nCONFIG_NET_9P=y\nCONFIG_NET_9P_VIRTIO=y\nCONFIG_9P_FS=y\n");
        let why = kernel_lacks("virtme-ng", Some(&fast)).unwrap();
        assert!(
            why.contains("CONFIG_PCI, CONFIG_VIRTIO_PCI") && why.contains("--lane pci"),
            "{why}"
        );
        assert_eq!(kernel_lacks("virtme-ng", Some(&pci)), None);
        let why = kernel_lacks("vmtest", Some(&pci)).unwrap();
        assert!(
            why.contains("CONFIG_NET_9P, CONFIG_NET_9P_VIRTIO, CONFIG_9P_FS"),
            "{why}"
        );
        assert!(why.contains("--set CONFIG_9P_FS=y"), "{why}");
        assert_eq!(kernel_lacks("vmtest", Some(&ninep)), None);
        assert_eq!(kernel_lacks("vmtest", None), None);
    }

    /// The /dev vmtest gets has no kvm but what QEMU opens, and the host's /dev is untouched.
    #[test]
    fn the_dev_without_kvm_has_what_qemu_needs() {
        if !nix_root() {
            return;
        }
        let out = Command::new("unshare")
            .args(["--mount", "--", "sh", "-c", DEV_WITHOUT_KVM, "sh"])
            .args(["sh", "-c", "ls /dev; test -e /dev/kvm && echo KVM; echo x >/dev/null && head -c1 /dev/urandom >/dev/null && echo ok"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("KVM"), "{text}");
        assert!(
            text.contains("ptmx") && text.contains("shm") && text.trim_end().ends_with("ok"),
            "{text}"
        );
    }

    /// Mount namespaces need root.
    fn nix_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }
}
