//! The five servers of a stack and how an origin server is started.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use contract::{Role, Tier};

use crate::process::{ProcessSpec, Readiness};
use crate::topology::Host;

/// One server of the stack: HAProxy in front, or an origin role behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Server {
    /// The entry point.
    Haproxy,
    /// One of the four origin servers.
    Origin(Role),
}

impl Server {
    /// Every server, HAProxy first, then the origins in start order.
    pub const ALL: [Server; 5] = [
        Server::Haproxy,
        Server::Origin(Role::StaticMain),
        Server::Origin(Role::StaticFallback),
        Server::Origin(Role::ApiMain),
        Server::Origin(Role::ApiFallback),
    ];

    /// `haproxy` or the role's name: on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            Server::Haproxy => "haproxy",
            Server::Origin(role) => role.name(),
        }
    }

    /// The executable's name as /proc/<pid>/stat shows it.
    pub fn program(self) -> &'static str {
        match self {
            Server::Haproxy => "haproxy",
            Server::Origin(_) => "origin",
        }
    }
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Server {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Server::ALL
            .into_iter()
            .find(|server| server.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Server::ALL.iter().map(|server| server.name()).collect();
                format!(
                    "there is no server `{name}`; the servers are {}",
                    names.join(", ")
                )
            })
    }
}

/// Whether `pid` is a live (not zombie) process of one of the stack's programs: `origin`,
/// `haproxy` (`haproxy-lb-a`, `haproxy-lb-b` across hosts) or `keepalived`. A pid file may
/// name a pid the system has since given to another program; this tells them apart.
pub fn runs_stack_program(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ...": comm may itself contain spaces and parentheses.
    let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
        return false;
    };
    let comm = &stat[open + 1..close];
    let state = stat[close + 1..].trim_start().chars().next();
    let ours = comm == "origin"
        || comm == "keepalived"
        || comm == "haproxy"
        || comm
            .strip_prefix("haproxy-")
            .is_some_and(|host| Host::BALANCERS.iter().any(|lb| lb.name() == host));
    ours && state != Some('Z')
}

/// The command line of `role`'s origin server: `origin <role> --listen <listen> --build-id
/// <id>`, plus `--www` for the static tier and, given one, `--haproxy-socket` for the API tier
/// (across hosts the API roles read the load balancers over TCP instead, see
/// [`crate::Topology::place_origin`]). Ready once it prints its address; restarts keep that
/// address.
pub fn origin_spec(
    binary: &Path,
    role: Role,
    listen: SocketAddr,
    build_id: &str,
    www: &Path,
    stats_socket: Option<&Path>,
) -> ProcessSpec {
    let mut spec = ProcessSpec::new(role.name(), binary)
        .arg(role.name())
        .args(["--listen", &listen.to_string()])
        .listen_flag("--listen")
        .args(["--build-id", build_id])
        .readiness(Readiness::PrintsAddress);
    if role.tier() == Tier::Static {
        spec = spec.arg("--www").arg(www);
    }
    if let (Tier::Api, Some(socket)) = (role.tier(), stats_socket) {
        // api-main for /api/data, api-fallback for the recovery hint.
        spec = spec.arg("--haproxy-socket").arg(socket);
    }
    spec
}
