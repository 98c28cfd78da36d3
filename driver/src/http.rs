//! The workspace's one HTTP client: hyper's HTTP/1.1 client connection
//! (`hyper::client::conn::http1`), behind a blocking [`Request::send`] for tests and tools.
//!
//! [`Request::send`] opens a connection per request (`Connection: close`), so no pooled
//! connection can go stale while servers are killed and restarted under it; its timeout covers
//! the whole exchange. A [`Connection`] carries several requests in turn (the load generator's
//! keep-alive). The request target is sent verbatim (`..`, backslashes); one that hyper cannot
//! carry (over 64 KiB, control bytes) is an error that says to use [`send_raw`], the raw-socket
//! sender kept for malformed and cut requests. Bodies are returned as received: nothing is
//! decompressed.

use std::borrow::Cow;
use std::error::Error as _;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

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
    /// Header fields, names in lower case, each name's values together (hyper's `HeaderMap`).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked but otherwise as received (still gzip if `Content-Encoding: gzip`).
    pub body: Vec<u8>,
}

impl Response {
    fn from_hyper(head: hyper::http::response::Parts, body: Bytes) -> Response {
        let reason = match head.extensions.get::<hyper::ext::ReasonPhrase>() {
            Some(reason) => String::from_utf8_lossy(reason.as_bytes()).into_owned(),
            None => head
                .status
                .canonical_reason()
                .unwrap_or_default()
                .to_owned(),
        };
        let headers = head
            .headers
            .iter()
            .map(|(name, value)| {
                let value = String::from_utf8_lossy(value.as_bytes());
                (name.as_str().to_owned(), value.into_owned())
            })
            .collect();
        Response {
            status: head.status.as_u16(),
            reason,
            headers,
            body: body.to_vec(),
        }
    }

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

    /// Limits [`Request::send`], from connecting to the last byte of the answer, to `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// The bytes this request puts on the wire, with `Connection: close`: a start for
    /// [`send_raw`] when a test needs what hyper will not send.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if !self.has_host() {
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
        let request = self.clone().header("Connection", "close").to_hyper()?;
        runtime()?.block_on(async {
            let exchange = async { Connection::open(addr).await?.exchange(request).await };
            tokio::time::timeout(self.timeout, exchange)
                .await
                .unwrap_or_else(|_| {
                    let message = format!("no complete answer within {:?}", self.timeout);
                    Err(io::Error::new(ErrorKind::TimedOut, message))
                })
        })
    }

    fn has_host(&self) -> bool {
        self.headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    }

    fn to_hyper(&self) -> io::Result<hyper::Request<Full<Bytes>>> {
        let mut request = hyper::Request::builder()
            .method(self.method.as_str())
            .uri(self.target.as_str());
        if !self.has_host() {
            request = request.header("host", &self.authority);
        }
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        request
            .body(Full::new(Bytes::from(self.body.clone())))
            .map_err(|error| {
                let target: String = self.target.chars().take(80).collect();
                let message = format!(
                    "hyper cannot send `{} {target}` ({error}); send it with driver::http::send_raw",
                    self.method
                );
                io::Error::new(ErrorKind::InvalidInput, message)
            })
    }
}

/// `GET url`.
pub fn get(url: &str) -> io::Result<Response> {
    Request::get(url).send()
}

/// A single-threaded Tokio runtime for one blocking call.
fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// An HTTP/1.1 connection that carries requests one after another (keep-alive). Use it inside
/// a Tokio runtime; bound each [`Connection::send`] with `tokio::time::timeout`.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Connects to `addr` (with `TCP_NODELAY`); a failure reads "connect: …".
    pub async fn open(addr: SocketAddr) -> io::Result<Connection> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|error| io::Error::new(error.kind(), format!("connect: {error}")))?;
        stream.set_nodelay(true)?;
        Connection::over(stream).await
    }

    async fn over(io: impl AsyncRead + AsyncWrite + Send + Unpin + 'static) -> io::Result<Self> {
        let (sender, connection) = http1::handshake(TokioIo::new(io)).await.map_err(io_error)?;
        // Its errors reach the caller through the request in flight.
        tokio::spawn(connection);
        Ok(Connection { sender })
    }

    /// Sends `request` (its timeout is not applied here) and reads the whole answer. An error
    /// of kind `UnexpectedEof`, `ConnectionReset` or `BrokenPipe` means no answer came before
    /// the connection closed (such as a kept-alive one the server had already closed); one
    /// while reading the body is of kind `Other`.
    pub async fn send(&mut self, request: &Request) -> io::Result<Response> {
        self.exchange(request.to_hyper()?).await
    }

    async fn exchange(&mut self, request: hyper::Request<Full<Bytes>>) -> io::Result<Response> {
        self.sender.ready().await.map_err(io_error)?;
        let (head, body) = self
            .sender
            .send_request(request)
            .await
            .map_err(io_error)?
            .into_parts();
        let body = body
            .collect()
            .await
            .map_err(|error| io::Error::other(format!("reading the body: {}", io_error(error))))?;
        Ok(Response::from_hyper(head, body.to_bytes()))
    }
}

