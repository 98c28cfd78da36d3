//! A fixed-rate HTTP/1.1 load generator for loopback, with every answer sorted the way a
//! visitor would notice it: fine (2xx), failed (no answer), an error page (5xx), or the
//! maintenance page / `{"status":"maintenance"}` (503 from a fallback or HAProxy).
//!
//! **Open loop.** Request `i` is due at `start + i / rate`, whatever happened to the requests
//! before it: a stalled server shows up as latency and as late requests instead of quietly
//! lowering the rate ("coordinated omission"). Latency is measured from the due time, so it
//! includes any wait for a free connection.
//!
//! **Bounded.** At most `rate × duration` requests, each given at most `timeout`; a run ends
//! at the latest `duration + timeout + 1 s` after it starts. Requests that are due but still
//! unsent then (every connection was stuck) are counted as unsent, never sent late.
//!
//! Each connection is one thread keeping one HTTP/1.1 connection alive (the workspace's client,
//! [`driver::http::Connection`], on the thread's own single-threaded Tokio runtime), so the
//! most requests in flight at once is [`LoadSpec::connections`]. Like a browser, a request
//! sent on a kept-alive connection that the server had already closed (nothing at all came
//! back) is sent again once on a fresh connection; such retries are counted in
//! [`LoadReport::retried`].
//!
//! ```ignore
//! let spec = LoadSpec { rate_per_s: 2000, ..LoadSpec::new(addr, ["/", "/api/data"]) };
//! let report = loadgen::run(spec)?;
//! println!("{report}");
//! assert!(report.is_clean());
//! ```

use std::{
    collections::BTreeMap,
    fmt,
    io::{self, Write},
    mem,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use driver::http::{Connection, Request, Response};
use tokio::runtime::Runtime;

/// Longest a worker sleeps at once while waiting for its next due time, so that a stop
/// request is noticed promptly.
const NAP: Duration = Duration::from_millis(20);
/// `stop_at` value while no stop was requested.
const NOT_STOPPED: u64 = u64::MAX;

/// What load to send, and for how long.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Where to send it (normally HAProxy's address).
    pub addr: SocketAddr,
    /// Paths asked for in turn: request `i` asks for `paths[i % paths.len()]`.
    pub paths: Vec<String>,
    /// Requests per second over all connections together.
    pub rate_per_s: u32,
    /// How long to keep sending.
    pub duration: Duration,
    /// Keep-alive connections, one thread each: the most requests in flight at once.
    pub connections: usize,
    /// Longest a request may take, from connecting to its last body byte; longer counts as a
    /// failed request.
    pub timeout: Duration,
    /// A request sent more than this after its due time (every connection was busy) counts
    /// as late.
    pub late_after: Duration,
}

impl LoadSpec {
    /// 500 requests per second for 10 s over 32 connections to `addr`, cycling over `paths`;
    /// 5 s timeout, late after 50 ms.
    pub fn new<P: Into<String>>(addr: SocketAddr, paths: impl IntoIterator<Item = P>) -> Self {
        LoadSpec {
            addr,
            paths: paths.into_iter().map(Into::into).collect(),
            rate_per_s: 500,
            duration: Duration::from_secs(10),
            connections: 32,
            timeout: Duration::from_secs(5),
            late_after: Duration::from_millis(50),
        }
    }

    /// How many requests a full run sends: `rate × duration`.
    pub fn planned(&self) -> u64 {
        let planned = u128::from(self.rate_per_s) * self.duration.as_nanos() / 1_000_000_000;
        u64::try_from(planned).unwrap_or(u64::MAX)
    }

