//! The origin servers behind HAProxy.
//!
//! One binary, `origin`, plays one of four roles, chosen by subcommand:
//!
//! | role | serves |
//! |---|---|
//! | `static-main` | the dashboard and its assets from `www/` (loaded into memory at start), cache-friendly |
//! | `static-fallback` | the maintenance page (503) at every URL, plus its own assets |
//! | `api-main` | `/api/healthz` and `/api/data` (host metrics, HAProxy's server states) |
//! | `api-fallback` | 503 `{"status":"maintenance"}` for everything but the recovery hint (a long-poll answered when HAProxy reports both main servers UP) |
//!
//! Each role is a `configure_*` function over [`actix_web::web::ServiceConfig`], used alike by
//! the binary and by the tests (`App::new().configure(..)`). What a role serves from memory is
//! read once before that, by [`Role::load_files`], and shared by every worker. Every role also
//! serves Prometheus metrics at `/metrics` (HAProxy keeps that path private).

use std::fmt;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{guard, web, HttpResponse, ResponseError};

pub mod api;
pub mod config;
pub mod fallback;
pub mod haproxy_stats;
pub mod hint;
pub mod host;
pub mod listener;
pub mod metrics;
pub mod static_tier;
pub mod www;

pub use api::configure_api_main;
pub use config::{Cli, Role};
pub use fallback::{configure_api_fallback, configure_static_fallback};
pub use metrics::Metrics;
pub use static_tier::configure_static_main;
pub use www::{Www, WwwError};

impl Role {
    /// Reads what this role serves from memory: the whole www directory for the static tier
    /// (static-fallback serves only the maintenance page's own files from it, so a file has the
    /// same validators whichever server sends it); nothing for the other roles. Called once,
    /// before the workers start; they share the result.
    pub fn load_files(&self) -> Result<Www, WwwError> {
        match self {
            Role::StaticMain { site, .. } => Www::load(&site.www),
            Role::StaticFallback { site, .. } => Www::load(&site.www),
            _ => Ok(Www::default()),
        }
    }

    /// Registers this role's routes; what the binary's `App` factory calls. `files` is what
    /// [`Role::load_files`] returned.
    pub fn configure(
        &self,
        cfg: &mut web::ServiceConfig,
        files: &web::Data<Www>,
        metrics: &Metrics,
    ) {
        match self {
            Role::StaticMain { site, .. } => configure_static_main(cfg, site, files, metrics),
            Role::StaticFallback { site, .. } => {
                configure_static_fallback(cfg, site, files, metrics)
            }
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
    /// The path answers GET and HEAD only.
    MethodNotAllowed,
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
            OriginError::MethodNotAllowed => {
                f.write_str("Method not allowed: this path answers GET and HEAD only.")
            }
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
            OriginError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            OriginError::Metrics(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        if let OriginError::MethodNotAllowed = self {
            res.insert_header((header::ALLOW, HeaderValue::from_static("GET, HEAD")));
        }
        res.content_type("text/plain; charset=utf-8")
            .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
            .body(format!("{self}\n"))
    }
}

/// A route answering GET and HEAD (health checks often use either).
pub(crate) fn get_or_head() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// 405 for a method a GET/HEAD resource does not answer.
pub(crate) async fn method_not_allowed() -> Result<HttpResponse, OriginError> {
    Err(OriginError::MethodNotAllowed)
}

/// Answers requests whose path tries to escape the served directory with 400, before any file
/// service sees them. Registered first in `static-fallback` (`static-main` checks in its file
/// handler).
pub(crate) fn reject_escaping_paths() -> actix_web::Resource {
    web::resource("/{path:.*}")
        .guard(guard::fn_guard(|ctx| escapes_root(ctx.head().uri.path())))
        .to(|| async { Err::<HttpResponse, _>(OriginError::PathEscapesRoot) })
}

/// Whether a raw request path, once percent-decoded, contains a `..` segment, a backslash or NUL.
///
/// The file table only holds files under `www/`, so no lookup could leave it anyway; this makes
/// the refusal explicit (400 instead of a 404) and covers encodings such as `%2e%2e%2f` and
/// `%5c`. Runs on every request of the static roles, so it decodes on the fly, allocating nothing.
pub fn escapes_root(raw_path: &str) -> bool {
    // Length of the current segment, and whether it holds only dots so far.
    let (mut length, mut dots) = (0, true);
    for byte in PercentDecoded::new(raw_path).chain([b'/']) {
        match byte {
            b'\\' | 0 => return true,
            b'/' => {
                if length == 2 && dots {
                    return true;
                }
                (length, dots) = (0, true);
            }
            _ => {
                length += 1;
                dots &= byte == b'.';
            }
        }
    }
    false
}

/// `raw` with every `%XX` replaced by the byte it encodes (other `%` signs are kept).
pub(crate) fn percent_decode(raw: &str) -> Vec<u8> {
    PercentDecoded::new(raw).collect()
}

/// The bytes of a percent-encoded string, decoded one at a time.
struct PercentDecoded<'a> {
    bytes: &'a [u8],
}

impl<'a> PercentDecoded<'a> {
    fn new(raw: &'a str) -> Self {
        PercentDecoded {
            bytes: raw.as_bytes(),
        }
    }
}

impl Iterator for PercentDecoded<'_> {
    type Item = u8;

    fn next(&mut self) -> Option<u8> {
        let (&first, rest) = self.bytes.split_first()?;
        if let (b'%', [hi, lo, tail @ ..]) = (first, rest) {
            if let (Some(hi), Some(lo)) = ((*hi as char).to_digit(16), (*lo as char).to_digit(16)) {
                self.bytes = tail;
                // Two hex digits never exceed 255.
                return Some((hi * 16 + lo) as u8);
            }
        }
        self.bytes = rest;
        Some(first)
    }
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
