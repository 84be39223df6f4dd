//! The architectures a guest kernel can be built and booted for, as plain data: one record
//! per architecture (make's ARCH, the image, QEMU's binary, machine and CPU, the console,
//! the command line's part, the guest root's Debian arch, the config fragment).

use anyhow::{bail, Result};

/// A QEMU machine type; `-M` and libvirt's `machine=` are built from it in `vm::qemu` and
/// `libvirt::xml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86 `microvm,acpi=off`: the fast lane. No firmware tables, no PCI: virtio-mmio devices
    /// that QEMU itself names on the kernel command line (`virtio_mmio.device=`), which it does
    /// only without ACPI. The guest cannot power off: it reboots, and `-no-reboot` ends QEMU.
    MicrovmMmio,
    /// x86 `microvm,pcie=on`: no firmware, no legacy devices; ~1.4 s to a command under TCG.
    Microvm,
    /// x86 `q35`: the full PC; ~2.3 s under TCG. For kernels that need a real PC, and for
    /// libvirt, which cannot put virtio-pci devices on microvm.
    Q35,
    /// arm64 `virt`: QEMU's generic board, PCIe included, booted from a device tree.
    Virt,
}

impl Machine {
    /// The machine type's name, as QEMU's `-M` and libvirt's `machine=` know it.
    pub fn name(self) -> &'static str {
        match self {
            Machine::Microvm | Machine::MicrovmMmio => "microvm",
            Machine::Q35 => "q35",
            Machine::Virt => "virt",
        }
    }
}

/// Which devices a guest's kernel is configured for, and so which machine boots it: the lane
/// is decided by the config (see [`Lane::of_config`]), so it is part of the cache key as
/// the config is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Lane {
    /// virtio-mmio devices, no PCI and no ACPI: the leanest config and the quickest boot
    Fast,
    /// virtio-pci devices (and ACPI on x86_64): for what needs PCI, and for libvirt
    Pci,
}

impl Lane {
    /// Its name, as `--lane` and trim-config's summary say it.
    pub fn name(self) -> &'static str {
        match self {
            Lane::Fast => "fast",
            Lane::Pci => "pci",
        }
    }

    /// The lane a final `.config` is for: PCI on is the PCI lane. A config with neither PCI
    /// nor virtio-mmio's command-line devices boots on no machine here; it is called fast so
    /// that booting it fails on its own console rather than on a guess.
    pub fn of_config(config: &str) -> Lane {
        let pci = config.lines().any(|l| l.trim_end() == "CONFIG_PCI=y");
        if pci {
            Lane::Pci
        } else {
            Lane::Fast
        }
    }
}

/// One architecture's facts. Adding one is one more record and one `kconfig/` fragment.
#[derive(Debug, PartialEq, Eq)]
pub struct Arch {
    /// The `--arch` name, which is also make's `ARCH=`.
    pub name: &'static str,
    /// Kconfig's `$(SRCARCH)`: the directory under `arch/`.
    pub srcarch: &'static str,
    /// What `uname -m` says in the guest (and Rust's `target_arch` on such a host); libvirt's
    /// `<type arch=…>`.
    pub uname: &'static str,
    /// make's `CROSS_COMPILE=` when the host is another architecture.
    pub cross_compile: &'static str,
    /// The Debian packages of that cross toolchain, installed in the build container.
    pub cross_packages: &'static [&'static str],
    /// The image make builds (its make target)…
    pub image_target: &'static str,
    /// …and where it lands, relative to the build dir.
    pub image_path: &'static str,
    /// The QEMU binary, and the Debian package that has it.
    pub qemu: &'static str,
    pub qemu_package: &'static str,
    /// The lanes this architecture has, the default (`trim-config` without `--lane`) first.
    pub lanes: &'static [Lane],
    /// The machine the QEMU backend boots a PCI-lane kernel on.
    pub machine: Machine,
    /// The machine the QEMU backend boots a fast-lane kernel on, when the arch has that lane.
    pub fast_machine: Option<Machine>,
    /// The machine the libvirt backend and the KVM probe boot (it has firmware).
    pub full_machine: Machine,
    /// `-cpu` under TCG (under KVM it is always `host`): a model, then its properties.
    pub tcg_cpu: &'static str,
    /// The QOM type of `tcg_cpu`'s model, which `-global TYPE.PROPERTY=VALUE` names: how the
    /// libvirt backend sets the model's properties (libvirt 9 has no spelling for them).
    pub tcg_cpu_type: &'static str,
    /// The serial console's device in the guest (`console=`).
    pub console: &'static str,
    /// The kernel command line's part for this architecture, each with its reason below.
    pub cmdline: &'static [&'static str],
    /// The Debian architecture of the guest root (mmdebstrap `--architectures`).
    pub debian_arch: &'static str,
    /// The config fragment merged after the common `kconfig/vm.config`, relative to the
    /// workspace root.
    pub fragment: &'static str,
    /// The PCI lane's fragments, merged after [`Arch::fragment`] (the fast lane has none).
    pub pci_fragments: &'static [&'static str],
}

