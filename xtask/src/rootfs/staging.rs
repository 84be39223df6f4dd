//! The temporary tree a rootfs is built in, next to the final one: a guard whose `Drop`
//! unmounts whatever is left mounted under it and removes it, and the swap into place.

use super::recipe::Meta;
use crate::exit::say;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A tree being built. Until [`Staging::install`] it is never where later commands look.
pub struct Staging {
    path: PathBuf,
    /// What the tree at `path` is, for the message when it is removed.
    what: &'static str,
}

impl Staging {
    /// Claims `path` (absolute, on the same filesystem as the final tree), first removing
    /// what a killed earlier run may have left there.
    pub fn new(path: PathBuf) -> Result<Staging> {
        if path.symlink_metadata().is_ok() {
            eprintln!("removing what an interrupted run left ({})", path.display());
        }
        remove_tree(&path)?;
        Ok(Staging {
            path,
            what: "the unfinished rootfs",
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Puts the finished tree at `target` and records `meta` beside it. The old record goes
    /// first and the new one is written last, so a crash in between leaves a tree that is
    /// rebuilt, never one taken as up to date. Returns the old tree, for [`Staging::remove`]
    /// (or `Drop`, or the next run) to delete.
    pub fn install(
        mut self,
        target: &Path,
        meta_path: &Path,
        meta: &Meta,
    ) -> Result<Option<Staging>> {
        unmount_under(&self.path)?;
        match std::fs::remove_file(meta_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", meta_path.display()))
            }
            _ => {}
        }
        let old = if target.symlink_metadata().is_ok() {
            exchange(&self.path, target).with_context(|| {
                format!(
                    "swapping {} into place at {}",
                    self.path.display(),
                    target.display()
                )
            })?;
            self.what = "the old rootfs";
            Some(self)
        } else {
            std::fs::rename(&self.path, target).with_context(|| {
                format!("moving {} to {}", self.path.display(), target.display())
            })?;
            None
        };
        meta.write(meta_path)?;
        Ok(old)
    }

    /// Deletes the tree now, reporting a failure instead of only warning about it.
    pub fn remove(self) -> Result<()> {
        remove_tree(&self.path)
    }
}

impl Drop for Staging {
    // `say`, not `eprintln!`: a panic on a closed stderr while unwinding would abort.
    fn drop(&mut self) {
        if self.path.symlink_metadata().is_ok() {
            say(&format!("removing {} ({})", self.what, self.path.display()));
        }
        if let Err(e) = remove_tree(&self.path) {
            say(&format!("warning: {e:#}"));
        }
    }
}

/// Swaps two paths in one step (renameat2 RENAME_EXCHANGE), so there is always a tree at
/// `b`; falls back to two renames where the filesystem cannot exchange.
fn exchange(a: &Path, b: &Path) -> Result<()> {
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: two NUL-terminated paths that outlive the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        return Err(err.into());
    }
    let aside = a.with_extension("aside");
    std::fs::rename(b, &aside)?;
    std::fs::rename(a, b)?;
    std::fs::rename(&aside, a)?;
    Ok(())
}

/// Unmounts everything under `path` and removes it; refuses to remove while anything is
/// still mounted there (removing would reach into the mounted filesystem).
pub fn remove_tree(path: &Path) -> Result<()> {
    if path.symlink_metadata().is_err() {
        return Ok(());
    }
    unmount_under(path)?;
    std::fs::remove_dir_all(path).with_context(|| {
        format!(
            "could not remove {}: remove it by hand (rm -rf)",
            path.display()
        )
    })
}

/// Detaches every mount at or under `path`, deepest first, as bootstrappers killed mid-way
/// leave /proc, /sys and /dev mounted in the tree.
fn unmount_under(path: &Path) -> Result<()> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    for _ in 0..3 {
        let table =
            std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
        let mounts = mounts_under(&table, &path);
        if mounts.is_empty() {
            return Ok(());
        }
        for m in &mounts {
            crate::cmd::log_line(&format!("umount -l {}", m.display()));
            let c = CString::new(m.as_os_str().as_bytes())?;
            // SAFETY: a NUL-terminated path that outlives the call. MNT_DETACH: a busy mount
            // is detached now and released when its last user goes.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let table = std::fs::read_to_string("/proc/self/mounts")?;
    let left = mounts_under(&table, &path);
    if left.is_empty() {
        return Ok(());
    }
    bail!(
        "{} still has mounts under it ({}): unmount them with `umount -R` and remove it",
        path.display(),
        left.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Mount points at or under `dir` in a `/proc/mounts` table, deepest first.
pub fn mounts_under(table: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = table
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// Undoes /proc/mounts's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
/dev/vda / ext4 rw,relatime 0 0
proc /s/rootfs.tmp/proc proc rw 0 0
udev /s/rootfs.tmp/dev devtmpfs rw 0 0
devpts /s/rootfs.tmp/dev/pts devpts rw 0 0
tmpfs /s/rootfs.tmpx tmpfs rw 0 0
tmpfs /s/with\\040space/x tmpfs rw 0 0
";

    #[test]
    fn finds_mounts_under_a_dir_deepest_first() {
        let m = mounts_under(TABLE, Path::new("/s/rootfs.tmp"));
        assert_eq!(m[0], PathBuf::from("/s/rootfs.tmp/dev/pts"));
        assert_eq!(m.len(), 3);
        assert!(!m.contains(&PathBuf::from("/s/rootfs.tmpx")));
    }

    #[test]
    fn unescapes_paths() {
        let m = mounts_under(TABLE, Path::new("/s/with space"));
        assert_eq!(m, vec![PathBuf::from("/s/with space/x")]);
    }

    #[test]
    fn guard_removes_its_tree() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("rootfs.tmp");
        {
            let s = Staging::new(p.clone()).unwrap();
            std::fs::create_dir_all(s.path().join("usr/bin")).unwrap();
        }
        assert!(!p.exists());
    }

    #[test]
    fn install_swaps_and_records() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("rootfs");
        let meta_path = t.path().join("rootfs.json");
        std::fs::create_dir_all(target.join("old")).unwrap();
        std::fs::write(&meta_path, "{}").unwrap();
        let s = Staging::new(t.path().join("rootfs.tmp")).unwrap();
        std::fs::create_dir_all(s.path().join("new")).unwrap();
        let meta = Meta {
            digest: "ab".repeat(32),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            bootstrapper: "mmdebstrap".into(),
            gcc: "gcc (Debian 12.2.0-14) 12.2.0".into(),
            built: "20261127-000000".into(),
        };
        let old = s.install(&target, &meta_path, &meta).unwrap().unwrap();
        assert!(target.join("new").is_dir() && !target.join("old").exists());
        assert!(old.path().join("old").is_dir());
        old.remove().unwrap();
        assert!(!t.path().join("rootfs.tmp").exists());
        assert_eq!(Meta::read(&meta_path).unwrap(), meta);
    }
}
