//! `cargo xtask up`: the driver's [`Stack`] (HAProxy and the four origin servers, on localhost
//! or across hosts), supervised in the foreground until Ctrl-C or SIGTERM.
//!
//! Everything the running stack leaves lives in target/stack/ (or `--stack-dir`, see
//! `files`), and `control.sock` there is where `up` answers one-line requests from
//! `cargo xtask restart`, `redeploy` and `stop`. The reply is a first line `ok ...` or
//! `error ...`, possibly followed by detail lines, then the connection closes; a redeploy sends
//! `progress ...` lines first. The stack holds each origin's listening socket, so a restart
//! refuses no connection.
//!
//! The supervisor reports exits but never restarts a server by itself: watching the site
//! fail over, and come back on request, is the point of running it.

use std::{
    collections::HashSet,
    fs,
    io::{self, BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener},
    os::unix::net::{UnixListener, UnixStream},
    path::PathBuf,
    process::Command,
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};
use driver::{Host, Role, Server, Signal, Stack, Tier, STOP_TIMEOUT};

use crate::{client, cmd, files, install};

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
    refuse_if_running(args)?;
    let www = fs::canonicalize(&args.www)
        .with_context(|| format!("{} does not exist; pass --www DIR", args.www.display()))?;
    if !args.no_build {
        install::apt(&[install::APT_RUN, install::APT_HOSTS].concat())?;
        client::build()?;
    }
    let origin = cmd::release_origin(!args.no_build)?;
    // Again: another `up` may have started while this one was building.
    refuse_if_running(args)?;
    files::clear_stack_dir(false)?;

    let (events_tx, events) = mpsc::channel();
    watch_signals(events_tx.clone())?;
    let control = UnixListener::bind(files::control_socket())
        .with_context(|| format!("could not listen on {}", files::control_socket().display()))?;
    thread::spawn(move || serve_control(control, events_tx));

    let builder = Stack::builder()
        .www(www)
        .build_id(build_id())
        .origin(origin)
        .dir(std::path::absolute(files::stack_dir())?)
        .hold_sockets()
        .supervised();
    let builder = if args.hosts {
        builder.hosts()
    } else {
        builder.listen(args.listen)
    };
    say!(
        "up: starting the stack{}...",
        if args.hosts { " across hosts" } else { "" }
    );
    let stack = builder.try_start().map_err(|error| {
        let _ = files::clear_stack_dir(true);
        anyhow!("the stack did not start: {error}")
    })?;
    let mut supervisor = Supervisor {
        stack,
        reported: HashSet::new(),
    };
    supervisor.write_runtime_files();
    supervisor.print_banner();
    supervisor.supervise(&events);
    supervisor.shutdown(&events);
    // The network and every process are gone once the stack is.
    drop(supervisor);
    let _ = files::clear_stack_dir(true);
    say!("up: the stack is stopped");
    Ok(())
}

fn build_id() -> String {
    let commit = cmd::probe(Command::new("git").args(["rev-parse", "--short", "HEAD"]))
        .filter(|commit| !commit.is_empty())
        .unwrap_or_else(|| "dev".to_owned());
    format!("{commit}-{}", driver::unix_now())
}

