//! `cargo xtask redeploy static|api`: a new main server takes over its tier without a single
//! failed request.
//!
//! Restarting a main server in place always leaves a gap: either HAProxy's checks see it down
//! and the site shows the maintenance page, or requests meet a closed port (measured: see
//! docs/HAPROXY.md). A redeploy never closes the port HAProxy sends to. The new
//! process starts next to the old one on a port of its own, and HAProxy's runtime API moves
//! the server slot (`api/api-main`) to the new port in one step: `set server ... addr ... port`.
//! The slot stays UP throughout, so neither the maintenance rule (`srv_is_up`) nor the
//! backup server ever notices. Then the old process drains: SIGTERM makes it finish its
//! in-flight requests and close its connections, and HAProxy opens new ones, to the new port.
//!
//! The supervisor (`cargo xtask up`) runs the steps, because it owns the processes; this verb
//! asks it over `control.sock` and prints its progress:
//!
//! 1. start the new main server (same role and flags, new build id, `--listen 127.0.0.1:0`);
//! 2. wait until it answers its health check directly, with the new build id;
//! 3. switch HAProxy's server slot to the new port;
//! 4. wait until HAProxy reports the slot UP on the new port and sends it traffic;
//! 5. let the old process drain: wait until HAProxy holds no connection to it, for a short
//!    bound (HAProxy keeps its kept-alive connections to the old port while they are busy);
//! 6. SIGTERM the old process and wait for it to exit (bounded, then SIGKILL).
//!
//! A failure in steps 1 to 4 stops the new process (and in step 4 switches HAProxy back), so
//! the old one never stops serving.

use std::{
    fs,
    io::{self, Write},
    net::SocketAddr,
    sync::mpsc::Sender,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use driver::{
    http::Request, poll_until, ProcessSpec, Role, RuntimeApi, Server, ServerProcess, Tier,
};

use crate::{
    cmd, control,
    files::{note_in_log, write_runtime_files},
};

/// How long the new server may take to answer its health check once it printed its address.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long HAProxy may take to report the slot UP on the new port and send it traffic.
/// Its checks run every 500 ms (haproxy.cfg), so one check fits many times over.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the old server may keep connections from HAProxy before it is told to stop.
/// HAProxy reuses a busy kept-alive connection for as long as its client keeps sending, so
/// under load this bound is what ends the wait; SIGTERM then drains the rest gracefully.
const DRAIN_BOUND: Duration = Duration::from_secs(1);
/// One probe's limit (health check, metrics, runtime API).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the old server may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// `cargo xtask redeploy <tier> [--build-id ID]`: asks the running `cargo xtask up` and
/// prints its progress as it comes.
pub fn request(tier: Tier, build_id: Option<&str>) -> Result<()> {
    let line = match build_id {
        Some(id) => {
            check_build_id(id)?;
            format!("redeploy {tier} {id}")
        }
        None => format!("redeploy {tier}"),
    };
    let done = control::request_with_progress(&line, |progress| println!("{progress}"))?;
    println!("{done}");
    Ok(())
}

/// A build id goes on a command line and into JSON: letters, digits, `.`, `_`, `-`.
pub fn check_build_id(id: &str) -> Result<()> {
    let fits = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !fits {
        bail!(
            "`{id}` is not a usable build id: use 1 to 64 letters, digits, `.`, `_` or `-`, \
             such as `v2` or `3f9c2e1-1760000000`"
        );
    }
    Ok(())
}

/// The default build id of a redeploy: the old id's base with the current unix time,
/// `3f9c2e1-1760000000` → `3f9c2e1-1760000123`; never the old id itself.
pub fn next_build_id(old: &str, now_unix_s: u64) -> String {
    let base = old
        .rsplit_once('-')
        .filter(|(base, stamp)| {
            let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            !base.is_empty()
                && match stamp.split_once('.') {
                    Some((seconds, n)) => digits(seconds) && digits(n),
                    None => digits(stamp),
                }
        })
        .map_or(old, |(base, _)| base);
    let id = format!("{base}-{now_unix_s}");
    if id != old {
        return id;
    }
    // A second redeploy within the same second.
    format!("{base}-{now_unix_s}.2")
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Progress lines of a request being answered: printed on `up`'s terminal and streamed to
/// the client as `progress ...` lines before the final `ok`/`error` line.
pub struct Progress<'a> {
    reply: &'a Sender<String>,
}

impl<'a> Progress<'a> {
    /// Progress that goes to `reply` (and `up`'s stdout).
    pub fn new(reply: &'a Sender<String>) -> Self {
        Progress { reply }
    }

    fn say(&self, line: &str) {
        let _ = writeln!(io::stdout(), "up: {line}");
        let _ = self.reply.send(format!("progress {line}"));
    }
}

/// The supervisor's record of the server being replaced; a successful redeploy updates it.
pub struct Slot<'a> {
    /// Which server.
    pub role: Role,
    /// Its process, if it runs.
    pub process: &'a mut Option<ServerProcess>,
    /// Where it listens.
    pub listen: &'a mut SocketAddr,
    /// Which build it runs.
    pub build_id: &'a mut String,
}

