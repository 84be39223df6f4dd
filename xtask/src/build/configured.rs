//! What last configured a build dir (olddefconfig's input and result, and the commit whose
//! Kconfig files it read), so that the next build of the same input config on sources with
//! the same Kconfig files keeps that `.config` instead of running olddefconfig again: under
//! a second of parsing every Kconfig file, then make's syncconfig doing it once more, in an
//! incremental build of five.

use super::key::sha256_hex;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The record, in the build dir beside `.config`.
pub const RECORD: &str = "xtask-configured.json";

/// What olddefconfig's output depends on, but the sources: the input config, the toolchain,
/// the architecture, the configure step's own command (its argv and environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configured {
    /// sha256 of the inputs ([`inputs_digest`]).
    pub inputs: String,
    /// The commit whose Kconfig files configured the build dir.
    pub commit: String,
    /// sha256 of the `.config` olddefconfig wrote.
    pub config: String,
}

/// The configure step's environment that Kconfig never reads: the image's build timestamp
/// (a commit's date, so every bisect step's own).
const NOT_READ_BY_KCONFIG: &[&str] = &["KBUILD_BUILD_TIMESTAMP"];

/// The configure step's command as [`inputs_digest`] takes it: its key (argv and
/// environment, as the cache key has them) but what Kconfig never reads.
pub fn configure_command(key: &super::key::CommandKey) -> String {
    let env: Vec<&str> = key
        .env
        .iter()
        .filter(|kv| {
            !NOT_READ_BY_KCONFIG
                .iter()
                .any(|name| kv.strip_prefix(name).is_some_and(|r| r.starts_with('=')))
        })
        .map(String::as_str)
        .collect();
    format!("{}\0{}", key.argv.join(" "), env.join("\0"))
}

/// The digest of what, with the sources' Kconfig files, decides olddefconfig's result.
pub fn inputs_digest(input_config: &[u8], toolchain: &str, arch: &str, command: &str) -> String {
    sha256_hex([
        input_config,
        b"\0",
        toolchain.as_bytes(),
        b"\0",
        arch.as_bytes(),
        b"\0",
        command.as_bytes(),
    ])
}

/// The sources that make's config targets read: every Kconfig file, the scripts they run
/// (`scripts/Kconfig.include`'s compiler probes among them) and the Makefiles that set their
/// variables.
pub const KCONFIG_PATHSPECS: &[&str] = &[
    ":(glob)**/Kconfig*",
    "scripts",
    "Makefile",
    ":(glob)arch/*/Makefile",
];

/// Whether the build dir's `.config` may stand for olddefconfig's result now: the record
/// says the same inputs made it, the `.config` is still the one it wrote, and the Kconfig
/// files of the sources are those of the commit it read (`kconfig_unchanged`, asked of git
/// only when the rest holds).
pub fn reusable(
    record: Option<&Configured>,
    inputs: &str,
    config_now: Option<&str>,
    kconfig_unchanged: impl FnOnce(&str) -> bool,
) -> bool {
    match (record, config_now) {
        (Some(r), Some(now)) if r.inputs == inputs && r.config == now => {
            kconfig_unchanged(&r.commit)
        }
        _ => false,
    }
}

fn record_path(build_dir: &Path) -> PathBuf {
    build_dir.join(RECORD)
}