fn refuse_if_running(args: &UpArgs) -> Result<()> {
    let running: Vec<String> = files::live_processes(&files::stack_dir())
        .into_iter()
        .map(|(name, pid)| format!("{name} (pid {pid})"))
        .collect();
    if !running.is_empty() {
        bail!(
            "a stack is already running: {}. Stop it with Ctrl-C where `cargo xtask up` runs, \
             or `cargo xtask stop`; if that `up` is gone, `kill $(cat {}/*.pid)`",
            running.join(", "),
            files::stack_dir().display()
        );
    }
    if UnixStream::connect(files::control_socket()).is_ok() {
        bail!(
            "another `cargo xtask up` is running (it answers on {}); stop it with \
             `cargo xtask stop`",
            files::control_socket().display()
        );
    }
    if !args.hosts {
        TcpListener::bind(args.listen).map_err(|err| {
            anyhow!(
                "{} is taken ({err}), so HAProxy could not listen there; stop whatever \
                 listens on it (`ss -ltnp`) or pick another address: \
                 cargo xtask up --listen 127.0.0.1:8081",
                args.listen
            )
        })?;
    }
    Ok(())
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

/// The running stack and the exits already reported.
struct Supervisor {
    stack: Stack,
    reported: HashSet<u32>,
}

impl Supervisor {
    /// (Re)writes the pid and address file of every running process, and the site's; a
    /// process that has exited keeps none.
    fn write_runtime_files(&mut self) {
        let mut written = files::write_site(self.stack.addr());
        for process in self.stack.processes_mut() {
            if !process.is_running() {
                let _ = fs::remove_file(files::pid_file(process.name()));
                continue;
            }
            written = written.and_then(|()| {
                files::write_runtime_files(process.name(), process.pid(), process.try_addr())
            });
        }
        if let Err(err) = written {
            say!("up: {err:#}; `cargo xtask status` may show stale pids");
        }
    }

    fn print_banner(&self) {
        say!("");
        match self.stack.network() {
            None => say!("Stack is up: open http://{}/", self.stack.addr()),
            Some(_) => say!(
                "Stack is up across hosts: open http://{}/ (the VIP)",
                self.stack.addr()
            ),
        }
        say!("");
        say!("  {:<16} {:<22} {:>8}  log", "server", "address", "pid");
        for process in self.stack.processes() {
            say!(
                "  {:<16} {:<22} {:>8}  {}",
                process.name(),
                process
                    .try_addr()
                    .map_or("-".to_owned(), |addr| addr.to_string()),
                process.pid(),
                process
                    .spec()
                    .log_path()
                    .map_or("-".to_owned(), |path| path.display().to_string())
            );
        }
        if let Some(network) = self.stack.network() {
            say!("");
            say!(
                "  Each host is a network namespace: {} (look inside with `ip netns exec <ns> ss -tln`).",
                Host::ALL.map(|host| network.namespace(host)).join(", ")
            );
        }
        say!("");
        say!(
            "  Watch a failover:  kill $(cat {}); curl -i http://{}/api/data",
            files::pid_file(Role::ApiMain.name()).display(),
            self.stack.addr()
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
                    // Exits that happened before the request are reported as such, not as
                    // part of what it does.
                    self.report_exits();
                    let (answer, stop) = self.answer(&line, &reply);
                    self.write_runtime_files();
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
        let site = self.stack.addr();
        for process in self.stack.processes_mut() {
            let Some(status) = process.exit_status() else {
                continue;
            };
            if !self.reported.insert(process.pid()) {
                continue;
            }
            let name = process.name().to_owned();
            let _ = fs::remove_file(files::pid_file(&name));
            let (consequence, remedy) = consequence(&name, site);
            say!(
                "up: {name} (pid {}) exited ({}); {consequence}; run `cargo xtask restart {remedy}`",
                process.pid(),
                cmd::describe(status),
            );
        }
    }

    /// The reply to one control request, and whether to stop the stack afterwards.
    fn answer(&mut self, line: &str, reply: &Sender<String>) -> (String, bool) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (what, outcome) = match words.as_slice() {
            [verb @ ("restart" | "restart-cold"), name] => {
                let server = match name.parse::<Server>() {
                    Ok(server) => server,
                    Err(error) => return (format!("error {error}"), false),
                };
                let cold = *verb == "restart-cold";
                say!(
                    "up: restarting {server}{}...",
                    if cold { " cold" } else { "" }
                );
                let outcome = match server {
                    Server::Haproxy => self.stack.reload_haproxy(),
                    Server::Origin(role) if cold => self.stack.restart_origin_cold(role),
                    Server::Origin(role) => self.stack.restart_origin(role),
                };
                (format!("restarting {server}"), outcome)
            }
            ["redeploy", tier, build_id @ ..] if build_id.len() <= 1 => {
                let tier = match tier.parse::<Tier>() {
                    Ok(tier) => tier,
                    Err(error) => return (format!("error {error}"), false),
                };
                let mut progress = |line: &str| {
                    say!("up: {line}");
                    let _ = reply.send(format!("progress {line}"));
                };
                let outcome = self
                    .stack
                    .redeploy(tier, build_id.first().copied(), &mut progress);
                (format!("redeploying {}", tier.main()), outcome)
            }
            ["stop"] => return ("ok stopping the stack".to_owned(), true),
            _ => {
                return (
                    format!(
                        "error unknown request `{line}`; expected `restart <name>`, \
                         `redeploy <tier> [<build id>]` or `stop`"
                    ),
                    false,
                )
            }
        };
        match outcome {
            Ok(done) => {
                say!("up: {done}");
                (format!("ok {done}"), false)
            }
            Err(err) => {
                say!("up: {what} failed: {err}");
                (format!("error {err}"), false)
            }
        }
    }

    /// Stops every process: SIGTERM, a bounded wait, then SIGKILL. A second Ctrl-C skips the
    /// wait. Every child is reaped, and across hosts the network removed, when the stack is
    /// dropped after this.
    fn shutdown(&mut self, events: &Receiver<Event>) {
        for process in self.stack.processes_mut() {
            if process.is_running() {
                // SIGCONT too, so that a server stopped on purpose (`kill -STOP`) can act on it.
                process.kill(Signal::SIGTERM);
                process.cont();
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let mut running = 0;
            for process in self.stack.processes_mut() {
                match process.exit_status() {
                    Some(status) if self.reported.insert(process.pid()) => say!(
                        "up: {} (pid {}) stopped ({})",
                        process.name(),
                        process.pid(),
                        cmd::describe(status)
                    ),
                    Some(_) => {}
                    None => running += 1,
                }
            }
            if running == 0 {
                return;
            }
            if Instant::now() >= deadline {
                say!(
                    "up: {running} still running {} s after SIGTERM; sending SIGKILL",
                    STOP_TIMEOUT.as_secs()
                );
                return;
            }
            match events.recv_timeout(Duration::from_millis(100)) {
                Ok(Event::Signal(Signal::SIGCHLD)) | Err(_) => {}
                Ok(Event::Signal(_)) => {
                    say!("up: second stop signal; sending SIGKILL");
                    return;
                }
                Ok(Event::Request(_, reply)) => {
                    let _ = reply.send("error the stack is stopping".to_owned());
                }
            }
        }
    }
}

/// What a visitor notices once process `name` is gone, and which server to restart.
fn consequence(name: &str, site: SocketAddr) -> (String, &'static str) {
    if name == "haproxy" {
        return (format!("nothing answers on http://{site}/ now"), "haproxy");
    }
    if name.starts_with("haproxy-") {
        return (
            "keepalived moves the VIP to the other load balancer within a second".to_owned(),
            "haproxy",
        );
    }
    if name.starts_with("keepalived-") {
        return (
            "that load balancer takes no part in VRRP now".to_owned(),
            "haproxy",
        );
    }
    match Role::ALL.into_iter().find(|role| role.name() == name) {
        Some(role) if role.is_main() => (
            "once HAProxy's health checks mark it down, the site shows the maintenance page"
                .to_owned(),
            role.name(),
        ),
        Some(role) => (
            format!("the {} backend has no backup server now", role.backend()),
            role.name(),
        ),
        None => ("".to_owned(), "haproxy"),
    }
}
