//! The libvirt backend: the VM as a transient libvirt domain, started from the same spec as
//! the QEMU backend, with the guest agent reached through libvirt's API. Only starting,
//! watching and ending the VM differ; the agent client, the verdict and the logs are shared.

pub mod access;
pub mod agent;
pub mod domain;
pub mod xml;

use crate::vm::qga::{self, Agent};
use crate::vm::run::{Guest, Tools};
use crate::vm::spec::{Console, Machine, RunPaths, VmSpec, AGENT_PORT, ROOT_TAG};
use anyhow::{Context, Result};
use std::io;
use std::time::{Duration, Instant};
use xml::{ConsoleSink, DomainDef};

/// The domain for a spec: pure.
pub fn domain_def(spec: &VmSpec, paths: &RunPaths, tools: &Tools) -> DomainDef {
    // libvirt boots only q35 (see xml::MACHINE); the spec was made for it.
    debug_assert_eq!(spec.machine, Machine::Q35);
    DomainDef {
        name: domain::domain_name(&paths.dir),
        description: format!("cargo xtask, run dir {}", paths.dir.display()),
        kvm: spec.accel == crate::cli::Accel::Kvm,
        emulator: tools.qemu.clone(),
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        kernel: spec.kernel.clone(),
        initramfs: spec.initramfs.clone(),
        cmdline: spec.cmdline.clone(),
        rootfs: spec.rootfs.clone(),
        root_tag: ROOT_TAG.into(),
        rw: spec.rw,
        virtiofsd: tools.virtiofsd.clone(),
        console: match spec.console {
            Console::Log => ConsoleSink::File(paths.console_log()),
            Console::Interactive => ConsoleSink::Pty {
                log: paths.console_log(),
            },
        },
        agent_port: AGENT_PORT.into(),
    }
}

/// `boot --backend libvirt --print-xml`.
pub fn xml_for(spec: &VmSpec, paths: &RunPaths, tools: &Tools) -> Result<String> {
    let spec = absolute(spec)?;
    xml::domain_xml(&domain_def(&spec, paths, tools))
}

/// libvirtd resolves paths from its own directory: give it absolute ones.
fn absolute(spec: &VmSpec) -> Result<VmSpec> {
    let abs = |p: &std::path::Path| {
        std::fs::canonicalize(p).with_context(|| format!("{} not found", p.display()))
    };
    Ok(VmSpec {
        kernel: abs(&spec.kernel)?,
        initramfs: spec.initramfs.as_deref().map(abs).transpose()?,
        rootfs: abs(&spec.rootfs)?,
        ..spec.clone()
    })
}

/// A VM as a libvirt domain. Dropping it destroys the domain (unless `--keep`) and copies
/// libvirt's QEMU log into the run dir.
pub struct LibvirtVm {
    domain: domain::Domain,
    paths: RunPaths,
}

impl LibvirtVm {
    /// Phase 1: checks that libvirt's QEMU can read the kernel, then creates the domain.
    pub fn start(
        spec: &VmSpec,
        paths: &RunPaths,
        tools: &Tools,
        uri: &str,
        keep: bool,
    ) -> Result<LibvirtVm> {
        let spec = absolute(spec)?;
        let mut files = vec![("kernel", spec.kernel.as_path())];
        if let Some(i) = &spec.initramfs {
            files.push(("initramfs", i.as_path()));
        }
        access::check_readable(uri, &files)?;
        if let Some(w) = access::kvm_warning(uri) {
            eprintln!("warning: {w}");
        }
        let def = domain_def(&spec, paths, tools);
        let xml = xml::domain_xml(&def)?;
        std::fs::write(paths.dir.join("domain.xml"), &xml)?;
        let domain = domain::Domain::create(uri, &def.name, &xml, keep)?;
        Ok(LibvirtVm {
            domain,
            paths: paths.clone(),
        })
    }
}

impl Guest for LibvirtVm {
    fn started(&self) -> Instant {
        self.domain.started
    }

    fn exited(&mut self) -> bool {
        self.domain.exited()
    }

    fn agent(&self) -> Box<dyn qga::Connect> {
        Box::new(ApiConnect(self.domain.agent_stream_factory()))
    }

    /// The agent's guest-shutdown, then `virsh destroy`; `--keep` leaves the domain up.
    fn shut_down(&mut self, agent: Option<&mut Agent>, timeout: Duration) -> Result<&'static str> {
        if self.domain.exited() {
            return Ok("had exited");
        }
        if self.domain.keep {
            return Ok("kept running");
        }
        let start = Instant::now();
        if let Some(agent) = agent {
            if agent.send(&qga::shutdown_request()).is_ok()
                && self.domain.wait_exit(start + timeout)?
            {
                return Ok("guest powered off");
            }
        }
        self.domain.destroy();
        Ok("destroyed")
    }
}

impl Drop for LibvirtVm {
    fn drop(&mut self) {
        if !self.domain.keep {
            self.domain.destroy();
        }
        // libvirt's log of the domain (QEMU's command line and errors), beside ours.
        let log = format!("/var/log/libvirt/qemu/{}.log", self.domain.name);
        let _ = std::fs::copy(&log, self.paths.qemu_log());
    }
}

/// Opens agent "connections" through the API: each a fresh [`agent::ApiStream`].
struct ApiConnect(domain::StreamFactory);

impl qga::Connect for ApiConnect {
    fn connect(&mut self) -> io::Result<Box<dyn qga::Stream>> {
        Ok(Box::new(self.0.open()))
    }
}

