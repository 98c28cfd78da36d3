//! The whole stack: four origin servers and HAProxy, on loopback, in a temporary directory.

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
use crate::paths::{haproxy_binary, origin_binary, workspace_root};
use crate::process::{ProcessSpec, Readiness, ServerProcess};
use crate::server::origin_spec;
use crate::topology::Topology;
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
        let topology = Topology::private_loopback();
        let origins: Vec<ServerProcess> = Role::ALL
            .iter()
            .map(|&role| {
                let listen = topology.origin_listen(role);
                let spec =
                    origin_spec(origin_binary(), role, listen, &self.build_id, &www, &socket)
                        .current_dir(dir.path());
                ServerProcess::spawn(topology.place(Some(role), spec))
            })
            .collect();

        let config = self
            .config
            .unwrap_or_else(|| workspace_root().join("haproxy.cfg"));
        let environment = |bind| HaproxyEnv {
            bind,
            origins: Role::ALL.map(|role| origins[role as usize].addr()),
            stats_socket: socket.clone(),
            www: www.clone(),
            state_file: None,
        };
        let haproxy = start_haproxy(&topology, &config, environment, dir.path());
        let stack = Stack {
            haproxy,
            origins,
            www,
            api: RuntimeApi::new(socket),
            config,
            dir,
        };
        stack.wait_until_checked(START_TIMEOUT, true);
        stack
    }
}

/// Starts HAProxy on a free port, trying another port if that one was taken meanwhile.
fn start_haproxy(
    topology: &Topology,
    config: &Path,
    environment: impl Fn(SocketAddr) -> HaproxyEnv,
    dir: &Path,
) -> ServerProcess {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let bind = topology.haproxy_bind();
        let spec = ProcessSpec::new("haproxy", haproxy_binary())
            .args(["-W", "-db", "-f"])
            .arg(config)
            .current_dir(dir)
            .readiness(Readiness::Accepts(bind));
        let spec = topology.place(None, environment(bind).apply(spec));
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
    api: RuntimeApi,
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
        &self.origins[role as usize]
    }

    /// The origin server playing `role`, to kill, stop or restart it.
    pub fn server_mut(&mut self, role: Role) -> &mut ServerProcess {
        &mut self.origins[role as usize]
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
        self.api.socket()
    }

    /// HAProxy's runtime API.
    pub fn api(&self) -> &RuntimeApi {
        &self.api
    }

    /// Sends one command to HAProxy's runtime API and returns its answer.
    pub fn runtime_api(&self, command: &str) -> io::Result<String> {
        self.api.command(command)
    }

    /// Every server row of `show stat` (frontend and backend rows left out).
    pub fn server_stats(&self) -> io::Result<Vec<ServerStat>> {
        self.api.server_stats()
    }

    /// Every row of `show stat`, frontends (`server` is `FRONTEND`) and backends (`BACKEND`,
    /// where HAProxy's queue is counted: `qcur`, `qmax`) included.
    pub fn stat_rows(&self) -> io::Result<Vec<ServerStat>> {
        self.api.stat_rows()
    }

    /// HAProxy's view of `role`'s server.
    pub fn server_stat(&self, role: Role) -> io::Result<ServerStat> {
        self.api.server_stat(role)
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
        let before = self.api.worker_pid().unwrap_or_else(|error| {
            panic!("HAProxy's runtime API does not answer before the reload: {error}")
        });
        self.haproxy.kill(Signal::SIGUSR2);
        self.wait_until(START_TIMEOUT, "a new HAProxy worker answers", || {
            let pid = self.api.worker_pid().map_err(|e| e.to_string())?;
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
            for role in Tier::ALL.map(Tier::main) {
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
