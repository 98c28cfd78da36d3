//! Property tests over every role's routes, in process: arbitrary methods, paths, queries and
//! headers never panic, never answer a 5xx other than the fallbacks' designed 503, and never
//! return a byte of the secret file next to `www/` or a path on the server's disk.

use std::time::Duration;

use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::{Method, StatusCode, Uri};
use actix_web::rt::{System, SystemRunner};
use actix_web::test as actix_test;
use actix_web::{App, Error};
use origin::config::{ApiFallback, StatsSocket};
use origin::{configure_api_fallback, Metrics};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use crate::support::{Site, SECRET};

/// Cases per role: a few seconds each in a debug build.
const CASES: u32 = 1500;

/// One generated request.
#[derive(Clone, Debug)]
struct Fuzzed {
    method: Method,
    uri: String,
    headers: Vec<(&'static str, String)>,
}

/// Path pieces that matter to a file server: separators, dot segments in every spelling,
/// NUL, the names of real files and of the secret beside `www/`, and routes.
fn path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => Just("/"),
        3 => Just(".."),
        2 => Just("."),
        1 => Just("%2e"),
        1 => Just("%2E%2e"),
        1 => Just("%2f"),
        1 => Just("%5c"),
        1 => Just("%5C"),
        1 => Just("%00"),
        1 => Just("%25"),
        1 => Just("%"),
        1 => Just("%c0%af"),
        1 => Just(";"),
        1 => Just("~"),
        1 => Just("secret.txt"),
        1 => Just("www"),
        1 => Just("index.html"),
        1 => Just("maintenance.html"),
        1 => Just("pkg"),
        1 => Just("client_bg.wasm"),
        1 => Just("app.css"),
        1 => Just("healthz"),
        1 => Just("metrics"),
        1 => Just("api"),
        1 => Just("data"),
        1 => Just("é"),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        2 => Just(Method::HEAD),
        1 => Just(Method::POST),
        1 => Just(Method::PUT),
        1 => Just(Method::DELETE),
        1 => Just(Method::OPTIONS),
        1 => Just(Method::PATCH),
        1 => Just(Method::TRACE),
        1 => Just(Method::CONNECT),
        1 => "[A-Z]{1,8}".prop_map(|name| Method::from_bytes(name.as_bytes()).unwrap()),
    ]
}

/// Headers the routes read or a client might send oddly. Not `Accept-Encoding`: compressed
/// bodies could hide the secret from the byte search (static_main.rs tests compression).
fn headers() -> impl Strategy<Value = Vec<(&'static str, String)>> {
    let name = prop_oneof![
        Just("range"),
        Just("if-none-match"),
        Just("if-modified-since"),
        Just("if-range"),
        Just("accept"),
        Just("host"),
        Just("content-type"),
        Just("x-forwarded-for"),
        Just("cache-control"),
    ];
    let value = prop_oneof![
        "[ -~]{0,40}",
        Just("bytes=0-".to_owned()),
        Just("bytes=-1".to_owned()),
        Just("bytes=99999999999999999999-".to_owned()),
        Just("bytes=5-1,0-0,1-2".to_owned()),
        Just("*".to_owned()),
        Just("W/\"x\"".to_owned()),
        Just("Thu, 01 Jan 1970 00:00:00 GMT".to_owned()),
    ];
    prop::collection::vec((name, value), 0..4)
}

fn request() -> impl Strategy<Value = Fuzzed> {
    (method(), path(), "(\\?[a-z0-9=&%./]{0,20})?", headers()).prop_map(
        |(method, path, query, headers)| Fuzzed {
            method,
            uri: format!("{path}{query}"),
            headers,
        },
    )
}

/// Runs the generated requests against `app`, checking each answer: no 5xx but the
/// fallbacks' designed 503 (`designed_503`), the secret and `forbidden_text` (paths that must not leak).
fn fuzz<S>(system: &SystemRunner, app: &S, designed_503: bool, forbidden_text: &[String])
where
    S: Service<actix_http::Request, Response = ServiceResponse, Error = Error>,
{
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let outcome = runner.run(&request(), |fuzzed| {
        // Only requests an HTTP parser would hand over: the URI must parse.
        prop_assume!(fuzzed.uri.parse::<Uri>().is_ok());
        let mut req = actix_test::TestRequest::default()
            .method(fuzzed.method.clone())
            .uri(&fuzzed.uri);
        for (name, value) in &fuzzed.headers {
            req = req.insert_header((*name, value.as_str()));
        }
        let (status, body) = system.block_on(async {
            let res = actix_test::call_service(app, req.to_request()).await;
            let status = res.status();
            (status, actix_test::read_body(res).await)
        });
        let body = String::from_utf8_lossy(&body);
        let designed = designed_503 && status == StatusCode::SERVICE_UNAVAILABLE;
        if status.is_server_error() && !designed {
            return Err(TestCaseError::fail(format!("{fuzzed:?}: {status}\n{body}")));
        }
        if body.contains(SECRET) {
            return Err(TestCaseError::fail(format!(
                "{fuzzed:?}: {status} returned the file outside www/"
            )));
        }
        if let Some(leak) = forbidden_text
            .iter()
            .find(|text| body.contains(text.as_str()))
        {
            return Err(TestCaseError::fail(format!(
                "{fuzzed:?}: {status} names {leak:?}:\n{body}"
            )));
        }
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

/// What no answer may name: the site's directory on disk (www/, the socket beside it).
fn site_paths(site: &Site) -> Vec<String> {
    vec![site.root().display().to_string()]
}

#[test]
fn static_main_survives_arbitrary_requests() {
    let site = Site::new();
    let system = System::new();
    let app = system.block_on(crate::static_main::app(&site));
    fuzz(&system, &app, false, &site_paths(&site));
}

#[test]
fn static_fallback_survives_arbitrary_requests() {
    let site = Site::new();
    let system = System::new();
    let app = system.block_on(crate::static_fallback::app(&site));
    fuzz(&system, &app, true, &site_paths(&site));
}

#[test]
fn api_main_survives_arbitrary_requests() {
    let site = Site::new();
    // No HAProxy behind the socket path: /api/data reports why, without naming the path.
    let socket = site.root().join("haproxy.sock");
    let system = System::new();
    let app = system.block_on(crate::api_main::app(&socket, Duration::from_millis(200)));
    fuzz(&system, &app, false, &site_paths(&site));
}

#[test]
fn api_fallback_survives_arbitrary_requests() {
    let site = Site::new();
    let system = System::new();
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
    let app = system.block_on(actix_test::init_service(
        App::new().configure(|cfg| configure_api_fallback(cfg, &settings, &metrics)),
    ));
    fuzz(&system, &app, true, &site_paths(&site));
}
