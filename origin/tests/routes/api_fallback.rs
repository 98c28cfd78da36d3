//! `api-fallback`: 503 maintenance JSON for everything but its liveness check; the recovery
//! hint across hosts, read from every load balancer's stats socket over TCP.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::{test, App, Error};
use origin::config::{ApiFallback, Peer, StatsSocket};
use origin::{configure_api_fallback, Metrics};
use serde_json::{json, Value};

use crate::support::{fake_stats_tcp, header, SHOW_STAT_2_6};

/// api-fallback reading the load balancers `peers` (none: the Unix socket, absent here).
async fn app(
    peers: Vec<Peer>,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = Error> {
    let settings = ApiFallback {
        build_id: "build-42".to_owned(),
        retry_after: 5,
        stats: StatsSocket {
            path: "/nonexistent/haproxy.sock".into(),
            timeout: std::time::Duration::from_millis(100),
            peers,
        },
        hint: Default::default(),
    };
    let metrics = Metrics::new("api-fallback", "build-42").unwrap();
    test::init_service(App::new().configure(|cfg| configure_api_fallback(cfg, &settings, &metrics)))
        .await
}

/// The capture with api-main back UP: what a load balancer reports once both mains are.
fn both_mains_up() -> &'static str {
    // The capture's only MAINT is api-main's.
    assert_eq!(SHOW_STAT_2_6.matches(",MAINT,").count(), 1);
    Box::leak(
        SHOW_STAT_2_6
            .replacen(",MAINT,", ",UP,", 1)
            .into_boxed_str(),
    )
}

/// lb-a and lb-b as fakes on two loopback addresses (two hosts, as HAProxy connects from its
/// own): lb-a answering `lb_a`, lb-b `lb_b`.
async fn balancers(lb_a: &'static str, lb_b: &'static str) -> Vec<Peer> {
    let lb_a = fake_stats_tcp(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), Some(lb_a)).await;
    let lb_b = fake_stats_tcp(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), Some(lb_b)).await;
    vec![
        Peer {
            name: "lb-a".to_owned(),
            addr: lb_a,
        },
        Peer {
            name: "lb-b".to_owned(),
            addr: lb_b,
        },
    ]
}

/// Asks for the hint as a request from `from` and expects the recovery news, told to one tab.
async fn expect_recovery_news(
    app: &impl Service<actix_http::Request, Response = ServiceResponse, Error = Error>,
    from: Option<SocketAddr>,
) {
    let mut req = test::TestRequest::get().uri(contract::RECOVERY_HINT_PATH);
    if let Some(from) = from {
        req = req.peer_addr(from);
    }
    let res = test::call_service(app, req.to_request()).await;
    assert_eq!(res.status(), StatusCode::OK, "a request from {from:?}");
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    let body: Value = test::read_body_json(res).await;
    assert_eq!(
        body,
        json!({"recovered": true, "spread_ms": contract::recovery_hint_spread_ms(1)})
    );
}

/// Across hosts a tab hears of recovery from the balancer its hint came through (the VIP's
/// holder), here while the other one still reports api-main down.
#[actix_web::test]
async fn the_hint_tells_a_tab_when_its_balancer_reports_both_mains_up() {
    let peers = balancers(both_mains_up(), SHOW_STAT_2_6).await;
    // HAProxy connects from its host's own address, on a port of its own.
    let from = SocketAddr::new(peers[0].addr.ip(), 40_000);
    let app = app(peers).await;
    expect_recovery_news(&app, Some(from)).await;
}

/// A request from an address that is no balancer's hears of recovery from any of them.
#[actix_web::test]
async fn the_hint_tells_a_tab_from_no_balancer_when_any_reports_both_mains_up() {
    let peers = balancers(SHOW_STAT_2_6, both_mains_up()).await;
    let app = app(peers).await;
    expect_recovery_news(&app, None).await;
    expect_recovery_news(&app, Some("198.18.0.1:40000".parse().unwrap())).await;
}

#[actix_web::test]
async fn everything_is_503_maintenance() {
    let app = app(Vec::new()).await;
    for (method, uri) in [
        (Method::GET, "/api/healthz"),
        (Method::GET, "/api/data"),
        (Method::HEAD, "/api/data"),
        (Method::POST, "/api/anything"),
        (Method::GET, "/"),
    ] {
        let req = test::TestRequest::default()
            .method(method.clone())
            .uri(uri)
            .to_request();
        let res = test::call_service(&app, req).await;
        assert_eq!(
            res.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{method} {uri}"
        );
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-store", "{uri}");
        assert_eq!(header(&res, header::RETRY_AFTER), "5", "{uri}");
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            "application/json",
            "{uri}"
        );
        if method != Method::HEAD {
            let body: Value = test::read_body_json(res).await;
            assert_eq!(body, json!({"status": "maintenance"}), "{uri}");
        }
    }
    // But for HAProxy's liveness check, which tells a living fallback from a dead one.
    let req = test::TestRequest::get()
        .uri(contract::LIVENESS_PATH)
        .to_request();
    let res = test::call_service(&app, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    let body: Value = test::read_body_json(res).await;
    assert_eq!(body, json!({"status": "alive"}));
}
