//! The rootfs recipe (`rootfs/`): its package list, its digest, and the metadata recorded
//! beside a built rootfs (`rootfs.json`).

use crate::units::short;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Debian suite when neither --suite nor xtask.toml names one.
pub const DEFAULT_SUITE: &str = "bookworm";
/// Debian mirror when neither --mirror nor xtask.toml names one.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// Bumped when the way a recipe is turned into a tree changes, so old trees are rebuilt.
const RECIPE_FORMAT: &str = "xtask-rootfs-recipe 1";

/// The recipe folder: the workspace's `rootfs/`, or `$XTASK_ROOTFS_RECIPE` (for trying a
/// recipe out, and for tests of broken recipes).
pub fn recipe_dir() -> PathBuf {
    match std::env::var_os("XTASK_ROOTFS_RECIPE") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => crate::settings::workspace_root().join("rootfs"),
    }
}

/// What to build: the recipe folder and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub suite: String,
    pub mirror: String,
}

impl Source {
    /// Options override xtask.toml, which overrides the defaults; both are checked here so a
    /// typo fails before anything is downloaded.
    pub fn resolve(
        suite: Option<&str>,
        mirror: Option<&str>,
        file: &crate::settings::FileRootfs,
    ) -> Result<Source> {
        let suite = suite
            .or(file.suite.as_deref())
            .unwrap_or(DEFAULT_SUITE)
            .to_string();
        let mirror = mirror
            .or(file.mirror.as_deref())
            .unwrap_or(DEFAULT_MIRROR)
            .trim_end_matches('/')
            .to_string();
        let suite_ok = suite.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && suite
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c));
        if !suite_ok {
            bail!("`{suite}` is not a Debian suite name: pass --suite bookworm (or another suite)");
        }
        if !["http://", "https://", "file:/"]
            .iter()
            .any(|p| mirror.starts_with(p))
        {
            bail!("`{mirror}` is not a mirror URL: pass --mirror http://deb.debian.org/debian (or another http, https or file URL)");
        }
        Ok(Source { suite, mirror })
    }
}

/// The packages of `packages.txt`: one per line, `#` starts a comment, duplicates dropped.
pub fn parse_packages(text: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            continue;
        }
        // Debian policy 5.6.1: lower case letters, digits, + - . and at least two characters.
        let valid = name.len() >= 2
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
        if !valid {
            bail!(
                "packages.txt line {}: `{name}` is not a Debian package name (one name per line, # for comments)",
                i + 1
            );
        }
        if !out.iter().any(|p| p == name) {
            out.push(name.to_string());
        }
    }
    if out.is_empty() {
        bail!("packages.txt lists no packages");
    }
    Ok(out)
}

/// The guest part of the recipe's package list: what every guest root gets.
pub const GUEST_PACKAGES: &str = "packages.txt";
/// The build container's part: only the host's architecture's rootfs gets it.
pub const BUILD_PACKAGES: &str = "build-packages.txt";

/// Reads the package list of a recipe folder: the guest part, plus the build container's
/// when the root is also the build container (a recipe may lack that file).
pub fn read_packages(recipe: &Path, build_container: bool) -> Result<Vec<String>> {
    let mut files = vec![GUEST_PACKAGES];
    if build_container && recipe.join(BUILD_PACKAGES).exists() {
        files.push(BUILD_PACKAGES);
    }
    let mut text = String::new();
    for f in files {
        let path = recipe.join(f);
        let part = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the package list {}", path.display()))?;
        parse_packages(&part).with_context(|| format!("in {}", path.display()))?;
        text.push_str(&part);
        text.push('\n');
    }
    parse_packages(&text)
}

/// The digest of the guest root of another architecture than the host's, from the recipe
/// digest: the same recipe, another tree.
pub fn digest_for_arch(digest: &str, arch: &crate::arch::Arch) -> String {
    if arch.is_host() {
        return digest.to_string();
    }
    let mut h = Sha256::new();
    field(&mut h, digest.as_bytes());
    field(&mut h, b"guest root of");
    field(&mut h, arch.debian_arch.as_bytes());
    hex(&h.finalize())
}

/// The folder of files copied over the tree: the guest's own configuration (its init, units,
/// hostname), which no build reads.
pub const OVERLAY: &str = "overlay";
/// The folder of the compiled fast-boot init's source (`rootfs::fast_init`), a guest's
/// program that no build reads either.
pub const GUEST_INIT: &str = "guest-init";

