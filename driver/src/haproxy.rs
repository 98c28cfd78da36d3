//! HAProxy as the driver runs it: its environment contract and its runtime API.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use contract::stat::{ServerState, Table};
use contract::{env, Role};

use crate::process::ProcessSpec;

/// How long one runtime-API exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);

/// Everything `haproxy.cfg` reads from its environment (see [`contract::env`]).
#[derive(Clone, Debug)]
pub struct HaproxyEnv {
    /// Where HAProxy listens.
    pub bind: SocketAddr,
    /// Each origin's address, indexed like [`Role::ALL`].
    pub origins: [SocketAddr; 4],
    /// The runtime API's socket.
    pub stats_socket: PathBuf,
    /// The www directory (absolute).
    pub www: PathBuf,
    /// Where server states survive a reload, if anywhere.
    pub state_file: Option<PathBuf>,
    /// Where HAProxy also answers the runtime API read-only over TCP, if anywhere.
    pub stats_addr: Option<SocketAddr>,
}

impl HaproxyEnv {
    /// The variables, by name.
    pub fn vars(&self) -> Vec<(&'static str, OsString)> {
        let mut vars = vec![(env::HAPROXY_BIND, self.bind.to_string().into())];
        for role in Role::ALL {
            vars.push((role.addr_env(), self.origin(role).to_string().into()));
        }
        vars.push((env::HAPROXY_STATS_SOCKET, self.stats_socket.clone().into()));
        vars.push((env::WWW_DIR, self.www.clone().into()));
        if let Some(state_file) = &self.state_file {
            vars.push((env::HAPROXY_SERVER_STATE_FILE, state_file.clone().into()));
        }
        if let Some(addr) = self.stats_addr {
            vars.push((env::HAPROXY_STATS_ADDR, addr.to_string().into()));
        }
        vars
    }

    /// The address of `role`'s server.
    pub fn origin(&self, role: Role) -> SocketAddr {
        self.origins[role as usize]
    }

    /// `spec` with the variables set.
    pub fn apply(&self, spec: ProcessSpec) -> ProcessSpec {
        self.vars()
            .into_iter()
            .fold(spec, |spec, (key, value)| spec.env(key, value))
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

impl ServerStat {
    /// A numeric field such as `qcur`, `qmax`, `chkdown` or `stot`; 0 when HAProxy leaves it
    /// empty (a field that does not apply to the row) or it is not a number.
    pub fn count(&self, name: &str) -> u64 {
        self.fields
            .get(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    }
}

/// HAProxy's runtime API on its admin-level stats socket.
#[derive(Clone, Debug)]
pub struct RuntimeApi {
    socket: PathBuf,
}

impl RuntimeApi {
    /// The runtime API on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        RuntimeApi {
            socket: socket.into(),
        }
    }

    /// The socket's path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one command and returns HAProxy's whole answer (HAProxy closes the connection
    /// after answering a non-interactive command).
    pub fn command(&self, command: &str) -> io::Result<String> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!(
                    "HAProxy's runtime API does not answer on {} ({error}); is haproxy running?",
                    self.socket.display()
                ),
            )
        })?;
        stream.set_read_timeout(Some(EXCHANGE_TIMEOUT))?;
        stream.set_write_timeout(Some(EXCHANGE_TIMEOUT))?;
        stream.write_all(format!("{command}\n").as_bytes())?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|error| {
            io::Error::new(
                error.kind(),
                format!("HAProxy did not finish answering `{command}`: {error}"),
            )
        })?;
        Ok(answer)
    }

    /// Every server row of `show stat` (frontend and backend rows left out).
    pub fn server_stats(&self) -> io::Result<Vec<ServerStat>> {
        Ok(self
            .stat_rows()?
            .into_iter()
            .filter(|row| !matches!(row.server.as_str(), "FRONTEND" | "BACKEND"))
            .collect())
    }

    /// Every row of `show stat`, frontends (`server` is `FRONTEND`) and backends (`BACKEND`,
    /// where HAProxy's queue is counted: `qcur`, `qmax`) included.
    pub fn stat_rows(&self) -> io::Result<Vec<ServerStat>> {
        let table = Table::show_stat(&self.command("show stat")?).map_err(io::Error::other)?;
        Ok(table
            .rows()
            .map(|row| ServerStat {
                backend: row.get("pxname").to_owned(),
                server: row.get("svname").to_owned(),
                status: row.get("status").to_owned(),
                check_status: row.get("check_status").to_owned(),
                fields: row
                    .fields()
                    .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    .collect(),
            })
            .collect())
    }

    /// HAProxy's `show stat` view of `role`'s server.
    pub fn server_stat(&self, role: Role) -> io::Result<ServerStat> {
        self.server_stats()?
            .into_iter()
            .find(|row| row.backend == role.backend() && row.server == role.name())
            .ok_or_else(|| io::Error::other(format!("`show stat` has no row for {role}")))
    }

    /// Where HAProxy sends `role`'s server and in which state (`show servers state`).
    pub fn server_state(&self, role: Role) -> io::Result<ServerState> {
        let answer = self.command(&format!("show servers state {}", role.backend()))?;
        ServerState::find(&answer, role.backend(), role.name())
            .map_err(io::Error::other)?
            .ok_or_else(|| {
                io::Error::other(format!(
                    "HAProxy has no server {}/{role}; is haproxy.cfg the stack's?",
                    role.backend()
                ))
            })
    }

    /// Points `role`'s server at `addr` (`set server ... addr ... port`); returns HAProxy's
    /// answer.
    pub fn set_server_addr(&self, role: Role, addr: SocketAddr) -> io::Result<String> {
        let command = format!(
            "set server {}/{role} addr {} port {}",
            role.backend(),
            addr.ip(),
            addr.port()
        );
        let answer = self.command(&command)?;
        let answer = answer.trim();
        // "no need to change the addr, port changed from '41234' to '43210' by 'stats socket
        // command'"; errors are sentences such as "No such server."
        if answer.contains("changed") || answer.contains("no need to change the port") {
            Ok(answer.to_owned())
        } else {
            Err(io::Error::other(format!(
                "HAProxy refused `{command}`: {answer}"
            )))
        }
    }

    /// The current worker's pid from `show info`.
    pub fn worker_pid(&self) -> io::Result<u32> {
        let info = self.command("show info")?;
        info.lines()
            .find_map(|line| line.strip_prefix("Pid: "))
            .and_then(|pid| pid.trim().parse().ok())
            .ok_or_else(|| io::Error::other(format!("`show info` has no Pid: {info:?}")))
    }
}
