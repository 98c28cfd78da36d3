//! End-to-end tests of the stack: the real HAProxy with the repository's `haproxy.cfg` in
//! front of the real origin binaries, driven over HTTP. Each test starts its own stack.
//!
//! Needs `haproxy` installed and the client built (`cargo xtask build-client`); the origin
//! binary is built on first use. Detection times are printed: run with `--nocapture`.

mod bad_input;
mod failover;
#[path = "../shared/hint.rs"]
mod held_hint;
mod hint;
mod last_resort;
mod overload;
mod routing;
mod security;
