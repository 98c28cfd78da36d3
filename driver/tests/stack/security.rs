//! The security headers (haproxy.cfg's "Security headers" block) on every kind of answer,
//! the CSP's hashes against the pages' inline scripts and styles, and what answers say.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::time::Duration;

use base64::Engine as _;
use driver::http::{Request, Response};
use driver::{expect, Role, Signal, Stack};
use sha2::{Digest, Sha256};

/// The pages HAProxy or static-main serve with inline `<script>`/`<style>`.
const PAGES: [&str; 2] = ["index.html", "maintenance.html"];

/// How long HAProxy may take to notice a dead server.
const DETECTION: Duration = Duration::from_secs(10);

fn haproxy_cfg() -> String {
    let path = driver::workspace_root().join("haproxy.cfg");
    fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path:?}: {error}"))
}

/// Every `http-after-response set-header NAME VALUE` of haproxy.cfg (value unquoted), and
/// every `del-header NAME`.
fn configured_headers() -> (BTreeMap<String, String>, Vec<String>) {
    let (mut set, mut deleted) = (BTreeMap::new(), Vec::new());
    for line in haproxy_cfg().lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("http-after-response set-header ") {
            let (name, value) = rest.split_once(' ').expect("set-header NAME VALUE");
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            set.insert(name.to_ascii_lowercase(), value.to_owned());
        } else if let Some(name) = line.strip_prefix("http-after-response del-header ") {
            deleted.push(name.trim().to_ascii_lowercase());
        }
    }
    assert!(
        set.contains_key("content-security-policy"),
        "haproxy.cfg sets no Content-Security-Policy with `http-after-response set-header`"
    );
    (set, deleted)
}

/// The CSP's directives: name to its source expressions.
fn csp_directives(csp: &str) -> BTreeMap<String, Vec<String>> {
    csp.split(';')
        .filter_map(|directive| {
            let mut words = directive.split_whitespace();
            let name = words.next()?.to_owned();
            Some((name, words.map(str::to_owned).collect()))
        })
        .collect()
}

/// `'sha256-…'` of each inline `tag` element's text in `html` (comments skipped; elements with
/// `src` are not inline). `<style>` inside `<noscript>` counts: it applies without JavaScript.
fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    let mut text = html;
    let mut uncommented = String::new();
    while let Some(start) = text.find("<!--") {
        uncommented.push_str(&text[..start]);
        let end = text[start..].find("-->").expect("comments are closed");
        text = &text[start + end + 3..];
    }
    uncommented.push_str(text);
    let (open, close) = (format!("<{tag}"), format!("</{tag}>"));
    let mut hashes = Vec::new();
    let mut rest = uncommented.as_str();
    while let Some(at) = rest.find(&open) {
        let after = &rest[at + open.len()..];
        let tag_end = after.find('>').expect("tags are closed");
        let attributes = &after[..tag_end];
        let body_start = &after[tag_end + 1..];
        let body_end = body_start.find(&close).expect("elements are closed");
        if !attributes.contains("src=") && (attributes.is_empty() || attributes.starts_with(' ')) {
            let digest = Sha256::digest(&body_start.as_bytes()[..body_end]);
            let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
            hashes.push(format!("'sha256-{encoded}'"));
        }
        rest = &body_start[body_end..];
    }
    hashes
}

#[test]
fn the_csp_allows_exactly_the_pages_inline_scripts_and_styles() {
    let (headers, _) = configured_headers();
    let directives = csp_directives(&headers["content-security-policy"]);
    let mut expected: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for page in PAGES {
        let path = driver::default_www_dir().join(page);
        let html = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        for (directive, tag) in [("script-src", "script"), ("style-src", "style")] {
            expected
                .entry(directive)
                .or_default()
                .extend(inline_hashes(&html, tag));
        }
        // Hashes allow elements only: inline event handlers and style attributes would need
        // 'unsafe-hashes' (or 'unsafe-inline'), which the policy does not have.
        for attribute in [" onerror=", " onload=", " onclick=", " style="] {
            assert!(
                !html.contains(attribute),
                "{page} has an inline{attribute} attribute, which the CSP blocks"
            );
        }
    }
    for (directive, hashes) in &expected {
        let configured: BTreeSet<String> = directives[*directive]
            .iter()
            .filter(|source| source.starts_with("'sha256-"))
            .cloned()
            .collect();
        assert_eq!(
            &configured, hashes,
            "haproxy.cfg's CSP {directive} hashes disagree with www/'s inline elements: put \
             exactly the computed ones (right) into the Content-Security-Policy line"
        );
    }
    let script = &directives["script-src"];
    for needed in ["'self'", "'wasm-unsafe-eval'"] {
        assert!(
            script.iter().any(|s| s == needed),
            "script-src lacks {needed}"
        );
    }
    for (name, sources) in &directives {
        for banned in [
            "'unsafe-inline'",
            "'unsafe-eval'",
            "'unsafe-hashes'",
            "*",
            "data:",
        ] {
            assert!(
                !sources.iter().any(|s| s == banned),
                "{name} allows {banned}"
            );
        }
    }
    for (name, value) in [
        ("default-src", "'none'"),
        ("frame-ancestors", "'none'"),
        ("base-uri", "'none'"),
        ("form-action", "'none'"),
        ("object-src", "'none'"),
        ("connect-src", "'self'"),
        ("worker-src", "'self'"),
    ] {
        assert_eq!(
            directives.get(name).map(Vec::as_slice),
            Some(&[value.to_owned()][..]),
            "CSP {name}"
        );
    }
}