pub const X86_64: Arch = Arch {
    name: "x86_64",
    srcarch: "x86",
    uname: "x86_64",
    cross_compile: "x86_64-linux-gnu-",
    cross_packages: &["gcc-x86-64-linux-gnu", "binutils-x86-64-linux-gnu"],
    image_target: "bzImage",
    image_path: "arch/x86/boot/bzImage",
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    // The fast lane first: a check that needs no PCI boots on microvm with virtio-mmio.
    lanes: &[Lane::Fast, Lane::Pci],
    machine: Machine::Microvm,
    fast_machine: Some(Machine::MicrovmMmio),
    full_machine: Machine::Q35,
    // Every feature TCG can emulate.
    tcg_cpu: "max",
    tcg_cpu_type: "max-x86_64-cpu",
    // The 8250 UART at the ISA serial port, which microvm and q35 both have.
    console: "ttyS0",
    cmdline: &[
        // Triple-fault reboot: works on every machine type, microvm included.
        "reboot=t",
        // The one serial port we have; probing the other three costs time.
        "8250.nr_uarts=1",
    ],
    debian_arch: "amd64",
    fragment: "kconfig/x86_64.config",
    pci_fragments: &["kconfig/pci.config", "kconfig/x86_64-pci.config"],
};

pub const ARM64: Arch = Arch {
    name: "arm64",
    srcarch: "arm64",
    uname: "aarch64",
    cross_compile: "aarch64-linux-gnu-",
    cross_packages: &["gcc-aarch64-linux-gnu", "binutils-aarch64-linux-gnu"],
    // arm64 boots the uncompressed Image; QEMU loads it directly.
    image_target: "Image",
    image_path: "arch/arm64/boot/Image",
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    // virt for both: it has PCIe, and libvirt describes it (`<type arch='aarch64'
    // machine='virt'>`).
    // virt's PCIe only for now (virt has virtio-mmio too, in its device tree: not tried).
    lanes: &[Lane::Pci],
    machine: Machine::Virt,
    fast_machine: None,
    full_machine: Machine::Virt,
    // TCG's QARMA pointer authentication costs much of a boot; the implementation-defined
    // algorithm keeps pointer authentication, far cheaper to emulate.
    tcg_cpu: "max,pauth-impdef=on",
    tcg_cpu_type: "max-arm-cpu",
    // virt's PL011 UART.
    console: "ttyAMA0",
    cmdline: &[],
    debian_arch: "arm64",
    fragment: "kconfig/arm64.config",
    pci_fragments: &["kconfig/pci.config"],
};

/// Every architecture `--arch` accepts.
pub const ALL: &[&Arch] = &[&X86_64, &ARM64];

/// The architecture of the machine the toolkit runs on: the default `--arch`, and the one
/// whose rootfs is the build container.
pub const HOST: &Arch = &X86_64;