/// The recipe digest (hex sha256): every entry under `recipe`, walked in sorted order, as
/// relative path, kind, permission bits and content (a symlink: its target), then the suite
/// and mirror. Any rename, chmod or edit changes it; nothing else does (not mtimes).
pub fn digest(recipe: &Path, source: &Source) -> Result<String> {
    digest_but(recipe, source, &[])
}

/// The digest of what makes the build container's toolchain: the recipe but [`OVERLAY`] and
/// [`GUEST_INIT`] (the packages, customize.sh, suite and mirror). A change to the guest's
/// init rebuilds the rootfs, not every kernel and ccache directory.
pub fn toolchain_digest(recipe: &Path, source: &Source) -> Result<String> {
    digest_but(recipe, source, &[OVERLAY, GUEST_INIT])
}

/// [`digest`], leaving out the top-level folders `skip` and everything under them.
fn digest_but(recipe: &Path, source: &Source, skip: &[&str]) -> Result<String> {
    let mut h = Sha256::new();
    field(&mut h, RECIPE_FORMAT.as_bytes());
    let walk = walkdir::WalkDir::new(recipe)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.with_context(|| format!("reading the recipe {}", recipe.display()))?;
        let rel = entry
            .path()
            .strip_prefix(recipe)
            .expect("walk stays inside");
        if skip.iter().any(|s| rel.starts_with(s)) {
            continue;
        }
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", entry.path().display()))?;
        field(&mut h, rel.as_os_str().as_encoded_bytes());
        let mode = format!("{:o}", meta.permissions().mode() & 0o7777);
        let ft = meta.file_type();
        if ft.is_dir() {
            field(&mut h, b"dir");
            field(&mut h, mode.as_bytes());
        } else if ft.is_symlink() {
            field(&mut h, b"symlink");
            let target = std::fs::read_link(entry.path())?;
            field(&mut h, target.as_os_str().as_encoded_bytes());
        } else if ft.is_file() {
            field(&mut h, b"file");
            field(&mut h, mode.as_bytes());
            let content = std::fs::read(entry.path())
                .with_context(|| format!("reading {}", entry.path().display()))?;
            field(&mut h, &content);
        } else {
            bail!(
                "{} is neither a file, a directory nor a symlink: remove it from the recipe",
                entry.path().display()
            );
        }
    }
    field(&mut h, source.suite.as_bytes());
    field(&mut h, source.mirror.as_bytes());
    Ok(hex(&h.finalize()))
}

/// One length-prefixed field, so that no two different recipes hash the same bytes.
fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `rootfs.json`: what the rootfs beside it was built from. Written last, so a rootfs
/// without a matching record is never taken as up to date.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The recipe digest (hex sha256).
    pub digest: String,
    pub suite: String,
    pub mirror: String,
    /// mmdebstrap or debootstrap.
    pub bootstrapper: String,
    /// The first line of `gcc --version` inside the rootfs.
    pub gcc: String,
    /// When it was built, `YYYYMMDD-HHMMSS` UTC.
    pub built: String,
    /// [`toolchain_digest`] of the recipe (a record written before it was kept has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain_digest: Option<String>,
}

impl Meta {
    /// The toolchain identity that build cache keys carry: the prefix of the recipe's
    /// digest without its overlay (of the whole recipe's, for an older record) and gcc.
    pub fn toolchain_identity(&self) -> String {
        match &self.toolchain_digest {
            Some(d) => format!("toolchain-{} {}", short(d), self.gcc),
            None => format!("rootfs-{} {}", short(&self.digest), self.gcc),
        }
    }

