//! `cargo xtask up`: HAProxy and the four origin servers on localhost, supervised in the
//! foreground until Ctrl-C or SIGTERM.
//!
//! Everything the running stack leaves lives in target/stack/ (or `--stack-dir`):
//! `<name>.pid`, `<name>.log` and `<name>.addr` per server, `haproxy.sock` (HAProxy's runtime
//! API, read by api-main), `haproxy.state` (server states kept across a reload) and
//! `control.sock`, where `up` answers one-line requests from `cargo xtask restart`,
//! `redeploy` and `stop`. The reply is a first line `ok ...` or `error ...`, possibly followed
//! by detail lines, then the connection closes; a redeploy sends `progress ...` lines first.
//!
//! The supervisor reports exits but never restarts a server by itself: watching the site
//! fail over, and come back on request, is the point of running it.

use std::{
    env, fmt,
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::{
        net::{UnixListener, UnixStream},
        process::CommandExt,
    },
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, ExitStatus, Stdio},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
        OnceLock,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};

use crate::{
    client, cmd, install,
    redeploy::{self, Progress, Tier},
};

/// How long a server may take from spawn to ready (address printed, port accepting).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a server may take to exit after SIGTERM before it gets SIGKILL. origin drains
/// in-flight requests for at most 10 s by default (`--shutdown-timeout`).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for HAProxy to confirm a reload in its log.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Writes a line to stdout, ignoring errors: the terminal may be gone while the stack stops.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stdout(), $($arg)*);
    }};
}

/// One server of the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// The entry point, in front of everything.
    Haproxy,
    /// Serves www/ (the dashboard).
    StaticMain,
    /// Static backup: answers the maintenance page.
    StaticFallback,
    /// The dashboard's data API.
    ApiMain,
    /// API backup: answers 503 maintenance JSON.
    ApiFallback,
}

impl Role {
    /// Every server, HAProxy first.
    pub const ALL: [Role; 5] = [
        Role::Haproxy,
        Role::StaticMain,
        Role::StaticFallback,
        Role::ApiMain,
        Role::ApiFallback,
    ];
    /// The origin servers, in the order `up` starts them.
    const ORIGINS: [Role; 4] = [
        Role::StaticMain,
        Role::StaticFallback,
        Role::ApiMain,
        Role::ApiFallback,
    ];

