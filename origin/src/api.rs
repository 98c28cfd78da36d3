//! The `api-main` role: health and the dashboard's data.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::http::header;
use actix_web::{middleware, web, HttpRequest, HttpResponse};
use contract::Tier;
use serde::Serialize;
use serde_json::json;

use crate::config::ApiMain;
use crate::haproxy_stats::{self, HaproxyReport};
use crate::host::HostReport;
use crate::metrics::{metrics_endpoint, Metrics};
use crate::{get_or_head, OriginError};

/// The body of `GET /api/data`.
#[derive(Clone, Debug, Serialize)]
pub struct DataReport {
    /// Always "ok": the API answered (HAProxy's reachability is reported inside).
    pub status: &'static str,
    /// Always "api".
    pub tier: &'static str,
    /// The API's build id.
    pub build: String,
    /// When the report was made, in milliseconds since the Unix epoch.
    pub generated_at_ms: u64,
    /// The machine the API runs on.
    pub host: HostReport,
    /// HAProxy's view of the servers: across hosts, that of the load balancer that
    /// forwarded this request (the VIP's holder), else the first one that answered.
    pub haproxy: HaproxyReport,
    /// Across hosts (`--haproxy-peers`), every load balancer's view; empty otherwise.
    pub balancers: Vec<BalancerReport>,
}

/// One load balancer's view, across hosts.
#[derive(Clone, Debug, Serialize)]
pub struct BalancerReport {
    /// Its name, e.g. `lb-a`.
    pub name: String,
    /// Whether this request came through it: it holds the VIP.
    pub forwarded: bool,
    /// What its stats socket said.
    #[serde(flatten)]
    pub haproxy: HaproxyReport,
}

/// Registers `api-main`: `/api/healthz`, `/api/data`, `/metrics`; anything else is 404.
pub fn configure_api_main(cfg: &mut web::ServiceConfig, api: &ApiMain, metrics: &Metrics) {
    cfg.app_data(web::Data::new(metrics.clone()))
        .app_data(web::Data::new(api.clone()))
        .service(
            web::scope("")
                .wrap(middleware::Compress::default())
                .wrap(metrics.observe())
                .service(web::resource(Tier::Api.health_path()).route(get_or_head().to(healthz)))
                .service(web::resource("/api/data").route(get_or_head().to(data)))
                .service(web::resource("/metrics").route(web::get().to(metrics_endpoint)))
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(OriginError::NotFound)
                })),
        );
}

async fn healthz(api: web::Data<ApiMain>) -> HttpResponse {
    if api.health_delay_ms > 0 {
        // Fault injection for tests only (see `ApiMain::health_delay_ms`).
        tokio::time::sleep(Duration::from_millis(api.health_delay_ms)).await;
    }
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({"status": "ok", "tier": "api", "build": api.build_id}))
}

async fn data(request: HttpRequest, api: web::Data<ApiMain>) -> actix_web::Result<HttpResponse> {
    // /proc reads are quick but blocking: keep them off the async workers.
    let (host, (haproxy, balancers)) = tokio::join!(
        web::block(|| HostReport::read(Path::new("/proc"))),
        haproxy_views(&request, &api),
    );
    let report = DataReport {
        status: "ok",
        tier: "api",
        build: api.build_id.clone(),
        generated_at_ms: unix_millis(),
        host: host?,
        haproxy,
        balancers,
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(report))
}

/// The stats socket's view; across hosts every balancer's, read at once, and the view of the
/// one this request came from (HAProxy connects from its host's own address).
async fn haproxy_views(
    request: &HttpRequest,
    api: &ApiMain,
) -> (HaproxyReport, Vec<BalancerReport>) {
    if api.stats.peers.is_empty() {
        let report = haproxy_stats::report(&api.stats.path, api.stats.timeout).await;
        return (report, Vec::new());
    }
    let reports = haproxy_stats::report_peers(&api.stats.peers, api.stats.timeout).await;
    let balancers: Vec<_> = api
        .stats
        .peers
        .iter()
        .zip(reports)
        .map(|(peer, haproxy)| BalancerReport {
            name: peer.name.clone(),
            forwarded: peer.forwarded(request.peer_addr()),
            haproxy,
        })
        .collect();
    let shown = balancers
        .iter()
        .find(|b| b.forwarded && b.haproxy.reachable)
        .or_else(|| balancers.iter().find(|b| b.haproxy.reachable))
        .unwrap_or(&balancers[0]);
    (shown.haproxy.clone(), balancers)
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
