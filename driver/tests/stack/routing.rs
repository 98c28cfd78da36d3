//! A healthy stack: what goes where, and what HAProxy answers itself.

use driver::{expect, Role, Stack};

#[test]
fn pages_api_and_health_reach_the_main_servers() {
    let stack = Stack::start();

    let dashboard = stack.get("/");
    expect::status(&dashboard, 200, "GET /");
    assert!(
        dashboard
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "GET /: expected HTML:\n{dashboard}"
    );
    assert!(
        dashboard.body == stack.www_file("index.html"),
        "GET /: the body is not www/index.html:\n{dashboard}"
    );

    let static_health = stack.get("/healthz");
    expect::health(&static_health, 200, "GET /healthz");
    assert_eq!(static_health.json()["tier"], "static", "{static_health}");

    let api_health = stack.get("/api/healthz");
    expect::health(&api_health, 200, "GET /api/healthz");
    assert_eq!(api_health.json()["tier"], "api", "{api_health}");

    let unknown = stack.get("/no/such/page");
    expect::status(&unknown, 404, "GET /no/such/page (static-main's 404)");
}

#[test]
fn api_data_reports_haproxys_view_of_every_server() {
    let stack = Stack::start();
    let data = stack.get("/api/data");
    expect::status(&data, 200, "GET /api/data");
    expect::no_store(&data, "GET /api/data");
    let json = data.json();
    assert_eq!(json["status"], "ok", "{data}");
    assert_eq!(
        json["haproxy"]["reachable"], true,
        "api-main cannot read the stats socket:\n{data}"
    );
    let servers = json["haproxy"]["servers"]
        .as_array()
        .unwrap_or_else(|| panic!("no haproxy.servers array:\n{data}"));
    // One row per role: haproxy.cfg's plumbing backends (`hint`, `fallbacks`) are left out.
    assert_eq!(servers.len(), Role::ALL.len(), "{data}");
    for role in Role::ALL {
        let server = servers
            .iter()
            .find(|s| s["backend"] == role.backend() && s["server"] == role.name())
            .unwrap_or_else(|| panic!("{role} is missing from haproxy.servers:\n{data}"));
        assert_eq!(server["backup"], !role.is_main(), "{role}:\n{data}");
        if role.is_main() {
            assert_eq!(server["state"], "UP", "{role}:\n{data}");
        }
    }
}

#[test]
fn haproxy_serves_the_maintenance_page_and_client_itself() {
    let stack = Stack::start();

    let page = stack.get("/maintenance.html");
    expect::status(&page, 200, "GET /maintenance.html");
    expect::no_store(&page, "GET /maintenance.html");
    expect::header(
        &page,
        "content-type",
        "text/html; charset=utf-8",
        "GET /maintenance.html",
    );
    assert!(page.body == stack.www_file("maintenance.html"), "{page}");

    for accept in [
        "gzip",
        "gzip, deflate, br",
        "br, gzip;q=0.8",
        "deflate, gzip",
    ] {
        let what = format!("GET /pkg/client.js, Accept-Encoding: {accept}");
        let js = stack.send(
            stack
                .request("/pkg/client.js")
                .header("Accept-Encoding", accept),
        );
        expect::served_asset(
            &stack,
            &js,
            "pkg/client.js.gz",
            "text/javascript; charset=utf-8",
            &what,
        );

        let what = format!("GET /pkg/client_bg.wasm, Accept-Encoding: {accept}");
        let wasm = stack.send(
            stack
                .request("/pkg/client_bg.wasm")
                .header("Accept-Encoding", accept),
        );
        expect::served_asset(
            &stack,
            &wasm,
            "pkg/client_bg.wasm.gz",
            "application/wasm",
            &what,
        );
    }

    // Without gzip (no header, or gzip refused) the raw files are too big for an HAProxy
    // buffer: static-main serves them, cacheable (not HAProxy's no-store).
    for (path, content_type) in [
        ("/pkg/client.js", "javascript"),
        ("/pkg/client_bg.wasm", "application/wasm"),
    ] {
        for request in [
            stack.request(path),
            stack
                .request(path)
                .header("Accept-Encoding", "gzip;q=0, identity"),
        ] {
            let what = format!("{request:?}");
            let raw = stack.send(request);
            expect::status(&raw, 200, &what);
            assert!(
                raw.header("content-type")
                    .is_some_and(|t| t.contains(content_type)),
                "{what}: expected {content_type}:\n{}",
                raw.summary()
            );
            assert_ne!(
                raw.header("cache-control"),
                Some("no-store"),
                "{what}: expected static-main's copy"
            );
            assert_eq!(raw.header("content-encoding"), None, "{what}");
            assert!(
                raw.body == stack.www_file(&path[1..]),
                "{what}: {}",
                raw.summary()
            );
        }
    }
}

