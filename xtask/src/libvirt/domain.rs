//! A running transient libvirt domain, owned by a guard: dropping it destroys the domain
//! (after a verdict, an error or Ctrl-C), unless `--keep` asked to leave it for
//! `virsh console`.

use super::agent::{ApiStream, DomainApi};
use crate::vm::fault::VmEnd;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain as VirDomain;

/// Every domain the toolkit makes is named with this prefix and the run's id.
pub const NAME_PREFIX: &str = "xtask-";

/// The domain name of a run: `xtask-<run dir name>`; a `--repeat` run's `run-N` subdir adds
/// itself to its parent's name, so that every boot has its own.
pub fn domain_name(run_dir: &Path) -> String {
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let last = name(run_dir);
    let id = match run_dir.parent() {
        Some(parent) if last.starts_with("run-") => format!("{}-{last}", name(parent)),
        _ => last,
    };
    // libvirt names: keep them to what a shell and a file name take without quoting.
    let id: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{NAME_PREFIX}{id}")
}

/// In the description of a domain left up on purpose (`--keep`): never reaped.
pub const KEPT_MARK: &str = "(kept: --keep)";

/// The pid of the run that made the domain `name`, when the domain is ours and its run did not
/// ask to keep it: names are `xtask-<time>-<task>-<pid>`, and `-run-N` for a `--repeat` boot.
pub fn owner_pid(name: &str, description: &str) -> Option<u32> {
    if description.contains(KEPT_MARK) {
        return None;
    }
    let id = name.strip_prefix(NAME_PREFIX)?;
    let id = match id.rsplit_once("-run-") {
        Some((run, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => run,
        _ => id,
    };
    let (_, pid) = id.rsplit_once('-')?;
    pid.parse().ok()
}

/// Whether `pid` is a live `cargo xtask` (the same program as this one).
fn is_xtask(pid: u32) -> bool {
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm")).ok();
    matches!((comm(&pid.to_string()), comm("self")), (Some(a), Some(b)) if a == b)
}

/// Destroys the domains of runs that died without cleaning up (SIGKILL, an OOM kill): ours by
/// name, not kept, and whose run is no longer alive on this host. Only for local connections,
/// where a pid means something. Returns what it destroyed.
pub fn reap_orphans(conn: &Connect, uri: &str) -> Vec<String> {
    if !super::access::is_local(uri) {
        return Vec::new();
    }
    let Ok(domains) = conn.list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE) else {
        return Vec::new();
    };
    let mut reaped = Vec::new();
    for dom in domains {
        let Ok(name) = dom.get_name() else { continue };
        let description = dom
            .get_metadata(virt::sys::VIR_DOMAIN_METADATA_DESCRIPTION as i32, None, 0)
            .unwrap_or_default();
        let orphan = owner_pid(&name, &description)
            .is_some_and(|pid| pid != std::process::id() && !is_xtask(pid));
        if orphan && dom.destroy().is_ok() {
            reaped.push(name);
        }
    }
    reaped
}

/// Opens a libvirt connection with a clear error naming what to start.
pub fn connect(uri: &str) -> Result<Connect> {
    // libvirt prints every error to stderr by default; ours carry them.
    virt::error::clear_error_callback();
    Connect::open(Some(uri)).with_context(|| {
        format!(
            "cannot connect to libvirt at {uri}: start the daemon (`libvirtd -d`, or \
             `systemctl start libvirtd`) or pass --connect URI"
        )
    })
}

/// A started domain. Dropping it destroys the domain unless it is kept.
pub struct Domain {
    conn: Connect,
    dom: VirDomain,
    pub name: String,
    pub uri: String,
    /// Leave the domain running when the guard goes (`--keep`).
    pub keep: bool,
    pub started: Instant,
    /// libvirt's id of the running domain.
    pub id: Option<u32>,
    end: Option<VmEnd>,
    destroyed: bool,
}

impl Domain {
    /// Creates and starts the transient domain `xml` describes (validated against libvirt's
    /// schema first).
    pub fn create(uri: &str, name: &str, xml: &str, keep: bool) -> Result<Domain> {
        let conn = connect(uri)?;
        for gone in reap_orphans(&conn, uri) {
            eprintln!("destroyed the domain {gone}: the run that started it was killed");
        }
        let dom = VirDomain::create_xml(&conn, xml, virt::sys::VIR_DOMAIN_START_VALIDATE)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))
            .with_context(|| {
                format!(
                    "libvirt could not start the domain {name} (see /var/log/libvirt/qemu/{name}.log; \
                     `cargo xtask boot --backend libvirt --print-xml` shows the XML)"
                )
            })?;
        Ok(Domain {
            id: dom.get_id(),
            conn,
            dom,
            name: name.to_string(),
            uri: uri.to_string(),
            keep,
            started: Instant::now(),
            end: None,
            destroyed: false,
        })
    }

    /// What opens agent "connections" to this domain, for as long as it runs.
    pub fn agent_stream_factory(&self) -> StreamFactory {
        StreamFactory(self.dom.clone())
    }

    /// How the domain ended, once it has (a transient domain that ended no longer exists), or
    /// that libvirt stopped answering about it.
    pub fn ended(&mut self) -> Option<VmEnd> {
        if self.end.is_none() && !self.destroyed {
            self.end = match self.dom.is_active() {
                Ok(true) => None,
                Ok(false) => Some(self.domain_end()),
                Err(e) if e.code() == virt::error::ErrorNumber::NoDomain => Some(self.domain_end()),
                Err(e) => Some(VmEnd::Libvirt {
                    why: e.message().to_string(),
                }),
            };
        }
        self.end.clone()
    }

    /// The end of a domain that is gone, from libvirt's log of it.
    fn domain_end(&self) -> VmEnd {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        // The log keeps every boot of the name (a retry's too): this one's starts last.
        let log = log.rsplit_once("starting up").map_or(&*log, |(_, l)| l);
        VmEnd::Domain {
            reason: stop_reason(log),
            log_tail: crate::cmd::tail(log, 5),
        }
    }

    /// libvirt's log of the domain: QEMU's command line, its stderr, libvirt's notes.
    pub fn log_path(&self) -> std::path::PathBuf {
        format!("/var/log/libvirt/qemu/{}.log", self.name).into()
    }

    /// Whether the domain has ended (or is out of reach).
    pub fn exited(&mut self) -> bool {
        self.destroyed || self.ended().is_some()
    }

    /// Waits for the domain to end until `deadline`; true when it did.
    pub fn wait_exit(&mut self, deadline: Instant) -> Result<bool> {
        loop {
            if self.exited() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            crate::signals::sleep(Duration::from_millis(20))?;
        }
    }

    /// Pulls the plug (`virsh destroy`). When libvirt stopped answering (libvirtd restarting),
    /// a new connection does it, for as long as libvirtd takes to come back (10 s at most).
    pub fn destroy(&mut self) {
        match self.ended() {
            None => {
                let _ = self.dom.destroy();
            }
            Some(VmEnd::Libvirt { .. }) if !self.destroyed => {
                destroy_by_name(&self.uri, &self.name, Duration::from_secs(10))
            }
            Some(_) => {}
        }
        self.destroyed = true;
    }

    /// The line telling a person how to reach a kept domain.
    pub fn kept_hint(&self) -> String {
        format!(
            "the domain {n} is left running: `virsh -c {u} console {n}` attaches to its console, \
             `virsh -c {u} destroy {n}` ends it",
            n = self.name,
            u = self.uri
        )
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if self.keep && !self.exited() {
            // Not `eprintln!`: a panic on a closed stderr while unwinding would abort.
            crate::exit::say(&self.kept_hint());
        } else {
            self.destroy();
        }
        let _ = self.conn.close();
    }
}

