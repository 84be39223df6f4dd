//! The QEMU guest agent protocol: messages (pure), and a client over any byte stream in which
//! every call has a deadline, gives up early when the VM is gone, and is recorded as a
//! transcript (`agent.jsonl`) that tests replay.

use super::b64;
use super::verdict::CommandEnd;
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

/// A byte stream to the agent: a Unix socket for the QEMU backend, whatever a libvirt
/// backend opens for its channel.
pub trait Stream: Read + Write + Send {
    /// Bounds how long one `read` may block; `Err` of kind WouldBlock/TimedOut then.
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
    /// Bounds how long one `write` may block, as for reads; a stream whose writes never
    /// block keeps the default.
    fn set_write_timeout(&mut self, _timeout: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
}

impl Stream for std::os::unix::net::UnixStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_write_timeout(self, timeout)
    }
}

/// Opens a fresh connection to the agent (each guest-sync retry gets a new one).
pub trait Connect {
    fn connect(&mut self) -> io::Result<Box<dyn Stream>>;
}

/// Connects to a Unix socket, QEMU's `-chardev socket,server=on` end of the agent port.
pub struct UnixConnect(pub std::path::PathBuf);

impl Connect for UnixConnect {
    fn connect(&mut self) -> io::Result<Box<dyn Stream>> {
        Ok(Box::new(std::os::unix::net::UnixStream::connect(&self.0)?))
    }
}

/// Why an agent call stopped without an answer; code branches on these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The call's deadline passed.
    Deadline,
    /// The VM exited (the watch said so).
    VmExited,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Deadline => f.write_str("the guest agent did not answer in time"),
            Stop::VmExited => f.write_str("the VM exited"),
        }
    }
}
impl std::error::Error for Stop {}

/// Whether an error is a [`Stop`], and which.
pub fn stop_of(e: &anyhow::Error) -> Option<Stop> {
    e.chain().find_map(|c| c.downcast_ref::<Stop>().cloned())
}

/// Called while waiting: fails when waiting is pointless (VM gone: [`Stop::VmExited`]) or
/// must end (Ctrl-C: `signals::Interrupted`).
pub type Watch<'a> = &'a mut dyn FnMut() -> Result<()>;

// ---- Messages: pure ---------------------------------------------------------------------

/// `guest-sync` with an id; the answer echoes it, which tells this connection's answers
/// from stale ones.
pub fn sync_request(id: u64) -> Value {
    json!({"execute": "guest-sync", "arguments": {"id": id}})
}

/// The environment commands run with, the same in both init modes.
pub const EXEC_ENV: &[&str] = &[
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/root",
    "LANG=C.UTF-8",
    "TERM=dumb",
];

/// `guest-exec` of argv. `capture`: the agent keeps the output, but it reports the exit only
/// once the output pipes close, which children left in the background may hold open for ever
/// (the check's command therefore writes to files instead, see `vm::command`).
pub fn exec_request(argv: &[String], capture: bool) -> Value {
    json!({"execute": "guest-exec", "arguments": {
        "path": argv[0],
        "arg": argv[1..],
        "env": EXEC_ENV,
        "capture-output": capture,
    }})
}

pub fn exec_status_request(pid: i64) -> Value {
    json!({"execute": "guest-exec-status", "arguments": {"pid": pid}})
}

/// Power off; the agent does not answer when it works.
pub fn shutdown_request() -> Value {
    json!({"execute": "guest-shutdown", "arguments": {"mode": "powerdown"}})
}

pub fn file_open_request(path: &str, mode: &str) -> Value {
    json!({"execute": "guest-file-open", "arguments": {"path": path, "mode": mode}})
}

pub fn file_write_request(handle: i64, data: &[u8]) -> Value {
    json!({"execute": "guest-file-write", "arguments": {"handle": handle, "buf-b64": b64::encode(data)}})
}

pub fn file_read_request(handle: i64, count: usize) -> Value {
    json!({"execute": "guest-file-read", "arguments": {"handle": handle, "count": count}})
}

pub fn file_close_request(handle: i64) -> Value {
    json!({"execute": "guest-file-close", "arguments": {"handle": handle}})
}

