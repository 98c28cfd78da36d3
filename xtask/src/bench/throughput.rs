//! P5: the static tier through HAProxy under wrk, against Debian's nginx serving the same
//! www/ through the same HAProxy.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use driver::{ProcessSpec, Readiness, Role, ServerProcess, Stack, Tier};
use tempfile::TempDir;

use super::harness::{
    output_within, thousands, Bench, Figure, FigureId, Goal, Series, Summary, Unit,
};

/// The file requested: small, so the figure is about request handling, not bandwidth.
const PATH: &str = "/index.html";
/// wrk's arguments before the URL.
const WRK_ARGS: [&str; 5] = ["-t2", "-c50", "-d10s", "--latency", "--timeout=5s"];
/// wrk runs 10 s; anything past this is a hang.
const WRK_LIMIT: Duration = Duration::from_secs(40);
/// More than this share of non-2xx answers means the figure measures errors, not serving.
const MAX_ERROR_SHARE: f64 = 0.01;

/// What one wrk run reported.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct WrkReport {
    pub(super) requests_per_s: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) requests: f64,
    pub(super) non_2xx: f64,
    pub(super) socket_errors: f64,
}

/// Parses wrk's `--latency` output.
pub(super) fn parse_wrk(text: &str) -> Result<WrkReport> {
    let mut report = WrkReport {
        requests_per_s: f64::NAN,
        p50_ms: f64::NAN,
        p99_ms: f64::NAN,
        requests: f64::NAN,
        non_2xx: 0.0,
        socket_errors: 0.0,
    };
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            report.requests_per_s = rest.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(rest) = line.strip_prefix("50%") {
            report.p50_ms = duration_ms(rest.trim()).unwrap_or(f64::NAN);
        } else if let Some(rest) = line.strip_prefix("99%") {
            report.p99_ms = duration_ms(rest.trim()).unwrap_or(f64::NAN);
        } else if line.contains(" requests in ") {
            report.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(f64::NAN);
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.non_2xx = rest.trim().parse().unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            report.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<f64>().ok())
                .sum();
        }
    }
    if [
        report.requests_per_s,
        report.p50_ms,
        report.p99_ms,
        report.requests,
    ]
    .iter()
    .any(|v| v.is_nan())
    {
        bail!("could not read wrk's output:\n{text}");
    }
    Ok(report)
}

/// `732.00us`, `0.92ms`, `1.20s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    match unit {
        "us" => Some(number / 1000.0),
        "ms" => Some(number),
        "s" => Some(number * 1000.0),
        "m" => Some(number * 60_000.0),
        _ => None,
    }
}

/// Debian's nginx serving a www directory on a loopback port, in a process group of its own;
/// dropping it stops the whole group (master and workers) and reaps the master.
struct Nginx {
    // Held for its Drop: stops nginx.
    _process: ServerProcess,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Nginx {
    fn start(www: &Path) -> Result<Nginx> {
        let dir = tempfile::Builder::new()
            .prefix("bench-nginx-")
            .tempdir()
            .context("could not create a temporary directory for nginx")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, driver::free_port()));
        let config = nginx_config(dir.path(), addr, www);
        let config_path = dir.path().join("nginx.conf");
        fs::write(&config_path, config).context("could not write nginx.conf")?;
        let spec = ProcessSpec::new("nginx", "nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&config_path)
            .args(["-e", "stderr"])
            .readiness(Readiness::Accepts(addr))
            .own_process_group();
        let process = ServerProcess::try_spawn(spec).map_err(|failed| {
            anyhow!(
                "nginx did not start ({}); run `cargo xtask install --bench`",
                failed.1
            )
        })?;
        Ok(Nginx {
            _process: process,
            addr,
            _dir: dir,
        })
    }
}

/// nginx as a plain static server: the CPU count of workers (origin's actix also runs one
/// worker per CPU), no access log (neither origin logs requests: HAProxy's httplog is the
/// access log), sendfile, and a `/healthz` for HAProxy's check.
fn nginx_config(dir: &Path, addr: SocketAddr, www: &Path) -> String {
    let dir = dir.display();
    let www = www.display();
    format!(
        r#"daemon off;
worker_processes auto;
pid {dir}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen {addr};
        root {www};
        location = /healthz {{
            default_type application/json;
            add_header Cache-Control no-store;
            return 200 '{{"status":"ok","tier":"static","build":"{NGINX_BUILD}"}}';
        }}
    }}
}}
"#
    )
}

