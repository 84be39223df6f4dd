//! The one progress display for what takes more than a second: on a terminal, a spinner with
//! the elapsed time and the latest message; without one (CI, a pipe), a line when it starts and
//! then one about every 30 s with the time so far and the latest message, so that a 9-minute
//! build never looks hung in a log.

use crate::units::human_duration;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a display without a terminal says that the work goes on.
pub const PLAIN_EVERY: Duration = Duration::from_secs(30);

/// One thing the user waits for. Clones show on the same display; it is cleared when the last
/// clone is dropped or [`Progress::finish`] is called.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    start: Instant,
    /// The latest message, for the plain lines.
    message: Arc<Mutex<String>>,
    /// Held while the plain lines' ticker should run; dropping it stops the ticker.
    ticker: Mutex<Option<Sender<()>>>,
}

impl Progress {
    /// Starts showing `name`: a spinner when stderr is a terminal, plain lines otherwise.
    pub fn start(name: &str) -> Progress {
        Self::start_as(name, std::io::stderr().is_terminal(), PLAIN_EVERY)
    }

    fn start_as(name: &str, terminal: bool, every: Duration) -> Progress {
        let message = Arc::new(Mutex::new(String::new()));
        let start = Instant::now();
        let (bar, ticker) = if terminal {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {wide_msg}")
                    .expect("a valid template"),
            );
            bar.set_prefix(name.to_string());
            bar.enable_steady_tick(Duration::from_millis(200));
            (bar, None)
        } else {
            eprintln!("{name}...");
            let (tx, rx) = mpsc::channel::<()>();
            let (name, message) = (name.to_string(), Arc::clone(&message));
            // Nothing is ever sent: the ticker ends when the sender is dropped.
            std::thread::spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = rx.recv_timeout(every) {
                    let msg = message.lock().map(|m| m.clone()).unwrap_or_default();
                    crate::exit::say(&plain_line(&name, start.elapsed(), &msg));
                }
            });
            (ProgressBar::hidden(), Some(tx))
        };
        Progress {
            bar,
            shared: Arc::new(Shared {
                name: name.to_string(),
                start,
                message,
                ticker: Mutex::new(ticker),
            }),
        }
    }

    /// What it is doing now (a kbuild step, mmdebstrap's stage), cut to one short line.
    pub fn set_message(&self, msg: &str) {
        let msg: String = msg.trim().chars().take(100).collect();
        if let Ok(mut m) = self.shared.message.lock() {
            m.clone_from(&msg);
        }
        self.bar.set_message(msg);
    }

    /// Clears the display without a word (on an error, so that the error stands alone).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
        if let Ok(mut t) = self.shared.ticker.lock() {
            t.take();
        }
    }

    /// Clears the display and says how long it took.
    pub fn done(&self) {
        self.finish();
        eprintln!(
            "{}: done in {:.1}s",
            self.shared.name,
            self.shared.start.elapsed().as_secs_f64()
        );
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last clone is gone: the ticker stops with its sender; the spinner is cleared by
        // indicatif when its last handle drops.
        if let Ok(mut t) = self.ticker.lock() {
            t.take();
        }
    }
}

/// The line a display without a terminal prints every [`PLAIN_EVERY`].
fn plain_line(name: &str, elapsed: Duration, msg: &str) -> String {
    let t = human_duration(Duration::from_secs(elapsed.as_secs()));
    if msg.is_empty() {
        format!("{name}: still running after {t}")
    } else {
        format!("{name}: still running after {t} ({msg})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_say_the_time_and_the_latest_message() {
        assert_eq!(
            plain_line("build", Duration::from_millis(90_400), ""),
            "build: still running after 1m30s"
        );
        assert_eq!(
            plain_line("build", Duration::from_secs(30), "CC kernel/fork.o"),
            "build: still running after 30.0s (CC kernel/fork.o)"
        );
    }

    #[test]
    fn the_plain_ticker_stops_when_finished_or_dropped() {
        let p = Progress::start_as("t", false, Duration::from_millis(10));
        p.set_message(&"x".repeat(300));
        assert_eq!(p.shared.message.lock().unwrap().len(), 100);
        let q = p.clone();
        drop(p);
        assert!(
            q.shared.ticker.lock().unwrap().is_some(),
            "a clone keeps it"
        );
        q.finish();
        assert!(q.shared.ticker.lock().unwrap().is_none());
    }
}
