//! What every figure shares: which figure ([`FigureId`]), the [`Bench`] it runs under (runs,
//! scratch directory, Ctrl-C, progress), how it reports ([`Series`], [`Goal`], [`Figure`],
//! [`Outcome`]) and small tools (a seeded [`Rng`], [`output_within`], [`stop_stack`]). The
//! figures' modules and `bench/mod.rs` import it; it imports none of them.

use std::{
    fmt,
    io::Read,
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// One figure of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum FigureId {
    /// api-main crashes (SIGKILL) until `/` answers maintenance.
    P1,
    /// api-main hangs (SIGSTOP) until `/` answers maintenance.
    P2,
    /// The tier is back until open maintenance tabs are back on the dashboard.
    P3,
    /// Ten planned redeploys under fixed-rate load.
    P4,
    /// Static tier throughput through HAProxy.
    P5,
    /// Maintenance page assets against HAProxy's buffer.
    P6,
    /// The recovery herd of 10,000 simulated tabs.
    P7,
    /// A crowd on `/api/data` and `/`: maintenance answers and servers marked down.
    P8,
    /// api-main crashes (SIGKILL) in a crowd until `/` answers maintenance.
    P9,
    /// What the last-resort service worker adds to a navigation.
    P10,
    /// Ten restarts of api-main under fixed-rate load, socket held or not.
    P11,
    /// HAProxy's memory with 32 KB buffers against 16 KB, 1,000 and 5,000 connections.
    P12,
    /// Across hosts: the VIP holder's HAProxy killed or its host cut off, under load.
    P13,
    /// Across hosts: ten redeploys of api-main under fixed-rate load through the VIP.
    P14,
}

impl FigureId {
    pub const ALL: [FigureId; 14] = [
        FigureId::P1,
        FigureId::P2,
        FigureId::P3,
        FigureId::P4,
        FigureId::P5,
        FigureId::P6,
        FigureId::P7,
        FigureId::P8,
        FigureId::P9,
        FigureId::P10,
        FigureId::P11,
        FigureId::P12,
        FigureId::P13,
        FigureId::P14,
    ];

    /// The order figures are measured in: the quick ones first, P4 last (it needs the
    /// redeploy verb and the load generator).
    pub const MEASURE_ORDER: [FigureId; 14] = [
        FigureId::P6,
        FigureId::P7,
        FigureId::P10,
        FigureId::P1,
        FigureId::P2,
        FigureId::P3,
        FigureId::P5,
        FigureId::P8,
        FigureId::P9,
        FigureId::P12,
        FigureId::P13,
        FigureId::P4,
        FigureId::P11,
        FigureId::P14,
    ];

    /// One line saying what the figure measures.
    pub fn title(self) -> &'static str {
        match self {
            FigureId::P1 => "api-main killed (SIGKILL) until `/` answers maintenance",
            FigureId::P2 => "api-main hung (SIGSTOP) until `/` answers maintenance",
            FigureId::P3 => "tier healthy again until 5 open maintenance tabs show the dashboard",
            FigureId::P4 => "10 redeploys of api-main under fixed-rate load: failed requests",
            FigureId::P5 => "static tier through HAProxy, wrk -t2 -c50 -d10s /index.html",
            FigureId::P6 => "largest maintenance asset HAProxy sends from memory",
            FigureId::P7 => "herd of 10,000 tabs: largest share navigating in one second",
            FigureId::P8 => {
                "crowd on /api/data and / up to 16× api-main's best: maintenance answers, servers down"
            }
            FigureId::P9 => "api-main killed (SIGKILL) in a crowd until `/` answers maintenance",
            FigureId::P10 => {
                "a dashboard navigation with and without the last-resort service worker"
            }
            FigureId::P11 => {
                "10 restarts of api-main under fixed-rate load: maintenance answers and failed requests"
            }
            FigureId::P12 => {
                "HAProxy's resident memory with 5,000 keep-alive connections, 32 KB vs 16 KB buffers"
            }
            FigureId::P13 => {
                "across hosts, 1,000 req/s through the VIP: the VIP holder fails until the VIP moves"
            }
            FigureId::P14 => {
                "across hosts, 1,000 req/s through the VIP: 10 redeploys of api-main, failed requests"
            }
        }
    }
}

