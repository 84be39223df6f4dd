//! virtiofsd, which shares the rootfs with the guest: its argv (pure) and starting it until
//! its socket accepts connections.

use crate::cmd::{self, CommandExt};
use crate::layer::LayerDirs;
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
    /// The rootfs generation; with a layer, the overlay's lower dir.
    pub shared_dir: &'a Path,
    pub socket: &'a Path,
    pub access: Access<'a>,
    /// Whether we are root: the namespace sandbox needs it.
    pub root: bool,
}

/// What the guest may do with a share.
#[derive(Debug, Clone, PartialEq)]
pub enum Access<'a> {
    /// The rootfs as it is: refused writes on the host side too.
    ReadOnly,
    /// `--rw`: an overlay of a layer over the rootfs, writable.
    Layered(Layered<'a>),
    /// `--share DIR`: the dir itself, writable.
    Writable,
}

/// A layer and where its overlay is mounted for virtiofsd.
#[derive(Debug, Clone, PartialEq)]
pub struct Layered<'a> {
    pub dirs: &'a LayerDirs,
    /// An empty dir in the run dir: the overlay's mount point, in virtiofsd's namespace only.
    pub merged: &'a Path,
}

/// The program and arguments that start virtiofsd. With a layer, virtiofsd runs in a mount
/// namespace of its own in which the overlay (lower: the rootfs generation, upper: the layer)
/// is mounted, so the mount lives exactly as long as virtiofsd and the host sees none of it.
pub fn command(bin: &Path, i: &ShareInput) -> Result<(OsString, Vec<OsString>)> {
    let Access::Layered(l) = &i.access else {
        return Ok((bin.into(), argv(i, i.shared_dir)));
    };
    // overlayfs splits its options at ',' and lower dirs at ':'.
    for p in [i.shared_dir, l.dirs.upper.as_path(), l.dirs.work.as_path()] {
        let text = p.to_string_lossy();
        if text.contains([',', ':', '\\']) {
            bail!(
                "--rw cannot use {} (overlayfs options cannot hold ',', ':' or '\\'): pass a --state-dir without them",
                p.display()
            );
        }
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        i.shared_dir.display(),
        l.dirs.upper.display(),
        l.dirs.work.display()
    );
    let mut v: Vec<OsString> = vec![
        // A private mount namespace: nothing mounted in it reaches the host.
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        "/bin/sh".into(),
        "-c".into(),
        // Mount, then become virtiofsd (same pid, so it dies with us and its pid is its own).
        r#"mount -t overlay -o "$1" xtask-layer "$2" && shift 2 && exec "$@""#.into(),
        "sh".into(),
        options.into(),
        l.merged.into(),
        bin.into(),
    ];
    v.extend(argv(i, l.merged));
    Ok(("unshare".into(), v))
}

/// virtiofsd's own arguments, sharing `dir`.
pub fn argv(i: &ShareInput, dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        // The rootfs directory (or the overlay of a layer on it).
        "--shared-dir".into(),
        dir.into(),
        // The vhost-user socket QEMU connects to, in the run's private dir.
        "--socket-path".into(),
        i.socket.into(),
    ];
    if i.access == Access::ReadOnly {
        // The host side refuses writes too: a guest cannot change the shared rootfs even if
        // its overlay were bypassed.
        v.push("--readonly".into());
        // Nothing else changes the rootfs while we run: let the guest cache everything.
        v.push("--cache=always".into());
    } else {
        // Writable: what either side writes must be seen by the other at once.
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
    let (program, args) = command(bin, input)?;
    let mut child = Command::new(program)
        .args(args)
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
        let i = ShareInput {
            shared_dir: Path::new("/state/rootfs"),
            socket: Path::new("/run/1/virtiofs.sock"),
            access: Access::ReadOnly,
            root: true,
        };
        let (program, a) = command(Path::new("/bin/virtiofsd"), &i).unwrap();
        assert_eq!(program, "/bin/virtiofsd");
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
    fn a_layer_is_an_overlay_in_virtiofsds_own_namespace() {
        let dirs = LayerDirs {
            upper: "/s/layers/default/upper".into(),
            work: "/s/layers/default/work".into(),
        };
        let i = ShareInput {
            shared_dir: Path::new("/s/rootfs.d/g1"),
            socket: Path::new("/run/1/virtiofs.sock"),
            access: Access::Layered(Layered {
                dirs: &dirs,
                merged: Path::new("/run/1/merged"),
            }),
            root: true,
        };
        let (program, a) = command(Path::new("/bin/virtiofsd"), &i).unwrap();
        assert_eq!(program, "unshare");
        let a: Vec<String> = a.iter().map(|x| x.to_string_lossy().into_owned()).collect();
        assert_eq!(&a[..4], ["--mount", "--propagation", "private", "--"]);
        assert!(a.contains(&"lowerdir=/s/rootfs.d/g1,upperdir=/s/layers/default/upper,workdir=/s/layers/default/work".to_string()));
        let tail = &a[a.iter().position(|x| x == "/bin/virtiofsd").unwrap() + 1..];
        assert_eq!(
            tail,
            [
                "--shared-dir",
                "/run/1/merged",
                "--socket-path",
                "/run/1/virtiofs.sock",
                "--cache=auto",
                "--sandbox=namespace"
            ]
        );
        assert!(!a.contains(&"--readonly".to_string()));
    }

    #[test]
    fn a_layer_under_a_path_overlayfs_cannot_parse_is_refused() {
        let dirs = LayerDirs {
            upper: "/a,b/layers/x/upper".into(),
            work: "/a,b/layers/x/work".into(),
        };
        let i = ShareInput {
            shared_dir: Path::new("/a,b/rootfs.d/g"),
            socket: Path::new("/s"),
            access: Access::Layered(Layered {
                dirs: &dirs,
                merged: Path::new("/m"),
            }),
            root: false,
        };
        let e = command(Path::new("/v"), &i).unwrap_err().to_string();
        assert!(e.contains("--state-dir"), "{e}");
    }
}
