//! QEMU's command line for a [`VmSpec`]: small pure functions, one per concern, each flag
//! with the reason it is there.

use super::spec::{Console, Machine, RunPaths, VmSpec, AGENT_PORT, ROOT_TAG, SHARE_TAG};
use crate::options::Accel;
use std::ffi::OsString;
use std::path::Path;

/// The whole argv after the program name.
pub fn argv(spec: &VmSpec, paths: &RunPaths) -> Vec<OsString> {
    let mut v = Vec::new();
    v.extend(base());
    v.extend(machine(spec));
    v.extend(cpu(spec));
    v.extend(memory(spec));
    v.extend(kernel(spec));
    v.extend(console(spec.console, &paths.console_log()));
    let bus = Transport::of(spec.machine);
    v.extend(root_share(bus, &paths.virtiofs_socket()));
    if spec.share.is_some() {
        v.extend(extra_share(bus, &paths.share_socket()));
    }
    v.extend(agent_port(bus, &paths.agent_socket()));
    v.extend(qmp(&paths.qmp_socket()));
    v.extend(rng(bus));
    v
}

/// How the virtio devices attach: the machine's lane says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// virtio-mmio (`-device virtio-…-device`): the fast lane's microvm, no PCI.
    Mmio,
    /// virtio-pci (`-device virtio-…-pci`).
    Pci,
}

impl Transport {
    fn of(machine: Machine) -> Transport {
        match machine {
            Machine::MicrovmMmio => Transport::Mmio,
            Machine::Microvm | Machine::Q35 | Machine::Virt => Transport::Pci,
        }
    }

    /// QEMU's device name for a virtio `kind` on this transport (`vhost-user-fs-pci`).
    fn device(self, kind: &str) -> String {
        match self {
            Transport::Mmio => format!("{kind}-device"),
            Transport::Pci => format!("{kind}-pci"),
        }
    }
}

/// QEMU's device name for a virtio `kind` on `machine`'s transport (`vhost-user-fs-device`
/// on the fast lane's microvm, `vhost-user-fs-pci` elsewhere); also the bench's baseline.
pub fn virtio_device(machine: Machine, kind: &str) -> String {
    Transport::of(machine).device(kind)
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// `-chardev`-style key=value with a path in it. QEMU splits option values at `,`; a `,` in
/// the path (a state dir named so) is written `,,`, which QEMU reads as one `,`.
fn with_path(prefix: &str, path: &Path, suffix: &str) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut v = prefix.as_bytes().to_vec();
    for &b in path.as_os_str().as_bytes() {
        v.push(b);
        if b == b',' {
            v.push(b',');
        }
    }
    v.extend_from_slice(suffix.as_bytes());
    OsString::from_vec(v)
}

fn base() -> Vec<OsString> {
    os(&[
        // Only the devices asked for below: no NIC, VGA, floppy, CD-ROM or default serial.
        "-nodefaults",
        // Ignore /etc/qemu/*.conf: the VM is what this file says.
        "-no-user-config",
        // No window.
        "-display",
        "none",
        // A reboot (panic=-1 after a panic, or a triple fault) ends QEMU instead.
        "-no-reboot",
    ])
}

/// `-M`: the spec's machine type with the shared memory backend (also the bench's baseline).
pub fn machine(spec: &VmSpec) -> Vec<OsString> {
    let mem = "memory-backend=mem";
    let m = match spec.machine {
        // microvm without ACPI: the fast lane. Its virtio-mmio devices are then on the kernel
        // command line, which QEMU writes itself (auto-kernel-cmdline, on by default) only
        // when there are no ACPI tables to describe them; no PCIe, so no ACPI is needed for
        // it. Power-off needs ACPI, so the guest reboots (reboot=t) and -no-reboot ends QEMU.
        Machine::MicrovmMmio => format!("microvm,acpi=off,{mem}"),
        // microvm: no firmware or legacy devices to set up; PCIe so virtio-*-pci and MSI work.
        // Its ISA serial port is on by default and is ttyS0.
        Machine::Microvm => format!("microvm,pcie=on,{mem}"),
        // q35: the standard PC, for kernels that need more than microvm gives.
        Machine::Q35 => format!("q35,{mem}"),
        // virt: arm64's generic board, with a PCIe host bridge for the virtio-*-pci devices
        // below and a PL011 UART (ttyAMA0) as its first serial port.
        Machine::Virt => format!("virt,{mem}"),
    };
    os(&["-M", &m])
}

