//! P4: ten planned redeploys of api-main in a row under steady fixed-rate load, with
//! `cargo xtask redeploy api` and with a cold restart (`cargo xtask restart --cold api-main`).
//! P11: ten restarts the same way, with the socket `up` holds (`cargo xtask restart api-main`)
//! and without it (`--cold`).
//!
//! Both run against a `cargo xtask up` of this very binary (a copy, see [`Bench::xtask`]), with
//! its own `--stack-dir` and a free port, so a developer's stack on target/stack is never
//! touched.

use std::{
    env, fs,
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use driver::{http::Request, ProcessSpec, ServerProcess};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use super::harness::{
    output_within, thousands, Bench, Figure, FigureId, Goal, Series, Summary, Unit,
};
use crate::loadgen::{self, LoadReport, LoadSpec};

/// Redeploys (or restarts) per run.
const OPERATIONS: usize = 10;
/// The steady load: requests per second, over these paths in turn.
const RATE_PER_S: u32 = 1000;
const PATHS: [&str; 2] = ["/", "/api/data"];
const CONNECTIONS: usize = 32;
/// The load's own bound: it stops by itself after this, whatever happens.
const LOAD_BOUND: Duration = Duration::from_secs(240);
/// One redeploy or restart request may take this long.
const OPERATION_LIMIT: Duration = Duration::from_secs(90);
/// Longest wait for the site to be healthy again after an operation, and for `up` to start.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between an operation's end (site healthy) and the next one: planned deploys are
/// not back to back.
const BETWEEN: Duration = Duration::from_secs(1);
/// How long `up` may take to stop everything after SIGTERM (origins drain for up to 10 s).
const STOP_LIMIT: Duration = Duration::from_secs(30);
/// How api-main is replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// `cargo xtask redeploy api`.
    Redeploy,
    /// `cargo xtask restart api-main`: a new process on the socket `up` holds, then the old
    /// one stops.
    Restart,
    /// `cargo xtask restart --cold api-main`: SIGTERM, wait for the exit, close the socket,
    /// start again on a new socket at the same port (a service without socket activation).
    RestartCold,
}

impl Method {
    fn label(self) -> &'static str {
        match self {
            Method::Redeploy => "redeploy api",
            Method::Restart => "restart, socket held",
            Method::RestartCold => "cold restart",
        }
    }

    fn args(self) -> &'static [&'static str] {
        match self {
            Method::Redeploy => &["redeploy", "api"],
            Method::Restart => &["restart", "api-main"],
            Method::RestartCold => &["restart", "--cold", "api-main"],
        }
    }
}

/// A `cargo xtask up` started by the benchmark, in a process group of its own; dropping it
/// stops the stack (SIGTERM, bounded) and kills any server still named in its pid files.
struct Up {
    process: ServerProcess,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Up {
    /// `up` on a free loopback port, or across hosts (`--hosts`: the site on the VIP).
    fn start(bench: &Bench, hosts: bool) -> Result<Up> {
        let name = if hosts { "p14-stack" } else { "p4-stack" };
        let dir = env::current_dir()?.join(&bench.dir).join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("could not clear {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
        let (addr, place) = if hosts {
            (
                SocketAddr::from((driver::VIP, driver::SITE_PORT)),
                vec!["--hosts".to_owned()],
            )
        } else {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, driver::free_port()));
            (addr, vec!["--listen".to_owned(), addr.to_string()])
        };
        let spec = ProcessSpec::new("xtask up", &bench.xtask)
            .arg("--stack-dir")
            .arg(&dir)
            .args(["up", "--no-build"])
            .args(place)
            .log_file(dir.join("up.out"))
            // Ctrl-C reaches the benchmark, whose guards then stop this stack in order.
            .own_process_group();
        let process = ServerProcess::try_spawn(spec)
            .map_err(|failed| anyhow!("could not start `cargo xtask up`: {}", failed.1))?;
        let mut up = Up { process, dir, addr };
        up.wait_healthy(bench, "the stack to start")?;
        Ok(up)
    }

    fn xtask(&self, bench: &Bench, args: &[&str]) -> Result<String> {
        let mut command = Command::new(&bench.xtask);
        command.arg("--stack-dir").arg(&self.dir).args(args);
        let output = output_within(bench, &mut command, OPERATION_LIMIT)?;
        let text = crate::cmd::all_output(&output);
        if !output.status.success() {
            bail!(
                "`cargo xtask {}` failed ({}):\n{text}",
                args.join(" "),
                output.status
            );
        }
        Ok(text)
    }

