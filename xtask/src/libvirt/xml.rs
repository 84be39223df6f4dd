//! The libvirt domain XML of one VM: pure code from plain data, every value escaped, each
//! element with the reason it is there.

use crate::arch::Machine;
use anyhow::{bail, Result};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq)]
pub enum ConsoleSink {
    /// A file libvirt opens (as root) and hands to QEMU: the run's console log (`check`).
    File(PathBuf),
    /// A pty for `virsh console`, also logged to this file (interactive `boot`).
    Pty { log: PathBuf },
}

/// Everything the domain XML says, decided beforehand.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainDef {
    /// `xtask-<run id>`.
    pub name: String,
    /// Free text shown by `virsh dominfo`/`dumpxml`: which run owns the domain.
    pub description: String,
    /// KVM usable: `type='kvm'` and the host's CPU; else TCG (`type='qemu'`).
    pub kvm: bool,
    /// The QEMU binary libvirt runs (the one the QEMU backend and the KVM probe use).
    pub emulator: PathBuf,
    pub memory_mib: u64,
    pub cpus: u32,
    pub kernel: PathBuf,
    pub initramfs: Option<PathBuf>,
    /// The kernel command line, one argument per element.
    pub cmdline: Vec<String>,
    /// The directory shared as the guest's root, tagged `root_tag`.
    pub rootfs: PathBuf,
    pub root_tag: String,
    /// Share it writable (`--rw`).
    pub rw: bool,
    /// The virtiofsd libvirt starts for the share.
    pub virtiofsd: PathBuf,
    pub console: ConsoleSink,
    /// The virtio-serial port name the guest agent opens.
    pub agent_port: String,
    /// The guest's architecture; libvirt boots its `full_machine`: libvirt 9.0 cannot place
    /// virtio-pci devices on x86's `microvm` ("No PCI buses available").
    pub arch: &'static crate::arch::Arch,
}

/// Escapes a value for XML text and for attributes in either quote.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// A value as XML-safe text: UTF-8, without the control characters XML 1.0 cannot carry
/// even escaped.
fn text(what: &str, s: &str) -> Result<String> {
    if let Some(c) = s.chars().find(|&c| c < ' ' && c != '\t') {
        bail!("{what} holds the control character {c:?}, which a libvirt domain XML cannot carry: {s:?}");
    }
    Ok(escape(s))
}

fn path(what: &str, p: &Path) -> Result<String> {
    match p.to_str() {
        Some(s) => text(what, s),
        None => bail!(
            "{what} {} is not UTF-8, which a libvirt domain XML cannot carry: rename it",
            p.display()
        ),
    }
}