/// One line from the agent as JSON. A leading 0xFF (the delimiter of guest-sync-delimited,
/// or the reset byte echoed) is dropped.
pub fn parse_line(line: &[u8]) -> Result<Value> {
    let start = line.iter().position(|&b| b != 0xff).unwrap_or(line.len());
    // Lossy: an error message may quote the 0xFF we sent.
    let text = String::from_utf8_lossy(&line[start..]);
    serde_json::from_str(text.trim()).with_context(|| format!("agent sent non-JSON: {text:?}"))
}

/// The agent answered a request with an error: it works, and said no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub class: String,
    pub desc: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "guest agent error {}: {}", self.class, self.desc)
    }
}
impl std::error::Error for Refused {}

/// Whether an error is the agent's refusal (not a broken channel or a deadline).
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<Refused>())
}

/// The `return` of a response, or its `error` as a [`Refused`].
pub fn result_of(resp: &Value) -> Result<&Value> {
    if let Some(r) = resp.get("return") {
        return Ok(r);
    }
    if let Some(e) = resp.get("error") {
        let text = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        return Err(Refused {
            class: text("class"),
            desc: text("desc"),
        }
        .into());
    }
    bail!("agent answer has neither return nor error: {resp}")
}

/// What `guest-exec-status` said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecStatus {
    pub exited: bool,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The agent keeps only the first 16 MiB of each stream.
    pub out_truncated: bool,
    pub err_truncated: bool,
}

impl ExecStatus {
    pub fn parse(ret: &Value) -> Result<ExecStatus> {
        let int = |k: &str| ret.get(k).and_then(Value::as_i64).map(|v| v as i32);
        let data = |k: &str| -> Result<Vec<u8>> {
            match ret.get(k).and_then(Value::as_str) {
                Some(s) => b64::decode(s).with_context(|| format!("{k} is not base64")),
                None => Ok(vec![]),
            }
        };
        let flag = |k: &str| ret.get(k).and_then(Value::as_bool).unwrap_or(false);
        Ok(ExecStatus {
            exited: ret
                .get("exited")
                .and_then(Value::as_bool)
                .ok_or_else(|| anyhow!("guest-exec-status without `exited`: {ret}"))?,
            exit_code: int("exitcode"),
            signal: int("signal"),
            stdout: data("out-data")?,
            stderr: data("err-data")?,
            out_truncated: flag("out-truncated"),
            err_truncated: flag("err-truncated"),
        })
    }

    /// How the command ended, once it has: a signal wins over an exit code.
    pub fn end(&self) -> Option<CommandEnd> {
        if !self.exited {
            return None;
        }
        Some(match (self.signal, self.exit_code) {
            (Some(signal), _) => CommandEnd::Signaled { signal },
            (None, Some(code)) => CommandEnd::Exited { code },
            (None, None) => CommandEnd::AgentFailed {
                why: "the agent reported neither exit code nor signal".into(),
            },
        })
    }
}

/// The delay before the n-th `guest-exec-status` poll: 10 ms for the first four, then
/// doubling every four polls, to at most half a second. A short command (a `true` is about
/// 60 ms under TCG) is seen to end within 10 to 20 ms of it, where doubling at every poll
/// (10, 20, 40, 80 ms) could see it 80 ms late; a long one costs a poll every 0.5 s.
pub fn poll_delay(n: u32) -> Duration {
    Duration::from_millis((10u64 << (n / 4).min(6)).min(500))
}

// ---- The client: thin -------------------------------------------------------------------

/// How long one guest-sync attempt waits before it reconnects.
const SYNC_ATTEMPT: Duration = Duration::from_millis(1000);
/// How long reads block at most, so that the watch runs often.
const READ_SLICE: Duration = Duration::from_millis(100);
/// Bytes per guest-file-read: few round trips, and small enough for libvirt's messages
/// (base64 makes it 4/3 bigger).
const READ_CHUNK: usize = 1 << 20;
/// How long past the command's deadline a status answer already asked for is awaited: a
/// command that ended just in time is judged by its end.
pub const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// A connected, synced agent.
pub struct Agent {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    transcript: Option<Box<dyn Write + Send>>,
    start: Instant,
}

