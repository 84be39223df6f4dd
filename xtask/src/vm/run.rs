//! Running one VM as a sequence of phases — start, wait for the agent, run the command, shut
//! down — each under its deadline. [`Vm`] owns QEMU and virtiofsd (the QEMU backend); its
//! `Drop` ends both and removes the sockets (the logs stay). The libvirt backend plugs in
//! through [`Guest`]; [`start`] is the one place that picks the backend.

use super::command;
use super::console;
use super::fault::{FaultKind, VmEnd};
use super::guest::{Guest, Launcher, Seen, Tools};
use super::kmsg;
use super::qemu;
use super::qga::{self, Agent, ExecStatus, Stop, UnixConnect};
use super::qmp::Qmp;
use super::spec::{Console, RunPaths, VmSpec};
use super::timeline::{self, Clock, ConsoleWatch, Timeline};
use super::verdict::{self, judge, BootEnd, CommandEnd, Facts, Judgement, Timings};
use super::virtiofsd::{self, ShareInput};
use crate::cmd::{self, CommandExt};
use crate::signals;
use anyhow::{Context, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Phase 1 with the backend `tools.launcher` names.
pub fn start(spec: &VmSpec, paths: &RunPaths, tools: &Tools) -> Result<Box<dyn Guest>> {
    paths.check_socket_lengths()?;
    match &tools.launcher {
        Launcher::Qemu => Ok(Box::new(Vm::start(spec, paths, tools)?)),
        Launcher::Libvirt { uri, keep } => match tools.start_domain {
            Some(start_domain) => start_domain(spec, paths, tools, uri, *keep),
            None => anyhow::bail!(super::NEEDS_LIBVIRT_FEATURE),
        },
    }
}

/// What happens during a run, in order; the terminal UI prints these, tests may collect them.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// QEMU was started (virtiofsd is listening).
    Started,
    /// The guest agent answered, this long after QEMU started.
    AgentUp(Duration),
    /// The boot ended without an agent.
    BootFailed(BootEnd, Duration),
    /// The command ended.
    CommandDone(CommandEnd, Duration),
    /// QEMU is gone, this long after the shutdown began; `how` says what ended it.
    ShutDown(&'static str, Duration),
    /// Something of ours broke (not the kernel): the whole run starts again, once.
    Retrying(String),
}

/// What to run in the guest once it is up; saved with a request as plain JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Plan {
    /// Empty: the check is the boot itself.
    pub command: Vec<String>,
    /// A script to copy into the guest first, at [`SCRIPT_PATH`]; `command` then runs it.
    #[serde(default, with = "script_base64")]
    pub script: Option<Vec<u8>>,
    /// `--bad-if-console`.
    #[serde(default, with = "regex_sources")]
    pub bad_if_console: Vec<Regex>,
}

/// A script's bytes as base64 text (it may be any bytes).
mod script_base64 {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => s.serialize_some(&super::super::b64::encode(b)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| super::super::b64::decode(&t).map_err(de::Error::custom))
            .transpose()
    }
}

/// Regexes as their sources, compiled again when read.
mod regex_sources {
    use regex::Regex;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Regex], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(Regex::as_str))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Regex>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        super::console::compile(&v).map_err(de::Error::custom)
    }
}

/// Everything one run produced; also written to `result.json`.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Report {
    pub judgement: Judgement,
    pub facts: Facts,
    pub timings: Timings,
    /// The command's output, when one ran.
    #[serde(skip)]
    pub exec: Option<ExecStatus>,
    pub out_truncated: bool,
    pub run_dir: PathBuf,
    pub console_log: PathBuf,
    /// The fault of a first attempt that was retried (its logs are in `attempt-1/`).
    #[serde(default)]
    pub retried_after: Option<String>,
    /// Where the test results were read from, when the check reads KTAP (`--kunit`, `--ktap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ktap: Option<crate::ktap::Source>,
    /// The tests, nested as in the KTAP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<crate::ktap::Test>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_counts: Option<crate::ktap::Counts>,
    /// When each step of the boot happened (none in a result.json older than the timeline).
    #[serde(default)]
    pub timeline: Option<Timeline>,
}

