//! The build container: a command run inside the rootfs with systemd-nspawn, with bind mounts
//! and environment. Builds and olddefconfig run here so every user gets the same toolchain.

use crate::tools;
use anyhow::Result;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A command to run in the rootfs container.
#[derive(Debug, Clone)]
pub struct Container {
    rootfs: PathBuf,
    binds: Vec<(PathBuf, String, bool)>,
    env: Vec<(String, String)>,
    workdir: Option<String>,
    writable: bool,
    interactive: bool,
}

/// Whether systemd runs as PID 1 with its registration services; when not (containers,
/// CI machines), nspawn must neither register with machined nor create its own scope.
pub fn host_has_systemd() -> bool {
    Path::new("/run/systemd/system").is_dir() && Path::new("/run/dbus/system_bus_socket").exists()
}

impl Container {
    /// The container over any directory (setup-rootfs uses this on its temporary tree).
    pub fn at(rootfs: PathBuf) -> Container {
        Container {
            rootfs,
            binds: Vec::new(),
            env: Vec::new(),
            workdir: None,
            writable: false,
            interactive: false,
        }
    }

    /// Mounts `host` at `guest`, writable.
    pub fn bind(mut self, host: &Path, guest: &str) -> Self {
        self.binds
            .push((host.to_path_buf(), guest.to_string(), false));
        self
    }

    /// Mounts `host` at `guest`, read-only.
    pub fn bind_ro(mut self, host: &Path, guest: &str) -> Self {
        self.binds
            .push((host.to_path_buf(), guest.to_string(), true));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn workdir(mut self, dir: &str) -> Self {
        self.workdir = Some(dir.to_string());
        self
    }

    /// Lets the command change the rootfs (only setup-rootfs does; builds never may, since
    /// the same tree is the guest's root).
    pub fn writable(mut self) -> Self {
        self.writable = true;
        self
    }

    /// Attaches the terminal (for `setup-rootfs --shell`).
    pub fn interactive(mut self) -> Self {
        self.interactive = true;
        self
    }

    /// The nspawn arguments (before the command), as pure data.
    pub fn args(&self, host_systemd: bool) -> Vec<String> {
        let mut a = vec![
            "--quiet".to_string(),
            format!("--directory={}", self.rootfs.display()),
        ];
        if !host_systemd {
            // Without systemd as PID 1 and D-Bus there is no machined to register with and no
            // unit to move into.
            a.push("--register=no".into());
            a.push("--keep-unit".into());
        }
        if !self.writable {
            a.push("--read-only".into());
        }
        // A private /tmp; the host's resolv.conf and timezone are not the build's business.
        a.push("--resolv-conf=off".into());
        a.push("--timezone=off".into());
        // The command runs as PID 2 under a stub init, so signals and zombies behave.
        a.push("--as-pid2".into());
        a.push(if self.interactive {
            "--console=interactive".into()
        } else {
            "--console=pipe".into()
        });
        for (host, guest, ro) in &self.binds {
            let flag = if *ro { "--bind-ro" } else { "--bind" };
            a.push(format!("{flag}={}:{guest}", host.display()));
        }
        for (k, v) in &self.env {
            a.push(format!("--setenv={k}={v}"));
        }
        if let Some(w) = &self.workdir {
            a.push(format!("--chdir={w}"));
        }
        a
    }

    /// A `Command` for `argv` inside the container that ends when this process does, even by
    /// SIGKILL: its stdin is a pipe, so the caller must keep the child's stdin open until the
    /// child has exited (dropping it ends the command).
    pub fn tied_command<S: AsRef<str>>(&self, argv: &[S]) -> Result<Command> {
        let mut c = self.command(&tied(argv))?;
        c.stdin(std::process::Stdio::piped());
        Ok(c)
    }

    /// A ready-to-run `Command` for `argv` inside the container.
    pub fn command<S: AsRef<str>>(&self, argv: &[S]) -> Result<Command> {
        let nspawn = tools::find(&tools::NSPAWN)?;
        let mut c = Command::new(nspawn);
        c.args(self.args(host_has_systemd()));
        c.arg("--");
        c.args(argv.iter().map(|s| s.as_ref()));
        Ok(c)
    }
}

/// The shell that runs a payload so that it ends with us. systemd-nspawn has no
/// die-with-parent: SIGKILLed, it leaves the container and its payload running (systemd 252,
/// tried here; `--kill-signal` only applies when nspawn ends in order). So the payload's stdin
/// is a pipe whose other end only we hold: when we die, a watcher reads EOF and kills the
/// shell, PID 2; nspawn's stub init then exits and the kernel ends every process in the
/// container. The payload itself gets /dev/null, and its exit status is the shell's.
const TIED: &str =
    r#"exec 3<&0 </dev/null; "$@" & child=$!; { read -r _ <&3; kill -KILL $$; } & wait "$child""#;

fn tied<S: AsRef<str>>(argv: &[S]) -> Vec<String> {
    let mut a = vec!["sh".to_string(), "-c".into(), TIED.into(), "sh".into()];
    a.extend(argv.iter().map(|s| s.as_ref().to_string()));
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_for_a_build() {
        let c = Container::at("/s/rootfs".into())
            .bind(Path::new("/home/me/linux"), "/src")
            .bind_ro(Path::new("/cfg"), "/cfg")
            .env("KBUILD_BUILD_USER", "xtask")
            .workdir("/src");
        let a = c.args(false);
        assert!(a.contains(&"--register=no".to_string()));
        assert!(a.contains(&"--keep-unit".to_string()));
        assert!(a.contains(&"--read-only".to_string()));
        assert!(a.contains(&"--bind=/home/me/linux:/src".to_string()));
        assert!(a.contains(&"--bind-ro=/cfg:/cfg".to_string()));
        assert!(a.contains(&"--setenv=KBUILD_BUILD_USER=xtask".to_string()));
        assert!(a.contains(&"--chdir=/src".to_string()));
        let a = c.clone().writable().args(true);
        assert!(!a.contains(&"--register=no".to_string()));
        assert!(!a.contains(&"--read-only".to_string()));
    }

    #[test]
    fn a_tied_payload_ends_with_its_stdin_and_keeps_its_status() {
        use std::io::Write;
        use std::process::Stdio;
        let run = |script: &str| {
            let argv = tied(&["sh", "-c", script]);
            Command::new(&argv[0])
                .args(&argv[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        };
        // The status comes through while we hold the pipe.
        let mut child = run("echo hi; exit 3");
        let stdin = child.stdin.take();
        let status = child.wait().unwrap();
        drop(stdin);
        assert_eq!(status.code(), Some(3));
        // The pipe closed (as when we die): the shell is killed at once.
        let mut child = run("sleep 30");
        let start = std::time::Instant::now();
        child.stdin.take().unwrap().write_all(b"").unwrap();
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