impl qga::Stream for agent::ApiStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        agent::ApiStream::set_read_timeout(self, timeout)
    }
}

/// `boot --backend libvirt` without `--exec`: the domain with its console on a pty, and
/// `virsh console` on it in the foreground; when that ends, so does the domain (unless
/// `--keep`).
pub fn boot_interactive(spec: &VmSpec, paths: &RunPaths, tools: &Tools) -> Result<u8> {
    let crate::vm::run::Launcher::Libvirt { uri, keep } = &tools.launcher else {
        anyhow::bail!("boot_interactive needs the libvirt launcher");
    };
    let vm = LibvirtVm::start(spec, paths, tools, uri, *keep)?;
    let name = vm.domain.name.clone();
    eprintln!(
        "domain {name} started ({:?}); Ctrl-] leaves the console{}",
        spec.accel,
        if *keep {
            ", the domain stays"
        } else {
            " and ends the domain"
        }
    );
    let virsh = crate::tools::find(&crate::tools::VIRSH)?;
    let st = std::process::Command::new(virsh)
        .args(["-c", uri, "console", "--force", &name])
        .status()
        .context("running `virsh console`")?;
    drop(vm);
    eprintln!("console log: {}", paths.console_log().display());
    Ok(if st.success() { 0 } else { 1 })
}

/// Against the real libvirt, a kernel and a rootfs with xtask-init: `XTASK_LIVE_KERNEL=…
/// XTASK_LIVE_ROOTFS=… cargo test -p xtask --features libvirt live -- --ignored --nocapture`.
#[cfg(test)]
mod live {
    use super::agent::ApiStream;
    use super::domain::{self, Domain};
    use super::xml::{self, ConsoleSink, DomainDef};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    fn call(s: &mut ApiStream, req: &str) -> std::io::Result<String> {
        s.write_all(format!("{req}\n").as_bytes())?;
        s.set_read_timeout(Some(Duration::from_secs(40)))?;
        let mut buf = vec![0u8; 1 << 16];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    #[ignore]
    fn boot_exec_shutdown() {
        let kernel = std::env::var("XTASK_LIVE_KERNEL").expect("XTASK_LIVE_KERNEL");
        let rootfs = std::env::var("XTASK_LIVE_ROOTFS").expect("XTASK_LIVE_ROOTFS");
        let dir = tempfile::tempdir().unwrap();
        let name = domain::domain_name(&dir.path().join("live"));
        let def = DomainDef {
            name: name.clone(),
            description: "live test".into(),
            kvm: false,
            emulator: "/usr/bin/qemu-system-x86_64".into(),
            memory_mib: 512,
            cpus: 2,
            kernel: kernel.into(),
            initramfs: None,
            cmdline:
                "console=ttyS0 root=rootfs rootfstype=virtiofs ro init=/usr/local/sbin/xtask-init \
                      panic=-1 oops=panic reboot=t 8250.nr_uarts=1 xtask.init=fast"
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
            rootfs: rootfs.into(),
            root_tag: "rootfs".into(),
            rw: false,
            virtiofsd: "/root/.cargo/bin/virtiofsd".into(),
            console: ConsoleSink::File(dir.path().join("console.log")),
            agent_port: "org.qemu.guest_agent.0".into(),
        };
        let x = xml::domain_xml(&def).unwrap();
        let t = Instant::now();
        let mut d = Domain::create("qemu:///system", &name, &x, false).unwrap();
        eprintln!("created in {:?}", t.elapsed());
        let up = loop {
            let mut s = d.agent_stream();
            match call(
                &mut s,
                r#"{"execute":"guest-sync","arguments":{"id":4711}}"#,
            ) {
                Ok(a) => break (s, a),
                Err(e) => {
                    assert!(
                        t.elapsed() < Duration::from_secs(150),
                        "no agent: {e}\n{}",
                        std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let (mut s, a) = up;
        eprintln!("sync after {:?}: {a}", t.elapsed());
        let a = call(&mut s, r#"{"execute":"guest-exec","arguments":{"path":"/bin/sh","arg":["-c","echo hi; exit 3"],"capture-output":true}}"#).unwrap();
        eprintln!("exec: {a}");
        let pid = serde_json::from_str::<serde_json::Value>(&a).unwrap()["return"]["pid"]
            .as_i64()
            .unwrap();
        for _ in 0..100 {
            let a = call(
                &mut s,
                &format!(r#"{{"execute":"guest-exec-status","arguments":{{"pid":{pid}}}}}"#),
            )
            .unwrap();
            if a.contains("\"exited\":true") {
                eprintln!("status: {a}");
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let a = call(
            &mut s,
            r#"{"execute":"guest-exec","arguments":{"path":"/nonexistent"}}"#,
        );
        eprintln!("missing program: {a:?}");
        let t2 = Instant::now();
        let a = call(
            &mut s,
            r#"{"execute":"guest-shutdown","arguments":{"mode":"powerdown"}}"#,
        );
        eprintln!("shutdown: {a:?}");
        assert!(d
            .wait_exit(Instant::now() + Duration::from_secs(20))
            .unwrap());
        eprintln!("gone {:?} after shutdown", t2.elapsed());
        drop(d);
        assert!(!domain::list_ours("qemu:///system").unwrap().contains(&name));
        eprintln!(
            "console:\n{}",
            std::fs::read_to_string(dir.path().join("console.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
