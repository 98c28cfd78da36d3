//! P8 and P9: overload is not an outage.
//!
//! P8 steps a crowd on `/api/data` and `/` (wrk, closed loop: each connection sends its next
//! request when the last one is answered) from what api-main serves at its best latency up to
//! 16× that and the issue's 1,600 connections, and counts what a visitor would notice:
//! answers that are not 2xx (the maintenance page or JSON), main servers marked down,
//! HAProxy's queue. P9 is P1 in such a crowd: api-main killed until `/` answers maintenance.
//! The comparator of both is haproxy.cfg as it was before the per-server `maxconn`
//! (commit fb411fa), in the same run.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use driver::{Role, ServerStat, Stack};

use super::detection::{self, Fault};
use super::harness::{output_within, thousands, Bench, Figure, FigureId, Goal, Series, Unit};
use super::throughput::{parse_wrk, WrkReport};

/// The commit whose haproxy.cfg had no `maxconn` and no `timeout queue`.
const BEFORE: &str = "fb411fa";
/// Connections tried straight at api-main to find where its throughput stops growing.
const CALIBRATION: [u32; 6] = [2, 4, 8, 16, 32, 64];
/// How long each calibration point runs.
const CALIBRATION_SECS: u32 = 2;
/// Multiples of the best-latency concurrency the crowd is stepped through.
const MULTIPLES: [u32; 3] = [1, 4, 16];
/// The crowd that marked api-main down in the issue (1,500 connections), rounded up.
const ISSUE_CONNECTIONS: u32 = 1600;
/// How long each step runs.
const STEP_SECS: u32 = 8;
/// `/` gets this fraction of `/api/data`'s connections (the issue: 100 next to 400).
const STATIC_SHARE: u32 = 4;
/// P9's crowd on `/api/data`: four times api-main's `maxconn` (100), and the issue's first
/// crowd (400 connections on `/api/data`, 100 on `/`).
const P9_CONNECTIONS: u32 = 400;
/// P9's crowd runs this long before the kill.
const P9_WARMUP: Duration = Duration::from_secs(3);
/// Anything longer than this for one wrk run is a hang.
const WRK_LIMIT: Duration = Duration::from_secs(60);
/// Longest wait for both main servers to be UP again after a step.
const RECOVERY: Duration = Duration::from_secs(30);

/// What one step of the crowd did.
#[derive(Clone, Debug)]
struct Step {
    connections: u32,
    multiple: f64,
    api: WrkReport,
    static_tier: WrkReport,
    marked_down: u64,
    from_fallbacks: u64,
    queue_max: [u64; 2],
    slowest_check_ms: u64,
}

impl Step {
    fn not_2xx(&self) -> f64 {
        self.api.non_2xx + self.static_tier.non_2xx
    }

    fn failed(&self) -> f64 {
        self.api.socket_errors + self.static_tier.socket_errors
    }
}

fn wrk(bench: &Bench, url: &str, connections: u32, secs: u32) -> Result<WrkReport> {
    let mut command = Command::new("wrk");
    command
        .arg("-t2")
        .arg(format!("-c{}", connections.max(2)))
        .arg(format!("-d{secs}s"))
        .args(["--latency", "--timeout=5s"])
        .arg(url);
    let output = output_within(bench, &mut command, WRK_LIMIT)?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text)
}