/// The build id nginx's `/healthz` reports.
const NGINX_BUILD: &str = "nginx";

/// Points HAProxy's `static/static-main` at `addr` through the runtime API and waits until
/// answers come from it (nginx's `/healthz` names build "nginx").
fn point_static_main(
    bench: &Bench,
    stack: &Stack,
    addr: SocketAddr,
    expect_nginx: bool,
) -> Result<()> {
    let command = format!(
        "set server static/static-main addr {} port {}",
        addr.ip(),
        addr.port()
    );
    let answer = stack
        .runtime_api(&command)
        .with_context(|| format!("HAProxy's runtime API did not take `{command}`"))?;
    if !answer.contains("changed") && !answer.trim().is_empty() && !answer.contains("no need") {
        bail!("`{command}` answered {answer:?}");
    }
    let started = Instant::now();
    let mut in_a_row = 0;
    let mut last = String::new();
    while in_a_row < 20 {
        bench.check_interrupt()?;
        // HAProxy removes the `Server` header (haproxy.cfg's security headers), so the
        // static tier's health answer tells who serves: nginx's names build "nginx".
        let response = stack.get(Tier::Static.health_path());
        let from_nginx = response.status == 200 && response.json()["build"] == NGINX_BUILD;
        if response.status == 200 && from_nginx == expect_nginx {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            last = response.summary();
        }
        if started.elapsed() > Duration::from_secs(20) {
            bail!(
                "after `{command}`, {PATH} through HAProxy did not come from {} (last: {last})",
                if expect_nginx { "nginx" } else { "origin" }
            );
        }
    }
    stack.wait_server_status(Role::StaticMain, "UP", Duration::from_secs(20));
    Ok(())
}

fn wrk(bench: &Bench, url: &str) -> Result<WrkReport> {
    let mut command = Command::new("wrk");
    command.args(WRK_ARGS).arg(url);
    let output = output_within(bench, &mut command, WRK_LIMIT)?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report = parse_wrk(&text)?;
    if report.non_2xx + report.socket_errors > report.requests * MAX_ERROR_SHARE {
        bail!(
            "{} of {} requests failed or were not 2xx, so this would measure errors:\n{text}",
            report.non_2xx + report.socket_errors,
            report.requests
        );
    }
    Ok(report)
}

