//! The files a running `cargo xtask up` keeps in target/stack/ (or `--stack-dir`): per process
//! `<name>.pid`, `<name>.log` and `<name>.addr` (`haproxy`, the four roles; across hosts
//! `haproxy-lb-a`, `keepalived-lb-a`, ...), `site.addr` (where visitors go), HAProxy's
//! runtime-API sockets and state files (the driver names those), and `control.sock`, where
//! `up` takes requests. `up` writes them; `restart`, `redeploy`, `stop`, `status`, `load` and
//! the benchmarks read them.

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context, Result};
use driver::Role;

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

/// The file holding a running process's pid.
pub fn pid_file(name: &str) -> PathBuf {
    stack_dir().join(format!("{name}.pid"))
}

/// The file holding the address a process listens on.
pub fn addr_file(name: &str) -> PathBuf {
    stack_dir().join(format!("{name}.addr"))
}

/// The file holding the site's address: HAProxy's on loopback, the VIP across hosts.
pub fn site_file() -> PathBuf {
    stack_dir().join("site.addr")
}

/// The unix socket on which `up` takes requests.
pub fn control_socket() -> PathBuf {
    stack_dir().join("control.sock")
}

/// Records the site's address (`cargo xtask load` sends there by default).
pub fn write_site(addr: SocketAddr) -> Result<()> {
    fs::write(site_file(), format!("{addr}\n"))
        .with_context(|| format!("could not write {}", site_file().display()))
}

/// Every process named by a pid file in `dir`, with the pid it holds (if readable), in the
/// order a person reads a stack: HAProxy, the origins, keepalived.
pub fn pid_files(dir: &Path) -> Vec<(String, Option<i32>)> {
    let mut found: Vec<(String, Option<i32>)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_str()?.strip_suffix(".pid")?.to_owned();
            let pid = fs::read_to_string(entry.path()).ok()?.trim().parse().ok();
            Some((name, pid))
        })
        .collect();
    found.sort_by_key(|(name, _)| (rank(name), name.clone()));
    found
}

fn rank(name: &str) -> usize {
    if name.starts_with("haproxy") {
        return 0;
    }
    match Role::ALL.iter().position(|role| role.name() == name) {
        Some(index) => 1 + index,
        None => Role::ALL.len() + 1,
    }
}

/// The processes of a stack that still run, by their pid files in `dir`: `name (pid N)`.
pub fn live_processes(dir: &Path) -> Vec<(String, i32)> {
    pid_files(dir)
        .into_iter()
        .filter_map(|(name, pid)| Some((name, pid?)))
        .filter(|&(_, pid)| driver::runs_stack_program(pid))
        .collect()
}

/// Records where a process runs: its pid file and, if it listens, its address file.
pub fn write_runtime_files(name: &str, pid: u32, addr: Option<SocketAddr>) -> Result<()> {
    fs::write(pid_file(name), format!("{pid}\n"))
        .with_context(|| format!("could not write {}", pid_file(name).display()))?;
    if let Some(addr) = addr {
        fs::write(addr_file(name), format!("{addr}\n"))
            .with_context(|| format!("could not write {}", addr_file(name).display()))?;
    }
    Ok(())
}

/// Removes what a stopped stack leaves that would mislead the next command: pid, address and
/// log files of earlier processes, and a control socket nobody answers on.
pub fn clear_stack_dir(keep_logs: bool) -> Result<()> {
    let dir = stack_dir();
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    for entry in fs::read_dir(&dir)?.flatten() {
        let path = entry.path();
        let stale = match path.extension().and_then(|ext| ext.to_str()) {
            Some("pid" | "addr" | "sock" | "state") => true,
            Some("log") => !keep_logs,
            _ => false,
        };
        if stale {
            let _ = fs::remove_file(&path);
        }
    }
    Ok(())
}
