//! A real kernel git tree made from Debian's linux-source-6.1, for quickstart, the tests and
//! the benchmarks: unpacked once, committed once (tagged `base`), then reused.

use crate::cmd::CommandExt;
use crate::git::owned;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's linux-source package puts the tarball.
pub const LINUX_SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The tree at `dest`, made from linux-source-6.1 when it is not there yet. Made in a
/// temporary dir beside `dest` and renamed into place, so an interrupted run leaves nothing
/// that looks ready.
pub fn ensure_tree(dest: &Path) -> Result<PathBuf> {
    if dest.join(".git").is_dir() && dest.join("Kconfig").is_file() {
        return Ok(dest.to_path_buf());
    }
    if !Path::new(LINUX_SOURCE_TARBALL).is_file() {
        bail!("{LINUX_SOURCE_TARBALL} not found: apt-get install linux-source-6.1 (or pass --tree PATH)");
    }
    let parent = dest.parent().context("tree path has no parent")?;
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".linux-unpack")
        .tempdir_in(parent)?;
    eprintln!(
        "unpacking {LINUX_SOURCE_TARBALL} into a git tree at {} (about a minute)",
        dest.display()
    );
    Command::new("tar")
        .arg("-C")
        .arg(tmp.path())
        .args(["--strip-components=1", "-xf", LINUX_SOURCE_TARBALL])
        .output_logged()
        .context("unpacking linux-source")?;
    strip_debian_ignore(&tmp.path().join(".gitignore"))?;
    owned(tmp.path())
        .args(["init", "-q", "-b", "master"])
        .output_logged()?;
    // The tree is big: keep git from spending time on things we do not need.
    owned(tmp.path())
        .args(["config", "gc.auto", "0"])
        .output_logged()?;
    owned(tmp.path()).args(["add", "-A"]).output_logged()?;
    owned(tmp.path())
        .args(["commit", "-q", "-m", "linux-source-6.1 (Debian)"])
        .output_logged()?;
    owned(tmp.path()).args(["tag", "base"]).output_logged()?;
    let files = owned(tmp.path())
        .args(["ls-files"])
        .read_logged()?
        .lines()
        .count();
    if files < 10_000 {
        bail!(
            "only {files} files were committed from {LINUX_SOURCE_TARBALL}: check its .gitignore"
        );
    }
    let tmp = tmp.keep();
    std::fs::rename(&tmp, dest)
        .with_context(|| format!("moving the tree into {}", dest.display()))?;
    Ok(dest.to_path_buf())
}

/// Debian's linux-source adds a rule to the top .gitignore that ignores everything at the top
/// level (its packaging is kept elsewhere); without it the tree behaves as upstream's does.
fn strip_debian_ignore(gitignore: &Path) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(gitignore) else {
        return Ok(());
    };
    std::fs::write(gitignore, without_debian_block(&text))?;
    Ok(())
}

/// The .gitignore text without Debian's "ignore everything at the top level" block.
pub fn without_debian_block(text: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("# Debian packaging") {
            skipping = true;
            // Drop the lone "#" that opens the block too.
            if out.last() == Some(&"#") {
                out.pop();
            }
            continue;
        }
        if skipping && (line.starts_with('#') || line == "/*" || line.starts_with("!/")) {
            continue;
        }
        skipping = false;
        out.push(line);
    }
    out.join("\n") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_block_is_dropped() {
        let text = "*.o\n\n#\n# Debian packaging: ignore everything at the top level, since it isn't\n# included in our repository\n#\n/*\n!/debian/\n";
        let out = without_debian_block(text);
        assert_eq!(out, "*.o\n\n");
        assert_eq!(without_debian_block("*.o\n/x\n"), "*.o\n/x\n");
    }
}
