//! One child process under test, as a guard that always kills and reaps it.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use command_fds::{CommandFdExt, FdMapping};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::wait::POLL_INTERVAL;

/// How long a process may take to become ready before the harness gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The first inherited descriptor in systemd's socket-activation protocol (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: i32 = 3;

/// Lines of captured output kept per process (older lines are dropped).
const LOG_CAPACITY: usize = 10_000;

/// How the harness knows a freshly spawned process is ready.
#[derive(Clone, Debug)]
pub enum Readiness {
    /// Its first line on standard output is the address it bound (the `origin` contract).
    PrintsAddress,
    /// It accepts TCP connections on this address (HAProxy).
    Accepts(SocketAddr),
    /// Ready as soon as it is spawned.
    Spawned,
}

/// Everything needed to start (and restart) a process.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    readiness: Readiness,
    listen_flag: Option<OsString>,
    log_file: Option<PathBuf>,
    own_group: bool,
    listener: Option<Arc<TcpListener>>,
}

impl ProcessSpec {
    /// A process called `name` (in logs and panics) running `program`, ready when spawned.
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        ProcessSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            current_dir: None,
            readiness: Readiness::Spawned,
            listen_flag: None,
            log_file: None,
            own_group: false,
            listener: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the process (the rest is inherited).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs the process in `dir`.
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    /// How to tell the process is ready.
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// The flag whose value is the listen address (`--listen`): on restart its value becomes
    /// the address the first run reported, so the process comes back on the same port.
    pub fn listen_flag(mut self, flag: impl AsRef<OsStr>) -> Self {
        self.listen_flag = Some(flag.as_ref().to_owned());
        self
    }

    /// Sets the value of `flag` (e.g. `--build-id`): replaces the argument after its first
    /// occurrence, or appends both. Used with [`ServerProcess::restart_with`].
    pub fn set_arg(mut self, flag: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let (flag, value) = (flag.as_ref(), value.as_ref().to_owned());
        match self.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value,
            _ => self.args.extend([flag.to_owned(), value]),
        }
        self
    }

    /// Also appends every line of output to `path` (`cargo xtask up`'s `<name>.log`).
    pub fn log_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.log_file = Some(path.into());
        self
    }

    /// Runs the process in a process group of its own: a Ctrl-C in the terminal then reaches
    /// only the supervisor, and killing the process kills its children too (HAProxy's
    /// workers, a WebDriver server's browser).
    pub fn own_process_group(mut self) -> Self {
        self.own_group = true;
        self
    }

    /// Hands `listener` to the process the way systemd's socket activation does: as file
    /// descriptor 3 with `LISTEN_FDS=1` (the origin's inherited-socket path). The caller keeps
    /// the socket open, so every process started from this spec (a restart) serves the same
    /// socket and connections wait in its backlog meanwhile instead of being refused.
    pub fn listener(mut self, listener: Arc<TcpListener>) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Whether the process is handed a listening socket ([`ProcessSpec::listener`]).
    pub fn has_listener(&self) -> bool {
        self.listener.is_some()
    }

    /// The same process started through `launcher` (e.g. `ip netns exec NS`): the launcher
    /// becomes the program, the old program and its arguments follow `launcher_args`.
    pub fn launched_by(mut self, launcher: &str, launcher_args: &[&str]) -> Self {
        let mut args: Vec<OsString> = launcher_args.iter().map(OsString::from).collect();
        args.push(std::mem::replace(&mut self.program, launcher.into()).into());
        args.append(&mut self.args);
        self.args = args;
        self
    }

    /// The file every line of output also goes to, if any.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.log_file.as_deref()
    }

    /// The name given to [`ProcessSpec::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The command line, quoted for a human.
    pub fn command_line(&self) -> String {
        let mut line = String::new();
        for (key, value) in &self.env {
            let _ = write!(line, "{}={:?} ", key.to_string_lossy(), value);
        }
        let _ = write!(line, "{}", self.program.display());
        for arg in &self.args {
            let _ = write!(line, " {}", arg.to_string_lossy());
        }
        line
    }

    /// The arguments, with the listen flag's value replaced by `addr` when given.
    fn args_for(&self, addr: Option<SocketAddr>) -> Vec<OsString> {
        let mut args = self.args.clone();
        if let (Some(flag), Some(addr)) = (&self.listen_flag, addr) {
            match args.iter().position(|a| a == flag) {
                Some(i) if i + 1 < args.len() => args[i + 1] = addr.to_string().into(),
                _ => args.extend([flag.clone(), addr.to_string().into()]),
            }
        }
        args
    }
}

