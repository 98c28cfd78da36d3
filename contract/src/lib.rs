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

/// Where HAProxy checks that a fallback is there at all (backend `fallbacks`): 200 while the
/// process serves. A fallback answers its tier's health path with 503 by design (so a probe
/// that reaches it through HAProxy reads "not healthy"), so that path cannot tell a living
/// fallback from a dead one; this one can, and the dashboard shows a dead fallback DOWN.
pub const LIVENESS_PATH: &str = "/livez";

/// The HAProxy backend that only checks the fallbacks ([`LIVENESS_PATH`]); it gets no traffic.
/// Each fallback server of the site's backends tracks its server there (`track`).
pub const FALLBACK_CHECKS_BACKEND: &str = "fallbacks";

/// The body of every API maintenance answer: api-fallback's, and HAProxy's own when no API
/// server is left.
pub const MAINTENANCE_JSON: &str = r#"{"status":"maintenance"}"#;

/// `Retry-After` on every 503 maintenance answer, in seconds: HAProxy's and the fallbacks'
/// default `--retry-after`.
pub const RETRY_AFTER_S: u32 = 5;

/// The recovery hint: a long-poll the maintenance page holds while it waits. HAProxy sends it
/// to api-fallback (its own backend, `hint` in haproxy.cfg, so waiting tabs never take the API
/// tier's connection slots), which answers 200 the moment HAProxy reports both main servers
/// UP, or 204 ("not yet") after a hold of [`RECOVERY_HINT_HOLD_MIN_MS`] to
/// [`RECOVERY_HINT_HOLD_MAX_MS`].
pub const RECOVERY_HINT_PATH: &str = "/api/recovery-hint";

/// The shortest hold of a recovery hint without news (the holds are spread so that tabs
/// which started together do not ask again together).
pub const RECOVERY_HINT_HOLD_MIN_MS: u32 = 15_000;

/// The longest hold of a recovery hint without news: under haproxy.cfg's `timeout server`
/// of the `hint` backend.
pub const RECOVERY_HINT_HOLD_MAX_MS: u32 = 25_000;

/// How fast the tabs told of a recovery come back, at most: the hint's answer carries
/// `spread_ms`, the number of tabs it tells at once times 1000 / this, and each tab waits a
/// random part of it. 15 tabs then come back within 30 ms, 1,000 within 2 s.
pub const RECOVERY_HINT_TABS_PER_S: u32 = 500;

/// The most hints HAProxy holds at once (`maxconn` of the `hint` backend's server): one
/// connection per waiting tab, so a herd cannot pin an unbounded number of them. Tabs beyond
/// it get a 503 after `timeout queue` and rely on the probes.
pub const RECOVERY_HINT_MAXCONN: u32 = 1000;

/// The `spread_ms` of a hint answer that tells `tabs` tabs at once.
pub const fn recovery_hint_spread_ms(tabs: u64) -> u64 {
    tabs.saturating_mul(1000) / RECOVERY_HINT_TABS_PER_S as u64
}

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
