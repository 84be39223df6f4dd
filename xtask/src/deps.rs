//! `cargo xtask deps [--install] [--peers]`: the Debian packages the toolkit needs, virtiofsd,
//! and (`--peers`) the tools `bench boot --peers` compares with, installed in the state dir.

use crate::cmd::CommandExt;
use crate::state::StateDir;
use crate::tools;
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// Debian packages, each with why it is needed.
pub const PACKAGES: &[(&str, &str)] = &[
    ("make", "kernel builds with --host"),
    ("git", "kernel trees, worktrees, bisect"),
    ("systemd-container", "systemd-nspawn, the build container"),
    ("mmdebstrap", "building the rootfs"),
    ("debootstrap", "building the rootfs (fallback)"),
    (crate::arch::HOST.qemu_package, "the VM"),
    ("qemu-system-arm", "arm64 guests (qemu-system-aarch64)"),
    (
        "qemu-user-static",
        "building the arm64 guest root (its package scripts)",
    ),
    (
        "binfmt-support",
        "registering qemu-user-static (update-binfmts)",
    ),
    ("arch-test", "mmdebstrap's check that arm64 binaries run"),
    ("gcc-aarch64-linux-gnu", "arm64 kernel builds with --host"),
    (
        "binutils-aarch64-linux-gnu",
        "arm64 kernel builds with --host",
    ),
    (
        "libseccomp-dev",
        "building virtiofsd (not packaged in Debian 12)",
    ),
    ("libcap-ng-dev", "building virtiofsd"),
    ("pkg-config", "building virtiofsd and the libvirt feature"),
    ("libvirt-daemon-system", "the libvirt backend"),
    ("libvirt-dev", "building with --features libvirt"),
    (
        "linux-source-6.1",
        "a real kernel tree for quickstart and the tests",
    ),
    ("xz-utils", "unpacking linux-source"),
    ("gcc", "kernel builds with --host"),
    ("bc", "kernel builds with --host"),
    ("bison", "kernel builds with --host"),
    ("flex", "kernel builds with --host"),
    ("libelf-dev", "kernel builds with --host"),
    ("libssl-dev", "kernel builds with --host"),
];

/// Packages not yet installed, asked of dpkg.
pub fn missing_packages() -> Result<Vec<&'static str>> {
    missing_of(PACKAGES.iter().map(|(n, _)| *n).collect())
}

