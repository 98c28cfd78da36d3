//! The whole stack: four origin servers and HAProxy in a directory of its own, on loopback or
//! across hosts (two HAProxy behind keepalived's VIP, see [`Network`]). Changing a running
//! stack (restarts, reloads, redeploys) is in `operate.rs`.

use std::fmt::{self, Debug, Write as _};
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use contract::{Role, Tier, HAPROXY_FILE_LIMIT, HAPROXY_SERVED_FILES};
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
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Chooses what a [`Stack`] serves and where; [`StackBuilder::start`] starts it.
#[derive(Clone, Debug)]
pub struct StackBuilder {
    www: Option<PathBuf>,
    build_id: String,
    config: Option<PathBuf>,
    hosts: bool,
    origin: Option<PathBuf>,
    listen: Option<SocketAddr>,
    dir: Option<PathBuf>,
    hold_sockets: bool,
    supervised: bool,
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

    /// Run this `origin` binary (e.g. the release build) instead of [`origin_binary`]'s.
    pub fn origin(mut self, binary: impl Into<PathBuf>) -> StackBuilder {
        self.origin = Some(binary.into());
        self
    }

    /// On loopback, HAProxy listens on `addr` and every origin on its IP, instead of a free
    /// port of a private loopback address (`cargo xtask up --listen`).
    pub fn listen(mut self, addr: SocketAddr) -> StackBuilder {
        self.listen = Some(addr);
        self
    }

    /// Keep the stack's files in `dir` (created if missing, kept afterwards) instead of a
    /// temporary directory: HAProxy's sockets and state files, and each process's output
    /// also in `<dir>/<name>.log`.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> StackBuilder {
        self.dir = Some(dir.into());
        self
    }

    /// Open each origin's listening socket here and hand it to every process of the role in
    /// turn, as systemd's socket units do: a restart then refuses no connection (see
    /// [`Stack::restart_origin`]). Without it each origin binds its own socket, so a crash
    /// refuses connections as it would without socket activation.
    pub fn hold_sockets(mut self) -> StackBuilder {
        self.hold_sockets = true;
        self
    }

    /// For a supervisor such as `cargo xtask up`: every process in a process group of its
    /// own, so a Ctrl-C in the terminal reaches the supervisor alone, which stops them in
    /// order. Without it a Ctrl-C of a test run reaches every process too.
    pub fn supervised(mut self) -> StackBuilder {
        self.supervised = true;
        self
    }

    /// Starts the four origins, then HAProxy, and waits until HAProxy accepts connections and
    /// both main servers have passed a health check. Panics (with every log) if that takes
    /// more than 30 s.
    #[track_caller]
    pub fn start(self) -> Stack {
        self.try_start().unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`StackBuilder::start`], but returns what went wrong (with the logs) instead of
    /// panicking; whatever had started is stopped again.
    pub fn try_start(self) -> Result<Stack, String> {
        let www = self.www.clone().unwrap_or_else(default_www_dir);
        check_www(&www)?;
        let www = www
            .canonicalize()
            .map_err(|error| format!("cannot resolve {}: {error}", www.display()))?;
        let dir = match &self.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
                let dir = dir
                    .canonicalize()
                    .map_err(|error| format!("cannot resolve {}: {error}", dir.display()))?;
                StackDir::Kept(dir)
            }
            None => StackDir::Temp(
                tempfile::Builder::new()
                    .prefix("stack-")
                    .tempdir()
                    .map_err(|error| format!("cannot create a temporary directory: {error}"))?,
            ),
        };
        let network = if self.hosts {
            Some(Network::up()?)
        } else {
            None
        };
        let topology = match (&network, self.listen) {
            (Some(network), _) => network.topology().clone(),
            (None, Some(SocketAddr::V4(listen))) => Topology::Loopback { ip: *listen.ip() },
            (None, Some(listen)) => {
                return Err(format!(
                    "cannot listen on {listen}: the stack runs on an IPv4 loopback address"
                ))
            }
            (None, None) => Topology::private_loopback(),
        };
        let mut stack = Stack {
            site: SocketAddr::from(([0, 0, 0, 0], 0)),
            balancers: Vec::new(),
            origins: Vec::new(),
            www,
            config: self
                .config
                .clone()
                .unwrap_or_else(|| workspace_root().join("haproxy.cfg")),
            origin: self
                .origin
                .clone()
                .unwrap_or_else(|| origin_binary().to_owned()),
            topology,
            hold_sockets: self.hold_sockets,
            supervised: self.supervised,
            log_files: self.dir.is_some(),
            network,
            dir,
        };
        for role in Role::ALL {
            let listen = stack.topology.origin_listen(role);
            let origin = stack.start_origin(role, listen, &self.build_id)?;
            stack.origins.push(origin);
        }
        for &host in stack.topology.balancers() {
            let balancer = stack.start_balancer(host, self.listen)?;
            stack.balancers.push(balancer);
        }
        stack.site = stack.topology.site(stack.balancers[0].haproxy.addr());
        stack.try_wait_until_checked(START_TIMEOUT, true)?;
        if stack.network.is_some() {
            stack.try_wait_for_status("/", 200, START_TIMEOUT)?;
        }
        Ok(stack)
    }
}

