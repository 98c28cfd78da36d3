//! Changing a running [`Stack`]: restarting an origin (on its held socket, or cold), reloading
//! HAProxy, and redeploying a tier's main server without a failed request. `cargo xtask up`
//! runs these on request (`cargo xtask restart`, `redeploy`); tests call them directly.
//!
//! A redeploy never closes the port HAProxy sends to. Restarting a main server in place
//! always leaves a gap: either HAProxy's checks see it down and the site shows the
//! maintenance page, or requests meet a closed port (measured: docs/HAPROXY.md). So the new
//! process starts next to the old one on a port of its own, and HAProxy's runtime API moves
//! the server slot (`api/api-main`) to the new port in one step, on every load balancer:
//! `set server ... addr ... port`. The slot stays UP throughout, so neither the maintenance
//! rule (`srv_is_up`) nor the backup server ever notices. Then the old process drains:
//! SIGTERM makes it finish its in-flight requests and close its connections, and HAProxy
//! opens new ones, to the new port. The steps:
//!
//! 1. start the new main server (same role and flags, new build id, a new port: a free one on
//!    loopback, the other of its host's two ports across hosts);
//! 2. wait until it answers its health check directly, with the new build id (across hosts
//!    from lb-a: an origin's firewall lets in only the load balancers);
//! 3. switch every HAProxy's server slot to the new port;
//! 4. wait until every HAProxy reports the slot UP on the new port and sends it traffic;
//! 5. let the old process drain: wait until HAProxy holds no connection to it, for a short
//!    bound (HAProxy keeps its kept-alive connections to the old port while they are busy);
//! 6. SIGTERM the old process and wait for it to exit (bounded, then SIGKILL).
//!
//! A failure in steps 1 to 4 stops the new process (and in step 4 switches HAProxy back), so
//! the old one never stops serving.

use std::net::SocketAddr;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use contract::{Role, Tier};
use nix::sys::signal::Signal;

use crate::http::{Request, Response};
use crate::paths::haproxy_binary;
use crate::process::ServerProcess;
use crate::stack::{Origin, Stack, START_TIMEOUT};
use crate::topology::Host;

/// How long the new server may take to answer its health check once it printed its address.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long HAProxy may take to report the slot UP on the new port and send it traffic.
/// Its checks run every 500 ms (haproxy.cfg), so one check fits many times over.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the old server may keep connections from HAProxy before it is told to stop.
/// HAProxy reuses a busy kept-alive connection for as long as its client keeps sending, so
/// under load this bound is what ends the wait; SIGTERM then drains the rest gracefully.
const DRAIN_BOUND: Duration = Duration::from_secs(1);
/// One probe's limit (health check, metrics).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a server may take to exit after SIGTERM before it gets SIGKILL. origin drains
/// in-flight requests for at most 10 s by default (`--shutdown-timeout`).
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);

impl Stack {
    /// Restarts `role`'s origin. With the socket held ([`crate::StackBuilder::hold_sockets`])
    /// the new process starts serving it next to the old one, then the old one stops (SIGTERM
    /// lets its requests finish), so no connection is refused and HAProxy never sees the
    /// server go away. Without one, this is [`Stack::restart_origin_cold`]. If the new process
    /// does not start, the old one keeps serving. Returns what happened, in a sentence.
    pub fn restart_origin(&mut self, role: Role) -> Result<String, String> {
        let origin = &self.origins[role as usize];
        if !origin.process.spec().has_listener() {
            return self.restart_origin_cold(role);
        }
        origin.process.note("restart on the held socket");
        let new = ServerProcess::try_spawn(origin.process.spec().clone())
            .map_err(|failed| format!("{}; the old {role} keeps serving", failed.1))?;
        let mut old = std::mem::replace(&mut self.origins[role as usize].process, new);
        let stopped = old.terminate(STOP_TIMEOUT);
        let new = &self.origins[role as usize].process;
        Ok(format!(
            "{role} restarted on {} (socket held), pid {}; the old pid {} {}",
            new.addr(),
            new.pid(),
            old.pid(),
            describe_exit(stopped)
        ))
    }

