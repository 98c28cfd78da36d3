//! The fallback roles, which HAProxy uses while a main server is down: they answer 503.

use std::path::PathBuf;

use actix_web::dev::Service;
use actix_web::http::header::{self, ContentType, HeaderValue};
use actix_web::{middleware, web, HttpRequest, HttpResponse, ResponseError};
use contract::Tier;
use serde_json::json;

use crate::config::{ApiFallback, StaticFallback};
use crate::hint;
use crate::metrics::{metrics_endpoint, Metrics};
use crate::static_tier::serve_file;
use crate::www::Www;
use crate::{get_or_head, reject_escaping_paths, OriginError};

/// Answered when `www/maintenance.html` cannot be read.
pub const BUILT_IN_MAINTENANCE_PAGE: &str = "<!doctype html>\n<html lang=\"en\">\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Under maintenance</title>\n\
<h1>Under maintenance</h1>\n<p>This site is under maintenance. Please try again in a few minutes.</p>\n</html>\n";

/// `/livez` ([`contract::LIVENESS_PATH`]), on both fallbacks: 200 while the process serves.
/// Only HAProxy's `fallbacks` backend asks it, so that a dead fallback shows DOWN.
async fn livez() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"status": "alive"}))
}

/// Registers `api-fallback`: `/livez`, the recovery hint ([`hint`]); every other request but
/// `/metrics` gets 503 `{"status":"maintenance"}`, `Cache-Control: no-store` and `Retry-After`.
pub fn configure_api_fallback(cfg: &mut web::ServiceConfig, api: &ApiFallback, metrics: &Metrics) {
    let retry_after = api.retry_after;
    cfg.app_data(web::Data::new(metrics.clone())).service(
        web::scope("")
            .wrap(metrics.observe())
            .service(web::resource("/metrics").route(web::get().to(metrics_endpoint)))
            .service(web::resource(contract::LIVENESS_PATH).route(get_or_head().to(livez)))
            .configure(|cfg| hint::configure(cfg, &api.hint, &api.stats))
            .default_service(web::to(move || async move {
                HttpResponse::ServiceUnavailable()
                    .insert_header((header::CACHE_CONTROL, "no-store"))
                    .insert_header((header::RETRY_AFTER, retry_after))
                    .content_type(ContentType::json())
                    .body(contract::MAINTENANCE_JSON)
            })),
    );
}

/// Where the maintenance page and its assets live, and what Retry-After to send.
#[derive(Clone, Debug)]
struct MaintenanceSite {
    www: PathBuf,
    retry_after: u32,
}

/// Registers `static-fallback`: `/healthz` answers 503 JSON, `/livez` 200; `/maintenance.html` and `/pkg/*`
/// are served from `files` (the table static-main serves from, [`Www`], with the same
/// validators, ranges and gzip); every other URL gets 503 with the body of
/// `www/maintenance.html` (read per request, so a new build shows at once; a built-in page
/// when it is missing). Everything is `Cache-Control: no-store`.
pub fn configure_static_fallback(
    cfg: &mut web::ServiceConfig,
    site: &StaticFallback,
    files: &web::Data<Www>,
    metrics: &Metrics,
) {
    let build = site.build_id.clone();
    let retry_after = site.retry_after;
    let healthz = move || {
        let body = json!({"status": "maintenance", "tier": "static", "build": build});
        async move {
            HttpResponse::ServiceUnavailable()
                .insert_header((header::RETRY_AFTER, retry_after))
                .json(body)
        }
    };
    let maintenance = MaintenanceSite {
        www: site.www.clone(),
        retry_after,
    };
    cfg.app_data(web::Data::new(metrics.clone()))
        .app_data(web::Data::new(maintenance))
        .app_data(files.clone())
        .service(
            web::scope("")
                .wrap(middleware::Compress::default())
                .wrap_fn(|req, srv| {
                    let response = srv.call(req);
                    async move {
                        let mut res = response.await?;
                        // The maintenance answer must never outlive the maintenance.
                        res.headers_mut()
                            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                        Ok(res)
                    }
                })
                .wrap(metrics.observe())
                .service(reject_escaping_paths())
                .service(web::resource(Tier::Static.health_path()).to(healthz))
                .service(web::resource(contract::LIVENESS_PATH).route(get_or_head().to(livez)))
                .service(web::resource("/metrics").route(web::get().to(metrics_endpoint)))
                .service(web::resource("/maintenance.html").to(own_file))
                .service(web::resource("/pkg/{file:.*}").to(own_file))
                .default_service(web::to(maintenance_page)),
        );
}

/// One of the maintenance page's own files from the in-memory table; without the page itself,
/// the maintenance answer (503); without an asset, 404.
async fn own_file(
    req: HttpRequest,
    files: web::Data<Www>,
    site: web::Data<MaintenanceSite>,
) -> HttpResponse {
    match serve_file(&files, &req) {
        Ok(answer) => answer,
        // The page itself is never missing: the built-in one stands in. An asset is a 404.
        Err(OriginError::NotFound) if req.path() == "/maintenance.html" => {
            maintenance_response(&site).await
        }
        Err(error) => error.error_response(),
    }
}

async fn maintenance_page(site: web::Data<MaintenanceSite>) -> HttpResponse {
    maintenance_response(&site).await
}

async fn maintenance_response(site: &MaintenanceSite) -> HttpResponse {
    let path = site.www.join("maintenance.html");
    let body = match tokio::fs::read(&path).await {
        Ok(body) => body,
        Err(err) => {
            tracing::warn!(file = %path.display(), %err, "maintenance page missing; answering the built-in one");
            BUILT_IN_MAINTENANCE_PAGE.as_bytes().to_vec()
        }
    };
    HttpResponse::ServiceUnavailable()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::RETRY_AFTER, site.retry_after))
        .body(body)
}