/// The domain XML for `libvirt`'s `virDomainCreateXML`.
pub fn domain_xml(d: &DomainDef) -> Result<String> {
    let mut x = String::new();
    let kind = if d.kvm { "kvm" } else { "qemu" };
    let qemu_args = qemu_args(d);
    // `type`: the accelerator; TCG when the KVM probe says KVM does not work here. The qemu
    // namespace only when QEMU gets arguments of ours (`<qemu:commandline>` below).
    let ns = if qemu_args.is_empty() {
        ""
    } else {
        " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"
    };
    let _ = writeln!(x, "<domain type='{kind}'{ns}>");
    let _ = writeln!(x, "  <name>{}</name>", text("the domain name", &d.name)?);
    let _ = writeln!(
        x,
        "  <description>{}</description>",
        text("the description", &d.description)?
    );
    let _ = writeln!(x, "  <memory unit='MiB'>{}</memory>", d.memory_mib);
    // Guest RAM in a shared memfd: virtiofsd (vhost-user) maps it.
    x.push_str("  <memoryBacking>\n    <source type='memfd'/>\n    <access mode='shared'/>\n  </memoryBacking>\n");
    let _ = writeln!(x, "  <vcpu>{}</vcpu>", d.cpus);
    x.push_str(&os(d)?);
    if d.arch.full_machine == Machine::Q35 {
        // ACPI: the guest's poweroff (guest-shutdown) turns the machine off. arm64's virt
        // has none (libvirt 9: "ACPI requires UEFI on this architecture"): its kernel reads
        // the device tree QEMU makes and powers off through PSCI.
        x.push_str("  <features>\n    <acpi/>\n  </features>\n");
    }
    // KVM: the host's CPU as it is; TCG: every feature TCG can emulate (`-cpu max`, the
    // model of every arch's `tcg_cpu`; its properties follow in `<qemu:commandline>`).
    x.push_str(if d.kvm {
        "  <cpu mode='host-passthrough'/>\n"
    } else {
        "  <cpu mode='maximum'/>\n"
    });
    x.push_str("  <clock offset='utc'/>\n");
    // Power-off, reboot and crash all end the domain: a panicking kernel (panic=-1 reboots)
    // ends the run instead of booting again (libvirt passes QEMU -no-reboot).
    x.push_str("  <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n");
    x.push_str("  <devices>\n");
    let _ = writeln!(
        x,
        "    <emulator>{}</emulator>",
        path("the QEMU binary", &d.emulator)?
    );
    x.push_str(&root_share(d)?);
    x.push_str(&console(&d.console)?);
    // The guest agent's port; libvirt makes and owns the socket (not in our run dir).
    let _ = writeln!(
        x,
        "    <channel type='unix'>\n      <target type='virtio' name='{}'/>\n    </channel>",
        text("the agent port", &d.agent_port)?
    );
    // Entropy, so that nothing in the guest blocks waiting for the random pool.
    x.push_str("    <rng model='virtio'>\n      <backend model='random'>/dev/urandom</backend>\n    </rng>\n");
    // No USB controller, no balloon and (no <graphics>) no display: nothing the run needs.
    x.push_str("    <controller type='usb' model='none'/>\n    <memballoon model='none'/>\n");
    x.push_str("  </devices>\n");
    // libvirt does not chown our files for the run (the kernel may sit in a shared cache);
    // the qemu user reads them by their modes, which `access` checks beforehand.
    x.push_str("  <seclabel type='none' model='dac'/>\n");
    if !qemu_args.is_empty() {
        x.push_str("  <qemu:commandline>\n");
        for a in &qemu_args {
            let _ = writeln!(x, "    <qemu:arg value='{}'/>", text("a QEMU argument", a)?);
        }
        x.push_str("  </qemu:commandline>\n");
    }
    x.push_str("</domain>\n");
    Ok(x)
}

/// QEMU arguments libvirt has no element for: under TCG, the properties of the arch's CPU
/// model (arm64's `pauth-impdef=on`: the pointer authentication TCG emulates fast), each as
/// `-global TYPE.PROPERTY`, which sets it on every CPU of that type.
fn qemu_args(d: &DomainDef) -> Vec<String> {
    if d.kvm {
        return Vec::new();
    }
    let (_, props) = d.arch.tcg_cpu_parts();
    props
        .iter()
        .flat_map(|p| {
            [
                "-global".to_string(),
                format!("{}.{p}", d.arch.tcg_cpu_type),
            ]
        })
        .collect()
}

/// Direct kernel boot: no firmware boot menu, no disk, no bootloader.
fn os(d: &DomainDef) -> Result<String> {
    let mut x = String::from("  <os>\n");
    let _ = writeln!(
        x,
        "    <type arch='{}' machine='{}'>hvm</type>",
        d.arch.uname,
        d.arch.full_machine.name()
    );
    let _ = writeln!(x, "    <kernel>{}</kernel>", path("the kernel", &d.kernel)?);
    if let Some(i) = &d.initramfs {
        let _ = writeln!(x, "    <initrd>{}</initrd>", path("the initramfs", i)?);
    }
    let _ = writeln!(
        x,
        "    <cmdline>{}</cmdline>",
        text("the kernel command line", &d.cmdline.join(" "))?
    );
    x.push_str("  </os>\n");
    Ok(x)
}

