//! Advisory file locks (flock): one per cache key and one per source dir, so two builders
//! never write the same entry, worktree or build dir at once. The kernel drops a lock when
//! its holder dies, so a killed build never leaves a stale lock behind.

use crate::signals;
use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    // Closing the file releases the lock.
    _file: File,
}

impl FileLock {
    /// Takes the lock without waiting; None when another process holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        // SAFETY: flock(2) on a file descriptor we own; no memory is shared.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(FileLock { _file: file }));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Ok(None);
        }
        Err(err).with_context(|| format!("locking {}", path.display()))
    }

    /// Takes the lock, waiting (interruptibly) while another process holds it; `what` names
    /// the locked thing in the one line printed while waiting.
    pub fn acquire(path: &Path, what: &str) -> Result<FileLock> {
        let mut told = false;
        loop {
            if let Some(lock) = Self::try_acquire(path)? {
                return Ok(lock);
            }
            if !told {
                eprintln!("waiting for another build that holds {what}…");
                told = true;
            }
            signals::sleep(Duration::from_millis(200))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_waits_until_the_first_drops() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("locks/k.lock");
        let first = FileLock::try_acquire(&p).unwrap().expect("free");
        assert!(FileLock::try_acquire(&p).unwrap().is_none());
        drop(first);
        assert!(FileLock::try_acquire(&p).unwrap().is_some());
    }
}
