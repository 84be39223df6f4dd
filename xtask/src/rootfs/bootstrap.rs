//! The Debian bootstrap: mmdebstrap's or debootstrap's argv (pure), and reading its failure
//! output into one line that says what to fix (pure, fed with recorded logs in tests).

use super::recipe::Source;
use regex::Regex;
use std::ffi::OsString;
use std::path::Path;

/// Which bootstrapper builds the tree; they take different arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrapper {
    Mmdebstrap,
    Debootstrap,
}

impl Bootstrapper {
    pub fn from_tool(tool: &crate::tools::Tool) -> Bootstrapper {
        if tool.name == crate::tools::DEBOOTSTRAP.name {
            Bootstrapper::Debootstrap
        } else {
            Bootstrapper::Mmdebstrap
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bootstrapper::Mmdebstrap => "mmdebstrap",
            Bootstrapper::Debootstrap => "debootstrap",
        }
    }

    /// The arguments that bootstrap `source` into `target` with `packages` installed.
    /// `foreign`: the Debian architecture of a root for another architecture than the host's
    /// (its package scripts run under qemu-user-static through binfmt_misc).
    pub fn argv(
        self,
        packages: &[String],
        source: &Source,
        foreign: Option<&str>,
        target: &Path,
    ) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        match self {
            Bootstrapper::Mmdebstrap => {
                // Essential packages and apt, then only what the recipe asks for.
                a.push("--variant=apt".into());
                // We run as root (nspawn needs it anyway); say so instead of letting it guess.
                a.push("--mode=root".into());
                a.push("--format=directory".into());
            }
            Bootstrapper::Debootstrap => {
                // The smallest variant that still has apt.
                a.push("--variant=minbase".into());
            }
        }
        if let Some(arch) = foreign {
            a.push(match self {
                Bootstrapper::Mmdebstrap => format!("--architectures={arch}").into(),
                Bootstrapper::Debootstrap => format!("--arch={arch}").into(),
            });
        }
        a.push(format!("--include={}", packages.join(",")).into());
        a.push(source.suite.clone().into());
        a.push(target.into());
        a.push(source.mirror.clone().into());
        a
    }
}

/// One line saying what went wrong and how to fix it, when the output shows a known cause.
pub fn classify(log: &str, source: &Source) -> Option<String> {
    let missing = missing_packages(log);
    if !missing.is_empty() {
        return Some(format!(
            "Debian {} has no package {}: fix rootfs/packages.txt",
            source.suite,
            missing.join(", ")
        ));
    }
    const NETWORK: &[&str] = &[
        "Could not resolve",
        "Temporary failure resolving",
        "Could not connect to",
        "Connection timed out",
        "Connection refused",
        "Network is unreachable",
        "No route to host",
        "Unable to connect to",
    ];
    if NETWORK.iter().any(|n| log.contains(n)) {
        return Some(format!(
            "cannot reach the mirror {}: check the network, or pass --mirror URL (or set [rootfs] mirror in xtask.toml)",
            source.mirror
        ));
    }
    const NO_SUITE: &[&str] = &[
        "does not have a Release file",
        "Failed getting release file",
        "Release file for",
        // debootstrap knows suites by its scripts.
        "E: No such script",
    ];
    if NO_SUITE.iter().any(|n| log.contains(n)) {
        return Some(format!(
            "there is no suite `{}` on {}: pass --suite bookworm (or another Debian suite), or check --mirror",
            source.suite, source.mirror
        ));
    }
    if log.contains("No space left on device") {
        return Some(
            "the disk of the state dir is full: free some space or pass --state-dir PATH on a larger disk"
                .into(),
        );
    }
    None
}

/// Package names apt (mmdebstrap) or debootstrap could not find.
fn missing_packages(log: &str) -> Vec<String> {
    let apt = Regex::new(r"E: Unable to locate package (\S+)").expect("valid regex");
    let deb = Regex::new(r"E: Couldn't find these debs: (.+)").expect("valid regex");
    let mut out: Vec<String> = Vec::new();
    for c in apt.captures_iter(log) {
        out.push(c[1].to_string());
    }
    for c in deb.captures_iter(log) {
        out.extend(c[1].split_whitespace().map(str::to_string));
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(suite: &str) -> Source {
        Source {
            suite: suite.into(),
            mirror: "http://deb.debian.org/debian".into(),
        }
    }

    fn recorded(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/rootfs/test_data/bootstrap")
            .join(name);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn mmdebstrap_argv() {
        let a = Bootstrapper::Mmdebstrap.argv(
            &["bc".into(), "kmod".into()],
            &source("bookworm"),
            None,
            Path::new("/s/rootfs.tmp"),
        );
        let want: Vec<OsString> = [
            "--variant=apt",
            "--mode=root",
            "--format=directory",
            "--include=bc,kmod",
            "bookworm",
            "/s/rootfs.tmp",
            "http://deb.debian.org/debian",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(a, want);
    }

    #[test]
    fn a_foreign_root_names_its_architecture() {
        let a = Bootstrapper::Mmdebstrap.argv(
            &["kmod".into()],
            &source("bookworm"),
            Some("arm64"),
            Path::new("/t"),
        );
        assert!(a.contains(&OsString::from("--architectures=arm64")));
        let a = Bootstrapper::Debootstrap.argv(
            &["kmod".into()],
            &source("bookworm"),
            Some("arm64"),
            Path::new("/t"),
        );
        assert!(a.contains(&OsString::from("--arch=arm64")));
    }

    #[test]
    fn debootstrap_argv() {
        let a = Bootstrapper::Debootstrap.argv(
            &["bc".into()],
            &source("trixie"),
            None,
            Path::new("/t"),
        );
        let want: Vec<OsString> = [
            "--variant=minbase",
            "--include=bc",
            "trixie",
            "/t",
            "http://deb.debian.org/debian",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        assert_eq!(a, want);
    }

    #[test]
    fn unknown_suite() {
        let m = classify(&recorded("unknown_suite.log"), &source("bookworm-nosuch")).unwrap();
        assert!(m.starts_with("there is no suite `bookworm-nosuch`"), "{m}");
        let m = classify(
            &recorded("debootstrap_unknown_suite.log"),
            &source("nosuchsuite"),
        )
        .unwrap();
        assert!(m.starts_with("there is no suite `nosuchsuite`"), "{m}");
    }

    #[test]
    fn unknown_package() {
        let m = classify(&recorded("unknown_package.log"), &source("bookworm")).unwrap();
        assert_eq!(
            m,
            "Debian bookworm has no package nosuchpkg-xyz: fix rootfs/packages.txt"
        );
    }

    #[test]
    fn unreachable_mirror() {
        let m = classify(&recorded("unreachable_mirror.log"), &source("bookworm")).unwrap();
        assert!(m.starts_with("cannot reach the mirror"), "{m}");
    }

    #[test]
    fn unknown_failure_is_not_guessed() {
        assert_eq!(
            classify("E: something else broke\n", &source("bookworm")),
            None
        );
    }
}
