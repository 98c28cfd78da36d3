//! Main servers crashing, hanging and coming back: the maintenance page in place while either
//! is down, HAProxy's own answers when every origin is gone, and recovery.

use std::time::Duration;

use driver::{expect, Role, Signal, Stack};

/// How long HAProxy may take to notice a server going away or coming back. The configuration
/// aims at well under 2 s; the margin is for a machine busy compiling.
const DETECTION: Duration = Duration::from_secs(10);

/// Page URLs that must answer the maintenance page in place while a main server is down.
const PAGES: [&str; 4] = [
    "/",
    "/some/page?x=1",
    "/index.html",
    "/assets/dashboard.css",
];

/// SIGKILL, then make sure it is gone (not merely signalled).
fn crash(stack: &mut Stack, role: Role) {
    let server = stack.server_mut(role);
    server.kill(Signal::SIGKILL);
    assert!(
        server.wait_exit(Duration::from_secs(5)).is_some(),
        "{role} survived SIGKILL: {server:?}"
    );
}

/// Every page URL answers the maintenance page in place.
fn assert_pages_in_maintenance(stack: &Stack, why: &str) {
    for path in PAGES {
        let response = stack.get(path);
        expect::maintenance_page(stack, &response, &format!("GET {path} with {why}"));
    }
}

/// The maintenance page and everything it loads come from HAProxy, whatever is down.
fn assert_maintenance_page_works(stack: &Stack, why: &str) {
    let page = stack.get("/maintenance.html");
    expect::status(&page, 200, &format!("GET /maintenance.html with {why}"));
    expect::no_store(&page, &format!("GET /maintenance.html with {why}"));
    assert!(page.body == stack.www_file("maintenance.html"), "{page}");
    let js = stack.send(
        stack
            .request("/pkg/client.js")
            .header("Accept-Encoding", "gzip"),
    );
    expect::served_asset(
        stack,
        &js,
        "pkg/client.js.gz",
        "text/javascript; charset=utf-8",
        &format!("GET /pkg/client.js (gzip) with {why}"),
    );
    let wasm = stack.send(
        stack
            .request("/pkg/client_bg.wasm")
            .header("Accept-Encoding", "gzip"),
    );
    expect::served_asset(
        stack,
        &wasm,
        "pkg/client_bg.wasm.gz",
        "application/wasm",
        &format!("GET /pkg/client_bg.wasm (gzip) with {why}"),
    );
}

/// Restarts `roles` on their ports and waits until the dashboard is back; returns how long.
fn recover(stack: &mut Stack, roles: &[Role], why: &str) {
    for &role in roles {
        stack.server_mut(role).restart();
    }
    let (dashboard, took) = stack.wait_for_status("/", 200, DETECTION);
    eprintln!("{why}: restart -> dashboard again in {took:.2?}");
    assert!(
        dashboard.body == stack.www_file("index.html"),
        "{dashboard}"
    );
    expect::health(
        &stack.get("/healthz"),
        200,
        &format!("GET /healthz after {why}"),
    );
    expect::health(
        &stack.get("/api/healthz"),
        200,
        &format!("GET /api/healthz after {why}"),
    );
    expect::status(
        &stack.get("/api/data"),
        200,
        &format!("GET /api/data after {why}"),
    );
}

#[test]
fn api_main_crash_serves_maintenance_in_place_and_recovers() {
    let mut stack = Stack::start();
    crash(&mut stack, Role::ApiMain);
    let (_, took) = stack.wait_for_status("/", 503, DETECTION);
    eprintln!("api-main SIGKILL -> maintenance in {took:.2?}");

    let why = "api-main down";
    assert_pages_in_maintenance(&stack, why);
    expect::api_maintenance(
        &stack.get("/api/healthz"),
        "GET /api/healthz with api-main down",
    );
    expect::api_maintenance(&stack.get("/api/data"), "GET /api/data with api-main down");
    // /healthz is the static tier's health, and static-main is fine.
    expect::health(
        &stack.get("/healthz"),
        200,
        "GET /healthz with api-main down",
    );
    assert_maintenance_page_works(&stack, why);
    assert_eq!(stack.server_stat(Role::ApiMain).unwrap().status, "DOWN");

    recover(&mut stack, &[Role::ApiMain], "api-main crash");
}

#[test]
fn static_main_crash_serves_maintenance_in_place_and_recovers() {
    let mut stack = Stack::start();
    crash(&mut stack, Role::StaticMain);
    let (_, took) = stack.wait_for_status("/", 503, DETECTION);
    eprintln!("static-main SIGKILL -> maintenance in {took:.2?}");

    let why = "static-main down";
    assert_pages_in_maintenance(&stack, why);
    // /healthz reaches the static backend, where the fallback says "maintenance".
    let health = stack.get("/healthz");
    expect::health(&health, 503, "GET /healthz with static-main down");
    assert_eq!(health.json()["tier"], "static", "{health}");
    expect::health(
        &stack.get("/api/healthz"),
        200,
        "GET /api/healthz with static-main down",
    );
    expect::status(
        &stack.get("/api/data"),
        200,
        "GET /api/data with static-main down",
    );
    assert_maintenance_page_works(&stack, why);
    // The raw client (too big for HAProxy) still comes from the fallback.
    for file in ["pkg/client.js", "pkg/client_bg.wasm"] {
        let raw = stack.get(&format!("/{file}"));
        expect::status(
            &raw,
            200,
            &format!("GET /{file} (identity) with static-main down"),
        );
        expect::no_store(
            &raw,
            &format!("GET /{file} (identity) from static-fallback"),
        );
        assert!(raw.body == stack.www_file(file), "{}", raw.summary());
    }

    recover(&mut stack, &[Role::StaticMain], "static-main crash");
}

