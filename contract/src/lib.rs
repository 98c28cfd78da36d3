//! What `haproxy.cfg` and the Rust code must agree on, stated once.
//!
//! - [`Role`] and [`Tier`]: the four origin servers, their HAProxy backend and server names,
//!   their health paths, main or fallback.
//! - The health rule ([`HEALTHY_STATUS`]), the maintenance answer ([`MAINTENANCE_JSON`],
//!   [`RETRY_AFTER_S`]), the files HAProxy answers from memory ([`HAPROXY_SERVED_FILES`],
//!   [`HAPROXY_FILE_LIMIT`]) and HAProxy's environment ([`env`]).
//! - [`stat`]: the parsers of the runtime API's `show stat` and `show servers state` tables,
//!   used by origin's `/api/data` and by the stack driver alike.
//!
//! `tests/haproxy_cfg.rs` reads the real `haproxy.cfg` and fails when it and these constants
//! disagree. The crate has no dependencies and needs no `std`, so origin and the no_std Wasm
//! client pay nothing for using it.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod env;
mod role;
pub mod stat;

pub use role::{Role, Tier};

/// The only status that means "healthy", for HAProxy (`http-check expect status 200`), the
/// recovery client and every tool: a 204 or a redirect is a misconfigured server, not a
/// healthy one.
pub const HEALTHY_STATUS: u16 = 200;

/// Whether a health endpoint's answer says "healthy".
pub const fn is_healthy(status: u16) -> bool {
    status == HEALTHY_STATUS
}

/// The body of every API maintenance answer: api-fallback's, and HAProxy's own when no API
/// server is left.
pub const MAINTENANCE_JSON: &str = r#"{"status":"maintenance"}"#;

/// `Retry-After` on every 503 maintenance answer, in seconds: HAProxy's and the fallbacks'
/// default `--retry-after`.
pub const RETRY_AFTER_S: u32 = 5;

/// Files `haproxy.cfg` answers from memory (`http-request return ... file`), relative to
/// `WWW_DIR`. HAProxy reads them at start and reload; a missing one is fatal.
pub const HAPROXY_SERVED_FILES: [&str; 4] = [
    "maintenance.html",
    "sw.js",
    "pkg/client.js.gz",
    "pkg/client_bg.wasm.gz",
];

/// HAProxy's `tune.bufsize` in haproxy.cfg: one buffer holds a whole answer HAProxy sends
/// from memory, its headers (the security headers among them) included.
pub const HAPROXY_BUFSIZE: u64 = 32768;

/// HAProxy's `tune.maxrewrite` (its default, 1024 bytes): the part of a buffer kept for
/// header rewrites.
pub const HAPROXY_MAXREWRITE: u64 = 1024;

/// The largest file HAProxy serves from memory: one buffer. Above it HAProxy refuses to
/// start.
pub const HAPROXY_FILE_LIMIT: u64 = HAPROXY_BUFSIZE;

/// Above this (the buffer minus `tune.maxrewrite`) HAProxy starts with a warning, and the
/// answer's headers may no longer fit: HAProxy then sends a 500 instead of the file.
pub const HAPROXY_FILE_WARNING: u64 = HAPROXY_BUFSIZE - HAPROXY_MAXREWRITE;
