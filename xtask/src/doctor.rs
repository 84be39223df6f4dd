//! `cargo xtask doctor`: every external tool (found or missing, version, package) and KVM.

use crate::cmd::CommandExt;
use crate::ctx::Ctx;
use crate::tools::{self, Tool};
use anyhow::{bail, Result};
use std::process::Command;

/// First line of a tool's version output.
fn version(tool: &Tool, path: &std::path::Path) -> String {
    let out = Command::new(path)
        .args(tool.version_args)
        .output_unchecked();
    match out {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        }
        Err(_) => "?".into(),
    }
}

/// What `--arch NAME` for another architecture than the host's needs: the cross compiler in
/// the build container, qemu-user-static and binfmt_misc for its guest root, the root itself.
fn foreign_arch(ctx: &Ctx, arch: &crate::arch::Arch) {
    let row = |what: String, ok: bool, detail: String| {
        let status = if ok { "found" } else { "missing" };
        println!("{what:<20} {status:<8} {detail}");
    };
    let gcc = format!("usr/bin/{}gcc", arch.cross_compile);
    let rootfs = ctx.state.rootfs();
    row(
        format!("{}gcc", arch.cross_compile),
        rootfs.join(&gcc).exists(),
        if rootfs.join(&gcc).exists() {
            format!("{} (in the build container)", rootfs.join(&gcc).display())
        } else {
            "cargo xtask setup-rootfs (rootfs/build-packages.txt has it)".into()
        },
    );
    let user = crate::rootfs::binfmt::qemu_user_installed(arch);
    row(
        format!("qemu-{}-static", arch.uname),
        user.is_some(),
        match user {
            Some(p) => p.display().to_string(),
            None => "apt-get install qemu-user-static".into(),
        },
    );
    let binfmt = {
        use crate::rootfs::binfmt;
        binfmt::status(arch, &binfmt::Facts::read(arch, &binfmt::dir_from_env()))
    };
    row(
        format!("binfmt {}", arch.name),
        binfmt.is_ok(),
        match binfmt {
            Ok(()) => format!("{} binaries run through qemu-user-static", arch.name),
            Err(why) => format!(
                "{why}: setup-rootfs --arch {} registers it (host-wide)",
                arch.name
            ),
        },
    );
    let roots = ctx.state.guest_roots(arch);
    let root = roots.rootfs();
    row(
        format!("{} rootfs", arch.name),
        root.join("usr/sbin/qemu-ga").exists(),
        if root.join("usr/sbin/qemu-ga").exists() {
            root.display().to_string()
        } else {
            format!("cargo xtask setup-rootfs --arch {}", arch.name)
        },
    );
}

/// `doctor [--reprobe]`: every tool, the rootfs and KVM (probed again with `reprobe`).
pub fn run(ctx: &Ctx, reprobe: bool) -> Result<u8> {
    let mut missing_required = Vec::new();
    println!(
        "{:<20} {:<8} {:<45} version",
        "tool", "status", "path / fix"
    );
    for tool in tools::ALL {
        let found = tools::search(tool);
        for r in &found.rejected {
            println!(
                "{:<20} {:<8} {:<45} not used: {}",
                tool.name,
                "refused",
                r.path.display(),
                r.reason
            );
        }
        match found.usable {
            Some(p) => {
                let v = if tool.name == "debootstrap" {
                    // debootstrap has no --version; its package version says it.
                    Command::new("dpkg-query")
                        .args(["-W", "-f", "${Version}", "debootstrap"])
                        .read_logged()
                        .unwrap_or_default()
                } else {
                    version(tool, &p)
                };
                println!("{:<20} {:<8} {:<45} {}", tool.name, "found", p.display(), v);
            }
            None => {
                let need = if tool.required { "MISSING" } else { "missing" };
                println!(
                    "{:<20} {:<8} {:<45} ({})",
                    tool.name,
                    need,
                    tools::install_hint(tool),
                    tool.purpose
                );
                if tool.required {
                    missing_required.push(*tool);
                }
            }
        }
    }
    if tools::bootstrapper().is_err() {
        missing_required.push(tools::MMDEBSTRAP);
    }
    let rootfs = ctx.state.rootfs();
    if rootfs.join("usr/bin/gcc").exists() {
        let gcc =
            crate::rootfs::toolchain_identity(&ctx.state).unwrap_or_else(|e| format!("? ({e:#})"));
        println!(
            "{:<20} {:<8} {:<45} {}",
            "gcc (rootfs)",
            "found",
            rootfs.display(),
            gcc
        );
    } else {
        println!(
            "{:<20} {:<8} {:<45}",
            "gcc (rootfs)", "missing", "cargo xtask setup-rootfs"
        );
    }
    match tools::locate(&tools::QEMU) {
        Some(qemu) => {
            let p = crate::kvm::probe(&ctx.state, &qemu, None, reprobe)?;
            if p.usable && p.method == "firmware" {
                println!(
                    "KVM usable so far ({}); a kernel is booted under KVM before the first VM run",
                    p.detail
                );
            } else if p.usable {
                println!("KVM usable ({})", p.detail);
            } else {
                println!("KVM unusable: falling back to TCG (slower) ({})", p.detail);
            }
        }
        None => println!("KVM not probed: {} is missing", tools::QEMU.name),
    }
    for arch in crate::arch::ALL.iter().filter(|a| !a.is_host()) {
        foreign_arch(ctx, arch);
    }
    if !missing_required.is_empty() {
        let names: Vec<_> = missing_required.iter().map(|t| t.name).collect();
        bail!(
            "missing required tools: {}; run `cargo xtask deps --install`",
            names.join(", ")
        );
    }
    println!("ok: the toolkit can work on this host");
    Ok(0)
}
