//! `cargo xtask redeploy static|api`: a new main server takes over its tier without a single
//! failed request.
//!
//! Restarting a main server in place always leaves a gap: either HAProxy's checks see it down
//! and the site shows the maintenance page, or requests meet a closed port (measured in
//! /work/shared/HAPROXY.md). A redeploy never closes the port HAProxy sends to. The new
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
    io::{self, Read, Write},
    net::SocketAddr,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::mpsc::Sender,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;

use crate::{
    cmd, control, loadgen,
    up::{self as stack, Role},
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
/// Pause between two polls of a condition.
const POLL: Duration = Duration::from_millis(20);

/// A tier of the site: its main server is what a redeploy replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Tier {
    /// The dashboard's files: static-main, HAProxy backend `static`.
    Static,
    /// The data API: api-main, HAProxy backend `api`.
    Api,
}

impl Tier {
    /// The name on the command line, which is also the HAProxy backend's name.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Static => "static",
            Tier::Api => "api",
        }
    }

    /// The server a redeploy replaces; its name is also the server's name in HAProxy.
    pub fn main_role(self) -> Role {
        match self {
            Tier::Static => Role::StaticMain,
            Tier::Api => Role::ApiMain,
        }
    }

    /// The path whose 200 answer says the main server is healthy.
    fn health_path(self) -> &'static str {
        match self {
            Tier::Static => "/healthz",
            Tier::Api => "/api/healthz",
        }
    }
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

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
    pub child: &'a mut Option<Child>,
    /// Where it listens.
    pub listen: &'a mut SocketAddr,
    /// Which build it runs.
    pub build_id: &'a mut String,
}

/// A child process that is killed and reaped when dropped, unless taken out first.
struct Reaped(Option<Child>);

impl Reaped {
    fn child(&mut self) -> Option<&mut Child> {
        self.0.as_mut()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            stack::kill_and_reap(&mut child);
        }
    }
}

/// Runs the six steps (see the module docs): `command` starts the new server with
/// `build_id`; HAProxy's runtime API answers on `haproxy_socket`.
pub fn hand_over(
    tier: Tier,
    slot: Slot<'_>,
    command: Command,
    build_id: &str,
    haproxy_socket: &Path,
    progress: &Progress<'_>,
) -> Result<String> {
    let started = Instant::now();
    let role = slot.role;
    let (backend, server) = (tier.name(), role.name());
    let api = RuntimeApi::new(haproxy_socket);
    let before = api.server_state(backend, server).with_context(|| {
        format!("nothing was changed: HAProxy's view of {backend}/{server} is needed first")
    })?;
    let old_pid = slot.child.as_ref().map(Child::id);
    progress.say(&format!(
        "redeploying {role}: build {} -> {build_id}; HAProxy sends {backend}/{server} to \
         {}:{} ({}), old pid {}",
        slot.build_id,
        before.addr,
        before.port,
        before.describe(),
        old_pid.map_or("none".to_owned(), |pid| pid.to_string())
    ));
    stack::note_in_log(
        role,
        &format!("cargo xtask redeploy: starting build {build_id}"),
    );

    // 1. Start the new server next to the old one.
    let step = Instant::now();
    let (child, addr) = stack::spawn_origin(role, command).with_context(|| {
        format!("the new {role} did not start; the old one keeps serving, nothing changed")
    })?;
    let new_pid = child.id();
    let mut new = Reaped(Some(child));
    progress.say(&format!(
        "[1/6] started the new {role}, pid {new_pid}, on {addr} ({})",
        took(step)
    ));

    // 2. Healthy by direct HTTP, with the new build.
    let step = Instant::now();
    let mut own_requests = wait_healthy(tier, addr, build_id, &mut new).with_context(|| {
        format!("stopped the new {role} again; the old one keeps serving, nothing changed")
    })?;
    progress.say(&format!(
        "[2/6] it answers GET {} with 200 and build {build_id} ({})",
        tier.health_path(),
        took(step)
    ));

    // 3. The switch: one runtime API command.
    let step = Instant::now();
    let answer = api
        .set_server_addr(backend, server, addr)
        .with_context(|| {
            format!(
                "could not switch HAProxy to the new {role}; stopped it again, the old one keeps \
             serving"
            )
        })?;
    progress.say(&format!(
        "[3/6] HAProxy switched {backend}/{server} to {addr}: \"{answer}\" ({})",
        took(step)
    ));

    // 4. HAProxy confirms: UP on the new port, and its traffic arrives there.
    let step = Instant::now();
    if let Err(err) = confirm_switch(&api, backend, server, addr, &mut own_requests) {
        let back = SocketAddr::new(before.ip().unwrap_or(addr.ip()), before.port);
        let rollback = match api.set_server_addr(backend, server, back) {
            Ok(_) => format!("switched {backend}/{server} back to {back}"),
            Err(back_err) => format!("could not switch back to {back} either ({back_err:#})"),
        };
        drop(new);
        bail!("{err:#}; stopped the new {role} and {rollback}, where the old one keeps serving");
    }
    progress.say(&format!(
        "[4/6] HAProxy reports {backend}/{server} UP on {addr} and sends it traffic ({})",
        took(step)
    ));

    // The new process is the server now: the supervisor watches it, `restart` restarts it.
    let old_addr = *slot.listen;
    let mut old = Reaped(slot.child.take());
    *slot.child = new.0.take();
    *slot.listen = addr;
    *slot.build_id = build_id.to_owned();
    stack::write_runtime_files(role, new_pid, addr)?;

    let Some(old_child) = old.child() else {
        return Ok(format!(
            "{role} redeployed: build {build_id} on {addr}, pid {new_pid}, in {} (no old \
             process was running)",
            took(started)
        ));
    };
    let old_pid = old_child.id();

    // 5. Drain: HAProxy's connections to the old port.
    let step = Instant::now();
    let left = wait_drained(old_addr.port(), DRAIN_BOUND);
    progress.say(&match left {
        0 => format!(
            "[5/6] the old {role} (pid {old_pid}) holds no connection from HAProxy ({})",
            took(step)
        ),
        left => format!(
            "[5/6] the old {role} (pid {old_pid}) still holds {left} kept-alive connection(s) \
             after {}; SIGTERM lets it finish their requests and close them",
            took(step)
        ),
    });

    // 6. Graceful stop of the old process.
    let step = Instant::now();
    let status = stack::stop_gracefully(&mut [old_child])[0];
    old.0 = None;
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
fn wait_healthy(tier: Tier, addr: SocketAddr, build_id: &str, new: &mut Reaped) -> Result<u64> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    let wanted = format!("\"build\":\"{build_id}\"");
    let mut answered = 0;
    loop {
        if let Some(status) = new
            .child()
            .and_then(|child| child.try_wait().ok().flatten())
        {
            bail!(
                "the new server exited ({}) before it was healthy",
                cmd::describe(status)
            );
        }
        let last_seen = match loadgen::fetch(addr, tier.health_path(), PROBE_TIMEOUT) {
            Ok(answer) => {
                answered += 1;
                let body = String::from_utf8_lossy(&answer.body);
                if answer.status == 200 && body.contains(&wanted) {
                    return Ok(answered);
                }
                format!("{} {}", answer.status, body.trim())
            }
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "the new server did not answer GET http://{addr}{} with 200 and build \
                 {build_id} within {} s; last seen: {last_seen}",
                tier.health_path(),
                HEALTH_TIMEOUT.as_secs()
            );
        }
        thread::sleep(POLL);
    }
}

