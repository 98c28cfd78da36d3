//! P13: the load balancer holding the VIP fails under fixed-rate load through the VIP, across
//! hosts (`Stack::builder().hosts()`: network namespaces, two HAProxy behind keepalived; needs
//! root). Ours: lb-a's HAProxy killed, which keepalived's script notices within a second.
//! Comparator: lb-a's host cut off, which lb-b notices only when VRRP adverts stop coming
//! (3 × `advert_int` plus its skew). Measured: time until lb-b alone holds the VIP, and the
//! requests the failover cost.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use driver::{http::Request, BalancerFault, Host, Stack, SITE_PORT, VIP};

use super::harness::{thousands, Bench, Figure, FigureId, Goal, Series, Summary, Unit};
use crate::loadgen::{self, LoadSpec};

/// The steady load through the VIP, as in P4.
const RATE_PER_S: u32 = 1000;
const PATHS: [&str; 2] = ["/", "/api/data"];
const CONNECTIONS: usize = 32;
/// The load's own bound: it stops by itself after this, whatever happens.
const LOAD_BOUND: Duration = Duration::from_secs(60);
/// Longest wait for a VIP move or the site answering again.
const DEADLINE: Duration = Duration::from_secs(20);
/// Load before the fault, and after the site answers again.
const AROUND: Duration = Duration::from_secs(2);
/// The goal for ours: keepalived's script looks once a second (`interval 1`, `fall 1`).
const GOAL_S: f64 = 1.5;

/// How the table names each way lb-a fails.
fn label(fault: BalancerFault) -> &'static str {
    match fault {
        BalancerFault::HaproxyKilled => "HAProxy killed on lb-a",
        BalancerFault::HostCutOff => "lb-a's host cut off",
    }
}

/// One run's figures.
struct Failover {
    /// Seconds from the fault until lb-b alone held the VIP.
    moved: f64,
    /// Requests with no answer, a 5xx that is not maintenance, or never sent.
    failed: u64,
    /// Maintenance answers (there should be none: every origin stays up).
    maintenance: u64,
    /// The load report's line for the findings.
    finding: String,
}

fn one_run(bench: &Bench, fault: BalancerFault) -> Result<Failover> {
    let mut stack = Stack::builder().hosts().start();
    let network = stack.network().context("a hosts stack has a network")?;
    let holders = |network: &driver::Network, expected: &[Host]| {
        let now = network.vip_holders();
        Ok(if now == expected {
            Ok(())
        } else {
            Err(format!("the VIP is on {now:?}"))
        })
    };
    bench.wait_until(DEADLINE, "lb-a holds the VIP", || {
        holders(network, &[Host::LbA])
    })?;
    let site = SocketAddr::from((VIP, SITE_PORT));
    let load = loadgen::start(LoadSpec {
        rate_per_s: RATE_PER_S,
        duration: LOAD_BOUND,
        connections: CONNECTIONS,
        ..LoadSpec::new(site, PATHS)
    })?;
    bench.pause(AROUND)?;
    let started = Instant::now();
    stack.fail_balancer(Host::LbA, fault);
    let network = stack.network().context("a hosts stack has a network")?;
    bench.wait_until(DEADLINE, "lb-b alone holds the VIP", || {
        holders(network, &[Host::LbB])
    })?;
    let moved = started.elapsed().as_secs_f64();
    bench.wait_until(DEADLINE, "the site answers through lb-b", || {
        let status = Request::get(&format!("http://{site}/"))
            .timeout(Duration::from_secs(1))
            .send()
            .map(|answer| answer.status);
        Ok(match status {
            Ok(200) => Ok(()),
            other => Err(format!("{other:?}")),
        })
    })?;
    bench.pause(AROUND)?;
    let report = load.stop();
    drop(stack);
    let failed = report.failed + report.http_5xx + report.unsent;
    let errors: Vec<String> = report
        .errors
        .iter()
        .map(|(error, count)| format!("{count} × {error}"))
        .collect();
    let finding = format!(
        "{}: VIP on lb-b after {moved:.2} s; {} due, {} sent ({:.0} req/s), {} ok, {} failed \
         ({} without an answer, {} 5xx, {} never sent while every connection waited), {} \
         maintenance answers, {} retried on a fresh connection; latency p99 {:.0} ms, max {:.0} \
         ms{}",
        label(fault),
        thousands(report.due as f64),
        thousands(report.sent as f64),
        report.achieved_rate(),
        thousands(report.ok as f64),
        thousands(failed as f64),
        thousands(report.failed as f64),
        report.http_5xx,
        thousands(report.unsent as f64),
        report.maintenance,
        report.retried,
        report.p99.as_secs_f64() * 1000.0,
        report.max.as_secs_f64() * 1000.0,
        if errors.is_empty() {
            String::new()
        } else {
            format!("; failures: {}", errors.join("; "))
        }
    );
    Ok(Failover {
        moved,
        failed,
        maintenance: report.maintenance,
        finding,
    })
}

