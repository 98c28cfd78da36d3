//! Assertions shared by the suites; each failure prints the request and the whole response.

use crate::http::Response;
use crate::stack::Stack;

/// Asserts `status`, printing `what` (e.g. "GET /healthz with api-main down") and the response.
#[track_caller]
pub fn status(response: &Response, expected: u16, what: &str) {
    assert_eq!(
        response.status, expected,
        "{what}: expected status {expected}, got:\n{response}"
    );
}

/// Asserts `Cache-Control: no-store`.
#[track_caller]
pub fn no_store(response: &Response, what: &str) {
    assert_eq!(
        response.header("cache-control"),
        Some("no-store"),
        "{what}: expected Cache-Control: no-store, got:\n{response}"
    );
}

/// Asserts a header's exact value.
#[track_caller]
pub fn header(response: &Response, name: &str, expected: &str, what: &str) {
    assert_eq!(
        response.header(name),
        Some(expected),
        "{what}: expected {name}: {expected}, got:\n{response}"
    );
}

/// Asserts the maintenance page answered at this URL: 503, the bytes of the stack's
/// `maintenance.html`, HTML, `Cache-Control: no-store` and a `Retry-After`.
#[track_caller]
pub fn maintenance_page(stack: &Stack, response: &Response, what: &str) {
    status(response, 503, what);
    header(response, "content-type", "text/html; charset=utf-8", what);
    no_store(response, what);
    assert!(
        response.header("retry-after").is_some(),
        "{what}: the maintenance answer has no Retry-After:\n{response}"
    );
    assert!(
        response.body == stack.www_file("maintenance.html"),
        "{what}: the body is not www/maintenance.html:\n{response}"
    );
}

/// Asserts the API's maintenance answer: 503 JSON `{"status":"maintenance"}` (as the API
/// fallback or HAProxy itself sends it), `no-store`, `Retry-After`.
#[track_caller]
pub fn api_maintenance(response: &Response, what: &str) {
    status(response, 503, what);
    no_store(response, what);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{what}: expected JSON, got:\n{response}"
    );
    assert!(
        response.header("retry-after").is_some(),
        "{what}: no Retry-After:\n{response}"
    );
    assert_eq!(
        response.json()["status"],
        "maintenance",
        "{what}: expected {{\"status\":\"maintenance\"}}, got:\n{response}"
    );
}

/// Asserts a health endpoint's answer: `status` and, in the JSON body, `"status"` equal to
/// `"ok"` for 200 or `"maintenance"` otherwise.
#[track_caller]
pub fn health(response: &Response, expected: u16, what: &str) {
    status(response, expected, what);
    no_store(response, what);
    let json = response.json();
    let word = if expected == 200 { "ok" } else { "maintenance" };
    assert_eq!(json["status"], word, "{what}: unexpected body:\n{response}");
}

/// Asserts HAProxy's own copy of a client asset: 200, `content_type`, `no-store`, and the
/// bytes of `www/<file>`; gzip-encoded when `file` ends in `.gz`.
#[track_caller]
pub fn served_asset(
    stack: &Stack,
    response: &Response,
    file: &str,
    content_type: &str,
    what: &str,
) {
    status(response, 200, what);
    header(response, "content-type", content_type, what);
    no_store(response, what);
    if file.ends_with(".gz") {
        header(response, "content-encoding", "gzip", what);
    } else {
        assert_eq!(
            response.header("content-encoding"),
            None,
            "{what}: expected no Content-Encoding:\n{response}"
        );
    }
    header(response, "vary", "Accept-Encoding", what);
    assert!(
        response.body == stack.www_file(file),
        "{what}: the body ({} bytes) is not www/{file}:\n{}",
        response.body.len(),
        response.summary()
    );
}
