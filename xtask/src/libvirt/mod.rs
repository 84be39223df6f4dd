//! The libvirt backend: the VM as a transient libvirt domain, started from the same spec as
//! the QEMU backend, with the guest agent reached through libvirt's API.

pub mod access;
pub mod agent;
pub mod domain;
pub mod xml;

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
