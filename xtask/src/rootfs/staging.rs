//! The temporary tree a rootfs is built in, next to the final one: a guard whose `Drop`
//! unmounts whatever is left mounted under it and removes it, and the move into place.

use crate::exit::say;
use anyhow::{bail, Context, Result};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A tree being built. Until [`Staging::finish`] it is never where later commands look.
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// Claims `path` (absolute, on the same filesystem as the final tree), first removing
    /// what a killed earlier run may have left there.
    pub fn new(path: PathBuf) -> Result<Staging> {
        if path.symlink_metadata().is_ok() {
            eprintln!("removing what an interrupted run left ({})", path.display());
        }
        remove_tree(&path)?;
        Ok(Staging { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves the finished tree to `target` (on the same filesystem), unmounting what its
    /// build left mounted first.
    pub fn finish(self, target: &Path) -> Result<()> {
        unmount_under(&self.path)?;
        std::fs::rename(&self.path, target)
            .with_context(|| format!("moving {} to {}", self.path.display(), target.display()))
        // Drop finds nothing left at `path`.
    }
}

impl Drop for Staging {
    // `say`, not `eprintln!`: a panic on a closed stderr while unwinding would abort.
    fn drop(&mut self) {
        if self.path.symlink_metadata().is_ok() {
            say(&format!(
                "removing the unfinished rootfs ({})",
                self.path.display()
            ));
        }
        if let Err(e) = remove_tree(&self.path) {
            say(&format!("warning: {e:#}"));
        }
    }
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
}
