//! The library that drives the stack: HAProxy in front of the four `origin` servers, as
//! `cargo xtask up`, every end-to-end suite and the benchmarks run it. Each concept lives here
//! once:
//!
//! - [`Role`], [`Tier`] and the rules `haproxy.cfg` agrees with come from the [`contract`]
//!   crate; [`Server`] adds HAProxy to the roles; [`origin_spec`] is how an origin is started.
//! - [`HaproxyEnv`] is HAProxy's environment contract, [`RuntimeApi`] its runtime API (`show
//!   stat`, `show servers state`, `set server`).
//! - [`ServerProcess`] is the guard for one child process: the bound address it prints,
//!   captured logs, signals (crash, hang, resume), graceful stop, restart on the same port,
//!   reaped on drop.
//! - [`poll_until`] waits for a condition with a deadline (a `Result`), [`wait_until`] is its
//!   panicking form for tests; nothing here sleeps a fixed time.
//! - [`Topology`] says where each server runs: every server on one loopback address, or
//!   each on its own [`Host`] (a network namespace; [`Network`] makes and removes them).
//! - [`Stack`] starts a whole stack (in a temporary directory, or `cargo xtask up`'s
//!   target/stack), waits until it is healthy, restarts, reloads and redeploys it without a
//!   failed request, and kills and reaps every process when dropped.
//! - [`http`] is the workspace's one HTTP client (hyper's HTTP/1.1 client connection behind a
//!   blocking `Request::send`, and a keep-alive `Connection`), plus `send_raw` for the
//!   deliberately malformed or cut requests no client sends.
//! - [`expect`] holds the assertions several suites share (the maintenance answer, its headers).
//! - [`browser`] drives one headless Chromium tab over WebDriver (its own chromedriver), for
//!   the browser scenarios in `tests/browser/`.
//!
//! ```no_run
//! use std::time::Duration;
//! use driver::{Role, Stack};
//!
//! let mut stack = Stack::start();
//! assert_eq!(stack.get("/").status, 200);
//! stack.server_mut(Role::ApiMain).kill(driver::Signal::SIGKILL);
//! stack.wait_until(Duration::from_secs(10), "the dashboard answers maintenance", || {
//!     let page = stack.try_get("/").map_err(|e| e.to_string())?;
//!     if page.status == 503 { Ok(()) } else { Err(page.summary()) }
//! });
//! ```

pub mod browser;
pub mod expect;
mod haproxy;
pub mod http;
mod network;
mod operate;
mod paths;
mod process;
mod server;
mod stack;
mod topology;
mod wait;

pub use contract::{
    self, Role, Tier, HAPROXY_FILE_LIMIT, HAPROXY_FILE_WARNING, HAPROXY_SERVED_FILES,
};

pub use haproxy::{HaproxyEnv, RuntimeApi, ServerStat};
pub use network::{remove_leftovers, Network};
pub use nix::sys::signal::Signal;
pub use operate::{check_build_id, next_build_id, unix_now, STOP_TIMEOUT};
pub use paths::{
    free_port, free_port_on, haproxy_binary, origin_binary, private_loopback, target_dir,
    workspace_root, ORIGIN_BIN_ENV,
};
pub use process::{ProcessSpec, Readiness, ServerProcess};
pub use server::{origin_spec, runs_stack_program, Server};
pub use stack::{default_www_dir, BalancerFault, Stack, StackBuilder, WWW_ENV};
pub use topology::{
    Host, Topology, BRIDGE_IP, ORIGIN_NEXT_PORT, ORIGIN_PORT, SITE_PORT, STATS_PORT, VIP,
};
pub use wait::{poll_every, poll_until, wait_until, TimedOut, POLL_INTERVAL};
