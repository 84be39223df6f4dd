//! The libvirt backend: the VM as a transient libvirt domain, started from the same spec as
//! the QEMU backend, with the guest agent reached through libvirt's API. Only starting,
//! watching and ending the VM differ; the agent client, the verdict and the logs are shared.

pub mod access;
pub mod agent;
pub mod domain;
pub mod virtiofsd;
pub mod xml;

use crate::vm::fault::VmEnd;
use crate::vm::guest::{Guest, Tools};
use crate::vm::qga::{self, Agent};
use crate::vm::spec::{Console, RunPaths, VmSpec, AGENT_PORT, ROOT_TAG};
use anyhow::{Context, Result};
use std::io;
use std::time::{Duration, Instant};
use xml::{ConsoleSink, DomainDef};

/// The domain for a spec: pure.
pub fn domain_def(spec: &VmSpec, paths: &RunPaths, tools: &Tools, keep: bool) -> DomainDef {
    // libvirt boots the arch's full machine (see DomainDef::arch); the spec was made for it.
    debug_assert_eq!(spec.machine, spec.arch.full_machine);
    DomainDef {
        name: domain::domain_name(&paths.dir),
        description: format!(
            "cargo xtask, run dir {}{}",
            paths.dir.display(),
            if keep {
                format!(" {}", domain::KEPT_MARK)
            } else {
                String::new()
            }
        ),
        kvm: spec.accel == crate::options::Accel::Kvm,
        emulator: tools.qemu.clone(),
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        kernel: spec.kernel.clone(),
        initramfs: spec.initramfs.clone(),
        cmdline: spec.cmdline.clone(),
        rootfs: spec.rootfs.clone(),
        root_tag: ROOT_TAG.into(),
        rw: spec.layer.is_some(),
        // Read-only on the host side too, through the wrapper [`LibvirtVm::start`] writes.
        virtiofsd: paths.dir.join(virtiofsd::READONLY_WRAPPER),
        console: match spec.console {
            Console::Log => ConsoleSink::File(paths.console_log()),
            Console::Interactive => ConsoleSink::Pty {
                log: paths.console_log(),
            },
        },
        agent_port: AGENT_PORT.into(),
        arch: spec.arch,
    }
}

/// `boot --backend libvirt --print-xml`.
pub fn xml_for(spec: &VmSpec, paths: &RunPaths, tools: &Tools) -> Result<String> {
    let spec = absolute(spec)?;
    virtiofsd::write_readonly_wrapper(&paths.dir, &tools.virtiofsd)?;
    xml::domain_xml(&domain_def(&spec, paths, tools, false))
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
    /// The pid of the domain's virtiofsd, when libvirt's pid file gave it.
    virtiofsd: Option<u32>,
    end: Option<VmEnd>,
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
        virtiofsd::write_readonly_wrapper(&paths.dir, &tools.virtiofsd)?;
        let def = domain_def(&spec, paths, tools, keep);
        let xml = xml::domain_xml(&def)?;
        std::fs::write(paths.dir.join("domain.xml"), &xml)?;
        let domain = domain::Domain::create(uri, &def.name, &xml, keep)?;
        let virtiofsd = domain.id.and_then(virtiofsd::find);
        Ok(LibvirtVm {
            domain,
            paths: paths.clone(),
            virtiofsd,
            end: None,
        })
    }
}

impl Guest for LibvirtVm {
    fn started(&self) -> Instant {
        self.domain.started
    }

    /// The domain's end, or its virtiofsd's (the domain's own end wins: virtiofsd exits
    /// when QEMU does, so a domain on its way out gets a moment).
    fn ended(&mut self) -> Option<VmEnd> {
        if self.end.is_none() {
            self.end = self.domain.ended().or_else(|| {
                let pid = self.virtiofsd.filter(|&p| !virtiofsd::alive(p))?;
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until {
                    if let Some(e) = self.domain.ended() {
                        return Some(e);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Some(VmEnd::Virtiofsd {
                    status: format!("pid {pid} gone"),
                    log_tail: String::new(),
                })
            });
        }
        self.end.clone()
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
            if agent
                .send(&qga::shutdown_request(), start + timeout)
                .is_ok()
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
        let _ = std::fs::copy(self.domain.log_path(), self.paths.qemu_log());
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
    let crate::vm::guest::Launcher::Libvirt { uri, keep } = &tools.launcher else {
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

#[cfg(test)]
mod tests {
    use super::agent::{ApiStream, CallError, CommandApi};
    use crate::vm::qga::{self, Agent};
    use crate::vm::verdict::CommandEnd;
    use serde_json::Value;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    /// Answers as libvirt does: "not connected" while the guest boots, then the agent's
    /// answers; records every request.
    #[derive(Clone)]
    struct FakeLibvirt {
        booting: Arc<Mutex<u32>>,
        got: Arc<Mutex<Vec<String>>>,
    }

    impl CommandApi for FakeLibvirt {
        fn agent_command(&self, json: &str, _: Duration) -> Result<String, CallError> {
            let mut booting = self.booting.lock().unwrap();
            if *booting > 0 {
                *booting -= 1;
                return Err(CallError::Unreachable(
                    "Guest agent is not responding: QEMU guest agent is not connected".into(),
                ));
            }
            self.got.lock().unwrap().push(json.to_string());
            let v: Value = serde_json::from_str(json).unwrap();
            Ok(match v["execute"].as_str().unwrap() {
                "guest-sync" => format!("{{\"return\":{}}}", v["arguments"]["id"]),
                "guest-exec" => r#"{"return":{"pid":68}}"#.into(),
                "guest-exec-status" => {
                    r#"{"return":{"exitcode":3,"out-data":"aGkK","exited":true}}"#.into()
                }
                other => panic!("unexpected {other}"),
            })
        }
    }

    struct Connector(FakeLibvirt);
    impl qga::Connect for Connector {
        fn connect(&mut self) -> io::Result<Box<dyn qga::Stream>> {
            Ok(Box::new(ApiStream::open(self.0.clone())))
        }
    }

    /// The QEMU backend's agent client, unchanged, over the API: it retries while the agent
    /// is not connected, then syncs, runs a command and reads its end and output.
    #[test]
    fn the_agent_client_works_over_the_api() {
        let api = FakeLibvirt {
            booting: Arc::new(Mutex::new(3)),
            got: Arc::default(),
        };
        let mut conn = Connector(api.clone());
        let soon = Instant::now() + Duration::from_secs(10);
        let mut ok = || Ok(());
        let mut agent = Agent::connect(&mut conn, soon, &mut ok, None).unwrap();
        let argv: Vec<String> = vec!["sh".into(), "-c".into(), "echo hi; exit 3".into()];
        let pid = agent.exec(&argv, true, soon, &mut ok).unwrap();
        let st = agent.wait_exec(pid, soon, &mut ok).unwrap();
        assert_eq!(st.end(), Some(CommandEnd::Exited { code: 3 }));
        assert_eq!(st.stdout, b"hi\n");
        let got = api.got.lock().unwrap();
        let names: Vec<String> = got
            .iter()
            .map(|j| serde_json::from_str::<Value>(j).unwrap()["execute"].to_string())
            .collect();
        assert_eq!(
            names,
            ["\"guest-sync\"", "\"guest-exec\"", "\"guest-exec-status\""]
        );
    }
}
