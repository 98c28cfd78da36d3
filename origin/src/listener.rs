//! The listening socket: inherited (systemd-style `LISTEN_FDS`) or bound from `--listen`.
//!
//! An inherited socket stays open while the process behind it is replaced, so HAProxy never
//! sees a refused connection during a redeploy: requests queue in the kernel's backlog.

use std::fmt;
use std::io;
use std::net::TcpListener;

use listenfd::ListenFd;

/// Connections the kernel may hold for the origin before it accepts them (`listen(2)`'s
/// backlog; Linux caps it at `net.core.somaxconn`, 4096 by default).
///
/// std's `TcpListener::bind` asks for 128. HAProxy sends each main server at most `maxconn`
/// requests at once (haproxy.cfg) and queues the rest itself, so the accept queue never needs
/// more; 1024 is headroom for the health checks, a reload's second set of connections, and
/// anyone running the origin without HAProxy's limit. Measured without `maxconn`: 1,500
/// connections overflowed the 128, a connection attempt timed out, and HAProxy marked a busy
/// but healthy api-main down.
pub const LISTEN_BACKLOG: i32 = 1024;

/// Where the listening socket came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerSource {
    /// Inherited from the parent through `LISTEN_FDS` (file descriptor 3).
    Inherited,
    /// Bound here from `--listen`.
    Bound,
}

/// Why there is no listening socket.
#[derive(Debug)]
pub enum ListenError {
    /// `--listen` is not a host:port.
    InvalidAddress(String),
    /// Binding the address failed.
    Bind(String, io::Error),
    /// `LISTEN_FDS` is set, but file descriptor 3 is not a listening TCP socket.
    Inherited(io::Error),
    /// `LISTEN_FDS` is set, but no socket was passed to this process.
    NothingInherited,
    /// The listening socket refused a longer accept queue.
    Backlog(io::Error),
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenError::InvalidAddress(addr) => write!(
                f,
                "invalid --listen address {addr:?}; write host:port, for example 127.0.0.1:8080"
            ),
            ListenError::Bind(addr, err) => {
                let why = match err.kind() {
                    io::ErrorKind::PermissionDenied => {
                        "permission denied (ports below 1024 need privileges)".to_owned()
                    }
                    io::ErrorKind::AddrInUse => {
                        "the address is already in use by another process".to_owned()
                    }
                    io::ErrorKind::AddrNotAvailable => {
                        "no network interface of this machine has that address".to_owned()
                    }
                    _ => err.to_string(),
                };
                write!(
                    f,
                    "cannot listen on {addr}: {why}; choose another --listen address"
                )
            }
            ListenError::Inherited(err) => write!(
                f,
                "LISTEN_FDS is set but file descriptor 3 is not a listening TCP socket ({err}); \
                 start origin through a socket-activation parent or unset LISTEN_FDS"
            ),
            ListenError::NothingInherited => f.write_str(
                "LISTEN_FDS is set but no socket was passed to this process (LISTEN_PID names \
                 another process or LISTEN_FDS is 0); unset LISTEN_FDS to bind --listen instead",
            ),
            ListenError::Backlog(err) => write!(
                f,
                "cannot give the listening socket an accept queue of {LISTEN_BACKLOG} \
                 connections ({err}); check that it is a TCP socket in the listening state"
            ),
        }
    }
}

impl std::error::Error for ListenError {}

/// The inherited listener when `LISTEN_FDS` is set, else a new one bound to `listen`.
///
/// Call before any thread starts: reading `LISTEN_FDS` removes it from the environment so
/// child processes do not claim the socket too.
pub fn obtain_listener(listen: &str) -> Result<(TcpListener, ListenerSource), ListenError> {
    let (listener, source) = listener_as_given(listen)?;
    Ok((with_backlog(listener)?, source))
}

/// Calls `listen(2)` again with [`LISTEN_BACKLOG`]: on Linux that resizes the accept queue of
/// a socket that is already listening, bound here or inherited.
fn with_backlog(listener: TcpListener) -> Result<TcpListener, ListenError> {
    let socket = socket2::Socket::from(listener);
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(ListenError::Backlog)?;
    Ok(socket.into())
}

fn listener_as_given(listen: &str) -> Result<(TcpListener, ListenerSource), ListenError> {
    if std::env::var_os("LISTEN_FDS").is_some() {
        let listener = ListenFd::from_env()
            .take_tcp_listener(0)
            .map_err(ListenError::Inherited)?
            .ok_or(ListenError::NothingInherited)?;
        return Ok((listener, ListenerSource::Inherited));
    }
    let listener = TcpListener::bind(listen).map_err(|err| {
        if err.kind() == io::ErrorKind::InvalidInput {
            ListenError::InvalidAddress(listen.to_owned())
        } else {
            ListenError::Bind(listen.to_owned(), err)
        }
    })?;
    Ok((listener, ListenerSource::Bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_an_address_in_use() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let err = obtain_listener(&addr).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot listen on {addr}: the address is already in use by another process; choose another --listen address")
        );
    }

    /// More connections than std's default backlog (128) wait, unaccepted, in the kernel's
    /// queue instead of timing out.
    #[test]
    fn queues_more_than_std_s_default_backlog() {
        let (listener, _) = obtain_listener("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let waiting: Vec<std::net::TcpStream> = (0..300)
            .map(|i| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
                    .unwrap_or_else(|err| {
                        panic!(
                            "connection {i} to a listener that does not accept yet failed: {err}"
                        )
                    })
            })
            .collect();
        assert_eq!(waiting.len(), 300);
    }

    #[test]
    fn explains_a_malformed_address() {
        let err = obtain_listener("localhost").unwrap_err();
        assert!(matches!(err, ListenError::InvalidAddress(_)), "{err}");
    }
}