impl Agent {
    /// Connects and syncs, with a fresh connection and a fresh random id per attempt, until
    /// the agent answers or `deadline` passes ([`Stop::Deadline`]).
    pub fn connect(
        conn: &mut dyn Connect,
        deadline: Instant,
        watch: Watch,
        transcript: Option<Box<dyn Write + Send>>,
    ) -> Result<Agent> {
        let mut transcript = transcript;
        let start = Instant::now();
        loop {
            watch()?;
            if Instant::now() >= deadline {
                return Err(Stop::Deadline.into());
            }
            let stream = match conn.connect() {
                Ok(s) => s,
                Err(_) => {
                    crate::signals::sleep(Duration::from_millis(50))?;
                    continue;
                }
            };
            let mut agent = Agent {
                stream,
                buf: Vec::new(),
                transcript: transcript.take(),
                start,
            };
            let attempt = deadline.min(Instant::now() + SYNC_ATTEMPT);
            match agent.sync(attempt, watch) {
                Ok(()) => return Ok(agent),
                Err(e) if stop_of(&e) == Some(Stop::Deadline) => {}
                Err(e) if stop_of(&e).is_some() || crate::signals::is_interrupted(&e) => {
                    return Err(e)
                }
                // A connection the VM closed, garbage: try again on a new connection.
                Err(_) => crate::signals::sleep(Duration::from_millis(50))?,
            }
            transcript = agent.transcript.take();
        }
    }

    fn sync(&mut self, deadline: Instant, watch: Watch) -> Result<()> {
        let id = random_id();
        // 0xFF first: the agent's parser drops any half message a previous client left.
        self.write_until(&[0xff], deadline)?;
        self.send(&sync_request(id), deadline)?;
        loop {
            let resp = self.recv(deadline, watch)?;
            if resp.get("return").and_then(Value::as_u64) == Some(id) {
                return Ok(());
            }
        }
    }

    /// Sends a request and waits for its answer until `deadline`.
    pub fn call(&mut self, req: &Value, deadline: Instant, watch: Watch) -> Result<Value> {
        self.send(req, deadline)?;
        let resp = self.recv(deadline, watch)?;
        let name = req["execute"].as_str().unwrap_or("?");
        Ok(result_of(&resp).with_context(|| name.to_string())?.clone())
    }

    /// Sends a request, written by `deadline` (alone: for guest-shutdown, which gets no
    /// answer when it works).
    pub fn send(&mut self, req: &Value, deadline: Instant) -> Result<()> {
        self.record("send", req);
        let mut line = serde_json::to_vec(req)?;
        line.push(b'\n');
        self.write_until(&line, deadline)
    }

    /// Writes all of `bytes` in slices, so that a guest that stopped reading (a full socket
    /// buffer during a script upload) costs at most the deadline and Ctrl-C ends the wait.
    fn write_until(&mut self, mut bytes: &[u8], deadline: Instant) -> Result<()> {
        while !bytes.is_empty() {
            crate::signals::check()?;
            let now = Instant::now();
            if now >= deadline {
                return Err(Stop::Deadline.into());
            }
            self.stream
                .set_write_timeout(Some((deadline - now).min(READ_SLICE)))?;
            match self.stream.write(bytes) {
                Ok(0) => bail!("the guest agent connection closed"),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if slice_ended(&e) => {}
                Err(e) => return Err(e).context("writing to the guest agent"),
            }
        }
        self.stream.flush().context("writing to the guest agent")
    }

    /// Starts argv, its output captured or not ([`exec_request`]); returns the guest pid.
    pub fn exec(
        &mut self,
        argv: &[String],
        capture: bool,
        deadline: Instant,
        watch: Watch,
    ) -> Result<i64> {
        let ret = self.call(&exec_request(argv, capture), deadline, watch)?;
        ret.get("pid")
            .and_then(Value::as_i64)
            .ok_or_else(|| anyhow!("guest-exec answer without pid: {ret}"))
    }

