//! The kernel's signature: a digest of what vmlinux loads (its allocated sections with
//! contents, notes aside) with the build's version text masked, so that two commits that
//! compile to the same kernel have the same signature although each build stamps its own
//! date in the banner. Pure over the ELF's bytes; a bisect compares a culprit's with its
//! parent's.

use sha2::{Digest, Sha256};
use std::path::Path;

/// Section flag: the section occupies memory when the image runs.
const SHF_ALLOC: u64 = 0x2;
/// Section types left out: NOBITS has no bytes in the file (`.bss`); NOTE holds the build
/// id, a digest of the whole link that differs whenever the banner does.
const SHT_NOBITS: u32 = 8;
const SHT_NOTE: u32 = 7;
/// How the kernel's banner starts (`init/version-timestamp.c`'s `linux_banner`).
const BANNER: &[u8] = b"Linux version ";

/// The signature of the vmlinux at `path`, or None when it cannot be read or made (no such
/// file, not a 64-bit little-endian ELF, no banner in it).
pub fn of_file(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    signature(&bytes).ok()
}

/// The signature of a kernel ELF: sha256 over each allocated section that has bytes in the
/// file (its name, its size, its bytes), with every occurrence of the build's version text
/// (`#1 SMP 2023-11-14T22:16:20Z`: the build number and timestamp, the end of the banner)
/// zeroed. The release (`6.1.0`), the compiler and the config stay in: they are the kernel.
pub fn signature(elf: &[u8]) -> Result<String, String> {
    let sections = allocated_sections(elf)?;
    let version = sections
        .iter()
        .find_map(|(_, data)| build_version(data))
        .ok_or("no version banner (\"Linux version …\") in its allocated sections")?
        .to_vec();
    let mut h = Sha256::new();
    for (name, data) in &sections {
        let masked = mask(data, &version);
        h.update(name);
        h.update([0]);
        h.update((masked.len() as u64).to_le_bytes());
        h.update(&masked);
    }
    Ok(super::key::hex(&h.finalize()))
}

/// The build's version text in a section that holds the banner: what follows the banner's
/// last `) ` (after the compiler's parenthesis), up to its end of line (`#1 SMP …`).
fn build_version(data: &[u8]) -> Option<&[u8]> {
    let start = find(data, BANNER, 0)?;
    let rest = &data[start..];
    let end = rest.iter().position(|&b| b == b'\n' || b == 0)?;
    let banner = &rest[..end];
    let at = banner.windows(3).rposition(|w| w == b") #")? + 2;
    Some(&banner[at..]).filter(|v| v.len() > 1)
}

/// `data` with every occurrence of `what` zeroed.
fn mask(data: &[u8], what: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut from = 0;
    while let Some(at) = find(&out, what, from) {
        out[at..at + what.len()].fill(0);
        from = at + what.len();
    }
    out
}

fn find(data: &[u8], what: &[u8], from: usize) -> Option<usize> {
    if what.is_empty() || from >= data.len() {
        return None;
    }
    // By the first byte, then the rest: several times faster than comparing every window in
    // a debug build, and vmlinux is tens of MB.
    let mut at = from;
    while let Some(p) = data.get(at..)?.iter().position(|&b| b == what[0]) {
        at += p;
        if data[at..].starts_with(what) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// A section's name and bytes.
type Named<'a> = (&'a [u8], &'a [u8]);

/// The (name, bytes) of every allocated section with contents, in header order.
fn allocated_sections(elf: &[u8]) -> Result<Vec<Named<'_>>, String> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    // EI_CLASS 2: 64-bit; EI_DATA 1: little-endian (x86_64 and arm64 kernels both are).
    if elf.get(4..6) != Some(&[2, 1]) {
        return Err("not a 64-bit little-endian ELF".into());
    }
    let shoff = read_u64(elf, 0x28)? as usize;
    let shentsize = read_u16(elf, 0x3a)? as usize;
    let shnum = read_u16(elf, 0x3c)? as usize;
    let shstrndx = read_u16(elf, 0x3e)? as usize;
    if shentsize < 0x40 {
        return Err("section headers too small".into());
    }
    let header = |i: usize| -> Result<Section, String> {
        let at = i
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or("section header offset overflows")?;
        Ok(Section {
            name: read_u32(elf, at)? as usize,
            kind: read_u32(elf, at + 4)?,
            flags: read_u64(elf, at + 8)?,
            offset: read_u64(elf, at + 0x18)? as usize,
            size: read_u64(elf, at + 0x20)? as usize,
        })
    };
    let names = header(shstrndx)?;
    let names = bytes(elf, names.offset, names.size)?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let s = header(i)?;
        if s.flags & SHF_ALLOC == 0 || s.kind == SHT_NOBITS || s.kind == SHT_NOTE {
            continue;
        }
        let name = names.get(s.name..).ok_or("a section name out of range")?;
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        out.push((name, bytes(elf, s.offset, s.size)?));
    }
    Ok(out)
}

