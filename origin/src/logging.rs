//! Logs on standard error, written in batches by a thread of their own.
//!
//! Every request is logged, so at tens of thousands of requests a second one `write(2)` per
//! line (what `std::io::stderr` does) costs a large share of the CPU. Here a line is appended
//! to a buffer in memory and a writer thread sends whatever has piled up in one call, at most
//! every [`BATCH_PAUSE`]: a line logged after a quiet spell is written at once, under load the
//! lines go out in batches, a few milliseconds late. The buffer is bounded: when standard error
//! cannot keep up, loggers wait, as they did on a full pipe before.

use std::io::{self, Write};
use std::mem;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How many bytes of log lines may wait for standard error before loggers wait too.
const MAX_PENDING: usize = 1024 * 1024;

/// The writer's rest after each batch, so that lines pile up instead of each waking it.
pub const BATCH_PAUSE: Duration = Duration::from_millis(5);

/// Where the formatter writes log lines: [`MakeWriter`] for `tracing_subscriber::fmt`.
#[derive(Clone, Debug)]
pub struct BatchedLog {
    shared: Arc<Shared>,
}

/// Writes what is left when dropped, and stops the writer thread. Keep it until the end of
/// `main`; a process killed by a signal may lose the lines not yet written (none while idle).
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    writer: Option<thread::JoinHandle<()>>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when lines arrive, when the buffer is emptied and at shutdown.
    changed: Condvar,
    /// Held from taking a batch until it is written, so batches come out in order.
    output: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    closed: bool,
    /// The writer waits for lines (rather than resting or writing): a new line must wake it.
    /// Tracked because waking costs a system call even when nobody waits.
    writer_waits: bool,
    /// Loggers waiting for room in a full buffer.
    loggers_wait: usize,
}

impl BatchedLog {
    /// Starts the writer thread, writing to standard error.
    pub fn to_stderr() -> io::Result<(BatchedLog, FlushGuard)> {
        BatchedLog::to(Box::new(io::stderr()))
    }

    /// Starts the writer thread, writing to `output`.
    pub fn to(output: Box<dyn Write + Send>) -> io::Result<(BatchedLog, FlushGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::default(),
            changed: Condvar::new(),
            output: Mutex::new(output),
        });
        let writer = thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn({
                let shared = Arc::clone(&shared);
                move || shared.write_until_closed()
            })?;
        Ok((
            BatchedLog {
                shared: Arc::clone(&shared),
            },
            FlushGuard {
                shared,
                writer: Some(writer),
            },
        ))
    }
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // A logger that panicked mid-append leaves whole lines at worst: keep logging.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut pending = self.pending();
        while pending.lines.len() >= MAX_PENDING && !pending.closed {
            pending.loggers_wait += 1;
            pending = self
                .changed
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
            pending.loggers_wait -= 1;
        }
        pending.lines.extend_from_slice(line);
        let (closed, wake) = (pending.closed, pending.writer_waits);
        pending.writer_waits = false;
        drop(pending);
        if closed {
            // After shutdown nobody else writes the buffer.
            self.write_pending(&mut Vec::new());
        } else if wake {
            self.changed.notify_all();
        }
    }

    /// Writes whatever is pending.
    fn write_pending(&self, batch: &mut Vec<u8>) {
        let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        let mut pending = self.pending();
        mem::swap(&mut pending.lines, batch);
        let loggers_wait = pending.loggers_wait > 0;
        drop(pending);
        if loggers_wait {
            self.changed.notify_all();
        }
        if !batch.is_empty() {
            // Nowhere to report a failure to write the log: drop the batch, keep serving.
            let _ = output.write_all(batch).and_then(|()| output.flush());
            batch.clear();
        }
    }

    fn write_until_closed(&self) {
        let mut batch = Vec::new();
        loop {
            {
                let mut pending = self.pending();
                while pending.lines.is_empty() && !pending.closed {
                    pending.writer_waits = true;
                    pending = self
                        .changed
                        .wait(pending)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                pending.writer_waits = false;
                if pending.closed {
                    return;
                }
            }
            self.write_pending(&mut batch);
            thread::sleep(BATCH_PAUSE);
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.pending().closed = true;
        self.shared.changed.notify_all();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
        self.shared.write_pending(&mut Vec::new());
    }
}

/// One formatted event; `tracing_subscriber::fmt` writes each with a single `write_all`.
#[derive(Debug)]
pub struct LogLine<'a> {
    shared: &'a Shared,
}

impl Write for LogLine<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedLog {
    type Writer = LogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LogLine {
            shared: &self.shared,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read afterwards.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_comes_out_whole_and_in_order() {
        let captured = Captured::default();
        let (log, guard) = BatchedLog::to(Box::new(captured.clone())).unwrap();
        let loggers: Vec<_> = (0..4)
            .map(|thread| {
                let log = log.clone();
                thread::spawn(move || {
                    for line in 0..20_000 {
                        let text = format!("thread {thread} line {line}\n");
                        log.make_writer().write_all(text.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for logger in loggers {
            logger.join().unwrap();
        }
        drop(guard);
        log.make_writer().write_all(b"after shutdown\n").unwrap();

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines().take(80_000) {
            let (thread, number) = line
                .strip_prefix("thread ")
                .and_then(|rest| rest.split_once(" line "))
                .unwrap_or_else(|| panic!("mangled line {line:?}"));
            let thread: usize = thread.parse().unwrap();
            assert_eq!(number.parse::<usize>().unwrap(), next[thread], "{line}");
            next[thread] += 1;
        }
        assert_eq!(next, [20_000; 4]);
        assert_eq!(text.lines().last(), Some("after shutdown"));
    }
}
