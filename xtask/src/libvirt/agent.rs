//! The guest agent through libvirt's API, as a byte stream: each JSON line written becomes one
//! `virDomainQemuAgentCommand` call (on a worker thread, so reads keep their deadlines) and
//! its answer is queued for the next reads. The QEMU backend's agent client, transcript and
//! verdicts then work unchanged over libvirt.

use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// How long libvirt waits for one answer. Longer than any deadline of the agent client (it
/// decides when to give up); libvirt itself fails at once while the agent is not connected.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why one API call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No agent to talk to (not connected yet, unresponsive, out of sync) or no domain: like
    /// a closed connection, the client retries on a fresh one or gives up.
    Unreachable(String),
    /// The agent answered with an error (libvirt keeps only its text).
    Agent(String),
}

/// One agent command through libvirt; a trait so the stream is tested without libvirt.
pub trait CommandApi: Send + 'static {
    fn agent_command(&self, json: &str, timeout: Duration) -> Result<String, CallError>;
}

/// What the stream makes of one call's outcome: the bytes the agent would have sent, or a
/// broken connection.
pub fn answer(outcome: Result<String, CallError>) -> io::Result<Vec<u8>> {
    let mut line = match outcome {
        Ok(text) => text.trim().as_bytes().to_vec(),
        // The agent's error in the agent's own shape, so the client reports it as one.
        Err(CallError::Agent(desc)) => json!({"error": {"class": "GenericError", "desc": desc}})
            .to_string()
            .into_bytes(),
        Err(CallError::Unreachable(why)) => {
            return Err(io::Error::new(io::ErrorKind::NotConnected, why))
        }
    };
    line.push(b'\n');
    Ok(line)
}

/// The request in a written line: the 0xFF resync byte the client sends first means nothing
/// to libvirt (it syncs on its own) and is dropped, as are blank lines.
pub fn request_of(line: &[u8]) -> Option<String> {
    let text: Vec<u8> = line.iter().copied().filter(|&b| b != 0xff).collect();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    (!text.is_empty()).then_some(text)
}

/// The seconds libvirt is given for one call: `guest-shutdown` never answers when it works,
/// so it gets only a moment (the caller watches the domain go away instead).
pub fn timeout_secs(request: &str, timeout: Duration) -> i32 {
    let shutdown = serde_json::from_str::<Value>(request)
        .ok()
        .and_then(|v| {
            v.get("execute")
                .and_then(Value::as_str)
                .map(|s| s == "guest-shutdown")
        })
        .unwrap_or(false);
    if shutdown {
        1
    } else {
        timeout.as_secs().clamp(1, i32::MAX as u64) as i32
    }
}

/// One "connection" to the agent: its own worker thread that makes the calls in order.
pub struct ApiStream {
    requests: Option<Sender<String>>,
    answers: Receiver<io::Result<Vec<u8>>>,
    written: Vec<u8>,
    ready: Vec<u8>,
    read_timeout: Option<Duration>,
}

impl ApiStream {
    pub fn open<A: CommandApi>(api: A) -> ApiStream {
        let (req_tx, req_rx) = mpsc::channel::<String>();
        let (ans_tx, ans_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for req in req_rx {
                let a = answer(api.agent_command(&req, CALL_TIMEOUT));
                let broken = a.is_err();
                // The reader is gone (the client moved on): nothing to deliver to.
                if ans_tx.send(a).is_err() || broken {
                    break;
                }
            }
        });
        ApiStream {
            requests: Some(req_tx),
            answers: ans_rx,
            written: Vec::new(),
            ready: Vec::new(),
            read_timeout: None,
        }
    }

    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout = timeout;
        Ok(())
    }
}

impl Write for ApiStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        while let Some(i) = self.written.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.written.drain(..=i).collect();
            if let Some(req) = request_of(&line) {
                let sent = self.requests.as_ref().map(|r| r.send(req).is_ok());
                if sent != Some(true) {
                    self.requests = None;
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the guest agent connection through libvirt is closed",
                    ));
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for ApiStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.ready.is_empty() {
            let got = match self.read_timeout {
                Some(t) => self.answers.recv_timeout(t),
                None => self
                    .answers
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(Ok(bytes)) => self.ready = bytes,
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => return Err(io::ErrorKind::WouldBlock.into()),
                // The worker ended after a broken call: end of stream.
                Err(RecvTimeoutError::Disconnected) => return Ok(0),
            }
        }
        let n = out.len().min(self.ready.len());
        out[..n].copy_from_slice(&self.ready[..n]);
        self.ready.drain(..n);
        Ok(n)
    }
}

