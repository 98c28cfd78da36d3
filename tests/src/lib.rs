//! End-to-end test harness: the real HAProxy in front of the real `origin` binaries, on
//! loopback, driven over plain HTTP/1.1.
//!
//! - [`Stack`] starts the whole stack (four origin roles and HAProxy with the repository's
//!   `haproxy.cfg`) in a temporary directory, waits until it is healthy, and kills and reaps
//!   every process when dropped.
//! - [`ServerProcess`] is the guard for one child process: captured logs, signals
//!   (crash, hang, resume), restart on the same port.
//! - [`http`] is a small HTTP/1.1 client over `std::net::TcpStream`, able to send
//!   well-formed and deliberately malformed requests alike.
//! - [`wait_until`] polls a condition with a deadline; nothing here sleeps a fixed time.
//! - [`expect`] holds the assertions several suites share (the maintenance answer, its headers).
//! - [`browser`] drives one browser tab over WebDriver (Chromium, Firefox or WebKit), for
//!   the browser scenarios in `tests/browser/`.
//!
//! ```no_run
//! use std::time::Duration;
//! use tests::{Role, Stack};
//!
//! let mut stack = Stack::start();
//! assert_eq!(stack.get("/").status, 200);
//! stack.server_mut(Role::ApiMain).kill(tests::Signal::SIGKILL);
//! stack.wait_until(Duration::from_secs(10), "the dashboard answers maintenance", || {
//!     let page = stack.try_get("/").map_err(|e| e.to_string())?;
//!     if page.status == 503 { Ok(()) } else { Err(page.summary()) }
//! });
//! ```

pub mod browser;
pub mod expect;
pub mod http;
mod paths;
mod process;
mod stack;
mod wait;

pub use nix::sys::signal::Signal;
pub use paths::{
    free_port, free_port_on, haproxy_binary, origin_binary, private_loopback, target_dir,
    workspace_root, ORIGIN_BIN_ENV,
};
pub use process::{ProcessSpec, Readiness, ServerProcess};
pub use stack::{
    default_www_dir, Role, ServerStat, Stack, StackBuilder, HAPROXY_FILE_LIMIT,
    HAPROXY_SERVED_FILES, WWW_ENV,
};
pub use wait::{wait_until, POLL_INTERVAL};