/// A started VM. Dropping it ends QEMU and virtiofsd and removes the sockets.
pub struct Vm {
    qemu: Child,
    /// The rootfs's virtiofsd, then the `--share` dir's.
    virtiofsd: Vec<Child>,
    paths: RunPaths,
    /// QMP, connected as QEMU starts: the events, and `quit`. None when it could not be
    /// reached (the run goes on; its timeline lacks the events).
    qmp: Option<Qmp>,
    virtiofsd_ready: Instant,
    pub started: Instant,
    exited: Option<ExitStatus>,
    /// When QEMU's exit was first seen.
    exited_at: Option<Instant>,
    end: Option<VmEnd>,
}

impl Vm {
    /// Phase 1: virtiofsd (until it listens), then QEMU.
    pub fn start(spec: &VmSpec, paths: &RunPaths, tools: &Tools) -> Result<Vm> {
        // Sockets of a run that died without cleanup would make QEMU or virtiofsd fail.
        for s in paths.sockets() {
            let _ = std::fs::remove_file(s);
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let rootfs = std::fs::canonicalize(&spec.rootfs)
            .with_context(|| format!("rootfs {}", spec.rootfs.display()))?;
        let merged = paths.dir.join("layer-root");
        if spec.layer.is_some() {
            std::fs::create_dir_all(&merged)
                .with_context(|| format!("creating {}", merged.display()))?;
        }
        let share = ShareInput {
            shared_dir: &rootfs,
            socket: &paths.virtiofs_socket(),
            access: match &spec.layer {
                Some(dirs) => virtiofsd::Access::Layered(virtiofsd::Layered {
                    dirs,
                    merged: &merged,
                }),
                None => virtiofsd::Access::ReadOnly,
            },
            root,
        };
        let mut daemons = vec![virtiofsd::start(
            &tools.virtiofsd,
            &share,
            &paths.virtiofsd_log(),
        )?];
        if let Some(dir) = &spec.share {
            let extra = ShareInput {
                shared_dir: dir,
                socket: &paths.share_socket(),
                access: virtiofsd::Access::Writable,
                root,
            };
            match virtiofsd::start(&tools.virtiofsd, &extra, &paths.share_log()) {
                Ok(c) => daemons.push(c),
                Err(e) => {
                    cmd::terminate(&mut daemons[0], Duration::from_secs(1));
                    return Err(e.context("the --share dir's virtiofsd"));
                }
            }
        }
        let virtiofsd_ready = Instant::now();
        let mut c = Command::new(&tools.qemu);
        c.args(qemu::argv(spec, paths))
            .stdin(Stdio::null())
            .die_with_us();
        let spawned = match spec.console {
            Console::Log => {
                let log = std::fs::File::create(paths.qemu_log())?;
                c.stdout(log.try_clone()?).stderr(log).spawn_logged()
            }
            // In the terminal's process group: QEMU reads the terminal (raw mode), which a
            // background process group may not.
            Console::Interactive => {
                c.stdin(Stdio::inherit());
                cmd::log_start(&c);
                c.spawn()
                    .with_context(|| format!("could not start `{}`", cmd::display(&c)))
            }
        };
        let mut qemu = match spawned {
            Ok(q) => q,
            Err(e) => {
                for d in &mut daemons {
                    cmd::terminate(d, Duration::from_secs(1));
                }
                return Err(e);
            }
        };
        let started = Instant::now();
        // QEMU makes the socket before the guest runs; seconds before the guest opens the
        // agent's port. A QEMU that exits at start ends the wait.
        let qmp = {
            let mut watch = || match qemu.try_wait() {
                Ok(None) => Ok(()),
                _ => Err(Stop::VmExited.into()),
            };
            Qmp::connect(
                &paths.qmp_socket(),
                &paths.qmp_transcript(),
                started + QMP_CONNECT,
                &mut watch,
            )
        };
        let qmp = match qmp {
            Ok(q) => Some(q),
            Err(e) if signals::is_interrupted(&e) => return Err(e),
            Err(_) => None,
        };
        Ok(Vm {
            qemu,
            virtiofsd: daemons,
            paths: paths.clone(),
            qmp,
            virtiofsd_ready,
            started,
            exited: None,
            exited_at: None,
            end: None,
        })
    }

    /// How QEMU or virtiofsd ended, if one has. virtiofsd also exits when QEMU does (QEMU
    /// closes the share): QEMU's end is the story then, so a QEMU on its way out gets a moment.
    fn look(&mut self) -> Option<VmEnd> {
        if let Some(st) = self.exited() {
            return Some(self.qemu_end(st));
        }
        let (which, st) = self
            .virtiofsd
            .iter_mut()
            .enumerate()
            .find_map(|(i, c)| Some((i, c.try_wait().ok().flatten()?)))?;
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if let Some(q) = self.exited() {
                return Some(self.qemu_end(q));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(VmEnd::Virtiofsd {
            status: cmd::describe(&st),
            log_tail: cmd::tail(
                &read_lossy(&if which == 0 {
                    self.paths.virtiofsd_log()
                } else {
                    self.paths.share_log()
                }),
                5,
            ),
        })
    }

    fn qemu_end(&self, st: ExitStatus) -> VmEnd {
        use std::os::unix::process::ExitStatusExt;
        VmEnd::Qemu {
            code: st.code(),
            signal: st.signal(),
            log_tail: cmd::tail(&read_lossy(&self.paths.qemu_log()), 5),
        }
    }

    /// QEMU's exit status once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.qemu.try_wait().ok().flatten();
            if self.exited.is_some() {
                self.exited_at = Some(Instant::now());
            }
        }
        self.exited
    }

