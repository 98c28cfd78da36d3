//! Logs on standard error, written in batches by a thread of their own.
//!
//! Every request is logged, so at tens of thousands of requests a second one `write(2)` per
//! line (what `std::io::stderr` does) costs a large share of the CPU. Here a line is appended
//! to a buffer in memory and a writer thread sends whatever has piled up in one call, at most
//! every [`BATCH_PAUSE`]: a line logged after a quiet spell is written at once, under load the
//! lines go out in batches, a few milliseconds late. The buffer is bounded: when standard error
//! cannot keep up, loggers wait, as they did on a full pipe before.
//!
//! [`LineFormat`] writes the lines themselves, in `tracing_subscriber`'s default layout but
//! without its per-field formatting machinery: the request log line is formatted on every
//! request, and the default formatter spent more on it than the request itself cost.

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::mem;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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

/// The layout of every log line: `tracing_subscriber`'s default one,
/// `2026-01-02T03:04:05.123456Z  INFO origin::metrics: request method=GET path="/" status=200`,
/// written without its per-field formatting machinery (plain appends, the date formatted once
/// a second per thread). Lines in colour (a terminal), inside a span or bridged from the `log`
/// crate are left to the default formatter, as are lines when sanitising is switched off.
#[derive(Debug, Default)]
pub struct LineFormat {
    default: format::Format,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let plain = !writer.has_ansi_escapes()
            && writer.sanitizes_ansi_escapes()
            && meta.fields().field("log.target").is_none()
            && ctx.event_scope().is_none();
        let Some(time) = plain.then(SystemTime::now).and_then(Timestamp::of) else {
            return self.default.format_event(ctx, writer, event);
        };
        time.write(&mut writer)?;
        writer.write_str(match *meta.level() {
            Level::TRACE => " TRACE ",
            Level::DEBUG => " DEBUG ",
            Level::INFO => "  INFO ",
            Level::WARN => "  WARN ",
            Level::ERROR => " ERROR ",
        })?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = PlainFields {
            writer: writer.by_ref(),
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// A moment in whole seconds and microseconds since the Unix epoch, as log lines show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timestamp {
    secs: u64,
    micros: u32,
}

/// The date and time of day of a second, `2026-01-02T03:04:05`.
type SecondText = [u8; 19];

thread_local! {
    /// The last second this thread wrote, and its text: lines come thousands a second.
    static LAST_SECOND: Cell<Option<(u64, SecondText)>> = const { Cell::new(None) };
}

impl Timestamp {
    /// `None` before 1970 or after 9999, which the default formatter writes instead.
    fn of(time: SystemTime) -> Option<Timestamp> {
        let since = time.duration_since(UNIX_EPOCH).ok()?;
        // 253402300800 is 10000-01-01T00:00:00Z.
        (since.as_secs() < 253_402_300_800).then(|| Timestamp {
            secs: since.as_secs(),
            micros: since.subsec_micros(),
        })
    }

