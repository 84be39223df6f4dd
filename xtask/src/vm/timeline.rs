//! The boot timeline of one run — QEMU started, kernel and init start, the agent's port open
//! and first answer, the command, power-off, QEMU's exit — on the host's clock, assembled
//! (pure) from what the run recorded: the host's own readings ([`Clock`], `clock.json`),
//! QMP's stamped events (`qmp.jsonl`), the agent transcript (`agent.jsonl`) and the console
//! with its printk stamps. [`ConsoleWatch`] records when the console grew (thin).

use super::console;
use super::qmp::{self, AGENT_PORT_ID};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The host's clock readings of one run, in seconds since the run's start (before
/// virtiofsd is started); saved as `clock.json` beside the other recordings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    /// The run's start by the wall clock, in seconds since the epoch: QMP stamps its
    /// events so.
    pub start_unix: f64,
    pub virtiofsd_ready: Option<f64>,
    pub qemu_started: Option<f64>,
    /// When the agent client started: the `t` of agent.jsonl counts from here.
    pub agent_client: Option<f64>,
    pub qemu_exit: Option<f64>,
    /// `[seconds, bytes]` each time the console log was seen to grow.
    #[serde(default)]
    pub console: Vec<(f64, u64)>,
}

/// When each step of a run happened, in seconds since the run's start; `None` for a step
/// the run did not reach or a backend does not see (libvirt's QEMU has no QMP of ours).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub virtiofsd_ready: Option<f64>,
    pub qemu_started: Option<f64>,
    /// The guest clock's zero on the host's clock, from the printk stamps and when the lines
    /// reached the console log.
    pub kernel_start: Option<f64>,
    /// The kernel's `Run /sbin/init as init process` reached the console.
    pub init_start: Option<f64>,
    /// qemu-ga opened its port (QMP `VSERPORT_CHANGE`).
    pub agent_port_open: Option<f64>,
    /// The agent's first `guest-sync` answer.
    pub agent_answered: Option<f64>,
    /// `guest-exec` of the command answered, and `guest-exec-status` saw it exit.
    pub command_start: Option<f64>,
    pub command_end: Option<f64>,
    /// The guest powered off or reset (QMP `SHUTDOWN` from the guest).
    pub power_off: Option<f64>,
    pub qemu_exit: Option<f64>,
}

impl Timeline {
    /// The steps with their names, in the order a boot goes through them.
    pub fn steps(&self) -> [(&'static str, Option<f64>); 10] {
        [
            ("virtiofsd ready", self.virtiofsd_ready),
            ("QEMU started", self.qemu_started),
            ("kernel start", self.kernel_start),
            ("init start", self.init_start),
            ("agent port open", self.agent_port_open),
            ("agent answered", self.agent_answered),
            ("command start", self.command_start),
            ("command end", self.command_end),
            ("power-off", self.power_off),
            ("QEMU exit", self.qemu_exit),
        ]
    }

    /// One line a step: `  2.31s  +0.84s  init start` (the gap since the step before).
    pub fn lines(&self) -> Vec<String> {
        let mut prev = 0.0;
        let mut out = Vec::new();
        for (name, t) in self.steps() {
            if let Some(t) = t {
                out.push(format!("{t:7.2}s {:+7.2}s  {name}", t - prev));
                prev = t;
            }
        }
        out
    }
}

/// Each step's median over some runs (`bench boot`): the step a typical run took.
pub fn median(runs: &[Timeline]) -> Timeline {
    let of = |step: fn(&Timeline) -> Option<f64>| {
        let mut v: Vec<f64> = runs.iter().filter_map(step).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some(round_ms((v[n / 2 - 1] + v[n / 2]) / 2.0)),
        }
    };
    Timeline {
        virtiofsd_ready: of(|t| t.virtiofsd_ready),
        qemu_started: of(|t| t.qemu_started),
        kernel_start: of(|t| t.kernel_start),
        init_start: of(|t| t.init_start),
        agent_port_open: of(|t| t.agent_port_open),
        agent_answered: of(|t| t.agent_answered),
        command_start: of(|t| t.command_start),
        command_end: of(|t| t.command_end),
        power_off: of(|t| t.power_off),
        qemu_exit: of(|t| t.qemu_exit),
    }
}