    pub fn read(path: &Path) -> Result<Meta> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    /// Writes atomically: a temporary file renamed over the old one.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::atomic::write(path, serde_json::to_string_pretty(self)? + "\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn source() -> Source {
        Source {
            suite: "bookworm".into(),
            mirror: DEFAULT_MIRROR.into(),
        }
    }

    /// A small recipe: packages, an overlay with an executable, customize.sh.
    fn recipe() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        fs::write(r.join("packages.txt"), "bc\nkmod\n").unwrap();
        fs::create_dir_all(r.join("overlay/etc")).unwrap();
        fs::create_dir_all(r.join("overlay/usr/local/sbin")).unwrap();
        fs::write(r.join("overlay/etc/hostname"), "xtask\n").unwrap();
        fs::write(r.join("overlay/usr/local/sbin/xtask-init"), "#!/bin/sh\n").unwrap();
        chmod(&r.join("overlay/usr/local/sbin/xtask-init"), 0o755);
        chmod(&r.join("overlay/etc/hostname"), 0o644);
        fs::write(r.join("customize.sh"), "set -e\n").unwrap();
        t
    }

    fn chmod(p: &Path, mode: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn digest_is_stable() {
        let a = recipe();
        let b = recipe();
        let da = digest(a.path(), &source()).unwrap();
        assert_eq!(da.len(), 64);
        assert_eq!(da, digest(a.path(), &source()).unwrap());
        // Same content made in another place and order: same digest.
        assert_eq!(da, digest(b.path(), &source()).unwrap());
    }

    #[test]
    fn digest_ignores_mtimes() {
        let r = recipe();
        let before = digest(r.path(), &source()).unwrap();
        let f = r.path().join("packages.txt");
        let text = fs::read(&f).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, text).unwrap();
        assert_eq!(before, digest(r.path(), &source()).unwrap());
    }

    #[test]
    fn digest_changes_with_content() {
        let r = recipe();
        let before = digest(r.path(), &source()).unwrap();
        fs::write(r.path().join("overlay/etc/hostname"), "other\n").unwrap();
        assert_ne!(before, digest(r.path(), &source()).unwrap());
    }

    #[test]
    fn the_toolchain_digest_leaves_the_guests_overlay_and_init_out() {
        let r = recipe();
        let (whole, toolchain) = (
            digest(r.path(), &source()).unwrap(),
            toolchain_digest(r.path(), &source()).unwrap(),
        );
        assert_ne!(whole, toolchain);
        // The guest's init changes: a new rootfs, the same toolchain.
        fs::write(
            r.path().join("overlay/usr/local/sbin/xtask-init"),
            "#!/bin/sh\n:\n",
        )
        .unwrap();
        assert_ne!(whole, digest(r.path(), &source()).unwrap());
        assert_eq!(toolchain, toolchain_digest(r.path(), &source()).unwrap());
        // So does the compiled fast init's source.
        let changed = digest(r.path(), &source()).unwrap();
        fs::create_dir_all(r.path().join("guest-init")).unwrap();
        fs::write(
            r.path().join("guest-init/xtask-init-fast.rs"),
            "fn main() {}\n",
        )
        .unwrap();
        assert_ne!(changed, digest(r.path(), &source()).unwrap());
        assert_eq!(toolchain, toolchain_digest(r.path(), &source()).unwrap());
        // A package or customize.sh changes the toolchain, as do the suite and mirror.
        fs::write(r.path().join("customize.sh"), "set -eu\n").unwrap();
        let customized = toolchain_digest(r.path(), &source()).unwrap();
        assert_ne!(toolchain, customized);
        fs::write(r.path().join("packages.txt"), "bc\nkmod\nflex\n").unwrap();
        assert_ne!(customized, toolchain_digest(r.path(), &source()).unwrap());
        let trixie = Source {
            suite: "trixie".into(),
            ..source()
        };
        assert_ne!(
            toolchain_digest(r.path(), &source()).unwrap(),
            toolchain_digest(r.path(), &trixie).unwrap()
        );
    }

    #[test]
    fn the_toolchain_identity_falls_back_to_the_recipe_digest_of_an_older_record() {
        let old: Meta = serde_json::from_str(
            r#"{"digest": "3861a64abc96a47302ca41e4eae91af038b3cc87fcbbc9bc6da4488422d96803",
                "suite": "bookworm", "mirror": "http://deb.debian.org/debian",
                "bootstrapper": "mmdebstrap", "gcc": "gcc (Debian 12.2.0-14+deb12u1) 12.2.0",
                "built": "20261201-234423"}"#,
        )
        .unwrap();
        assert_eq!(
            old.toolchain_identity(),
            "rootfs-3861a64abc96 gcc (Debian 12.2.0-14+deb12u1) 12.2.0"
        );
        let new = Meta {
            toolchain_digest: Some("77".repeat(32)),
            ..old
        };
        assert_eq!(
            new.toolchain_identity(),
            "toolchain-777777777777 gcc (Debian 12.2.0-14+deb12u1) 12.2.0"
        );
        let text = serde_json::to_string(&new).unwrap();
        assert_eq!(serde_json::from_str::<Meta>(&text).unwrap(), new);
    }

    #[test]
    fn digest_changes_with_mode() {
        let r = recipe();
        let before = digest(r.path(), &source()).unwrap();
        chmod(&r.path().join("overlay/usr/local/sbin/xtask-init"), 0o644);
        assert_ne!(before, digest(r.path(), &source()).unwrap());
    }

    #[test]
    fn digest_changes_with_name() {
        let r = recipe();
        let before = digest(r.path(), &source()).unwrap();
        fs::rename(
            r.path().join("overlay/etc/hostname"),
            r.path().join("overlay/etc/hostnamf"),
        )
        .unwrap();
        assert_ne!(before, digest(r.path(), &source()).unwrap());
    }

    #[test]
    fn digest_changes_with_a_new_empty_file() {
        let r = recipe();
        let before = digest(r.path(), &source()).unwrap();
        fs::write(r.path().join("overlay/etc/motd"), "").unwrap();
        assert_ne!(before, digest(r.path(), &source()).unwrap());
    }

    #[test]
    fn digest_changes_with_suite_and_mirror() {
        let r = recipe();
        let base = digest(r.path(), &source()).unwrap();
        let mut s = source();
        s.suite = "trixie".into();
        assert_ne!(base, digest(r.path(), &s).unwrap());
        let mut s = source();
        s.mirror = "http://ftp.de.debian.org/debian".into();
        assert_ne!(base, digest(r.path(), &s).unwrap());
    }

    #[test]
    fn package_list_parsing() {
        let p =
            parse_packages("# toolchain\nbc\n  flex  # lexer\n\nbc\nlibssl-dev\ng++\n").unwrap();
        assert_eq!(p, ["bc", "flex", "libssl-dev", "g++"]);
        let e = parse_packages("bc\nBad_Name\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("Bad_Name"), "{e}");
        assert!(parse_packages("# nothing\n").is_err());
    }

    #[test]
    fn source_resolution() {
        let file = crate::settings::FileRootfs {
            suite: Some("trixie".into()),
            mirror: Some("http://mirror.example/debian/".into()),
        };
        let s = Source::resolve(None, None, &Default::default()).unwrap();
        assert_eq!(s, source());
        let s = Source::resolve(None, None, &file).unwrap();
        assert_eq!(s.suite, "trixie");
        assert_eq!(s.mirror, "http://mirror.example/debian");
        let s = Source::resolve(Some("bookworm"), Some("file:///srv/m"), &file).unwrap();
        assert_eq!(
            (s.suite.as_str(), s.mirror.as_str()),
            ("bookworm", "file:///srv/m")
        );
        assert!(Source::resolve(Some("Bookworm; rm"), None, &file).is_err());
        assert!(Source::resolve(None, Some("deb.debian.org"), &file).is_err());
    }

    #[test]
    fn the_workspace_recipe_parses() {
        let p = read_packages(&recipe_dir(), true).unwrap();
        for want in [
            "systemd-sysv",
            "qemu-guest-agent",
            "build-essential",
            "libelf-dev",
        ] {
            assert!(p.iter().any(|x| x == want), "{want} missing");
        }
        // The build container has every other architecture's cross toolchain.
        for a in crate::arch::ALL.iter().filter(|a| !a.is_host()) {
            for want in a.cross_packages {
                assert!(p.iter().any(|x| x == want), "{want} missing");
            }
        }
        // A guest root of another architecture has no toolchain.
        let guest = read_packages(&recipe_dir(), false).unwrap();
        assert!(guest.iter().any(|x| x == "qemu-guest-agent"));
        assert!(!guest
            .iter()
            .any(|x| x == "build-essential" || x == "dracut"));
    }

    #[test]
    fn each_architecture_has_its_own_digest() {
        let d = "ab".repeat(32);
        assert_eq!(digest_for_arch(&d, crate::arch::HOST), d);
        let arm = digest_for_arch(&d, &crate::arch::ARM64);
        assert_ne!(arm, d);
        assert_eq!(arm.len(), 64);
    }
}
