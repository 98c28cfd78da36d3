//! P12: what HAProxy's 32 KB buffers cost. haproxy.cfg sets `tune.bufsize 32768` so that
//! the Wasm client with std (gloo-timers) and its security headers fit one buffer; this
//! measures HAProxy's resident memory with 1,000 and 5,000 concurrent keep-alive connections
//! under wrk, with the real haproxy.cfg and with a copy at HAProxy's default of 16 KB.

use std::{fs, process::Command, thread, time::Duration};

use anyhow::{bail, Context, Result};
use driver::Stack;

use super::harness::{
    output_within, thousands, Bench, Figure, FigureId, Goal, Series, Summary, Unit,
};
use super::throughput::parse_wrk;

/// Concurrent keep-alive connections, per step.
const CONNECTIONS: [u32; 2] = [1_000, 5_000];
/// The page every connection asks for again and again: answered by HAProxy from memory (so
/// the figure is HAProxy's alone) and small enough for either buffer size.
const PATH: &str = "/maintenance.html";
/// wrk's run per step; anything past the limit is a hang.
const WRK_SECONDS: u32 = 8;
const WRK_LIMIT: Duration = Duration::from_secs(60);
/// How often the worker's memory is read while wrk runs.
const SAMPLE: Duration = Duration::from_millis(200);
/// Goal: at most this much resident memory at 5,000 connections with the shipped buffers.
const GOAL_MB: f64 = 256.0;

/// The file that does not fit 16 KB: the comparator cannot serve it from memory (HAProxy
/// refuses to start), so it leaves that one `http-request return` out.
const TOO_LARGE_FOR_16K: &str = "pkg/client_bg.wasm.gz";