/// Measures P13.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let faults = [BalancerFault::HaproxyKilled, BalancerFault::HostCutOff];
    let mut moved = [Vec::new(), Vec::new()];
    let mut failed = [Vec::new(), Vec::new()];
    let mut findings = Vec::new();
    for run in 1..=bench.runs {
        for (variant, fault) in faults.into_iter().enumerate() {
            let failover = one_run(bench, fault)?;
            bench.progress(
                FigureId::P13,
                run,
                label(fault),
                &format!(
                    "VIP moved in {:.2} s, {} failed, {} maintenance answers",
                    failover.moved, failover.failed, failover.maintenance
                ),
            );
            findings.push(format!("run {run}, {}", failover.finding));
            moved[variant].push(failover.moved);
            failed[variant].push(failover.failed as f64);
        }
    }
    let detail = |variant: usize| {
        let summary =
            Summary::of(&failed[variant]).map_or((0.0, 0.0, 0.0), |s| (s.median, s.min, s.max));
        format!(
            "failed requests {} [{}–{}] at {} req/s",
            thousands(summary.0),
            thousands(summary.1),
            thousands(summary.2),
            thousands(f64::from(RATE_PER_S))
        )
    };
    let [ours_moved, base_moved] = moved;
    let mut ours = Series::new(label(faults[0]), ours_moved, Unit::Seconds);
    ours.detail = Some(detail(0));
    let mut comparator = Series::new(label(faults[1]), base_moved, Unit::Seconds);
    comparator.detail = Some(detail(1));
    let met = ours.summary().is_some_and(|s| s.max <= GOAL_S);
    Ok(Figure {
        id: FigureId::P13,
        goal: Goal {
            text: format!("VIP on lb-b ≤ {GOAL_S} s after lb-a's HAProxy dies (every run)"),
            met,
        },
        findings,
        method: format!(
            "`Stack::builder().hosts()`: six network namespaces on one bridge (198.18.0.0/24), \
             lb-a (VRRP priority 150) and lb-b (100) each with HAProxy (haproxy.cfg as is) and \
             keepalived (`advert_int 1`, unicast, a `vrrp_script` checking HAProxy's master \
             once a second), the release origin servers on their own hosts. A fresh stack per \
             run and variant. The load generator (xtask/src/loadgen.rs: open loop, fixed rate, \
             keep-alive) sends {RATE_PER_S} requests/s over {CONNECTIONS} connections to \
             `http://{VIP}:{SITE_PORT}` ({}), from the root namespace; after {} s lb-a fails, \
             the time runs until `ip addr` shows the VIP on lb-b and not on lb-a, then the load \
             goes on until `/` answers 200 through the VIP and {} s more. A failed request is \
             one with no complete answer (refused, reset, timed out), a 5xx that is not a \
             maintenance answer, or one never sent.\n\nOurs: lb-a's HAProxy (master and \
             workers, its process group) gets SIGKILL. Comparator: lb-a's `eth0` goes down, \
             as when its host dies or is cut off.",
            PATHS
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" and "),
            AROUND.as_secs(),
            AROUND.as_secs(),
        ),
        ours,
        comparator,
    })
}
