//! The state dir's layout: one place that names every path the toolkit keeps.

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

/// `<state>/` holds everything the toolkit makes; nothing is written elsewhere.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

impl StateDir {
    pub fn new(root: PathBuf) -> StateDir {
        StateDir { root }
    }
    /// The current root filesystem (build container and guest root): a link to its
    /// generation; use `rootfs::generation::in_use` to build or boot with it.
    pub fn rootfs(&self) -> PathBuf {
        self.root.join("rootfs")
    }
    /// What the current rootfs was built from: recipe digest, suite, toolchain identity.
    pub fn rootfs_meta(&self) -> PathBuf {
        self.root.join("rootfs.json")
    }
    /// Every rootfs generation: `rootfs` and `rootfs.json` link to the current one's.
    pub fn rootfs_generations(&self) -> PathBuf {
        self.root.join("rootfs.d")
    }
    /// The BAD ends' runs kept for later bisects of the same kernel (bisect/earlier.rs).
    pub fn bad_end_runs(&self) -> PathBuf {
        self.root.join("bad-end-runs")
    }
    /// Kernel configs made by trim-config.
    pub fn config_dir(&self) -> PathBuf {
        self.root.join("config")
    }
    /// The config `build` uses by default.
    pub fn trimmed_config(&self) -> PathBuf {
        self.config_dir().join("trimmed.config")
    }
    /// The config `build --arch` uses by default: [`Self::trimmed_config`] for the host's
    /// architecture, `trimmed-<arch>.config` for another.
    pub fn trimmed_config_for(&self, arch: &crate::arch::Arch) -> PathBuf {
        if arch.is_host() {
            self.trimmed_config()
        } else {
            self.config_dir()
                .join(format!("trimmed-{}.config", arch.name))
        }
    }
    /// The config trim-config makes for `arch` and `lane`: [`Self::trimmed_config_for`] for
    /// the arch's default lane, `trimmed-pci.config` (host) or `trimmed-<arch>-<lane>.config`
    /// for another.
    pub fn trimmed_config_for_lane(
        &self,
        arch: &crate::arch::Arch,
        lane: crate::arch::Lane,
    ) -> PathBuf {
        if lane == arch.default_lane() {
            self.trimmed_config_for(arch)
        } else if arch.is_host() {
            self.config_dir()
                .join(format!("trimmed-{}.config", lane.name()))
        } else {
            self.config_dir()
                .join(format!("trimmed-{}-{}.config", arch.name, lane.name()))
        }
    }
    /// Where the guest root of `arch` lives: this state dir for the host's architecture
    /// (whose rootfs is also the build container), `<state>/guest-<arch>/` for another, with
    /// the same layout (`rootfs`, `rootfs.json`, `rootfs.d/`, its own lock).
    pub fn guest_roots(&self, arch: &crate::arch::Arch) -> StateDir {
        if arch.is_host() {
            self.clone()
        } else {
            StateDir::new(self.root.join(format!("guest-{}", arch.name)))
        }
    }
    /// Kept `O=` build dirs, one per source tree, so builds are incremental.
    pub fn build_dir(&self, name: &str) -> PathBuf {
        self.root.join("build").join(name)
    }
    /// The git worktree in which revisions other than the checkout are built and bisected.
    pub fn worktree(&self) -> PathBuf {
        self.root.join("worktree")
    }
    /// The artifact cache.
    pub fn cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// Per-invocation run directories.
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }
    /// The KVM probe's answer, valid for one boot of the host.
    pub fn kvm_probe(&self) -> PathBuf {
        self.root.join("kvm-probe.json")
    }

    /// Creates the state dir (0755), with a clear error for a read-only or unwritable path,
    /// and refuses one that someone else could change under us: it must belong to this user
    /// and not be writable by others. The write test makes a file of its own (never one that
    /// is there, nor through a symlink).
    pub fn ensure(&self) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&self.root)
            .with_context(|| {
                format!(
                    "cannot create the state dir {}: pass --state-dir PATH on a writable disk",
                    self.root.display()
                )
            })?;
        let meta = std::fs::metadata(&self.root)
            .with_context(|| format!("reading the state dir {}", self.root.display()))?;
        // SAFETY: geteuid(2) cannot fail and touches no memory.
        let me = unsafe { libc::geteuid() };
        if let Some(why) = untrusted(meta.uid(), meta.mode(), me) {
            bail!("the state dir {} {why}", self.root.display());
        }
        let probe = self
            .root
            .join(format!(".write-test.{}", std::process::id()));
        let _ = std::fs::remove_file(&probe);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&probe)
            .with_context(|| {
                format!(
                    "the state dir {} is not writable: pass --state-dir PATH on a writable disk",
                    self.root.display()
                )
            })?;
        let _ = std::fs::remove_file(probe);
        Ok(())
    }

    /// Makes this invocation's private run directory (0700): `runs/<time>-<task>-<pid>`.
    pub fn new_run_dir(&self, task: &str) -> Result<PathBuf> {
        let dir = self
            .runs()
            .join(format!("{}-{}-{}", timestamp(), task, std::process::id()));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating run dir {}", dir.display()))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        self.sweep_dead_runs_sockets();
        Ok(dir)
    }

    /// Removes the sockets (and virtiofsd's pid files beside them) that runs killed by
    /// SIGKILL left in their run dirs: nothing ran their cleanup. A run is dead when the pid
    /// in its dir's name is; the logs stay.
    fn sweep_dead_runs_sockets(&self) {
        let Ok(runs) = std::fs::read_dir(self.runs()) else {
            return;
        };
        for run in runs.flatten() {
            let name = run.file_name().to_string_lossy().into_owned();
            let Some(pid) = run_pid(&name) else { continue };
            // SAFETY: kill(pid, 0) only asks whether the process exists.
            let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            if alive {
                continue;
            }
            let Ok(files) = std::fs::read_dir(run.path()) else {
                continue;
            };
            for f in files.flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if n.ends_with(".sock") || n.ends_with(".sock.pid") {
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
    }
}

/// The pid a run dir's name (`<time>-<task>-<pid>`) ends with.
fn run_pid(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok().filter(|&p| p > 1)
}

/// Why a state dir owned by `uid` with `mode` cannot be trusted by user `me`, with the fix;
/// None when it can. Someone else's, or one others can write into, could hold a symlink or a
/// kernel planted for us.
fn untrusted(uid: u32, mode: u32, me: u32) -> Option<String> {
    if uid != me {
        return Some(format!(
            "belongs to uid {uid}, not to you (uid {me}): pass --state-dir PATH of your own, or \
             `chown {me}` it"
        ));
    }
    if mode & 0o002 != 0 {
        return Some(format!(
            "is writable by others (mode {:o}): `chmod o-w` it",
            mode & 0o7777
        ));
    }
    None
}

/// UTC time as `YYYYMMDD-HHMMSS`, sortable.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days((secs / 86400) as i64);
    let s = secs % 86400;
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (the proleptic Gregorian calendar).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Bytes in the regular files below `p` (0 when it does not exist).
pub fn dir_size(p: &std::path::Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_784), (2026, 11, 27));
    }

    #[test]
    fn run_dir_is_private() {
        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path().to_path_buf());
        let d = s.new_run_dir("check").unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_state_dir_of_someone_else_or_writable_by_others_is_refused() {
        assert_eq!(untrusted(1000, 0o40755, 1000), None);
        assert_eq!(untrusted(1000, 0o40775, 1000), None);
        let why = untrusted(0, 0o40755, 1000).unwrap();
        assert!(
            why.contains("belongs to uid 0, not to you (uid 1000)"),
            "{why}"
        );
        let why = untrusted(1000, 0o41777, 1000).unwrap();
        assert!(why.contains("writable by others (mode 1777)") && why.contains("chmod o-w"));

        let t = tempfile::tempdir().unwrap();
        let s = StateDir::new(t.path().join("state"));
        s.ensure().unwrap();
        std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!("{:#}", s.ensure().unwrap_err());
        assert!(e.contains("is writable by others"), "{e}");
        std::fs::set_permissions(&s.root, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The write test never follows a symlink that someone left in its place.
        let victim = t.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(
            &victim,
            s.root.join(format!(".write-test.{}", std::process::id())),
        )
        .unwrap();
        s.ensure().unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
    }

    #[test]
    fn a_dead_runs_sockets_go_and_a_live_runs_stay() {
        assert_eq!(run_pid("20261201-100711-check-19352"), Some(19352));
        assert_eq!(run_pid("notes"), None);
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(t.path().to_path_buf());
        // A pid far above any pid_max: dead. Ours: alive.
        let dead = state.runs().join("20261201-000000-check-999999999");
        let live = state
            .runs()
            .join(format!("20261201-000000-check-{}", std::process::id()));
        for d in [&dead, &live] {
            std::fs::create_dir_all(d).unwrap();
            for f in ["qga.sock", "virtiofs.sock.pid", "console.log"] {
                std::fs::write(d.join(f), "").unwrap();
            }
        }
        state.new_run_dir("test").unwrap();
        assert!(!dead.join("qga.sock").exists() && !dead.join("virtiofs.sock.pid").exists());
        assert!(dead.join("console.log").exists(), "the logs stay");
        assert!(live.join("qga.sock").exists());
    }
}