impl Arch {
    /// The architecture called `name` (`--arch NAME`); unknown names list the known ones.
    pub fn by_name(name: &str) -> Result<&'static Arch> {
        match ALL.iter().find(|a| a.name == name || a.uname == name) {
            Some(a) => Ok(a),
            None => {
                let known: Vec<&str> = ALL.iter().map(|a| a.name).collect();
                bail!(
                    "unknown architecture {name:?}: the known ones are {}",
                    known.join(", ")
                )
            }
        }
    }

    /// `trim-config`'s lane when `--lane` is not given.
    pub fn default_lane(&self) -> Lane {
        self.lanes[0]
    }

    /// The fragments of `lane`, after [`Arch::fragment`]; fails when the arch lacks the lane.
    pub fn lane_fragments(&self, lane: Lane) -> Result<&'static [&'static str]> {
        if !self.lanes.contains(&lane) {
            bail!(
                "{} has no {} lane (only {}): drop --lane",
                self.name,
                lane.name(),
                self.lanes
                    .iter()
                    .map(|l| l.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(match lane {
            Lane::Fast => &[],
            Lane::Pci => self.pci_fragments,
        })
    }

    /// The machine the QEMU backend boots a kernel of `lane` on (the PCI one when the arch
    /// has no fast lane: such a config was not made by trim-config for it).
    pub fn machine_for(&self, lane: Lane) -> Machine {
        match (lane, self.fast_machine) {
            (Lane::Fast, Some(m)) => m,
            _ => self.machine,
        }
    }

    /// Whether this is the architecture the toolkit runs on.
    pub fn is_host(&self) -> bool {
        self.name == HOST.name
    }

    /// `tcg_cpu`'s model (`max`) and its properties (`pauth-impdef=on`): the libvirt
    /// backend's, which sets them apart.
    #[cfg_attr(not(feature = "libvirt"), allow(dead_code))]
    pub fn tcg_cpu_parts(&self) -> (&'static str, Vec<&'static str>) {
        let mut parts = self.tcg_cpu.split(',');
        let model = parts.next().unwrap_or_default();
        (model, parts.collect())
    }

    /// make's variables for this architecture: none for the host's (make's own default),
    /// else `ARCH=` and the cross toolchain's `CROSS_COMPILE=`.
    pub fn make_vars(&self) -> Vec<String> {
        if self.is_host() {
            return Vec::new();
        }
        vec![
            format!("ARCH={}", self.name),
            format!("CROSS_COMPILE={}", self.cross_compile),
        ]
    }
}

/// An `&'static Arch` in a request (`bisect --resume` stores them) as its name.
pub mod by_name {
    use super::Arch;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &&'static Arch, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(a.name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<&'static Arch, D::Error> {
        let name = String::deserialize(d)?;
        Arch::by_name(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_unknown_names() {
        assert_eq!(Arch::by_name("x86_64").unwrap(), &X86_64);
        assert_eq!(Arch::by_name("arm64").unwrap(), &ARM64);
        // `uname -m`'s name too.
        assert_eq!(Arch::by_name("aarch64").unwrap(), &ARM64);
        let e = Arch::by_name("sparc").unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown architecture \"sparc\": the known ones are x86_64, arm64"
        );
    }

    #[test]
    fn a_stored_arch_is_its_name() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Stored {
            #[serde(with = "by_name")]
            arch: &'static Arch,
        }
        let json = serde_json::to_string(&Stored { arch: &ARM64 }).unwrap();
        assert_eq!(json, r#"{"arch":"arm64"}"#);
        let back: Stored = serde_json::from_str(&json).unwrap();
        assert_eq!(back.arch, &ARM64);
        let e = serde_json::from_str::<Stored>(r#"{"arch":"mips"}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("known ones are x86_64, arm64"), "{e}");
    }

    #[test]
    fn the_host_needs_no_make_variables() {
        assert!(HOST.make_vars().is_empty());
        assert_eq!(
            ARM64.make_vars(),
            ["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-"]
        );
    }

    #[test]
    fn the_tcg_cpu_is_a_model_and_its_properties() {
        assert_eq!(X86_64.tcg_cpu_parts(), ("max", vec![]));
        assert_eq!(ARM64.tcg_cpu_parts(), ("max", vec!["pauth-impdef=on"]));
    }

    #[test]
    fn the_lane_is_the_configs() {
        assert_eq!(
            Lane::of_config("CONFIG_PCI=y\nCONFIG_VIRTIO_MMIO=y\n"),
            Lane::Pci
        );
        assert_eq!(
            Lane::of_config("# CONFIG_PCI is not set\nCONFIG_VIRTIO_MMIO=y\n"),
            Lane::Fast
        );
        assert_eq!(Lane::of_config("CONFIG_PCI_MSI=y\n"), Lane::Fast);
        assert_eq!(X86_64.default_lane(), Lane::Fast);
        assert_eq!(X86_64.machine_for(Lane::Fast), Machine::MicrovmMmio);
        assert_eq!(X86_64.machine_for(Lane::Pci), Machine::Microvm);
        assert_eq!(ARM64.default_lane(), Lane::Pci);
        assert_eq!(ARM64.machine_for(Lane::Fast), Machine::Virt);
        assert!(X86_64.lane_fragments(Lane::Fast).unwrap().is_empty());
        let e = ARM64.lane_fragments(Lane::Fast).unwrap_err().to_string();
        assert_eq!(e, "arm64 has no fast lane (only pci): drop --lane");
    }

    #[test]
    fn every_record_is_consistent() {
        for a in ALL {
            assert!(a.image_path.starts_with(&format!("arch/{}/", a.srcarch)));
            assert!(a.image_path.ends_with(a.image_target), "{}", a.name);
            assert!(a.qemu.starts_with("qemu-system-"));
            assert!(a.fragment.ends_with(&format!("{}.config", a.name)));
            assert!(a.cross_compile.ends_with('-'));
            let (model, _) = a.tcg_cpu_parts();
            // libvirt's `<cpu mode='maximum'/>` is `-cpu max` (libvirt/xml.rs).
            assert_eq!(model, "max", "{}", a.name);
            assert!(
                a.tcg_cpu_type.starts_with(&format!("{model}-")),
                "{}",
                a.name
            );
            for f in std::iter::once(&a.fragment).chain(a.pci_fragments) {
                let fragment = crate::settings::workspace_root().join(f);
                let text = std::fs::read_to_string(&fragment).unwrap();
                crate::kconfig::config::parse(&text).unwrap();
                // Every group of options is preceded by a comment saying why.
                for group in text.split("\n\n") {
                    assert!(
                        group.trim_start().starts_with('#'),
                        "no comment on:\n{group}"
                    );
                }
            }
            assert_eq!(a.fast_machine.is_some(), a.lanes.contains(&Lane::Fast));
        }
    }
}