#[test]
fn both_mains_down_serves_maintenance_and_recovers() {
    let mut stack = Stack::start();
    crash(&mut stack, Role::StaticMain);
    crash(&mut stack, Role::ApiMain);
    stack.wait_for_status("/healthz", 503, DETECTION);
    stack.wait_for_status("/api/healthz", 503, DETECTION);

    let why = "both main servers down";
    assert_pages_in_maintenance(&stack, why);
    expect::health(
        &stack.get("/healthz"),
        503,
        "GET /healthz with both mains down",
    );
    expect::api_maintenance(
        &stack.get("/api/healthz"),
        "GET /api/healthz with both mains down",
    );
    assert_maintenance_page_works(&stack, why);

    recover(
        &mut stack,
        &[Role::StaticMain, Role::ApiMain],
        "both mains crash",
    );
}

#[test]
fn every_origin_down_haproxy_answers_alone_and_recovers() {
    let mut stack = Stack::start();
    for role in Role::ALL {
        crash(&mut stack, role);
    }
    stack.wait_server_status(Role::StaticMain, "DOWN", DETECTION);
    stack.wait_server_status(Role::ApiMain, "DOWN", DETECTION);

    let why = "every origin down";
    assert_pages_in_maintenance(&stack, why);
    assert_maintenance_page_works(&stack, why);
    // No usable server in either backend: HAProxy's own 503s, in the same shapes.
    for path in ["/healthz", "/pkg/other.js"] {
        let response = stack.get(path);
        expect::maintenance_page(&stack, &response, &format!("GET {path} with {why}"));
    }
    for path in ["/api/healthz", "/api/data", "/api/anything?x=1"] {
        let response = stack.get(path);
        expect::api_maintenance(&response, &format!("GET {path} with {why}"));
    }

    recover(&mut stack, &Role::ALL, "every origin crash");
}

#[test]
fn hung_api_main_is_taken_out_and_comes_back() {
    let mut stack = Stack::start();
    stack.server_mut(Role::ApiMain).stop();
    let (_, took) = stack.wait_for_status("/", 503, DETECTION);
    eprintln!("api-main SIGSTOP -> maintenance in {took:.2?}");
    assert_pages_in_maintenance(&stack, "api-main hung");
    expect::api_maintenance(
        &stack.get("/api/healthz"),
        "GET /api/healthz with api-main hung",
    );

    stack.server_mut(Role::ApiMain).cont();
    let (_, took) = stack.wait_for_status("/", 200, DETECTION);
    eprintln!("api-main SIGCONT -> dashboard again in {took:.2?}");
    expect::health(
        &stack.get("/api/healthz"),
        200,
        "GET /api/healthz after SIGCONT",
    );
}

#[test]
fn hung_static_main_is_taken_out_and_comes_back() {
    let mut stack = Stack::start();
    stack.server_mut(Role::StaticMain).stop();
    let (_, took) = stack.wait_for_status("/healthz", 503, DETECTION);
    eprintln!("static-main SIGSTOP -> /healthz 503 in {took:.2?}");
    assert_pages_in_maintenance(&stack, "static-main hung");

    stack.server_mut(Role::StaticMain).cont();
    let (_, took) = stack.wait_for_status("/", 200, DETECTION);
    eprintln!("static-main SIGCONT -> dashboard again in {took:.2?}");
    expect::health(&stack.get("/healthz"), 200, "GET /healthz after SIGCONT");
}

/// A fallback dying while its main is healthy: users notice nothing, and HAProxy (so the
/// dashboard) shows it DOWN by its liveness check, then UP again once it is back.
#[test]
fn a_dead_fallback_shows_down_and_users_notice_nothing() {
    let mut stack = Stack::start();
    for role in [Role::StaticFallback, Role::ApiFallback] {
        crash(&mut stack, role);
        let shown = stack.wait_server_status(role, "DOWN", DETECTION);
        expect::status(&stack.get("/"), 200, &format!("GET / with {role} dead"));
        expect::health(
            &stack.get("/api/healthz"),
            200,
            &format!("GET /api/healthz with {role} dead"),
        );
        let data = stack.get("/api/data");
        expect::status(&data, 200, &format!("GET /api/data with {role} dead"));
        let json = data.json();
        let row = json["haproxy"]["servers"]
            .as_array()
            .and_then(|servers| servers.iter().find(|s| s["server"] == role.name()))
            .unwrap_or_else(|| panic!("/api/data has no {role}:\n{data}"));
        assert_eq!(row["state"], "DOWN", "{role}:\n{data}");
        stack.server_mut(role).restart();
        let back = stack.wait_server_status(role, "UP", DETECTION);
        println!(
            "{role}: DOWN {:.0} ms after SIGKILL, UP {:.0} ms after its restart",
            shown.as_secs_f64() * 1e3,
            back.as_secs_f64() * 1e3
        );
    }
}