/// The files the maintenance page needs are there, and those HAProxy sends from memory fit
/// its buffer.
fn check_www(www: &Path) -> Result<(), String> {
    let missing: Vec<String> = REQUIRED_WWW_FILES
        .iter()
        .map(|file| www.join(file))
        .filter(|path| !path.is_file())
        .map(|path| path.display().to_string())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "the stack needs the built client, but {} missing: {}; \
             run `cargo xtask build-client` first",
            if missing.len() == 1 {
                "this file is"
            } else {
                "these files are"
            },
            missing.join(", ")
        ));
    }
    let too_big: Vec<String> = HAPROXY_SERVED_FILES
        .iter()
        .map(|file| www.join(file))
        .filter_map(|path| {
            let size = std::fs::metadata(&path).ok()?.len();
            (size > HAPROXY_FILE_LIMIT).then(|| format!("{} ({size} bytes)", path.display()))
        })
        .collect();
    if !too_big.is_empty() {
        return Err(format!(
            "HAProxy serves these files from one {HAPROXY_FILE_LIMIT}-byte buffer, but {} too big: \
             shrink the client (release profile, wasm-opt -Oz) and rebuild it with \
             `cargo xtask build-client`",
            too_big.join(", ")
        ));
    }
    Ok(())
}

/// Where a stack keeps its files.
enum StackDir {
    /// Removed with the stack.
    Temp(TempDir),
    /// Kept (`cargo xtask up`'s target/stack).
    Kept(PathBuf),
}

impl StackDir {
    fn path(&self) -> &Path {
        match self {
            StackDir::Temp(dir) => dir.path(),
            StackDir::Kept(dir) => dir,
        }
    }
}

/// One origin role: its process and the build it runs. A held listening socket (see
/// [`StackBuilder::hold_sockets`]) lives in the process's spec, so it stays open for as long
/// as the record does, through a crash, until a restart hands it on.
pub(crate) struct Origin {
    pub(crate) process: ServerProcess,
    pub(crate) build_id: String,
}

/// One load balancer: its HAProxy, runtime API and (across hosts) keepalived.
pub(crate) struct Balancer {
    pub(crate) host: Host,
    /// Where its HAProxy listens (its `HAPROXY_BIND`).
    pub(crate) bind: SocketAddr,
    pub(crate) haproxy: ServerProcess,
    pub(crate) api: RuntimeApi,
    pub(crate) keepalived: Option<ServerProcess>,
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
    pub(crate) site: SocketAddr,
    // The first is lb-a, the one loopback has.
    pub(crate) balancers: Vec<Balancer>,
    // Indexed like `Role::ALL`.
    pub(crate) origins: Vec<Origin>,
    www: PathBuf,
    config: PathBuf,
    origin: PathBuf,
    pub(crate) topology: Topology,
    hold_sockets: bool,
    supervised: bool,
    log_files: bool,
    // After the processes, so each is reaped before its namespace goes.
    network: Option<Network>,
    // Last, so it is removed after every process using it is gone.
    dir: StackDir,
}

