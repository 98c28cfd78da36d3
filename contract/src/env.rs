//! The environment `haproxy.cfg` reads: every address and path comes from one of these.

/// Where HAProxy listens (`bind`).
pub const HAPROXY_BIND: &str = "HAPROXY_BIND";
/// static-main's address.
pub const STATIC_MAIN_ADDR: &str = "STATIC_MAIN_ADDR";
/// static-fallback's address.
pub const STATIC_FALLBACK_ADDR: &str = "STATIC_FALLBACK_ADDR";
/// api-main's address.
pub const API_MAIN_ADDR: &str = "API_MAIN_ADDR";
/// api-fallback's address.
pub const API_FALLBACK_ADDR: &str = "API_FALLBACK_ADDR";
/// The runtime API's unix socket (admin level); api-main reads `show stat` from it.
pub const HAPROXY_STATS_SOCKET: &str = "HAPROXY_STATS_SOCKET";
/// Absolute path of the www directory whose files HAProxy answers from memory.
pub const WWW_DIR: &str = "WWW_DIR";
/// Optional: where server states are kept across a reload (`server-state-file`).
pub const HAPROXY_SERVER_STATE_FILE: &str = "HAPROXY_SERVER_STATE_FILE";

/// Optional: an `ipv4@ADDR:PORT` where HAProxy also answers the runtime API read-only
/// (`level user`), for an api-main on another host.
pub const HAPROXY_STATS_ADDR: &str = "HAPROXY_STATS_ADDR";

/// Every variable `haproxy.cfg` needs set.
pub const REQUIRED: [&str; 7] = [
    HAPROXY_BIND,
    STATIC_MAIN_ADDR,
    STATIC_FALLBACK_ADDR,
    API_MAIN_ADDR,
    API_FALLBACK_ADDR,
    HAPROXY_STATS_SOCKET,
    WWW_DIR,
];

/// Variables `haproxy.cfg` reads only when they are set (`.if defined(...)`).
pub const OPTIONAL: [&str; 2] = [HAPROXY_SERVER_STATE_FILE, HAPROXY_STATS_ADDR];