/// The rootfs as virtiofs; libvirt starts virtiofsd (as root) and connects QEMU to it.
fn root_share(d: &DomainDef) -> Result<String> {
    let mut x = String::from("    <filesystem type='mount' accessmode='passthrough'>\n");
    x.push_str("      <driver type='virtiofs'/>\n");
    let _ = writeln!(
        x,
        "      <binary path='{}'>",
        path("virtiofsd", &d.virtiofsd)?
    );
    // Read-only use: nothing changes the rootfs while we run, the guest may cache it all.
    // libvirt 9 has no read-only virtiofs (`<readonly/>` is refused): the binary is a wrapper
    // that adds virtiofsd's `--readonly` (libvirt/virtiofsd.rs), the kernel mounts the root
    // `ro` and xtask-init puts a tmpfs overlay over it.
    let cache = if d.rw { "auto" } else { "always" };
    let _ = writeln!(x, "        <cache mode='{cache}'/>");
    x.push_str("      </binary>\n");
    let _ = writeln!(
        x,
        "      <source dir='{}'/>",
        path("the rootfs", &d.rootfs)?
    );
    let _ = writeln!(
        x,
        "      <target dir='{}'/>",
        text("the root tag", &d.root_tag)?
    );
    x.push_str("    </filesystem>\n");
    Ok(x)
}