/// Captured standard output and standard error of one process, across restarts.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<VecDeque<String>>>);

impl Log {
    fn lines(&self) -> MutexGuard<'_, VecDeque<String>> {
        // A panicking reader thread must not hide the log from the panic message we build.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, line: String) {
        let mut lines = self.lines();
        if lines.len() == LOG_CAPACITY {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn tail(&self, count: usize) -> String {
        let lines = self.lines();
        let skip = lines.len().saturating_sub(count);
        let mut text = String::new();
        for line in lines.iter().skip(skip) {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// Copies a pipe into the log (and `file`) line by line until it closes, so the child never
/// blocks on a full pipe. The first line of a stream that has `first_line` is also sent there.
fn drain(
    pipe: impl Read,
    stream: &'static str,
    log: Log,
    mut file: Option<File>,
    mut first_line: Option<mpsc::Sender<String>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buffer = Vec::new();
    loop {
        buffer.clear();
        match reader.read_until(b'\n', &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buffer);
                let line = line.trim_end_matches(['\n', '\r']);
                if let Some(sender) = first_line.take() {
                    let _ = sender.send(line.to_owned());
                }
                if let Some(file) = &mut file {
                    let _ = writeln!(file, "{line}");
                }
                log.push(format!("[{stream}] {line}"));
            }
        }
    }
}

/// A running child process; dropping it kills it (SIGKILL, after SIGCONT if stopped) and reaps
/// it, whether the test passed or panicked.
pub struct ServerProcess {
    spec: ProcessSpec,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    addr: Option<SocketAddr>,
    stopped: bool,
    log: Log,
}

impl ServerProcess {
    /// Spawns the process and waits until it is ready (see [`Readiness`]).
    ///
    /// Panics with the command line and the process's output if it cannot start, exits, or is
    /// not ready within 30 s.
    #[track_caller]
    pub fn spawn(spec: ProcessSpec) -> ServerProcess {
        match Self::try_spawn(spec) {
            Ok(process) => process,
            Err(failed) => panic!("{}", failed.1),
        }
    }

    /// Like [`ServerProcess::spawn`], but hands back the (exited, reaped) process and a
    /// description of the failure instead of panicking, so a caller can retry, e.g. on
    /// another port.
    pub fn try_spawn(spec: ProcessSpec) -> Result<ServerProcess, Box<(ServerProcess, String)>> {
        let mut process = ServerProcess {
            spec,
            child: None,
            exit: None,
            addr: None,
            stopped: false,
            log: Log::default(),
        };
        match process.launch() {
            Ok(()) => Ok(process),
            Err(message) => Err(Box::new((process, message))),
        }
    }

    fn launch(&mut self) -> Result<(), String> {
        let args = self.spec.args_for(self.addr);
        let mut command = Command::new(&self.spec.program);
        command
            .args(&args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = &self.spec.current_dir {
            command.current_dir(dir);
        }
        if self.spec.own_group {
            command.process_group(0);
        }
        if let Some(listener) = &self.spec.listener {
            let socket = listener
                .as_fd()
                .try_clone_to_owned()
                .map_err(|error| format!("could not hand the listening socket on: {error}"))?;
            command
                .fd_mappings(vec![FdMapping {
                    parent_fd: socket,
                    child_fd: LISTEN_FDS_START,
                }])
                .map_err(|error| format!("could not hand the listening socket on: {error}"))?;
            command.env("LISTEN_FDS", "1").env_remove("LISTEN_PID");
        }
        let file = |spec: &ProcessSpec| -> Result<Option<File>, String> {
            let Some(path) = &spec.log_file else {
                return Ok(None);
            };
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Some)
                .map_err(|error| format!("could not open {}: {error}", path.display()))
        };
        let (file_out, file_err) = (file(&self.spec)?, file(&self.spec)?);
        let mut child = command.spawn().map_err(|error| {
            format!(
                "could not start {}: {error}\ncommand: {}",
                self.spec.name,
                self.spec.command_line()
            )
        })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (address_sender, address) = mpsc::channel();
        let (log_out, log_err) = (self.log.clone(), self.log.clone());
        let first_line =
            matches!(self.spec.readiness, Readiness::PrintsAddress).then_some(address_sender);
        // Detached on purpose: each thread ends when the pipe closes, which is when the
        // process (and any child it forked, e.g. an HAProxy worker) is gone.
        thread::Builder::new()
            .name(format!("{}-stdout", self.spec.name))
            .spawn(move || drain(stdout, "stdout", log_out, file_out, first_line))
            .expect("could not spawn a log thread");
        thread::Builder::new()
            .name(format!("{}-stderr", self.spec.name))
            .spawn(move || drain(stderr, "stderr", log_err, file_err, None))
            .expect("could not spawn a log thread");
        self.child = Some(child);
        self.exit = None;
        self.stopped = false;
        self.wait_ready(address)
    }

    fn wait_ready(&mut self, address: mpsc::Receiver<String>) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.poll_exit() {
                return Err(self.failure(&format!("exited with {status} before it was ready")));
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(self.failure(&format!("was not ready within {READY_TIMEOUT:?}")));
            }
            match &self.spec.readiness {
                Readiness::Spawned => return Ok(()),
                Readiness::PrintsAddress => match address.recv_timeout(POLL_INTERVAL) {
                    Ok(line) => {
                        return match line.trim().parse::<SocketAddr>() {
                            Ok(addr) => {
                                self.addr = Some(addr);
                                Ok(())
                            }
                            Err(_) => Err(self.failure(&format!(
                                "printed {line:?} as its first line, not a socket address"
                            ))),
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    // Standard output closed without a line: the exit shows on the next turn.
                    Err(RecvTimeoutError::Disconnected) => thread::sleep(POLL_INTERVAL),
                },
                Readiness::Accepts(addr) => {
                    if TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                        self.addr = Some(*addr);
                        return Ok(());
                    }
                    thread::sleep(POLL_INTERVAL);
                }
            }
        }
    }

    /// A failure description with the command line and output; kills and reaps the process.
    fn failure(&mut self, what: &str) -> String {
        self.reap_by_force();
        format!(
            "{} {what}\ncommand: {}\n--- {} output (last 80 lines) ---\n{}",
            self.spec.name,
            self.spec.command_line(),
            self.spec.name,
            self.log.tail(80)
        )
    }

    /// The name from the spec (`static-main`, `haproxy`, ...).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// What this process was started with.
    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    /// The address it listens on: reported by the process itself or, for
    /// [`Readiness::Accepts`], the address that accepted.
    pub fn addr(&self) -> SocketAddr {
        self.addr.unwrap_or_else(|| {
            panic!(
                "{} has no known address (readiness {:?})",
                self.spec.name, self.spec.readiness
            )
        })
    }

    /// [`ServerProcess::addr`], or `None` for a process that listens nowhere we know of.
    pub fn try_addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// `http://<addr><path>`: a URL that bypasses HAProxy.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The process id of the current run.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .unwrap_or_else(|| panic!("{} was never started", self.spec.name))
    }