    /// Waits until `/` is the dashboard (no maintenance) and `/api/healthz` answers 200.
    fn wait_healthy(&mut self, bench: &Bench, what: &str) -> Result<Duration> {
        let started = Instant::now();
        let waited = bench.wait_until(HEALTHY_DEADLINE, what, || {
            if let Some(status) = self.process.exit_status() {
                bail!("`cargo xtask up` exited ({status})");
            }
            let get = |path: &str| {
                Request::get(&format!("http://{}{path}", self.addr))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .map(|answer| answer.status)
                    .unwrap_or(0)
            };
            let (page, api) = (get("/"), get("/api/healthz"));
            Ok(if page == 200 && api == 200 {
                Ok(())
            } else {
                Err(format!("/ {page}, /api/healthz {api}"))
            })
        });
        waited
            .map(|()| started.elapsed())
            .map_err(|error| anyhow::anyhow!("{error}\n{}", self.log_tail()))
    }

    fn log_tail(&self) -> String {
        self.process.log_tail(40)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.process.terminate(STOP_LIMIT);
        // `up` stops its servers itself; should it have been killed, stop what it left.
        for (_, pid) in crate::files::live_processes(&self.dir) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// One run: the steady load, `OPERATIONS` replacements of api-main, the load's report.
fn one_run(bench: &Bench, up: &mut Up, method: Method) -> Result<(LoadReport, Vec<f64>)> {
    let spec = LoadSpec {
        rate_per_s: RATE_PER_S,
        duration: LOAD_BOUND,
        connections: CONNECTIONS,
        ..LoadSpec::new(up.addr, PATHS)
    };
    let load = loadgen::start(spec)?;
    // The load runs a moment before the first operation, and after the last.
    bench.pause(BETWEEN)?;
    let mut durations = Vec::new();
    for _ in 0..OPERATIONS {
        bench.check_interrupt()?;
        if load.is_finished() {
            bail!("the load's {LOAD_BOUND:?} bound ended before the {OPERATIONS} operations");
        }
        let started = Instant::now();
        up.xtask(bench, method.args())?;
        up.wait_healthy(bench, "api-main to be back after the operation")?;
        durations.push(started.elapsed().as_secs_f64());
        bench.pause(BETWEEN)?;
    }
    Ok((load.stop(), durations))
}

/// Measures P4.
pub fn measure(bench: &Bench) -> Result<Figure> {
    compare(
        bench,
        FigureId::P4,
        [Method::Redeploy, Method::RestartCold],
        "0 failed requests (every run)",
        "Ours: `cargo xtask redeploy api` (a new api-main on a new port, HAProxy's slot moved \
         to it with the runtime API, the old one drained and stopped). Comparator: `cargo \
         xtask restart --cold api-main`, a restart without a held socket (SIGTERM, wait for \
         the exit, start again on a new socket at the same port), under the same load.",
    )
}

/// Measures P11.
pub fn measure_restarts(bench: &Bench) -> Result<Figure> {
    compare(
        bench,
        FigureId::P11,
        [Method::Restart, Method::RestartCold],
        "0 failed requests and 0 maintenance answers (every run)",
        "Ours: `cargo xtask restart api-main`: `up` holds api-main's listening socket and \
         hands it to the new process (file descriptor 3, `LISTEN_FDS=1`, as systemd's \
         socket units do); the new process serves next to the old one, then the old one gets \
         SIGTERM. Comparator: `cargo xtask restart --cold api-main` (the old one stops, the \
         socket closes, a new one is bound at the same port), under the same load.",
    )
}

/// Measures P14: P4 across hosts.
pub fn measure_across_hosts(bench: &Bench) -> Result<Figure> {
    if !nix::unistd::geteuid().is_root() {
        anyhow::bail!("P14 runs `up --hosts` (network namespaces): run the benchmark as root");
    }
    compare(
        bench,
        FigureId::P14,
        [Method::Redeploy, Method::RestartCold],
        "0 failed requests and 0 maintenance answers (every run)",
        "Ours: `cargo xtask redeploy api` across hosts: a new api-main on its host's other \
         port (8080 or 8081), probed from lb-a, both load balancers' slots moved to it with \
         the runtime API, the old one drained and stopped. Comparator: `cargo xtask restart \
         --cold api-main` on its host, under the same load.",
    )
}

/// Runs `methods` (ours, then the comparator) alternately on one stack, `bench.runs` times;
/// P14's stack runs across hosts.
fn compare(
    bench: &Bench,
    id: FigureId,
    methods: [Method; 2],
    goal: &str,
    variants: &str,
) -> Result<Figure> {
    let hosts = id == FigureId::P14;
    let mut up = Up::start(bench, hosts)?;
    let mut failures = [Vec::new(), Vec::new()];
    let mut maintenance = [Vec::new(), Vec::new()];
    let mut findings = Vec::new();
    for run in 1..=bench.runs {
        for (variant, method) in methods.into_iter().enumerate() {
            let (report, durations) = one_run(bench, &mut up, method)?;
            let failed = report.failed + report.http_5xx + report.unsent;
            bench.progress(
                id,
                run,
                method.label(),
                &format!(
                    "{failed} failed, {} maintenance answers of {} sent",
                    report.maintenance, report.sent
                ),
            );
            let mean = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
            let errors: Vec<String> = report
                .errors
                .iter()
                .map(|(error, count)| format!("{count} × {error}"))
                .collect();
            findings.push(format!(
                "run {run}, {}: {} sent ({:.0} req/s), {} ok, {} failed (no answer), {} 5xx, \
                 {} unsent, {} maintenance answers, {} late; latency p50 {:.1} ms, p99 {:.1} \
                 ms, max {:.0} ms; each operation until the site was healthy again took {:.2} s \
                 on average{}",
                method.label(),
                thousands(report.sent as f64),
                report.achieved_rate(),
                thousands(report.ok as f64),
                report.failed,
                report.http_5xx,
                report.unsent,
                thousands(report.maintenance as f64),
                thousands(report.late as f64),
                report.p50.as_secs_f64() * 1000.0,
                report.p99.as_secs_f64() * 1000.0,
                report.max.as_secs_f64() * 1000.0,
                mean,
                if errors.is_empty() {
                    String::new()
                } else {
                    format!("; failures: {}", errors.join("; "))
                }
            ));
            failures[variant].push(failed as f64);
            maintenance[variant].push(report.maintenance as f64);
        }
    }
    drop(up);
    let detail = |variant: usize| {
        let values = &maintenance[variant];
        let summary = Summary::of(values).map_or((0.0, 0.0, 0.0), |s| (s.median, s.min, s.max));
        format!(
            "maintenance answers {} [{}–{}]",
            thousands(summary.0),
            thousands(summary.1),
            thousands(summary.2)
        )
    };
    let ours_clean = maintenance[0].iter().all(|&answers| answers == 0.0);
    let [ours_failures, base_failures] = failures;
    let mut ours = Series::new(methods[0].label(), ours_failures, Unit::Count);
    ours.detail = Some(detail(0));
    let mut comparator = Series::new(methods[1].label(), base_failures, Unit::Count);
    comparator.detail = Some(detail(1));
    let no_failures = ours.summary().is_some_and(|s| s.max == 0.0);
    // P4's goal is about failed requests alone; P11's and P14's also about maintenance.
    let met = no_failures && (id == FigureId::P4 || ours_clean);
    Ok(Figure {
        id,
        goal: Goal {
            text: goal.to_owned(),
            met,
        },
        findings,
        method: format!(
            "`cargo xtask up --no-build{}` of this xtask binary (release origin servers, \
             haproxy.cfg as is) with its own `--stack-dir` (target/bench/{}){}. Per run, the load generator (xtask/src/loadgen.rs: open loop, \
             fixed rate, keep-alive) sends {RATE_PER_S} requests/s over {CONNECTIONS} \
             connections to {} in turn; after 1 s, api-main is replaced {OPERATIONS} times in \
             a row, each time waiting until `/` is the dashboard and `/api/healthz` answers \
             200 again, then 1 s more; the load stops 1 s after the last one. A failed \
             request is one with no complete answer (refused, reset, timed out), a 5xx that is \
             not a maintenance answer, or one never sent; a maintenance answer is a 503 saying \
             \"maintenance\" (HAProxy's page or the API fallback's JSON). Variants alternate \
             within each run on the same stack.\n\n{variants}",
            if hosts { " --hosts" } else { "" },
            if hosts { "p14-stack" } else { "p4-stack" },
            if hosts {
                ": each server in a network namespace of its own, two HAProxy behind \
                 keepalived's VIP, the load through the VIP"
            } else {
                " on a free loopback port"
            },
            PATHS
                .iter()
                .map(|p| format!("`{p}`"))
                .collect::<Vec<_>>()
                .join(" and "),
        ),
        ours,
        comparator,
    })
}
