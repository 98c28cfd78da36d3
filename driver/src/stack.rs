//! The whole stack: four origin servers and HAProxy in a temporary directory, on loopback or
//! across hosts (two HAProxy behind keepalived's VIP, see [`Network`]).

use std::fmt::{self, Debug, Write as _};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use contract::{Role, Tier, HAPROXY_FILE_LIMIT, HAPROXY_SERVED_FILES};
use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::haproxy::{HaproxyEnv, RuntimeApi, ServerStat};
use crate::http::{Request, Response};
use crate::network::Network;
use crate::paths::{haproxy_binary, origin_binary, workspace_root};
use crate::process::{ProcessSpec, Readiness, ServerProcess};
use crate::server::origin_spec;
use crate::topology::{Host, Topology, STATS_PORT};
use crate::wait;

/// How long the stack may take to start, and HAProxy to reload. Generous: the machine may be
/// busy compiling, and a healthy start takes about a second.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variable naming another www directory to serve by default (e.g. a client
/// build kept elsewhere); [`StackBuilder::www`] takes precedence.
pub const WWW_ENV: &str = "E2E_WWW";

/// The www directory a stack serves unless told otherwise: `$E2E_WWW`, else the workspace's
/// `www/`.
pub fn default_www_dir() -> PathBuf {
    std::env::var_os(WWW_ENV)
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("www"))
}

/// Lines of each process's log shown when something times out.
const LOG_TAIL_LINES: usize = 40;

/// Files the maintenance page needs, which HAProxy reads at start (a missing one is fatal).
const REQUIRED_WWW_FILES: [&str; 7] = [
    "index.html",
    "maintenance.html",
    "sw.js",
    "pkg/client.js",
    "pkg/client.js.gz",
    "pkg/client_bg.wasm",
    "pkg/client_bg.wasm.gz",
];

/// Chooses what a [`Stack`] serves; [`StackBuilder::start`] starts it.
#[derive(Clone, Debug)]
pub struct StackBuilder {
    www: Option<PathBuf>,
    build_id: String,
    config: Option<PathBuf>,
    hosts: bool,
}

impl StackBuilder {
    /// Run across hosts: each server in a network namespace of its own, two HAProxy behind
    /// keepalived's VIP (see [`Network`]); needs root.
    pub fn hosts(mut self) -> StackBuilder {
        self.hosts = true;
        self
    }

    /// Serve `dir` instead of `$E2E_WWW` or the workspace's `www/` (it needs the same files).
    pub fn www(mut self, dir: impl Into<PathBuf>) -> StackBuilder {
        self.www = Some(dir.into());
        self
    }

    /// The `--build-id` every origin reports (default `e2e`).
    pub fn build_id(mut self, id: impl Into<String>) -> StackBuilder {
        self.build_id = id.into();
        self
    }

    /// Run HAProxy with `path` instead of the workspace's `haproxy.cfg` (e.g. a copy with
    /// other check settings, for a comparison); it reads the same environment variables.
    pub fn config(mut self, path: impl Into<PathBuf>) -> StackBuilder {
        self.config = Some(path.into());
        self
    }