/// Asserts `response` carries every configured header with its configured value, none of
/// the deleted ones, and nothing that names software versions.
#[track_caller]
fn assert_secured(response: &Response, what: &str) {
    let (set, deleted) = configured_headers();
    for (name, value) in &set {
        expect::header(response, name, value, what);
    }
    for name in &deleted {
        assert!(
            response.header(name).is_none(),
            "{what}: {name} should be removed:\n{response}"
        );
    }
    // Error answers (the site's own pages and scripts may use any word) say nothing about
    // the software behind them.
    if response.status < 400 {
        return;
    }
    let body = response.text().to_ascii_lowercase();
    for word in ["haproxy 2", "haproxy/", "actix", "version"] {
        assert!(
            !body.contains(word),
            "{what}: the body names {word:?}:\n{response}"
        );
    }
}

#[test]
fn every_answer_carries_the_security_headers() {
    let mut stack = Stack::start();
    let gzip = |path: &str| stack.request(path).header("Accept-Encoding", "gzip");
    let answers = [
        ("GET / (static-main)", stack.get("/"), 200),
        (
            "GET /assets/dashboard.js",
            stack.get("/assets/dashboard.js"),
            200,
        ),
        ("GET /api/data (api-main)", stack.get("/api/data"), 200),
        ("GET /nope (static-main's 404)", stack.get("/nope"), 404),
        (
            "GET /api/nope (api-main's 404)",
            stack.get("/api/nope"),
            404,
        ),
        (
            "POST /api/data (api-main's 405)",
            stack.send(Request::new("POST", &stack.url("/api/data")).body("x")),
            405,
        ),
        ("GET /metrics (HAProxy's deny)", stack.get("/metrics"), 404),
        (
            "GET /maintenance.html (HAProxy's return)",
            stack.get("/maintenance.html"),
            200,
        ),
        (
            "GET /pkg/client.js gzip (HAProxy's return)",
            stack.send(gzip("/pkg/client.js")),
            200,
        ),
        (
            "GET /pkg/client_bg.wasm gzip (HAProxy's return)",
            stack.send(gzip("/pkg/client_bg.wasm")),
            200,
        ),
    ];
    for (what, response, status) in &answers {
        expect::status(response, *status, what);
        assert_secured(response, what);
    }

    // A main server down: the maintenance page in place, from HAProxy's memory.
    let api_main = stack.server_mut(Role::ApiMain);
    api_main.kill(Signal::SIGKILL);
    assert!(api_main.wait_exit(Duration::from_secs(5)).is_some());
    stack.wait_server_status(Role::ApiMain, "DOWN", DETECTION);
    let in_place = stack.get("/some/page");
    expect::maintenance_page(&stack, &in_place, "GET /some/page with api-main down");
    assert_secured(&in_place, "GET /some/page with api-main down");
    let fallback = stack.get("/api/data");
    expect::api_maintenance(&fallback, "GET /api/data from api-fallback");
    assert_secured(&fallback, "GET /api/data from api-fallback");

    // Every origin dead: HAProxy's own `http-error` answers.
    for role in [Role::ApiFallback, Role::StaticMain, Role::StaticFallback] {
        let server = stack.server_mut(role);
        server.kill(Signal::SIGKILL);
        assert!(server.wait_exit(Duration::from_secs(5)).is_some());
    }
    stack.wait_server_status(Role::StaticMain, "DOWN", DETECTION);
    let static_error = stack.get("/healthz");
    expect::status(&static_error, 503, "GET /healthz with every origin dead");
    assert_secured(&static_error, "GET /healthz with every origin dead");
    let api_error = stack.get("/api/healthz");
    expect::api_maintenance(&api_error, "GET /api/healthz with every origin dead");
    assert_secured(&api_error, "GET /api/healthz with every origin dead");
}

#[test]
fn api_data_names_no_path_on_the_server() {
    let stack = Stack::start();
    let data = stack.get("/api/data");
    expect::status(&data, 200, "GET /api/data");
    let json = data.json();
    assert_eq!(json["haproxy"].get("socket"), None, "{json}");
    let text = data.text();
    for path in [
        stack.stats_socket(),
        stack.temp_dir(),
        driver::workspace_root(),
    ] {
        let path = path.display().to_string();
        assert!(!text.contains(&path), "/api/data names {path}:\n{text}");
    }
}