/// The record of `build_dir`, if it has a readable one.
pub fn read(build_dir: &Path) -> Option<Configured> {
    let text = std::fs::read_to_string(record_path(build_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Forgets the record: the `.config` is about to be replaced.
pub fn forget(build_dir: &Path) -> Result<()> {
    match std::fs::remove_file(record_path(build_dir)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Records what configured `build_dir` (after olddefconfig succeeded).
pub fn write(build_dir: &Path, r: &Configured) -> Result<()> {
    crate::atomic::write(&record_path(build_dir), serde_json::to_vec_pretty(r)?)
}

/// sha256 of a file, None when it cannot be read.
pub fn file_digest(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| sha256_hex([b.as_slice()]))
}

/// `git diff --quiet COMMIT -- KCONFIG_PATHSPECS` in `src` (its working tree against the
/// commit), and for uncommitted sources no untracked file there either: the Kconfig files
/// are the commit's. Any failure of git counts as changed.
pub fn kconfig_same_as(src: &Path, commit: &str, dirty: bool) -> bool {
    let diff = crate::git::git(src)
        .args(["diff", "--quiet", commit, "--"])
        .args(KCONFIG_PATHSPECS)
        .output();
    if !matches!(diff, Ok(ref o) if o.status.success()) {
        return false;
    }
    if !dirty {
        return true;
    }
    let untracked: std::io::Result<std::process::Output> = crate::git::git(src)
        .args(["ls-files", "--others", "--exclude-standard", "--"])
        .args(KCONFIG_PATHSPECS)
        .output();
    matches!(untracked, Ok(o) if o.status.success() && o.stdout.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Configured {
        Configured {
            inputs: "in".into(),
            commit: "c1".into(),
            config: "cfg".into(),
        }
    }

    #[test]
    fn the_config_is_kept_only_for_the_same_inputs_config_and_kconfig_files() {
        let r = record();
        let asked = std::cell::Cell::new(None);
        let same = |c: &str| {
            asked.set(Some(c.to_string()));
            true
        };
        assert!(reusable(Some(&r), "in", Some("cfg"), same));
        assert_eq!(asked.take().as_deref(), Some("c1"));
        // Kconfig files changed since.
        assert!(!reusable(Some(&r), "in", Some("cfg"), |_| false));
        // Another input config, toolchain or command; a .config changed by hand; no record.
        let never = |_: &str| panic!("git asked for nothing");
        assert!(!reusable(Some(&r), "other", Some("cfg"), never));
        assert!(!reusable(Some(&r), "in", Some("edited"), never));
        assert!(!reusable(Some(&r), "in", None, never));
        assert!(!reusable(None, "in", Some("cfg"), never));
    }

    #[test]
    fn the_configure_command_leaves_the_build_timestamp_out() {
        let key = |ts: &str| super::super::key::CommandKey {
            step: "olddefconfig".into(),
            when: "always".into(),
            argv: vec!["make".into(), "olddefconfig".into()],
            env: vec![
                format!("KBUILD_BUILD_TIMESTAMP={ts}"),
                "KBUILD_BUILD_USER=xtask".into(),
            ],
        };
        assert_eq!(
            configure_command(&key("2023-01-01")),
            configure_command(&key("2024-05-05"))
        );
        assert!(configure_command(&key("x")).contains("KBUILD_BUILD_USER=xtask"));
        assert!(!configure_command(&key("x")).contains("TIMESTAMP"));
    }

    #[test]
    fn the_inputs_digest_takes_each_input() {
        let d = inputs_digest(b"CONFIG_A=y\n", "gcc 12", "x86_64", "make olddefconfig");
        assert_ne!(
            d,
            inputs_digest(b"CONFIG_A=n\n", "gcc 12", "x86_64", "make olddefconfig")
        );
        assert_ne!(
            d,
            inputs_digest(b"CONFIG_A=y\n", "gcc 13", "x86_64", "make olddefconfig")
        );
        assert_ne!(
            d,
            inputs_digest(b"CONFIG_A=y\n", "gcc 12", "arm64", "make olddefconfig")
        );
        assert_ne!(
            d,
            inputs_digest(b"CONFIG_A=y\n", "gcc 12", "x86_64", "make -j3 olddefconfig")
        );
    }

    /// On a real repository: a commit that changes a Kconfig file, a script or the Makefile is
    /// seen; one that changes a C file is not; an untracked Kconfig file counts when dirty.
    #[test]
    fn git_sees_the_kconfig_files_change_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let repo = d.path();
        let git = |args: &[&str]| {
            let out = crate::git::owned(repo).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        git(&["init", "-q"]);
        let write = |p: &str, t: &str| {
            let f = repo.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, t).unwrap();
        };
        write("Kconfig", "source \"init/Kconfig\"\n");
        write("init/Kconfig", "config A\n\tbool\n");
        write("init/main.c", "int x;\n");
        write("scripts/cc-version.sh", "echo 12\n");
        write("Makefile", "VERSION = 6\n");
        git(&["add", "-A"]);
        git(&["commit", "-qm", "base"]);
        let base = git(&["rev-parse", "HEAD"]);
        assert!(kconfig_same_as(repo, &base, false));
        write("init/main.c", "int y;\n");
        assert!(kconfig_same_as(repo, &base, true));
        for (path, text) in [
            ("init/Kconfig", "config A\n\tbool \"a\"\n"),
            ("scripts/cc-version.sh", "echo 13\n"),
            ("Makefile", "VERSION = 7\n"),
        ] {
            let old = std::fs::read_to_string(repo.join(path)).unwrap();
            write(path, text);
            assert!(!kconfig_same_as(repo, &base, true), "{path}");
            write(path, &old);
        }
        write("drivers/Kconfig", "config B\n\tbool\n");
        assert!(
            !kconfig_same_as(repo, &base, true),
            "an untracked Kconfig file"
        );
        assert!(!kconfig_same_as(repo, "no-such-commit", false));
    }
}