    /// The name used on the command line, in file names and as origin's subcommand.
    pub fn name(self) -> &'static str {
        match self {
            Role::Haproxy => "haproxy",
            Role::StaticMain => "static-main",
            Role::StaticFallback => "static-fallback",
            Role::ApiMain => "api-main",
            Role::ApiFallback => "api-fallback",
        }
    }

    /// The executable's name as /proc/<pid>/stat shows it.
    pub fn program(self) -> &'static str {
        match self {
            Role::Haproxy => "haproxy",
            _ => "origin",
        }
    }

    /// What a visitor notices once this server is gone.
    fn consequence(self, site: SocketAddr) -> String {
        match self {
            Role::Haproxy => format!("nothing answers on http://{site}/ now"),
            Role::StaticMain | Role::ApiMain => {
                "once HAProxy's health checks mark it down, the site shows the maintenance page"
                    .to_owned()
            }
            Role::StaticFallback => "the static backend has no backup server now".to_owned(),
            Role::ApiFallback => "the api backend has no backup server now".to_owned(),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Options of `cargo xtask up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Where HAProxy listens: the address to open in a browser.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The directory static-main serves and HAProxy's maintenance page comes from.
    #[arg(long, default_value = "www")]
    pub www: PathBuf,
    /// Skip installing and building; run what was built last.
    #[arg(long)]
    pub no_build: bool,
}

static STACK_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Keeps the stack's files in `dir` instead of target/stack (`--stack-dir`), so that a test
/// can run a stack of its own next to a developer's. Takes effect only before first use.
pub fn set_stack_dir(dir: PathBuf) {
    let _ = STACK_DIR.set(dir);
}

/// target/stack, relative to the workspace root (the current directory), unless
/// `--stack-dir` says otherwise.
pub fn stack_dir() -> PathBuf {
    STACK_DIR
        .get_or_init(|| PathBuf::from("target/stack"))
        .clone()
}

/// HAProxy's runtime API socket, absolute: origin's api-main reads it from another directory.
pub fn haproxy_socket() -> PathBuf {
    absolute(&stack_dir().join("haproxy.sock"))
}

/// Where HAProxy's server states are saved before a reload, so that the new workers keep
/// what the runtime API changed (a redeploy's new port); see `load-server-state-from-file`
/// in haproxy.cfg.
fn haproxy_state_file() -> PathBuf {
    absolute(&stack_dir().join("haproxy.state"))
}

/// The file holding a running server's pid.
pub fn pid_file(role: Role) -> PathBuf {
    stack_dir().join(format!("{role}.pid"))
}

/// The file collecting a server's stdout and stderr.
pub fn log_file(role: Role) -> PathBuf {
    stack_dir().join(format!("{role}.log"))
}

/// The file holding the address a server listens on.
pub fn addr_file(role: Role) -> PathBuf {
    stack_dir().join(format!("{role}.addr"))
}

/// The unix socket on which `up` takes requests.
pub fn control_socket() -> PathBuf {
    stack_dir().join("control.sock")
}

/// The pid in a server's pid file, if there is a readable one.
pub fn read_pid(role: Role) -> Option<i32> {
    fs::read_to_string(pid_file(role)).ok()?.trim().parse().ok()
}

/// The pid of `role` if its pid file names a live process of the right program.
pub fn live_pid(role: Role) -> Option<i32> {
    read_pid(role).filter(|&pid| process_alive(pid, role.program()))
}

/// Whether `pid` is a running (not zombie) process of `program`. A recycled pid belongs to
/// some other program, so the name is compared too.
pub fn process_alive(pid: i32, program: &str) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": comm may itself contain spaces and parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let state = stat[close + 1..].trim_start().chars().next();
    &stat[open + 1..close] == program && state != Some('Z')
}

/// `cargo xtask up`.
pub fn up(args: &UpArgs) -> Result<()> {
    // Refusals first: they take milliseconds, the builds minutes.
    refuse_if_running(args.listen)?;
    let www = fs::canonicalize(&args.www)
        .with_context(|| format!("{} does not exist; pass --www DIR", args.www.display()))?;
    if !args.no_build {
        install::apt(install::APT_RUN)?;
        client::build()?;
        let mut build = Command::new("cargo");
        build.args(["build", "--release", "-p", "origin"]);
        println!("up: {}", cmd::display(&build));
        cmd::run(&mut build)
            .context("the origin servers do not build; cargo's output above says why")?;
    }
    let origin = origin_binary();
    if !origin.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p origin` (or `cargo xtask up` without \
             --no-build); if it was built, CARGO_TARGET_DIR or build.target-dir points elsewhere",
            origin.display()
        );
    }
    // Again: another `up` may have started while this one was building.
    refuse_if_running(args.listen)?;
    prepare_stack_dir()?;

    let (events_tx, events) = mpsc::channel();
    watch_signals(events_tx.clone())?;
    let control = UnixListener::bind(control_socket())
        .with_context(|| format!("could not listen on {}", control_socket().display()))?;
    thread::spawn(move || serve_control(control, events_tx));

    let mut stack = Stack::new(args.listen, origin, www, &build_id());
    if let Err(err) = stack.start_all() {
        stack.shutdown(&events);
        remove_runtime_files();
        return Err(err);
    }
    stack.print_banner();
    stack.supervise(&events);
    stack.shutdown(&events);
    remove_runtime_files();
    say!("up: the stack is stopped");
    Ok(())
}

fn origin_binary() -> PathBuf {
    let target =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    crate::workspace_root().join(target).join("release/origin")
}

