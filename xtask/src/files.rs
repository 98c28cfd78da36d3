//! The files a running `cargo xtask up` keeps in target/stack/ (or `--stack-dir`): `<name>.pid`,
//! `<name>.log` and `<name>.addr` per server, HAProxy's runtime-API socket and state file, and
//! `control.sock`, where `up` takes requests. `up` writes them; `restart`, `redeploy`, `stop`,
//! `status`, `load` and the benchmarks read them.

use std::{
    fs::{self, OpenOptions},
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use driver::Server;

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
pub fn haproxy_state_file() -> PathBuf {
    absolute(&stack_dir().join("haproxy.state"))
}

/// The file holding a running server's pid.
pub fn pid_file(server: Server) -> PathBuf {
    stack_dir().join(format!("{server}.pid"))
}

/// The file collecting a server's stdout and stderr.
pub fn log_file(server: Server) -> PathBuf {
    absolute(&stack_dir().join(format!("{server}.log")))
}

/// The file holding the address a server listens on.
pub fn addr_file(server: Server) -> PathBuf {
    stack_dir().join(format!("{server}.addr"))
}

/// The unix socket on which `up` takes requests.
pub fn control_socket() -> PathBuf {
    stack_dir().join("control.sock")
}

/// The pid in a server's pid file, if there is a readable one.
pub fn read_pid(server: Server) -> Option<i32> {
    fs::read_to_string(pid_file(server))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The pid of `server` if its pid file names a live process of the right program.
pub fn live_pid(server: Server) -> Option<i32> {
    read_pid(server).filter(|&pid| process_alive(pid, server.program()))
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

/// Records where a server runs: its pid and address files.
pub fn write_runtime_files(server: Server, pid: u32, addr: SocketAddr) -> Result<()> {
    fs::write(pid_file(server), format!("{pid}\n"))
        .with_context(|| format!("could not write {}", pid_file(server).display()))?;
    fs::write(addr_file(server), format!("{addr}\n"))
        .with_context(|| format!("could not write {}", addr_file(server).display()))
}

/// Appends a `--- xtask: what ---` line to a server's log, so its log shows why it changed.
pub fn note_in_log(server: Server, what: &str) {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(server));
    if let Ok(mut log) = log {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let _ = writeln!(log, "--- xtask: {what} (unix time {now}) ---");
    }
}

fn absolute(path: &Path) -> PathBuf {
    crate::workspace_root().join(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_recycled_pid_is_not() {
        let me = std::process::id() as i32;
        let stat = fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let comm = &stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()];
        assert!(process_alive(me, comm));
        assert!(!process_alive(me, "haproxy"));
    }
}
