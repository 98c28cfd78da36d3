//! The browser glue in headless Chromium (`wasm-pack test --headless --chrome`).
//!
//! Probes go to the wasm-bindgen test runner's own server: `/` is its test page (200), a
//! missing path is a 404, and `/tests/healthz.json` (this crate's fixture; the runner also
//! serves files from the crate directory) is a healthy answer with a build id. A network
//! error comes from `127.0.0.1:9`, a refused loopback port. The runner cannot answer 503,
//! so that case classifies a `Response` built in the page.
#![cfg(target_arch = "wasm32")]

use client::recovery::{Outcome, State, Status};
use client::web::{classify, page_target, probe, probe_with, render, run};
use js_sys::Promise;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};
use web_sys::{AbortSignal, Document, Response, ResponseInit};

wasm_bindgen_test_configure!(run_in_browser);

const T0: u64 = 1_700_000_000_000;

fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

fn document() -> Document {
    window().document().expect("a document")
}

/// Resolves after `ms` milliseconds.
async fn sleep(ms: i32) {
    let promise = Promise::new(&mut |resolve, _| {
        window()
            .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms)
            .expect("setTimeout");
    });
    JsFuture::from(promise).await.expect("timer");
}

#[wasm_bindgen_test]
async fn a_200_is_healthy() {
    let report = probe("/", 3000).await;
    assert_eq!(report.outcome, Outcome::Healthy);
    assert_eq!(report.build, None, "the runner's page has no build field");
}

#[wasm_bindgen_test]
async fn a_healthy_body_gives_its_build() {
    let report = probe("/tests/healthz.json", 3000).await;
    assert_eq!(report.outcome, Outcome::Healthy);
    assert_eq!(report.build.as_deref(), Some("fixture-1"));
}

#[wasm_bindgen_test]
async fn a_404_is_unhealthy() {
    let report = probe("/no-such-health-endpoint", 3000).await;
    assert_eq!(report.outcome, Outcome::Unhealthy(404));
    assert_eq!(report.build, None);
}

#[wasm_bindgen_test]
async fn a_refused_connection_is_a_network_error() {
    // Loopback only: port 9 (discard) refuses, and Chromium blocks it as unsafe anyway.
    let report = probe("http://127.0.0.1:9/healthz", 3000).await;
    assert_eq!(report.outcome, Outcome::NetworkError);
}

#[wasm_bindgen_test]
async fn an_aborted_request_is_a_timeout() {
    // An already-aborted signal is what the timeout does, without racing a timer.
    let report = probe_with("/", AbortSignal::abort()).await;
    assert_eq!(report.outcome, Outcome::Timeout);
}

#[wasm_bindgen_test]
fn answers_classify_by_status() {
    for (status, outcome) in [
        (200, Outcome::Healthy),
        (204, Outcome::Unhealthy(204)),
        (404, Outcome::Unhealthy(404)),
        (500, Outcome::Unhealthy(500)),
        (503, Outcome::Unhealthy(503)),
    ] {
        let init = ResponseInit::new();
        init.set_status(status);
        let response = Response::new_with_opt_str_and_init(None, &init).expect("a Response");
        assert_eq!(classify(&response), outcome, "status {status}");
    }
}

/// A document of its own with the maintenance page's ids, so the running page is untouched.
fn maintenance_document() -> Document {
    let doc = document()
        .implementation()
        .expect("implementation")
        .create_html_document()
        .expect("a document");
    let body = doc.body().expect("a body");
    for (tag, id) in [
        ("p", "status"),
        ("span", "since"),
        ("span", "last-check"),
        ("span", "next-check"),
        ("button", "check-now"),
    ] {
        let element = doc.create_element(tag).expect("an element");
        element.set_id(id);
        body.append_child(&element).expect("append");
    }
    doc
}

fn text(doc: &Document, id: &str) -> String {
    doc.get_element_by_id(id)
        .and_then(|e| e.text_content())
        .unwrap_or_default()
}

fn state_attribute(doc: &Document) -> Option<String> {
    doc.body().and_then(|b| b.get_attribute("data-state"))
}

#[wasm_bindgen_test]
fn render_updates_the_dom() {
    let doc = maintenance_document();
    let status = Status {
        state: State::ApiDown,
        since_ms: T0,
        last_check_ms: Some(T0 + 1000),
        next_check_ms: Some(T0 + 6000),
        probing: false,
        paused: false,
        navigate_at_ms: None,
    };
    render(&doc, &status, T0 + 2000);
    assert_eq!(state_attribute(&doc).as_deref(), Some("api-down"));
    assert_eq!(text(&doc, "status"), State::ApiDown.sentence());
    assert_eq!(text(&doc, "next-check"), "in 4 s");
    assert_eq!(text(&doc, "since").len(), "HH:MM:SS".len());
    assert_ne!(text(&doc, "last-check"), "not yet");
    let button = doc.get_element_by_id("check-now").expect("button");
    assert!(!button.has_attribute("disabled"));

    let recovering = Status {
        state: State::Recovering,
        last_check_ms: None,
        next_check_ms: None,
        navigate_at_ms: Some(T0 + 5000),
        ..status
    };
    render(&doc, &recovering, T0 + 2000);
    assert_eq!(state_attribute(&doc).as_deref(), Some("recovering"));
    assert_eq!(text(&doc, "status"), State::Recovering.sentence());
    assert_eq!(text(&doc, "last-check"), "not yet");
    assert_eq!(
        text(&doc, "next-check"),
        "none: returning to your page in 3 s"
    );
    assert!(
        button.has_attribute("disabled"),
        "no Check now once recovering"
    );
}