fn build_id() -> String {
    let commit = cmd::probe(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "dev".to_owned());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format!("{commit}-{now}")
}

fn refuse_if_running(listen: SocketAddr) -> Result<()> {
    let running: Vec<String> = Role::ALL
        .iter()
        .filter_map(|&role| live_pid(role).map(|pid| format!("{role} (pid {pid})")))
        .collect();
    if !running.is_empty() {
        bail!(
            "a stack is already running: {}. Stop it with Ctrl-C where `cargo xtask up` runs, \
             or `cargo xtask stop`; if that `up` is gone, `kill $(cat target/stack/*.pid)`",
            running.join(", ")
        );
    }
    if UnixStream::connect(control_socket()).is_ok() {
        bail!(
            "another `cargo xtask up` is running (it answers on {}); stop it with \
             `cargo xtask stop`",
            control_socket().display()
        );
    }
    TcpListener::bind(listen).map_err(|err| {
        anyhow!(
            "{listen} is taken ({err}), so HAProxy could not listen there; stop whatever \
             listens on it (`ss -ltnp`) or pick another address: \
             cargo xtask up --listen 127.0.0.1:8081"
        )
    })?;
    Ok(())
}

fn prepare_stack_dir() -> Result<()> {
    let dir = stack_dir();
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    for role in Role::ALL {
        fs::write(log_file(role), "")
            .with_context(|| format!("could not write {}", log_file(role).display()))?;
        let _ = fs::remove_file(pid_file(role));
        let _ = fs::remove_file(addr_file(role));
    }
    // No `up` answered on it (checked above): it is left over from one that was killed.
    let _ = fs::remove_file(control_socket());
    Ok(())
}

fn remove_runtime_files() {
    for role in Role::ALL {
        let _ = fs::remove_file(pid_file(role));
    }
    let _ = fs::remove_file(stack_dir().join("haproxy.sock"));
    let _ = fs::remove_file(stack_dir().join("haproxy.state"));
    let _ = fs::remove_file(control_socket());
}

/// What the supervisor reacts to.
enum Event {
    Signal(Signal),
    /// A line from the control socket and where to send the reply.
    Request(String, Sender<String>),
}

