//! QEMU's monitor protocol (QMP): its events parsed (pure), and a client that keeps one
//! connection for the whole run, records every line QEMU sends (`qmp.jsonl`), hands the
//! events on (the agent port opening, the guest powering off) and sends `quit`.

use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The QEMU device id of the guest agent's virtserialport: QEMU names the port in its
/// `VSERPORT_CHANGE` events by it (and sends none for a port without one).
pub const AGENT_PORT_ID: &str = "qga-port";

/// One asynchronous event QEMU sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `VSERPORT_CHANGE`, `SHUTDOWN`, `RESET`, …
    pub name: String,
    /// When QEMU emitted it, by the host's wall clock (QMP stamps every event).
    pub at: SystemTime,
    pub data: Value,
}

impl Event {
    /// Whether this is the guest opening the port with device id `id` (qemu-ga started).
    pub fn port_opened(&self, id: &str) -> bool {
        self.name == "VSERPORT_CHANGE"
            && self.data["id"] == id
            && self.data["open"].as_bool() == Some(true)
    }

    /// Whether this is the guest's own power-off or reset (QEMU stops then, as -no-reboot
    /// makes a reset end it too), not a quit asked for over QMP or a signal.
    pub fn guest_stopped(&self) -> bool {
        self.name == "SHUTDOWN" && self.data["guest"].as_bool() == Some(true)
    }
}

/// The event a line of QEMU's holds; `None` for a greeting, an answer, or garbage.
pub fn parse_event(line: &str) -> Option<Event> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let name = v.get("event")?.as_str()?.to_string();
    let ts = v.get("timestamp")?;
    let secs = ts.get("seconds")?.as_u64()?;
    let micros = ts.get("microseconds")?.as_u64()?;
    let at = UNIX_EPOCH.checked_add(Duration::from_secs(secs) + Duration::from_micros(micros))?;
    let data = v.get("data").cloned().unwrap_or(Value::Null);
    Some(Event { name, at, data })
}

/// Every event of a recorded transcript, in order.
pub fn events_of(transcript: &str) -> Vec<Event> {
    transcript.lines().filter_map(parse_event).collect()
}

/// A negotiated QMP connection; a thread reads what QEMU sends until it closes.
pub struct Qmp {
    writer: UnixStream,
    /// Ends when QEMU closes the socket (it exits); joined on drop, so that the transcript
    /// is whole once the VM is gone.
    reader: Option<std::thread::JoinHandle<()>>,
    events: Receiver<Event>,
    /// Every event received so far, in order.
    seen: Vec<Event>,
}

impl Qmp {
    /// Connects to QEMU's QMP socket (retrying until QEMU has made it, or `deadline`),
    /// leaves the greeting's capabilities mode and starts the reader, which writes every
    /// line to `transcript`.
    /// `watch` fails the wait (QEMU exited, Ctrl-C).
    pub fn connect(
        socket: &Path,
        transcript: &Path,
        deadline: Instant,
        watch: super::qga::Watch,
    ) -> Result<Qmp> {
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP at {}", socket.display()))
                }
                Err(_) => {
                    watch()?;
                    crate::signals::sleep(Duration::from_millis(5))?
                }
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        stream.set_read_timeout(Some(left.max(Duration::from_millis(100))))?;
        let mut log = std::fs::File::create(transcript)
            .with_context(|| format!("creating {}", transcript.display()))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line).context("QMP greeting")?;
        let _ = log.write_all(line.as_bytes());
        writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        line.clear();
        reader.read_line(&mut line).context("QMP capabilities")?;
        let _ = log.write_all(line.as_bytes());
        // From here the reader blocks until QEMU sends or closes.
        writer.set_read_timeout(None)?;
        let (tx, events) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                let _ = log.write_all(line.as_bytes());
                if let Some(e) = parse_event(&line) {
                    if tx.send(e).is_err() {
                        break;
                    }
                }
                line.clear();
            }
        });
        Ok(Qmp {
            writer,
            reader: Some(reader),
            events,
            seen: Vec::new(),
        })
    }

    /// Waits until an event satisfying `want` has arrived (true), `deadline` passes or
    /// `watch` fails; `watch` runs at least every 50 ms.
    pub fn wait_for(
        &mut self,
        want: &dyn Fn(&Event) -> bool,
        deadline: Instant,
        watch: super::qga::Watch,
    ) -> Result<bool> {
        self.seen.extend(self.events.try_iter());
        if self.seen.iter().any(want) {
            return Ok(true);
        }
        loop {
            watch()?;
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            match self
                .events
                .recv_timeout((deadline - now).min(Duration::from_millis(50)))
            {
                Ok(e) => {
                    let hit = want(&e);
                    self.seen.push(e);
                    if hit {
                        return Ok(true);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // QEMU closed the monitor: no event will come.
                Err(RecvTimeoutError::Disconnected) => return Ok(false),
            }
        }
    }

    /// Tells QEMU to quit (it does at once, without an answer worth waiting for).
    pub fn quit(&mut self) -> Result<()> {
        self.writer
            .write_all(b"{\"execute\":\"quit\"}\n")
            .context("sending QMP quit")
    }
}

impl Drop for Qmp {
    /// Call once QEMU is gone: the reader then ends at the socket's end.
    fn drop(&mut self) {
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_boots_events() {
        let ev = events_of(&crate::test_data::recorded(
            "vm/test_data",
            "timeline/fast_check/qmp.jsonl",
        ));
        let open = ev.iter().find(|e| e.port_opened(AGENT_PORT_ID)).unwrap();
        let off = ev.iter().find(|e| e.guest_stopped()).unwrap();
        assert!(open.at < off.at, "{open:?} {off:?}");
        // The greeting and the answers are no events.
        assert!(ev.iter().all(|e| !e.name.is_empty()));
        assert!(!ev.iter().any(|e| e.port_opened("other-port")));
    }

    #[test]
    fn odd_lines_are_no_events() {
        for line in [
            "",
            "garbage",
            r#"{"return": {}}"#,
            r#"{"event": "X"}"#,
            r#"{"event": "X", "timestamp": {"seconds": -1, "microseconds": 0}}"#,
            r#"{"event": 3, "timestamp": {"seconds": 1, "microseconds": 0}}"#,
        ] {
            assert_eq!(parse_event(line), None, "{line}");
        }
        let e = parse_event(
            r#"{"timestamp": {"seconds": 2, "microseconds": 500000}, "event": "RESET", "data": {"guest": true}}"#,
        )
        .unwrap();
        assert_eq!(e.at, UNIX_EPOCH + Duration::from_millis(2500));
        assert!(!e.guest_stopped(), "a reset event is not the stop");
    }
}