/// The timeline of a run from its recordings (a saved run's files give the same one).
pub fn assemble(clock: &Clock, console_log: &str, qmp_log: &str, agent_log: &str) -> Timeline {
    let kernel_start = kernel_start(clock, console_log);
    let init_start = init_line(console_log).and_then(|end| arrival(clock, end));
    let events = qmp::events_of(qmp_log);
    let since_start = |at: SystemTime| {
        let unix = at.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        Some(round_ms(unix - clock.start_unix))
    };
    let event_at = |want: &dyn Fn(&qmp::Event) -> bool| {
        events
            .iter()
            .find(|e| want(e))
            .and_then(|e| since_start(e.at))
    };
    let agent = agent_steps(agent_log);
    let on_agent_clock = |t: Option<f64>| Some(round_ms(clock.agent_client? + t?));
    Timeline {
        virtiofsd_ready: clock.virtiofsd_ready,
        qemu_started: clock.qemu_started,
        kernel_start: kernel_start.map(round_ms),
        init_start: init_start.map(round_ms),
        agent_port_open: event_at(&|e| e.port_opened(AGENT_PORT_ID)),
        agent_answered: on_agent_clock(agent.answered),
        command_start: on_agent_clock(agent.command_start),
        command_end: on_agent_clock(agent.command_end),
        power_off: event_at(&|e| e.guest_stopped()),
        qemu_exit: clock.qemu_exit,
    }
}

fn round_ms(s: f64) -> f64 {
    (s * 1000.0).round() / 1000.0
}

/// The guest clock's zero on the host's clock. Each stamped line reached the log at or after
/// zero + its stamp (lines printed before the console was up arrive together, later), so the
/// smallest difference of arrival and stamp is the closest bound. An estimate: a guest clock
/// that runs slow (jiffies, when TCG's vCPUs' TSCs disagree) puts it late.
fn kernel_start(clock: &Clock, console_log: &str) -> Option<f64> {
    console::stamped(console_log)
        .into_iter()
        .filter_map(|(end, usec, _)| Some(arrival(clock, end)? - usec as f64 / 1e6))
        .reduce(f64::min)
}

/// When the console log first held `end` bytes.
fn arrival(clock: &Clock, end: usize) -> Option<f64> {
    Some(clock.console.iter().find(|(_, len)| *len >= end as u64)?.0)
}

/// Where the kernel's `Run … as init process` line ends. It reaches the console as it is
/// printed (the console is up by then), so its arrival is init's start on the host's clock.
fn init_line(console_log: &str) -> Option<usize> {
    console::stamped(console_log)
        .into_iter()
        .find(|(_, _, msg)| msg.starts_with("Run ") && msg.trim_end().ends_with(" as init process"))
        .map(|(end, _, _)| end)
}

/// The agent's steps, on agent.jsonl's clock.
#[derive(Debug, Default, PartialEq)]
struct AgentSteps {
    answered: Option<f64>,
    command_start: Option<f64>,
    command_end: Option<f64>,
}

/// From an agent transcript: the first answer to a `guest-sync`, the answer to the command's
/// `guest-exec` (the one that runs the wrapper, `vm::command`), and the status that saw it
/// exit.
fn agent_steps(agent_log: &str) -> AgentSteps {
    let mut steps = AgentSteps::default();
    let mut sync_id = None;
    let mut asked_exec = false;
    let mut pid = None;
    let mut asked_status = false;
    for line in agent_log.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let t = v["t"].as_f64();
        if let Some(sent) = v.get("send") {
            let execute = sent["execute"].as_str().unwrap_or("");
            let args = &sent["arguments"];
            match execute {
                "guest-sync" => sync_id = args["id"].as_u64(),
                "guest-exec" => {
                    asked_exec = pid.is_none()
                        && args["arg"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|x| x == super::command::WRAPPER_NAME))
                }
                "guest-exec-status" => asked_status = pid.is_some() && args["pid"].as_i64() == pid,
                _ => {}
            }
            continue;
        }
        let Some(ret) = v.get("recv").and_then(|r| r.get("return")) else {
            continue;
        };
        if steps.answered.is_none() && sync_id.is_some() && ret.as_u64() == sync_id {
            steps.answered = t;
        } else if asked_exec && ret.get("pid").is_some() {
            pid = ret["pid"].as_i64();
            steps.command_start = t;
            asked_exec = false;
        } else if asked_status && steps.command_end.is_none() && ret["exited"] == true {
            steps.command_end = t;
        }
    }
    steps
}