    /// Starts the four origins, then HAProxy, and waits until HAProxy accepts connections and
    /// both main servers have passed a health check. Panics (with every log) if that takes
    /// more than 30 s.
    #[track_caller]
    pub fn start(self) -> Stack {
        let www = self.www.unwrap_or_else(default_www_dir);
        let missing: Vec<String> = REQUIRED_WWW_FILES
            .iter()
            .map(|file| www.join(file))
            .filter(|path| !path.is_file())
            .map(|path| path.display().to_string())
            .collect();
        assert!(
            missing.is_empty(),
            "the stack needs the built client, but {} missing: {}; \
             run `cargo xtask build-client` first",
            if missing.len() == 1 {
                "this file is"
            } else {
                "these files are"
            },
            missing.join(", ")
        );
        let too_big: Vec<String> = HAPROXY_SERVED_FILES
            .iter()
            .map(|file| www.join(file))
            .filter_map(|path| {
                let size = std::fs::metadata(&path).ok()?.len();
                (size > HAPROXY_FILE_LIMIT).then(|| format!("{} ({size} bytes)", path.display()))
            })
            .collect();
        assert!(
            too_big.is_empty(),
            "HAProxy serves these files from one {HAPROXY_FILE_LIMIT}-byte buffer, but {} too big: \
             shrink the client (release profile, wasm-opt -Oz) and rebuild it with \
             `cargo xtask build-client`",
            too_big.join(", ")
        );
        let www = www
            .canonicalize()
            .unwrap_or_else(|error| panic!("cannot resolve {}: {error}", www.display()));
        let dir = tempfile::Builder::new()
            .prefix("stack-")
            .tempdir()
            .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
        let network = self
            .hosts
            .then(|| Network::up().unwrap_or_else(|error| panic!("{error}")));
        let topology = network
            .as_ref()
            .map_or_else(Topology::private_loopback, |network| {
                network.topology().clone()
            });
        let socket_of = |host: Host| match host {
            Host::LbA => dir.path().join("haproxy.sock"),
            _ => dir.path().join(format!("haproxy-{host}.sock")),
        };
        // Across hosts api-main still reads lb-a's Unix socket (one file system): reading
        // each balancer's TCP stats socket is the next step.
        let socket = socket_of(Host::LbA);
        let origins: Vec<ServerProcess> = Role::ALL
            .iter()
            .map(|&role| {
                let listen = topology.origin_listen(role);
                let spec =
                    origin_spec(origin_binary(), role, listen, &self.build_id, &www, &socket)
                        .current_dir(dir.path());
                ServerProcess::spawn(topology.place_origin(role, spec))
            })
            .collect();

        let config = self
            .config
            .unwrap_or_else(|| workspace_root().join("haproxy.cfg"));
        let balancers: Vec<Balancer> = topology
            .balancers()
            .iter()
            .map(|&host| {
                let environment = |bind| HaproxyEnv {
                    bind,
                    origins: Role::ALL.map(|role| origins[role as usize].addr()),
                    stats_socket: socket_of(host),
                    www: www.clone(),
                    state_file: None,
                    stats_addr: network
                        .is_some()
                        .then(|| SocketAddr::from((host.ip(), STATS_PORT))),
                };
                let haproxy = start_haproxy(&topology, host, &config, environment, dir.path());
                let keepalived = network.as_ref().map(|network| {
                    ServerProcess::spawn(network.keepalived(host, haproxy.pid(), dir.path()))
                });
                Balancer {
                    host,
                    haproxy,
                    api: RuntimeApi::new(socket_of(host)),
                    keepalived,
                }
            })
            .collect();
        let site = topology.site(balancers[0].haproxy.addr());
        let stack = Stack {
            site,
            balancers,
            origins,
            www,
            config,
            network,
            dir,
        };
        stack.wait_until_checked(START_TIMEOUT, true);
        if stack.network.is_some() {
            stack.wait_for_status("/", 200, START_TIMEOUT);
        }
        stack
    }
}

/// Starts `host`'s HAProxy on a free port, trying another port if that one was taken
/// meanwhile. Across hosts each runs as `haproxy-<host>` (a link to the binary), so `ps`
/// tells the two apart.
fn start_haproxy(
    topology: &Topology,
    host: Host,
    config: &Path,
    environment: impl Fn(SocketAddr) -> HaproxyEnv,
    dir: &Path,
) -> ServerProcess {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let bind = topology.haproxy_bind();
        let spec = match topology {
            Topology::Loopback { .. } => ProcessSpec::new("haproxy", haproxy_binary()),
            Topology::Hosts { .. } => {
                let link = dir.join(format!("haproxy-{host}"));
                if !link.exists() {
                    std::os::unix::fs::symlink(haproxy_binary(), &link)
                        .unwrap_or_else(|error| panic!("cannot link {}: {error}", link.display()));
                }
                // Its own group: a SIGKILL to the group takes the workers too, as a crashed
                // host would.
                ProcessSpec::new(format!("haproxy-{host}"), link).own_process_group()
            }
        };
        let spec = spec
            .args(["-W", "-db", "-f"])
            .arg(config)
            .current_dir(dir)
            .readiness(Readiness::Accepts(topology.haproxy_reached(host, bind)));
        let spec = topology.place(host, environment(bind).apply(spec));
        match ServerProcess::try_spawn(spec) {
            Ok(haproxy) => return haproxy,
            Err(failed) => {
                let (_process, message) = *failed;
                let port_taken = message.contains("cannot bind") || message.contains("in use");
                if !port_taken || attempts == 3 {
                    panic!("HAProxy did not start (attempt {attempts}): {message}");
                }
            }
        }
    }
}