/// Those of `names` that dpkg does not have installed.
fn missing_of(names: Vec<&'static str>) -> Result<Vec<&'static str>> {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
        .args(&names)
        .output_unchecked()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let installed: Vec<&str> = text
        .lines()
        .filter(|l| l.ends_with("ii ") || l.ends_with("ii"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    Ok(names
        .into_iter()
        .filter(|n| !installed.contains(n))
        .collect())
}

fn privileged(program: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

/// `apt-get update`, then `apt-get install` of `packages` (with sudo when not root).
fn apt_install(packages: &[&str]) -> Result<()> {
    privileged("apt-get")
        .arg("update")
        .run_logged()
        .context("apt-get update failed: check the machine's apt sources and network")?;
    privileged("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run_logged()
        .with_context(|| format!("apt-get install {} failed", packages.join(" ")))?;
    Ok(())
}

/// Installs what is missing; does nothing (and asks no network) when all is there.
pub fn install() -> Result<()> {
    let missing = missing_packages()?;
    if !missing.is_empty() {
        println!("installing: {}", missing.join(" "));
        apt_install(&missing)?;
    }
    let virtiofsd = tools::search(&tools::VIRTIOFSD);
    if virtiofsd.usable.is_none() {
        for r in &virtiofsd.rejected {
            println!("not using {}: {}", r.path.display(), r.reason);
        }
        println!("installing virtiofsd from crates.io (Debian 12 does not package it)");
        Command::new("cargo")
            .args(["install", "virtiofsd", "--locked"])
            .run_logged()
            .context("cargo install virtiofsd failed: it needs libseccomp-dev and libcap-ng-dev")?;
    }
    Ok(())
}

/// Debian packages the peers need on the host, whose root their guests run on: virtme-ng's
/// guest runs the host's udevd, vmtest's the host's qemu-ga.
const PEER_PACKAGES: &[&str] = &["udev", "qemu-guest-agent"];

/// The peers `bench boot --peers` compares with, installed by `deps --peers` under
/// `<state>/peers/`: virtme-ng from PyPI in a venv of its own, vmtest from crates.io.
pub struct Peers {
    pub dir: PathBuf,
}

impl Peers {
    pub fn of(state: &StateDir) -> Peers {
        Peers {
            dir: state.root.join("peers"),
        }
    }
    /// virtme-ng's venv.
    pub fn venv(&self) -> PathBuf {
        self.dir.join("virtme-ng")
    }
    /// `vng`, where `deps --peers` puts it.
    pub fn vng(&self) -> PathBuf {
        self.venv().join("bin/vng")
    }
    /// `cargo install --root` of vmtest.
    pub fn vmtest_root(&self) -> PathBuf {
        self.dir.join("vmtest")
    }
    pub fn vmtest(&self) -> PathBuf {
        self.vmtest_root().join("bin/vmtest")
    }

    /// Installs what is missing: udev, `python3 -m venv` and its pip for virtme-ng, `cargo
    /// install` for vmtest. Does nothing for a peer already there.
    pub fn install(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        // Both peers' guests run on the host's root: virtme-ng's names its virtio ports with
        // the host's udevd (without one vng exits 255), vmtest's starts the host's qemu-ga.
        let missing = missing_of(PEER_PACKAGES.to_vec())?;
        if !missing.is_empty() {
            println!(
                "installing {} (the peers' guests run the host's udevd and qemu-ga)",
                missing.join(" ")
            );
            apt_install(&missing)?;
        }
        if !self.vng().is_file() {
            println!(
                "installing virtme-ng from PyPI in {}",
                self.venv().display()
            );
            Command::new("python3")
                .args(["-m", "venv"])
                .arg(self.venv())
                .run_logged()
                .context("python3 -m venv failed: apt-get install python3-venv")?;
            Command::new(self.venv().join("bin/pip"))
                .args(["install", "--disable-pip-version-check", "virtme-ng"])
                .run_logged()
                .context("pip install virtme-ng failed: is PyPI reachable?")?;
        }
        if !self.vmtest().is_file() {
            println!(
                "installing vmtest from crates.io in {}",
                self.vmtest_root().display()
            );
            Command::new("cargo")
                .args(["install", "vmtest", "--locked", "--root"])
                .arg(self.vmtest_root())
                .run_logged()
                .context("cargo install vmtest failed: is crates.io reachable?")?;
        }
        for p in [self.vng(), self.vmtest()] {
            if !p.is_file() {
                bail!("{} is still missing after its install", p.display());
            }
        }
        Ok(())
    }
}

/// `deps [--install] [--peers]`: what is missing (exit 1 if anything), or everything
/// installed; `--peers` (alone) installs the peers only.
pub fn run(state: &StateDir, install_all: bool, with_peers: bool) -> Result<u8> {
    if with_peers {
        let peers = Peers::of(state);
        peers.install()?;
        println!(
            "peers installed: {} and {}",
            peers.vng().display(),
            peers.vmtest().display()
        );
        if !install_all {
            return Ok(crate::exit::OK);
        }
    }
    if install_all {
        install()?;
        println!(
            "all packages installed; virtiofsd at {}",
            tools::find(&tools::VIRTIOFSD)?.display()
        );
        return Ok(0);
    }
    let missing = missing_packages()?;
    for (name, why) in PACKAGES {
        let mark = if missing.contains(name) {
            "missing"
        } else {
            "ok"
        };
        println!("{mark:<8} {name:<24} {why}");
    }
    let vfs = tools::search(&tools::VIRTIOFSD);
    for r in &vfs.rejected {
        println!(
            "{:<8} {:<24} {}: {}",
            "refused",
            "virtiofsd",
            r.path.display(),
            r.reason
        );
    }
    let vfs = vfs.usable;
    println!(
        "{:<8} {:<24} {}",
        if vfs.is_some() { "ok" } else { "missing" },
        "virtiofsd",
        tools::VIRTIOFSD_INSTALL
    );
    if missing.is_empty() && vfs.is_some() {
        Ok(crate::exit::OK)
    } else {
        println!("run `cargo xtask deps --install` to install what is missing");
        Ok(crate::exit::FAILED)
    }
}