impl Stack {
    /// Starts a stack serving the workspace's `www/`, or `$E2E_WWW` when set (see
    /// [`StackBuilder::start`]).
    #[track_caller]
    pub fn start() -> Stack {
        Stack::builder().start()
    }

    /// A builder to choose the www directory, the build id, the topology and more.
    pub fn builder() -> StackBuilder {
        StackBuilder {
            www: None,
            build_id: "e2e".to_owned(),
            config: None,
            hosts: false,
            origin: None,
            listen: None,
            dir: None,
            hold_sockets: false,
            supervised: false,
        }
    }

    /// A file of the stack's directory named for `process`: `<name>.log`, `<name>.sock`.
    fn file(&self, process: &str, extension: &str) -> PathBuf {
        self.dir.path().join(format!("{process}.{extension}"))
    }

    /// The name of `host`'s HAProxy: `haproxy`, or across hosts `haproxy-<host>` (so `ps`
    /// tells the two apart).
    fn haproxy_name(&self, host: Host) -> String {
        match self.topology {
            Topology::Loopback { .. } => "haproxy".to_owned(),
            Topology::Hosts { .. } => format!("haproxy-{host}"),
        }
    }

    /// The runtime-API socket of `host`'s HAProxy (admin level; the API roles read lb-a's).
    fn haproxy_socket(&self, host: Host) -> PathBuf {
        self.file(&self.haproxy_name(host), "sock")
    }

    /// Where `host`'s HAProxy keeps server states across a reload (`server-state-file`).
    pub(crate) fn haproxy_state_file(&self, host: Host) -> PathBuf {
        self.file(&self.haproxy_name(host), "state")
    }

    /// `spec` with the stack's settings: its directory as the working directory, a process
    /// group of its own when supervised, a log file if kept.
    fn with_settings(&self, spec: ProcessSpec) -> ProcessSpec {
        let log = self.file(spec.name(), "log");
        let mut spec = spec.current_dir(self.dir.path());
        if self.supervised {
            spec = spec.own_process_group();
        }
        if self.log_files {
            spec = spec.log_file(log);
        }
        spec
    }

    /// A listening socket for `role` on `listen`, when the stack holds them.
    fn origin_socket(
        &self,
        role: Role,
        listen: SocketAddr,
    ) -> Result<Option<Arc<TcpListener>>, String> {
        if !self.hold_sockets {
            return Ok(None);
        }
        let socket = self
            .topology
            .bind_origin(role, listen)
            .map_err(|error| error.to_string())?;
        Ok(Some(Arc::new(socket)))
    }

    /// How `role`'s origin starts on `listen` with `build_id`, serving `socket` if given,
    /// placed on its host.
    fn origin_spec(
        &self,
        role: Role,
        listen: SocketAddr,
        build_id: &str,
        socket: Option<Arc<TcpListener>>,
    ) -> ProcessSpec {
        let mut spec = origin_spec(
            &self.origin,
            role,
            listen,
            build_id,
            &self.www,
            // Across hosts no origin can reach a balancer's Unix socket.
            self.network
                .is_none()
                .then(|| self.haproxy_socket(Host::LbA))
                .as_deref(),
        );
        if let Some(socket) = socket {
            spec = spec.listener(socket);
        }
        self.topology.place_origin(role, self.with_settings(spec))
    }