    /// Restarts `role`'s origin the way a service without socket activation restarts: stop
    /// the process (SIGTERM, bounded), close its socket, start again on a new one at the same
    /// address. Connections are refused meanwhile: the comparator of
    /// [`Stack::restart_origin`].
    pub fn restart_origin_cold(&mut self, role: Role) -> Result<String, String> {
        let origin = &mut self.origins[role as usize];
        origin.process.note("cold restart");
        let listen = origin.process.addr();
        let build_id = origin.build_id.clone();
        let stopped = origin.process.terminate(STOP_TIMEOUT);
        // The new socket takes the same address: this one must be closed first.
        origin.process.close_listener();
        let new = self
            .start_origin(role, listen, &build_id)
            .map_err(|error| format!("{role} was stopped but did not start again: {error}"))?;
        let pid = new.process.pid();
        self.origins[role as usize] = new;
        Ok(format!(
            "{role} restarted cold on {listen}, pid {pid}; the old process {}",
            describe_exit(stopped)
        ))
    }

    /// Reloads every HAProxy: checks the configuration first (`haproxy -c`), saves the server
    /// states (so the new workers keep what the runtime API changed, such as a redeploy's new
    /// port), sends SIGUSR2 to the master and waits until a new worker answers and has checked
    /// both main servers. A load balancer whose HAProxy is not running gets a new one (and,
    /// across hosts, a keepalived that follows it).
    pub fn reload_haproxy(&mut self) -> Result<String, String> {
        let mut done = Vec::new();
        for index in 0..self.balancers.len() {
            done.push(self.reload_balancer(index)?);
        }
        self.try_wait_for_status("/maintenance.html", 200, START_TIMEOUT)?;
        self.try_wait_until_checked(START_TIMEOUT, false)?;
        Ok(done.join("; "))
    }

    fn reload_balancer(&mut self, index: usize) -> Result<String, String> {
        let (host, bind) = (self.balancers[index].host, self.balancers[index].bind);
        self.check_haproxy_config(host, bind)?;
        let balancer = &mut self.balancers[index];
        let name = balancer.haproxy.name().to_owned();
        if !balancer.haproxy.is_running() {
            // Where every origin is now (a redeploy may have moved one), and no saved state.
            let state = self.haproxy_state_file(host);
            std::fs::write(&state, "1\n")
                .map_err(|error| format!("cannot write {}: {error}", state.display()))?;
            let haproxy = ServerProcess::try_spawn(self.haproxy_spec(host, bind)?)
                .map_err(|failed| format!("{name} did not start again: {}", failed.1))?;
            self.balancers[index].haproxy = haproxy;
            // keepalived follows a pid: the new master's.
            self.balancers[index].keepalived = None;
            self.balancers[index].keepalived =
                self.start_keepalived(host, &self.balancers[index].haproxy)?;
            let pid = self.balancers[index].haproxy.pid();
            return Ok(format!("{name} was not running; started it, pid {pid}"));
        }
        if balancer
            .keepalived
            .as_mut()
            .is_some_and(|keepalived| !keepalived.is_running())
        {
            self.balancers[index].keepalived =
                self.start_keepalived(host, &self.balancers[index].haproxy)?;
        }
        let balancer = &mut self.balancers[index];
        let api = balancer.api.clone();
        let before = api
            .worker_pid()
            .map_err(|error| format!("{name}'s runtime API does not answer: {error}"))?;
        // The environment still names the ports HAProxy was started with; the new workers
        // take the ports a redeploy moved servers to from this file instead.
        let state = self.haproxy_state_file(host);
        let saved = api
            .command("show servers state")
            .and_then(|table| std::fs::write(&state, table));
        if let Err(error) = saved {
            return Err(format!(
                "could not save {name}'s server states to {} ({error}); not reloaded",
                state.display()
            ));
        }
        let balancer = &mut self.balancers[index];
        balancer.haproxy.note("reload (SIGUSR2)");
        balancer.haproxy.kill(Signal::SIGUSR2);
        let master = balancer.haproxy.pid();
        let worker = self.poll_until(
            START_TIMEOUT,
            &format!("a new {name} worker answers"),
            || match api.worker_pid() {
                Ok(pid) if pid != before => Ok(pid),
                Ok(pid) => Err(format!("the worker is still pid {pid}")),
                Err(error) => Err(error.to_string()),
            },
        )?;
        Ok(format!(
            "{name} reloaded (SIGUSR2 to master pid {master}): worker {before} -> {worker}"
        ))
    }

