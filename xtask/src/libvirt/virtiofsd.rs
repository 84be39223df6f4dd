//! The virtiofsd libvirt starts for a domain's root share: made read-only on the host side
//! (a wrapper adds `--readonly`, which libvirt 9 cannot ask for), found by libvirt's pid file
//! and watched through /proc, so that a run sees it die as it sees QEMU die (libvirt itself
//! does not, and the guest would hang on its root until the timeout).

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The wrapper's name in the run dir (libvirtd runs it as root, so the private dir is fine).
pub const READONLY_WRAPPER: &str = "virtiofsd-readonly";

/// A script that runs `real` with libvirt's arguments and `--readonly`: libvirt 9 refuses
/// `<readonly/>` for virtiofs, and without it a guest that remounts its root read-write (say
/// `--append xtask.rw=1`) would write into the rootfs the build container uses. `exec`, so
/// the pid libvirt records is virtiofsd's own.
pub fn readonly_wrapper(real: &Path) -> String {
    let quoted = real.to_string_lossy().replace('\'', r"'\''");
    format!("#!/bin/sh\nexec '{quoted}' \"$@\" --readonly\n")
}

/// Writes the wrapper into `run_dir`; returns its path.
pub fn write_readonly_wrapper(run_dir: &Path, real: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let p = run_dir.join(READONLY_WRAPPER);
    std::fs::write(&p, readonly_wrapper(real))
        .with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))?;
    Ok(p)
}

/// Where the system daemon keeps its pid files.
const RUN_DIR: &str = "/run/libvirt/qemu";

/// The pid file among `names` (of the run dir) of the virtiofsd of the domain with this id:
/// `<id>-<short name>-<fs alias>-fs.pid`.
pub fn pid_file_of(names: &[String], domain_id: u32) -> Option<&str> {
    let prefix = format!("{domain_id}-");
    names
        .iter()
        .map(String::as_str)
        .find(|n| n.starts_with(&prefix) && n.ends_with("-fs.pid"))
}

/// Whether /proc/<pid>/stat says the process is alive (not a zombie, not dead).
pub fn is_alive(stat: &str) -> bool {
    // "pid (comm) S ...": the state follows the last ')' (comm may hold one).
    match stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.trim_start().chars().next())
    {
        Some(state) => !matches!(state, 'Z' | 'X' | 'x'),
        None => false,
    }
}

/// The pid of the domain's virtiofsd, when libvirt's pid file names one that is a virtiofsd.
pub fn find(domain_id: u32) -> Option<u32> {
    let names: Vec<String> = std::fs::read_dir(RUN_DIR)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let file = pid_file_of(&names, domain_id)?;
    let pid: u32 = std::fs::read_to_string(Path::new(RUN_DIR).join(file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    String::from_utf8_lossy(&cmdline)
        .contains("virtiofsd")
        .then_some(pid)
}

/// Whether the process `pid` is still alive.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| is_alive(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pid_file_of_a_domain() {
        // Recorded: /run/libvirt/qemu while a check's domain (id 15) ran.
        let names: Vec<String> = [
            "15-xtask-20261201-09384-fs0-fs.pid",
            "autostarted",
            "driver.pid",
            "xtask-20261201-093841-check-30387.pid",
            "xtask-20261201-093841-check-30387.xml",
            "5-xtask-20261201-09000-fs0-fs.pid",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            pid_file_of(&names, 15),
            Some("15-xtask-20261201-09384-fs0-fs.pid")
        );
        assert_eq!(pid_file_of(&names, 1), None);
    }

    #[test]
    fn process_states() {
        assert!(is_alive("30399 (virtiofsd) S 1 30398 30398 0 -1"));
        assert!(!is_alive("30399 (virtiofsd) Z 1 30398 30398 0 -1"));
        assert!(is_alive("7 (a) b) R 1"));
        assert!(!is_alive(""));
        assert!(alive(std::process::id()));
    }

    #[test]
    fn the_wrapper_adds_readonly_to_whatever_libvirt_passes() {
        assert_eq!(
            readonly_wrapper(Path::new("/root/.cargo/bin/virtiofsd")),
            "#!/bin/sh\nexec '/root/.cargo/bin/virtiofsd' \"$@\" --readonly\n"
        );
        assert!(readonly_wrapper(Path::new("/o'x/v")).contains(r"'/o'\''x/v'"));
    }
}
