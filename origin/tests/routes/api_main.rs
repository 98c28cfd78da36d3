//! `api-main`: health, and `/api/data` with HAProxy's socket absent, present and stuck.

use std::path::Path;
use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::{test, App, Error};
use origin::config::{ApiMain, StatsSocket};
use origin::{configure_api_main, Metrics};
use serde_json::{json, Value};

use crate::support::{fake_stats_socket, header, SHOW_STAT_2_6};

pub(crate) async fn app(
    socket: &Path,
    stats_timeout: Duration,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = Error> {
    app_with_health_delay(socket, stats_timeout, 0).await
}

async fn app_with_health_delay(
    socket: &Path,
    stats_timeout: Duration,
    health_delay_ms: u64,
) -> impl Service<actix_http::Request, Response = ServiceResponse, Error = Error> {
    let settings = ApiMain {
        stats: StatsSocket {
            path: socket.to_owned(),
            timeout: stats_timeout,
            peers: Vec::new(),
        },
        build_id: "build-42".to_owned(),
        health_delay_ms,
    };
    let metrics = Metrics::new("api-main", "build-42").unwrap();
    test::init_service(App::new().configure(|cfg| configure_api_main(cfg, &settings, &metrics)))
        .await
}

async fn get_data(
    app: &impl Service<actix_http::Request, Response = ServiceResponse, Error = Error>,
) -> Value {
    let res = test::call_service(app, test::TestRequest::get().uri("/api/data").to_request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    assert_eq!(header(&res, header::CONTENT_TYPE), "application/json");
    test::read_body_json(res).await
}

#[actix_web::test]
async fn healthz_reports_ok() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir.path().join("none.sock"), Duration::from_millis(500)).await;
    let res = test::call_service(
        &app,
        test::TestRequest::get().uri("/api/healthz").to_request(),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    let body: Value = test::read_body_json(res).await;
    assert_eq!(
        body,
        json!({"status": "ok", "tier": "api", "build": "build-42"})
    );
}

/// The hidden `--health-delay-ms` fault injection holds the health answer at least that long
/// (a sleep never ends early, so this lower bound is deterministic), then answers as usual.
#[actix_web::test]
async fn healthz_can_be_delayed_for_fault_injection() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with_health_delay(
        &dir.path().join("none.sock"),
        Duration::from_millis(500),
        300,
    )
    .await;
    let started = std::time::Instant::now();
    let res = test::call_service(
        &app,
        test::TestRequest::get().uri("/api/healthz").to_request(),
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "answered after {:?}, before the injected delay",
        started.elapsed()
    );
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(&res, header::CACHE_CONTROL), "no-store");
    let body: Value = test::read_body_json(res).await;
    assert_eq!(
        body,
        json!({"status": "ok", "tier": "api", "build": "build-42"})
    );
}