    /// Whether the process is still running (a stopped process counts as running).
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Whether [`ServerProcess::stop`] froze it and it has not been continued.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Sends `signal` to the process (only to it, not to its children).
    ///
    /// Sending to a process that has exited is a no-op, so `kill(SIGKILL)` after a crash is fine.
    #[track_caller]
    pub fn kill(&mut self, signal: Signal) {
        if self.poll_exit().is_some() {
            return;
        }
        let pid = Pid::from_raw(i32::try_from(self.pid()).expect("pids fit in pid_t"));
        match signal::kill(pid, signal) {
            Ok(()) => {}
            // Exited between the check and the signal.
            Err(nix::errno::Errno::ESRCH) => return,
            Err(error) => panic!("could not send {signal} to {}: {error}", self.spec.name),
        }
        match signal {
            Signal::SIGSTOP => self.stopped = true,
            Signal::SIGCONT => self.stopped = false,
            _ => {}
        }
    }

    /// Freezes the process (SIGSTOP): the kernel still accepts connections on its socket, but
    /// nothing answers, like a hung server.
    pub fn stop(&mut self) {
        self.kill(Signal::SIGSTOP);
    }

    /// Resumes a process frozen by [`ServerProcess::stop`] (SIGCONT).
    pub fn cont(&mut self) {
        self.kill(Signal::SIGCONT);
    }