    /// Starts `role`'s origin on `listen` (on a socket of its own, held when the stack holds
    /// them) and waits for the address it prints.
    pub(crate) fn start_origin(
        &self,
        role: Role,
        listen: SocketAddr,
        build_id: &str,
    ) -> Result<Origin, String> {
        let socket = self.origin_socket(role, listen)?;
        let spec = self.origin_spec(role, listen, build_id, socket);
        let process = ServerProcess::try_spawn(spec).map_err(|failed| failed.1)?;
        Ok(Origin {
            process,
            build_id: build_id.to_owned(),
        })
    }

    /// HAProxy's environment on `host`, listening on `bind`: where each origin is now.
    pub(crate) fn haproxy_env(&self, host: Host, bind: SocketAddr) -> HaproxyEnv {
        HaproxyEnv {
            bind,
            origins: Role::ALL.map(|role| self.origins[role as usize].process.addr()),
            stats_socket: self.haproxy_socket(host),
            www: self.www.clone(),
            state_file: Some(self.haproxy_state_file(host)),
            stats_addr: self
                .network
                .is_some()
                .then(|| SocketAddr::from((host.ip(), STATS_PORT))),
        }
    }

    /// Starts `host`'s HAProxy (on `listen`, or a free port, trying another if that one was
    /// taken meanwhile) and, across hosts, its keepalived.
    fn start_balancer(&self, host: Host, listen: Option<SocketAddr>) -> Result<Balancer, String> {
        // The addresses come from the environment at a start; a state file left from an
        // earlier HAProxy would bring back its ports. "1" alone: a valid file with no server.
        let state = self.haproxy_state_file(host);
        std::fs::write(&state, "1\n")
            .map_err(|error| format!("cannot write {}: {error}", state.display()))?;
        let mut attempts = 0;
        let (haproxy, bind) = loop {
            attempts += 1;
            let bind = listen.unwrap_or_else(|| self.topology.haproxy_bind());
            match ServerProcess::try_spawn(self.haproxy_spec(host, bind)?) {
                Ok(haproxy) => break (haproxy, bind),
                Err(failed) => {
                    let (_process, message) = *failed;
                    let port_taken = message.contains("cannot bind") || message.contains("in use");
                    if !port_taken || listen.is_some() || attempts == 3 {
                        return Err(format!(
                            "HAProxy did not start (attempt {attempts}): {message}"
                        ));
                    }
                }
            }
        };
        let keepalived = self.start_keepalived(host, &haproxy)?;
        Ok(Balancer {
            host,
            bind,
            api: RuntimeApi::new(self.haproxy_socket(host)),
            haproxy,
            keepalived,
        })
    }

    /// How `host`'s HAProxy starts, listening on `bind`. Across hosts each runs as
    /// `haproxy-<host>`, a link to the binary.
    pub(crate) fn haproxy_spec(&self, host: Host, bind: SocketAddr) -> Result<ProcessSpec, String> {
        let name = self.haproxy_name(host);
        let program = match self.topology {
            Topology::Loopback { .. } => haproxy_binary().to_owned(),
            Topology::Hosts { .. } => {
                let link = self.dir.path().join(&name);
                if !link.exists() {
                    std::os::unix::fs::symlink(haproxy_binary(), &link)
                        .map_err(|error| format!("cannot link {}: {error}", link.display()))?;
                }
                link
            }
        };
        let mut spec = ProcessSpec::new(name, program);
        if self.network.is_some() {
            // Its own group: a SIGKILL to the group takes the workers too, as a crashed host
            // would ([`Stack::fail_balancer`]).
            spec = spec.own_process_group();
        }
        let spec = spec
            .args(["-W", "-db", "-f"])
            .arg(&self.config)
            .readiness(Readiness::Accepts(
                self.topology.haproxy_reached(host, bind),
            ));
        let spec = self.haproxy_env(host, bind).apply(self.with_settings(spec));
        Ok(self.topology.place(host, spec))
    }