/// Waits until HAProxy reports the slot UP on `addr`'s port and the new server has answered
/// a request that did not come from us (a health check or a visitor's request).
fn confirm_switch(
    api: &RuntimeApi,
    backend: &str,
    server: &str,
    addr: SocketAddr,
    own_requests: &mut u64,
) -> Result<()> {
    let deadline = Instant::now() + SWITCH_TIMEOUT;
    let mut reached = false;
    loop {
        let state = api
            .server_state(backend, server)
            .context("HAProxy's runtime API stopped answering")?;
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
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "HAProxy did not take the new server on {addr} within {} s: it reports \
                 {backend}/{server} at {}:{} {}, and {}",
                SWITCH_TIMEOUT.as_secs(),
                state.addr,
                state.port,
                state.describe(),
                if reached {
                    "the new server did get its traffic"
                } else {
                    "no request of HAProxy's reached the new server"
                }
            );
        }
        thread::sleep(POLL);
    }
}

/// The number of requests a server has answered, from its Prometheus metrics.
fn requests_answered(addr: SocketAddr) -> Result<u64> {
    let answer = loadgen::fetch(addr, "/metrics", PROBE_TIMEOUT)?;
    if answer.status != 200 {
        bail!("GET http://{addr}/metrics answered {}", answer.status);
    }
    Ok(sum_requests(&String::from_utf8_lossy(&answer.body)))
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

/// Waits until no established TCP connection is left on local `port` (the old server's
/// side of HAProxy's connections), at most `bound`. Returns how many are left.
fn wait_drained(port: u16, bound: Duration) -> usize {
    let deadline = Instant::now() + bound;
    loop {
        let left = established_on(port);
        if left == 0 || Instant::now() > deadline {
            return left;
        }
        thread::sleep(POLL);
    }
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

/// HAProxy's runtime API (the admin-level stats socket).
pub struct RuntimeApi {
    socket: PathBuf,
}

impl RuntimeApi {
    /// The runtime API on `socket`.
    pub fn new(socket: &Path) -> Self {
        RuntimeApi {
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one command and returns HAProxy's whole answer.
    pub fn command(&self, command: &str) -> Result<String> {
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "HAProxy's runtime API does not answer on {}; is haproxy running?",
                self.socket.display()
            )
        })?;
        stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
        stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .with_context(|| format!("HAProxy did not finish answering `{command}`"))?;
        Ok(answer)
    }

    /// Where HAProxy sends `backend/server` and in which state.
    pub fn server_state(&self, backend: &str, server: &str) -> Result<ServerState> {
        let answer = self.command(&format!("show servers state {backend}"))?;
        ServerState::find(&answer, backend, server)
    }

    /// Points `backend/server` at `addr`; returns HAProxy's answer.
    pub fn set_server_addr(&self, backend: &str, server: &str, addr: SocketAddr) -> Result<String> {
        let command = format!(
            "set server {backend}/{server} addr {} port {}",
            addr.ip(),
            addr.port()
        );
        let answer = self.command(&command)?;
        let answer = answer.trim();
        // "no need to change the addr, port changed from '41234' to '43210' by 'stats socket
        // command'"; errors are sentences such as "No such server."
        if answer.contains("changed") || answer.contains("no need to change the port") {
            Ok(answer.to_owned())
        } else {
            Err(anyhow!("HAProxy refused `{command}`: {answer}"))
        }
    }
}

/// One server as `show servers state` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerState {
    /// `srv_addr`: the IP address HAProxy connects to.
    pub addr: String,
    /// `srv_port`.
    pub port: u16,
    /// `srv_op_state`: 0 stopped (DOWN), 1 starting, 2 running (UP), 3 stopping.
    pub op_state: u8,
    /// `srv_admin_state`: 0 ready; other values are maintenance or drain flags.
    pub admin_state: u32,
}

