//! The cache key: what a kernel image depends on, hashed. Pure, so what changes a key is
//! tested. The commands' part is the build's own steps ([`super::plan::Plan::key`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bumped when the key's meaning changes, so old entries are never mistaken for new ones.
const KEY_VERSION: &str = "xtask-build-v2";

/// Everything that decides the image a build makes; equal inputs share one cache entry.
/// What does not change the image (`-j`, ccache) is left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// The git tree id of the commit: the sources, whatever the commit's message or parents.
    pub tree_id: String,
    /// A digest of uncommitted changes (`git diff HEAD` plus untracked files); None when clean.
    pub dirty: Option<String>,
    /// sha256 of the input config (before olddefconfig).
    pub config: String,
    /// The compiler and binutils that build it.
    pub toolchain: String,
    /// The architecture built for (`x86_64`).
    #[serde(default)]
    pub arch: String,
    /// Each step the build may run, as it runs, but what cannot change the image.
    #[serde(default)]
    pub commands: Vec<CommandKey>,
}

/// One step of a build in the key: its argv and environment as the runner gets them, less
/// the exempt words and variables (`plan::exempt_arg`, `plan::EXEMPT_ENV`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandKey {
    pub step: String,
    /// When it runs (`modules`: when the final config has modules).
    pub when: String,
    pub argv: Vec<String>,
    /// `NAME=value`, in the order given.
    pub env: Vec<String>,
}

impl KeyInputs {
    /// The key: hex sha256 of the inputs' JSON (which is unambiguous: every field is quoted).
    pub fn key(&self) -> String {
        let json = serde_json::to_string(self).expect("plain data serialises");
        sha256_hex([KEY_VERSION.as_bytes(), b"\n", json.as_bytes()])
    }
}

/// Hex sha256 of the concatenated parts.
pub fn sha256_hex<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex(&h.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The digest of a dirty working state: the diff against HEAD, then each untracked file's
/// path and contents (sorted by path, each length-prefixed so boundaries cannot shift).
pub fn dirty_digest(diff: &[u8], untracked: &[(String, Vec<u8>)]) -> String {
    let mut files: Vec<&(String, Vec<u8>)> = untracked.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    h.update((diff.len() as u64).to_le_bytes());
    h.update(diff);
    for (path, data) in files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    hex(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(argv: &[&str]) -> CommandKey {
        CommandKey {
            step: "make".into(),
            when: "always".into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec!["KBUILD_BUILD_USER=xtask".into()],
        }
    }

    fn base() -> KeyInputs {
        KeyInputs {
            tree_id: "4b825dc642cb6eb9a060e54bf8d69288fbee4904".into(),
            dirty: None,
            config: sha256_hex([b"CONFIG_64BIT=y\n".as_slice()]),
            toolchain: "gcc (Debian 12.2.0-14) 12.2.0; GNU ld 2.40".into(),
            arch: "x86_64".into(),
            commands: vec![command(&["make", "bzImage"])],
        }
    }

    #[test]
    fn same_inputs_same_key() {
        assert_eq!(base().key(), base().key());
        assert_eq!(base().key().len(), 64);
    }

    #[test]
    fn every_input_changes_the_key() {
        let k = base().key();
        let changed = [
            KeyInputs {
                tree_id: "0000000000000000000000000000000000000001".into(),
                ..base()
            },
            KeyInputs {
                dirty: Some(dirty_digest(b"+x", &[])),
                ..base()
            },
            KeyInputs {
                config: sha256_hex([b"CONFIG_64BIT=y\nCONFIG_SMP=y\n".as_slice()]),
                ..base()
            },
            KeyInputs {
                toolchain: "gcc 13".into(),
                ..base()
            },
            KeyInputs {
                arch: "arm64".into(),
                ..base()
            },
            KeyInputs {
                commands: vec![command(&["make", "Image"])],
                ..base()
            },
        ];
        for c in changed {
            assert_ne!(c.key(), k, "{c:?}");
        }
    }

    #[test]
    fn field_boundaries_do_not_collide() {
        let a = KeyInputs {
            commands: vec![command(&["ab", "c"])],
            ..base()
        };
        let b = KeyInputs {
            commands: vec![command(&["a", "bc"])],
            ..base()
        };
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn dirty_digest_sees_diff_and_untracked_files_but_not_their_order() {
        let d = dirty_digest(b"diff", &[("a".into(), b"1".to_vec())]);
        assert_ne!(d, dirty_digest(b"diff", &[]));
        assert_ne!(d, dirty_digest(b"diff2", &[("a".into(), b"1".to_vec())]));
        assert_ne!(d, dirty_digest(b"diff", &[("a".into(), b"2".to_vec())]));
        assert_ne!(d, dirty_digest(b"diff", &[("b".into(), b"1".to_vec())]));
        // Moving bytes between the diff and a file is a different state.
        assert_ne!(
            dirty_digest(b"ab", &[("f".into(), b"c".to_vec())]),
            dirty_digest(b"a", &[("f".into(), b"bc".to_vec())])
        );
        let two = [("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())];
        let rev = [two[1].clone(), two[0].clone()];
        assert_eq!(dirty_digest(b"", &two), dirty_digest(b"", &rev));
    }
}
