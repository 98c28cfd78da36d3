//! Where the stack's servers run and how HAProxy reaches them.

use std::fmt;
use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use contract::Role;

use crate::paths::{free_port_on, private_loopback};
use crate::process::ProcessSpec;

/// The start of every namespace and link name of the multi-host topology.
pub(crate) const PREFIX: &str = "dsh";

/// The bridge's address in the root namespace: the test process and browsers reach the hosts
/// (and the VIP) from here.
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// The virtual IP keepalived moves between the two load balancers.
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 10);
/// The site's port on the VIP.
pub const SITE_PORT: u16 = 80;
/// Every origin's port on its own host (fixed, so a firewall rule can name it).
pub const ORIGIN_PORT: u16 = 8080;
/// The other port of an origin's host: a redeploy starts the new process there, next to the
/// old one on [`ORIGIN_PORT`], and the next redeploy moves it back.
pub const ORIGIN_NEXT_PORT: u16 = 8081;
/// The port of each HAProxy's read-only `stats socket` on its own address.
pub const STATS_PORT: u16 = 9100;

/// One machine of the multi-host topology (on loopback, every server runs on one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// The first load balancer (HAProxy and keepalived, higher VRRP priority).
    LbA,
    /// The second load balancer.
    LbB,
    /// The host of one origin role.
    Origin(Role),
}

impl Host {
    /// The two load balancers.
    pub const BALANCERS: [Host; 2] = [Host::LbA, Host::LbB];
    /// Every host, load balancers first.
    pub const ALL: [Host; 6] = [
        Host::LbA,
        Host::LbB,
        Host::Origin(Role::StaticMain),
        Host::Origin(Role::StaticFallback),
        Host::Origin(Role::ApiMain),
        Host::Origin(Role::ApiFallback),
    ];

    /// `lb-a`, `lb-b` or the role's name.
    pub fn name(self) -> &'static str {
        match self {
            Host::LbA => "lb-a",
            Host::LbB => "lb-b",
            Host::Origin(role) => role.name(),
        }
    }

    /// Its address on the bridge, in 198.18.0.0/24.
    pub fn ip(self) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, self.last_octet())
    }

    fn last_octet(self) -> u8 {
        match self {
            Host::LbA => 11,
            Host::LbB => 12,
            Host::Origin(Role::StaticMain) => 21,
            Host::Origin(Role::StaticFallback) => 22,
            Host::Origin(Role::ApiMain) => 31,
            Host::Origin(Role::ApiFallback) => 32,
        }
    }

    /// The position in [`Host::ALL`].
    pub fn index(self) -> usize {
        Host::ALL
            .iter()
            .position(|&host| host == self)
            .expect("every host is in Host::ALL")
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The shape of a stack's network. Everything that starts a stack asks it where a server
/// listens and how a process is run, so a second shape is one more variant here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// Every server on one loopback address (a test stack's own 127.a.b.c, or 127.0.0.1 for
    /// `cargo xtask up`), origins on ports the kernel picks, HAProxy on a free port.
    Loopback {
        /// The address every process of the stack listens on.
        ip: Ipv4Addr,
    },
    /// Each [`Host`] a network namespace on one bridge (see [`crate::Network`]): origins on
    /// [`ORIGIN_PORT`] of their host, two HAProxy behind keepalived's [`VIP`].
    Hosts {
        /// This run's id, part of every namespace and link name.
        run: String,
    },
}

impl Topology {
    /// A loopback address of this stack's own (see [`private_loopback`]).
    pub fn private_loopback() -> Topology {
        Topology::Loopback {
            ip: private_loopback(),
        }
    }

    /// Where `role`'s origin binds: on loopback port 0 (it reports the port it got).
    pub fn origin_listen(&self, role: Role) -> SocketAddr {
        match self {
            Topology::Loopback { ip } => SocketAddr::from((*ip, 0)),
            Topology::Hosts { .. } => SocketAddr::from((Host::Origin(role).ip(), ORIGIN_PORT)),
        }
    }

    /// Where a redeploy starts `role`'s new process, next to the old one at `now`: loopback
    /// port 0 (a free one), or the other of its host's two ports.
    pub fn redeploy_listen(&self, role: Role, now: SocketAddr) -> SocketAddr {
        match self {
            Topology::Loopback { ip } => SocketAddr::from((*ip, 0)),
            Topology::Hosts { .. } => {
                let port = if now.port() == ORIGIN_PORT {
                    ORIGIN_NEXT_PORT
                } else {
                    ORIGIN_PORT
                };
                SocketAddr::from((Host::Origin(role).ip(), port))
            }
        }
    }

    /// HAProxy's `bind`: a free loopback port, or every address of its host (the VIP
    /// comes and goes with keepalived).
    pub fn haproxy_bind(&self) -> SocketAddr {
        match self {
            Topology::Loopback { ip } => SocketAddr::from((*ip, free_port_on(*ip))),
            Topology::Hosts { .. } => SocketAddr::from((Ipv4Addr::UNSPECIFIED, SITE_PORT)),
        }
    }

    /// Where `host`'s HAProxy, bound to `bind`, accepts connections (its readiness).
    pub fn haproxy_reached(&self, host: Host, bind: SocketAddr) -> SocketAddr {
        match self {
            Topology::Loopback { .. } => bind,
            Topology::Hosts { .. } => SocketAddr::from((host.ip(), bind.port())),
        }
    }

