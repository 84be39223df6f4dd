//! Advisory file locks (flock), the toolkit's one lock: per cache key, per build dir, per
//! trim scratch dir, per rootfs build and (shared) per rootfs generation in use. The kernel drops a lock when its holder dies, so a killed
//! run never leaves a stale lock; the holder writes who it is into the file, so a waiter can
//! say whom it waits for, and every wait has a deadline.

use crate::signals;
use crate::units::human_duration;
use anyhow::{bail, Context, Result};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A lock, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    // Closing the file releases the lock.
    _file: File,
}

/// How often a waiter that cannot show a spinner says that it still waits.
const STILL_WAITING_EVERY: Duration = Duration::from_secs(30);

impl FileLock {
    /// Takes the lock without waiting; None when another process holds it.
    pub fn try_acquire(path: &Path) -> Result<Option<FileLock>> {
        let mut file = open(path)?;
        if !flock(&file, libc::LOCK_EX, path)? {
            return Ok(None);
        }
        // Who holds it, for anyone who waits: this process and what it is doing.
        let _ = file.set_len(0).and_then(|()| {
            file.rewind()?;
            file.write_all(holder_line(std::process::id(), now_secs(), &argv()).as_bytes())
        });
        Ok(Some(FileLock { _file: file }))
    }

    /// Takes the lock shared with other shared holders, without waiting; None while a
    /// process holds it exclusively. Shared holders write nothing into the file.
    pub fn try_acquire_shared(path: &Path) -> Result<Option<FileLock>> {
        let file = open(path)?;
        Ok(flock(&file, libc::LOCK_SH, path)?.then_some(FileLock { _file: file }))
    }

    /// Takes the lock, waiting (interruptibly) while another process holds it, for at most
    /// `limit`; `what` names the locked thing in the lines printed while waiting and in the
    /// error when the wait gives up.
    pub fn acquire(path: &Path, what: &str, limit: Duration) -> Result<FileLock> {
        let start = Instant::now();
        let mut said = None::<Instant>;
        loop {
            if let Some(lock) = Self::try_acquire(path)? {
                return Ok(lock);
            }
            let holder = holder(path);
            if start.elapsed() >= limit {
                bail!(
                    "gave up after {} waiting for {what}, {holder}: let it finish, or end it",
                    human_duration(limit)
                );
            }
            if said.is_none_or(|t| t.elapsed() >= STILL_WAITING_EVERY) {
                eprintln!("waiting for {what}, {holder}…");
                said = Some(Instant::now());
            }
            signals::sleep(Duration::from_millis(200))?;
        }
    }
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock file {}", path.display()))
}

/// Takes `op` without blocking (a blocked flock could not be interrupted); false when another
/// process holds the lock.
fn flock(file: &File, op: libc::c_int, path: &Path) -> Result<bool> {
    // SAFETY: flock(2) on a file descriptor we own; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        return Ok(false);
    }
    Err(err).with_context(|| format!("locking {}", path.display()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// This process's command line, short: what a waiter shows of the holder.
fn argv() -> String {
    let words: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut line = words.join(" ");
    if line.len() > 200 {
        let cut = (0..=200)
            .rev()
            .find(|i| line.is_char_boundary(*i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    line
}

/// What the holder writes into the lock file.
fn holder_line(pid: u32, since: u64, argv: &str) -> String {
    format!("{pid} {since} {argv}\n")
}

/// Who holds the lock at `path`, as a waiter says it: `held by pid 4242 (…) for 1m05s`.
pub fn holder(path: &Path) -> String {
    describe_holder(&read_holder(path), now_secs(), |pid| {
        Path::new(&format!("/proc/{pid}")).exists()
    })
}

fn read_holder(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    text
}

/// `held by pid 4242 (xtask build v6.1) for 1m05s`, from what the holder wrote. A line whose
/// pid is gone is an earlier holder's (the lock is held by someone who wrote nothing, such as
/// `flock(1)`), so it names no one.
fn describe_holder(text: &str, now: u64, alive: impl Fn(u32) -> bool) -> String {
    let mut parts = text.trim().splitn(3, ' ');
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let since = parts.next().and_then(|s| s.parse::<u64>().ok());
    let argv = parts.next().unwrap_or("").trim();
    match (pid, since) {
        (Some(pid), Some(since)) if alive(pid) => format!(
            "held by pid {pid} ({argv}) for {}",
            human_duration(Duration::from_secs(now.saturating_sub(since)))
        ),
        _ => "held by another process".to_string(),
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
        // A process another test forks at this moment holds the lock's file until it execs
        // (close-on-exec): wait for that instead of trying once.
        FileLock::acquire(&p, "the test lock", Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn a_wait_gives_up_at_its_limit_naming_the_holder() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("k.lock");
        let _held = FileLock::try_acquire(&p).unwrap().expect("free");
        let start = Instant::now();
        let e = FileLock::acquire(&p, "the test entry", Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(start.elapsed() < Duration::from_secs(5));
        let me = format!("held by pid {} (", std::process::id());
        assert!(
            e.starts_with("gave up after 300ms waiting for the test entry, ") && e.contains(&me),
            "{e}"
        );
    }

    #[test]
    fn the_holder_reads_as_who_and_how_long() {
        let line = holder_line(4242, 1000, "xtask build v6.1");
        let alive = |_| true;
        assert_eq!(
            describe_holder(&line, 1065, alive),
            "held by pid 4242 (xtask build v6.1) for 1m05s"
        );
        assert_eq!(
            describe_holder(&line, 1065, |_| false),
            "held by another process"
        );
        assert_eq!(describe_holder("", 5, alive), "held by another process");
        assert_eq!(
            describe_holder("garbage", 5, alive),
            "held by another process"
        );
    }
}