    /// `haproxy -c` on the stack's configuration with `host`'s environment.
    fn check_haproxy_config(&self, host: Host, bind: SocketAddr) -> Result<(), String> {
        let mut check = Command::new(haproxy_binary());
        check
            .envs(self.haproxy_env(host, bind).vars())
            .arg("-c")
            .arg("-f")
            .arg(self.config())
            .stdin(Stdio::null());
        let output = check
            .output()
            .map_err(|error| format!("could not run `haproxy -c`: {error}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "HAProxy rejects {} (`haproxy -c`), so it was not reloaded and the running workers \
             keep serving:\n{}{}",
            self.config().display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }

    /// Replaces `tier`'s main server with a new process running `build_id` (default: the old
    /// id's base with the current time, see [`next_build_id`]) without a failed request: the
    /// six steps of this module's documentation. `progress` gets a line after each step.
    /// Returns what happened, in a sentence.
    pub fn redeploy(
        &mut self,
        tier: Tier,
        build_id: Option<&str>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<String, String> {
        let started = Instant::now();
        let role = tier.main();
        let slot = format!("{}/{role}", role.backend());
        let old_build = self.origins[role as usize].build_id.clone();
        let build_id = match build_id {
            Some(id) => {
                check_build_id(id)?;
                id.to_owned()
            }
            None => next_build_id(&old_build, unix_now()),
        };
        let mut before = Vec::new();
        for balancer in &self.balancers {
            let state = balancer.api.server_state(role).map_err(|error| {
                format!(
                    "nothing was changed: {}'s view of {slot} is needed first ({error})",
                    balancer.haproxy.name()
                )
            })?;
            before.push(state);
        }
        let old_addr = self.origins[role as usize].process.addr();
        progress(&format!(
            "redeploying {role}: build {old_build} -> {build_id}; HAProxy sends {slot} to \
             {old_addr} ({}), old pid {}",
            before
                .iter()
                .map(|state| state.describe())
                .collect::<Vec<_>>()
                .join(", "),
            self.origins[role as usize].process.pid(),
        ));
        self.origins[role as usize]
            .process
            .note(&format!("redeploy: starting build {build_id}"));

        // 1. Start the new server next to the old one. Until step 4 succeeds, dropping `new`
        // stops it again.
        let step = Instant::now();
        let listen = self.topology.redeploy_listen(role, old_addr);
        let mut new = self
            .start_origin(role, listen, &build_id)
            .map_err(|error| {
                format!("the new {role} did not start ({error}); the old one keeps serving")
            })?;
        let addr = new.process.addr();
        progress(&format!(
            "[1/6] started the new {role}, pid {}, on {addr} ({})",
            new.process.pid(),
            took(step)
        ));

        // 2. Healthy by direct HTTP, with the new build.
        let step = Instant::now();
        let mut own_requests = self.wait_healthy(role, &mut new).map_err(|error| {
            format!("{error}; stopped the new {role} again, the old one keeps serving")
        })?;
        progress(&format!(
            "[2/6] it answers GET {} with 200 and build {build_id} ({})",
            role.health_path(),
            took(step)
        ));

        // 3. The switch: one runtime-API command per load balancer.
        let step = Instant::now();
        let mut answers = Vec::new();
        for (index, balancer) in self.balancers.iter().enumerate() {
            match balancer.api.set_server_addr(role, addr) {
                Ok(answer) => answers.push(answer),
                Err(error) => {
                    let rollback = self.switch_back(role, &before[..index], addr);
                    return Err(format!(
                        "could not switch {}'s {slot} to the new {role} ({error}); stopped it \
                         again{rollback}, the old one keeps serving",
                        balancer.haproxy.name()
                    ));
                }
            }
        }
        progress(&format!(
            "[3/6] HAProxy switched {slot} to {addr}: \"{}\" ({})",
            answers.join("\", \""),
            took(step)
        ));

        // 4. Every HAProxy confirms: UP on the new port, and its traffic arrives there.
        let step = Instant::now();
        if let Err(error) = self.confirm_switch(role, addr, &mut own_requests) {
            let rollback = self.switch_back(role, &before, addr);
            return Err(format!(
                "{error}; stopped the new {role}{rollback}, where the old one keeps serving"
            ));
        }
        progress(&format!(
            "[4/6] HAProxy reports {slot} UP on {addr} and sends it traffic ({})",
            took(step)
        ));

        // The new process is the server now.
        let new_pid = new.process.pid();
        let mut old = std::mem::replace(&mut self.origins[role as usize], new);
        let old_pid = old.process.pid();
        if !old.process.is_running() {
            return Ok(format!(
                "{role} redeployed: build {build_id} on {addr}, pid {new_pid}, in {} (the old \
                 process was not running)",
                took(started)
            ));
        }

        // 5. Drain: HAProxy's connections to the old port.
        let step = Instant::now();
        let host = Host::Origin(role);
        let established = || {
            self.topology
                .established_on(host, old_addr.port())
                .unwrap_or(0)
        };
        let drained = crate::wait::poll_until(
            DRAIN_BOUND,
            "HAProxy holds no connection to the old port",
            || match established() {
                0 => Ok(()),
                left => Err(left),
            },
        );
        progress(&match drained {
            Ok(()) => format!(
                "[5/6] the old {role} (pid {old_pid}) holds no connection from HAProxy ({})",
                took(step)
            ),
            Err(_) => format!(
                "[5/6] the old {role} (pid {old_pid}) still holds {} kept-alive connection(s) \
                 after {}; SIGTERM lets it finish their requests and close them",
                established(),
                took(step)
            ),
        });

        // 6. Graceful stop of the old process.
        let step = Instant::now();
        let stopped = old.process.terminate(STOP_TIMEOUT);
        progress(&format!(
            "[6/6] the old {role} (pid {old_pid}) {} {} after SIGTERM",
            describe_exit(stopped),
            took(step)
        ));
        Ok(format!(
            "{role} redeployed: build {build_id} on {addr}, pid {new_pid}, in {}",
            took(started)
        ))
    }

    /// Points the slot back where `before` says on the first `before.len()` load balancers;
    /// says how that went, for the error message.
    fn switch_back(
        &self,
        role: Role,
        before: &[contract::stat::ServerState],
        new: SocketAddr,
    ) -> String {
        let mut said = String::new();
        for (balancer, state) in self.balancers.iter().zip(before) {
            let back = SocketAddr::new(state.ip().unwrap_or(new.ip()), state.port);
            said.push_str(&match balancer.api.set_server_addr(role, back) {
                Ok(_) => format!(", switched {} back to {back}", balancer.haproxy.name()),
                Err(error) => format!(
                    ", could not switch {} back to {back} ({error})",
                    balancer.haproxy.name()
                ),
            });
        }
        said
    }

    /// Polls the new server's health check until it answers 200 with its build id. Returns
    /// how many requests it answered, for telling HAProxy's requests from ours later.
    fn wait_healthy(&self, role: Role, new: &mut Origin) -> Result<u64, String> {
        let url = new.process.url(role.health_path());
        let wanted = format!("\"build\":\"{}\"", new.build_id);
        let mut answered = 0;
        let what = format!("GET {url} answers 200 with build {}", new.build_id);
        let outcome = crate::wait::poll_until(HEALTH_TIMEOUT, &what, || {
            if let Some(status) = new.process.exit_status() {
                // Nothing more to wait for: hand the exit out as the (successful) outcome.
                return Ok(Err(status));
            }
            let answer = self.probe(&url)?;
            answered += 1;
            if contract::is_healthy(answer.status) && answer.text().contains(&wanted) {
                Ok(Ok(answered))
            } else {
                Err(answer.summary())
            }
        });
        match outcome {
            Ok(Ok(answered)) => Ok(answered),
            Ok(Err(status)) => Err(format!(
                "the new server exited ({status}) before it was healthy:\n{}",
                new.process.log_tail(20)
            )),
            Err(timed_out) => Err(format!(
                "the new server is not healthy: {timed_out}\n{}",
                new.process.log_tail(20)
            )),
        }
    }

    /// Waits until every HAProxy reports the slot UP on `addr`'s port and the new server has
    /// answered a request that did not come from us (a health check or a visitor's request).
    fn confirm_switch(
        &self,
        role: Role,
        addr: SocketAddr,
        own_requests: &mut u64,
    ) -> Result<(), String> {
        let mut reached = false;
        let what = format!("every HAProxy takes the new server on {addr}");
        crate::wait::poll_until(SWITCH_TIMEOUT, &what, || {
            let mut views = Vec::new();
            let mut up_here = true;
            for balancer in &self.balancers {
                let state = balancer
                    .api
                    .server_state(role)
                    .map_err(|error| error.to_string())?;
                up_here &= state.is_up() && state.port == addr.port();
                views.push(format!(
                    "{} reports {}/{role} at {}:{} {}",
                    balancer.haproxy.name(),
                    role.backend(),
                    state.addr,
                    state.port,
                    state.describe()
                ));
            }
            if !reached {
                // Our metrics request is counted after it is answered, so the total it shows
                // covers exactly our earlier requests and HAProxy's.
                if let Ok(total) = self.requests_answered(addr) {
                    reached = total > *own_requests;
                }
                *own_requests += 1;
            }
            if up_here && reached {
                Ok(())
            } else {
                Err(format!(
                    "{}; {}",
                    views.join("; "),
                    if reached {
                        "the new server did get its traffic"
                    } else {
                        "no request of HAProxy's reached the new server"
                    }
                ))
            }
        })
        .map(drop)
        .map_err(|timed_out| timed_out.to_string())
    }

    /// GET `url` of an origin directly, from where origins can be reached
    /// ([`crate::Topology::near_origins`]), within [`PROBE_TIMEOUT`].
    fn probe(&self, url: &str) -> Result<Response, String> {
        self.topology
            .near_origins(|| Request::get(url).timeout(PROBE_TIMEOUT).send())
            .and_then(|sent| sent)
            .map_err(|error| error.to_string())
    }

    /// The number of requests the server at `addr` has answered, from its Prometheus metrics.
    fn requests_answered(&self, addr: SocketAddr) -> Result<u64, String> {
        let url = format!("http://{addr}/metrics");
        let answer = self.probe(&url)?;
        if answer.status != 200 {
            return Err(format!("GET {url} answered {}", answer.status));
        }
        Ok(sum_requests(&answer.text()))
    }
}

/// "exited (exit status: 0)", "was killed", ...
fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        Some(status) => format!("exited ({status})"),
        None => "did not exit".to_owned(),
    }
}

fn took(since: Instant) -> String {
    format!("{} ms", since.elapsed().as_millis())
}

/// A build id goes on a command line and into JSON: letters, digits, `.`, `_`, `-`.
pub fn check_build_id(id: &str) -> Result<(), String> {
    let fits = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fits {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not a usable build id: use 1 to 64 letters, digits, `.`, `_` or `-`, \
             such as `v2` or `3f9c2e1-1760000000`"
        ))
    }
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

/// Sums `origin_http_requests_total` over its labels.
fn sum_requests(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("origin_http_requests_total"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|count| count as u64)
        .sum()
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
}
