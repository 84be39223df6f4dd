//! Files replaced in one step: written to a temporary file beside the target, then renamed
//! over it, so that a reader (or a run killed half-way) sees the old content or the new.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Replaces `path` with `content` in one step (mode 0644), making its directory if need be.
pub fn write(path: &Path, content: impl AsRef<[u8]>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(content.as_ref())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_and_nothing_is_left_beside_it() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("sub/trimmed.config");
        write(&p, "CONFIG_A=y\n").unwrap();
        write(&p, b"CONFIG_B=y\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "CONFIG_B=y\n");
        assert_eq!(std::fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        // A directory in the way is an error naming the path, not a panic.
        let e = write(t.path(), "x").unwrap_err();
        assert!(
            format!("{e:#}").contains(&t.path().display().to_string()),
            "{e:#}"
        );
    }
}