impl fmt::Display for FigureId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How a series' numbers read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Seconds, two decimals.
    Seconds,
    /// Milliseconds, one decimal.
    Milliseconds,
    /// A plain count (requests, answers).
    Count,
    /// Requests per second.
    RequestsPerSecond,
    /// Bytes.
    Bytes,
    /// A percentage, one decimal.
    Percent,
    /// Megabytes (2^20 bytes), no decimals.
    Megabytes,
}

impl Unit {
    /// `value` with its unit, e.g. `0.62 s`, `54,120 req/s`.
    pub fn format(self, value: f64) -> String {
        let bare = self.bare(value);
        match self {
            Unit::Seconds => format!("{bare} s"),
            Unit::Milliseconds => format!("{bare} ms"),
            Unit::Count => bare,
            Unit::RequestsPerSecond => format!("{bare} req/s"),
            Unit::Bytes => format!("{bare} B"),
            Unit::Percent => format!("{bare} %"),
            Unit::Megabytes => format!("{bare} MB"),
        }
    }

    /// `value` without its unit.
    pub fn bare(self, value: f64) -> String {
        match self {
            Unit::Seconds => format!("{value:.2}"),
            Unit::Milliseconds => format!("{value:.1}"),
            Unit::Percent => format!("{value:.1}"),
            Unit::Count | Unit::RequestsPerSecond | Unit::Bytes | Unit::Megabytes => {
                thousands(value.round())
            }
        }
    }
}

/// `12345` as `12,345`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0.0 {
        grouped.insert(0, '-');
    }
    grouped
}

/// The median with the smallest and largest value of a set of runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
}

impl Summary {
    /// The summary of `values`, or `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let (first, last) = (*sorted.first()?, *sorted.last()?);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 {
            sorted[middle]
        } else {
            (sorted[middle - 1] + sorted[middle]) / 2.0
        };
        Some(Summary {
            median,
            min: first,
            max: last,
        })
    }
}

/// One variant's values, one per run.
#[derive(Clone, Debug)]
pub struct Series {
    /// Which variant: "haproxy.cfg", "HAProxy default checks", ...
    pub label: String,
    /// One value per run.
    pub values: Vec<f64>,
    /// How the values read.
    pub unit: Unit,
    /// More to show next to the median, e.g. latency percentiles.
    pub detail: Option<String>,
}

impl Series {
    /// A series without detail.
    pub fn new(label: impl Into<String>, values: Vec<f64>, unit: Unit) -> Series {
        Series {
            label: label.into(),
            values,
            unit,
            detail: None,
        }
    }

    /// The median with min and max over the runs.
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&self.values)
    }

    /// The table cell: `median unit [min–max]`, plus the detail.
    pub fn cell(&self) -> String {
        let Some(summary) = self.summary() else {
            return "—".to_owned();
        };
        let mut cell = self.unit.format(summary.median);
        if self.values.len() > 1 {
            if summary.min == summary.max {
                cell.push_str(" (every run)");
            } else {
                cell.push_str(&format!(
                    " [{}–{}]",
                    self.unit.bare(summary.min),
                    self.unit.bare(summary.max)
                ));
            }
        }
        if let Some(detail) = &self.detail {
            cell.push_str("; ");
            cell.push_str(detail);
        }
        cell
    }
}

/// A goal the figure is read against.
#[derive(Clone, Debug)]
pub struct Goal {
    /// The goal in words, e.g. `≤ 0.5 s`.
    pub text: String,
    /// Whether this run met it.
    pub met: bool,
}

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// Which figure.
    pub id: FigureId,
    /// Our stack as built.
    pub ours: Series,
    /// What it is compared with.
    pub comparator: Series,
    /// The goal and whether it was met.
    pub goal: Goal,
    /// What else was seen: per-run detail, checks, histograms (Markdown lines).
    pub findings: Vec<String>,
    /// How it was measured (Markdown).
    pub method: String,
}

/// What became of one figure.
#[derive(Debug)]
pub enum Outcome {
    /// Measured.
    Measured(Box<Figure>),
    /// Could not measure, with the error's first line.
    Failed(FigureId, String),
}

impl Outcome {
    pub fn id(&self) -> FigureId {
        match self {
            Outcome::Measured(figure) => figure.id,
            Outcome::Failed(id, _) => *id,
        }
    }
}