    /// Where visitors reach the site, given HAProxy's bind.
    pub fn site(&self, bind: SocketAddr) -> SocketAddr {
        match self {
            Topology::Loopback { .. } => bind,
            Topology::Hosts { .. } => SocketAddr::from((VIP, bind.port())),
        }
    }

    /// The hosts that run HAProxy.
    pub fn balancers(&self) -> &'static [Host] {
        match self {
            Topology::Loopback { .. } => &Host::BALANCERS[..1],
            Topology::Hosts { .. } => &Host::BALANCERS,
        }
    }

    /// The network namespace of `host` (`None` on loopback).
    pub fn namespace(&self, host: Host) -> Option<String> {
        match self {
            Topology::Loopback { .. } => None,
            Topology::Hosts { run } => Some(format!("{PREFIX}-{run}-{host}")),
        }
    }

    /// Origin `role`'s `spec` placed on its host; across hosts the API roles also get every
    /// load balancer's stats address (`--haproxy-peers`), as they cannot read their Unix
    /// sockets: api-main for `/api/data`, api-fallback for the recovery hint.
    pub fn place_origin(&self, role: Role, mut spec: ProcessSpec) -> ProcessSpec {
        if role.tier() == contract::Tier::Api && matches!(self, Topology::Hosts { .. }) {
            let peers: Vec<String> = Host::BALANCERS
                .iter()
                .map(|lb| format!("{lb}={}:{STATS_PORT}", lb.ip()))
                .collect();
            spec = spec.arg("--haproxy-peers").arg(peers.join(","));
        }
        self.place(Host::Origin(role), spec)
    }

    /// Runs `work` on `host`: across hosts on a thread of its own inside the host's network
    /// namespace (`setns`), so every socket `work` opens belongs to that host; on loopback
    /// right here.
    pub fn on_host<T: Send>(&self, host: Host, work: impl FnOnce() -> T + Send) -> io::Result<T> {
        let Some(namespace) = self.namespace(host) else {
            return Ok(work());
        };
        let path = format!("/run/netns/{namespace}");
        let file = File::open(&path).map_err(|error| {
            io::Error::new(error.kind(), format!("{host}'s namespace {path}: {error}"))
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // This thread alone moves; it ends with `work`.
                    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(
                        |error| io::Error::other(format!("entering {namespace}: {error}")),
                    )?;
                    Ok(work())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A listening socket on `addr` of `role`'s host, opened by the caller (as systemd's
    /// socket unit is on a real host), to hand to each process of the role in turn.
    pub fn bind_origin(&self, role: Role, addr: SocketAddr) -> io::Result<TcpListener> {
        self.on_host(Host::Origin(role), || TcpListener::bind(addr))?
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("could not listen on {addr} for {role}: {error}"),
                )
            })
    }

    /// Runs `work` where an origin can be reached directly: across hosts on lb-a, since each
    /// origin's firewall lets in only the load balancers; on loopback right here.
    pub fn near_origins<T: Send>(&self, work: impl FnOnce() -> T + Send) -> io::Result<T> {
        self.on_host(Host::LbA, work)
    }

    /// Established TCP connections whose local port is `port` on `host` (its
    /// `/proc/net/tcp` and `tcp6`, read from inside its namespace).
    pub fn established_on(&self, host: Host, port: u16) -> io::Result<usize> {
        self.on_host(host, || {
            // thread-self: /proc/net follows the process's first thread, not this one.
            ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"]
                .iter()
                .filter_map(|table| std::fs::read_to_string(table).ok())
                .map(|table| count_established(&table, port))
                .sum()
        })
    }

    /// `spec` as it must run on `host`: unchanged on loopback, else under `ip netns exec`
    /// (which execs the program: the pid stays the server's).
    pub fn place(&self, host: Host, spec: ProcessSpec) -> ProcessSpec {
        match self.namespace(host) {
            None => spec,
            Some(namespace) => spec.launched_by("ip", &["netns", "exec", &namespace]),
        }
    }
}

/// The rows of a `/proc/net/tcp` table in state ESTABLISHED (`01`) whose local port is `port`.
fn count_established(table: &str, port: u16) -> usize {
    const ESTABLISHED: &str = "01";
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&ESTABLISHED)
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_established_connections_on_a_local_port() {
        // Port 0xA8C2 = 43202: one established (01), one listening (0A); one whose remote
        // port is 43202 (HAProxy's side) does not count.
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:A8C2 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
            1: 0100007F:A8C2 0100007F:D431 01 00000000:00000000 00:00000000 00000000\n\
            2: 0100007F:D431 0100007F:A8C2 01 00000000:00000000 00:00000000 00000000\n";
        assert_eq!(count_established(table, 43202), 1);
        assert_eq!(count_established(table, 80), 0);
    }

    #[test]
    fn a_redeploy_alternates_between_the_two_ports_of_a_host() {
        let hosts = Topology::Hosts { run: "t".into() };
        let first = hosts.origin_listen(Role::ApiMain);
        let second = hosts.redeploy_listen(Role::ApiMain, first);
        assert_eq!(
            second,
            SocketAddr::from((Host::Origin(Role::ApiMain).ip(), ORIGIN_NEXT_PORT))
        );
        assert_eq!(hosts.redeploy_listen(Role::ApiMain, second), first);
        let loopback = Topology::Loopback {
            ip: Ipv4Addr::LOCALHOST,
        };
        assert_eq!(loopback.redeploy_listen(Role::ApiMain, first).port(), 0);
    }
}