#[actix_web::test]
async fn unknown_api_paths_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&dir.path().join("none.sock"), Duration::from_millis(500)).await;
    for uri in ["/api/nope", "/", "/index.html"] {
        let res = test::call_service(&app, test::TestRequest::get().uri(uri).to_request()).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{uri}");
    }
    let post = test::TestRequest::post().uri("/api/data").to_request();
    assert_eq!(
        test::call_service(&app, post).await.status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[actix_web::test]
async fn data_without_haproxy_still_answers_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("haproxy.sock");
    let app = app(&socket, Duration::from_millis(500)).await;
    let data = get_data(&app).await;

    assert_eq!(data["status"], "ok");
    assert_eq!(data["tier"], "api");
    assert_eq!(data["build"], "build-42");
    assert!(data["generated_at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    let host = &data["host"];
    assert!(!host["hostname"].as_str().unwrap().is_empty());
    assert_eq!(host["load"].as_array().unwrap().len(), 3);
    let total = host["memory"]["total_bytes"].as_u64().unwrap();
    let available = host["memory"]["available_bytes"].as_u64().unwrap();
    assert!(
        total > 0 && available <= total,
        "memory {total} / {available}"
    );
    assert!(host["uptime_s"].as_f64().unwrap() > 0.0);

    let haproxy = &data["haproxy"];
    assert_eq!(haproxy["reachable"], false);
    // Every visitor sees this report: no path on the server's disk, in no field.
    assert_eq!(haproxy.get("socket"), None, "{haproxy}");
    let error = haproxy["error"].as_str().unwrap();
    assert!(error.contains("does not exist"), "{error}");
    let text = data.to_string();
    let dir_path = dir.path().display().to_string();
    assert!(
        !text.contains(&dir_path),
        "/api/data names {dir_path}: {text}"
    );
    assert_eq!(haproxy["servers"], json!([]));
    assert_eq!(haproxy["backends"], json!([]));
}

#[actix_web::test]
async fn data_reports_haproxy_s_servers_and_backends() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("haproxy.sock");
    // The capture plus haproxy.cfg's plumbing backends (`hint`, `fallbacks`: the same
    // api-fallback and static-fallback again), which /api/data leaves out.
    let mut answer = SHOW_STAT_2_6.trim_end().to_owned();
    for line in SHOW_STAT_2_6.lines() {
        for (from, to) in [
            ("api,api-fallback,", "hint,api-fallback,"),
            ("api,BACKEND,", "hint,BACKEND,"),
            ("api,api-fallback,", "fallbacks,api-fallback,"),
            ("static,static-fallback,", "fallbacks,static-fallback,"),
            ("static,BACKEND,", "fallbacks,BACKEND,"),
        ] {
            if let Some(rest) = line.strip_prefix(from) {
                answer.push_str(&format!("\n{to}{rest}"));
            }
        }
    }
    answer.push('\n');
    assert_eq!(answer.matches("fallbacks,").count(), 3, "{answer}");
    fake_stats_socket(&socket, Some(Box::leak(answer.into_boxed_str())));
    let app = app(&socket, Duration::from_millis(2000)).await;
    let haproxy = get_data(&app).await["haproxy"].clone();

    assert_eq!(haproxy["reachable"], true, "{haproxy}");
    assert_eq!(haproxy["error"], Value::Null);
    let servers = haproxy["servers"].as_array().unwrap();
    let names: Vec<_> = servers
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["backend"].as_str().unwrap(),
                s["server"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "static/static-main",
            "static/static-fallback",
            "api/api-main",
            "api/api-fallback",
            "api/api-gone"
        ]
    );
    assert_eq!(
        servers[0],
        json!({"backend": "static", "server": "static-main", "state": "UP", "backup": false,
               "since_s": 11, "check_status": "L7OK", "check_duration_ms": 0, "sessions": 0,
               "total_sessions": 3, "http_5xx": 0, "errors": 0})
    );
    assert_eq!(servers[1]["state"], "no check");
    assert_eq!(servers[1]["backup"], true);
    assert_eq!(servers[1]["check_status"], Value::Null);
    assert_eq!(servers[1]["check_duration_ms"], Value::Null);
    assert_eq!(servers[2]["state"], "MAINT");
    assert_eq!(servers[3]["http_5xx"], 4);
    assert_eq!(servers[3]["total_sessions"], 4);
    assert_eq!(servers[4]["state"], "DOWN");
    assert_eq!(servers[4]["check_status"], "L4CON");

    assert_eq!(
        haproxy["backends"],
        json!([
            {"name": "static", "state": "UP", "sessions": 0, "total_requests": 3, "http_5xx": 0, "errors": 0},
            {"name": "api", "state": "UP", "sessions": 0, "total_requests": 7, "http_5xx": 4, "errors": 0}
        ])
    );
}

#[actix_web::test]
async fn a_stuck_socket_is_reported_within_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("haproxy.sock");
    fake_stats_socket(&socket, None);
    let app = app(&socket, Duration::from_millis(100)).await;
    let haproxy = get_data(&app).await["haproxy"].clone();
    assert_eq!(haproxy["reachable"], false);
    let error = haproxy["error"].as_str().unwrap();
    assert!(
        error.contains("did not answer `show stat` within 100 ms"),
        "{error}"
    );
}

#[actix_web::test]
async fn an_answer_that_is_not_a_table_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("haproxy.sock");
    fake_stats_socket(&socket, Some("Permission denied\n\n"));
    let app = app(&socket, Duration::from_millis(2000)).await;
    let haproxy = get_data(&app).await["haproxy"].clone();
    assert_eq!(haproxy["reachable"], false);
    let error = haproxy["error"].as_str().unwrap();
    assert!(error.contains("Permission denied"), "{error}");
}