/// What every figure shares: the run count, a scratch directory, Ctrl-C, progress lines.
pub struct Bench {
    /// Runs per figure and variant.
    pub runs: usize,
    /// target/bench: comparator configurations, logs, outputs kept for inspection.
    pub dir: PathBuf,
    /// A copy of this xtask binary (absolute path), for the verbs P4 runs as subprocesses:
    /// another build may replace target/debug/xtask while the benchmark runs.
    pub xtask: PathBuf,
    /// Set by the Ctrl-C (SIGTERM) handler; every wait looks at it.
    pub interrupted: Arc<AtomicBool>,
}

impl Bench {
    /// Fails once Ctrl-C (or SIGTERM) has been received, so the figure unwinds and its guards
    /// stop every process it started.
    pub fn check_interrupt(&self) -> Result<()> {
        if self.interrupted.load(Ordering::SeqCst) {
            bail!("interrupted; stopping every process the benchmark started");
        }
        Ok(())
    }

    /// Sleeps `duration` in short steps, stopping early on Ctrl-C.
    pub fn pause(&self, duration: Duration) -> Result<()> {
        let until = Instant::now() + duration;
        loop {
            self.check_interrupt()?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Prints one progress line: `P1 run 2/3  haproxy.cfg  0.62 s`.
    /// [`driver::poll_until`] for the bench: `check` answers `Ok(Ok(value))` when done,
    /// `Ok(Err(seen))` when not yet, and `Err(error)` to give up at once (a process died);
    /// Ctrl-C gives up too.
    pub fn wait_until<T>(
        &self,
        limit: Duration,
        what: &str,
        mut check: impl FnMut() -> Result<Result<T, String>>,
    ) -> Result<T> {
        let mut stopped = None;
        let waited = driver::poll_until(limit, what, || {
            match self.check_interrupt().and_then(|()| check()) {
                Ok(Ok(value)) => Ok(Some(value)),
                Ok(Err(seen)) => Err(seen),
                Err(error) => {
                    stopped = Some(error);
                    Ok(None)
                }
            }
        });
        match waited {
            Ok(Some(value)) => Ok(value),
            Ok(None) => {
                Err(stopped.unwrap_or_else(|| anyhow::anyhow!("stopped waiting until {what}")))
            }
            Err(timed_out) => Err(timed_out.into()),
        }
    }

    pub fn progress(&self, id: FigureId, run: usize, variant: &str, text: &str) {
        println!("{id} run {run}/{}  {variant:<28} {text}", self.runs);
    }
}

/// A small deterministic random number generator (SplitMix64): seeded runs repeat exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64
    }
}

/// Stops a stack from the harness in order: HAProxy first, with SIGTERM, so its master
/// stops and reaps its worker (dropping the stack alone would SIGKILL the master and leave
/// the worker to exit by itself), then every origin server (SIGKILL and reap, on drop).
pub fn stop_stack(mut stack: driver::Stack) {
    let haproxy = stack.haproxy_mut();
    haproxy.kill(driver::Signal::SIGTERM);
    let _ = haproxy.wait_exit(Duration::from_secs(5));
    drop(stack);
}

/// Runs `command` to completion with its output captured, killing it if it takes longer
/// than `limit` (or on Ctrl-C).
pub fn output_within(bench: &Bench, command: &mut Command, limit: Duration) -> Result<Output> {
    let line = cmd::display(command);
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`: is it installed?"))?;
    let readers = [
        child
            .stdout
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|pipe| Box::new(pipe) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    });
    let waited = bench.wait_until(limit, &format!("`{line}` ends"), || {
        Ok(child
            .try_wait()
            .context("could not wait for a child")?
            .ok_or_else(|| "still running".to_owned()))
    });
    let status = match waited {
        Ok(status) => status,
        Err(why) => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{why}; it was stopped");
        }
    };
    let [stdout, stderr] = readers.map(|reader| reader.join().unwrap_or_default());
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_odd_and_even_runs() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn formats_cells() {
        assert_eq!(thousands(54120.0), "54,120");
        assert_eq!(thousands(999.0), "999");
        let series = Series::new("ours", vec![0.7, 0.55, 0.62], Unit::Seconds);
        assert_eq!(series.cell(), "0.62 s [0.55–0.70]");
        let same = Series::new("ours", vec![14861.0; 3], Unit::Bytes);
        assert_eq!(same.cell(), "14,861 B (every run)");
    }

    #[test]
    fn seeded_random_numbers_repeat_and_stay_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            let x = a.unit();
            assert!((0.0..1.0).contains(&x));
            assert_eq!(x, b.unit());
        }
    }
}