    /// Waits for QEMU to exit until `deadline`; true when it did.
    pub fn wait_exit(&mut self, deadline: Instant) -> Result<bool> {
        loop {
            if self.exited().is_some() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            signals::sleep(Duration::from_millis(5))?;
        }
    }

    /// Waits for QEMU in the foreground (interactive boot).
    pub fn wait_foreground(&mut self) -> Result<ExitStatus> {
        let st = cmd::wait(&mut self.qemu, None)?.expect("no deadline");
        self.exited = Some(st);
        Ok(st)
    }

    /// Asks QEMU to quit over QMP (the run's connection, else a new one).
    pub fn qmp_quit(&mut self, deadline: Instant) -> Result<()> {
        if let Some(q) = self.qmp.as_mut() {
            return q.quit();
        }
        let s = UnixStream::connect(self.paths.qmp_socket()).context("connecting to QMP")?;
        s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(10)),
        ))?;
        let mut r = BufReader::new(s.try_clone()?);
        let mut w = s;
        let mut line = String::new();
        r.read_line(&mut line).context("QMP greeting")?;
        w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        line.clear();
        r.read_line(&mut line).context("QMP capabilities")?;
        w.write_all(b"{\"execute\":\"quit\"}\n")?;
        Ok(())
    }

    /// Phase 4: the agent's guest-shutdown, then QMP quit, then SIGKILL; says which worked.
    pub fn shut_down(
        &mut self,
        agent: Option<&mut Agent>,
        timeout: Duration,
    ) -> Result<&'static str> {
        if self.exited().is_some() {
            return Ok("had exited");
        }
        let start = Instant::now();
        if let Some(agent) = agent {
            if agent
                .send(&qga::shutdown_request(), start + timeout)
                .is_ok()
                && self.wait_exit(start + timeout)?
            {
                return Ok("guest powered off");
            }
        }
        // QEMU quits at once on QMP quit, but give a loaded host some seconds.
        let quit_deadline = Instant::now() + Duration::from_secs(5);
        if self.qmp_quit(quit_deadline).is_ok() && self.wait_exit(quit_deadline)? {
            return Ok("QMP quit");
        }
        cmd::terminate(&mut self.qemu, Duration::from_millis(500));
        self.exited = self.qemu.try_wait().ok().flatten();
        Ok("killed")
    }
}