    /// Across hosts, keepalived for `host`, following `haproxy`'s master.
    pub(crate) fn start_keepalived(
        &self,
        host: Host,
        haproxy: &ServerProcess,
    ) -> Result<Option<ServerProcess>, String> {
        let Some(network) = &self.network else {
            return Ok(None);
        };
        let spec = network.keepalived(host, haproxy.pid(), self.dir.path())?;
        ServerProcess::try_spawn(self.with_settings(spec))
            .map(Some)
            .map_err(|failed| failed.1)
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
        self.try_wait_for_status(path, status, timeout)
            .unwrap_or_else(|error| panic!("{error}"))
    }

    /// [`Stack::wait_for_status`] returning the failure (with every log) instead of panicking.
    pub(crate) fn try_wait_for_status(
        &self,
        path: &str,
        status: u16,
        timeout: Duration,
    ) -> Result<(Response, Duration), String> {
        let started = Instant::now();
        let what = format!("GET {path} answers {status}");
        let response = self.poll_until(timeout, &what, || {
            match self.request(path).timeout(Duration::from_secs(1)).send() {
                Ok(response) if response.status == status => Ok(response),
                Ok(response) => Err(response.summary()),
                Err(error) => Err(error.to_string()),
            }
        })?;
        Ok((response, started.elapsed()))
    }

    /// The origin server playing `role`.
    pub fn server(&self, role: Role) -> &ServerProcess {
        &self.origins[role as usize].process
    }

    /// The origin server playing `role`, to kill, stop or restart it.
    pub fn server_mut(&mut self, role: Role) -> &mut ServerProcess {
        &mut self.origins[role as usize].process
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
                nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL)
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

    /// Every process of the stack: each load balancer's HAProxy (and keepalived), then the
    /// origins in [`Role::ALL`] order.
    pub fn processes(&self) -> Vec<&ServerProcess> {
        let balancers = self
            .balancers
            .iter()
            .flat_map(|b| std::iter::once(&b.haproxy).chain(&b.keepalived));
        balancers
            .chain(self.origins.iter().map(|o| &o.process))
            .collect()
    }

    /// [`Stack::processes`], to signal or reap them.
    pub fn processes_mut(&mut self) -> Vec<&mut ServerProcess> {
        let balancers = self
            .balancers
            .iter_mut()
            .flat_map(|b| std::iter::once(&mut b.haproxy).chain(&mut b.keepalived));
        balancers
            .chain(self.origins.iter_mut().map(|o| &mut o.process))
            .collect()
    }

    /// The topology the stack runs in.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The stack's directory (working directory of every process; temporary unless
    /// [`StackBuilder::dir`] chose one).
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

    /// Reloads every HAProxy and waits until the new workers answer and have checked both
    /// main servers (see [`Stack::reload_haproxy`]); panics with every log if that fails.
    #[track_caller]
    pub fn haproxy_reload(&mut self) {
        if let Err(error) = self.reload_haproxy() {
            panic!("{error}");
        }
    }

    /// Waits until every HAProxy has checked both main servers and they are in a settled state
    /// (`UP` with a passing check when `require_up`, else `UP` or `DOWN` or `MAINT`).
    pub(crate) fn try_wait_until_checked(
        &self,
        timeout: Duration,
        require_up: bool,
    ) -> Result<(), String> {
        let what = if require_up {
            "HAProxy has checked static-main and api-main and both are UP"
        } else {
            "HAProxy has checked static-main and api-main"
        };
        self.poll_until(timeout, what, || {
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
        })
    }

    /// [`wait::poll_until`] whose failure carries every process's log tail.
    pub(crate) fn poll_until<T, E: Debug>(
        &self,
        timeout: Duration,
        what: &str,
        check: impl FnMut() -> Result<T, E>,
    ) -> Result<T, String> {
        wait::poll_until(timeout, what, check)
            .map_err(|timed_out| format!("{timed_out}\n{}", self.logs(LOG_TAIL_LINES)))
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
        for process in self.processes() {
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
            .field(
                "origins",
                &self.origins.iter().map(|o| &o.process).collect::<Vec<_>>(),
            )
            .field("www", &self.www)
            .field("network", &self.network)
            .field("dir", &self.dir.path())
            .finish()
    }
}