/// Runs `check` with the page's URL replaced by `url` (same origin), then restores it.
fn with_url<T>(url: &str, check: impl FnOnce() -> T) -> T {
    let history = window().history().expect("history");
    let original = window().location().href().expect("href");
    history
        .replace_state_with_url(&JsValue::NULL, "", Some(url))
        .expect("replaceState");
    let result = check();
    history
        .replace_state_with_url(&JsValue::NULL, "", Some(&original))
        .expect("restore");
    result
}

#[wasm_bindgen_test]
fn navigation_target_comes_from_the_page_url() {
    let cases = [
        ("/", "/"),
        ("/dash/hosts?sort=load&v=17#top", "/dash/hosts?sort=load"),
        ("/dash?v=1&v=2", "/dash"),
        ("/maintenance.html", "/"),
        (
            "/maintenance.html?return=%2Fdash%3Fa%3D1%26v%3D9",
            "/dash?a=1",
        ),
        ("/maintenance.html?return=%2F%2Felsewhere.example", "/"),
        (
            "/maintenance.html?return=https%3A%2F%2Felsewhere.example%2F",
            "/",
        ),
        ("/maintenance.html?return=javascript%3Aalert(1)", "/"),
        ("/maintenance.html?return=%2F%5Celsewhere.example", "/"),
        ("/%2F%2Felsewhere.example", "/"),
        ("/%5C%5Celsewhere.example", "/"),
    ];
    for (url, expected) in cases {
        let target = with_url(url, page_target).expect("page_target");
        assert_eq!(target, expected, "page at {url}");
    }
    // A same-origin absolute URL in `return` becomes a path.
    let origin = window().location().origin().expect("origin");
    let url = [
        "/maintenance.html?return=",
        &String::from(js_sys::encode_uri_component(&[&origin, "/x?y=1"].concat())),
    ]
    .concat();
    assert_eq!(with_url(&url, page_target).expect("page_target"), "/x?y=1");
}

/// A deterministic sample of odd return targets: every sequence of up to three pieces that
/// matter to URL parsers (slashes, backslashes, dot segments, escapes, schemes), a few
/// thousand inputs in all. The native property tests search far wider; this checks the
/// browser's own URL parser agrees.
fn odd_targets() -> Vec<String> {
    const PIECES: [&str; 17] = [
        "/",
        "\\",
        ".",
        "..",
        "%2f",
        "%2e",
        "%5c",
        "%25",
        "?",
        "#",
        ":",
        "@",
        "\t",
        "x",
        "//elsewhere.example",
        "javascript:",
        "http:",
    ];
    let mut out = vec![String::new()];
    let mut last = vec![String::new()];
    for _ in 0..3 {
        let next: Vec<String> = last
            .iter()
            .flat_map(|prefix| PIECES.iter().map(move |piece| [prefix, *piece].concat()))
            .collect();
        out.extend(next.iter().cloned());
        last = next;
    }
    // The same with a leading slash, as most links have.
    let rooted: Vec<String> = out.iter().map(|input| ["/", input].concat()).collect();
    out.extend(rooted);
    out
}

#[wasm_bindgen_test]
fn return_targets_stay_on_this_origin_in_the_browser_s_url_parser() {
    let location = window().location();
    let origin = location.origin().expect("origin");
    let base = location.href().expect("href");
    let inputs = odd_targets();
    for input in &inputs {
        let target = client::target::sanitize(&origin, input);
        let url = web_sys::Url::new_with_base(&target, &base)
            .unwrap_or_else(|_| panic!("{input:?} gave {target:?}, which does not parse"));
        assert_eq!(
            url.origin(),
            origin,
            "{input:?} gave {target:?}: {}",
            url.href()
        );
        assert!(
            !url.pathname().starts_with("//"),
            "{input:?} gave {target:?}, whose path reads as another host: {}",
            url.href()
        );
    }
    // And through the page's own URL, as the maintenance page reads it. Only 30 of them:
    // browsers ignore history updates beyond ~200 in 10 s (Chromium: 200), and the other
    // tests here need some too.
    for input in inputs.iter().step_by(inputs.len() / 30) {
        let encoded = String::from(js_sys::encode_uri_component(input));
        let page = ["/maintenance.html?return=", &encoded].concat();
        let target = with_url(&page, || {
            // A history update the browser ignored would test the runner's page instead.
            let path = window().location().pathname().expect("pathname");
            assert_eq!(path, "/maintenance.html", "the page URL was not replaced");
            page_target()
        })
        .expect("page_target");
        let url = web_sys::Url::new_with_base(&target, &base).expect("the target parses");
        assert_eq!(url.origin(), origin, "{input:?} gave {target:?}");
        assert!(
            !url.pathname().starts_with("//"),
            "{input:?} gave {target:?}"
        );
    }
}

/// Last: starts the client on this page, which then keeps probing in the background.
#[wasm_bindgen_test]
async fn the_client_shows_what_the_probes_found() {
    let doc = document();
    let body = doc.body().expect("body");
    body.set_attribute("data-interval-ms", "200").expect("attr");
    for id in ["status", "since", "last-check", "next-check", "check-now"] {
        let element = doc.create_element("span").expect("element");
        element.set_id(id);
        body.append_child(&element).expect("append");
    }
    run().expect("the client starts");
    // The runner answers 404 to both /healthz and /api/healthz: both tiers "down".
    let mut seen = None;
    for _ in 0..100 {
        seen = state_attribute(&doc);
        if seen.as_deref() == Some("both-down") {
            break;
        }
        sleep(50).await;
    }
    assert_eq!(seen.as_deref(), Some("both-down"), "last data-state seen");
    assert_eq!(text(&doc, "status"), State::BothDown.sentence());
    assert_ne!(text(&doc, "last-check"), "not yet");
}