/// Records, in a thread, when the console log grows (every 10 ms), for [`Clock::console`].
pub struct ConsoleWatch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(f64, u64)>>>,
}

/// How often the console log's length is looked at.
const CONSOLE_POLL: Duration = Duration::from_millis(10);
/// The most growth readings kept (a boot prints a few hundred lines).
const MAX_READINGS: usize = 20_000;

impl ConsoleWatch {
    pub fn start(log: PathBuf, start: Instant) -> ConsoleWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut last = 0;
            while !stopping.load(Ordering::Relaxed) && seen.len() < MAX_READINGS {
                let len = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
                if len > last {
                    seen.push((round_ms(start.elapsed().as_secs_f64()), len));
                    last = len;
                }
                std::thread::sleep(CONSOLE_POLL);
            }
            seen
        });
        ConsoleWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops watching; the readings so far.
    pub fn stop(mut self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let t = self.thread.take().expect("stopped once");
        t.join().unwrap_or_default()
    }
}

impl Drop for ConsoleWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Seconds from `start` to `at`, for [`Clock`].
pub fn secs_since(start: Instant, at: Option<Instant>) -> Option<f64> {
    Some(round_ms(at?.checked_duration_since(start)?.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(path: &str) -> String {
        crate::test_data::recorded("vm/test_data", path)
    }

    fn run(dir: &str) -> Timeline {
        let clock: Clock =
            serde_json::from_str(&recorded(&format!("timeline/{dir}/clock.json"))).unwrap();
        assemble(
            &clock,
            &recorded(&format!("timeline/{dir}/console.log")),
            &recorded(&format!("timeline/{dir}/qmp.jsonl")),
            &recorded(&format!("timeline/{dir}/agent.jsonl")),
        )
    }

    #[test]
    fn a_fast_check_goes_through_every_step_in_order() {
        let t = run("fast_check");
        let steps: Vec<f64> = t
            .steps()
            .iter()
            .map(|(n, s)| s.unwrap_or_else(|| panic!("{n}")))
            .collect();
        assert!(steps.windows(2).all(|w| w[0] <= w[1]), "{:#?}", t.lines());
    }

    #[test]
    fn the_kernel_starts_before_its_first_line_arrives() {
        let clock = Clock {
            console: vec![(3.0, 30), (3.5, 60)],
            ..Clock::default()
        };
        // Both lines arrive at once when the console comes up (replayed), the third when printed.
        let log = "[    0.000000] Linux version\n[    0.900000] console up\n[    1.200000] Run /x as init process\n";
        let clock = Clock {
            console: vec![(2.5, 54), (2.8, log.len() as u64)],
            ..clock
        };
        let k = kernel_start(&clock, log).unwrap();
        assert!((k - 1.6).abs() < 1e-9, "{k}");
        assert_eq!(init_line(log), Some(log.len()));
        assert_eq!(arrival(&clock, log.len()), Some(2.8));
        // No readings: no kernel start.
        assert_eq!(kernel_start(&Clock::default(), log), None);
    }

    #[test]
    fn medians_step_by_step() {
        let a = Timeline {
            init_start: Some(1.0),
            qemu_exit: Some(3.0),
            ..Timeline::default()
        };
        let b = Timeline {
            init_start: Some(2.0),
            ..Timeline::default()
        };
        let m = median(&[a.clone(), b, a]);
        assert_eq!(m.init_start, Some(1.0));
        assert_eq!(m.qemu_exit, Some(3.0), "the runs that reached it");
        assert_eq!(m.kernel_start, None);
        assert_eq!(median(&[]), Timeline::default());
    }

    #[test]
    fn agent_steps_follow_the_commands_exec() {
        let log = recorded("timeline/fast_check/agent.jsonl");
        let s = agent_steps(&log);
        assert!(
            s.answered.is_some() && s.command_start.is_some() && s.command_end.is_some(),
            "{s:?}"
        );
        assert!(s.answered < s.command_start && s.command_start < s.command_end);
        // A transcript that never got an answer.
        let s = agent_steps(&recorded("qga/exec_status_unanswered.jsonl"));
        assert_eq!(s.command_end, None);
        assert_eq!(agent_steps("not json\n"), AgentSteps::default());
    }
}