/// The first serial port (x86's 8250, ttyS0; arm64 virt's PL011, ttyAMA0) and the console
/// alias of it.
fn console(c: &ConsoleSink) -> Result<String> {
    Ok(match c {
        // libvirt opens the file and passes QEMU the descriptor: the log may sit in our
        // private run dir. append='off': a fresh log per run.
        ConsoleSink::File(p) => {
            let p = path("the console log", p)?;
            format!(
                "    <serial type='file'>\n      <source path='{p}' append='off'/>\n      <target port='0'/>\n    </serial>\n\
                 \x20   <console type='file'>\n      <source path='{p}' append='off'/>\n      <target type='serial' port='0'/>\n    </console>\n"
            )
        }
        // A pty for `virsh console`; libvirt copies what passes through to the log.
        ConsoleSink::Pty { log } => {
            let p = path("the console log", log)?;
            format!(
                "    <serial type='pty'>\n      <log file='{p}' append='off'/>\n      <target port='0'/>\n    </serial>\n\
                 \x20   <console type='pty'>\n      <target type='serial' port='0'/>\n    </console>\n"
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> DomainDef {
        DomainDef {
            name: "xtask-20261127-093000-check-42".into(),
            description: "cargo xtask check, run dir /state/runs/20261127-093000-check-42".into(),
            kvm: false,
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            memory_mib: 1024,
            cpus: 2,
            kernel: "/state/cache/k/bzImage".into(),
            initramfs: None,
            cmdline: vec![
                "console=ttyS0".into(),
                "root=rootfs".into(),
                "rootfstype=virtiofs".into(),
                "ro".into(),
            ],
            rootfs: "/state/rootfs".into(),
            root_tag: "rootfs".into(),
            rw: false,
            virtiofsd: "/root/.cargo/bin/virtiofsd".into(),
            console: ConsoleSink::File("/state/runs/r/console.log".into()),
            agent_port: "org.qemu.guest_agent.0".into(),
            arch: &crate::arch::X86_64,
        }
    }

    #[test]
    fn check_under_tcg() {
        let want = "\
<domain type='qemu'>
  <name>xtask-20261127-093000-check-42</name>
  <description>cargo xtask check, run dir /state/runs/20261127-093000-check-42</description>
  <memory unit='MiB'>1024</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>/state/cache/k/bzImage</kernel>
    <cmdline>console=ttyS0 root=rootfs rootfstype=virtiofs ro</cmdline>
  </os>
  <features>
    <acpi/>
  </features>
  <cpu mode='maximum'/>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <binary path='/root/.cargo/bin/virtiofsd'>
        <cache mode='always'/>
      </binary>
      <source dir='/state/rootfs'/>
      <target dir='rootfs'/>
    </filesystem>
    <serial type='file'>
      <source path='/state/runs/r/console.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='/state/runs/r/console.log' append='off'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none' model='dac'/>
</domain>
";
        assert_eq!(domain_xml(&def()).unwrap(), want);
    }

    /// arm64 on the virt board under TCG, as `virsh define --validate` accepts it (e2e's
    /// `libvirt_arm64_print_xml_is_a_domain_libvirt_accepts`).
    #[test]
    fn an_arm64_guest_under_tcg() {
        let want = "\
<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>xtask-20261127-093000-check-42</name>
  <description>cargo xtask check, run dir /state/runs/20261127-093000-check-42</description>
  <memory unit='MiB'>1024</memory>
  <memoryBacking>
    <source type='memfd'/>
    <access mode='shared'/>
  </memoryBacking>
  <vcpu>2</vcpu>
  <os>
    <type arch='aarch64' machine='virt'>hvm</type>
    <kernel>/state/cache/k/Image</kernel>
    <cmdline>console=ttyAMA0 root=rootfs rootfstype=virtiofs ro</cmdline>
  </os>
  <cpu mode='maximum'/>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-aarch64</emulator>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='virtiofs'/>
      <binary path='/root/.cargo/bin/virtiofsd'>
        <cache mode='always'/>
      </binary>
      <source dir='/state/guest-arm64/rootfs'/>
      <target dir='rootfs'/>
    </filesystem>
    <serial type='file'>
      <source path='/state/runs/r/console.log' append='off'/>
      <target port='0'/>
    </serial>
    <console type='file'>
      <source path='/state/runs/r/console.log' append='off'/>
      <target type='serial' port='0'/>
    </console>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
  <seclabel type='none' model='dac'/>
  <qemu:commandline>
    <qemu:arg value='-global'/>
    <qemu:arg value='max-arm-cpu.pauth-impdef=on'/>
  </qemu:commandline>
</domain>
";
        let arm64 = DomainDef {
            emulator: "/usr/bin/qemu-system-aarch64".into(),
            kernel: "/state/cache/k/Image".into(),
            cmdline: vec![
                "console=ttyAMA0".into(),
                "root=rootfs".into(),
                "rootfstype=virtiofs".into(),
                "ro".into(),
            ],
            rootfs: "/state/guest-arm64/rootfs".into(),
            arch: &crate::arch::ARM64,
            ..def()
        };
        assert_eq!(domain_xml(&arm64).unwrap(), want);
        // Under KVM the CPU is the host's: no TCG properties, no qemu namespace.
        let kvm = domain_xml(&DomainDef { kvm: true, ..arm64 }).unwrap();
        assert!(kvm.starts_with("<domain type='kvm'>\n"), "{kvm}");
        assert!(!kvm.contains("qemu:"), "{kvm}");
    }

    #[test]
    fn kvm_rw_initramfs_and_pty() {
        let x = domain_xml(&DomainDef {
            kvm: true,
            rw: true,
            initramfs: Some("/state/cache/k/initramfs.img".into()),
            console: ConsoleSink::Pty {
                log: "/state/runs/r/console.log".into(),
            },
            ..def()
        })
        .unwrap();
        assert!(x.starts_with("<domain type='kvm'>\n"));
        assert!(x.contains("  <cpu mode='host-passthrough'/>\n"));
        assert!(x.contains("        <cache mode='auto'/>\n"));
        assert!(x.contains(
            "    <kernel>/state/cache/k/bzImage</kernel>\n    <initrd>/state/cache/k/initramfs.img</initrd>\n"
        ));
        assert!(x.contains(
            "    <serial type='pty'>\n      <log file='/state/runs/r/console.log' append='off'/>\n"
        ));
        assert!(x.contains("    <console type='pty'>\n"));
    }

    #[test]
    fn every_value_is_escaped() {
        let x = domain_xml(&DomainDef {
            cmdline: vec!["xtask.note=a<b&c>'d\"".into()],
            rootfs: "/tmp/it's <mine>".into(),
            description: "</description><devices>".into(),
            ..def()
        })
        .unwrap();
        assert!(x.contains("<cmdline>xtask.note=a&lt;b&amp;c&gt;&apos;d&quot;</cmdline>"));
        assert!(x.contains("<source dir='/tmp/it&apos;s &lt;mine&gt;'/>"));
        assert!(x.contains("<description>&lt;/description&gt;&lt;devices&gt;</description>"));
    }

    #[test]
    fn control_characters_and_non_utf8_are_refused() {
        let e = domain_xml(&DomainDef {
            cmdline: vec!["a\u{1b}[31m".into()],
            ..def()
        })
        .unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        use std::os::unix::ffi::OsStrExt;
        let e = domain_xml(&DomainDef {
            kernel: std::ffi::OsStr::from_bytes(b"/k/\xff").into(),
            ..def()
        })
        .unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }
}
