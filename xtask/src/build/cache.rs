//! The build cache's store: one directory per key under `<state>/cache/entries`, published by
//! a rename so readers never see half an entry, a file lock per key, failures recorded with
//! their log, and the sweep of what killed writers left. (`cargo xtask cache`: `crate::cache`.)

use super::key::KeyInputs;
use crate::lock::FileLock;
use crate::state::{dir_size, StateDir};
use crate::units::short;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Names of the files in an entry.
pub const BZIMAGE: &str = "bzImage";
/// The uncompressed kernel, kept beside the image when its config has `CONFIG_PVH` (x86,
/// `plan::ConfigFacts::pvh_image`): QEMU enters it at its PVH entry, without the bzImage's
/// real-mode setup and decompression.
pub const PVH_IMAGE: &str = "vmlinux";
pub const SYSTEM_MAP: &str = "System.map";
pub const CONFIG: &str = "config";
pub const MODULES: &str = "modules";
pub const INITRAMFS: &str = "initramfs.img";
pub const BUILD_LOG: &str = "build.log";
pub const METADATA: &str = "metadata.json";
/// Touched on every hit; `gc` drops the least recently used entries first.
pub const LAST_USED: &str = "last-used";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// The kernel did not build; the entry holds the log and is answered at once next time.
    Failed,
}

/// `metadata.json`: what was built from what, how, and how long it took.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    pub key: String,
    pub status: Status,
    pub inputs: KeyInputs,
    /// The commit built (HEAD for a working state).
    pub commit: String,
    /// Whether uncommitted changes were built on top of `commit`.
    pub dirty: bool,
    /// The revision as the user typed it.
    pub rev: Option<String>,
    /// The repository and the directory the sources were compiled in.
    pub tree: PathBuf,
    pub source_dir: PathBuf,
    /// The input config's path.
    pub config_path: PathBuf,
    /// Every command of the build, in order (make, modules_install, dracut).
    pub commands: Vec<Vec<String>>,
    /// Seconds per step.
    pub durations: BTreeMap<String, f64>,
    /// Bytes per artifact.
    pub sizes: BTreeMap<String, u64>,
    pub kernelrelease: Option<String>,
    /// Unix time of the build's end.
    pub created: u64,
    /// The error lines of a failed build.
    pub summary: Option<String>,
    /// Size and digest of each file a boot reads, recorded at publish and checked before
    /// every hit. Entries made before this was recorded have none (their bzImage's size in
    /// `sizes` is checked instead).
    #[serde(default)]
    pub files: BTreeMap<String, FileRecord>,
    /// The built vmlinux's signature (`super::signature`): equal for two commits that make
    /// the same kernel, whatever their dates. None for a failure, an entry made before it was
    /// recorded, or a vmlinux without a banner.
    #[serde(default)]
    pub kernel_signature: Option<String>,
}

/// What publish recorded of one file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub size: u64,
    pub sha256: String,
}

/// The kernel image's file name in an entry built for `arch` (`KeyInputs::arch`): the name
/// make gave it (`bzImage`, arm64's `Image`).
pub fn image_for(arch: &str) -> &'static str {
    crate::arch::Arch::by_name(arch).map_or(BZIMAGE, |a| a.image_target)
}

impl Metadata {
    /// The kernel image's file name in this entry: its arch's, or `bzImage` in an entry made
    /// before the name followed the arch (every image was stored as `bzImage` then).
    pub fn image_name(&self) -> &'static str {
        let named = image_for(&self.inputs.arch);
        if self.files.contains_key(named) || self.sizes.contains_key(named) {
            named
        } else {
            BZIMAGE
        }
    }
}

/// Whether `s` can be a cache key: 64 lowercase hex digits, so it is safe as a file name.
pub fn is_key(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A published entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub dir: PathBuf,
    pub meta: Metadata,
}

impl Entry {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// When the entry last answered a request (or was made).
    pub fn last_used(&self) -> SystemTime {
        std::fs::metadata(self.path(LAST_USED))
            .and_then(|m| m.modified())
            .unwrap_or(UNIX_EPOCH + Duration::from_secs(self.meta.created))
    }

    pub fn size(&self) -> u64 {
        dir_size(&self.dir)
    }

