//! The whole stack: four origin servers and HAProxy, on loopback, in a temporary directory.

use std::collections::BTreeMap;
use std::fmt::{self, Debug, Write as _};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tempfile::TempDir;

use crate::http::{Request, Response};
use crate::paths::{free_port_on, haproxy_binary, origin_binary, private_loopback, workspace_root};
use crate::process::{ProcessSpec, Readiness, ServerProcess};
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

/// Files `haproxy.cfg` answers from memory, each limited to one buffer (`tune.bufsize`).
pub const HAPROXY_SERVED_FILES: [&str; 4] = [
    "maintenance.html",
    "sw.js",
    "pkg/client.js.gz",
    "pkg/client_bg.wasm.gz",
];

/// The largest file HAProxy serves from memory: one buffer (`tune.bufsize`, 16384 bytes).
/// Above it HAProxy refuses to start; above 15360 (the buffer minus `tune.maxrewrite`) it
/// starts with a warning.
pub const HAPROXY_FILE_LIMIT: u64 = 16384;

/// The four origin servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Serves the dashboard and its assets.
    StaticMain,
    /// Serves the maintenance page (503) while static-main is down.
    StaticFallback,
    /// Serves `/api/healthz` and `/api/data`.
    ApiMain,
    /// Answers 503 `{"status":"maintenance"}` while api-main is down.
    ApiFallback,
}

impl Role {
    /// Every role, in start order.
    pub const ALL: [Role; 4] = [
        Role::StaticMain,
        Role::StaticFallback,
        Role::ApiMain,
        Role::ApiFallback,
    ];

    /// The role's subcommand, also its server name in `haproxy.cfg`.
    pub fn name(self) -> &'static str {
        match self {
            Role::StaticMain => "static-main",
            Role::StaticFallback => "static-fallback",
            Role::ApiMain => "api-main",
            Role::ApiFallback => "api-fallback",
        }
    }

    /// The HAProxy backend the role's server belongs to.
    pub fn backend(self) -> &'static str {
        match self {
            Role::StaticMain | Role::StaticFallback => "static",
            Role::ApiMain | Role::ApiFallback => "api",
        }
    }

    /// Whether it is a main (health-checked) server rather than a fallback.
    pub fn is_main(self) -> bool {
        matches!(self, Role::StaticMain | Role::ApiMain)
    }

    /// The health endpoint of the role's tier: `/healthz` or `/api/healthz`.
    pub fn health_path(self) -> &'static str {
        match self.backend() {
            "static" => "/healthz",
            _ => "/api/healthz",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One server's row of HAProxy's `show stat`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStat {
    /// `pxname`: the backend.
    pub backend: String,
    /// `svname`: the server.
    pub server: String,
    /// `status`: `UP`, `DOWN`, `MAINT`, `no check`, or a transition such as `UP 1/2`.
    pub status: String,
    /// `check_status`: `L7OK`, `L4CON`, `L4TOUT`, `INI` (not checked yet), or empty.
    pub check_status: String,
    /// Every field of the row by its CSV header name.
    pub fields: BTreeMap<String, String>,
}

/// Chooses what a [`Stack`] serves; [`StackBuilder::start`] starts it.
#[derive(Clone, Debug)]
pub struct StackBuilder {
    www: Option<PathBuf>,
    build_id: String,
    config: Option<PathBuf>,
}

impl StackBuilder {
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
        let socket = dir.path().join("haproxy.sock");
        let origin = origin_binary();
        // Every process of this stack listens on this stack's own loopback address.
        let ip = private_loopback();
        let listen = SocketAddr::from((ip, 0)).to_string();

        let origins: Vec<ServerProcess> = Role::ALL
            .iter()
            .map(|&role| {
                let mut spec = ProcessSpec::new(role.name(), origin)
                    .arg(role.name())
                    .args(["--listen", listen.as_str()])
                    .listen_flag("--listen")
                    .args(["--build-id", &self.build_id])
                    .current_dir(dir.path())
                    .readiness(Readiness::PrintsAddress);
                if role.backend() == "static" {
                    spec = spec.arg("--www").arg(&www);
                }
                if role == Role::ApiMain {
                    spec = spec.arg("--haproxy-socket").arg(&socket);
                }
                ServerProcess::spawn(spec)
            })
            .collect();

        let config = self
            .config
            .unwrap_or_else(|| workspace_root().join("haproxy.cfg"));
        let haproxy = start_haproxy(ip, &config, &origins, &socket, &www, dir.path());
        let stack = Stack {
            haproxy,
            origins,
            www,
            socket,
            config,
            dir,
        };
        stack.wait_until_checked(START_TIMEOUT, true);
        stack
    }
}

