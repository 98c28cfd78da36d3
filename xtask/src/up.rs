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
    fs,
    io::{self, BufRead, BufReader, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener},
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
        Arc,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, bail, Context, Result};
use driver::{
    HaproxyEnv, Host, ProcessSpec, Readiness, Role, RuntimeApi, Server, ServerProcess, Signal,
    Tier, Topology,
};

use crate::{
    client, cmd,
    files::{
        addr_file, control_socket, haproxy_socket, haproxy_state_file, live_pid, log_file,
        note_in_log, pid_file, stack_dir, write_runtime_files,
    },
    install,
    redeploy::{self, Progress},
};

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
    /// Across hosts: each server in a network namespace of its own, two HAProxy behind
    /// keepalived's VIP (needs root; `--listen` does not apply).
    #[arg(long)]
    pub hosts: bool,
}

pub fn up(args: &UpArgs) -> Result<()> {
    // Refusals first: they take milliseconds, the builds minutes.
    refuse_if_running(args.listen)?;
    let www = fs::canonicalize(&args.www)
        .with_context(|| format!("{} does not exist; pass --www DIR", args.www.display()))?;
    if !args.no_build {
        install::apt(&[install::APT_RUN, install::APT_HOSTS].concat())?;
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
    if args.hosts {
        return up_hosts(&origin, &www);
    }
    // Again: another `up` may have started while this one was building.
    refuse_if_running(args.listen)?;
    prepare_stack_dir()?;

    let (events_tx, events) = mpsc::channel();
    watch_signals(events_tx.clone())?;
    let control = UnixListener::bind(control_socket())
        .with_context(|| format!("could not listen on {}", control_socket().display()))?;
    thread::spawn(move || serve_control(control, events_tx));

    let mut stack = Supervisor::new(args.listen, origin, www, &build_id());
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

/// `up --hosts`: the driver's multi-host stack, in the foreground until Ctrl-C or SIGTERM;
/// dropping it removes every namespace, link and process it made.
fn up_hosts(origin: &Path, www: &Path) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("could not install the signal handlers")?;
    // Before any other thread runs; the driver reads it once, when the stack starts.
    std::env::set_var(driver::ORIGIN_BIN_ENV, origin);
    let stack = driver::Stack::builder()
        .www(www)
        .build_id(build_id())
        .hosts()
        .start();
    say!("");
    say!("Stack is up across hosts: open http://{}/", stack.addr());
    say!("");
    say!(
        "  {:<16} {:<14} {:<22} {:>7}",
        "server",
        "host",
        "address",
        "pid"
    );
    let balancers = Host::BALANCERS.map(|host| ("haproxy".to_owned(), host, stack.balancer(host)));
    let origins = Role::ALL.map(|role| (role.to_string(), Host::Origin(role), stack.server(role)));
    for (name, host, process) in balancers.into_iter().chain(origins) {
        say!(
            "  {name:<16} {host:<16} {:<22} {:>7}",
            process.addr().to_string(),
            process.pid()
        );
    }
    say!("");
    say!("Ctrl-C stops every server and removes the namespaces and the bridge.");
    if let Some(number) = signals.forever().next() {
        let signal = Signal::try_from(number).map_or(number.to_string(), |s| s.to_string());
        say!("up: received {signal}; stopping the stack...");
    }
    drop(stack);
    say!("up: stopped");
    Ok(())
}

fn origin_binary() -> PathBuf {
    driver::target_dir().join("release/origin")
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
    let running: Vec<String> = Server::ALL
        .iter()
        .filter_map(|&server| live_pid(server).map(|pid| format!("{server} (pid {pid})")))
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
    for server in Server::ALL {
        fs::write(log_file(server), "")
            .with_context(|| format!("could not write {}", log_file(server).display()))?;
        let _ = fs::remove_file(pid_file(server));
        let _ = fs::remove_file(addr_file(server));
    }
    // No `up` answered on it (checked above): it is left over from one that was killed.
    let _ = fs::remove_file(control_socket());
    Ok(())
}

fn remove_runtime_files() {
    for server in Server::ALL {
        let _ = fs::remove_file(pid_file(server));
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
struct Slot {
    server: Server,
    /// Where it listens: origins start on port 0 and keep the bound address across restarts,
    /// since HAProxy's configuration names it (a redeploy moves it, through the runtime API).
    listen: SocketAddr,
    /// The build id it runs with (a redeploy changes it).
    build_id: String,
    /// An origin's listening socket, held here and handed to each process of the role (as
    /// systemd's socket units do), so a restart never closes the port: connections wait in
    /// its backlog while one process replaces the other. None for HAProxy, and for an origin
    /// until its first start.
    socket: Option<Arc<TcpListener>>,
    process: Option<ServerProcess>,
}

/// The running stack; dropping it kills and reaps every process (each guard does).
struct Supervisor {
    site: SocketAddr,
    origin: PathBuf,
    www: PathBuf,
    topology: Topology,
    slots: Vec<Slot>,
}

impl Supervisor {
    fn new(site: SocketAddr, origin: PathBuf, www: PathBuf, build_id: &str) -> Self {
        let topology = Topology::Loopback {
            ip: Ipv4Addr::LOCALHOST,
        };
        let slots = Server::ALL
            .iter()
            .map(|&server| Slot {
                server,
                listen: match server {
                    Server::Haproxy => site,
                    Server::Origin(role) => topology.origin_listen(role),
                },
                build_id: build_id.to_owned(),
                socket: None,
                process: None,
            })
            .collect();
        Self {
            site,
            origin,
            www,
            topology,
            slots,
        }
    }

    fn slot(&mut self, server: Server) -> &mut Slot {
        let index = Server::ALL
            .iter()
            .position(|&s| s == server)
            .unwrap_or_default();
        &mut self.slots[index]
    }

    fn start_all(&mut self) -> Result<()> {
        for role in Role::ALL {
            self.start_origin(role)?;
        }
        self.start_haproxy()
    }

    /// How `role` starts, serving `socket` with `build_id`; output goes to its log.
    fn origin_spec(
        &self,
        role: Role,
        socket: &Arc<TcpListener>,
        build_id: &str,
    ) -> Result<ProcessSpec> {
        let listen = socket
            .local_addr()
            .context("could not read the address of the listening socket")?;
        let spec = driver::origin_spec(
            &self.origin,
            role,
            listen,
            build_id,
            &self.www,
            &haproxy_socket(),
        )
        .listener(Arc::clone(socket))
        .log_file(log_file(Server::Origin(role)))
        // Its own process group: Ctrl-C reaches `up` alone, which stops servers in order.
        .own_process_group();
        Ok(self.topology.place_origin(role, spec))
    }

    /// A new listening socket for `role` on `listen` (port 0: a free one).
    fn bind(role: Role, listen: SocketAddr) -> Result<Arc<TcpListener>> {
        TcpListener::bind(listen)
            .map(Arc::new)
            .with_context(|| format!("could not open a listening socket for {role} on {listen}"))
    }

    /// Starts an origin server on the role's held socket (opened on first use) and waits for
    /// the address it prints first on stdout.
    fn start_origin(&mut self, role: Role) -> Result<()> {
        let slot = self.slot(Server::Origin(role));
        let (listen, build_id) = (slot.listen, slot.build_id.clone());
        let socket = match &slot.socket {
            Some(socket) => Arc::clone(socket),
            None => {
                let socket = Self::bind(role, listen)?;
                self.slot(Server::Origin(role)).socket = Some(Arc::clone(&socket));
                socket
            }
        };
        let process = ServerProcess::try_spawn(self.origin_spec(role, &socket, &build_id)?)
            .map_err(|failed| anyhow!("{} did not start: {}", role, failed.1))?;
        let (pid, bound) = (process.pid(), process.addr());
        let slot = self.slot(Server::Origin(role));
        slot.listen = bound;
        slot.process = Some(process);
        write_runtime_files(Server::Origin(role), pid, bound)
    }

    /// `cargo xtask redeploy <tier>`: see the `redeploy` module.
    fn redeploy(
        &mut self,
        tier: Tier,
        build_id: Option<&str>,
        progress: &Progress<'_>,
    ) -> Result<String> {
        let role = tier.main();
        if self.slot(Server::Haproxy).process.is_none() {
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
            None => redeploy::next_build_id(
                &self.slot(Server::Origin(role)).build_id,
                redeploy::unix_now(),
            ),
        };
        // The new process gets a socket of its own on a new port; once HAProxy sends the slot
        // there, that socket is the one later restarts hand on.
        let socket = Self::bind(role, self.topology.origin_listen(role))?;
        let spec = self.origin_spec(role, &socket, &build_id)?;
        let slot = self.slot(Server::Origin(role));
        let moved = redeploy::Slot {
            role,
            process: &mut slot.process,
            listen: &mut slot.listen,
            build_id: &mut slot.build_id,
        };
        let api = RuntimeApi::new(haproxy_socket());
        let done = redeploy::hand_over(moved, spec, &build_id, &api, progress)?;
        slot.socket = Some(socket);
        Ok(done)
    }

    /// HAProxy's environment: where each server listens now.
    fn haproxy_env(&self) -> HaproxyEnv {
        let listen = |role| {
            self.slots
                .iter()
                .find(|slot| slot.server == Server::Origin(role))
                .map_or(self.topology.origin_listen(role), |slot| slot.listen)
        };
        HaproxyEnv {
            bind: self.site,
            origins: Role::ALL.map(listen),
            stats_socket: haproxy_socket(),
            www: self.www.clone(),
            stats_addr: None,
            state_file: Some(haproxy_state_file()),
        }
    }

    /// `haproxy -c` with the stack's environment; its complaints as the error.
    fn check_haproxy_config(&self) -> Result<()> {
        let mut check = Command::new("haproxy");
        check.envs(self.haproxy_env().vars());
        check.args(["-c", "-f", "haproxy.cfg"]);
        let output = check
            .stdin(Stdio::null())
            .output()
            .context("could not run `haproxy -c`; run `cargo xtask install`")?;
        let text = cmd::all_output(&output);
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
        let spec = ProcessSpec::new("haproxy", "haproxy")
            .args(["-W", "-db", "-f", "haproxy.cfg"])
            .readiness(Readiness::Accepts(self.site))
            .log_file(log_file(Server::Haproxy))
            .own_process_group();
        let spec = self
            .topology
            .place(Host::LbA, self.haproxy_env().apply(spec));
        let process = ServerProcess::try_spawn(spec).map_err(|failed| {
            anyhow!(
                "haproxy did not start ({}); run `cargo xtask install` if it is missing",
                failed.1
            )
        })?;
        let (pid, site) = (process.pid(), self.site);
        self.slot(Server::Haproxy).process = Some(process);
        write_runtime_files(Server::Haproxy, pid, site)
    }

    fn print_banner(&self) {
        say!("");
        say!("Stack is up: open http://{}/", self.site);
        say!("");
        say!("  {:<16} {:<22} {:>8}  log", "server", "address", "pid");
        for slot in &self.slots {
            let pid = slot.process.as_ref().map_or(0, ServerProcess::pid);
            say!(
                "  {:<16} {:<22} {:>8}  {}",
                slot.server.name(),
                slot.listen.to_string(),
                pid,
                log_file(slot.server).display()
            );
        }
        say!("");
        say!(
            "  Watch a failover:  kill $(cat {}); curl -i http://{}/api/data",
            pid_file(Server::Origin(Role::ApiMain)).display(),
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
        for slot in &mut self.slots {
            let Some(process) = &mut slot.process else {
                continue;
            };
            let Some(status) = process.exit_status() else {
                continue;
            };
            let pid = process.pid();
            slot.process = None;
            let _ = fs::remove_file(pid_file(slot.server));
            let server = slot.server;
            say!(
                "up: {server} (pid {pid}) exited ({}); {}; run `cargo xtask restart {server}`",
                cmd::describe(status),
                consequence(server, site)
            );
        }
    }

    /// The reply to one control request, and whether to stop the stack afterwards.
    fn answer(&mut self, line: &str, reply: &Sender<String>) -> (String, bool) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [verb @ ("restart" | "restart-cold"), name] => {
                let server = match name.parse::<Server>() {
                    Ok(server) => server,
                    Err(error) => return (format!("error {error}"), false),
                };
                // Exits that happened before the request are reported as such, not as
                // part of the restart.
                self.report_exits();
                match self.restart(server, *verb == "restart-cold") {
                    Ok(done) => {
                        say!("up: {done}");
                        (format!("ok {done}"), false)
                    }
                    Err(err) => {
                        say!("up: restarting {server} failed: {err:#}");
                        (format!("error {err:#}"), false)
                    }
                }
            }
            ["redeploy", tier, build_id @ ..] if build_id.len() <= 1 => {
                let tier = match tier.parse::<Tier>() {
                    Ok(tier) => tier,
                    Err(error) => return (format!("error {error}"), false),
                };
                self.report_exits();
                let role = tier.main();
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

    /// Restarts an origin on its held socket: the new process starts serving the socket next
    /// to the old one, then the old one stops (SIGTERM lets its requests finish), so no
    /// connection is refused and HAProxy never sees the server go away. `cold`: the old way,
    /// for comparison: stop the process, close the socket, then start on a new one.
    fn restart(&mut self, server: Server, cold: bool) -> Result<String> {
        say!(
            "up: restarting {server}{}...",
            if cold { " cold" } else { "" }
        );
        note_in_log(server, "cargo xtask restart");
        let Server::Origin(role) = server else {
            return self.reload_haproxy();
        };
        if cold {
            let slot = self.slot(server);
            slot.socket = None;
            if let Some(mut old) = slot.process.take() {
                old.terminate(STOP_TIMEOUT);
            }
            self.start_origin(role)?;
            let slot = self.slot(server);
            let pid = slot.process.as_ref().map_or(0, ServerProcess::pid);
            return Ok(format!(
                "{role} restarted cold on {}, pid {pid}",
                slot.listen
            ));
        }
        let old = self.slot(server).process.take();
        if let Err(err) = self.start_origin(role) {
            // The old process (if any) keeps serving.
            self.slot(server).process = old;
            return Err(err.context(format!("the old {role} keeps serving")));
        }
        if let Some(mut old) = old {
            let pid = old.pid();
            let status = old.terminate(STOP_TIMEOUT);
            say!(
                "up: the old {role} (pid {pid}) stopped ({})",
                status.map_or("status unknown".to_owned(), cmd::describe)
            );
        }
        let slot = self.slot(server);
        let pid = slot.process.as_ref().map_or(0, ServerProcess::pid);
        Ok(format!(
            "{role} restarted on {} (socket held), pid {pid}",
            slot.listen
        ))
    }

    /// SIGUSR2 to HAProxy's master re-reads haproxy.cfg and replaces the workers without
    /// closing the port; if HAProxy is not running, it is started instead.
    fn reload_haproxy(&mut self) -> Result<String> {
        let Some(master) = self
            .slot(Server::Haproxy)
            .process
            .as_ref()
            .map(ServerProcess::pid)
        else {
            self.start_haproxy()?;
            let slot = self.slot(Server::Haproxy);
            let pid = slot.process.as_ref().map_or(0, ServerProcess::pid);
            return Ok(format!("haproxy was not running; started it, pid {pid}"));
        };
        self.check_haproxy_config()?;
        // HAProxy's environment still names the ports it was started with; the new workers
        // take the ports a redeploy moved servers to from this file instead.
        let saved = RuntimeApi::new(haproxy_socket())
            .command("show servers state")
            .map_err(anyhow::Error::from)
            .and_then(|state| {
                fs::write(haproxy_state_file(), state).context("could not write the state file")
            });
        if let Err(err) = saved {
            say!(
                "up: could not save HAProxy's server states before the reload ({err:#}); the \
                 new workers use the addresses HAProxy was started with"
            );
        }
        let log = log_file(Server::Haproxy);
        let seen = fs::metadata(&log).map_or(0, |meta| meta.len());
        if let Some(haproxy) = &mut self.slot(Server::Haproxy).process {
            haproxy.kill(Signal::SIGUSR2);
        }
        let outcome = driver::poll_until(RELOAD_TIMEOUT, "HAProxy reports the reload", || {
            let bytes = fs::read(&log).map_err(|err| err.to_string())?;
            let start = usize::try_from(seen).unwrap_or(0).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..])
                .lines()
                .find(|line| line.contains("Loading success") || line.contains("Loading failure"))
                .map(str::to_owned)
                .ok_or_else(|| "no \"Loading success\" or \"Loading failure\" yet".to_owned())
        });
        match outcome {
            Ok(line) if line.contains("Loading success") => Ok(format!(
                "haproxy reloaded (SIGUSR2 to master pid {master}); new workers took over"
            )),
            Ok(_) => bail!(
                "haproxy could not load haproxy.cfg again; the old workers keep serving. See {}",
                log.display()
            ),
            Err(_) => Ok(format!(
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
        for process in self
            .slots
            .iter_mut()
            .filter_map(|slot| slot.process.as_mut())
        {
            // SIGCONT too, so that a server stopped on purpose (`kill -STOP`) can act on it.
            process.kill(Signal::SIGTERM);
            process.cont();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            for slot in &mut self.slots {
                if let Some(process) = &mut slot.process {
                    if let Some(status) = process.exit_status() {
                        say!(
                            "up: {} (pid {}) stopped ({})",
                            slot.server,
                            process.pid(),
                            cmd::describe(status)
                        );
                        slot.process = None;
                    }
                }
            }
            if self.slots.iter().all(|slot| slot.process.is_none()) {
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
        for slot in &mut self.slots {
            if let Some(process) = slot.process.take() {
                say!("up: {} (pid {}) killed", slot.server, process.pid());
                // Dropping the guard kills its process group and reaps it.
                drop(process);
                let _ = fs::remove_file(pid_file(slot.server));
            }
        }
    }
}

/// What a visitor notices once this server is gone.
fn consequence(server: Server, site: SocketAddr) -> String {
    match server {
        Server::Haproxy => format!("nothing answers on http://{site}/ now"),
        Server::Origin(role) if role.is_main() => {
            "once HAProxy's health checks mark it down, the site shows the maintenance page"
                .to_owned()
        }
        Server::Origin(role) => format!("the {} backend has no backup server now", role.backend()),
    }
}