/// The real API: a handle on the domain (libvirt handles are thread-safe).
pub struct DomainApi(pub virt::domain::Domain);

impl CommandApi for DomainApi {
    fn agent_command(&self, json: &str, timeout: Duration) -> Result<String, CallError> {
        self.0
            .qemu_agent_command(json, timeout_secs(json, timeout), 0)
            .map_err(classify)
    }
}

/// Sorts a libvirt error: is the agent (or the domain) out of reach, or did the agent say no?
fn classify(e: virt::error::Error) -> CallError {
    use virt::error::ErrorNumber as N;
    let msg = e.message().to_string();
    match e.code() {
        // libvirt wraps an error the agent returned as an internal error with its text.
        N::InternalError if msg.contains("unable to execute QEMU agent command") => {
            CallError::Agent(msg)
        }
        _ => CallError::Unreachable(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// An API that answers from a script and records the requests and timeouts it got.
    #[derive(Clone, Default)]
    struct Scripted {
        answers: Arc<Mutex<Vec<Result<String, CallError>>>>,
        got: Arc<Mutex<Vec<String>>>,
    }

    impl CommandApi for Scripted {
        fn agent_command(&self, json: &str, _: Duration) -> Result<String, CallError> {
            self.got.lock().unwrap().push(json.to_string());
            self.answers.lock().unwrap().remove(0)
        }
    }

    fn scripted(answers: Vec<Result<String, CallError>>) -> Scripted {
        Scripted {
            answers: Arc::new(Mutex::new(answers)),
            ..Scripted::default()
        }
    }

    fn read_line(s: &mut ApiStream) -> io::Result<String> {
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[test]
    fn a_line_is_one_call_and_its_answer() {
        let api = scripted(vec![Ok(r#"{"return":42}"#.into())]);
        let mut s = ApiStream::open(api.clone());
        // As the client syncs: the resync byte, then the request in two writes.
        s.write_all(&[0xff]).unwrap();
        s.write_all(br#"{"execute":"guest-sync","#).unwrap();
        s.write_all(b"\"arguments\":{\"id\":42}}\n").unwrap();
        assert_eq!(read_line(&mut s).unwrap(), "{\"return\":42}\n");
        assert_eq!(
            *api.got.lock().unwrap(),
            [r#"{"execute":"guest-sync","arguments":{"id":42}}"#]
        );
    }

    #[test]
    fn agent_errors_keep_the_agent_shape() {
        let api = scripted(vec![Err(CallError::Agent(
            "internal error: unable to execute QEMU agent command 'guest-exec': No such file"
                .into(),
        ))]);
        let mut s = ApiStream::open(api);
        s.write_all(b"{\"execute\":\"guest-exec\"}\n").unwrap();
        let v: Value = serde_json::from_str(&read_line(&mut s).unwrap()).unwrap();
        assert_eq!(v["error"]["class"], "GenericError");
        assert!(v["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("No such file"));
    }

    #[test]
    fn an_unreachable_agent_breaks_the_connection() {
        let api = scripted(vec![Err(CallError::Unreachable(
            "Guest agent is not responding: QEMU guest agent is not connected".into(),
        ))]);
        let mut s = ApiStream::open(api);
        s.write_all(b"{\"execute\":\"guest-sync\"}\n").unwrap();
        let e = read_line(&mut s).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotConnected);
        // The worker is gone: end of stream, and writing fails.
        assert_eq!(read_line(&mut s).unwrap(), "");
        std::thread::sleep(Duration::from_millis(50));
        assert!(s.write_all(b"{\"execute\":\"guest-ping\"}\n").is_err());
    }

    #[test]
    fn no_answer_yet_is_would_block() {
        struct Slow;
        impl CommandApi for Slow {
            fn agent_command(&self, _: &str, _: Duration) -> Result<String, CallError> {
                std::thread::sleep(Duration::from_millis(300));
                Ok("{\"return\":{}}".into())
            }
        }
        let mut s = ApiStream::open(Slow);
        s.write_all(b"{\"execute\":\"guest-ping\"}\n").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(
            s.read(&mut buf).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(read_line(&mut s).unwrap(), "{\"return\":{}}\n");
    }

    #[test]
    fn shutdown_waits_only_a_moment() {
        let t = Duration::from_secs(30);
        assert_eq!(
            timeout_secs(
                r#"{"execute":"guest-shutdown","arguments":{"mode":"powerdown"}}"#,
                t
            ),
            1
        );
        assert_eq!(timeout_secs(r#"{"execute":"guest-exec-status"}"#, t), 30);
        assert_eq!(request_of(b"\xff\n"), None);
        assert_eq!(request_of(b"\xff{}\n").as_deref(), Some("{}"));
    }
}