    fn write(self, writer: &mut impl fmt::Write) -> fmt::Result {
        let second = match LAST_SECOND.get() {
            Some((secs, text)) if secs == self.secs => text,
            _ => {
                let text = second_text(self.secs);
                LAST_SECOND.set(Some((self.secs, text)));
                text
            }
        };
        let mut line = [0; 27];
        line[..19].copy_from_slice(&second);
        line[19] = b'.';
        put_digits(&mut line[20..26], self.micros);
        line[26] = b'Z';
        // Only ASCII digits and punctuation were put there.
        writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

/// `secs` since the epoch (before the year 10000) as `YYYY-MM-DDTHH:MM:SS`, in UTC.
fn second_text(secs: u64) -> SecondText {
    let (days, time) = (secs / 86_400, secs % 86_400);
    // Days to a civil date (Howard Hinnant's `civil_from_days`), on a calendar whose years
    // start in March so that the leap day ends them.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);

    let mut text = *b"0000-00-00T00:00:00";
    for (at, width, value) in [
        (0, 4, year),
        (5, 2, month),
        (8, 2, day),
        (11, 2, time / 3_600),
        (14, 2, time / 60 % 60),
        (17, 2, time % 60),
    ] {
        // Every value fits its width: the year is below 10000, the rest below 100.
        put_digits(&mut text[at..at + width], value as u32);
    }
    text
}

/// Writes `value` in decimal, zero-padded to fill `out` (higher digits are dropped).
fn put_digits(out: &mut [u8], mut value: u32) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Writes an event's fields as the default formatter does: the message as it is, then
/// `name=value` separated by spaces, strings quoted and escaped (`{:?}`), other values by
/// `{:?}`.
struct PlainFields<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl PlainFields<'_> {
    /// Starts a field: the separating space, and `name=` unless it is the message.
    fn start(&mut self, field: &Field) -> bool {
        if self.result.is_err() || field.name().starts_with("log.") {
            return false;
        }
        if !mem::take(&mut self.first) {
            self.result = self.writer.write_char(' ');
        }
        if field.name() != "message" {
            let name = field.name();
            self.result = self
                .result
                .and_then(|()| {
                    self.writer
                        .write_str(name.strip_prefix("r#").unwrap_or(name))
                })
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for PlainFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write_sanitized(&mut self.writer, value)
        } else if value
            .bytes()
            .all(|byte| matches!(byte, b' '..=b'~') && byte != b'"' && byte != b'\\')
        {
            // What `{:?}` writes for such a string, without visiting it character by character.
            self.writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'))
        } else {
            write!(self.writer, "{value:?}")
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.start(field) {
            let mut digits = [0; 20];
            let len = value.checked_ilog10().map_or(1, |log| log as usize + 1);
            let mut rest = value;
            for digit in digits[..len].iter_mut().rev() {
                *digit = b'0' + (rest % 10) as u8;
                rest /= 10;
            }
            // Only ASCII digits were put there.
            self.result = std::str::from_utf8(&digits[..len])
                .map_err(|_| fmt::Error)
                .and_then(|digits| self.writer.write_str(digits));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if value >= 0 {
            self.record_u64(field, value.unsigned_abs());
        } else if self.start(field) {
            self.result = write!(self.writer, "{value}");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.start(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if !self.start(field) {
            return;
        }
        let mut text = value.to_string();
        let mut source = value.source();
        if source.is_some() {
            let name = field.name();
            text.push_str(&format!(" {name}.sources=["));
            let mut first = true;
            while let Some(error) = source {
                if !mem::take(&mut first) {
                    text.push_str(", ");
                }
                text.push_str(&error.to_string());
                source = error.source();
            }
            text.push(']');
        }
        self.result = write_sanitized(&mut self.writer, &text);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if !self.start(field) {
            return;
        }
        self.result = if field.name() == "message" {
            write!(Sanitizing(&mut self.writer), "{value:?}")
        } else {
            write!(self.writer, "{value:?}")
        };
    }
}

/// Writes `text` with the terminal control characters escaped (`\x1b`), so a message cannot
/// drive the terminal that shows the log; as the default formatter does.
fn write_sanitized(writer: &mut impl fmt::Write, text: &str) -> fmt::Result {
    Sanitizing(writer).write_str(text)
}

/// A writer escaping terminal control characters: ESC, BEL, BS, FF, DEL and C1 codes.
struct Sanitizing<W>(W);

impl<W: fmt::Write> fmt::Write for Sanitizing<W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let needs_escape = |ch: char| {
            matches!(
                ch,
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' | '\u{80}'..='\u{9f}'
            )
        };
        if !text.contains(needs_escape) {
            return self.0.write_str(text);
        }
        for ch in text.chars() {
            match ch {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", u32::from(ch))?;
                }
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", u32::from(ch))?,
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
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
    /// The lines of `events` as a subscriber with `format` writes them, timestamps cut off.
    fn lines_with<F>(format: F, events: fn()) -> Vec<String>
    where
        F: FormatEvent<tracing_subscriber::Registry, format::DefaultFields> + Send + Sync + 'static,
    {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::TRACE)
            .with_ansi(false)
            .with_writer({
                let captured = captured.clone();
                move || captured.clone()
            })
            .event_format(format)
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let (time, rest) = line.split_at(27);
                assert!(time.ends_with('Z') && time.as_bytes()[19] == b'.', "{line}");
                rest.to_owned()
            })
            .collect()
    }

    /// An error with a cause, as the default formatter lists them.
    #[derive(Debug)]
    struct Unreadable(io::Error);

    impl fmt::Display for Unreadable {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("cannot read the file")
        }
    }

    impl std::error::Error for Unreadable {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn lines_read_as_the_default_formatter_writes_them() {
        fn events() {
            let error = io::Error::other("disk on fire");
            let unreadable = Unreadable(io::Error::other("disk on fire"));
            tracing::info!(
                method = %"GET",
                path = "/index.html",
                status = 200u16,
                latency_ms = 0.25,
                build = "b-1",
                role = "static-main",
                "request"
            );
            tracing::warn!(path = "/a \"b\"\u{1b}[31m", %error, "odd path");
            tracing::error!(
                error = &error as &(dyn std::error::Error + 'static),
                "failed"
            );
            tracing::error!(error = &unreadable as &(dyn std::error::Error + 'static));
            tracing::info!(
                count = -3i64,
                big = u64::MAX,
                zero = 0u64,
                yes = true,
                r#type = "t"
            );
            tracing::debug!("formatted {} message\u{1b}", 42);
            tracing::info!(message = "a message field \u{9b}", after = 1);
            let span = tracing::info_span!("outer", id = 7);
            span.in_scope(|| tracing::info!("inside a span"));
        }
        let ours = lines_with(LineFormat::default(), events);
        assert_eq!(ours, lines_with(format::Format::default(), events));
        assert_eq!(ours.len(), 8, "{ours:#?}");
    }

    #[test]
    fn dates_are_civil_utc() {
        for (secs, text) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_700_000_000, "2023-11-14T22:13:20"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (253_402_300_799, "9999-12-31T23:59:59"),
        ] {
            assert_eq!(std::str::from_utf8(&second_text(secs)).unwrap(), text);
        }
        assert_eq!(
            Timestamp::of(UNIX_EPOCH + Duration::from_secs(253_402_300_800)),
            None
        );
        let mut text = String::new();
        let time = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042);
        Timestamp::of(time).unwrap().write(&mut text).unwrap();
        assert_eq!(text, "2023-11-14T22:13:20.000042Z");
    }
}