    /// Checks a built entry against what publish recorded; `Err` says what is wrong (a file
    /// missing, truncated or changed). A recorded failure must be the source's: one that an
    /// older version recorded for a host's fault (a full disk, a killed compiler) is no answer.
    pub fn verify(&self) -> std::result::Result<(), String> {
        if self.meta.status == Status::Failed {
            let log = std::fs::read_to_string(self.path(BUILD_LOG)).unwrap_or_default();
            return match super::failure::classify(&log, "recorded") {
                super::failure::Failure::Source => Ok(()),
                super::failure::Failure::Host(why) => Err(format!(
                    "a recorded failure that was not the source's: {why}"
                )),
            };
        }
        let image = self.meta.image_name();
        if self.meta.files.is_empty() {
            // An entry from before digests were recorded: its image's size.
            let want = self.meta.sizes.get(image).copied();
            return check_file(&self.path(image), image, want, None);
        }
        if !self.meta.files.contains_key(image) {
            return Err(format!("no {image} recorded"));
        }
        for (name, rec) in &self.meta.files {
            check_file(&self.path(name), name, Some(rec.size), Some(&rec.sha256))?;
        }
        if self.meta.sizes.contains_key(MODULES) && !self.path(MODULES).is_dir() {
            return Err(format!("{MODULES} missing"));
        }
        Ok(())
    }
}

/// Checks one file's size and, when given, its digest.
fn check_file(
    path: &std::path::Path,
    name: &str,
    size: Option<u64>,
    sha256: Option<&str>,
) -> std::result::Result<(), String> {
    let have = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => return Err(format!("{name} is not a regular file")),
        Err(_) => return Err(format!("{name} missing")),
    };
    if let Some(want) = size {
        if have != want {
            return Err(format!("{name} is {have} bytes, {want} were recorded"));
        }
    }
    if let Some(want) = sha256 {
        if file_sha256(path).as_deref() != Some(want) {
            return Err(format!("{name} does not match its recorded digest"));
        }
    }
    Ok(())
}

/// Hex sha256 of a file's bytes; None when it cannot be read.
fn file_sha256(path: &std::path::Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).ok()?;
    Some(super::key::hex(&h.finalize()))
}

/// Flushes every file and directory below `dir` (and `dir`) to disk, so that a rename that
/// publishes it never survives a crash that its contents do not.
fn fsync_tree(dir: &std::path::Path) -> Result<()> {
    for e in walkdir::WalkDir::new(dir).contents_first(true) {
        let e = e?;
        if e.file_type().is_symlink() {
            continue;
        }
        std::fs::File::open(e.path())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("flushing {} to disk", e.path().display()))?;
    }
    Ok(())
}

/// Flushes a directory itself (the names in it) to disk.
fn fsync_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("flushing {} to disk", dir.display()))
}

pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(state: &StateDir) -> Cache {
        Cache {
            root: state.cache(),
        }
    }

    fn entries_dir(&self) -> PathBuf {
        self.root.join("entries")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.entries_dir().join(key)
    }

    /// The published entry of `key`, if any (an unreadable one counts as absent).
    pub fn lookup(&self, key: &str) -> Option<Entry> {
        self.read_entry(key).ok()
    }

    /// The entry of `key`, or why it cannot be read: its metadata missing, unparsable, or
    /// naming another key (a key read from disk is used as a path only when it is this one).
    fn read_entry(&self, key: &str) -> std::result::Result<Entry, String> {
        if !is_key(key) {
            return Err("not a cache key".into());
        }
        let dir = self.entry_dir(key);
        let text =
            std::fs::read_to_string(dir.join(METADATA)).map_err(|e| format!("{METADATA}: {e}"))?;
        let meta: Metadata = serde_json::from_str(&text).map_err(|e| format!("{METADATA}: {e}"))?;
        if meta.key != key {
            return Err(format!("{METADATA} names another key"));
        }
        Ok(Entry { dir, meta })
    }

    /// Marks an entry used now.
    pub fn touch(&self, key: &str) {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = std::fs::write(self.entry_dir(key).join(LAST_USED), format!("{secs}\n"));
    }

    /// The lock that one builder of `key` holds from lookup to publication; another builder
    /// of the same key waits at most `limit` (a build's own limit) for it.
    pub fn lock(&self, key: &str, limit: Duration) -> Result<FileLock> {
        FileLock::acquire(
            &self.lock_path(key),
            &format!("another build of cache key {}", short(key)),
            limit,
        )
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.root.join("locks").join(format!("{key}.lock"))
    }

    /// A private directory in which an entry is assembled; removed when dropped unpublished.
    /// The writer first sweeps what killed writers left.
    pub fn staging(&self, key: &str) -> Result<tempfile::TempDir> {
        self.sweep(false);
        std::fs::create_dir_all(self.tmp_dir())?;
        tempfile::Builder::new()
            .prefix(&format!("{key}."))
            .tempdir_in(self.tmp_dir())
            .context("creating a staging directory in the cache")
    }

    /// Records the size and digest of the files a boot reads, writes the metadata, flushes
    /// it all to disk and renames the staged directory into place (replacing a recorded
    /// failure or a broken entry of the same key). The caller holds the key's lock.
    pub fn publish(&self, staged: tempfile::TempDir, meta: &Metadata) -> Result<Entry> {
        let mut meta = meta.clone();
        // The files a boot reads, so the ones checked before a hit.
        for name in [image_for(&meta.inputs.arch), PVH_IMAGE, INITRAMFS] {
            let path = staged.path().join(name);
            if let Ok(m) = std::fs::metadata(&path) {
                let sha256 =
                    file_sha256(&path).with_context(|| format!("reading {}", path.display()))?;
                meta.files.insert(
                    name.to_string(),
                    FileRecord {
                        size: m.len(),
                        sha256,
                    },
                );
            }
        }
        let meta = &meta;
        std::fs::write(
            staged.path().join(METADATA),
            serde_json::to_string_pretty(meta)?,
        )?;
        std::fs::write(staged.path().join(LAST_USED), "")?;
        fsync_tree(staged.path())?;
        let dest = self.entry_dir(&meta.key);
        std::fs::create_dir_all(self.entries_dir())?;
        let old = dest.exists().then(|| {
            self.tmp_dir()
                .join(format!("old.{}.{}", meta.key, std::process::id()))
        });
        if let Some(old) = &old {
            std::fs::rename(&dest, old)?;
        }
        let staged = staged.keep();
        std::fs::rename(&staged, &dest)
            .with_context(|| format!("publishing {}", dest.display()))?;
        fsync_dir(&self.entries_dir())?;
        if let Some(old) = old {
            let _ = std::fs::remove_dir_all(old);
        }
        Ok(Entry {
            dir: dest,
            meta: meta.clone(),
        })
    }

    /// Every published entry that can be read.
    pub fn entries(&self) -> Result<Vec<Entry>> {
        Ok(self
            .scan()?
            .into_iter()
            .filter_map(|(_, e)| e.ok())
            .collect())
    }

    /// Every directory in `entries/`, by name: the entry, or why it cannot be read.
    pub fn scan(&self) -> Result<Vec<(String, std::result::Result<Entry, String>)>> {
        let dir = self.entries_dir();
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let name = e?.file_name().to_string_lossy().into_owned();
            let entry = self.read_entry(&name);
            out.push((name, entry));
        }
        Ok(out)
    }

    /// Removes what no one will use, and returns what it removed and why: staging, `old.*`
    /// and `gc.*` directories of killed writers (whose key no one holds), and entries that
    /// cannot be read (a name that is no key, metadata missing or unparsable); with `verify`
    /// (`gc`), also built entries whose files do not match their record. Best effort: what
    /// cannot be removed now is tried again next time.
    pub fn sweep(&self, verify: bool) -> Vec<(String, String)> {
        let mut removed = Vec::new();
        if let Ok(dir) = std::fs::read_dir(self.tmp_dir()) {
            for e in dir.filter_map(|e| e.ok()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = leftover_key(&name);
                if self.remove_unheld(&e.path(), key).unwrap_or(false) {
                    removed.push((name, "left by a killed writer".to_string()));
                }
            }
        }
        for (name, entry) in self.scan().unwrap_or_default() {
            let why = match entry {
                Err(why) => why,
                Ok(e) if verify => match e.verify() {
                    Err(why) => why,
                    Ok(()) => continue,
                },
                Ok(_) => continue,
            };
            let key = is_key(&name).then_some(name.as_str());
            if self
                .remove_unheld(&self.entries_dir().join(&name), key)
                .unwrap_or(false)
            {
                removed.push((name, why));
            }
        }
        removed
    }

    /// Removes `path` unless a builder holds `key` (a path of no key has no holder): renamed
    /// into `tmp/` first, so that it vanishes from its place at once.
    fn remove_unheld(&self, path: &std::path::Path, key: Option<&str>) -> Result<bool> {
        let _lock = match key {
            Some(k) => match FileLock::try_acquire(&self.lock_path(k))? {
                Some(lock) => Some(lock),
                None => return Ok(false),
            },
            None => None,
        };
        if path.parent() == Some(self.tmp_dir().as_path()) {
            remove_any(path)?;
            return Ok(true);
        }
        std::fs::create_dir_all(self.tmp_dir())?;
        let trash = self.tmp_dir().join(format!(
            "gc.{}.{}",
            key.unwrap_or("junk"),
            std::process::id()
        ));
        std::fs::rename(path, &trash)?;
        remove_any(&trash)?;
        Ok(true)
    }

    /// Removes an entry unless a builder holds its key: renamed away first, so it vanishes at once.
    pub fn remove(&self, key: &str) -> Result<bool> {
        let Some(_lock) = FileLock::try_acquire(&self.lock_path(key))? else {
            return Ok(false);
        };
        std::fs::create_dir_all(self.tmp_dir())?;
        let trash = self
            .tmp_dir()
            .join(format!("gc.{key}.{}", std::process::id()));
        std::fs::rename(self.entry_dir(key), &trash)?;
        std::fs::remove_dir_all(&trash)?;
        Ok(true)
    }
}

