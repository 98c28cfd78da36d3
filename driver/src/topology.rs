//! Where the stack's servers run and how HAProxy reaches them.

use std::net::{Ipv4Addr, SocketAddr};

use contract::Role;

use crate::paths::{free_port_on, private_loopback};
use crate::process::ProcessSpec;

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
}

impl Topology {
    /// A loopback address of this stack's own (see [`private_loopback`]).
    pub fn private_loopback() -> Topology {
        Topology::Loopback {
            ip: private_loopback(),
        }
    }

    /// Where `role`'s origin binds: port 0, it reports the port it got.
    pub fn origin_listen(&self, _role: Role) -> SocketAddr {
        match self {
            Topology::Loopback { ip } => SocketAddr::from((*ip, 0)),
        }
    }

    /// A free address for HAProxy's frontend.
    pub fn haproxy_bind(&self) -> SocketAddr {
        match self {
            Topology::Loopback { ip } => SocketAddr::from((*ip, free_port_on(*ip))),
        }
    }

    /// `spec` as it must run for `host` (`None`: HAProxy's host). On loopback every process
    /// runs here, unchanged.
    pub fn place(&self, _host: Option<Role>, spec: ProcessSpec) -> ProcessSpec {
        match self {
            Topology::Loopback { .. } => spec,
        }
    }
}
