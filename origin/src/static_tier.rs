//! The `static-main` role: the dashboard and its assets, straight from `www/`.

use actix_files::Files;
use actix_web::dev::Service;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{middleware, web, HttpResponse};
use serde_json::json;

use crate::config::StaticMain;
use crate::metrics::{metrics_endpoint, Metrics};
use crate::{get_or_head, reject_escaping_paths};

/// For assets whose URL names their version (`?v=<hash>`): cache for a year, never revalidate.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Registers `static-main`: `/healthz`, `/metrics` and the files of `site.www` (last).
///
/// Files carry ETag and Last-Modified; HTML and unversioned assets get `Cache-Control: no-cache`
/// (revalidate, cheap with ETag), requests with a `v` query parameter get [`IMMUTABLE`].
/// Responses are compressed when the client accepts it.
pub fn configure_static_main(cfg: &mut web::ServiceConfig, site: &StaticMain, metrics: &Metrics) {
    let build = site.build_id.clone();
    let healthz = move || {
        let body = json!({"status": "ok", "tier": "static", "build": build});
        async move {
            HttpResponse::Ok()
                .insert_header((header::CACHE_CONTROL, "no-store"))
                .json(body)
        }
    };
    cfg.app_data(web::Data::new(metrics.clone())).service(
        web::scope("")
            .wrap(middleware::Compress::default())
            .wrap_fn(|req, srv| {
                let versioned = has_version_param(req.query_string());
                let response = srv.call(req);
                async move {
                    let mut res = response.await?;
                    let status = res.status();
                    apply_cache_policy(res.headers_mut(), status, versioned);
                    Ok(res)
                }
            })
            .wrap(metrics.observe())
            .service(reject_escaping_paths())
            .service(web::resource("/healthz").route(get_or_head().to(healthz)))
            .service(web::resource("/metrics").route(web::get().to(metrics_endpoint)))
            .service(Files::new("/", &site.www).index_file("index.html")),
    );
}

/// Whether the query string carries a `v` parameter (`?v=3f2a`, `?a=1&v=2`).
fn has_version_param(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair == "v" || pair.starts_with("v="))
}

/// Sets Cache-Control unless the handler already chose one (e.g. `no-store` on `/healthz`).
fn apply_cache_policy(headers: &mut HeaderMap, status: StatusCode, versioned: bool) {
    if headers.contains_key(header::CACHE_CONTROL) {
        return;
    }
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let cacheable = status.is_success() || status == StatusCode::NOT_MODIFIED;
    let policy = if versioned && cacheable && !is_html {
        IMMUTABLE
    } else {
        "no-cache"
    };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_version_params() {
        assert!(has_version_param("v=abc"));
        assert!(has_version_param("a=1&v=2"));
        assert!(has_version_param("v"));
        assert!(!has_version_param("vv=1"));
        assert!(!has_version_param(""));
    }
}