fn cpu(spec: &VmSpec) -> Vec<OsString> {
    let cpus = spec.cpus.to_string();
    let (accel, model) = match spec.accel {
        // KVM: the host's CPU as it is.
        Accel::Kvm => ("kvm", "host"),
        // TCG: the architecture's model (every feature TCG can emulate, see its record); one
        // host thread per vCPU.
        Accel::Tcg => ("tcg,thread=multi", spec.arch.tcg_cpu),
    };
    os(&["-accel", accel, "-cpu", model, "-smp", &cpus])
}

fn memory(spec: &VmSpec) -> Vec<OsString> {
    let size = format!("{}M", spec.memory_mib);
    // Guest RAM in a memfd shared with virtiofsd: vhost-user needs shared memory.
    let backend = format!("memory-backend-memfd,id=mem,size={size},share=on");
    os(&["-m", &size, "-object", &backend])
}

fn kernel(spec: &VmSpec) -> Vec<OsString> {
    // Direct kernel boot: no bootloader, no disk.
    let mut v = vec!["-kernel".into(), spec.kernel.clone().into_os_string()];
    if let Some(i) = &spec.initramfs {
        v.push("-initrd".into());
        v.push(i.clone().into_os_string());
    }
    v.push("-append".into());
    v.push(spec.cmdline.join(" ").into());
    v
}

fn console(kind: Console, log: &Path) -> Vec<OsString> {
    match kind {
        // The serial port goes to the run's console log only.
        Console::Log => vec![
            "-chardev".into(),
            with_path("file,id=console,path=", log, ""),
            "-serial".into(),
            "chardev:console".into(),
        ],
        // The terminal, with the QEMU monitor multiplexed (Ctrl-A C; Ctrl-A X quits), the
        // terminal's Ctrl-C passed to the guest, and everything also written to the log.
        Console::Interactive => vec![
            "-chardev".into(),
            with_path("stdio,id=console,mux=on,signal=off,logfile=", log, ""),
            "-serial".into(),
            "chardev:console".into(),
            "-mon".into(),
            "chardev=console,mode=readline".into(),
        ],
    }
}

fn root_share(bus: Transport, socket: &Path) -> Vec<OsString> {
    vec![
        // virtiofsd's vhost-user socket (virtiofsd is started first and is listening).
        "-chardev".into(),
        with_path("socket,id=rootfs,path=", socket, ""),
        // The rootfs as virtiofs, tag "rootfs" (root=rootfs on the kernel command line);
        // a deep queue for the many small reads of a boot.
        "-device".into(),
        format!(
            "{},chardev=rootfs,tag={ROOT_TAG},queue-size=1024",
            bus.device("vhost-user-fs")
        )
        .into(),
    ]
}

/// The `--share` dir: a second virtiofs device, tag "share", which xtask-init mounts.
fn extra_share(bus: Transport, socket: &Path) -> Vec<OsString> {
    vec![
        "-chardev".into(),
        with_path("socket,id=share,path=", socket, ""),
        "-device".into(),
        format!(
            "{},chardev=share,tag={SHARE_TAG},queue-size=1024",
            bus.device("vhost-user-fs")
        )
        .into(),
    ]
}

fn agent_port(bus: Transport, socket: &Path) -> Vec<OsString> {
    vec![
        // The guest agent's channel: a virtio-serial port named as qemu-ga expects...
        "-device".into(),
        format!("{},id=vser", bus.device("virtio-serial")).into(),
        // ...backed by a socket QEMU listens on (server) without waiting for us to connect.
        "-chardev".into(),
        with_path("socket,id=agent,path=", socket, ",server=on,wait=off"),
        "-device".into(),
        // An id, so that QMP's VSERPORT_CHANGE event says when qemu-ga opens it.
        format!(
            "virtserialport,bus=vser.0,chardev=agent,name={AGENT_PORT},id={}",
            super::qmp::AGENT_PORT_ID
        )
        .into(),
    ]
}

fn qmp(socket: &Path) -> Vec<OsString> {
    vec![
        // QMP, to quit QEMU when the guest does not power off.
        "-qmp".into(),
        with_path("unix:", socket, ",server=on,wait=off"),
    ]
}