/// Runs the six steps (see the module docs): `spec` starts the new server with `build_id`
/// on a port of its own; `api` is HAProxy's runtime API.
pub fn hand_over(
    slot: Slot<'_>,
    spec: ProcessSpec,
    build_id: &str,
    api: &RuntimeApi,
    progress: &Progress<'_>,
) -> Result<String> {
    let started = Instant::now();
    let role = slot.role;
    let server = Server::Origin(role);
    let slot_name = format!("{}/{role}", role.backend());
    let before = api.server_state(role).with_context(|| {
        format!("nothing was changed: HAProxy's view of {slot_name} is needed first")
    })?;
    let old_pid = slot.process.as_ref().map(ServerProcess::pid);
    progress.say(&format!(
        "redeploying {role}: build {} -> {build_id}; HAProxy sends {slot_name} to {}:{} ({}), \
         old pid {}",
        slot.build_id,
        before.addr,
        before.port,
        before.describe(),
        old_pid.map_or("none".to_owned(), |pid| pid.to_string())
    ));
    note_in_log(
        server,
        &format!("cargo xtask redeploy: starting build {build_id}"),
    );

    // 1. Start the new server next to the old one. Until step 4 succeeds, dropping `new`
    // stops it again.
    let step = Instant::now();
    let mut new = ServerProcess::try_spawn(spec).map_err(|failed| {
        anyhow!(
            "the new {role} did not start ({}); the old one keeps serving, nothing changed",
            failed.1
        )
    })?;
    let (new_pid, addr) = (new.pid(), new.addr());
    progress.say(&format!(
        "[1/6] started the new {role}, pid {new_pid}, on {addr} ({})",
        took(step)
    ));

    // 2. Healthy by direct HTTP, with the new build.
    let step = Instant::now();
    let mut own_requests = wait_healthy(role.tier(), &mut new, build_id).with_context(|| {
        format!("stopped the new {role} again; the old one keeps serving, nothing changed")
    })?;
    progress.say(&format!(
        "[2/6] it answers GET {} with 200 and build {build_id} ({})",
        role.health_path(),
        took(step)
    ));

    // 3. The switch: one runtime API command.
    let step = Instant::now();
    let answer = api.set_server_addr(role, addr).with_context(|| {
        format!(
            "could not switch HAProxy to the new {role}; stopped it again, the old one keeps \
             serving"
        )
    })?;
    progress.say(&format!(
        "[3/6] HAProxy switched {slot_name} to {addr}: \"{answer}\" ({})",
        took(step)
    ));

    // 4. HAProxy confirms: UP on the new port, and its traffic arrives there.
    let step = Instant::now();
    if let Err(err) = confirm_switch(api, role, addr, &mut own_requests) {
        let back = SocketAddr::new(before.ip().unwrap_or(addr.ip()), before.port);
        let rollback = match api.set_server_addr(role, back) {
            Ok(_) => format!("switched {slot_name} back to {back}"),
            Err(back_err) => format!("could not switch back to {back} either ({back_err:#})"),
        };
        drop(new);
        bail!("{err:#}; stopped the new {role} and {rollback}, where the old one keeps serving");
    }
    progress.say(&format!(
        "[4/6] HAProxy reports {slot_name} UP on {addr} and sends it traffic ({})",
        took(step)
    ));

    // The new process is the server now: the supervisor watches it, `restart` restarts it.
    let old_addr = *slot.listen;
    let old = slot.process.replace(new);
    *slot.listen = addr;
    *slot.build_id = build_id.to_owned();
    write_runtime_files(server, new_pid, addr)?;

    let Some(mut old) = old else {
        return Ok(format!(
            "{role} redeployed: build {build_id} on {addr}, pid {new_pid}, in {} (no old \
             process was running)",
            took(started)
        ));
    };
    let old_pid = old.pid();

    // 5. Drain: HAProxy's connections to the old port.
    let step = Instant::now();
    let drained = poll_until(
        DRAIN_BOUND,
        "HAProxy holds no connection to the old port",
        || match established_on(old_addr.port()) {
            0 => Ok(()),
            left => Err(left),
        },
    );
    progress.say(&match drained {
        Ok(()) => format!(
            "[5/6] the old {role} (pid {old_pid}) holds no connection from HAProxy ({})",
            took(step)
        ),
        Err(_) => format!(
            "[5/6] the old {role} (pid {old_pid}) still holds {} kept-alive connection(s) \
             after {}; SIGTERM lets it finish their requests and close them",
            established_on(old_addr.port()),
            took(step)
        ),
    });

    // 6. Graceful stop of the old process.
    let step = Instant::now();
    let status = old.terminate(STOP_TIMEOUT);
    progress.say(&format!(
        "[6/6] the old {role} (pid {old_pid}) exited ({}) {} after SIGTERM",
        status.map_or("status unknown".to_owned(), cmd::describe),
        took(step)
    ));
    Ok(format!(
        "{role} redeployed: build {build_id} on {addr}, pid {new_pid}, in {}",
        took(started)
    ))
}

