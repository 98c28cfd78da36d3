//! The origin servers behind HAProxy.
//!
//! One binary, `origin`, plays one of four roles, chosen by subcommand:
//!
//! | role | serves |
//! |---|---|
//! | `static-main` | the dashboard and its assets from `www/`, cache-friendly |
//! | `static-fallback` | the maintenance page (503) at every URL, plus its own assets |
//! | `api-main` | `/api/healthz` and `/api/data` (host metrics, HAProxy's server states) |
//! | `api-fallback` | 503 `{"status":"maintenance"}` for everything |
//!
//! Each role is a `configure_*` function over [`actix_web::web::ServiceConfig`], used alike by
//! the binary and by the tests (`App::new().configure(..)`). Every role also serves Prometheus
//! metrics at `/metrics` (HAProxy keeps that path private).

use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{guard, web, HttpResponse, ResponseError};

pub mod api;
pub mod config;
pub mod fallback;
pub mod haproxy_stats;
pub mod host;
pub mod listener;
pub mod metrics;
pub mod static_tier;

pub use api::configure_api_main;
pub use config::{Cli, Role};
pub use fallback::{configure_api_fallback, configure_static_fallback};
pub use metrics::Metrics;
pub use static_tier::configure_static_main;

impl Role {
    /// Registers this role's routes; what the binary's `App` factory calls.
    pub fn configure(&self, cfg: &mut web::ServiceConfig, metrics: &Metrics) {
        match self {
            Role::StaticMain { site, .. } => configure_static_main(cfg, site, metrics),
            Role::StaticFallback { site, .. } => configure_static_fallback(cfg, site, metrics),
            Role::ApiMain { api, .. } => configure_api_main(cfg, api, metrics),
            Role::ApiFallback { api, .. } => configure_api_fallback(cfg, api, metrics),
        }
    }
}

/// Errors a request can end in, each answered as a plain-text sentence that is never cached.
#[derive(Debug)]
pub enum OriginError {
    /// The path tries to leave the served directory (`..`, backslashes, NUL), decoded or not.
    PathEscapesRoot,
    /// No route answers this path.
    NotFound,
    /// The metrics could not be encoded.
    Metrics(String),
}

impl fmt::Display for OriginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginError::PathEscapesRoot => {
                f.write_str("Bad request: the path tries to leave the site's directory.")
            }
            OriginError::NotFound => f.write_str("Not found: nothing is served at this path."),
            OriginError::Metrics(err) => write!(f, "Cannot encode the metrics: {err}."),
        }
    }
}

impl std::error::Error for OriginError {}

impl ResponseError for OriginError {
    fn status_code(&self) -> StatusCode {
        match self {
            OriginError::PathEscapesRoot => StatusCode::BAD_REQUEST,
            OriginError::NotFound => StatusCode::NOT_FOUND,
            OriginError::Metrics(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .body(format!("{self}\n"))
    }
}

/// A route answering GET and HEAD (health checks often use either).
pub(crate) fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Answers requests whose path tries to escape the served directory with 400, before any file
/// service sees them. Registered first in the static roles.
pub(crate) fn reject_escaping_paths() -> actix_web::Resource {
    web::resource("/{path:.*}")
        .guard(guard::fn_guard(|ctx| escapes_root(ctx.head().uri.path())))
        .to(|| async { Err::<HttpResponse, _>(OriginError::PathEscapesRoot) })
}

/// Whether a raw request path, once percent-decoded, contains a `..` segment, a backslash or NUL.
///
/// actix-files already refuses to step above its directory; this makes the refusal explicit
/// (400 instead of a 404 or the wrong file) and covers encodings such as `%2e%2e%2f` and `%5c`.
pub fn escapes_root(raw_path: &str) -> bool {
    let decoded = percent_decode(raw_path);
    decoded.contains(&b'\\')
        || decoded.contains(&0)
        || decoded
            .split(|&byte| byte == b'/')
            .any(|segment| segment == b"..")
}

fn percent_decode(raw: &str) -> Vec<u8> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |index: usize| bytes.get(index).and_then(|&b| (b as char).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                // Two hex digits never exceed 255.
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escapes_root;

    #[test]
    fn spots_escaping_paths() {
        for path in [
            "/../secret.txt",
            "/a/../../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E%2Fsecret.txt",
            "/..%2fsecret.txt",
            "/..\\secret.txt",
            "/%5c..%5csecret.txt",
            "/a%00.html",
            "/..",
        ] {
            assert!(escapes_root(path), "{path} should be refused");
        }
        for path in [
            "/",
            "/index.html",
            "/pkg/client_bg.wasm",
            "/a..b/c",
            "/...",
            "/%41",
        ] {
            assert!(!escapes_root(path), "{path} should be allowed");
        }
    }
}
