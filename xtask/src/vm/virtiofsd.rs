//! virtiofsd, which shares the rootfs with the guest: its argv (pure) and starting it until
//! its socket accepts connections.

use crate::cmd::{self, CommandExt};
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long virtiofsd gets to listen on its socket; it needs milliseconds.
pub const READY_DEADLINE: Duration = Duration::from_secs(10);

/// The facts the argv depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareInput<'a> {
    pub shared_dir: &'a Path,
    pub socket: &'a Path,
    pub readonly: bool,
    /// Whether we are root: the namespace sandbox needs it.
    pub root: bool,
}

pub fn argv(i: &ShareInput) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        // The rootfs directory.
        "--shared-dir".into(),
        i.shared_dir.into(),
        // The vhost-user socket QEMU connects to, in the run's private dir.
        "--socket-path".into(),
        i.socket.into(),
    ];
    if i.readonly {
        // The host side refuses writes too: a guest cannot change the shared rootfs even if
        // its overlay were bypassed.
        v.push("--readonly".into());
        // Nothing else changes the rootfs while we run: let the guest cache everything.
        v.push("--cache=always".into());
    } else {
        // Writable: the guest sees the host's changes, and the host the guest's.
        v.push("--cache=auto".into());
    }
    // Unprivileged: no mount namespace; the sandbox needs root (or user namespaces).
    v.push(format!("--sandbox={}", if i.root { "namespace" } else { "none" }).into());
    v
}

/// Starts virtiofsd and waits until its socket is connectable (not just created); fails with
/// virtiofsd's own error when it exits first.
pub fn start(bin: &Path, input: &ShareInput, log: &Path) -> Result<Child> {
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(bin)
        .args(argv(input))
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .die_with_us()
        .spawn_logged()?;
    let end = Instant::now() + READY_DEADLINE;
    loop {
        if let Some(st) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            bail!(
                "virtiofsd exited at start ({}): {}",
                cmd::describe(&st),
                one_line(&cmd::tail(&text, 5))
            );
        }
        // Connectable means listening. A probe connection would not do: virtiofsd serves
        // the first frontend that connects and exits when it hangs up.
        let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
        if is_listening(&table, input.socket) {
            return Ok(child);
        }
        if Instant::now() >= end {
            cmd::terminate(&mut child, Duration::from_secs(1));
            bail!(
                "virtiofsd did not listen on {} within {}s (see {})",
                input.socket.display(),
                READY_DEADLINE.as_secs(),
                log.display()
            );
        }
        crate::signals::sleep(Duration::from_millis(10)).inspect_err(|_| {
            cmd::terminate(&mut child, Duration::from_secs(1));
        })?;
    }
}

/// A log's lines as one, for an error line.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" | ")
}

/// Whether /proc/net/unix shows a socket listening at `path` (state 01, SO_ACCEPTCON set).
pub fn is_listening(proc_net_unix: &str, path: &Path) -> bool {
    /// `__SO_ACCEPTCON` in the Flags column: the socket has called listen().
    const ACCEPTCON: u32 = 1 << 16;
    let want = path.as_os_str().to_string_lossy();
    proc_net_unix.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 8
            && f[7] == want
            && u32::from_str_radix(f[3], 16).is_ok_and(|flags| flags & ACCEPTCON != 0)
            && f[5] == "01"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_socket_in_proc_net_unix() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 34147 /run/1/virtiofs.sock
0000000000000000: 00000003 00000000 00000000 0001 03 34150 /run/1/virtiofs.sock
0000000000000000: 00000002 00000000 00000000 0001 01 35000 /run/2/virtiofs.sock
";
        assert!(is_listening(table, Path::new("/run/1/virtiofs.sock")));
        assert!(!is_listening(table, Path::new("/run/2/virtiofs.sock")));
        assert!(!is_listening(table, Path::new("/run/3/virtiofs.sock")));
    }

    #[test]
    fn readonly_share() {
        let a = argv(&ShareInput {
            shared_dir: Path::new("/state/rootfs"),
            socket: Path::new("/run/1/virtiofs.sock"),
            readonly: true,
            root: true,
        });
        assert_eq!(
            a,
            [
                "--shared-dir",
                "/state/rootfs",
                "--socket-path",
                "/run/1/virtiofs.sock",
                "--readonly",
                "--cache=always",
                "--sandbox=namespace"
            ]
        );
    }

    #[test]
    fn writable_unprivileged_share() {
        let a = argv(&ShareInput {
            shared_dir: Path::new("/r"),
            socket: Path::new("/s"),
            readonly: false,
            root: false,
        });
        assert!(!a.contains(&"--readonly".into()));
        assert!(a.contains(&"--cache=auto".into()));
        assert!(a.contains(&"--sandbox=none".into()));
    }
}