fn took(since: Instant) -> String {
    format!("{} ms", since.elapsed().as_millis())
}

/// Polls the new server's health check until it answers 200 with `build_id`. Returns how many
/// requests it answered, for telling HAProxy's requests from ours later.
fn wait_healthy(tier: Tier, new: &mut ServerProcess, build_id: &str) -> Result<u64> {
    let url = new.url(tier.health_path());
    let wanted = format!("\"build\":\"{build_id}\"");
    let mut answered = 0;
    let what = format!("GET {url} answers 200 with build {build_id}");
    let outcome = poll_until(HEALTH_TIMEOUT, &what, || {
        if let Some(status) = new.exit_status() {
            // Nothing more to wait for: hand the exit out as the (successful) outcome.
            return Ok(Err(status));
        }
        let answer = Request::get(&url)
            .timeout(PROBE_TIMEOUT)
            .send()
            .map_err(|err| err.to_string())?;
        answered += 1;
        if driver::contract::is_healthy(answer.status) && answer.text().contains(&wanted) {
            Ok(Ok(answered))
        } else {
            Err(answer.summary())
        }
    });
    match outcome {
        Ok(Ok(answered)) => Ok(answered),
        Ok(Err(status)) => bail!(
            "the new server exited ({}) before it was healthy",
            cmd::describe(status)
        ),
        Err(timed_out) => bail!("the new server is not healthy: {timed_out}"),
    }
}

