//! Where every log line goes (the access log's and `tracing`'s): gathered in
//! memory and written by one thread in batches. A request appends its line
//! under a short lock and wakes nobody, except the first line after a write.
//! Written by hand because tracing-appender's non-blocking writer wakes its
//! thread for every line: a futex call on the request's path, and a
//! `write(2)` per line, for each proxied request (`strace -c`, issue 15).
//! Past `cap` bytes waiting, lines are dropped and counted, never waited for.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a batch gathers after its first line before it is written.
const GATHER: Duration = Duration::from_millis(10);
/// Lines waiting beyond this many bytes are dropped.
const CAP: usize = 4 << 20;

/// A handle to append lines; cheap to clone.
#[derive(Clone)]
pub struct Lines(Arc<Shared>);

struct Shared {
    pending: Mutex<Vec<u8>>,
    arrived: Condvar,
    dropped: AtomicU64,
    closing: AtomicBool,
    cap: usize,
    gather: Duration,
}

/// Writes what is still waiting, and stops the thread, when dropped.
pub struct Guard {
    lines: Lines,
    thread: Option<JoinHandle<()>>,
}

impl Lines {
    /// Starts the writing thread over `out`.
    pub fn start(out: impl Write + Send + 'static) -> (Lines, Guard) {
        Lines::with(out, CAP, GATHER)
    }

    fn with(mut out: impl Write + Send + 'static, cap: usize, gather: Duration) -> (Lines, Guard) {
        let lines = Lines(Arc::new(Shared {
            pending: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            dropped: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            cap,
            gather,
        }));
        let shared = lines.0.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || shared.write_until_closed(&mut out))
            .ok();
        (lines.clone(), Guard { lines, thread })
    }

    /// Appends `line`, or drops it when too much is waiting.
    pub fn push(&self, line: &[u8]) {
        let shared = &self.0;
        let mut pending = shared.lock();
        if pending.len() + line.len() > shared.cap {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let first = pending.is_empty();
        pending.extend_from_slice(line);
        drop(pending);
        if first {
            shared.arrived.notify_one();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_until_closed(&self, out: &mut impl Write) {
        let mut batch = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.is_empty() && !self.closing.load(Ordering::Acquire) {
                pending = self
                    .arrived
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            // Let the lines of a burst join this one's write (a close cuts it short).
            let until = Instant::now() + self.gather;
            while !self.closing.load(Ordering::Acquire) {
                let Some(left) = until.checked_duration_since(Instant::now()) else {
                    break;
                };
                pending = self
                    .arrived
                    .wait_timeout(pending, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            let closing = self.closing.load(Ordering::Acquire);
            std::mem::swap(&mut *pending, &mut batch);
            drop(pending);
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let note =
                    format!("(log: {dropped} lines dropped, written slower than they came)\n");
                batch.extend_from_slice(note.as_bytes());
            }
            // Nowhere to report a failed write but the log itself.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            if closing {
                return;
            }
        }
    }
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.lines.0.closing.store(true, Ordering::Release);
        // Taken under the lock, so the thread cannot miss the wake-up
        // between its check and its wait.
        drop(self.lines.0.lock());
        self.lines.0.arrived.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn written(sink: &Sink) -> String {
        String::from_utf8(sink.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_are_written_in_order_and_all_are_out_when_the_guard_drops() {
        let sink = Sink::default();
        let (lines, guard) = Lines::start(sink.clone());
        let mut expected = String::new();
        for i in 0..1000 {
            let line = format!("line {i}\n");
            lines.push(line.as_bytes());
            expected.push_str(&line);
        }
        drop(guard);
        assert_eq!(written(&sink), expected);
    }

    #[test]
    fn a_batch_is_written_without_waiting_for_the_guard() {
        let sink = Sink::default();
        let (mut lines, _guard) = Lines::start(sink.clone());
        writeln!(lines, "one").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while written(&sink).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(written(&sink), "one\n");
    }

    #[test]
    fn lines_past_the_cap_are_dropped_and_counted_never_waited_for() {
        let sink = Sink::default();
        // A batch that gathers until the guard drops: all land in it.
        let (lines, guard) = Lines::with(sink.clone(), 16, Duration::from_secs(3600));
        for line in ["0123456789\n", "abcdef\n", "0123456\n", "x\n"] {
            lines.push(line.as_bytes());
        }
        drop(guard);
        let out = written(&sink);
        assert!(out.starts_with("0123456789\nx\n"), "{out}");
        assert!(out.contains("2 lines dropped"), "{out}");
    }
}