/// libvirt's stop reason in its log of a domain: the last `shutting down, reason=X`.
pub fn stop_reason(log: &str) -> Option<String> {
    log.lines()
        .rev()
        .find_map(|l| l.split("shutting down, reason=").nth(1))
        .map(|r| r.trim().to_string())
}

/// Destroys the domain `name` over a new connection, trying until `patience` has passed.
fn destroy_by_name(uri: &str, name: &str, patience: Duration) {
    let until = Instant::now() + patience;
    loop {
        if let Ok(mut conn) = Connect::open(Some(uri)) {
            let found = VirDomain::lookup_by_name(&conn, name);
            let _ = conn.close();
            match found {
                Ok(dom) => {
                    if dom.destroy().is_ok() || !matches!(dom.is_active(), Ok(true)) {
                        return;
                    }
                }
                // No such domain: gone already.
                Err(_) => return,
            }
        }
        if Instant::now() >= until {
            // Also runs in Drop, where a panic on a closed stderr would abort.
            crate::exit::say(&format!(
                "warning: could not destroy the domain {name}: libvirt did not come back"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Opens agent streams to one domain (a libvirt handle: thread-safe, `Send`).
pub struct StreamFactory(VirDomain);

impl StreamFactory {
    pub fn open(&self) -> ApiStream {
        ApiStream::open(DomainApi(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_ours_and_not_kept() {
        assert_eq!(
            owner_pid("xtask-20261127-093000-check-42", "cargo xtask, run dir /s"),
            Some(42)
        );
        assert_eq!(
            owner_pid("xtask-20261127-093000-check-42-run-3", ""),
            Some(42)
        );
        assert_eq!(
            owner_pid(
                "xtask-20261127-093000-boot-42",
                &format!("cargo xtask, run dir /s {KEPT_MARK}")
            ),
            None
        );
        assert_eq!(owner_pid("debian12", ""), None);
        assert_eq!(owner_pid("xtask-handmade", ""), None);
    }

    #[test]
    fn a_live_pid_is_an_xtask_only_when_it_runs_this_program() {
        assert!(is_xtask(std::process::id()));
        assert!(
            !is_xtask(1)
                || std::fs::read_to_string("/proc/1/comm").ok()
                    == std::fs::read_to_string("/proc/self/comm").ok()
        );
    }

    #[test]
    fn libvirts_stop_reason() {
        let log = "2026-12-01 09:00:00.000+0000: starting up\n\
                   2026-12-01 09:00:01.000+0000: shutting down, reason=crashed\n";
        assert_eq!(stop_reason(log).as_deref(), Some("crashed"));
        assert_eq!(stop_reason("starting up\n"), None);
    }

    #[test]
    fn names() {
        assert_eq!(
            domain_name(Path::new("/s/runs/20261127-093000-check-42")),
            "xtask-20261127-093000-check-42"
        );
        assert_eq!(
            domain_name(Path::new("/s/runs/20261127-093000-check-42/run-3")),
            "xtask-20261127-093000-check-42-run-3"
        );
        assert_eq!(domain_name(Path::new("/s/runs/a b'c")), "xtask-a_b_c");
    }
}