    /// When request `index` is due, counted from the start of the run.
    fn due(&self, index: u64) -> Duration {
        let nanos = u128::from(index) * 1_000_000_000 / u128::from(self.rate_per_s.max(1));
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    fn validate(&self) -> Result<()> {
        if self.rate_per_s == 0 {
            bail!("the load's rate is 0 requests per second; ask for at least 1");
        }
        if self.duration.is_zero() {
            bail!("the load's duration is 0; ask for a positive duration");
        }
        if self.connections == 0 {
            bail!("the load has 0 connections; ask for at least 1");
        }
        if self.timeout.is_zero() {
            bail!("the load's request timeout is 0; ask for a positive timeout");
        }
        if self.paths.is_empty() {
            bail!("the load has no path to ask for; give at least one, such as `/`");
        }
        if let Some(bad) = self
            .paths
            .iter()
            .find(|path| !path.starts_with('/') || path.chars().any(char::is_whitespace))
        {
            bail!("`{bad}` is not a request path: it must start with `/` and hold no spaces");
        }
        Ok(())
    }
}

/// What a run of [`LoadSpec`] saw. Every sent request ends in exactly one of `ok`, `failed`,
/// `http_5xx`, `maintenance` and `other_status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Requests whose due time came during the run: `sent + unsent`.
    pub due: u64,
    /// Requests written to a connection.
    pub sent: u64,
    /// Requests due but never sent: the run's time bound came first, or it was stopped while
    /// they were already late (every connection was busy).
    pub unsent: u64,
    /// Sent requests that left more than [`LoadSpec::late_after`] after their due time.
    pub late: u64,
    /// Answered 2xx.
    pub ok: u64,
    /// No complete answer: connection refused or reset, closed mid-answer, timed out, or an
    /// answer that is not HTTP.
    pub failed: u64,
    /// Answered 5xx, except maintenance answers.
    pub http_5xx: u64,
    /// Answered 503 with the maintenance page or `{"status":"maintenance"}` (any 503 whose
    /// body says "maintenance").
    pub maintenance: u64,
    /// Answered 1xx, 3xx or 4xx.
    pub other_status: u64,
    /// Requests sent a second time, on a fresh connection, because the kept-alive one they
    /// were written on turned out to be closed by the server before any answer.
    pub retried: u64,
    /// Answers per HTTP status.
    pub statuses: BTreeMap<u16, u64>,
    /// Failures per description (path and cause), for telling what went wrong.
    pub errors: BTreeMap<String, u64>,
    /// Median latency of answered requests, from the due time to the last body byte.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Slowest answer.
    pub max: Duration,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl LoadReport {
    /// Whether a visitor would have noticed nothing: every due request was sent and answered
    /// without failure, 5xx or maintenance page (4xx and 3xx are the site's business, late
    /// requests the generator's).
    pub fn is_clean(&self) -> bool {
        self.unsent == 0 && self.failed == 0 && self.http_5xx == 0 && self.maintenance == 0
    }

    /// Requests sent per second of the run.
    pub fn achieved_rate(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds > 0.0 {
            self.sent as f64 / seconds
        } else {
            0.0
        }
    }

    /// The report as JSON, for programs (`cargo xtask load --json`): every count, the
    /// statuses and errors by name, latencies in milliseconds, `clean` as [`Self::is_clean`].
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        serde_json::json!({
            "due": self.due,
            "sent": self.sent,
            "unsent": self.unsent,
            "late": self.late,
            "ok": self.ok,
            "failed": self.failed,
            "http_5xx": self.http_5xx,
            "maintenance": self.maintenance,
            "other_status": self.other_status,
            "retried": self.retried,
            "statuses": self.statuses.iter().map(|(status, count)| (status.to_string(), *count)).collect::<BTreeMap<_, _>>(),
            "errors": self.errors,
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "max_ms": ms(self.max),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "clean": self.is_clean(),
        })
    }