fn watch_signals(events: Sender<Event>) -> Result<()> {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

    // Handlers, not a blocked signal mask: children would inherit the mask, and an origin
    // that cannot receive SIGTERM never shuts down gracefully.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD])
        .context("could not install the supervisor's signal handlers")?;
    thread::spawn(move || {
        for number in signals.forever() {
            let Ok(signal) = Signal::try_from(number) else {
                continue;
            };
            if events.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

fn serve_control(listener: UnixListener, events: Sender<Event>) {
    for stream in listener.incoming().flatten() {
        // A client that misbehaves only loses its own request.
        let _ = answer_request(stream, &events);
    }
}

fn answer_request(stream: UnixStream, events: &Sender<Event>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let (reply_tx, reply_rx) = mpsc::channel::<String>();
    if events
        .send(Event::Request(line.trim().to_owned(), reply_tx))
        .is_err()
    {
        return (&stream).write_all(b"error the stack is stopping\n");
    }
    // `progress ...` lines as they come (a redeploy), then the final `ok`/`error` reply.
    let mut answered = false;
    for reply in reply_rx {
        answered |= !reply.starts_with("progress ");
        (&stream).write_all(format!("{}\n", reply.trim_end()).as_bytes())?;
    }
    if !answered {
        (&stream).write_all(b"error the stack is stopping\n")?;
    }
    Ok(())
}

/// A server `up` runs.
struct Server {
    role: Role,
    /// Where it listens: origins start on port 0 and keep the bound address across restarts,
    /// since HAProxy's configuration names it (a redeploy moves it, through the runtime API).
    listen: SocketAddr,
    /// The build id it runs with (a redeploy changes it).
    build_id: String,
    child: Option<Child>,
}

/// The running stack.
struct Stack {
    site: SocketAddr,
    origin: PathBuf,
    www: PathBuf,
    servers: Vec<Server>,
}

impl Stack {
    fn new(site: SocketAddr, origin: PathBuf, www: PathBuf, build_id: &str) -> Self {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let servers = Role::ALL
            .iter()
            .map(|&role| Server {
                role,
                listen: if role == Role::Haproxy {
                    site
                } else {
                    any_port
                },
                build_id: build_id.to_owned(),
                child: None,
            })
            .collect();
        Self {
            site,
            origin,
            www,
            servers,
        }
    }

    fn server(&mut self, role: Role) -> &mut Server {
        let index = Role::ALL
            .iter()
            .position(|&r| r == role)
            .unwrap_or_default();
        &mut self.servers[index]
    }

    fn start_all(&mut self) -> Result<()> {
        for role in Role::ORIGINS {
            self.start_origin(role)?;
        }
        self.start_haproxy()
    }

    fn origin_command(&self, role: Role, listen: SocketAddr, build_id: &str) -> Command {
        let mut command = Command::new(&self.origin);
        command
            .arg(role.name())
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--build-id")
            .arg(build_id);
        match role {
            Role::StaticMain | Role::StaticFallback => {
                command.arg("--www").arg(&self.www);
            }
            Role::ApiMain => {
                command.arg("--haproxy-socket").arg(haproxy_socket());
            }
            Role::ApiFallback | Role::Haproxy => {}
        }
        command
    }

    /// Starts an origin server and waits for the address it prints first on stdout.
    fn start_origin(&mut self, role: Role) -> Result<()> {
        let server = self.server(role);
        let (listen, build_id) = (server.listen, server.build_id.clone());
        let (child, bound) = spawn_origin(role, self.origin_command(role, listen, &build_id))?;
        let pid = child.id();
        let server = self.server(role);
        server.listen = bound;
        server.child = Some(child);
        write_runtime_files(role, pid, bound)
    }

    /// `cargo xtask redeploy <tier>`: see the `redeploy` module.
    fn redeploy(
        &mut self,
        tier: Tier,
        build_id: Option<&str>,
        progress: &Progress<'_>,
    ) -> Result<String> {
        let role = tier.main_role();
        if self.server(Role::Haproxy).child.is_none() {
            bail!(
                "haproxy is not running, so there is no traffic to hand over; start it with \
                 `cargo xtask restart haproxy`, or restart the server with `cargo xtask restart \
                 {role}`"
            );
        }
        let build_id = match build_id {
            Some(id) => {
                redeploy::check_build_id(id)?;
                id.to_owned()
            }
            None => redeploy::next_build_id(&self.server(role).build_id, redeploy::unix_now()),
        };
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let command = self.origin_command(role, any_port, &build_id);
        let server = self.server(role);
        let slot = redeploy::Slot {
            role,
            child: &mut server.child,
            listen: &mut server.listen,
            build_id: &mut server.build_id,
        };
        redeploy::hand_over(tier, slot, command, &build_id, &haproxy_socket(), progress)
    }

    fn haproxy_command(&self) -> Command {
        let mut command = Command::new("haproxy");
        let addr = |role| {
            self.servers
                .iter()
                .find(|server| server.role == role)
                .map_or(String::new(), |server| server.listen.to_string())
        };
        command
            .env("HAPROXY_BIND", self.site.to_string())
            .env("STATIC_MAIN_ADDR", addr(Role::StaticMain))
            .env("STATIC_FALLBACK_ADDR", addr(Role::StaticFallback))
            .env("API_MAIN_ADDR", addr(Role::ApiMain))
            .env("API_FALLBACK_ADDR", addr(Role::ApiFallback))
            .env("HAPROXY_STATS_SOCKET", haproxy_socket())
            .env("WWW_DIR", &self.www)
            .env("HAPROXY_SERVER_STATE_FILE", haproxy_state_file());
        command
    }

    /// `haproxy -c` with the stack's environment; its complaints as the error.
    fn check_haproxy_config(&self) -> Result<()> {
        let mut check = self.haproxy_command();
        check.args(["-c", "-f", "haproxy.cfg"]);
        let output = check
            .stdin(Stdio::null())
            .output()
            .context("could not run `haproxy -c`; run `cargo xtask install`")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            bail!(
                "HAProxy rejects haproxy.cfg (`haproxy -c -f haproxy.cfg` with the stack's \
                 environment):\n{}",
                text.trim_end()
            );
        }
        for warning in text.lines().filter(|line| line.contains("WARNING")) {
            say!("haproxy -c: {warning}");
        }
        Ok(())
    }

    /// Starts HAProxy in master-worker mode and waits until its port accepts connections.
    fn start_haproxy(&mut self) -> Result<()> {
        // The addresses come from the environment at a start; a state file left from an
        // earlier HAProxy would bring back its ports. "1" alone: a valid file with no server.
        fs::write(haproxy_state_file(), "1\n")
            .with_context(|| format!("could not write {}", haproxy_state_file().display()))?;
        self.check_haproxy_config()?;
        let log = open_log(Role::Haproxy)?;
        let mut command = self.haproxy_command();
        command
            .args(["-W", "-db", "-f", "haproxy.cfg"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let line = cmd::display(&command);
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start `{line}`; run `cargo xtask install`"))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "haproxy exited at start ({}). Last lines of {}:\n{}",
                    cmd::describe(status),
                    log_file(Role::Haproxy).display(),
                    log_tail(Role::Haproxy)
                );
            }
            if TcpStream::connect_timeout(&self.site, Duration::from_millis(200)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                kill_and_reap(&mut child);
                bail!(
                    "haproxy did not accept connections on {} within {} s. Last lines of {}:\n{}",
                    self.site,
                    READY_TIMEOUT.as_secs(),
                    log_file(Role::Haproxy).display(),
                    log_tail(Role::Haproxy)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        let pid = child.id();
        let site = self.site;
        self.server(Role::Haproxy).child = Some(child);
        write_runtime_files(Role::Haproxy, pid, site)
    }

    fn print_banner(&self) {
        say!("");
        say!("Stack is up: open http://{}/", self.site);
        say!("");
        say!("  {:<16} {:<22} {:>8}  log", "server", "address", "pid");
        for server in &self.servers {
            let pid = server.child.as_ref().map_or(0, Child::id);
            say!(
                "  {:<16} {:<22} {:>8}  {}",
                server.role.name(),
                server.listen.to_string(),
                pid,
                log_file(server.role).display()
            );
        }
        say!("");
        say!(
            "  Watch a failover:  kill $(cat {}); curl -i http://{}/api/data",
            pid_file(Role::ApiMain).display(),
            self.site
        );
        say!("  Bring it back:     cargo xtask restart api-main");
        say!("  Zero-failure swap: cargo xtask redeploy api   (or static)");
        say!("  See what runs:     cargo xtask status");
        say!("  Stop the stack:    Ctrl-C here, or cargo xtask stop");
        say!("This terminal reports servers that exit; nothing is restarted automatically.");
        say!("");
    }

    /// Reports exits and answers requests until a stop signal or a `stop` request.
    fn supervise(&mut self, events: &Receiver<Event>) {
        loop {
            match events.recv_timeout(Duration::from_secs(1)) {
                Ok(Event::Signal(Signal::SIGCHLD)) | Err(RecvTimeoutError::Timeout) => {
                    self.report_exits();
                }
                Ok(Event::Signal(signal)) => {
                    say!("up: received {signal}; stopping the stack...");
                    return;
                }
                Ok(Event::Request(line, reply)) => {
                    let (answer, stop) = self.answer(&line, &reply);
                    let _ = reply.send(answer);
                    if stop {
                        say!("up: `cargo xtask stop` asked to stop the stack...");
                        return;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn report_exits(&mut self) {
        let site = self.site;
        for server in &mut self.servers {
            let Some(child) = &mut server.child else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            let pid = child.id();
            server.child = None;
            let _ = fs::remove_file(pid_file(server.role));
            let role = server.role;
            say!(
                "up: {role} (pid {pid}) exited ({}); {}; run `cargo xtask restart {role}`",
                cmd::describe(status),
                role.consequence(site)
            );
        }
    }

    /// The reply to one control request, and whether to stop the stack afterwards.
    fn answer(&mut self, line: &str, reply: &Sender<String>) -> (String, bool) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["restart", name] => {
                let Ok(role) = Role::from_str(name, false) else {
                    let names: Vec<&str> = Role::ALL.iter().map(|role| role.name()).collect();
                    return (
                        format!(
                            "error there is no server `{name}`; the servers are {}",
                            names.join(", ")
                        ),
                        false,
                    );
                };
                // Exits that happened before the request are reported as such, not as
                // part of the restart.
                self.report_exits();
                match self.restart(role) {
                    Ok(done) => {
                        say!("up: {done}");
                        (format!("ok {done}"), false)
                    }
                    Err(err) => {
                        say!("up: restarting {role} failed: {err:#}");
                        (format!("error {err:#}"), false)
                    }
                }
            }
            ["redeploy", tier, build_id @ ..] if build_id.len() <= 1 => {
                let Ok(tier) = Tier::from_str(tier, false) else {
                    return (
                        format!("error there is no tier `{tier}`; the tiers are static, api"),
                        false,
                    );
                };
                self.report_exits();
                let role = tier.main_role();
                match self.redeploy(tier, build_id.first().copied(), &Progress::new(reply)) {
                    Ok(done) => {
                        say!("up: {done}");
                        (format!("ok {done}"), false)
                    }
                    Err(err) => {
                        say!("up: redeploying {role} failed: {err:#}");
                        (format!("error {err:#}"), false)
                    }
                }
            }
            ["stop"] => ("ok stopping the stack".to_owned(), true),
            _ => (
                format!(
                    "error unknown request `{line}`; expected `restart <name>`, \
                     `redeploy <tier> [<build id>]` or `stop`"
                ),
                false,
            ),
        }
    }

    fn restart(&mut self, role: Role) -> Result<String> {
        say!("up: restarting {role}...");
        note_in_log(role, "cargo xtask restart");
        if role == Role::Haproxy {
            return self.reload_haproxy();
        }
        let server = self.server(role);
        if let Some(mut old) = server.child.take() {
            let pid = old.id();
            let status = stop_gracefully(&mut [&mut old]);
            say!(
                "up: {role} (pid {pid}) stopped ({})",
                status[0].map_or("status unknown".to_owned(), cmd::describe)
            );
        }
        let _ = fs::remove_file(pid_file(role));
        self.start_origin(role)?;
        let server = self.server(role);
        let pid = server.child.as_ref().map_or(0, Child::id);
        Ok(format!("{role} restarted on {}, pid {pid}", server.listen))
    }

    /// SIGUSR2 to HAProxy's master re-reads haproxy.cfg and replaces the workers without
    /// closing the port; if HAProxy is not running, it is started instead.
    fn reload_haproxy(&mut self) -> Result<String> {
        let running = self
            .server(Role::Haproxy)
            .child
            .as_ref()
            .map(|child| Pid::from_raw(child.id() as i32));
        let Some(master) = running else {
            self.start_haproxy()?;
            let pid = self
                .server(Role::Haproxy)
                .child
                .as_ref()
                .map_or(0, Child::id);
            return Ok(format!("haproxy was not running; started it, pid {pid}"));
        };
        self.check_haproxy_config()?;
        // HAProxy's environment still names the ports it was started with; the new workers
        // take the ports a redeploy moved servers to from this file instead.
        let saved = redeploy::RuntimeApi::new(&haproxy_socket())
            .command("show servers state")
            .and_then(|state| {
                fs::write(haproxy_state_file(), state).context("could not write the state file")
            });
        if let Err(err) = saved {
            say!(
                "up: could not save HAProxy's server states before the reload ({err:#}); the \
                 new workers use the addresses HAProxy was started with"
            );
        }
        let log = log_file(Role::Haproxy);
        let seen = fs::metadata(&log).map_or(0, |meta| meta.len());
        kill(master, Signal::SIGUSR2).context("could not send SIGUSR2 to haproxy")?;
        match wait_for_log(
            &log,
            seen,
            &["Loading success", "Loading failure"],
            RELOAD_TIMEOUT,
        ) {
            Some(line) if line.contains("Loading success") => Ok(format!(
                "haproxy reloaded (SIGUSR2 to master pid {master}); new workers took over"
            )),
            Some(_) => bail!(
                "haproxy could not load haproxy.cfg again; the old workers keep serving. See {}",
                log.display()
            ),
            None => Ok(format!(
                "sent SIGUSR2 to haproxy (master pid {master}) but saw no \"Loading success\" in \
                 {} within {} s",
                log.display(),
                RELOAD_TIMEOUT.as_secs()
            )),
        }
    }

    /// Stops every server: SIGTERM, a bounded wait, then SIGKILL. A second Ctrl-C skips the
    /// wait. Every child is reaped before this returns.
    fn shutdown(&mut self, events: &Receiver<Event>) {
        for server in &self.servers {
            if let Some(child) = &server.child {
                terminate(child);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            for server in &mut self.servers {
                if let Some(child) = &mut server.child {
                    if let Ok(Some(status)) = child.try_wait() {
                        say!(
                            "up: {} (pid {}) stopped ({})",
                            server.role,
                            child.id(),
                            cmd::describe(status)
                        );
                        server.child = None;
                    }
                }
            }
            if self.servers.iter().all(|server| server.child.is_none()) {
                return;
            }
            if Instant::now() >= deadline {
                say!(
                    "up: still running {} s after SIGTERM; sending SIGKILL",
                    STOP_TIMEOUT.as_secs()
                );
                break;
            }
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Signal(Signal::SIGCHLD)) | Err(_) => {}
                Ok(Event::Signal(_)) => {
                    say!("up: second stop signal; sending SIGKILL");
                    break;
                }
                Ok(Event::Request(_, reply)) => {
                    let _ = reply.send("error the stack is stopping".to_owned());
                }
            }
        }
        self.kill_all();
    }

    fn kill_all(&mut self) {
        for server in &mut self.servers {
            if let Some(mut child) = server.child.take() {
                let status = kill_and_reap(&mut child);
                say!(
                    "up: {} (pid {}) killed ({})",
                    server.role,
                    child.id(),
                    status.map_or("status unknown".to_owned(), cmd::describe)
                );
                let _ = fs::remove_file(pid_file(server.role));
            }
        }
    }
}

impl Drop for Stack {
    /// An error or a panic must not leave servers running unsupervised.
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Spawns an origin server with `command` (stdout piped to `up`, stderr to its log, its own
/// process group) and waits for the address it prints first on stdout.
pub fn spawn_origin(role: Role, mut command: Command) -> Result<(Child, SocketAddr)> {
    let log = open_log(role)?;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log.try_clone()?)
        // Its own process group: Ctrl-C reaches `up` alone, which stops servers in order.
        .process_group(0);
    let line = cmd::display(&command);
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {role} (`{line}`)"))?;
    let stdout = child
        .stdout
        .take()
        .context("the child's stdout is not piped")?;
    let (first_line_tx, first_line) = mpsc::channel();
    thread::spawn(move || forward_stdout(stdout, log, first_line_tx));

    let first_line = first_line.recv_timeout(READY_TIMEOUT);
    let bound = first_line
        .as_ref()
        .ok()
        .and_then(|line| line.trim().parse::<SocketAddr>().ok());
    let Some(bound) = bound else {
        let status = kill_and_reap(&mut child);
        let why = match first_line {
            Ok(line) if line.is_empty() => format!(
                "it exited ({}) before printing its address",
                status.map_or("status unknown".to_owned(), cmd::describe)
            ),
            Ok(line) => format!(
                "its first line on stdout is `{}`, not an address",
                line.trim()
            ),
            Err(_) => format!("it printed no address within {} s", READY_TIMEOUT.as_secs()),
        };
        bail!(
            "{role} did not start: {why}.\nCommand: {line}\nLast lines of {}:\n{}",
            log_file(role).display(),
            log_tail(role)
        );
    };
    Ok((child, bound))
}

/// Copies a child's stdout into its log, handing the first line (its address) to `up`.
fn forward_stdout(stdout: ChildStdout, mut log: File, first_line: Sender<String>) {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let _ = first_line.send(line);
    let _ = io::copy(&mut reader, &mut log);
}

/// SIGTERM to each child, then waits up to `STOP_TIMEOUT` before SIGKILL. Returns how each
/// ended.
pub fn stop_gracefully(children: &mut [&mut Child]) -> Vec<Option<ExitStatus>> {
    for child in children.iter() {
        terminate(child);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut statuses = vec![None; children.len()];
    while Instant::now() < deadline {
        for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait().ok().flatten();
            }
        }
        if statuses.iter().all(Option::is_some) {
            return statuses;
        }
        thread::sleep(Duration::from_millis(50));
    }
    for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
        if status.is_none() {
            *status = kill_and_reap(child);
        }
    }
    statuses
}

/// SIGTERM, then SIGCONT so that a stopped (hung on purpose, `kill -STOP`) server can act on
/// it and shut down gracefully instead of waiting for SIGKILL.
fn terminate(child: &Child) {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let _ = kill(pid, Signal::SIGCONT);
}

/// SIGKILL to the child's process group (HAProxy's workers too), then reaps the child.
pub fn kill_and_reap(child: &mut Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    // Not reaped yet, so the pid (also its group id) cannot have been reused.
    let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    child.wait().ok()
}

pub fn write_runtime_files(role: Role, pid: u32, addr: SocketAddr) -> Result<()> {
    fs::write(pid_file(role), format!("{pid}\n"))
        .with_context(|| format!("could not write {}", pid_file(role).display()))?;
    fs::write(addr_file(role), format!("{addr}\n"))
        .with_context(|| format!("could not write {}", addr_file(role).display()))
}

fn open_log(role: Role) -> Result<File> {
    let path = log_file(role);
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("could not open {}", path.display()))
}

pub fn note_in_log(role: Role, what: &str) {
    if let Ok(mut log) = open_log(role) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let _ = writeln!(log, "--- xtask: {what} (unix time {now}) ---");
    }
}

/// The last lines of a server's log, for error messages.
fn log_tail(role: Role) -> String {
    let text = fs::read_to_string(log_file(role)).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.is_empty() {
        "(empty)".to_owned()
    } else {
        tail
    }
}

/// Waits for a line containing one of `needles` to appear in `path` after byte `from`.
fn wait_for_log(path: &Path, from: u64, needles: &[&str], timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(bytes) = fs::read(path) {
            let start = usize::try_from(from).unwrap_or(0).min(bytes.len());
            let fresh = String::from_utf8_lossy(&bytes[start..]);
            if let Some(line) = fresh
                .lines()
                .find(|line| needles.iter().any(|needle| line.contains(needle)))
            {
                return Some(line.to_owned());
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    None
}

fn absolute(path: &Path) -> PathBuf {
    crate::workspace_root().join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_match_the_contract() {
        let names: Vec<&str> = Role::ALL.iter().map(|role| role.name()).collect();
        assert_eq!(
            names,
            [
                "haproxy",
                "static-main",
                "static-fallback",
                "api-main",
                "api-fallback"
            ]
        );
        for role in Role::ALL {
            assert_eq!(Role::from_str(role.name(), false), Ok(role));
        }
    }

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let stat = fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let comm = &stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()];
        assert!(process_alive(me, comm));
        assert!(!process_alive(me, "haproxy"));
    }
}