/// The key of a leftover in `tmp/`: a staging dir `KEY.random`, or `old.KEY.pid` (publish) or
/// `gc.KEY.pid` (removal); None for a name we never make.
fn leftover_key(name: &str) -> Option<&str> {
    let rest = name
        .strip_prefix("old.")
        .or_else(|| name.strip_prefix("gc."))
        .unwrap_or(name);
    let key = rest.split('.').next()?;
    is_key(key).then_some(key)
}

/// Removes a file or a directory tree (never following a symlink).
fn remove_any(path: &std::path::Path) -> Result<()> {
    let is_dir = std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir());
    if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .with_context(|| format!("removing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn meta(key: &str, status: Status) -> Metadata {
        Metadata {
            key: key.into(),
            status,
            inputs: KeyInputs {
                tree_id: "t".into(),
                dirty: None,
                config: "c".into(),
                toolchain: "gcc".into(),
                arch: "x86_64".into(),
                commands: vec![],
            },
            commit: "c0ffee".into(),
            dirty: false,
            rev: None,
            tree: "/tree".into(),
            source_dir: "/tree".into(),
            config_path: "/c".into(),
            commands: vec![],
            durations: BTreeMap::new(),
            sizes: BTreeMap::new(),
            kernelrelease: None,
            created: 1,
            summary: None,
            files: BTreeMap::new(),
            kernel_signature: None,
        }
    }

    #[test]
    fn publish_is_atomic_and_replaces_a_failure() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let key = "ab".repeat(32);
        let s = cache.staging(&key).unwrap();
        let staged_path = s.path().to_path_buf();
        std::fs::write(s.path().join(BUILD_LOG), "boom").unwrap();
        assert!(cache.lookup(&key).is_none());
        cache.publish(s, &meta(&key, Status::Failed)).unwrap();
        assert!(!staged_path.exists());
        assert_eq!(cache.lookup(&key).unwrap().meta.status, Status::Failed);

        let s = cache.staging(&key).unwrap();
        std::fs::write(s.path().join(BZIMAGE), "kernel").unwrap();
        cache.publish(s, &meta(&key, Status::Ok)).unwrap();
        let e = cache.lookup(&key).unwrap();
        assert_eq!(e.meta.status, Status::Ok);
        assert!(e.path(BZIMAGE).exists() && !e.path(BUILD_LOG).exists());

        // A staging dir dropped unpublished (an interrupted build) leaves nothing behind.
        let s = cache.staging("cd").unwrap();
        let p = s.path().to_path_buf();
        drop(s);
        assert!(!p.exists() && cache.lookup("cd").is_none());
        assert_eq!(cache.entries().unwrap().len(), 1);
        assert!(cache.remove(&key).unwrap());
        assert!(cache.entries().unwrap().is_empty());
    }

    /// A PVH config's entry keeps its vmlinux, checked before every hit like the bzImage
    /// (a boot reads it).
    #[test]
    fn the_pvh_image_is_kept_and_checked_like_the_image() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let m = meta(&"ab".repeat(32), Status::Ok);
        let s = cache.staging(&m.key).unwrap();
        std::fs::write(s.path().join(BZIMAGE), "kernel").unwrap();
        std::fs::write(s.path().join(PVH_IMAGE), "the same kernel, uncompressed").unwrap();
        let e = cache.publish(s, &m).unwrap();
        assert_eq!(e.meta.files[PVH_IMAGE].size, 29);
        assert_eq!(e.verify(), Ok(()));
        std::fs::write(e.path(PVH_IMAGE), "the same kernel, uncompressed, changed").unwrap();
        assert_eq!(
            e.verify().unwrap_err(),
            "vmlinux is 38 bytes, 29 were recorded"
        );
    }

    #[test]
    fn an_arm64_image_is_named_image_and_old_entries_still_read() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let mut m = meta(&"ab".repeat(32), Status::Ok);
        m.inputs.arch = "arm64".into();
        let s = cache.staging(&m.key).unwrap();
        std::fs::write(s.path().join("Image"), "arm64 image").unwrap();
        m.sizes.insert("Image".into(), 11);
        let e = cache.publish(s, &m).unwrap();
        assert_eq!(e.meta.image_name(), "Image");
        assert_eq!(e.meta.files["Image"].size, 11);
        assert_eq!(cache.lookup(&m.key).unwrap().verify(), Ok(()));
        // Made before the name followed the arch: its arm64 image is a `bzImage`.
        let mut old = meta(&"cd".repeat(32), Status::Ok);
        old.inputs.arch = "arm64".into();
        let s = cache.staging(&old.key).unwrap();
        std::fs::write(s.path().join(BZIMAGE), "arm64 image").unwrap();
        old.sizes.insert(BZIMAGE.into(), 11);
        std::fs::write(
            s.path().join(METADATA),
            serde_json::to_string(&old).unwrap(),
        )
        .unwrap();
        std::fs::rename(s.keep(), cache.entry_dir(&old.key)).unwrap();
        let e = cache.lookup(&old.key).unwrap();
        assert_eq!(e.meta.image_name(), BZIMAGE);
        assert_eq!(e.verify(), Ok(()));
    }

    #[test]
    fn a_published_image_is_checked_before_use() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let key = "ef".repeat(32);
        let s = cache.staging(&key).unwrap();
        std::fs::write(s.path().join(BZIMAGE), "kernel image").unwrap();
        let mut m = meta(&key, Status::Ok);
        m.kernel_signature = Some("5e".repeat(32));
        let e = cache.publish(s, &m).unwrap();
        assert_eq!(e.meta.files[BZIMAGE].size, 12);
        // The kernel's signature is kept with the entry.
        assert_eq!(
            cache.lookup(&key).unwrap().meta.kernel_signature,
            Some("5e".repeat(32))
        );
        assert_eq!(cache.lookup(&key).unwrap().verify(), Ok(()));

        // Changed in place, same size.
        std::fs::write(e.path(BZIMAGE), "kernel imagE").unwrap();
        let why = cache.lookup(&key).unwrap().verify().unwrap_err();
        assert!(why.contains("digest"), "{why}");
        // Truncated.
        std::fs::write(e.path(BZIMAGE), "kern").unwrap();
        let why = cache.lookup(&key).unwrap().verify().unwrap_err();
        assert_eq!(why, "bzImage is 4 bytes, 12 were recorded");
        // Missing.
        std::fs::remove_file(e.path(BZIMAGE)).unwrap();
        let why = cache.lookup(&key).unwrap().verify().unwrap_err();
        assert_eq!(why, "bzImage missing");
    }

    #[test]
    fn an_entry_from_before_digests_is_checked_by_size() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let key = "01".repeat(32);
        let dir = cache.entry_dir(&key);
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = meta(&key, Status::Ok);
        m.sizes.insert(BZIMAGE.into(), 6);
        let mut json: serde_json::Value = serde_json::to_value(&m).unwrap();
        json.as_object_mut().unwrap().remove("files");
        json.as_object_mut().unwrap().remove("kernel_signature");
        std::fs::write(dir.join(METADATA), json.to_string()).unwrap();
        std::fs::write(dir.join(BZIMAGE), "kernel").unwrap();
        assert_eq!(cache.lookup(&key).unwrap().verify(), Ok(()));
        // Nor a signature: its kernel is not compared with another's.
        assert_eq!(cache.lookup(&key).unwrap().meta.kernel_signature, None);
        std::fs::write(dir.join(BZIMAGE), "").unwrap();
        assert!(cache.lookup(&key).unwrap().verify().is_err());
    }

    #[test]
    fn keys_read_from_disk_are_checked_before_use_as_a_path() {
        assert!(is_key(&"ab".repeat(32)));
        assert!(!is_key("../../x"));
        assert!(!is_key(&"AB".repeat(32)));
        assert!(!is_key(&"ab".repeat(31)));
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let key = "23".repeat(32);
        let dir = cache.entry_dir(&key);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(METADATA),
            serde_json::to_string(&meta("../../x", Status::Ok)).unwrap(),
        )
        .unwrap();
        assert!(cache.lookup(&key).is_none());
        assert!(cache.lookup("../../x").is_none());
    }

    #[test]
    fn leftovers_are_swept_unless_a_writer_holds_their_key() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let (held, free) = ("aa".repeat(32), "bb".repeat(32));
        let _writer = cache.lock(&held, Duration::from_secs(1)).unwrap();
        let tmp = cache.tmp_dir();
        for name in [
            format!("{held}.abc123"),
            format!("{free}.abc123"),
            format!("old.{free}.77"),
            format!("gc.{free}.78"),
            "junk".to_string(),
        ] {
            std::fs::create_dir_all(tmp.join(name).join("modules")).unwrap();
        }
        // Entries: one good, one whose metadata does not parse, one not named by a key, one
        // whose image is gone (found only with verify).
        let good = "cc".repeat(32);
        let s = cache.staging(&good).unwrap();
        std::fs::write(s.path().join(BZIMAGE), "k").unwrap();
        cache.publish(s, &meta(&good, Status::Ok)).unwrap();
        let broken = "dd".repeat(32);
        let s = cache.staging(&broken).unwrap();
        std::fs::write(s.path().join(BZIMAGE), "k").unwrap();
        cache.publish(s, &meta(&broken, Status::Ok)).unwrap();
        std::fs::remove_file(cache.entry_dir(&broken).join(BZIMAGE)).unwrap();
        let unparsable = "ee".repeat(32);
        std::fs::create_dir_all(cache.entry_dir(&unparsable)).unwrap();
        std::fs::write(cache.entry_dir(&unparsable).join(METADATA), "{").unwrap();
        std::fs::create_dir_all(cache.entries_dir().join("..x")).unwrap();

        // (staging() swept too, so most are gone already.)
        cache.sweep(false);
        let left: Vec<String> = std::fs::read_dir(&tmp)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left, [format!("{held}.abc123")]);
        let mut names: Vec<String> = cache.scan().unwrap().into_iter().map(|e| e.0).collect();
        names.sort();
        assert_eq!(names, [good.clone(), broken.clone()]);
        // gc's sweep verifies: the entry whose image is gone goes too.
        let removed = cache.sweep(true);
        assert_eq!(removed, [(broken.clone(), "bzImage missing".to_string())]);
        assert_eq!(cache.entries().unwrap().len(), 1);
    }

    #[test]
    fn a_recorded_failure_must_be_the_sources() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::new(&StateDir::new(d.path().into()));
        let data = |name: &str| {
            std::fs::read_to_string(format!(
                "{}/test_data/build/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        for (log, ok) in [("syntax_error.log", true), ("enospc_make.log", false)] {
            let key = if ok { "a1" } else { "a2" }.repeat(32);
            let s = cache.staging(&key).unwrap();
            std::fs::write(s.path().join(BUILD_LOG), data(log)).unwrap();
            let e = cache.publish(s, &meta(&key, Status::Failed)).unwrap();
            assert_eq!(e.verify().is_ok(), ok, "{log}: {:?}", e.verify());
        }
    }

    #[test]
    fn leftover_names() {
        let k = "ab".repeat(32);
        assert_eq!(leftover_key(&format!("{k}.x1y2z3")), Some(k.as_str()));
        assert_eq!(leftover_key(&format!("old.{k}.12")), Some(k.as_str()));
        assert_eq!(leftover_key(&format!("gc.{k}.12")), Some(k.as_str()));
        assert_eq!(leftover_key("gc.junk.12"), None);
        assert_eq!(leftover_key("whatever"), None);
    }
}