    fn add(&mut self, tally: Tally) {
        self.sent += tally.sent;
        self.unsent += tally.unsent;
        self.late += tally.late;
        self.ok += tally.ok;
        self.failed += tally.failed;
        self.http_5xx += tally.http_5xx;
        self.maintenance += tally.maintenance;
        self.other_status += tally.other_status;
        self.retried += tally.retried;
        for (status, count) in tally.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        for (error, count) in tally.errors {
            *self.errors.entry(error).or_default() += count;
        }
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} due, {} sent in {:.1} s ({:.0} req/s); {} late, {} unsent",
            self.due,
            self.sent,
            self.elapsed.as_secs_f64(),
            self.achieved_rate(),
            self.late,
            self.unsent
        )?;
        writeln!(
            f,
            "ok (2xx) {}, failed {}, 5xx {}, maintenance {}, other status {}; {} retried on a \
             fresh connection",
            self.ok, self.failed, self.http_5xx, self.maintenance, self.other_status, self.retried
        )?;
        writeln!(
            f,
            "latency from due time: p50 {}, p99 {}, max {}",
            millis(self.p50),
            millis(self.p99),
            millis(self.max)
        )?;
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(status, count)| format!("{status} × {count}"))
            .collect();
        write!(f, "statuses: {}", statuses.join(", "))?;
        for (error, count) in &self.errors {
            write!(f, "\n  {count} × {error}")?;
        }
        Ok(())
    }
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// Sends `spec`'s load and returns what it saw, after `spec.duration` (plus the time the last
/// answers take, at most `spec.timeout`).
// Used by the tests and by `cargo xtask bench`.
#[cfg_attr(not(test), allow(dead_code))]
pub fn run(spec: LoadSpec) -> Result<LoadReport> {
    Ok(start(spec)?.finish())
}

/// Starts `spec`'s load in the background. Dropping the handle stops it.
pub fn start(spec: LoadSpec) -> Result<RunningLoad> {
    spec.validate()?;
    let spec = Arc::new(spec);
    let shared = Arc::new(Shared {
        next: AtomicU64::new(0),
        stop_at: AtomicU64::new(NOT_STOPPED),
    });
    let started = Instant::now();
    let mut workers = Vec::with_capacity(spec.connections);
    for number in 0..spec.connections {
        let (spec, shared) = (Arc::clone(&spec), Arc::clone(&shared));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("could not start a Tokio runtime for the load")?;
        let worker = thread::Builder::new()
            .name(format!("load-{number}"))
            .spawn(move || work(&spec, &shared, started, &runtime))
            .context("could not start a load generator thread")?;
        workers.push(worker);
    }
    Ok(RunningLoad {
        spec,
        shared,
        started,
        workers,
    })
}

/// A load running in the background; see [`start`].
#[must_use = "dropping a RunningLoad stops the load at once"]
pub struct RunningLoad {
    spec: Arc<LoadSpec>,
    shared: Arc<Shared>,
    started: Instant,
    workers: Vec<JoinHandle<Tally>>,
}

impl RunningLoad {
    /// Waits for the full run and returns what it saw.
    pub fn finish(mut self) -> LoadReport {
        self.collect()
    }

    /// Stops sending now (requests in flight still get their answer) and returns what was
    /// seen so far. Requests due later are cancelled; requests due earlier but not sent yet
    /// are still sent if they are not late, else counted as unsent.
    pub fn stop(mut self) -> LoadReport {
        self.request_stop();
        self.collect()
    }

    /// Whether every request has been sent and answered (or counted as unsent).
    pub fn is_finished(&self) -> bool {
        self.workers.iter().all(JoinHandle::is_finished)
    }

    /// What the run is asked to do.
    pub fn spec(&self) -> &LoadSpec {
        &self.spec
    }

    fn request_stop(&self) {
        let now = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(NOT_STOPPED - 1);
        let _ = self.shared.stop_at.compare_exchange(
            NOT_STOPPED,
            now,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    fn collect(&mut self) -> LoadReport {
        let mut report = LoadReport::default();
        let mut latencies = Vec::new();
        for worker in mem::take(&mut self.workers) {
            // A worker panics only on a bug here; its requests are then simply missing.
            if let Ok(mut tally) = worker.join() {
                latencies.append(&mut tally.latencies);
                report.add(tally);
            }
        }
        report.elapsed = self.started.elapsed();
        report.due = report.sent + report.unsent;
        latencies.sort_unstable();
        report.p50 = percentile(&latencies, 0.50);
        report.p99 = percentile(&latencies, 0.99);
        report.max = latencies.last().copied().unwrap_or_default();
        report
    }
}

impl Drop for RunningLoad {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.request_stop();
            for worker in mem::take(&mut self.workers) {
                let _ = worker.join();
            }
        }
    }
}

