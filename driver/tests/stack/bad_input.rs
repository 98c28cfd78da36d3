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
