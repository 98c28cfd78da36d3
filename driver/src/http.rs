//! A deliberately small HTTP/1.1 client over `std::net::TcpStream`.
//!
//! One connection per request (`Connection: close`), so no pooled connection can go stale
//! while servers are killed and restarted under it. The request target is sent verbatim,
//! which lets tests send `..`, backslashes or 100 KiB URLs; [`send_raw`] sends arbitrary bytes.
//! Bodies are returned as received: nothing is decompressed.

use std::borrow::Cow;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// How long a request may take unless [`Request::timeout`] says otherwise. Longer than
/// HAProxy's `timeout server` (10 s), so HAProxy's own 504 is what a test sees.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A parsed HTTP response.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked but otherwise as received (still gzip if `Content-Encoding: gzip`).
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The body parsed as JSON; panics with the response if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("the body is not JSON ({error}):\n{self}"))
    }

    /// One line for "last seen" messages: status, content type and the start of the body.
    pub fn summary(&self) -> String {
        let body = self.text();
        let mut excerpt: String = body.chars().take(120).collect();
        if excerpt.len() < body.len() {
            excerpt.push('…');
        }
        format!(
            "{} {} ({}, {} bytes): {excerpt:?}",
            self.status,
            self.reason,
            self.header("content-type").unwrap_or("no content-type"),
            self.body.len()
        )
    }
}

/// Status line, headers and up to 2,000 characters of body: what a failed assertion prints.
impl fmt::Display for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "HTTP/1.1 {} {}", self.status, self.reason)?;
        for (name, value) in &self.headers {
            writeln!(f, "{name}: {value}")?;
        }
        writeln!(f)?;
        let body = self.text();
        let excerpt: String = body.chars().take(2000).collect();
        write!(f, "{excerpt}")?;
        if excerpt.len() < body.len() {
            write!(f, "\n… ({} bytes in all)", self.body.len())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A request to send; build with [`Request::get`] or [`Request::new`], then [`Request::send`].
#[derive(Clone, Debug)]
pub struct Request {
    method: String,
    authority: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

impl Request {
    /// A `method` request for `url` (`http://host:port/target`; the target is sent verbatim).
    pub fn new(method: &str, url: &str) -> Request {
        let rest = url
            .strip_prefix("http://")
            .unwrap_or_else(|| panic!("only http:// URLs are supported, got {url:?}"));
        let (authority, target) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        Request {
            method: method.to_owned(),
            authority: authority.to_owned(),
            target: target.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A GET request for `url`.
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }

    /// Adds a header (a `Host` header given here replaces the default one).
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body (sent with `Content-Length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Limits connecting, and each read and write, to `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// The bytes this request puts on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"))
        {
            head.push_str(&format!("Host: {}\r\n", self.authority));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n");
        if !self.body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Sends the request on a new connection and reads the whole response.
    pub fn send(&self) -> io::Result<Response> {
        let addr = self
            .authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(ErrorKind::InvalidInput, "no address"))?;
        let exchange = send_raw(addr, &self.to_bytes(), self.timeout)?;
        let head_only = self.method.eq_ignore_ascii_case("HEAD");
        match parse_response(&exchange.received, head_only) {
            Ok(response) => Ok(response),
            Err(parse_error) => {
                Err(exchange
                    .read_error
                    .or(exchange.write_error)
                    .unwrap_or_else(|| {
                        io::Error::new(
                            ErrorKind::InvalidData,
                            format!(
                                "{parse_error}; received {} bytes: {:?}",
                                exchange.received.len(),
                                String::from_utf8_lossy(&exchange.received)
                            ),
                        )
                    }))
            }
        }
    }
}

/// `GET url`.
pub fn get(url: &str) -> io::Result<Response> {
    Request::get(url).send()
}

/// What happened on a connection used by [`send_raw`].
#[derive(Debug)]
pub struct Exchange {
    /// Everything the server sent before closing (or before the error).
    pub received: Vec<u8>,
    /// Set if writing the request failed, e.g. the server answered and closed early.
    pub write_error: Option<io::Error>,
    /// Set if reading failed (reset, timeout) rather than ending with a clean close.
    pub read_error: Option<io::Error>,
}

impl Exchange {
    /// The response, if the server sent a complete status line and headers.
    pub fn response(&self) -> Option<Response> {
        parse_response(&self.received, false).ok()
    }

    /// A description for failure messages.
    pub fn describe(&self) -> String {
        let shown: String = String::from_utf8_lossy(&self.received)
            .chars()
            .take(600)
            .collect();
        format!(
            "received {} bytes {shown:?}, write error: {:?}, read error: {:?}",
            self.received.len(),
            self.write_error,
            self.read_error
        )
    }
}

/// Connects to `addr`, writes `request` as is, and reads until the server closes the
/// connection (or `timeout` passes between two reads). Write and read failures are recorded,
/// not returned, because a server that rejects a request early may reset the connection;
/// only a failed connect is an `Err`.
pub fn send_raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<Exchange> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let write_error = stream
        .write_all(request)
        .and_then(|()| stream.flush())
        .err();
    let mut received = Vec::new();
    let mut chunk = [0_u8; 16 * 1024];
    let read_error = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => break Some(error),
        }
    };
    Ok(Exchange {
        received,
        write_error,
        read_error,
    })
}

/// Parses one response; `head_only` for answers to HEAD (no body whatever the headers say).
fn parse_response(bytes: &[u8], head_only: bool) -> Result<Response, String> {
    let end = find(bytes, b"\r\n\r\n").ok_or("the response has no complete header block")?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|_| "the header block is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let reason = parts.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut response = Response {
        status,
        reason,
        headers,
        body: Vec::new(),
    };
    let rest = &bytes[end + 4..];
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(response);
    }
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    response.body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad Content-Length {length:?}"))?;
        if rest.len() < length {
            return Err(format!(
                "the body is truncated: {} of {length} bytes",
                rest.len()
            ));
        }
        rest[..length].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(response)
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or("a chunk size line is incomplete")?;
        let size_field = std::str::from_utf8(&rest[..line_end]).map_err(|_| "bad chunk size")?;
        let size_hex = size_field.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("bad chunk size {size_field:?}"))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("a chunk is truncated".to_owned());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n\
                    3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
        let response = parse_response(raw, false).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-a"), Some("b"));
        assert_eq!(response.body, b"abcde");
    }

    #[test]
    fn honours_content_length_and_head() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(parse_response(raw, false).unwrap().body, b"ok");
        assert_eq!(
            parse_response(raw, false).unwrap().reason,
            "Service Unavailable"
        );
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        assert!(parse_response(head, true).unwrap().body.is_empty());
        assert!(parse_response(head, false).is_err());
    }

    #[test]
    fn sends_the_target_verbatim() {
        let request = Request::get("http://127.0.0.1:1/..\\a?x=1").header("Accept", "*/*");
        let bytes = String::from_utf8(request.to_bytes()).unwrap();
        assert!(bytes.starts_with("GET /..\\a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(bytes.ends_with("Accept: */*\r\nConnection: close\r\n\r\n"));
    }
}
