//! Laying `rootfs/overlay/` over a new tree: files and symlinks replace what is there,
//! permission bits are kept (the exec bit of `xtask-init`), everything is owned by root.

use anyhow::{Context, Result};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Copies `overlay` over `tree`; returns how many files and symlinks were copied. Directories
/// the tree already has keep their mode and owner (`/root` stays 0700); new ones get the
/// overlay's.
pub fn copy(overlay: &Path, tree: &Path) -> Result<usize> {
    if !overlay.is_dir() {
        return Ok(0);
    }
    let mut copied = 0;
    for entry in walkdir::WalkDir::new(overlay)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("reading {}", overlay.display()))?;
        let rel = entry
            .path()
            .strip_prefix(overlay)
            .expect("walk stays inside");
        let dst = tree.join(rel);
        let meta = entry.path().symlink_metadata()?;
        let mode = std::fs::Permissions::from_mode(meta.permissions().mode() & 0o7777);
        let step = || format!("copying overlay/{} into the rootfs", rel.display());
        if meta.is_dir() {
            // A relative symlink to a directory (merged /usr: lib -> usr/lib) is followed,
            // which stays inside the tree.
            if !dst.is_dir() {
                std::fs::create_dir(&dst).with_context(step)?;
                std::fs::set_permissions(&dst, mode).with_context(step)?;
                std::os::unix::fs::lchown(&dst, Some(0), Some(0)).with_context(step)?;
            }
            continue;
        }
        // Never write through what is there: it may be an absolute symlink out of the tree.
        if dst.symlink_metadata().is_ok() {
            std::fs::remove_file(&dst).with_context(step)?;
        }
        if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dst)
                .with_context(step)?;
        } else {
            std::fs::copy(entry.path(), &dst).with_context(step)?;
            std::fs::set_permissions(&dst, mode).with_context(step)?;
        }
        std::os::unix::fs::lchown(&dst, Some(0), Some(0)).with_context(step)?;
        copied += 1;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn keeps_modes_and_replaces_files() {
        if unsafe { libc::geteuid() } != 0 {
            return; // chown to root needs root
        }
        let t = tempfile::tempdir().unwrap();
        let (ov, tree) = (t.path().join("overlay"), t.path().join("tree"));
        fs::create_dir_all(ov.join("usr/local/sbin")).unwrap();
        fs::create_dir_all(ov.join("etc")).unwrap();
        fs::write(ov.join("usr/local/sbin/xtask-init"), "#!/bin/sh\n").unwrap();
        fs::set_permissions(
            ov.join("usr/local/sbin/xtask-init"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        fs::write(ov.join("etc/hostname"), "xtask\n").unwrap();
        fs::create_dir_all(tree.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", tree.join("etc/hostname")).unwrap();
        assert_eq!(copy(&ov, &tree).unwrap(), 2);
        let m = fs::metadata(tree.join("usr/local/sbin/xtask-init")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o755);
        // The symlink was replaced, not written through.
        assert!(!fs::symlink_metadata(tree.join("etc/hostname"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read_to_string(tree.join("etc/hostname")).unwrap(),
            "xtask\n"
        );
    }
}
