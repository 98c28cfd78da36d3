//! `api-fallback`: 503 maintenance JSON for everything but its liveness check.

use actix_web::http::{header, Method, StatusCode};
use actix_web::{test, App};
use origin::config::{ApiFallback, StatsSocket};
use origin::{configure_api_fallback, Metrics};
use serde_json::{json, Value};

use crate::support::header;

#[actix_web::test]
async fn everything_is_503_maintenance() {
    let settings = ApiFallback {
        build_id: "build-42".to_owned(),
        retry_after: 5,
        stats: StatsSocket {
            path: "/nonexistent/haproxy.sock".into(),
            timeout: std::time::Duration::from_millis(100),
            peers: Vec::new(),
        },
        hint: Default::default(),
    };
    let metrics = Metrics::new("api-fallback", "build-42").unwrap();
    let app = test::init_service(
        App::new().configure(|cfg| configure_api_fallback(cfg, &settings, &metrics)),
    )
    .await;
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
