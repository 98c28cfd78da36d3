//! Hostile and broken requests, through HAProxy and straight at static-main: each gets a clean
//! 4xx (or, for a request that cannot even be parsed, a closed connection), never a file from
//! outside www/ and never a 5xx, and the servers keep answering afterwards.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use driver::http::{send_raw, Exchange, Request};
use driver::{expect, Role, Stack};

/// Where a bad request is sent: through HAProxy, and directly to the origin that maps URLs to
/// files.
fn targets(stack: &Stack) -> [(&'static str, SocketAddr); 2] {
    [
        ("HAProxy", stack.addr()),
        ("static-main", stack.server(Role::StaticMain).addr()),
    ]
}

/// Sends `request` verbatim to every target and checks each refuses it cleanly; then checks
/// the stack still serves.
fn assert_refused_everywhere(stack: &Stack, what: &str, request: &[u8]) {
    for (name, addr) in targets(stack) {
        let exchange = send_raw(addr, request, Duration::from_secs(5))
            .unwrap_or_else(|error| panic!("{what} to {name}: cannot connect: {error}"));
        assert_refused(&exchange, &format!("{what} to {name}"));
    }
    assert_still_serving(stack, what);
}

/// A 4xx response, or a connection closed without any byte of response (a server may reset a
/// connection whose request it will not read); never a 2xx, 3xx or 5xx, never a hang.
fn assert_refused(exchange: &Exchange, what: &str) {
    match exchange.response() {
        Some(response) => assert!(
            (400..500).contains(&response.status),
            "{what}: expected a 4xx, got:\n{response}"
        ),
        None => {
            let hung = exchange.read_error.as_ref().is_some_and(|error| {
                matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
            });
            assert!(
                exchange.received.is_empty() && !hung,
                "{what}: expected a 4xx or a closed connection, got {}",
                exchange.describe()
            );
            eprintln!("{what}: connection closed without a response");
        }
    }
}

/// The stack still answers through HAProxy, and static-main directly.
fn assert_still_serving(stack: &Stack, after: &str) {
    let what = format!("after {after}");
    expect::health(&stack.get("/healthz"), 200, &format!("GET /healthz {what}"));
    expect::status(&stack.get("/"), 200, &format!("GET / {what}"));
    expect::health(
        &stack.get("/api/healthz"),
        200,
        &format!("GET /api/healthz {what}"),
    );
    let direct = driver::http::get(&stack.server(Role::StaticMain).url("/healthz"))
        .unwrap_or_else(|error| panic!("GET /healthz from static-main {what}: {error}"));
    expect::health(
        &direct,
        200,
        &format!("GET /healthz from static-main {what}"),
    );
}

#[test]
fn path_traversal_never_leaves_www() {
    let stack = Stack::start();
    let paths = [
        "/../Cargo.toml",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2e%2e/Cargo.toml",
        "/..%2f..%2fetc/passwd",
        "/..%2fCargo.toml",
        "/..\\..\\etc\\passwd",
        "/..%5c..%5cetc%5cpasswd",
        "/pkg/../../Cargo.toml",
        "/assets/%2e%2e/%2e%2e/Cargo.toml",
        "/%00/etc/passwd",
    ];
    for path in paths {
        for (name, addr) in targets(&stack) {
            let what = format!("GET {path} to {name}");
            let request = Request::get(&format!("http://{addr}{path}")).to_bytes();
            let exchange = send_raw(addr, &request, Duration::from_secs(5))
                .unwrap_or_else(|error| panic!("{what}: cannot connect: {error}"));
            assert_refused(&exchange, &what);
            let text = String::from_utf8_lossy(&exchange.received);
            assert!(
                !text.contains("[workspace]") && !text.contains("root:x:0:0"),
                "{what}: served a file from outside www/:\n{text}"
            );
        }
    }
    assert_still_serving(&stack, "path traversal attempts");
}

#[test]
fn an_oversized_header_is_refused() {
    let stack = Stack::start();
    // Each server's own limit, exceeded: HAProxy holds a request head in one 16 KiB buffer;
    // actix-web (static-main) accepts heads up to a fixed 128 KiB and answers 431 beyond.
    let haproxy = ("HAProxy", stack.addr(), 64 * 1024);
    let static_main = (
        "static-main",
        stack.server(Role::StaticMain).addr(),
        256 * 1024,
    );
    for (name, addr, size) in [haproxy, static_main] {
        let request = Request::get(&format!("http://{addr}/"))
            .header("X-Oversized", &"a".repeat(size))
            .to_bytes();
        let exchange = send_raw(addr, &request, Duration::from_secs(5)).unwrap();
        assert_refused(
            &exchange,
            &format!("a {} KiB header to {name}", size / 1024),
        );
    }
    assert_still_serving(&stack, "an oversized header");
}

#[test]
fn a_very_long_url_is_refused() {
    let stack = Stack::start();
    let path = format!("/{}", "a".repeat(100 * 1024));
    for (name, addr) in targets(&stack) {
        let request = Request::get(&format!("http://{addr}{path}")).to_bytes();
        let exchange = send_raw(addr, &request, Duration::from_secs(5)).unwrap();
        assert_refused(&exchange, &format!("a 100 KiB URL to {name}"));
    }
    assert_still_serving(&stack, "a 100 KiB URL");
}

#[test]
fn an_unknown_method_is_refused() {
    let stack = Stack::start();
    assert_refused_everywhere(
        &stack,
        "BREW / HTTP/1.1",
        b"BREW / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_refused_everywhere(
        &stack,
        "BREW /healthz HTTP/1.1",
        b"BREW /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
}

#[test]
fn a_malformed_request_line_is_refused() {
    let stack = Stack::start();
    assert_refused_everywhere(&stack, "GARBAGE", b"GARBAGE\r\n\r\n");
    assert_refused_everywhere(&stack, "a request line without a version", b"GET /\r\n\r\n");
    assert_refused_everywhere(
        &stack,
        "binary junk",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    );
}

/// What HAProxy must answer to one malformed or smuggling-shaped request.
struct Case {
    what: &'static str,
    request: Vec<u8>,
    status: u16,
}

fn case(what: &'static str, request: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        what,
        request: request.into(),
        status,
    }
}

/// The malformed requests of issue 16 and their answers through HAProxy, origins up.
/// 400s come from HAProxy's own parser (with its fixed built-in page, see haproxy.cfg),
/// the rest from the rules or the origins.
fn malformed_requests() -> Vec<Case> {
    let many_headers: String = (0..300).map(|i| format!("X-H{i}: y\r\n")).collect();
    vec![
        case(
            "an empty header name",
            "GET / HTTP/1.1\r\nHost: a\r\n: x\r\nConnection: close\r\n\r\n",
            400,
        ),
        case(
            "an empty Content-Length",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\nConnection: close\r\n\r\n",
            400,
        ),
        // HAProxy drops Content-Length and reads the chunked body (RFC 9112 6.3); static-main
        // then refuses the POST.
        case(
            "Content-Length with Transfer-Encoding",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n0\r\n\r\n",
            405,
        ),
        case(
            "`#` in the path",
            "GET /index.html#x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            400,
        ),
        case(
            "a NUL byte in the path",
            "GET /\0 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            400,
        ),
        case(
            "a NUL byte in a header value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\nConnection: close\r\n\r\n",
            400,
        ),
        case("an HTTP/0.9 request", "GET /\r\n\r\n", 400),
        case(
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
            400,
        ),
        case(
            "a 100 KiB URL",
            format!(
                "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                "a".repeat(100 * 1024)
            ),
            400,
        ),
        case(
            "300 headers",
            format!("GET / HTTP/1.1\r\nHost: a\r\n{many_headers}Connection: close\r\n\r\n"),
            400,
        ),
        case(
            "a chunk size that is not hex",
            "POST /api/data HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\nzz\r\n\r\n",
            400,
        ),
        case(
            "an overflowing chunk size",
            "POST /api/data HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\nfffffffffffffffffff\r\nx\r\n0\r\n\r\n",
            400,
        ),
        // RFC 9112 5.2 lets a proxy unfold obs-fold instead of refusing it: HAProxy does, and
        // the request is served.
        case(
            "an obs-fold header",
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\nConnection: close\r\n\r\n",
            200,
        ),
        // `option http-restrict-req-hdr-names reject`.
        case(
            "an underscore in a header name",
            "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 1.2.3.4\r\nConnection: close\r\n\r\n",
            403,
        ),
        // /metrics stays private however it is spelled: HAProxy's rule (404) or static-main's
        // refusal of `..` (400) or its 404 for a file that does not exist.
        case(
            "/metrics through dot segments",
            "GET /assets/../metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            400,
        ),
        case(
            "/metrics through %2f",
            "GET /assets%2f..%2fmetrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            400,
        ),
        case(
            "/metrics percent-encoded",
            "GET /%6detrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            404,
        ),
        case(
            "/metrics as an absolute URI",
            "GET http://a/metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            404,
        ),
        case(
            "/api/metrics as an absolute URI",
            "GET http://a//api//metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            404,
        ),
        case(
            "/metrics with a semicolon",
            "GET /metrics;x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            404,
        ),
    ]
}

#[test]
fn a_table_of_malformed_requests_gets_the_designed_answers() {
    let stack = Stack::start();
    let mut wrong = Vec::new();
    for Case {
        what,
        request,
        status,
    } in malformed_requests()
    {
        let exchange = send_raw(stack.addr(), &request, Duration::from_secs(5))
            .unwrap_or_else(|error| panic!("{what}: cannot connect to HAProxy: {error}"));
        let text = String::from_utf8_lossy(&exchange.received);
        match exchange.response() {
            Some(response) if response.status == status => {
                if status != 200 {
                    assert!(
                        !text.contains("# HELP") && !text.contains("# TYPE"),
                        "{what}: the answer carries Prometheus metrics:\n{text}"
                    );
                    // Error answers say what went wrong, not what runs here.
                    let lower = text.to_ascii_lowercase();
                    for word in ["haproxy", "actix", "version", "/work", "/tmp"] {
                        assert!(
                            !lower.contains(word),
                            "{what}: the error answer names {word:?}:\n{text}"
                        );
                    }
                }
            }
            Some(response) => wrong.push(format!("{what}: expected {status}, got:\n{response}")),
            None => wrong.push(format!(
                "{what}: expected {status}, got {}",
                exchange.describe()
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    assert_still_serving(&stack, "the malformed-request table");
}