/// Starts HAProxy on a free port, trying another port if that one was taken meanwhile.
fn start_haproxy(
    ip: Ipv4Addr,
    config: &Path,
    origins: &[ServerProcess],
    socket: &Path,
    www: &Path,
    dir: &Path,
) -> ServerProcess {
    let addr_of = |role: Role| origins[role.index()].addr().to_string();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let bind = SocketAddr::from((ip, free_port_on(ip)));
        let spec = ProcessSpec::new("haproxy", haproxy_binary())
            .args(["-W", "-db", "-f"])
            .arg(config)
            .env("HAPROXY_BIND", bind.to_string())
            .env("STATIC_MAIN_ADDR", addr_of(Role::StaticMain))
            .env("STATIC_FALLBACK_ADDR", addr_of(Role::StaticFallback))
            .env("API_MAIN_ADDR", addr_of(Role::ApiMain))
            .env("API_FALLBACK_ADDR", addr_of(Role::ApiFallback))
            .env("HAPROXY_STATS_SOCKET", socket)
            .env("WWW_DIR", www)
            .current_dir(dir)
            .readiness(Readiness::Accepts(bind));
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

/// A running stack; dropping it kills and reaps every process, then removes its temporary
/// directory.
pub struct Stack {
    haproxy: ServerProcess,
    origins: Vec<ServerProcess>,
    www: PathBuf,
    socket: PathBuf,
    config: PathBuf,
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
        }
    }

    /// HAProxy's public address.
    pub fn addr(&self) -> SocketAddr {
        self.haproxy.addr()
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
        &self.origins[role.index()]
    }

    /// The origin server playing `role`, to kill, stop or restart it.
    pub fn server_mut(&mut self, role: Role) -> &mut ServerProcess {
        &mut self.origins[role.index()]
    }

    /// The HAProxy master process.
    pub fn haproxy(&self) -> &ServerProcess {
        &self.haproxy
    }

    /// The HAProxy master process, to signal it.
    pub fn haproxy_mut(&mut self) -> &mut ServerProcess {
        &mut self.haproxy
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
        &self.socket
    }

    /// Sends one command to HAProxy's runtime API and returns its answer.
    pub fn runtime_api(&self, command: &str) -> io::Result<String> {
        let mut stream = UnixStream::connect(&self.socket)?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.set_write_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    }

    /// Every server row of `show stat` (frontend and backend rows left out).
    pub fn server_stats(&self) -> io::Result<Vec<ServerStat>> {
        let csv = self.runtime_api("show stat")?;
        let mut lines = csv.lines();
        let header = lines
            .next()
            .and_then(|line| line.strip_prefix("# "))
            .ok_or_else(|| io::Error::other(format!("`show stat` answered {csv:?}")))?;
        let names: Vec<&str> = header.split(',').collect();
        let rows = lines.filter(|line| !line.is_empty()).map(|line| {
            let fields: BTreeMap<String, String> = names
                .iter()
                .zip(line.split(','))
                .map(|(name, value)| ((*name).to_owned(), value.to_owned()))
                .collect();
            let field = |name: &str| fields.get(name).cloned().unwrap_or_default();
            ServerStat {
                backend: field("pxname"),
                server: field("svname"),
                status: field("status"),
                check_status: field("check_status"),
                fields: fields.clone(),
            }
        });
        Ok(rows
            .filter(|row| !matches!(row.server.as_str(), "FRONTEND" | "BACKEND"))
            .collect())
    }

    /// HAProxy's view of `role`'s server.
    pub fn server_stat(&self, role: Role) -> io::Result<ServerStat> {
        self.server_stats()?
            .into_iter()
            .find(|row| row.backend == role.backend() && row.server == role.name())
            .ok_or_else(|| io::Error::other(format!("`show stat` has no row for {role}")))
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
        let before = self.worker_pid().unwrap_or_else(|error| {
            panic!("HAProxy's runtime API does not answer before the reload: {error}")
        });
        self.haproxy.kill(Signal::SIGUSR2);
        self.wait_until(START_TIMEOUT, "a new HAProxy worker answers", || {
            let pid = self.worker_pid().map_err(|e| e.to_string())?;
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

    /// The current worker's pid from `show info`.
    fn worker_pid(&self) -> io::Result<u32> {
        let info = self.runtime_api("show info")?;
        info.lines()
            .find_map(|line| line.strip_prefix("Pid: "))
            .and_then(|pid| pid.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("`show info` has no Pid: {info:?}")))
    }

    /// Waits until both main servers have been checked and are in a settled state (`UP` with
    /// a passing check when `require_up`, else `UP` or `DOWN` or `MAINT`).
    fn wait_until_checked(&self, timeout: Duration, require_up: bool) {
        let what = if require_up {
            "HAProxy has checked static-main and api-main and both are UP"
        } else {
            "HAProxy has checked static-main and api-main"
        };
        self.wait_until(timeout, what, || {
            let mut states = Vec::new();
            let mut settled = true;
            for role in [Role::StaticMain, Role::ApiMain] {
                let stat = self.server_stat(role).map_err(|e| e.to_string())?;
                let checked = !stat.check_status.is_empty() && !stat.check_status.contains("INI");
                settled &= checked
                    && if require_up {
                        stat.status == "UP" && stat.check_status.contains("L7OK")
                    } else {
                        matches!(stat.status.as_str(), "UP" | "DOWN" | "MAINT")
                    };
                states.push(format!("{role}: {} ({})", stat.status, stat.check_status));
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
        let processes = std::iter::once(&self.haproxy).chain(&self.origins);
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
            .field("haproxy", &self.haproxy)
            .field("origins", &self.origins)
            .field("www", &self.www)
            .field("dir", &self.dir.path())
            .finish()
    }
}