/// The `q` quantile (0..=1) of sorted values; zero when there are none.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// State the workers share: the next request to send and whether to stop.
struct Shared {
    next: AtomicU64,
    /// Nanoseconds after the start at which a stop was requested, or `NOT_STOPPED`.
    stop_at: AtomicU64,
}

impl Shared {
    fn stop_at(&self) -> Option<Duration> {
        match self.stop_at.load(Ordering::SeqCst) {
            NOT_STOPPED => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

/// One worker's counts, merged into the report at the end.
#[derive(Default)]
struct Tally {
    sent: u64,
    unsent: u64,
    late: u64,
    ok: u64,
    failed: u64,
    http_5xx: u64,
    maintenance: u64,
    other_status: u64,
    retried: u64,
    statuses: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    latencies: Vec<Duration>,
}

impl Tally {
    fn count(&mut self, answer: &Response) {
        *self.statuses.entry(answer.status).or_default() += 1;
        match answer.status {
            200..=299 => self.ok += 1,
            500..=599 if is_maintenance(answer) => self.maintenance += 1,
            500..=599 => self.http_5xx += 1,
            _ => self.other_status += 1,
        }
    }
}

/// One connection's thread: takes the next due request, waits for its time, sends it. Its
/// runtime drives the connection only while a request is in flight.
fn work(spec: &LoadSpec, shared: &Shared, started: Instant, runtime: &Runtime) -> Tally {
    let planned = spec.planned();
    let hard_stop = spec.duration + spec.timeout + Duration::from_secs(1);
    let mut tally = Tally::default();
    let mut connection: Option<Connection> = None;
    loop {
        let index = shared.next.fetch_add(1, Ordering::SeqCst);
        if index >= planned {
            break;
        }
        let due = spec.due(index);
        // Wait for the due time, in naps short enough to notice a stop.
        loop {
            if let Some(stop) = shared.stop_at() {
                if due > stop {
                    // Not due before the stop: cancelled, like every later request.
                    return tally;
                }
                break;
            }
            let now = started.elapsed();
            if now >= due {
                break;
            }
            thread::sleep((due - now).min(NAP));
        }
        let now = started.elapsed();
        // After a stop, a request due just before it is still sent (it was on time, only
        // not yet written); one already late then is a shortfall, like one past the bound.
        let late_at_stop = shared
            .stop_at()
            .is_some_and(|stop| stop.saturating_sub(due) > spec.late_after);
        if late_at_stop || now >= hard_stop {
            tally.unsent += 1;
            continue;
        }
        if now.saturating_sub(due) > spec.late_after {
            tally.late += 1;
        }
        let path = &spec.paths[(index % spec.paths.len() as u64) as usize];
        let request = Request::get(&format!("http://{}{path}", spec.addr))
            .header("User-Agent", "xtask-loadgen");
        tally.sent += 1;
        let outcome = runtime.block_on(async {
            let exchange = exchange(&mut connection, spec.addr, &request, &mut tally.retried);
            tokio::time::timeout(spec.timeout, exchange)
                .await
                .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
        });
        match outcome {
            Ok(answer) => {
                tally.latencies.push(started.elapsed().saturating_sub(due));
                tally.count(&answer);
            }
            Err(error) => {
                let error = match error.kind() {
                    io::ErrorKind::TimedOut => "timed out".to_owned(),
                    _ => error.to_string(),
                };
                *tally
                    .errors
                    .entry(format!("GET {path}: {error}"))
                    .or_default() += 1;
                tally.failed += 1;
            }
        }
    }
    tally
}

/// One request and its answer, on the kept-alive connection if there is one. A request whose
/// kept-alive connection turns out closed before any answer is sent once more on a fresh
/// connection (RFC 9112, 9.3.1: safe for GET).
async fn exchange(
    connection: &mut Option<Connection>,
    addr: SocketAddr,
    request: &Request,
    retried: &mut u64,
) -> io::Result<Response> {
    let reused = connection.is_some();
    let mut open = match connection.take() {
        Some(open) => open,
        None => Connection::open(addr).await?,
    };
    let answer = match open.send(request).await {
        Err(error) if reused && closed_before_answer(&error) => {
            *retried += 1;
            open = Connection::open(addr).await?;
            open.send(request).await?
        }
        answer => answer?,
    };
    let closes = answer
        .header("connection")
        .is_some_and(|value| value.eq_ignore_ascii_case("close"));
    if !closes {
        *connection = Some(open);
    }
    Ok(answer)
}

/// What [`Connection::send`] reports when the connection closed before any answer.
fn closed_before_answer(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// A 503 whose body says "maintenance": the maintenance page or `{"status":"maintenance"}`.
fn is_maintenance(answer: &Response) -> bool {
    answer.status == 503
        && answer
            .body
            .windows(b"maintenance".len())
            .any(|window| window.eq_ignore_ascii_case(b"maintenance"))
}

/// Options of `cargo xtask load`.
#[derive(clap::Args)]
pub struct LoadArgs {
    /// Requests per second, over all paths and connections together.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// How long to send, in seconds; Ctrl-C stops earlier and still reports.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// A path to ask for; repeat it to ask for several in turn.
    #[arg(long = "path", value_name = "PATH", default_values_t = ["/".to_owned(), "/api/data".to_owned()])]
    paths: Vec<String>,
    /// Keep-alive connections: the most requests in flight at once.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Where to send it (default: the running stack's HAProxy, from its haproxy.addr file).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Fail unless the run is clean: every request sent and answered, no 5xx, no maintenance.
    #[arg(long)]
    strict: bool,
    /// Print the report as one line of JSON on stdout (the prose goes to stderr).
    #[arg(long)]
    json: bool,
}

/// `cargo xtask load`.
pub fn load(args: &LoadArgs) -> Result<()> {
    let addr = match args.addr {
        Some(addr) => addr,
        None => {
            let file = crate::files::site_file();
            let text = std::fs::read_to_string(&file).with_context(|| {
                format!(
                    "no stack is running ({} is missing); start one with `cargo xtask up`, or \
                     pass --addr",
                    file.display()
                )
            })?;
            text.trim()
                .parse()
                .with_context(|| format!("{} does not hold an address", file.display()))?
        }
    };
    let duration = Duration::try_from_secs_f64(args.seconds)
        .ok()
        .filter(|duration| !duration.is_zero())
        .with_context(|| format!("--seconds {} is not a positive duration", args.seconds))?;
    let spec = LoadSpec {
        rate_per_s: args.rate,
        duration,
        connections: args.connections,
        ..LoadSpec::new(addr, args.paths.iter().cloned())
    };
    // Ctrl-C (or SIGTERM) ends the run early; the report still comes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("could not install the load's signal handlers")?;
    }
    let running = start(spec)?;
    let spec = running.spec();
    println!(
        "load: {} req/s for {:.1} s to http://{}{} over {} connections",
        spec.rate_per_s,
        spec.duration.as_secs_f64(),
        spec.addr,
        spec.paths.join(&format!(" + http://{}", spec.addr)),
        spec.connections
    );
    let _ = io::stdout().flush();
    while !running.is_finished() && !stop.load(Ordering::SeqCst) {
        thread::sleep(NAP);
    }
    let report = if running.is_finished() {
        running.finish()
    } else {
        running.stop()
    };
    if args.json {
        eprintln!("{report}");
        println!("{}", report.to_json());
    } else {
        println!("{report}");
    }
    if args.strict && !report.is_clean() {
        bail!(
            "the load was not clean: {} failed, {} 5xx, {} maintenance, {} unsent",
            report.failed,
            report.http_5xx,
            report.maintenance,
            report.unsent
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::{Shutdown, TcpListener, TcpStream};

    /// A tiny in-process HTTP/1.1 server: `/ok`, `/chunked`, `/maintenance.json`,
    /// `/maintenance.html`, `/boom` (500), `/hang` (never answers), `/close` (an HTTP/1.0
    /// answer that says it closes, then closes), `/ssh` and `/bad-status` (not HTTP); anything
    /// else is 404. With `close_after_each`, it closes every connection after one answer
    /// without saying so, like a keep-alive timeout racing the next request.
    struct TestServer {
        addr: SocketAddr,
    }

    impl TestServer {
        fn start(close_after_each: bool) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            // The accept loop lives as long as the test process; its threads only block.
            thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    thread::spawn(move || serve(stream, close_after_each));
                }
            });
            TestServer { addr }
        }
    }

    fn serve(stream: TcpStream, close_after_each: bool) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                return;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear();
            }
            let path = request_line.split_whitespace().nth(1).unwrap_or("/");
            let answer: &[u8] = match path {
                "/ok" => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
                "/chunked" => {
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"
                }
                "/maintenance.json" => {
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 24\r\n\r\n{\"status\":\"maintenance\"}"
                }
                "/maintenance.html" => {
                    b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n14\r\n<title>Maintenance</\r\n7\r\ntitle>\n\r\n0\r\n\r\n"
                }
                "/boom" => b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom",
                "/close" => b"HTTP/1.0 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok",
                "/ssh" => b"SSH-2.0-OpenSSH\r\n",
                "/bad-status" => b"HTTP/1.1 abc\r\n\r\n",
                "/hang" => {
                    thread::sleep(Duration::from_secs(5));
                    return;
                }
                _ => b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            };
            if writer.write_all(answer).is_err() {
                return;
            }
            if close_after_each || ["/close", "/ssh", "/bad-status"].contains(&path) {
                let _ = writer.shutdown(Shutdown::Both);
                return;
            }
        }
    }

    fn quick(addr: SocketAddr, paths: &[&str], requests: u32) -> LoadSpec {
        LoadSpec {
            rate_per_s: requests * 4,
            duration: Duration::from_millis(250),
            connections: 4,
            timeout: Duration::from_secs(2),
            ..LoadSpec::new(addr, paths.iter().copied())
        }
    }

    fn assert_accounted(report: &LoadReport) {
        assert_eq!(report.due, report.sent + report.unsent, "{report}");
        assert_eq!(
            report.sent,
            report.ok + report.failed + report.http_5xx + report.maintenance + report.other_status,
            "{report}"
        );
    }

    #[test]
    fn sorts_every_answer_into_one_bucket() {
        let server = TestServer::start(false);
        let paths = [
            "/ok",
            "/chunked",
            "/maintenance.json",
            "/maintenance.html",
            "/boom",
            "/missing",
        ];
        let spec = quick(server.addr, &paths, 60);
        let planned = spec.planned();
        let report = run(spec).unwrap();
        let asked = |k: u64| (0..planned).filter(|i| i % 6 == k).count() as u64;
        assert_accounted(&report);
        assert_eq!(report.sent, planned, "{report}");
        assert_eq!(report.ok, asked(0) + asked(1), "{report}");
        assert_eq!(report.maintenance, asked(2) + asked(3), "{report}");
        assert_eq!(report.http_5xx, asked(4), "{report}");
        assert_eq!(report.other_status, asked(5), "{report}");
        assert_eq!((report.failed, report.unsent), (0, 0), "{report}");
        assert_eq!(report.statuses[&503], asked(2) + asked(3));
        assert!(!report.is_clean());
        assert!(report.p50 <= report.p99 && report.p99 <= report.max);
    }

    #[test]
    fn a_clean_run_is_clean() {
        let server = TestServer::start(false);
        let report = run(quick(server.addr, &["/ok", "/chunked"], 40)).unwrap();
        assert_accounted(&report);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.ok, 40);
        let json = report.to_json();
        assert_eq!(json["ok"], 40);
        assert_eq!(json["clean"], true);
        assert_eq!(json["statuses"]["200"], 40);
    }

    #[test]
    fn refused_connections_are_failures() {
        let addr = {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let report = run(quick(addr, &["/"], 20)).unwrap();
        assert_accounted(&report);
        assert_eq!(report.failed, report.sent, "{report}");
        assert!(
            report.errors.keys().all(|error| error.contains("connect")),
            "{report}"
        );
    }

    /// 20 requests for `path` in turn on one connection, all answered 200.
    fn on_one_connection(server: &TestServer, path: &str) -> LoadReport {
        let spec = LoadSpec {
            connections: 1,
            ..quick(server.addr, &[path], 20)
        };
        let report = run(spec).unwrap();
        assert_accounted(&report);
        assert!(report.is_clean(), "{report}");
        assert_eq!(report.ok, 20, "{report}");
        report
    }

    #[test]
    fn a_kept_alive_connection_closed_by_the_server_is_retried_once() {
        let report = on_one_connection(&TestServer::start(true), "/ok");
        assert!(report.retried > 0, "{report}");
    }

    #[test]
    fn a_request_that_never_gets_an_answer_times_out() {
        let server = TestServer::start(false);
        let spec = LoadSpec {
            timeout: Duration::from_millis(200),
            ..quick(server.addr, &["/hang"], 4)
        };
        let report = run(spec).unwrap();
        assert_accounted(&report);
        assert_eq!(report.failed, 4, "{report}");
        assert!(
            report
                .errors
                .keys()
                .all(|error| error.contains("timed out")),
            "{report}"
        );
    }

    #[test]
    fn stopping_early_sends_no_more_and_accounts_for_the_rest() {
        let server = TestServer::start(false);
        let spec = LoadSpec {
            rate_per_s: 100,
            duration: Duration::from_secs(60),
            connections: 2,
            ..LoadSpec::new(server.addr, ["/ok"])
        };
        let load = start(spec).unwrap();
        // A worker takes its next request only once the last one is answered: with two
        // workers, 6 taken means at least 4 answered.
        while load.shared.next.load(Ordering::SeqCst) < 6 {
            thread::sleep(Duration::from_millis(5));
        }
        let report = load.stop();
        assert_accounted(&report);
        assert!(report.ok >= 4 && report.sent < 6000, "{report}");
    }

    #[test]
    fn rejects_specs_that_cannot_run() {
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let good = LoadSpec::new(addr, ["/"]);
        for bad in [
            LoadSpec {
                rate_per_s: 0,
                ..good.clone()
            },
            LoadSpec {
                connections: 0,
                ..good.clone()
            },
            LoadSpec {
                duration: Duration::ZERO,
                ..good.clone()
            },
            LoadSpec::new(addr, Vec::<String>::new()),
            LoadSpec::new(addr, ["api/data"]),
        ] {
            assert!(start(bad).is_err());
        }
    }

    #[test]
    fn requests_are_due_at_a_fixed_rate() {
        let spec = LoadSpec {
            rate_per_s: 4,
            duration: Duration::from_secs(3),
            ..LoadSpec::new("127.0.0.1:9".parse().unwrap(), ["/"])
        };
        assert_eq!(spec.planned(), 12);
        assert_eq!(spec.due(0), Duration::ZERO);
        assert_eq!(spec.due(3), Duration::from_millis(750));
        assert_eq!(spec.due(12), Duration::from_secs(3));
    }

    #[test]
    fn answers_that_are_not_http_are_failures() {
        let server = TestServer::start(false);
        let report = run(quick(server.addr, &["/ssh", "/bad-status"], 8)).unwrap();
        assert_accounted(&report);
        assert_eq!(report.failed, 8, "{report}");
        assert!(report.statuses.is_empty(), "{report}");
    }

    #[test]
    fn a_connection_the_server_says_it_closes_is_not_reused() {
        let report = on_one_connection(&TestServer::start(false), "/close");
        assert_eq!(report.retried, 0, "{report}");
    }

    #[test]
    fn maintenance_needs_a_503_that_says_so() {
        let answer = |status, body: &[u8]| Response {
            status,
            reason: String::new(),
            headers: Vec::new(),
            body: body.to_vec(),
        };
        assert!(is_maintenance(&answer(503, br#"{"status":"maintenance"}"#)));
        assert!(is_maintenance(&answer(
            503,
            b"<h1>Down for MAINTENANCE</h1>"
        )));
        assert!(!is_maintenance(&answer(503, b"No server is available")));
        assert!(!is_maintenance(&answer(
            500,
            br#"{"status":"maintenance"}"#
        )));
    }

    #[test]
    fn percentiles_pick_from_sorted_values() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&values, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&values, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&values, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