/// One load balancer: its HAProxy, runtime API and (across hosts) keepalived.
struct Balancer {
    host: Host,
    haproxy: ServerProcess,
    api: RuntimeApi,
    keepalived: Option<ServerProcess>,
}

/// How a load balancer fails, across hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BalancerFault {
    /// Its HAProxy's whole process group gets SIGKILL.
    HaproxyKilled,
    /// Its link goes down, as when its host dies or is cut off.
    HostCutOff,
}

/// A running stack; dropping it kills and reaps every process, then removes its network (if
/// across hosts) and its temporary directory.
pub struct Stack {
    site: SocketAddr,
    // The first is lb-a, the one loopback has.
    balancers: Vec<Balancer>,
    origins: Vec<ServerProcess>,
    www: PathBuf,
    config: PathBuf,
    // After the processes, so each is reaped before its namespace goes.
    network: Option<Network>,
    // Last, so it is removed after every process using it is gone.
    dir: TempDir,
}

impl Stack {
    /// Starts a stack serving the workspace's `www/`, or `$E2E_WWW` when set (see
    /// [`StackBuilder::start`]).
    #[track_caller]
    pub fn start() -> Stack {
        Stack::builder().start()
    }

    /// A builder to choose the www directory or the build id.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            www: None,
            build_id: "e2e".to_owned(),
            config: None,
            hosts: false,
        }
    }

    /// The site's address: HAProxy's on loopback, the VIP across hosts.
    pub fn addr(&self) -> SocketAddr {
        self.site
    }

    /// `http://<haproxy><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// A GET request for `path` through HAProxy, to add headers to before sending.
    pub fn request(&self, path: &str) -> Request {
        Request::get(&self.url(path))
    }

    /// GET `path` through HAProxy.
    pub fn try_get(&self, path: &str) -> io::Result<Response> {
        self.request(path).send()
    }

    /// GET `path` through HAProxy; panics with every log if no HTTP response comes back.
    #[track_caller]
    pub fn get(&self, path: &str) -> Response {
        self.send(self.request(path))
    }

    /// Sends `request`; panics with every log if no HTTP response comes back.
    #[track_caller]
    pub fn send(&self, request: Request) -> Response {
        request.send().unwrap_or_else(|error| {
            panic!(
                "{request:?} got no HTTP response: {error}\n{}",
                self.logs(LOG_TAIL_LINES)
            )
        })
    }

    /// Polls GET `path` through HAProxy until it answers `status`; returns that response and
    /// how long it took. Each poll gives up after 1 s, so a hung server cannot stall the wait.
    #[track_caller]
    pub fn wait_for_status(
        &self,
        path: &str,
        status: u16,
        timeout: Duration,
    ) -> (Response, Duration) {
        let started = Instant::now();
        let what = format!("GET {path} answers {status}");
        let response = self.wait_until(timeout, &what, || {
            match self.request(path).timeout(Duration::from_secs(1)).send() {
                Ok(response) if response.status == status => Ok(response),
                Ok(response) => Err(response.summary()),
                Err(error) => Err(error.to_string()),
            }
        });
        (response, started.elapsed())
    }

    /// The origin server playing `role`.
    pub fn server(&self, role: Role) -> &ServerProcess {
        &self.origins[role as usize]
    }

    /// The origin server playing `role`, to kill, stop or restart it.
    pub fn server_mut(&mut self, role: Role) -> &mut ServerProcess {
        &mut self.origins[role as usize]
    }

    /// The HAProxy master process (lb-a's across hosts).
    pub fn haproxy(&self) -> &ServerProcess {
        &self.balancers[0].haproxy
    }

    /// The HAProxy master process (lb-a's across hosts), to signal it.
    pub fn haproxy_mut(&mut self) -> &mut ServerProcess {
        &mut self.balancers[0].haproxy
    }

    /// The HAProxy master process on load balancer `host`.
    #[track_caller]
    pub fn balancer(&self, host: Host) -> &ServerProcess {
        match self.balancers.iter().find(|b| b.host == host) {
            Some(balancer) => &balancer.haproxy,
            None => panic!("this stack has no load balancer {host}"),
        }
    }

    /// The HAProxy master process on load balancer `host`, to signal it.
    #[track_caller]
    pub fn balancer_mut(&mut self, host: Host) -> &mut ServerProcess {
        match self.balancers.iter_mut().find(|b| b.host == host) {
            Some(balancer) => &mut balancer.haproxy,
            None => panic!("this stack has no load balancer {host}"),
        }
    }

    /// The runtime API of load balancer `host`'s HAProxy.
    #[track_caller]
    pub fn balancer_api(&self, host: Host) -> &RuntimeApi {
        match self.balancers.iter().find(|b| b.host == host) {
            Some(balancer) => &balancer.api,
            None => panic!("this stack has no load balancer {host}"),
        }
    }

    /// The hosts' network, when the stack runs across hosts.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    /// Makes load balancer `host` fail as `fault` says; for a killed HAProxy, returns once
    /// its master has exited.
    #[track_caller]
    pub fn fail_balancer(&mut self, host: Host, fault: BalancerFault) {
        match fault {
            BalancerFault::HaproxyKilled => {
                let haproxy = self.balancer_mut(host);
                let group = nix::unistd::Pid::from_raw(haproxy.pid() as i32);
                // The whole group, master and workers, as a crash of the host's HAProxy would.
                nix::sys::signal::killpg(group, Signal::SIGKILL)
                    .unwrap_or_else(|error| panic!("{host}'s HAProxy process group: {error}"));
                assert!(
                    haproxy.wait_exit(Duration::from_secs(5)).is_some(),
                    "{host}'s HAProxy survived SIGKILL"
                );
            }
            BalancerFault::HostCutOff => self
                .network()
                .expect("only a stack across hosts has balancer hosts")
                .set_link(host, false)
                .unwrap_or_else(|error| panic!("{error}")),
        }
    }

    /// Waits until exactly `holders` hold the VIP (one after a move, both during a VRRP
    /// split); panics with every log after `timeout`, or on a stack not across hosts.
    #[track_caller]
    pub fn wait_for_vip(&self, holders: &[Host], timeout: Duration) {
        let network = self.network().expect("only a stack across hosts has a VIP");
        let what = format!("the VIP is held by {holders:?} alone");
        self.wait_until(timeout, &what, || match network.vip_holders() {
            now if now == holders => Ok(()),
            now => Err(now),
        });
    }

    /// The www directory served (absolute).
    pub fn www_dir(&self) -> &Path {
        &self.www
    }

    /// The bytes of a file under the www directory, e.g. `www_file("maintenance.html")`.
    #[track_caller]
    pub fn www_file(&self, relative: &str) -> Vec<u8> {
        let path = self.www.join(relative);
        std::fs::read(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()))
    }

    /// The configuration HAProxy runs (the workspace's `haproxy.cfg` unless
    /// [`StackBuilder::config`] chose another).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The stack's temporary directory (working directory of every process).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// HAProxy's stats socket (runtime API, admin level).
    pub fn stats_socket(&self) -> &Path {
        self.api().socket()
    }

    /// HAProxy's runtime API (lb-a's across hosts).
    pub fn api(&self) -> &RuntimeApi {
        &self.balancers[0].api
    }

    /// Sends one command to HAProxy's runtime API and returns its answer.
    pub fn runtime_api(&self, command: &str) -> io::Result<String> {
        self.api().command(command)
    }

    /// Every server row of `show stat` (frontend and backend rows left out).
    pub fn server_stats(&self) -> io::Result<Vec<ServerStat>> {
        self.api().server_stats()
    }

    /// Every row of `show stat`, frontends (`server` is `FRONTEND`) and backends (`BACKEND`,
    /// where HAProxy's queue is counted: `qcur`, `qmax`) included.
    pub fn stat_rows(&self) -> io::Result<Vec<ServerStat>> {
        self.api().stat_rows()
    }

    /// HAProxy's view of `role`'s server.
    pub fn server_stat(&self, role: Role) -> io::Result<ServerStat> {
        self.api().server_stat(role)
    }

    /// Waits until HAProxy reports `role`'s server with exactly `status` (`UP`, `DOWN`, ...);
    /// returns how long that took.
    #[track_caller]
    pub fn wait_server_status(&self, role: Role, status: &str, timeout: Duration) -> Duration {
        let started = Instant::now();
        self.wait_until(
            timeout,
            &format!("HAProxy reports {role} {status}"),
            || match self.server_stat(role) {
                Ok(stat) if stat.status == status => Ok(()),
                Ok(stat) => Err(format!("{} (check {})", stat.status, stat.check_status)),
                Err(error) => Err(error.to_string()),
            },
        );
        started.elapsed()
    }

    /// Reloads HAProxy (SIGUSR2 to the master) and waits until a new worker answers on the
    /// stats socket and the frontend, and its checks have settled both main servers' states
    /// (a new worker starts them as UP until its first checks).
    #[track_caller]
    pub fn haproxy_reload(&mut self) {
        let before = self.api().worker_pid().unwrap_or_else(|error| {
            panic!("HAProxy's runtime API does not answer before the reload: {error}")
        });
        self.haproxy_mut().kill(Signal::SIGUSR2);
        self.wait_until(START_TIMEOUT, "a new HAProxy worker answers", || {
            let pid = self.api().worker_pid().map_err(|e| e.to_string())?;
            if pid == before {
                return Err(format!("the worker is still pid {pid}"));
            }
            let page = self
                .try_get("/maintenance.html")
                .map_err(|e| e.to_string())?;
            if page.status == 200 {
                Ok(())
            } else {
                Err(page.summary())
            }
        });
        self.wait_until_checked(START_TIMEOUT, false);
    }

    /// Waits until every HAProxy has checked both main servers and they are in a settled state
    /// (`UP` with a passing check when `require_up`, else `UP` or `DOWN` or `MAINT`).
    fn wait_until_checked(&self, timeout: Duration, require_up: bool) {
        let what = if require_up {
            "HAProxy has checked static-main and api-main and both are UP"
        } else {
            "HAProxy has checked static-main and api-main"
        };
        self.wait_until(timeout, what, || {
            let mut states = Vec::new();
            let mut settled = true;
            for (balancer, role) in self
                .balancers
                .iter()
                .flat_map(|b| Tier::ALL.map(|tier| (b, tier.main())))
            {
                let stat = balancer.api.server_stat(role).map_err(|e| e.to_string())?;
                let checked = !stat.check_status.is_empty() && !stat.check_status.contains("INI");
                settled &= checked
                    && if require_up {
                        stat.status == "UP" && stat.check_status.contains("L7OK")
                    } else {
                        matches!(stat.status.as_str(), "UP" | "DOWN" | "MAINT")
                    };
                states.push(format!(
                    "{}: {role}: {} ({})",
                    balancer.host, stat.status, stat.check_status
                ));
            }
            if settled {
                Ok(())
            } else {
                Err(states.join(", "))
            }
        });
    }

    /// [`wait::wait_until`] with every process's log tail in the panic message.
    #[track_caller]
    pub fn wait_until<T, E: Debug>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl FnMut() -> Result<T, E>,
    ) -> T {
        wait::wait_until(timeout, what, check, || self.logs(LOG_TAIL_LINES))
    }

    /// The last `lines` lines of every process's output, HAProxy first, plus HAProxy's view of
    /// the servers: what a failure message needs.
    pub fn logs(&self, lines: usize) -> String {
        let mut text = String::new();
        let processes = self
            .balancers
            .iter()
            .flat_map(|b| std::iter::once(&b.haproxy).chain(&b.keepalived))
            .chain(&self.origins);
        for process in processes {
            let _ = write!(
                text,
                "--- {} ({:?}), last {lines} lines ---\n{}",
                process.name(),
                process,
                process.log_tail(lines)
            );
        }
        match self.server_stats() {
            Ok(stats) => {
                let _ = writeln!(text, "--- HAProxy server states ---");
                for stat in stats {
                    let _ = writeln!(
                        text,
                        "{}/{}: {} ({})",
                        stat.backend, stat.server, stat.status, stat.check_status
                    );
                }
            }
            Err(error) => {
                let _ = writeln!(text, "--- HAProxy server states unavailable: {error} ---");
            }
        }
        text
    }
}

impl Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("haproxy", &self.haproxy())
            .field("origins", &self.origins)
            .field("www", &self.www)
            .field("network", &self.network)
            .field("dir", &self.dir.path())
            .finish()
    }
}