struct Section {
    name: usize,
    kind: u32,
    flags: u64,
    offset: usize,
    size: usize,
}

fn bytes(elf: &[u8], offset: usize, size: usize) -> Result<&[u8], String> {
    offset
        .checked_add(size)
        .and_then(|end| elf.get(offset..end))
        .ok_or_else(|| "a section beyond the end of the file (truncated?)".to_string())
}

fn read_u16(elf: &[u8], at: usize) -> Result<u16, String> {
    Ok(u16::from_le_bytes(
        bytes(elf, at, 2)?.try_into().unwrap_or_default(),
    ))
}

fn read_u32(elf: &[u8], at: usize) -> Result<u32, String> {
    Ok(u32::from_le_bytes(
        bytes(elf, at, 4)?.try_into().unwrap_or_default(),
    ))
}

fn read_u64(elf: &[u8], at: usize) -> Result<u64, String> {
    Ok(u64::from_le_bytes(
        bytes(elf, at, 8)?.try_into().unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `init/version-timestamp.o` of real builds (the object that holds `linux_banner` and
    /// `init_uts_ns`): the same sources built with two timestamps, and an arm64 build.
    fn object(name: &str) -> Vec<u8> {
        let p = format!("{}/test_data/signature/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn two_builds_of_the_same_sources_have_one_signature_whatever_their_date() {
        let (a, b) = (object("x86_64-2026-12-01.o"), object("x86_64-2024-01-01.o"));
        assert_ne!(a, b, "the recordings differ (their banners' dates)");
        assert_eq!(signature(&a), signature(&b));
        assert!(signature(&a).is_ok());
    }

    #[test]
    fn the_version_text_is_the_banners_end() {
        let a = object("x86_64-2024-01-01.o");
        let version = allocated_sections(&a)
            .unwrap()
            .iter()
            .find_map(|(_, d)| build_version(d).map(<[u8]>::to_vec))
            .unwrap();
        assert_eq!(version, b"#1 SMP 2024-01-01T00:00:00Z");
    }

    #[test]
    fn a_change_outside_the_version_text_changes_it() {
        let a = object("x86_64-2026-12-01.o");
        let base = signature(&a).unwrap();
        // The release in `init_uts_ns` (6.1.192 → 6.1.193): another kernel.
        let at = find(&a, b"6.1.192", 0).unwrap();
        let mut b = a.clone();
        b[at + 6] = b'3';
        assert_ne!(signature(&b).unwrap(), base);
        // Another compiler and architecture.
        assert_ne!(signature(&object("arm64-2026-12-01.o")).unwrap(), base);
    }

    #[test]
    fn what_is_no_kernel_is_an_error_not_a_panic() {
        let a = object("x86_64-2026-12-01.o");
        assert_eq!(
            signature(b"MZ not an elf"),
            Err("not an ELF file".to_string())
        );
        for cut in [5, 0x30, 0x40, 0x250, 0x430] {
            assert!(signature(&a[..cut]).is_err(), "cut at {cut}");
        }
        // Every banner gone: nothing to mask, so no signature that could mislead.
        let mut b = a.clone();
        while let Some(at) = find(&b, BANNER, 0) {
            b[at] = b'l';
        }
        assert!(signature(&b).unwrap_err().contains("no version banner"));
        assert_eq!(of_file(Path::new("/nonexistent/vmlinux")), None);
    }
}
