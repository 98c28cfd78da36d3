//! Overload is not an outage: a sustained crowd on `/api/data` and `/` waits in HAProxy's
//! queue (per-server `maxconn`) instead of marking a main server down, no visitor gets the
//! maintenance page, and a real crash during the same crowd still turns the site to
//! maintenance. How long each takes is measured by `cargo xtask bench --only P8,P9`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use driver::http::Response;
use driver::{expect, workspace_root, Role, Signal, Stack};
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// How long the crowd runs before the crash: long enough for several health checks
/// (`inter 500ms`) to see a saturated origin.
const CROWD: Duration = Duration::from_secs(6);
/// Clients on `/api/data` sending one request after the other, each on a new connection:
/// this many times api-main's `maxconn`, so HAProxy's queue never empties.
const API_CLIENTS_PER_SLOT: u64 = 3;
/// Clients on `/`, as a share of static-main's `maxconn`: enough to keep it busy too.
const STATIC_CLIENTS_PER_SLOT: f64 = 0.5;
/// Each client's request gives up after this long (queue, connect and answer together).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for the crash to show as maintenance; the bench measures the real figure.
const DETECTION: Duration = Duration::from_secs(10);
/// Upper bound of requests over the whole test, whatever the machine's speed.
const MAX_REQUESTS: usize = 400_000;

/// What one request of the crowd got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    /// 2xx.
    Served,
    /// The maintenance page or `{"status":"maintenance"}`.
    Maintenance,
    /// Another status, or no answer within the timeout.
    Failed,
}

fn classify(stack: &Stack, answer: &std::io::Result<Response>) -> Seen {
    match answer {
        Ok(response) if (200..300).contains(&response.status) => Seen::Served,
        Ok(response)
            if response.status == 503
                && (response.body == stack.www_file("maintenance.html")
                    || response.text().contains("\"maintenance\"")) =>
        {
            Seen::Maintenance
        }
        _ => Seen::Failed,
    }
}

/// `maxconn` of `server` in haproxy.cfg: the limit this test must exceed to saturate it.
fn maxconn_in_config(server: &str) -> u64 {
    let config = std::fs::read_to_string(workspace_root().join("haproxy.cfg"))
        .expect("haproxy.cfg is at the workspace root");
    config
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with(&format!("server {server} ")))
        .find_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|word| *word == "maxconn")?;
            words.next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("haproxy.cfg gives `server {server}` no `maxconn N`"))
}

/// `timeout <name>` of haproxy.cfg's defaults, in milliseconds.
fn timeout_in_config(name: &str) -> u64 {
    let config = std::fs::read_to_string(workspace_root().join("haproxy.cfg"))
        .expect("haproxy.cfg is at the workspace root");
    let value = config
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix(&format!("timeout {name} ")))
        .unwrap_or_else(|| panic!("haproxy.cfg has no `timeout {name}`"))
        .trim();
    let (number, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let number: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("`timeout {name} {value}`?"));
    match unit {
        "ms" => number,
        "s" | "" => number * 1000,
        other => panic!("`timeout {name} {value}`: unit {other:?} not understood"),
    }
}

/// A queued answer that does arrive must arrive before the dashboard gives up on it, or a
/// crowd would send every open dashboard to the maintenance page: its request timeout must
/// exceed HAProxy's longest queue wait plus a second for the answer itself (under overload the
/// bench measures p99 well below that).
#[test]
fn dashboard_waits_longer_than_haproxy_queues() {
    let script = std::fs::read_to_string(workspace_root().join("www/assets/dashboard.js"))
        .expect("www/assets/dashboard.js exists");
    let timeout_ms: u64 = script
        .lines()
        .find_map(|line| line.trim().strip_prefix("const TIMEOUT_MS = "))
        .and_then(|rest| rest.trim_end_matches(';').trim().parse().ok())
        .expect("dashboard.js declares `const TIMEOUT_MS = <ms>;`");
    let queue_ms = timeout_in_config("queue");
    assert!(
        timeout_ms >= queue_ms + 1000,
        "dashboard.js gives a request {timeout_ms} ms, but HAProxy may queue one for \
         {queue_ms} ms (`timeout queue`) before it is even sent: raise TIMEOUT_MS to at least \
         {} or lower `timeout queue`",
        queue_ms + 1000
    );
}