impl ServerState {
    /// Finds `backend/server` in the answer to `show servers state`.
    fn find(answer: &str, backend: &str, server: &str) -> Result<Self> {
        let header = answer
            .lines()
            .find_map(|line| line.strip_prefix("# "))
            .ok_or_else(|| {
                anyhow!(
                    "`show servers state` answered something unexpected: {}",
                    answer.trim()
                )
            })?;
        let columns: Vec<&str> = header.split_whitespace().collect();
        let column = |name: &str| {
            columns
                .iter()
                .position(|&column| column == name)
                .ok_or_else(|| anyhow!("`show servers state` has no column {name}"))
        };
        let (be_name, srv_name) = (column("be_name")?, column("srv_name")?);
        let (addr, port) = (column("srv_addr")?, column("srv_port")?);
        let (op_state, admin_state) = (column("srv_op_state")?, column("srv_admin_state")?);
        for line in answer.lines().filter(|line| !line.starts_with('#')) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(be_name) != Some(&backend) || fields.get(srv_name) != Some(&server) {
                continue;
            }
            let field = |index: usize| fields.get(index).copied().unwrap_or_default();
            return Ok(ServerState {
                addr: field(addr).to_owned(),
                port: field(port).parse().context("srv_port is not a port")?,
                op_state: field(op_state)
                    .parse()
                    .context("srv_op_state is not a number")?,
                admin_state: field(admin_state)
                    .parse()
                    .context("srv_admin_state is not a number")?,
            });
        }
        bail!("HAProxy has no server {backend}/{server}; is haproxy.cfg the stack's?")
    }

    /// Running and neither in maintenance nor draining: it takes traffic.
    pub fn is_up(&self) -> bool {
        self.op_state == 2 && self.admin_state == 0
    }

    /// The IP address, if HAProxy reports one.
    fn ip(&self) -> Option<std::net::IpAddr> {
        self.addr.parse().ok()
    }

    /// "UP", "DOWN", ... in HAProxy's words.
    pub fn describe(&self) -> String {
        let op = match self.op_state {
            0 => "DOWN",
            1 => "starting",
            2 => "UP",
            3 => "stopping",
            _ => "unknown state",
        };
        match self.admin_state {
            0 => op.to_owned(),
            admin => format!("{op}, admin state {admin:#x} (maintenance or drain)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state \
        srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
        srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id \
        srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr \
        srv_agent_addr srv_agent_port\n\
        4 api 1 api-main 127.0.0.1 2 0 1 1 12 15 3 4 6 0 0 0 - 43210 - 0 0 - - 0\n\
        4 api 2 api-fallback 127.0.0.1 2 0 1 1 12 1 0 1 0 0 0 0 - 41000 - 0 0 - - 0\n\n";

    #[test]
    fn reads_a_server_from_show_servers_state() {
        let state = ServerState::find(STATE, "api", "api-main").unwrap();
        assert_eq!(
            state,
            ServerState {
                addr: "127.0.0.1".to_owned(),
                port: 43210,
                op_state: 2,
                admin_state: 0
            }
        );
        assert!(state.is_up());
        assert_eq!(state.describe(), "UP");
        assert!(ServerState::find(STATE, "static", "api-main").is_err());
        assert!(ServerState::find("Unknown command.\n", "api", "api-main").is_err());
    }

    #[test]
    fn a_drained_or_maintained_server_is_not_up() {
        let state = |op_state, admin_state| ServerState {
            addr: "127.0.0.1".to_owned(),
            port: 1,
            op_state,
            admin_state,
        };
        assert!(!state(2, 0x8).is_up());
        assert!(!state(2, 0x1).is_up());
        assert!(!state(0, 0).is_up());
        assert_eq!(state(0, 0).describe(), "DOWN");
    }

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
