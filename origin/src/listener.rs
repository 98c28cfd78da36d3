//! The listening socket: inherited (systemd-style `LISTEN_FDS`) or bound from `--listen`.
//!
//! An inherited socket stays open while the process behind it is replaced, so HAProxy never
//! sees a refused connection during a redeploy: requests queue in the kernel's backlog.

use std::fmt;
use std::io;
use std::net::TcpListener;

use listenfd::ListenFd;

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
        }
    }
}

impl std::error::Error for ListenError {}

/// The inherited listener when `LISTEN_FDS` is set, else a new one bound to `listen`.
///
/// Call before any thread starts: reading `LISTEN_FDS` removes it from the environment so
/// child processes do not claim the socket too.
pub fn obtain_listener(listen: &str) -> Result<(TcpListener, ListenerSource), ListenError> {
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

    #[test]
    fn explains_a_malformed_address() {
        let err = obtain_listener("localhost").unwrap_err();
        assert!(matches!(err, ListenError::InvalidAddress(_)), "{err}");
    }
}
