//! Rootfs generations: each rootfs `setup-rootfs` builds is a new generation under `rootfs.d/`
//! (`<tree>`, `<tree>.json` its record, `<tree>.lock`), and the `rootfs` link names the current
//! one. A process that builds or boots holds the generation it first used with a shared lock
//! until it exits, so `setup-rootfs --force` never swaps a toolchain or a guest root under a
//! running build, VM or bisect; an old generation goes once no one holds it.

use super::recipe::Meta;
use super::staging::{self, Staging};
use crate::exit::say;
use crate::lock::FileLock;
use crate::state::StateDir;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// One rootfs tree and its record.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub tree: PathBuf,
    pub meta: PathBuf,
}

/// `path` with `.ext` added to its file name: `rootfs.d/ab12-2026…` → `rootfs.d/ab12-2026….json`.
fn sibling(path: &Path, ext: &str) -> PathBuf {
    let mut name: OsString = path.file_name().unwrap_or_default().to_owned();
    name.push(".");
    name.push(ext);
    path.with_file_name(name)
}

impl Generation {
    fn at(tree: PathBuf) -> Generation {
        Generation {
            meta: sibling(&tree, "json"),
            tree,
        }
    }

    fn lock_path(&self) -> PathBuf {
        sibling(&self.tree, "lock")
    }

    /// Whether the tree is a finished rootfs.
    fn is_built(&self) -> bool {
        self.tree.join("usr/bin").is_dir()
    }
}

/// The generation `rootfs` names now, if any. A `rootfs` that is a directory itself is the
/// layout before generations: its record is `rootfs.json` beside it, and nothing locks it.
pub fn current(state: &StateDir) -> Result<Option<(Generation, bool)>> {
    let link = state.rootfs();
    let Ok(m) = link.symlink_metadata() else {
        return Ok(None);
    };
    if !m.file_type().is_symlink() {
        let g = Generation {
            tree: link,
            meta: state.rootfs_meta(),
        };
        return Ok(g.is_built().then_some((g, false)));
    }
    match std::fs::canonicalize(&link) {
        Ok(tree) => Ok(Some((Generation::at(tree), true))),
        // A link to a generation that is gone: no rootfs.
        Err(_) => Ok(None),
    }
}

/// The generations this process holds, one per state dir, until it exits.
static HELD: Mutex<Vec<(PathBuf, Generation, Option<FileLock>)>> = Mutex::new(Vec::new());

/// The generation this process builds and boots with: the one `rootfs` named at its first
/// call, held with a shared lock from then until the process exits, so every later call (a
/// bisect's every step) gets the same tree whatever `setup-rootfs` does meanwhile.
pub fn in_use(state: &StateDir) -> Result<Generation> {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, g, _)) = held.iter().find(|(root, _, _)| *root == state.root) {
        return Ok(g.clone());
    }
    // A remover holds a generation's lock only after `rootfs` moved on: read the link again.
    for _ in 0..50 {
        let Some((g, locked)) = current(state)? else {
            bail!(
                "no rootfs at {}: run `cargo xtask setup-rootfs`",
                state.rootfs().display()
            );
        };
        if !locked {
            held.push((state.root.clone(), g.clone(), None));
            return Ok(g);
        }
        match FileLock::try_acquire_shared(&g.lock_path())? {
            Some(l) if g.is_built() => {
                held.push((state.root.clone(), g.clone(), Some(l)));
                return Ok(g);
            }
            _ => crate::signals::sleep(Duration::from_millis(100))?,
        }
    }
    bail!(
        "the rootfs at {} kept changing while it was being opened: is a setup-rootfs looping?",
        state.rootfs().display()
    )
}

/// [`in_use`] for the guest root of `arch` (the host's is the state dir's own rootfs); a
/// missing one names the command that makes it.
pub fn in_use_for(state: &StateDir, arch: &crate::arch::Arch) -> Result<Generation> {
    if arch.is_host() {
        return in_use(state);
    }
    let roots = state.guest_roots(arch);
    if current(&roots)?.is_none() {
        bail!(
            "no {} rootfs at {}: run `cargo xtask setup-rootfs --arch {}`",
            arch.name,
            roots.rootfs().display(),
            arch.name
        );
    }
    in_use(&roots)
}