#[test]
fn metrics_are_not_public() {
    let stack = Stack::start();
    for path in [
        "/metrics",
        "/metrics/",
        "/metrics?format=text",
        "//metrics",
        "/%6detrics",
        "/%2fmetrics",
        "/api/metrics",
    ] {
        let response = stack.get(path);
        assert!(
            matches!(response.status, 403 | 404),
            "GET {path} through HAProxy: expected 403 or 404, got:\n{response}"
        );
        assert!(
            !response.text().contains("# TYPE"),
            "GET {path} through HAProxy leaked metrics:\n{response}"
        );
    }
    // The origins do serve it, so the answers above are HAProxy's doing.
    let direct = driver::http::get(&stack.server(Role::StaticMain).url("/metrics")).unwrap();
    expect::status(&direct, 200, "GET /metrics directly from static-main");
}

#[test]
fn fallbacks_are_never_healthy_and_never_used_while_mains_are_up() {
    let stack = Stack::start();
    let fallback = stack.server(Role::StaticFallback);
    let health = driver::http::get(&fallback.url("/healthz")).unwrap();
    expect::health(&health, 503, "GET /healthz directly from static-fallback");
    let page = driver::http::get(&fallback.url("/")).unwrap();
    expect::maintenance_page(&stack, &page, "GET / directly from static-fallback");

    let fallback = stack.server(Role::ApiFallback);
    for path in ["/api/healthz", "/api/data"] {
        let response = driver::http::get(&fallback.url(path)).unwrap();
        expect::api_maintenance(&response, &format!("GET {path} directly from api-fallback"));
    }

    // Backups that follow their liveness check (backend `fallbacks`): UP while they run.
    for role in [Role::StaticFallback, Role::ApiFallback] {
        stack.wait_server_status(role, "UP", std::time::Duration::from_secs(10));
        let stat = stack.server_stat(role).unwrap();
        assert_eq!(
            stat.fields.get("bck").map(String::as_str),
            Some("1"),
            "{role}: {stat:?}"
        );
    }
    expect::status(&stack.get("/"), 200, "GET / with both mains up");
    expect::health(
        &stack.get("/api/healthz"),
        200,
        "GET /api/healthz with api-main up",
    );
}

#[test]
fn a_reload_keeps_serving() {
    let mut stack = Stack::start();
    let before = stack.haproxy().pid();
    stack.haproxy_reload();
    assert_eq!(
        stack.haproxy().pid(),
        before,
        "the master process must survive a reload"
    );
    expect::status(&stack.get("/"), 200, "GET / after a reload");
    expect::health(
        &stack.get("/api/healthz"),
        200,
        "GET /api/healthz after a reload",
    );
}

#[test]
fn the_configuration_passes_haproxys_own_check_without_warnings() {
    let www = driver::default_www_dir();
    let config = driver::workspace_root().join("haproxy.cfg");
    let mut command = std::process::Command::new(driver::haproxy_binary());
    command
        .args(["-c", "-f"])
        .arg(&config)
        .env("HAPROXY_BIND", "127.0.0.1:8080")
        .env("STATIC_MAIN_ADDR", "127.0.0.1:8081")
        .env("STATIC_FALLBACK_ADDR", "127.0.0.1:8082")
        .env("API_MAIN_ADDR", "127.0.0.1:8083")
        .env("API_FALLBACK_ADDR", "127.0.0.1:8084")
        .env("HAPROXY_STATS_SOCKET", "/tmp/haproxy-check.sock")
        .env("WWW_DIR", &www);
    let output = command.output().expect("haproxy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // Files HAProxy answers from memory must fit one buffer with room for headers: above
    // HAPROXY_FILE_WARNING it warns (and a 500 replaces the file when the headers do not
    // fit), above HAPROXY_FILE_LIMIT it refuses to start.
    let sizes: Vec<String> = driver::HAPROXY_SERVED_FILES
        .iter()
        .map(|file| match std::fs::metadata(www.join(file)) {
            Ok(meta) => format!("{file}: {} bytes", meta.len()),
            Err(error) => format!("{file}: {error} (run `cargo xtask build-client`)"),
        })
        .collect();
    assert!(
        output.status.success() && !text.contains("[WARNING]") && !text.contains("[ALERT]"),
        "{command:?} exited with {}:\n{text}\nfiles served from memory ({} bytes at most): {}",
        output.status,
        driver::HAPROXY_FILE_WARNING,
        sizes.join(", ")
    );
}