    /// Polls `guest-exec-status` with backoff until the command exits; [`Stop::Deadline`]
    /// when it is still running at `deadline`, the one deadline of the whole wait (an answer
    /// asked for before it gets [`ANSWER_GRACE`]).
    pub fn wait_exec(&mut self, pid: i64, deadline: Instant, watch: Watch) -> Result<ExecStatus> {
        for n in 0.. {
            let st = ExecStatus::parse(&self.call(
                &exec_status_request(pid),
                deadline + ANSWER_GRACE,
                watch,
            )?)?;
            if st.exited {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(Stop::Deadline.into());
            }
            watch()?;
            std::thread::sleep(
                poll_delay(n).min(deadline.saturating_duration_since(Instant::now())),
            );
        }
        unreachable!()
    }

    /// Writes a file in the guest.
    pub fn write_file(
        &mut self,
        path: &str,
        data: &[u8],
        deadline: Instant,
        watch: Watch,
    ) -> Result<()> {
        let handle = self
            .call(&file_open_request(path, "w"), deadline, watch)?
            .as_i64()
            .ok_or_else(|| anyhow!("guest-file-open gave no handle"))?;
        for chunk in data.chunks(48 * 1024) {
            self.call(&file_write_request(handle, chunk), deadline, watch)?;
        }
        self.call(&file_close_request(handle), deadline, watch)?;
        Ok(())
    }

    /// Reads a file in the guest, at most `max` bytes of it; says whether there was more.
    pub fn read_file(
        &mut self,
        path: &str,
        max: usize,
        deadline: Instant,
        watch: Watch,
    ) -> Result<(Vec<u8>, bool)> {
        let handle = self
            .call(&file_open_request(path, "r"), deadline, watch)?
            .as_i64()
            .ok_or_else(|| anyhow!("guest-file-open gave no handle"))?;
        let mut data = Vec::new();
        let more = loop {
            let want = READ_CHUNK.min(max + 1 - data.len());
            let ret = self.call(&file_read_request(handle, want), deadline, watch)?;
            if let Some(b) = ret.get("buf-b64").and_then(Value::as_str) {
                data.extend(b64::decode(b).context("guest-file-read: buf-b64 is not base64")?);
            }
            if data.len() > max {
                data.truncate(max);
                break true;
            }
            if ret.get("eof").and_then(Value::as_bool) != Some(false)
                || ret.get("count").and_then(Value::as_u64) == Some(0)
            {
                break false;
            }
        };
        self.call(&file_close_request(handle), deadline, watch)?;
        Ok((data, more))
    }

    /// Reads one answer (a line of JSON), waiting at most until `deadline`.
    fn recv(&mut self, deadline: Instant, watch: Watch) -> Result<Value> {
        loop {
            while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                if line.iter().all(|b| b.is_ascii_whitespace() || *b == 0xff) {
                    continue;
                }
                let v = parse_line(&line)?;
                self.record("recv", &v);
                return Ok(v);
            }
            watch()?;
            let now = Instant::now();
            if now >= deadline {
                return Err(Stop::Deadline.into());
            }
            self.stream
                .set_read_timeout(Some((deadline - now).min(READ_SLICE)))?;
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => bail!("the guest agent connection closed"),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if slice_ended(&e) => {}
                Err(e) => return Err(e).context("reading from the guest agent"),
            }
        }
    }

    fn record(&mut self, dir: &str, msg: &Value) {
        if let Some(t) = self.transcript.as_mut() {
            let line = json!({"t": (self.start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0, dir: msg});
            let _ = writeln!(t, "{line}");
        }
    }
}