/// A new generation's name: the recipe digest's short form and when it was built.
pub fn name(meta: &Meta) -> String {
    format!("{}-{}", crate::units::short(&meta.digest), meta.built)
}

/// Puts a finished tree in place as the new current generation: the tree and its record
/// first, then `rootfs` (and `rootfs.json`) repointed in one rename each, so a crash leaves
/// either the old generation current or the new one, and an orphan tree for [`sweep`].
pub fn install(state: &StateDir, staging: Staging, meta: &Meta) -> Result<Generation> {
    let dir = state.rootfs_generations();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    migrate_unversioned(state)?;
    let g = Generation::at(dir.join(name(meta)));
    staging.finish(&g.tree)?;
    meta.write(&g.meta)?;
    let rel = Path::new(
        state
            .rootfs_generations()
            .file_name()
            .expect("rootfs.d has a name"),
    )
    .join(g.tree.file_name().expect("a generation has a name"));
    repoint(&state.rootfs(), &rel)?;
    repoint(&state.rootfs_meta(), &sibling(&rel, "json"))?;
    Ok(g)
}

/// The layout before generations (a `rootfs` directory and `rootfs.json` beside it) becomes a
/// generation of its own, so that the link can take its place.
fn migrate_unversioned(state: &StateDir) -> Result<()> {
    let link = state.rootfs();
    let Ok(m) = link.symlink_metadata() else {
        return Ok(());
    };
    if m.file_type().is_symlink() {
        return Ok(());
    }
    let g = Generation::at(
        state
            .rootfs_generations()
            .join(format!("unversioned-{}", crate::state::timestamp())),
    );
    std::fs::rename(&link, &g.tree)
        .with_context(|| format!("moving {} to {}", link.display(), g.tree.display()))?;
    if state.rootfs_meta().is_file() {
        std::fs::rename(state.rootfs_meta(), &g.meta)?;
    }
    Ok(())
}

/// Makes `link` point at `target` in one step: a new link renamed over the old one.
fn repoint(link: &Path, target: &Path) -> Result<()> {
    let tmp = sibling(link, "new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating the link {}", tmp.display()))?;
    std::fs::rename(&tmp, link).with_context(|| format!("repointing {}", link.display()))
}

/// What [`sweep`] did with the generations that are not current.
#[derive(Debug, Default, PartialEq)]
pub struct Swept {
    pub removed: Vec<PathBuf>,
    /// Generations still in use.
    pub kept: Vec<PathBuf>,
}

/// Removes every generation but the current one that no process holds; the ones in use stay
/// for a later sweep. Records and locks without a tree go too.
pub fn sweep(state: &StateDir) -> Result<Swept> {
    let mut swept = Swept::default();
    let dir = state.rootfs_generations();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(swept);
    };
    let current = current(state)?.map(|(g, _)| g.tree);
    for e in entries.flatten() {
        let path = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            // A record or lock of a tree that is gone (a lock only when no one holds it).
            if !path.with_extension("").exists() {
                match path.extension().and_then(|x| x.to_str()) {
                    Some("json") => {
                        let _ = std::fs::remove_file(&path);
                    }
                    Some("lock") => {
                        if let Some(_lock) = FileLock::try_acquire(&path)? {
                            let _ = std::fs::remove_file(&path);
                        }
                    }
                    _ => {}
                }
            }
            continue;
        }
        if current.as_deref() == Some(path.as_path()) {
            continue;
        }
        let g = Generation::at(path);
        match FileLock::try_acquire(&g.lock_path())? {
            Some(_lock) => {
                staging::remove_tree(&g.tree)?;
                let _ = std::fs::remove_file(&g.meta);
                let _ = std::fs::remove_file(g.lock_path());
                swept.removed.push(g.tree);
            }
            None => swept.kept.push(g.tree),
        }
    }
    Ok(swept)
}