#[test]
fn a_crowd_queues_and_a_crash_still_turns_to_maintenance() {
    let mut stack = Stack::start();
    let crowd: Vec<(&str, u64)> = vec![
        (
            "/api/data",
            API_CLIENTS_PER_SLOT * maxconn_in_config("api-main"),
        ),
        (
            "/",
            (STATIC_CLIENTS_PER_SLOT * maxconn_in_config("static-main") as f64) as u64,
        ),
    ];
    let stop = AtomicBool::new(false);
    let sent = AtomicUsize::new(0);
    let mut worst_queue = 0;
    let mut not_up = Vec::new();
    let mut marked_down = 0;
    let mut crashed_at = None;
    let mut detected_after = None;

    let seen: Vec<(Instant, Seen)> = thread::scope(|scope| {
        let stack = &stack;
        let started = Instant::now();
        let clients: Vec<_> = crowd
            .iter()
            .flat_map(|&(path, clients)| (0..clients).map(move |_| path))
            .map(|path| {
                let (stop, sent) = (&stop, &sent);
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    // Bounded in time even if the test fails before it sets `stop`.
                    while !stop.load(Ordering::Relaxed)
                        && started.elapsed() < CROWD + DETECTION + REQUEST_TIMEOUT
                        && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                    {
                        let answer = stack.request(path).timeout(REQUEST_TIMEOUT).send();
                        seen.push((Instant::now(), classify(stack, &answer)));
                    }
                    seen
                })
            })
            .collect();

        // The crowd: HAProxy's queue, and the main servers' states every 100 ms.
        while started.elapsed() < CROWD {
            let rows = stack.stat_rows().expect("HAProxy's runtime API answers");
            let mut downs_now = 0;
            for row in &rows {
                let is_main = [Role::StaticMain, Role::ApiMain]
                    .iter()
                    .any(|role| row.backend == role.backend() && row.server == role.name());
                if row.server == "BACKEND" {
                    worst_queue = worst_queue.max(row.count("qmax"));
                } else if is_main {
                    if row.status != "UP" && not_up.len() < 20 {
                        not_up.push(format!("{}/{}: {}", row.backend, row.server, row.status));
                    }
                    downs_now += row.count("chkdown");
                }
            }
            marked_down = marked_down.max(downs_now);
            thread::sleep(Duration::from_millis(100));
        }

        // A real crash in the same crowd (the guard reaps it below, once the crowd is gone).
        let pid = Pid::from_raw(i32::try_from(stack.server(Role::ApiMain).pid()).unwrap());
        crashed_at = Some(Instant::now());
        kill(pid, Signal::SIGKILL).expect("api-main can be killed");
        let (_, took) = stack.wait_for_status("/", 503, DETECTION);
        detected_after = Some(took);
        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|client| client.join().expect("a crowd client panicked"))
            .collect()
    });
    let api_main = stack.server_mut(Role::ApiMain);
    assert!(
        api_main.wait_exit(Duration::from_secs(5)).is_some(),
        "api-main survived SIGKILL: {api_main:?}"
    );
    let crashed_at = crashed_at.expect("the crash happened");
    let before: Vec<Seen> = seen
        .iter()
        .filter(|(at, _)| *at < crashed_at)
        .map(|(_, seen)| *seen)
        .collect();
    let count = |what: Seen| before.iter().filter(|seen| **seen == what).count();
    let clients: u64 = crowd.iter().map(|(_, clients)| clients).sum();
    eprintln!(
        "overload: {clients} clients, {} answers before the crash ({} served, {} maintenance, \
         {} failed), HAProxy's queue up to {worst_queue}; crash -> maintenance in {:.2?}",
        before.len(),
        count(Seen::Served),
        count(Seen::Maintenance),
        count(Seen::Failed),
        detected_after.unwrap_or_default()
    );
    assert!(
        worst_queue > 0,
        "the crowd of {clients} clients never made HAProxy queue a request, so this test did \
         not overload anything: raise API_CLIENTS_PER_SLOT"
    );
    assert_eq!(
        marked_down,
        0,
        "HAProxy marked a main server down {marked_down} time(s) while it was only busy; \
         states seen: {not_up:?}\n{}",
        stack.logs(20)
    );
    assert!(
        not_up.is_empty(),
        "a main server left UP while only busy: {not_up:?}\n{}",
        stack.logs(20)
    );
    assert_eq!(
        count(Seen::Maintenance),
        0,
        "{} of {} answers before the crash were the maintenance page while every server was \
         up and only busy\n{}",
        count(Seen::Maintenance),
        before.len(),
        stack.logs(20)
    );
    assert_eq!(
        count(Seen::Failed),
        0,
        "{} of {} requests before the crash got no answer or an error\n{}",
        count(Seen::Failed),
        before.len(),
        stack.logs(20)
    );
    let page = stack.get("/");
    expect::maintenance_page(&stack, &page, "GET / after api-main crashed in a crowd");
}