/// Waits until HAProxy reports the slot UP on `addr`'s port and the new server has answered
/// a request that did not come from us (a health check or a visitor's request).
fn confirm_switch(
    api: &RuntimeApi,
    role: Role,
    addr: SocketAddr,
    own_requests: &mut u64,
) -> Result<()> {
    let mut reached = false;
    let what = format!("HAProxy takes the new server on {addr}");
    poll_until(SWITCH_TIMEOUT, &what, || {
        let state = api.server_state(role).map_err(|err| err.to_string())?;
        let up_here = state.is_up() && state.port == addr.port();
        if !reached {
            // Our metrics request is counted after it is answered, so the total it shows
            // covers exactly our earlier requests and HAProxy's.
            if let Ok(total) = requests_answered(addr) {
                reached = total > *own_requests;
            }
            *own_requests += 1;
        }
        if up_here && reached {
            Ok(())
        } else {
            Err(format!(
                "HAProxy reports {}/{role} at {}:{} {}; {}",
                role.backend(),
                state.addr,
                state.port,
                state.describe(),
                if reached {
                    "the new server did get its traffic"
                } else {
                    "no request of HAProxy's reached the new server"
                }
            ))
        }
    })
    .map_err(|timed_out| anyhow!("{timed_out}"))
}

/// The number of requests a server has answered, from its Prometheus metrics.
fn requests_answered(addr: SocketAddr) -> Result<u64> {
    let url = format!("http://{addr}/metrics");
    let answer = Request::get(&url).timeout(PROBE_TIMEOUT).send()?;
    if answer.status != 200 {
        bail!("GET {url} answered {}", answer.status);
    }
    Ok(sum_requests(&answer.text()))
}

/// Sums `origin_http_requests_total` over its labels.
fn sum_requests(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("origin_http_requests_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|count| count as u64)
        .sum()
}

/// Established TCP connections whose local port is `port`, from /proc/net/tcp{,6}.
fn established_on(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| fs::read_to_string(table).ok())
        .map(|table| count_established(&table, port))
        .sum()
}

fn count_established(table: &str, port: u16) -> usize {
    const ESTABLISHED: &str = "01";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&ESTABLISHED)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_build_id_keeps_the_base_and_changes_the_time() {
        assert_eq!(
            next_build_id("3f9c2e1-1760000000", 1760000123),
            "3f9c2e1-1760000123"
        );
        assert_eq!(
            next_build_id("3f9c2e1-1760000123", 1760000123),
            "3f9c2e1-1760000123.2"
        );
        assert_eq!(
            next_build_id("3f9c2e1-1760000123.2", 1760000124),
            "3f9c2e1-1760000124"
        );
        assert_eq!(next_build_id("v2", 5), "v2-5");
        assert_eq!(next_build_id("e2e-build", 5), "e2e-build-5");
        assert_eq!(next_build_id("-17", 5), "-17-5");
    }

    #[test]
    fn build_ids_are_plain_words() {
        assert!(check_build_id("3f9c2e1-1760000000.2").is_ok());
        assert!(check_build_id("v2_rc").is_ok());
        for bad in ["", "two words", "a\nb", "quote\"", &"x".repeat(65)] {
            assert!(check_build_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sums_the_request_counter_over_its_labels() {
        let metrics = "# HELP origin_http_requests_total HTTP requests answered\n\
            # TYPE origin_http_requests_total counter\n\
            origin_http_requests_total{method=\"GET\",role=\"api-main\",status=\"2xx\"} 41\n\
            origin_http_requests_total{method=\"GET\",role=\"api-main\",status=\"4xx\"} 1\n\
            origin_http_request_duration_seconds_count{role=\"api-main\"} 42\n";
        assert_eq!(sum_requests(metrics), 42);
    }

    #[test]
    fn counts_established_connections_on_a_local_port() {
        // Port 0xA8C2 = 43202: one established (01), one listening (0A); one whose remote
        // port is 43202 (HAProxy's side) does not count.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:A8C2 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
            1: 0100007F:A8C2 0100007F:D431 01 00000000:00000000 00:00000000 00000000\n\
            2: 0100007F:D431 0100007F:A8C2 01 00000000:00000000 00:00000000 00000000\n";
        assert_eq!(count_established(table, 43202), 1);
        assert_eq!(count_established(table, 80), 0);
    }
}