/// Sweeps and says what it did, in one line each.
pub fn sweep_and_say(state: &StateDir) -> Result<()> {
    let swept = sweep(state)?;
    for t in &swept.removed {
        say(&format!(
            "removed the old rootfs generation {}",
            t.display()
        ));
    }
    for t in &swept.kept {
        say(&format!(
            "kept the old rootfs generation {}: a running build, VM or bisect uses it; the next setup-rootfs after it ends removes it",
            t.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(built: &str) -> Meta {
        Meta {
            digest: "ab".repeat(32),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            bootstrapper: "mmdebstrap".into(),
            gcc: "gcc (Debian 12.2.0-14) 12.2.0".into(),
            built: built.into(),
            toolchain_digest: None,
        }
    }

    /// A finished tree in a staging dir, as setup-rootfs leaves it.
    fn staged(state: &StateDir, mark: &str) -> Staging {
        let s = Staging::new(state.root.join("rootfs.tmp")).unwrap();
        std::fs::create_dir_all(s.path().join("usr/bin")).unwrap();
        std::fs::write(s.path().join("mark"), mark).unwrap();
        s
    }

    #[test]
    fn a_new_generation_becomes_current_and_the_old_one_goes_when_free() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(t.path().to_path_buf());
        let first = install(&state, staged(&state, "one"), &meta("20261201-000001")).unwrap();
        assert_eq!(current(&state).unwrap().unwrap().0, first);
        assert_eq!(
            std::fs::read_to_string(state.rootfs().join("mark")).unwrap(),
            "one"
        );
        assert_eq!(
            Meta::read(&state.rootfs_meta()).unwrap(),
            meta("20261201-000001")
        );

        // Held (as a build or VM of another process would), the old one stays.
        let held = FileLock::try_acquire_shared(&first.lock_path())
            .unwrap()
            .unwrap();
        let second = install(&state, staged(&state, "two"), &meta("20261201-000002")).unwrap();
        assert_eq!(
            std::fs::read_to_string(state.rootfs().join("mark")).unwrap(),
            "two"
        );
        let swept = sweep(&state).unwrap();
        assert!(swept.removed.is_empty());
        assert_eq!(swept.kept.len(), 1);
        assert!(first.tree.is_dir());

        drop(held);
        let swept = sweep(&state).unwrap();
        assert_eq!(swept.removed, vec![first.tree.clone()]);
        assert!(!first.tree.exists() && !first.meta.exists());
        assert!(second.tree.is_dir() && second.meta.is_file());
        assert!(!state.root.join("rootfs.tmp").exists());
    }

    #[test]
    fn the_layout_before_generations_is_read_and_migrated() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(t.path().to_path_buf());
        std::fs::create_dir_all(state.rootfs().join("usr/bin")).unwrap();
        meta("20261101-000000").write(&state.rootfs_meta()).unwrap();
        let (g, locked) = current(&state).unwrap().unwrap();
        assert_eq!(g.tree, state.rootfs());
        assert!(!locked);

        install(&state, staged(&state, "new"), &meta("20261201-000003")).unwrap();
        assert!(state
            .rootfs()
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink());
        // The old tree is a generation now, and nobody holds it.
        let swept = sweep(&state).unwrap();
        assert_eq!(swept.removed.len(), 1);
        assert!(swept.removed[0]
            .to_string_lossy()
            .contains("/rootfs.d/unversioned-"));
    }

    #[test]
    fn a_process_keeps_the_generation_it_first_used() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::new(t.path().to_path_buf());
        assert!(in_use(&state)
            .unwrap_err()
            .to_string()
            .contains("setup-rootfs"));
        let first = install(&state, staged(&state, "one"), &meta("20261201-000004")).unwrap();
        assert_eq!(in_use(&state).unwrap(), first);
        install(&state, staged(&state, "two"), &meta("20261201-000005")).unwrap();
        assert_eq!(in_use(&state).unwrap(), first, "a later call moved on");
        // This process holds it: a sweep keeps it.
        assert_eq!(sweep(&state).unwrap().kept.len(), 1);
    }
}