impl Guest for Vm {
    fn started(&self) -> Instant {
        self.started
    }
    fn ended(&mut self) -> Option<VmEnd> {
        if self.end.is_none() {
            self.end = self.look();
        }
        self.end.clone()
    }
    fn agent(&self) -> Box<dyn qga::Connect> {
        Box::new(UnixConnect(self.paths.agent_socket()))
    }
    /// On QMP's event: qemu-ga opened its port. Without QMP, at once (the agent client
    /// then polls).
    fn wait_agent_port(&mut self, deadline: Instant) -> Result<()> {
        let Some(mut q) = self.qmp.take() else {
            return Ok(());
        };
        let opened = |e: &super::qmp::Event| e.port_opened(super::qmp::AGENT_PORT_ID);
        let waited = {
            let mut watch = || self.watch();
            q.wait_for(&opened, deadline, &mut watch)
        };
        self.qmp = Some(q);
        waited.map(|_| ())
    }
    fn seen(&self) -> Seen {
        Seen {
            virtiofsd_ready: Some(self.virtiofsd_ready),
            qemu_started: Some(self.started),
            qemu_exit: self.exited_at,
        }
    }
    fn shut_down(&mut self, agent: Option<&mut Agent>, timeout: Duration) -> Result<&'static str> {
        Vm::shut_down(self, agent, timeout)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        cmd::terminate(&mut self.qemu, Duration::from_secs(2));
        // QEMU is gone: its QMP reader ends.
        drop(self.qmp.take());
        for mut v in self.virtiofsd.drain(..) {
            cmd::terminate(&mut v, Duration::from_secs(1));
        }
        for s in self.paths.sockets() {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// Boots `spec`, runs `plan` and judges the run: phases 1–4, then the verdict. Setup
/// problems and Ctrl-C are `Err`; everything the kernel does is in the report. A fault of the
/// infrastructure (virtiofsd or QEMU killed, libvirtd restarted, the agent channel broken)
/// gets the whole run once more; the first attempt's logs move to `attempt-1/`.
pub fn check(
    spec: &VmSpec,
    paths: &RunPaths,
    tools: &Tools,
    plan: &Plan,
    events: &mut dyn FnMut(Event),
) -> Result<Report> {
    let first = attempt(spec, paths, tools, plan, events)?;
    let fault = match verdict::fault(&first.facts) {
        Some(f) if f.kind == FaultKind::Infra => f,
        _ => return Ok(first),
    };
    events(Event::Retrying(fault.what.clone()));
    keep_attempt(paths, "attempt-1")?;
    let mut second = attempt(spec, paths, tools, plan, events)?;
    if let Some(again) = verdict::fault(&second.facts) {
        second.judgement.reason = if again.what == fault.what {
            format!("{} (twice: the retry failed the same way)", again.what)
        } else {
            format!(
                "{} (on the retry; the first attempt: {})",
                again.what, fault.what
            )
        };
    }
    second.retried_after = Some(fault.what);
    save(paths, &second)?;
    Ok(second)
}

/// Moves a run's files into `sub/`, out of the next attempt's way.
fn keep_attempt(paths: &RunPaths, sub: &str) -> Result<()> {
    let dest = paths.dir.join(sub);
    std::fs::create_dir_all(&dest)?;
    for e in std::fs::read_dir(&paths.dir)?.flatten() {
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if is_file && e.file_name() != "commands.log" {
            std::fs::rename(e.path(), dest.join(e.file_name()))
                .with_context(|| format!("moving {} to {}", e.path().display(), dest.display()))?;
        }
    }
    Ok(())
}

/// One boot, command and shutdown.
fn attempt(
    spec: &VmSpec,
    paths: &RunPaths,
    tools: &Tools,
    plan: &Plan,
    events: &mut dyn FnMut(Event),
) -> Result<Report> {
    let t0 = Instant::now();
    let start_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let console_watch = ConsoleWatch::start(paths.console_log(), t0);
    let mut vm = start(spec, paths, tools)?;
    events(Event::Started);
    let mut timings = Timings::default();

    // Phase 2: the guest agent answers.
    let transcript = std::fs::File::create(paths.agent_transcript())?;
    let boot_deadline = vm.started() + spec.boot_timeout;
    let mut conn = vm.agent();
    // No guest-sync before the guest listens: each unanswered one costs a reconnect.
    let mut agent_client = Instant::now();
    let agent = match vm.wait_agent_port(boot_deadline) {
        Ok(()) => {
            // agent.jsonl's clock starts here.
            agent_client = Instant::now();
            let mut watch = || vm.watch();
            Agent::connect(
                conn.as_mut(),
                boot_deadline,
                &mut watch,
                Some(Box::new(transcript)),
            )
        }
        Err(e) => Err(e),
    };
    let (boot, mut agent) = match agent {
        Ok(a) => (BootEnd::AgentUp, Some(a)),
        Err(e) => match qga::stop_of(&e) {
            Some(Stop::Deadline) => (BootEnd::TimedOut, None),
            Some(Stop::VmExited) => (BootEnd::VmEnded, None),
            None => return Err(e.context("waiting for the guest agent")),
        },
    };
    let boot_time = vm.started().elapsed();
    match &boot {
        BootEnd::AgentUp => {
            timings.boot = Some(boot_time);
            events(Event::AgentUp(boot_time));
        }
        b => events(Event::BootFailed(b.clone(), boot_time)),
    }

    // Phase 3: the command.
    let mut exec = None;
    let mut command_end = None;
    if let (Some(a), false) = (agent.as_mut(), plan.command.is_empty()) {
        let start = Instant::now();
        let deadline = start + spec.timeout;
        let result = {
            let mut watch = || vm.watch();
            command::run(
                a,
                &plan.command,
                plan.script.as_deref(),
                deadline,
                &mut watch,
            )
        };
        let end = match result {
            Ok((end, st)) => {
                exec = st;
                end
            }
            Err(e) if signals::is_interrupted(&e) => return Err(e),
            // The watch said so: the VM is gone.
            Err(_) => CommandEnd::VmEnded,
        };
        // A channel that broke as the VM went away: the VM's end is the story.
        let end = match end {
            CommandEnd::AgentFailed { .. } if ended_soon(vm.as_mut())? => CommandEnd::VmEnded,
            end => end,
        };
        let took = start.elapsed();
        timings.command = Some(took);
        events(Event::CommandDone(end.clone(), took));
        command_end = Some(end);
    }

    // Phase 4: shut down (a VM that lost a part of itself is not asked to power off).
    let vm_end = vm.ended();
    let mut agent = if vm_end.is_some() {
        None
    } else {
        agent.as_mut()
    };
    // Before it, the kernel log if the console shows a finding: its records say which lines
    // userspace wrote to /dev/kmsg.
    if let Some(a) = agent.as_deref_mut() {
        let mut watch = || vm.watch();
        save_kernel_log(a, paths, &mut watch)?;
    }
    let start = Instant::now();
    let how = vm.shut_down(agent, spec.shutdown_timeout)?;
    let took = start.elapsed();
    timings.shutdown = Some(took);
    events(Event::ShutDown(how, took));
    let seen = vm.seen();
    drop(vm);
    let clock = Clock {
        start_unix,
        virtiofsd_ready: timeline::secs_since(t0, seen.virtiofsd_ready),
        qemu_started: timeline::secs_since(t0, seen.qemu_started),
        agent_client: timeline::secs_since(t0, Some(agent_client)),
        qemu_exit: timeline::secs_since(t0, seen.qemu_exit),
        console: console_watch.stop(),
    };

    // The verdict, from the recordings.
    let console_text = read_lossy(&paths.console_log());
    let timeline = save_timeline(paths, &clock, &console_text)?;
    let (findings, from_userspace) = findings(&console_text, paths, &plan.bad_if_console);
    let facts = Facts {
        command: plan.command.clone(),
        boot,
        command_end,
        findings,
        from_userspace,
        vm_end,
        kernel_printed: !console_text.trim().is_empty(),
    };
    let report = Report {
        judgement: judge(&facts),
        facts,
        timings,
        out_truncated: exec.as_ref().is_some_and(|e| e.out_truncated),
        exec,
        run_dir: paths.dir.clone(),
        console_log: paths.console_log(),
        retried_after: None,
        ktap: None,
        tests: Vec::new(),
        test_counts: None,
        timeline: Some(timeline),
    };
    save(paths, &report)?;
    Ok(report)
}

/// How long QEMU may take to make its QMP socket.
const QMP_CONNECT: Duration = Duration::from_secs(5);

/// Writes clock.json and assembles the run's timeline from its recordings.
fn save_timeline(paths: &RunPaths, clock: &Clock, console_text: &str) -> Result<Timeline> {
    std::fs::write(paths.clock(), serde_json::to_string(clock)? + "\n")
        .with_context(|| format!("writing {}", paths.clock().display()))?;
    Ok(timeline::assemble(
        clock,
        console_text,
        &read_lossy(&paths.qmp_transcript()),
        &read_lossy(&paths.agent_transcript()),
    ))
}

/// Whether the VM ends within a moment (a QEMU on its way out; libvirt takes a few seconds
/// to destroy a domain that reset).
fn ended_soon(vm: &mut dyn Guest) -> Result<bool> {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        if vm.ended().is_some() {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        signals::sleep(Duration::from_millis(20))?;
    }
}

/// How long reading the kernel log may take: a few records over the agent.
const KERNEL_LOG_TIMEOUT: Duration = Duration::from_secs(5);

/// Saves the guest's kernel log in the run dir when the console so far shows a finding. A
/// log that cannot be read is no error: every finding then stays the kernel's.
fn save_kernel_log(a: &mut Agent, paths: &RunPaths, watch: qga::Watch) -> Result<()> {
    if !kmsg::worth_reading(&console::scan(&read_lossy(&paths.console_log()), &[])) {
        return Ok(());
    }
    match kmsg::read(a, Instant::now() + KERNEL_LOG_TIMEOUT, watch) {
        Ok(dump) => std::fs::write(paths.kernel_log(), dump)
            .with_context(|| format!("writing {}", paths.kernel_log().display())),
        Err(e) if signals::is_interrupted(&e) => Err(e),
        Err(_) => Ok(()),
    }
}

/// The console's findings, the kernel's and userspace's (by the run's saved kernel log).
fn findings(
    console_text: &str,
    paths: &RunPaths,
    bad_if_console: &[Regex],
) -> (Vec<console::Finding>, Vec<console::Finding>) {
    let records = kmsg::parse(&read_lossy(&paths.kernel_log()));
    kmsg::split_userspace(console::scan(console_text, bad_if_console), &records)
}

/// Writes result.json and the command's output next to the logs.
pub fn save(paths: &RunPaths, r: &Report) -> Result<()> {
    if let Some(e) = &r.exec {
        std::fs::write(paths.stdout(), &e.stdout)?;
        std::fs::write(paths.stderr(), &e.stderr)?;
    }
    std::fs::write(paths.result(), serde_json::to_string_pretty(r)? + "\n")
        .with_context(|| format!("writing {}", paths.result().display()))
}

pub fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Judges a saved run again from its logs: the console log is scanned anew (with today's
/// `--bad-if-console`); the rest of the facts and the command's output are as saved.
pub fn rejudge(dir: &Path, bad_if_console: &[Regex]) -> Result<Report> {
    let paths = RunPaths::new(dir);
    let text = std::fs::read_to_string(paths.result()).with_context(|| {
        format!(
            "{} has no result.json: is it the run dir of a check?",
            dir.display()
        )
    })?;
    let mut r: Report = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid", paths.result().display()))?;
    let console_text = read_lossy(&paths.console_log());
    (r.facts.findings, r.facts.from_userspace) = findings(&console_text, &paths, bad_if_console);
    if r.facts.command_end.is_some() {
        r.exec = Some(ExecStatus {
            stdout: std::fs::read(paths.stdout()).unwrap_or_default(),
            stderr: std::fs::read(paths.stderr()).unwrap_or_default(),
            ..ExecStatus::default()
        });
    }
    r.judgement = judge(&r.facts);
    r.run_dir = dir.to_path_buf();
    r.console_log = paths.console_log();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::verdict::Verdict;

    /// A saved run: result.json as `check` wrote it, the console log and the output.
    fn saved_run(console: &str, end: CommandEnd) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(t.path());
        let facts = Facts {
            command: vec!["sh".into(), "-c".into(), "echo out; exit 3".into()],
            boot: BootEnd::AgentUp,
            command_end: Some(end),
            findings: vec![],
            from_userspace: vec![],
            vm_end: None,
            kernel_printed: true,
        };
        let r = Report {
            judgement: judge(&facts),
            facts,
            timings: Timings::default(),
            exec: None,
            out_truncated: false,
            run_dir: "/elsewhere".into(),
            console_log: "/elsewhere/console.log".into(),
            retried_after: None,
            ktap: None,
            tests: Vec::new(),
            test_counts: None,
            timeline: None,
        };
        std::fs::write(paths.result(), serde_json::to_string(&r).unwrap()).unwrap();
        std::fs::write(paths.console_log(), console::recorded(console)).unwrap();
        std::fs::write(paths.stdout(), "out\n").unwrap();
        t
    }

    #[test]
    fn a_saved_run_is_judged_again_from_its_logs() {
        let t = saved_run(
            "console/clean_boot_fast.log",
            CommandEnd::Exited { code: 3 },
        );
        let r = rejudge(t.path(), &[]).unwrap();
        assert_eq!(r.facts.command_end, Some(CommandEnd::Exited { code: 3 }));
        assert_eq!(r.judgement.verdict(), Verdict::Bad);
        assert_eq!(r.exec.unwrap().stdout, b"out\n");
        assert_eq!(r.run_dir, t.path());
    }

    #[test]
    fn rejudging_applies_new_console_regexes() {
        let ok = CommandEnd::Exited { code: 0 };
        let t = saved_run("console/warning_from_kmsg.log", ok.clone());
        let r = rejudge(t.path(), &[]).unwrap();
        assert_eq!(r.judgement.verdict(), Verdict::Bad);
        assert!(r
            .judgement
            .reason
            .contains("WARNING: CPU: 0 PID: 1 at test"));
        let t = saved_run("console/clean_boot_fast.log", ok);
        assert_eq!(
            rejudge(t.path(), &[]).unwrap().judgement.verdict(),
            Verdict::Good
        );
        let re = crate::vm::console::compile(&["virtio-pci".into()]).unwrap();
        assert_eq!(
            rejudge(t.path(), &re).unwrap().judgement.verdict(),
            Verdict::Bad
        );
    }

    #[test]
    fn rejudging_reads_the_saved_kernel_log() {
        let t = saved_run(
            "console/kmsg_copy_and_real_warning.log",
            CommandEnd::Exited { code: 0 },
        );
        let kmsg = console::recorded("kmsg/kmsg_copy_and_real_warning.txt");
        std::fs::write(RunPaths::new(t.path()).kernel_log(), kmsg).unwrap();
        let r = rejudge(t.path(), &[]).unwrap();
        assert_eq!(r.judgement.verdict(), Verdict::Bad);
        assert!(
            r.judgement.reason.starts_with(
                "console: warning at line 210: WARNING: CPU: 0 PID: 54 at drivers/misc/lkdtm"
            ),
            "{}",
            r.judgement.reason
        );
        let lines: Vec<usize> = r.facts.from_userspace.iter().map(|f| f.line).collect();
        assert_eq!(lines, [207]);
    }

    #[test]
    fn a_dir_without_result_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        assert!(format!("{:#}", rejudge(t.path(), &[]).unwrap_err()).contains("no result.json"));
    }

    #[test]
    fn an_attempt_moves_aside_with_its_logs() {
        let t = tempfile::tempdir().unwrap();
        let paths = RunPaths::new(t.path());
        std::fs::write(paths.console_log(), "x").unwrap();
        std::fs::write(t.path().join("commands.log"), "+ qemu").unwrap();
        keep_attempt(&paths, "attempt-1").unwrap();
        assert!(t.path().join("attempt-1/console.log").exists());
        assert!(!paths.console_log().exists());
        assert!(
            t.path().join("commands.log").exists(),
            "one log of commands"
        );
    }
}