    /// Waits at most `timeout` for the process to exit; returns its exit status, or `None` if
    /// it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.poll_exit() {
                return Some(status);
            }
            if started.elapsed() >= timeout {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the process if it is still running, then starts the same command again, on the
    /// same address when a listen flag is set, and waits until it is ready. Panics like
    /// [`ServerProcess::spawn`].
    #[track_caller]
    pub fn restart(&mut self) {
        if let Err(message) = self.try_restart() {
            panic!("restarting {message}");
        }
    }

    /// Like [`ServerProcess::restart`], but returns the failure (the command line and the
    /// output) instead of panicking.
    pub fn try_restart(&mut self) -> Result<(), String> {
        self.reap_by_force();
        self.log
            .push(format!("--- {} restarting ---", self.spec.name));
        self.launch()
    }

    /// Stops the process gracefully: SIGTERM (and SIGCONT, so a stopped process can act on
    /// it), at most `grace` to exit, then SIGKILL. Returns how it ended.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.poll_exit().is_none() {
            self.signal_quietly(Signal::SIGTERM);
            self.signal_quietly(Signal::SIGCONT);
            self.stopped = false;
        }
        match self.wait_exit(grace) {
            Some(status) => Some(status),
            None => {
                self.reap_by_force();
                self.exit
            }
        }
    }

    /// The exit status once the process has exited (reaping it), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.poll_exit()
    }

    fn signal_quietly(&self, signal: Signal) {
        if let Some(child) = &self.child {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"));
            let _ = signal::kill(pid, signal);
        }
    }

    /// Like [`ServerProcess::restart`], with the spec changed first by `change` (another
    /// `--build-id`, a fault-injection flag, ...); later restarts keep the change.
    #[track_caller]
    pub fn restart_with(&mut self, change: impl FnOnce(ProcessSpec) -> ProcessSpec) {
        self.spec = change(self.spec.clone());
        self.restart();
    }

    /// Lets go of the listening socket handed to the process ([`ProcessSpec::listener`]), so
    /// it closes once nobody else holds it; a later restart binds its own.
    pub fn close_listener(&mut self) {
        self.spec.listener = None;
    }

    /// Writes `--- what ---` into the process's log (and its log file), so the log says why
    /// the process changed (`cargo xtask restart`, a redeploy).
    pub fn note(&self, what: &str) {
        let line = format!("--- {what} ---");
        if let Some(path) = &self.spec.log_file {
            if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
                let _ = writeln!(file, "{line}");
            }
        }
        self.log.push(line);
    }

    /// The last `lines` lines of captured output (standard output and error, interleaved).
    pub fn log_tail(&self, lines: usize) -> String {
        self.log.tail(lines)
    }

    /// All captured output still kept.
    pub fn log(&self) -> String {
        self.log.tail(LOG_CAPACITY)
    }

    /// Reaps the process if it has exited; returns the exit status once it has.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    self.log
                        .push(format!("--- {} exited: {status} ---", self.spec.name));
                    self.exit = Some(status);
                    self.stopped = false;
                }
            }
        }
        self.exit
    }

    /// SIGCONT (a stopped process cannot die), SIGKILL, and wait: never leaves a zombie.
    fn reap_by_force(&mut self) {
        if self.spec.own_group {
            if let Some(child) = &self.child {
                // Even when the leader has exited: what it started may still run. ESRCH: the
                // group is already empty.
                let group = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"));
                let _ = signal::killpg(group, Signal::SIGCONT);
                let _ = signal::killpg(group, Signal::SIGKILL);
            }
        }
        if self.exit.is_some() {
            return;
        }
        let Some(child) = &mut self.child else { return };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in pid_t"));
        if self.stopped {
            let _ = signal::kill(pid, Signal::SIGCONT);
        }
        let _ = child.kill();
        if let Ok(status) = child.wait() {
            self.log
                .push(format!("--- {} killed: {status} ---", self.spec.name));
            self.exit = Some(status);
        }
        self.stopped = false;
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.reap_by_force();
    }
}

impl std::fmt::Debug for ServerProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerProcess")
            .field("name", &self.spec.name)
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("addr", &self.addr)
            .field("exit", &self.exit)
            .field("stopped", &self.stopped)
            .finish()
    }
}
