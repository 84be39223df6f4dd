//! Persistent layers: where `--rw` keeps the guest's writes (`<state>/layers/<name>/`, the
//! upper and work dirs of an overlay over the rootfs generation), so that no guest ever
//! writes into the rootfs the build container uses; and `cargo xtask layer ls|rm`.

use crate::lock::FileLock;
use crate::state::StateDir;
use crate::units::human_bytes;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::sync::Mutex;

/// The layer `--rw` uses when `--layer` names none.
pub const DEFAULT: &str = "default";

/// A layer's directories, plain data for the VM's spec.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerDirs {
    /// The overlay's upper dir: the guest's writes.
    pub upper: PathBuf,
    /// The overlay's work dir (on the same filesystem as `upper`).
    pub work: PathBuf,
}

/// The layers this process holds, until it exits (a bisect's every step uses the same).
static HELD: Mutex<Vec<(PathBuf, FileLock)>> = Mutex::new(Vec::new());

/// A layer's name: letters, digits, `-`, `_` and `.` (not leading), so it is one path
/// component and one overlay option value.
pub fn checked_name(name: &str) -> Result<&str> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        bail!("--layer {name:?}: use letters, digits, '-', '_' or '.' (at most 64, not starting with '.')");
    }
    Ok(name)
}

fn dir(state: &StateDir, name: &str) -> PathBuf {
    state.root.join("layers").join(name)
}

fn lock_path(state: &StateDir, name: &str) -> PathBuf {
    state.root.join("layers").join(format!("{name}.lock"))
}

/// The layer `name`, made when new, held by this process until it exits: overlayfs allows
/// one mount per upper dir, so a second process on it stops at once.
pub fn hold(state: &StateDir, name: &str) -> Result<LayerDirs> {
    checked_name(name)?;
    let d = dir(state, name);
    let dirs = LayerDirs {
        upper: d.join("upper"),
        work: d.join("work"),
    };
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if !held.iter().any(|(p, _)| *p == d) {
        let Some(lock) = FileLock::try_acquire(&lock_path(state, name))? else {
            bail!(
                "the layer {name} is in use by another VM ({}): wait for it, or pass --layer OTHER",
                crate::lock::holder(&lock_path(state, name))
            );
        };
        held.push((d.clone(), lock));
    }
    for p in [&dirs.upper, &dirs.work] {
        std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
    }
    Ok(dirs)
}

/// `layer ls`: every layer with its size.
pub fn ls(state: &StateDir) -> Result<u8> {
    let mut names: Vec<String> = std::fs::read_dir(state.root.join("layers"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if names.is_empty() {
        println!("no layers (a `check --rw` or `boot --rw` makes `{DEFAULT}`)");
    }
    for n in names {
        let size = crate::state::dir_size(&dir(state, &n));
        println!(
            "{n:<24} {:>10}  {}",
            human_bytes(size),
            dir(state, &n).display()
        );
    }
    Ok(0)
}

/// `layer rm NAME`: the layer removed, unless a VM holds it.
pub fn rm(state: &StateDir, name: &str) -> Result<u8> {
    let d = dir(state, checked_name(name)?);
    if !d.is_dir() {
        bail!("no layer {name}: `cargo xtask layer ls` lists them");
    }
    let lock = lock_path(state, name);
    let Some(_lock) = FileLock::try_acquire(&lock)? else {
        bail!(
            "the layer {name} is in use by a VM ({}): remove it when that ends",
            crate::lock::holder(&lock)
        );
    };
    std::fs::remove_dir_all(&d).with_context(|| format!("removing {}", d.display()))?;
    let _ = std::fs::remove_file(&lock);
    println!("removed the layer {name}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_path_component() {
        assert!(checked_name("default").is_ok());
        assert!(checked_name("bug-1234_v2.1").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a,b", "a b", &"x".repeat(65)] {
            assert!(checked_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_layer_is_made_and_held_once_per_process() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(t.path().to_path_buf());
        let dirs = hold(&state, "x").unwrap();
        assert!(dirs.upper.is_dir() && dirs.work.is_dir());
        // This process again (a bisect's next step): the same layer.
        assert_eq!(hold(&state, "x").unwrap(), dirs);
        // Another process would not get it.
        assert!(FileLock::try_acquire(&lock_path(&state, "x"))
            .unwrap()
            .is_none());
    }
}