/// A random id for guest-sync, from the kernel's random pool.
/// Whether a read or write only ran out its time slice (or met a signal): try again.
fn slice_ended(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

fn random_id() -> u64 {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        b = (t.as_nanos() as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    // JSON numbers are safe as integers below 2^53.
    u64::from_le_bytes(b) & ((1 << 53) - 1)
}

/// Replaying recorded agent transcripts, for the tests of everything that talks to the agent.
#[cfg(test)]
pub(crate) mod replay {
    use super::*;
    use std::collections::VecDeque;

    /// A stream that answers like the agent of a recorded transcript: each request written
    /// gets the next recorded answer. guest-sync answers echo our id (the recorded one was
    /// random), after the recorded complaints about the 0xFF reset byte.
    pub struct Replay {
        /// What the agent said before its guest-sync answer (the reset byte's error).
        before_sync: Vec<Vec<u8>>,
        answers: VecDeque<Vec<u8>>,
        sent: Vec<String>,
        ready: Vec<u8>,
    }

    impl Replay {
        pub fn from_transcript(name: &str) -> (Replay, Vec<Value>) {
            let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("src/vm/test_data/qga")
                .join(name);
            let text =
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let line = |v: &Value| {
                let mut b = serde_json::to_vec(v).unwrap();
                b.push(b'\n');
                b
            };
            let (mut before_sync, mut answers) = (vec![], VecDeque::new());
            let mut synced = false;
            for l in &lines {
                if let Some(s) = l.get("send") {
                    synced |= s["execute"] != "guest-sync";
                }
                match (l.get("recv"), synced) {
                    (Some(r), false) if r.get("error").is_some() => before_sync.push(line(r)),
                    (Some(_), false) => {}
                    (Some(r), true) => answers.push_back(line(r)),
                    (None, _) => {}
                }
            }
            let sends = lines
                .iter()
                .filter_map(|l| l.get("send").cloned())
                .collect();
            (
                Replay {
                    before_sync,
                    answers,
                    sent: vec![],
                    ready: vec![],
                },
                sends,
            )
        }
    }

    impl Read for Replay {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.ready.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = out.len().min(self.ready.len());
            out[..n].copy_from_slice(&self.ready[..n]);
            self.ready.drain(..n);
            Ok(n)
        }
    }

    impl Write for Replay {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if b.ends_with(b"\n") {
                let v: Value = serde_json::from_slice(b).unwrap();
                let name = v["execute"].as_str().unwrap().to_string();
                match name.as_str() {
                    "guest-sync" => {
                        for l in self.before_sync.drain(..) {
                            self.ready.extend(l);
                        }
                        let echo = format!("{{\"return\": {}}}\n", v["arguments"]["id"]);
                        self.ready.extend(echo.into_bytes());
                    }
                    // No answer when it works.
                    "guest-shutdown" => {}
                    _ => {
                        // Where the transcript ends, the agent goes silent (a hung guest).
                        if let Some(a) = self.answers.pop_front() {
                            self.ready.extend(a);
                        }
                    }
                }
                self.sent.push(name);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Replay {
        fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
            Ok(())
        }
    }

    pub struct Once(pub Option<Replay>);
    impl Connect for Once {
        fn connect(&mut self) -> io::Result<Box<dyn Stream>> {
            self.0
                .take()
                .map(|r| Box::new(r) as Box<dyn Stream>)
                .ok_or(io::ErrorKind::ConnectionRefused.into())
        }
    }

    /// An agent connected to the replay of a recorded transcript.
    pub fn agent(name: &str) -> Agent {
        let (r, _) = Replay::from_transcript(name);
        let mut conn = Once(Some(r));
        let mut ok = || Ok(());
        Agent::connect(
            &mut conn,
            Instant::now() + Duration::from_secs(5),
            &mut ok,
            None,
        )
        .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::replay::{Once, Replay};
    use super::*;

    /// Runs the client's check sequence against a recorded transcript.
    fn replay(name: &str, argv: &[&str]) -> (Result<ExecStatus>, Vec<Value>) {
        let (r, sends) = Replay::from_transcript(name);
        let mut conn = Once(Some(r));
        let soon = Instant::now() + Duration::from_secs(5);
        let mut ok = || Ok(());
        let mut agent = Agent::connect(&mut conn, soon, &mut ok, None).unwrap();
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let st = agent
            .exec(&argv, true, soon, &mut ok)
            .and_then(|pid| agent.wait_exec(pid, soon, &mut ok));
        (st, sends)
    }

    #[test]
    fn true_exits_zero() {
        let (st, sends) = replay("exec_true.jsonl", &["true"]);
        let st = st.unwrap();
        assert_eq!(st.end(), Some(CommandEnd::Exited { code: 0 }));
        assert_eq!(sends[0]["execute"], "guest-sync");
    }

    #[test]
    fn output_is_decoded() {
        let (st, _) = replay(
            "exec_output.jsonl",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
        );
        let st = st.unwrap();
        assert_eq!(st.stdout, b"out\n");
        assert_eq!(st.stderr, b"err\n");
        assert_eq!(st.end(), Some(CommandEnd::Exited { code: 3 }));
    }

    #[test]
    fn killed_by_signal_is_not_an_exit() {
        let (st, _) = replay("exec_killed_by_signal.jsonl", &["sh", "-c", "kill -9 $$"]);
        assert_eq!(st.unwrap().end(), Some(CommandEnd::Signaled { signal: 9 }));
    }

    #[test]
    fn a_missing_program_is_an_agent_error() {
        let (st, _) = replay("exec_not_found.jsonl", &["/nonexistent"]);
        let e = format!("{:#}", st.unwrap_err());
        assert!(
            e.contains("guest-exec") && e.contains("guest agent error"),
            "{e}"
        );
    }

    #[test]
    fn messages() {
        let argv: Vec<String> = ["sh", "-c", "true"].iter().map(|s| s.to_string()).collect();
        let m = exec_request(&argv, false);
        assert_eq!(m["arguments"]["path"], "sh");
        assert_eq!(m["arguments"]["arg"], json!(["-c", "true"]));
        assert_eq!(m["arguments"]["capture-output"], false);
        assert_eq!(
            sync_request(7).to_string(),
            r#"{"arguments":{"id":7},"execute":"guest-sync"}"#
        );
        assert_eq!(file_write_request(3, b"hi")["arguments"]["buf-b64"], "aGk=");
    }

    #[test]
    fn parsing() {
        assert_eq!(
            parse_line(b"\xff{\"return\": 5}\n").unwrap(),
            json!({"return": 5})
        );
        let err = json!({"error": {"class": "GenericError", "desc": "Guest agent command failed"}});
        assert!(result_of(&err)
            .unwrap_err()
            .to_string()
            .contains("GenericError"));
        let st = ExecStatus::parse(&json!({"exited": false})).unwrap();
        assert_eq!(st.end(), None);
        let st = ExecStatus::parse(
            &json!({"exited": true, "exitcode": 0, "out-data": "eA==", "out-truncated": true}),
        )
        .unwrap();
        assert!(st.out_truncated);
        assert_eq!(st.stdout, b"x");
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(poll_delay(0), Duration::from_millis(10));
        assert_eq!(poll_delay(3), Duration::from_millis(10));
        assert_eq!(poll_delay(4), Duration::from_millis(20));
        assert!(poll_delay(9) > poll_delay(5));
        assert_eq!(poll_delay(40), Duration::from_millis(500));
        // The first 0.2 s of a command cost 10 polls (doubling at every poll: 4).
        let polls = (0..)
            .scan(Duration::ZERO, |t, n| {
                *t += poll_delay(n);
                Some(*t)
            })
            .take_while(|t| *t <= Duration::from_millis(200))
            .count();
        assert_eq!(polls, 10);
    }

    #[test]
    fn a_deadline_stops_the_wait() {
        // A stream that never answers.
        struct Mute;
        impl Read for Mute {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(5));
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        impl Write for Mute {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        impl Stream for Mute {
            fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
                Ok(())
            }
        }
        struct Always;
        impl Connect for Always {
            fn connect(&mut self) -> io::Result<Box<dyn Stream>> {
                Ok(Box::new(Mute))
            }
        }
        let mut ok = || Ok(());
        let e = Agent::connect(
            &mut Always,
            Instant::now() + Duration::from_millis(300),
            &mut ok,
            None,
        )
        .err()
        .unwrap();
        assert_eq!(stop_of(&e), Some(Stop::Deadline));
        // The watch short-circuits: the VM is gone.
        let mut gone = || Err(Stop::VmExited.into());
        let e = Agent::connect(
            &mut Always,
            Instant::now() + Duration::from_secs(60),
            &mut gone,
            None,
        )
        .err()
        .unwrap();
        assert_eq!(stop_of(&e), Some(Stop::VmExited));
    }
}