/// The comparator: haproxy.cfg of commit fb411fa, written to target/bench.
fn before_config(bench: &Bench) -> Result<PathBuf> {
    let output = Command::new("git")
        .args(["show", &format!("{BEFORE}:haproxy.cfg")])
        .output()
        .context("could not run git to read the comparator's haproxy.cfg")?;
    if !output.status.success() {
        bail!(
            "`git show {BEFORE}:haproxy.cfg` failed: {}; the comparator needs the repository's \
             history (a full clone)",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let path = bench.dir.join("haproxy-before-overload.cfg");
    fs::write(&path, &output.stdout)
        .with_context(|| format!("could not write {}", path.display()))?;
    path.canonicalize()
        .context("could not resolve the comparator configuration's path")
}

fn variants(bench: &Bench) -> Result<[(&'static str, PathBuf); 2]> {
    Ok([
        ("haproxy.cfg", Path::new("haproxy.cfg").canonicalize()?),
        ("haproxy.cfg of fb411fa", before_config(bench)?),
    ])
}

fn row<'a>(rows: &'a [ServerStat], backend: &str, server: &str) -> Option<&'a ServerStat> {
    rows.iter()
        .find(|row| row.backend == backend && row.server == server)
}

fn count(rows: &[ServerStat], backend: &str, server: &str, field: &str) -> u64 {
    row(rows, backend, server).map_or(0, |row| row.count(field))
}

const MAINS: [Role; 2] = [Role::StaticMain, Role::ApiMain];
const FALLBACKS: [Role; 2] = [Role::StaticFallback, Role::ApiFallback];

/// Runs one step of the crowd against `stack` and reads HAProxy's counters around it.
fn step(bench: &Bench, stack: &Stack, connections: u32, best: u32) -> Result<Step> {
    stack
        .runtime_api("clear counters")
        .context("HAProxy's runtime API did not clear its max counters")?;
    let before = stack.stat_rows().context("`show stat` before the step")?;
    let (api_url, static_url) = (stack.url("/api/data"), stack.url("/"));
    let static_connections = (connections / STATIC_SHARE).max(2);
    let mut slowest_check_ms = 0;
    let (api, static_tier) = thread::scope(|scope| {
        let api = scope.spawn(|| wrk(bench, &api_url, connections, STEP_SECS));
        let static_tier = scope.spawn(|| wrk(bench, &static_url, static_connections, STEP_SECS));
        while !(api.is_finished() && static_tier.is_finished()) {
            if let Ok(rows) = stack.stat_rows() {
                for role in MAINS {
                    let took = count(&rows, role.backend(), role.name(), "check_duration");
                    // A check that timed out or has not finished reads as an unsigned -1.
                    let took = if took > 60_000 { u64::MAX } else { took };
                    slowest_check_ms = slowest_check_ms.max(took);
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        (
            api.join().expect("the wrk thread does not panic"),
            static_tier.join().expect("the wrk thread does not panic"),
        )
    });
    let (api, static_tier) = (api?, static_tier?);
    let after = stack.stat_rows().context("`show stat` after the step")?;
    let delta = |role: Role, field: &str| {
        count(&after, role.backend(), role.name(), field).saturating_sub(count(
            &before,
            role.backend(),
            role.name(),
            field,
        ))
    };
    let marked_down = MAINS.iter().map(|&role| delta(role, "chkdown")).sum();
    let from_fallbacks = FALLBACKS.iter().map(|&role| delta(role, "stot")).sum();
    let queue_max = ["api", "static"].map(|backend| count(&after, backend, "BACKEND", "qmax"));
    for role in MAINS {
        stack.wait_server_status(role, "UP", RECOVERY);
    }
    bench.pause(Duration::from_secs(1))?;
    Ok(Step {
        connections,
        multiple: f64::from(connections) / f64::from(best.max(1)),
        api,
        static_tier,
        marked_down,
        from_fallbacks,
        queue_max,
        slowest_check_ms,
    })
}

/// Where api-main stops serving more by being sent more at once, straight at its port.
fn calibrate(bench: &Bench, stack: &Stack, findings: &mut Vec<String>) -> Result<(u32, f64)> {
    let url = stack.server(Role::ApiMain).url("/api/data");
    let mut points = Vec::new();
    for connections in CALIBRATION {
        bench.check_interrupt()?;
        let report = wrk(bench, &url, connections, CALIBRATION_SECS)?;
        points.push((connections, report));
    }
    let peak = points
        .iter()
        .map(|(_, r)| r.requests_per_s)
        .fold(0.0, f64::max);
    // The best latency at (nearly) full throughput: the fewest requests in flight that reach
    // 90 % of the peak.
    let &(best, ref at_best) = points
        .iter()
        .find(|(_, r)| r.requests_per_s >= 0.9 * peak)
        .context("wrk measured no throughput at all")?;
    let curve: Vec<String> = points
        .iter()
        .map(|(c, r)| {
            format!(
                "{c}: {} req/s, p50 {:.2} ms, p99 {:.2} ms",
                thousands(r.requests_per_s),
                r.p50_ms,
                r.p99_ms
            )
        })
        .collect();
    findings.push(format!(
        "api-main straight at its port, `/api/data`, wrk -d{CALIBRATION_SECS}s by connections: \
         {}. Best latency at full throughput: {best} in flight, {} req/s at p50 {:.2} ms; the \
         steps below are multiples of {best} connections.",
        curve.join("; "),
        thousands(at_best.requests_per_s),
        at_best.p50_ms
    ));
    Ok((best, at_best.requests_per_s))
}

/// Measures P8.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let mut findings = Vec::new();
    let mut totals: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut downs: [u64; 2] = [0, 0];
    let mut table = vec![
        "| config | run | connections /api/data + / | × best | /api/data req/s, p50, p99 | / req/s, p50, p99 | not 2xx | no answer | from fallbacks | marked down | queue max api, static | slowest check |".to_owned(),
        "|---|---|---|---|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    let variants = variants(bench)?;
    let mut best = None;
    for run in 1..=bench.runs {
        for (variant, (label, config)) in variants.iter().enumerate() {
            bench.check_interrupt()?;
            let stack = Stack::builder().build_id("bench").config(config).start();
            let (best, _) = match best {
                Some(known) => known,
                None => *best.insert(calibrate(bench, &stack, &mut findings)?),
            };
            let mut steps: Vec<u32> = MULTIPLES.iter().map(|m| m * best).collect();
            steps.push(ISSUE_CONNECTIONS);
            steps.sort_unstable();
            steps.dedup();
            let mut total = 0.0;
            for connections in steps {
                let step = step(bench, &stack, connections, best)?;
                bench.progress(
                    FigureId::P8,
                    run,
                    label,
                    &format!(
                        "{connections} conns: {} req/s /api/data, p99 {:.0} ms, {} not 2xx, {} \
                         marked down, queue max {}",
                        thousands(step.api.requests_per_s),
                        step.api.p99_ms,
                        thousands(step.not_2xx()),
                        step.marked_down,
                        step.queue_max[0]
                    ),
                );
                total += step.not_2xx() + step.failed();
                downs[variant] += step.marked_down;
                table.push(format!(
                    "| {label} | {run} | {} + {} | {:.0}× | {} req/s, {:.1} ms, {:.0} ms | {} req/s, {:.1} ms, {:.0} ms | {} | {} | {} | {} | {}, {} | {} |",
                    step.connections,
                    (step.connections / STATIC_SHARE).max(2),
                    step.multiple,
                    thousands(step.api.requests_per_s),
                    step.api.p50_ms,
                    step.api.p99_ms,
                    thousands(step.static_tier.requests_per_s),
                    step.static_tier.p50_ms,
                    step.static_tier.p99_ms,
                    thousands(step.not_2xx()),
                    thousands(step.failed()),
                    thousands(step.from_fallbacks as f64),
                    step.marked_down,
                    step.queue_max[0],
                    step.queue_max[1],
                    if step.slowest_check_ms == u64::MAX {
                        "timed out".to_owned()
                    } else {
                        format!("{} ms", step.slowest_check_ms)
                    },
                ));
            }
            totals[variant].push(total);
            super::harness::stop_stack(stack);
        }
    }
    findings.push(String::new());
    findings.extend(table);
    findings.push(String::new());
    let [ours_totals, before_totals] = totals;
    let mut ours = Series::new(variants[0].0, ours_totals, Unit::Count);
    ours.detail = Some(format!(
        "answers not 2xx or missing; {} marked down",
        downs[0]
    ));
    let mut comparator = Series::new(variants[1].0, before_totals, Unit::Count);
    comparator.detail = Some(format!(
        "answers not 2xx or missing; {} marked down",
        downs[1]
    ));
    let met = downs[0] == 0 && ours.values.iter().all(|v| *v == 0.0);
    Ok(Figure {
        id: FigureId::P8,
        goal: Goal {
            text: "0 maintenance answers, 0 servers marked down".to_owned(),
            met,
        },
        findings,
        method: format!(
            "A stack from the end-to-end harness (HAProxy 2.6, release origin servers, \
             loopback) per configuration. First wrk runs straight at api-main's port \
             (`/api/data`, {CALIBRATION_SECS} s per point, {calib} connections) and the fewest \
             connections reaching 90 % of the peak throughput is taken as api-main's best \
             latency concurrency B. Then, through HAProxy, steps of {multiples} × B \
             connections and {ISSUE_CONNECTIONS} (the issue's crowd) on `/api/data`, with a \
             quarter as many on `/` at the same time (two wrk processes, -t2, {STEP_SECS} s, \
             --timeout 5s). wrk is closed loop, so B × m connections offer m times what \
             api-main serves at its best latency (Little's law). Per step: throughput and \
             wrk's p50/p99 of each path; `not 2xx` = wrk's non-2xx answers, every one of \
             which is the maintenance page, its JSON or an HAProxy error here; `no answer` = \
             wrk's socket errors; `from fallbacks` = requests HAProxy sent a fallback \
             (`stot`); `marked down` = the main servers' `chkdown` increase; `queue max` = \
             the backends' `qmax` (after `clear counters`); `slowest check` = the largest \
             `check_duration` of a main server sampled every 100 ms (`timed out`: HAProxy reported no duration, i.e. a check did not finish). After each step both \
             main servers must be UP again before the next. The table's cell sums `not 2xx` \
             and `no answer` over all steps. Comparator: `git show {BEFORE}:haproxy.cfg` \
             (no `maxconn`, no `timeout queue`), written to \
             target/bench/haproxy-before-overload.cfg, in the same run. wrk, HAProxy and \
             the origins share the machine's CPUs (and other jobs may run): compare within \
             one run.",
            calib = CALIBRATION.map(|c| c.to_string()).join(", "),
            multiples = MULTIPLES.map(|m| m.to_string()).join(", "),
        ),
        ours,
        comparator,
    })
}

/// Measures P9: P1 (api-main killed until `/` answers maintenance) in a crowd.
pub fn measure_crash(bench: &Bench) -> Result<Figure> {
    let variants = variants(bench)?;
    let mut series = Vec::new();
    let mut findings = Vec::new();
    for (label, config) in &variants {
        let mut stack = Stack::builder().build_id("bench").config(config).start();
        let mut values = Vec::new();
        for run in 1..=bench.runs {
            bench.check_interrupt()?;
            let (api_url, static_url) = (stack.url("/api/data"), stack.url("/"));
            let secs = u32::try_from(P9_WARMUP.as_secs()).unwrap_or(3) + 5;
            let (seconds, reports) = thread::scope(|scope| -> Result<_> {
                let api = scope.spawn(|| wrk(bench, &api_url, P9_CONNECTIONS, secs));
                let static_tier =
                    scope.spawn(|| wrk(bench, &static_url, P9_CONNECTIONS / STATIC_SHARE, secs));
                bench.pause(P9_WARMUP)?;
                let before = stack.server_stat(Role::ApiMain)?;
                if before.status != "UP" {
                    findings.push(format!(
                        "{label}, run {run}: api-main was {} (check {}) before the kill: the \
                         crowd alone had taken it out",
                        before.status, before.check_status
                    ));
                }
                let seconds = detection::one_run(bench, &mut stack, Fault::Crash);
                let reports = (
                    api.join().expect("the wrk thread does not panic"),
                    static_tier.join().expect("the wrk thread does not panic"),
                );
                Ok((seconds?, reports))
            })?;
            let (api, static_tier) = (reports.0?, reports.1?);
            bench.progress(FigureId::P9, run, label, &Unit::Seconds.format(seconds));
            findings.push(format!(
                "{label}, run {run}: crash → maintenance {}; the crowd: /api/data {} req/s \
                 p99 {:.0} ms, / {} req/s p99 {:.0} ms",
                Unit::Seconds.format(seconds),
                thousands(api.requests_per_s),
                api.p99_ms,
                thousands(static_tier.requests_per_s),
                static_tier.p99_ms
            ));
            values.push(seconds);
            for role in MAINS {
                stack.wait_server_status(role, "UP", RECOVERY);
            }
        }
        super::harness::stop_stack(stack);
        series.push(Series::new(*label, values, Unit::Seconds));
    }
    let comparator = series.pop().context("two variants were measured")?;
    let ours = series.pop().context("two variants were measured")?;
    let met = ours.summary().is_some_and(|s| s.median <= 0.5);
    Ok(Figure {
        id: FigureId::P9,
        goal: Goal {
            text: "median ≤ 0.5 s (P1's goal)".to_owned(),
            met,
        },
        findings,
        method: format!(
            "P1 in a crowd. A stack from the end-to-end harness per configuration; wrk sends \
             {P9_CONNECTIONS} connections on `/api/data` (4 × api-main's `maxconn` 100, as in the issue) and \
             {} on `/` for {} s; after {} s api-main gets SIGKILL and `GET /` is polled every \
             10 ms as in P1 (its answers queue behind the crowd like everyone's) until it is \
             the maintenance page; then api-main is restarted and the next run waits until it \
             is UP. Here the crowd's own requests meet the dead port, so `observe layer4` \
             reacts too. Comparator: haproxy.cfg of {BEFORE}, in the same run.",
            P9_CONNECTIONS / STATIC_SHARE,
            P9_WARMUP.as_secs() + 5,
            P9_WARMUP.as_secs()
        ),
        ours,
        comparator,
    })
}