/// Measures P5.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let stack = Stack::builder().build_id("bench").start();
    let nginx = Nginx::start(stack.www_dir())?;
    let origin_addr = stack.server(Role::StaticMain).addr();
    let url = stack.url(PATH);
    let variants = [
        ("origin static-main", origin_addr, false),
        ("nginx", nginx.addr, true),
    ];
    let mut reports: [Vec<WrkReport>; 2] = [Vec::new(), Vec::new()];
    let mut findings = Vec::new();
    for run in 1..=bench.runs {
        // Alternating, so a busy moment of the machine does not favour one variant.
        for (variant, (label, addr, is_nginx)) in variants.iter().enumerate() {
            bench.check_interrupt()?;
            point_static_main(bench, &stack, *addr, *is_nginx)?;
            let report = wrk(bench, &url)?;
            bench.progress(
                FigureId::P5,
                run,
                label,
                &format!(
                    "{} req/s, p50 {:.2} ms, p99 {:.2} ms",
                    thousands(report.requests_per_s),
                    report.p50_ms,
                    report.p99_ms
                ),
            );
            findings.push(format!(
                "run {run}, {label}: {} req/s, p50 {:.2} ms, p99 {:.2} ms, {} requests, {} \
                 non-2xx, {} socket errors",
                thousands(report.requests_per_s),
                report.p50_ms,
                report.p99_ms,
                thousands(report.requests),
                thousands(report.non_2xx),
                thousands(report.socket_errors)
            ));
            reports[variant].push(report);
        }
    }
    point_static_main(bench, &stack, origin_addr, false)?;
    // Where origin's time goes: the same file and its /healthz straight from static-main,
    // without HAProxy (a short run each, for the findings only).
    for path in [PATH, "/healthz"] {
        let mut command = Command::new("wrk");
        command
            .args(["-t2", "-c50", "-d3s", "--latency"])
            .arg(format!("http://{origin_addr}{path}"));
        let output = output_within(bench, &mut command, WRK_LIMIT)?;
        if let Ok(report) = parse_wrk(&String::from_utf8_lossy(&output.stdout)) {
            findings.push(format!(
                "diagnostic, origin static-main without HAProxy, `{path}` (wrk -d3s): {} req/s, p50 {:.2} ms",
                thousands(report.requests_per_s),
                report.p50_ms
            ));
        }
    }
    drop(nginx);
    super::harness::stop_stack(stack);

    let series = |variant: usize, label: &str| {
        let runs = &reports[variant];
        let median = |pick: fn(&WrkReport) -> f64| {
            let values: Vec<f64> = runs.iter().map(pick).collect();
            Summary::of(&values).map_or(f64::NAN, |s| s.median)
        };
        let mut series = Series::new(
            label,
            runs.iter().map(|r| r.requests_per_s).collect(),
            Unit::RequestsPerSecond,
        );
        series.detail = Some(format!(
            "p50 {:.2} ms, p99 {:.2} ms",
            median(|r| r.p50_ms),
            median(|r| r.p99_ms)
        ));
        series
    };
    let ours = series(0, "origin");
    let comparator = series(1, "nginx");
    let met = match (ours.summary(), comparator.summary()) {
        (Some(ours), Some(nginx)) => ours.median >= nginx.median,
        _ => false,
    };
    Ok(Figure {
        id: FigureId::P5,
        goal: Goal {
            text: "at least nginx's req/s".to_owned(),
            met,
        },
        findings,
        method: format!(
            "One stack from the end-to-end harness (HAProxy 2.6 and the release origin \
             servers), and Debian's nginx started from a temporary nginx.conf on a loopback \
             port serving the same www/ (`worker_processes auto`, i.e. one per CPU like \
             origin's actix workers; no access log, as the origin servers keep none either \
             (HAProxy's httplog is the access log); sendfile; a \
             `/healthz` answering 200 for HAProxy's check). HAProxy's `static/static-main` is pointed at one or the other \
             with the runtime API (`set server static/static-main addr ... port ...`), checked \
             by 20 answers in a row coming from the right server (nginx names itself in \
             `Server`), and then `wrk {} http://<haproxy>{PATH}` runs ({} bytes, no \
             compression asked). Variants alternate within each run. wrk, HAProxy and the \
             server share the machine's CPUs, so the numbers compare the two servers behind \
             HAProxy, not their absolute capacity. Latencies in the table are the medians of \
             wrk's p50 and p99.",
            WRK_ARGS.join(" "),
            thousands(
                fs::metadata(Path::new("www").join(PATH.trim_start_matches('/')))
                    .map_or(0.0, |m| m.len() as f64)
            ),
        ),
        ours,
        comparator,
    })
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:8080/index.html
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   813.41us  481.02us  14.30ms   91.29%
    Req/Sec    30.43k     2.11k   35.08k    70.50%
  Latency Distribution
     50%  732.00us
     75%    0.92ms
     90%    1.17ms
     99%    2.47ms
  605447 requests in 10.00s, 129.35MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  60543.87
Transfer/sec:     12.93MB
";

    #[test]
    fn reads_wrk_output() {
        let report = parse_wrk(SAMPLE).unwrap();
        assert_eq!(report.requests_per_s, 60543.87);
        assert!((report.p50_ms - 0.732).abs() < 1e-9);
        assert_eq!(report.p99_ms, 2.47);
        assert_eq!(report.requests, 605_447.0);
        assert_eq!(report.non_2xx, 12.0);
        assert_eq!(report.socket_errors, 3.0);
        assert!(parse_wrk("garbage").is_err());
    }
}