/// hyper's error as an `io::Error` whose kind says what happened to the connection.
fn io_error(error: hyper::Error) -> io::Error {
    let cause = error.source();
    let kind = match cause.and_then(|cause| cause.downcast_ref::<io::Error>()) {
        Some(cause) => cause.kind(),
        None if error.is_incomplete_message() || error.is_canceled() || error.is_closed() => {
            ErrorKind::UnexpectedEof
        }
        None => ErrorKind::InvalidData,
    };
    let message = match cause {
        Some(cause) => format!("{error}: {cause}"),
        None => error.to_string(),
    };
    io::Error::new(kind, message)
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
    /// The response, if the server sent a complete one (read by hyper).
    pub fn response(&self) -> Option<Response> {
        answer_from(&Request::get("http://raw/"), &self.received).ok()
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

/// hyper's reading of `received` as the answer to `request`, replayed over an in-memory pipe.
fn answer_from(request: &Request, received: &[u8]) -> io::Result<Response> {
    let (client, mut server) = tokio::io::duplex(64 * 1024);
    runtime()?.block_on(async {
        let mut connection = Connection::over(client).await?;
        let replay = async {
            // Only once the request is in, as a server would: hyper refuses an answer before it.
            let mut seen = Vec::new();
            while !seen.ends_with(b"\r\n\r\n") {
                let mut chunk = [0; 1024];
                match server.read(&mut chunk).await? {
                    0 => break,
                    n => seen.extend_from_slice(&chunk[..n]),
                }
            }
            server.write_all(received).await?;
            server.shutdown().await
        };
        let (answer, _replayed): (_, io::Result<()>) =
            tokio::join!(connection.send(request), replay);
        answer
    })
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

#[cfg(test)]
mod unit {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    #[test]
    fn reads_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n\
                    3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n";
        let response = answer_from(&Request::get("http://raw/"), raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.header("x-a"), Some("b"));
        assert_eq!(response.body, b"abcde");
    }

    #[test]
    fn honours_content_length_and_head() {
        let raw = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nok";
        let response = answer_from(&Request::get("http://raw/"), raw).unwrap();
        assert_eq!(
            (response.reason.as_str(), &response.body[..]),
            ("Service Unavailable", &b"ok"[..])
        );
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let answer = answer_from(&Request::new("HEAD", "http://raw/"), head).unwrap();
        assert!(answer.body.is_empty());
        let cut = answer_from(&Request::get("http://raw/"), head).unwrap_err();
        assert_eq!(cut.kind(), ErrorKind::Other, "{cut}");
        assert!(cut.to_string().starts_with("reading the body: "), "{cut}");
    }

    /// The first request a one-shot server on loopback receives, after it answered 204.
    fn first_request_seen(send: impl FnOnce(SocketAddr)) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            while !seen.ends_with(b"\r\n\r\n") {
                let mut byte = [0];
                stream.read_exact(&mut byte).unwrap();
                seen.push(byte[0]);
            }
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        send(addr);
        server.join().unwrap()
    }

    #[test]
    fn sends_the_target_verbatim_on_a_closed_connection() {
        let seen = first_request_seen(|addr| {
            let url = format!("http://{addr}/..\\a/../b?x=1");
            let response = Request::get(&url).header("Accept", "*/*").send().unwrap();
            assert_eq!(response.status, 204);
        });
        assert!(
            seen.starts_with("GET /..\\a/../b?x=1 HTTP/1.1\r\n"),
            "{seen}"
        );
        let seen = seen.to_ascii_lowercase();
        assert!(seen.contains("\r\naccept: */*\r\n"), "{seen}");
        assert!(seen.contains("\r\nconnection: close\r\n"), "{seen}");
    }

    #[test]
    fn a_target_hyper_cannot_send_goes_through_send_raw() {
        let request = Request::get(&format!("http://127.0.0.1:1/{}", "a".repeat(100 * 1024)));
        let error = request.send().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        assert!(error.to_string().contains("send_raw"), "{error}");
        let seen = first_request_seen(|addr| {
            send_raw(addr, &request.to_bytes(), Duration::from_secs(5)).unwrap();
        });
        assert!(seen.starts_with(&format!("GET /{} HTTP/1.1\r\n", "a".repeat(100 * 1024))));
    }

    #[test]
    fn the_timeout_covers_the_whole_exchange() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        // Accepted by the kernel, never answered.
        let error = Request::get(&url)
            .timeout(Duration::from_millis(200))
            .send()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        drop(listener);
    }
}
