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
    let mut needs = Vec::new();
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

/// vmtest booting `kernel` to `true` (it shares the host's root over 9P: the kernel needs
/// CONFIG_NET_9P_VIRTIO and CONFIG_9P_FS, which the trimmed config leaves out).
pub fn vmtest(vmtest: &Path, kernel: &Path, kvm: bool) -> PeerRun {
    let mut needs = vec!["9P in the kernel's config (CONFIG_9P_FS, CONFIG_NET_9P_VIRTIO)"];
    let mut args: Vec<OsString> = Vec::new();
    let program = if kvm {
        vmtest.to_path_buf()
    } else {
        // vmtest takes KVM whenever /dev/kvm exists; in a mount namespace of its own the
        // device is covered, so that it falls back to TCG.
        needs.push("KVM hidden (/dev/kvm covered in a mount namespace)");
        args.extend(
            [
                "--mount",
                "--",
                "sh",
                "-c",
                "mount --bind /dev/null /dev/kvm && exec \"$@\"",
                "vmtest",
            ]
            .map(OsString::from),
        );
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

/// The peers installed (by `deps --peers` in the state dir), each with its command line.
pub fn installed(
    peers: &Peers,
    kernel: &Path,
    kvm: bool,
    cpus: u32,
    memory_mib: u64,
) -> Vec<Result<PeerRun, &'static str>> {
    let vng_row = match peers.vng().is_file() {
        true => Ok(vng(&peers.vng(), kernel, kvm, cpus, memory_mib)),
        false => Err("virtme-ng: not installed (cargo xtask deps --peers)"),
    };
    let vmtest_row = match peers.vmtest().is_file() {
        true => Ok(vmtest(&peers.vmtest(), kernel, kvm)),
        false => Err("vmtest: not installed (cargo xtask deps --peers)"),
    };
    vec![vng_row, vmtest_row]
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
        assert_eq!(r.needs, ["--disable-kvm (TCG)"]);
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
        let kvm = vmtest(Path::new("/p/vmtest"), Path::new("/k/bzImage"), true);
        assert_eq!(s(&kvm.args), ["-k", "/k/bzImage", "true"]);
    }

    #[test]
    fn a_peer_not_installed_says_how_to_install_it() {
        let t = tempfile::tempdir().unwrap();
        let peers = Peers {
            dir: t.path().to_path_buf(),
        };
        let rows = installed(&peers, Path::new("/k"), false, 2, 1024);
        assert!(rows
            .iter()
            .all(|r| r.as_ref().unwrap_err().contains("deps --peers")));
    }
}