/// The comparator: haproxy.cfg with HAProxy's default buffer, 16 KB, and without the
/// in-memory answer of the file that no longer fits it.
pub fn default_buffer_config(source: &str) -> Result<String> {
    let line = format!("tune.bufsize {}", contract::HAPROXY_BUFSIZE);
    if !source.lines().any(|l| l.trim() == line) {
        bail!("haproxy.cfg has no `{line}` line; update xtask/src/bench/buffers.rs");
    }
    let too_large = |l: &str| {
        l.trim_start().starts_with("http-request return") && l.contains(TOO_LARGE_FOR_16K)
    };
    if !source.lines().any(too_large) {
        bail!("haproxy.cfg does not serve {TOO_LARGE_FOR_16K}; update xtask/src/bench/buffers.rs");
    }
    Ok(source
        .lines()
        .filter(|l| !too_large(l))
        .map(|l| {
            if l.trim() == line {
                l.replace(&line, "tune.bufsize 16384")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n")
}

/// The resident memory of `pid` and its children (HAProxy's master and worker), in MB.
fn resident_mb(pid: u32) -> f64 {
    let rss_kb = |pid: &str| -> u64 {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|status| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    };
    let master = pid.to_string();
    let mut total = rss_kb(&master);
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let parent = fs::read_to_string(format!("/proc/{name}/stat"))
            .ok()
            .and_then(|stat| {
                // The fourth field, after the parenthesised command name.
                let rest = &stat[stat.rfind(')')? + 2..];
                rest.split_whitespace().nth(1).map(str::to_owned)
            });
        if parent.as_deref() == Some(master.as_str()) {
            total += rss_kb(&name);
        }
    }
    total as f64 / 1024.0
}

/// One step: wrk with `connections` against a fresh stack on `config`; HAProxy's peak
/// resident memory while it ran, and wrk's requests per second.
fn one_step(bench: &Bench, config: &std::path::Path, connections: u32) -> Result<(f64, f64)> {
    let stack = Stack::builder().build_id("bench").config(config).start();
    let pid = stack.haproxy().pid();
    let url = stack.url(PATH);
    let mut command = Command::new("wrk");
    command
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{WRK_SECONDS}s"),
        ])
        .args(["--timeout", "10s", "--latency"])
        .arg(&url);
    let mut peak: f64 = resident_mb(pid);
    let output = thread::scope(|scope| {
        let wrk = scope.spawn(|| output_within(bench, &mut command, WRK_LIMIT));
        while !wrk.is_finished() {
            peak = peak.max(resident_mb(pid));
            thread::sleep(SAMPLE);
        }
        wrk.join().expect("the wrk thread")
    })?;
    super::harness::stop_stack(stack);
    let text = String::from_utf8_lossy(&output.stdout);
    let report = parse_wrk(&text).context("wrk's report")?;
    if report.non_2xx + report.socket_errors > report.requests * 0.01 {
        bail!("more than 1 % of the requests failed, so this would measure errors:\n{text}");
    }
    Ok((peak, report.requests_per_s))
}

/// Measures P12.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let shipped = fs::canonicalize("haproxy.cfg").context("could not find haproxy.cfg")?;
    let source = fs::read_to_string(&shipped).context("could not read haproxy.cfg")?;
    let comparator = bench.dir.join("haproxy-bufsize-16k.cfg");
    fs::write(&comparator, default_buffer_config(&source)?)
        .with_context(|| format!("could not write {}", comparator.display()))?;
    // HAProxy runs in the stack's own directory.
    let comparator = fs::canonicalize(&comparator)?;
    let variants = [
        ("32 KB buffers (haproxy.cfg)", shipped.as_path()),
        ("16 KB buffers (HAProxy's default)", comparator.as_path()),
    ];
    // [variant][step] -> peak MB per run.
    let mut peaks = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    let mut findings = Vec::new();
    for run in 1..=bench.runs {
        for (variant, (label, config)) in variants.iter().enumerate() {
            for (step, connections) in CONNECTIONS.into_iter().enumerate() {
                bench.check_interrupt()?;
                let (mb, rps) = one_step(bench, config, connections)?;
                bench.progress(
                    FigureId::P12,
                    run,
                    label,
                    &format!(
                        "{} connections: {mb:.0} MB resident at the peak, {} req/s",
                        thousands(f64::from(connections)),
                        thousands(rps)
                    ),
                );
                findings.push(format!(
                    "run {run}, {label}, {} connections: HAProxy {mb:.0} MB resident at the \
                     peak (master and worker), {} req/s",
                    thousands(f64::from(connections)),
                    thousands(rps)
                ));
                peaks[variant][step].push(mb);
            }
        }
    }
    let series = |variant: usize, label: &str| {
        let [small, large] = &peaks[variant];
        let mut series = Series::new(label, large.clone(), Unit::Megabytes);
        let median = Summary::of(small).map_or(f64::NAN, |s| s.median);
        series.detail = Some(format!(
            "at 5,000 connections; at 1,000: {}",
            Unit::Megabytes.format(median)
        ));
        series
    };
    let ours = series(0, "32 KB buffers");
    let worst = ours.summary().map_or(f64::INFINITY, |s| s.max);
    Ok(Figure {
        id: FigureId::P12,
        goal: Goal {
            text: format!("≤ {GOAL_MB:.0} MB at 5,000 keep-alive connections (every run)"),
            met: worst <= GOAL_MB,
        },
        findings,
        method: format!(
            "A stack from the end-to-end harness per step (HAProxy 2.6 and the four release \
             origins on loopback). wrk -t2 -c<N> -d{WRK_SECONDS}s on `{PATH}`, which HAProxy \
             answers from memory, so every connection is a keep-alive client connection of \
             HAProxy's own and the figure is HAProxy's alone. HAProxy's resident memory (VmRSS \
             of the master and its worker, from /proc) is read every {} ms while wrk runs; the \
             figure is the peak. Ours: haproxy.cfg as shipped (`tune.bufsize {}`: the Wasm \
             client built with std for gloo-timers, {} B gzipped, plus the security \
             headers, needs more than 16 KB). Comparator: a copy with `tune.bufsize 16384` \
             (target/bench/haproxy-bufsize-16k.cfg), HAProxy's default, which also leaves out \
             the in-memory answer for /pkg/client_bg.wasm (at 16 KB HAProxy refuses to start \
             with it). N = 1,000 and 5,000.",
            SAMPLE.as_millis(),
            contract::HAPROXY_BUFSIZE,
            fs::metadata("www/pkg/client_bg.wasm.gz")
                .map_or_else(|_| "?".to_owned(), |m| thousands(m.len() as f64))
        ),
        ours,
        comparator: series(1, "16 KB buffers"),
    })
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_comparator_changes_only_the_buffer_and_the_file_too_large_for_it() {
        let source = fs::read_to_string("../haproxy.cfg").unwrap();
        let copy = default_buffer_config(&source).unwrap();
        let kept: Vec<&str> = source
            .lines()
            .filter(|l| !copy.lines().any(|c| c == *l))
            .collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.iter().any(|l| l.trim() == "tune.bufsize 32768"));
        assert!(kept.iter().any(|l| l.contains(TOO_LARGE_FOR_16K)));
        assert_eq!(copy.lines().count(), source.lines().count() - 1);
        assert!(copy.lines().any(|l| l.trim() == "tune.bufsize 16384"));
        assert!(default_buffer_config("global\n").is_err());
    }
}