fn rng(bus: Transport) -> Vec<OsString> {
    vec![
        // Entropy from the host, so the guest's getrandom() does not block at boot.
        "-object".into(),
        "rng-random,id=rng,filename=/dev/urandom".into(),
        "-device".into(),
        format!("{},rng=rng", bus.device("virtio-rng")).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::InitMode;
    use std::path::PathBuf;
    use std::time::Duration;

    fn spec() -> VmSpec {
        VmSpec {
            arch: &crate::arch::X86_64,
            kernel: "/k/bzImage".into(),
            initramfs: None,
            cmdline: vec!["console=ttyS0".into(), "panic=-1".into()],
            memory_mib: 1024,
            cpus: 2,
            accel: Accel::Tcg,
            machine: Machine::Microvm,
            rootfs: "/state/rootfs".into(),
            layer: None,
            share: None,
            init: InitMode::Fast,
            console: Console::Log,
            boot_timeout: Duration::from_secs(60),
            timeout: Duration::from_secs(600),
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    fn s(v: &[OsString]) -> Vec<String> {
        v.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn whole_command_line() {
        let a = s(&argv(&spec(), &RunPaths::new(&PathBuf::from("/run/1"))));
        let expected = [
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-M",
            "microvm,pcie=on,memory-backend=mem",
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "1024M",
            "-object",
            "memory-backend-memfd,id=mem,size=1024M,share=on",
            "-kernel",
            "/k/bzImage",
            "-append",
            "console=ttyS0 panic=-1",
            "-chardev",
            "file,id=console,path=/run/1/console.log",
            "-serial",
            "chardev:console",
            "-chardev",
            "socket,id=rootfs,path=/run/1/virtiofs.sock",
            "-device",
            "vhost-user-fs-pci,chardev=rootfs,tag=rootfs,queue-size=1024",
            "-device",
            "virtio-serial-pci,id=vser",
            "-chardev",
            "socket,id=agent,path=/run/1/qga.sock,server=on,wait=off",
            "-device",
            "virtserialport,bus=vser.0,chardev=agent,name=org.qemu.guest_agent.0,id=qga-port",
            "-qmp",
            "unix:/run/1/qmp.sock,server=on,wait=off",
            "-object",
            "rng-random,id=rng,filename=/dev/urandom",
            "-device",
            "virtio-rng-pci,rng=rng",
        ];
        assert_eq!(a, expected);
    }

    #[test]
    fn the_fast_lane_has_no_pci_and_no_acpi() {
        let sp = VmSpec {
            machine: Machine::MicrovmMmio,
            share: Some("/host/share".into()),
            ..spec()
        };
        let a = s(&argv(&sp, &RunPaths::new(&PathBuf::from("/r"))));
        let has = |w: &[&str]| a.windows(w.len()).any(|x| x == w);
        assert!(has(&["-M", "microvm,acpi=off,memory-backend=mem"]));
        for d in [
            "vhost-user-fs-device,chardev=rootfs,tag=rootfs,queue-size=1024",
            "vhost-user-fs-device,chardev=share,tag=share,queue-size=1024",
            "virtio-serial-device,id=vser",
            "virtio-rng-device,rng=rng",
        ] {
            assert!(has(&["-device", d]), "{d} in {a:?}");
        }
        assert!(
            !a.iter().any(|x| x.contains("-pci") || x.contains("pcie")),
            "{a:?}"
        );
        // The kernel command line is ours: QEMU adds the virtio_mmio.device= entries.
        assert!(!a.iter().any(|x| x.contains("virtio_mmio")), "{a:?}");
    }

    #[test]
    fn commas_in_paths_are_doubled() {
        let a = s(&argv(&spec(), &RunPaths::new(&PathBuf::from("/s,t/run"))));
        assert!(a.contains(&"file,id=console,path=/s,,t/run/console.log".to_string()));
        assert!(
            a.contains(&"socket,id=agent,path=/s,,t/run/qga.sock,server=on,wait=off".to_string())
        );
        assert!(a.contains(&"unix:/s,,t/run/qmp.sock,server=on,wait=off".to_string()));
    }

    #[test]
    fn kvm_q35_initramfs_and_interactive() {
        let sp = VmSpec {
            accel: Accel::Kvm,
            machine: Machine::Q35,
            initramfs: Some("/k/initrd".into()),
            console: Console::Interactive,
            ..spec()
        };
        let a = s(&argv(&sp, &RunPaths::new(&PathBuf::from("/r"))));
        let has = |w: &[&str]| a.windows(w.len()).any(|x| x == w);
        assert!(has(&["-accel", "kvm", "-cpu", "host"]));
        assert!(has(&["-M", "q35,memory-backend=mem"]));
        assert!(has(&["-initrd", "/k/initrd"]));
        assert!(has(&[
            "-chardev",
            "stdio,id=console,mux=on,signal=off,logfile=/r/console.log"
        ]));
        assert!(has(&["-mon", "chardev=console,mode=readline"]));
    }
}
