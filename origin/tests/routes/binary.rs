//! The real `origin` binary: reports its address, serves, stops cleanly on SIGTERM (finishing
//! in-flight requests), and explains start-up failures.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use driver::http::{self, Response};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::support::{Site, INDEX_HTML, SECRET};

/// Generous: the first start may share two cores with other builds.
const START_DEADLINE: Duration = Duration::from_secs(20);
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// A running `origin`; killed and reaped on drop, whatever the test's outcome.
struct Origin {
    child: Child,
    addr: String,
    args: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Origin {
    /// Starts `origin <args>` and waits for the address on its first stdout line.
    fn start(args: &[&str]) -> Origin {
        let args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
        let mut child = Command::new(env!("CARGO_BIN_EXE_origin"))
            .args(&args)
            .env_remove("LISTEN_FDS")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start origin {args:?}: {err}"));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut child_stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n @ 1..) = child_stderr.read(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut origin = Origin {
            child,
            addr: String::new(),
            args,
            stderr,
        };
        match rx.recv_timeout(START_DEADLINE) {
            Ok(line) if !line.trim().is_empty() => origin.addr = line.trim().to_owned(),
            Ok(_) => panic!(
                "origin closed stdout without printing its address:\n{}",
                origin.report()
            ),
            Err(_) => panic!(
                "origin printed no address within {START_DEADLINE:?}:\n{}",
                origin.report()
            ),
        }
        origin
    }

    fn report(&mut self) -> String {
        let status = self.child.try_wait().ok().flatten();
        format!(
            "command: origin {}\nstatus: {status:?}\nstderr:\n{}",
            self.args.join(" "),
            self.stderr.lock().unwrap()
        )
    }

    fn terminate(&self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Waits for the process to exit, polling against a deadline.
    fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return status;
            }
            if start.elapsed() > deadline {
                panic!(
                    "origin still runs {deadline:?} after SIGTERM:\n{}",
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Origin {
    /// `GET path` through the workspace's HTTP client.
    fn get(&self, path: &str) -> Response {
        http::get(&format!("http://{}{path}", self.addr))
            .unwrap_or_else(|err| panic!("GET {path} from {}: {err}", self.addr))
    }

    /// `request_line` sent as is (the point of the tests that use it), with the answer's
    /// status and its bytes as text.
    fn send_raw(&self, request_line: &str) -> (Option<u16>, String) {
        let request =
            format!("{request_line} HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n");
        let addr = self.addr.parse().expect("origin printed a socket address");
        let exchange = http::send_raw(addr, request.as_bytes(), Duration::from_secs(15))
            .unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
        let status = exchange.response().map(|response| response.status);
        (
            status,
            String::from_utf8_lossy(&exchange.received).into_owned(),
        )
    }
}

fn www_arg(site: &Site) -> String {
    site.www().display().to_string()
}

#[test]
fn serves_then_exits_zero_on_sigterm() {
    let site = Site::new();
    let www = www_arg(&site);
    let mut origin = Origin::start(&[
        "static-main",
        "--listen",
        "127.0.0.1:0",
        "--www",
        &www,
        "--build-id",
        "bin-test",
    ]);
    assert!(
        origin.addr.starts_with("127.0.0.1:"),
        "first line: {:?}",
        origin.addr
    );

    let index = origin.get("/");
    assert_eq!(
        (index.status, index.text().as_ref()),
        (200, INDEX_HTML),
        "{index}"
    );
    let health = origin.get("/healthz");
    assert_eq!(health.status, 200, "{health}");
    assert!(health.text().contains(r#""build":"bin-test""#), "{health}");

    origin.terminate();
    let status = origin.wait(STOP_DEADLINE);
    assert!(
        status.success(),
        "exit status {status}; {}",
        origin.report()
    );
    let logs = origin.stderr.lock().unwrap().clone();
    // HAProxy's httplog is the access log: at the default level an origin logs no requests.
    assert!(
        !logs.contains("path=\"/healthz\""),
        "a request was logged at the default level:\n{logs}"
    );
    assert!(
        logs.contains("build=\"bin-test\""),
        "no build id in the logs:\n{logs}"
    );
}

#[test]
fn head_sends_the_headers_of_get_and_no_body() {
    let site = Site::new();
    let www = www_arg(&site);
    let mut origin = Origin::start(&["static-main", "--www", &www]);
    // Raw, to see the bytes on the wire: a client reads no body after HEAD whatever comes.
    let (_, answer) = origin.send_raw("HEAD /");
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains(&format!("content-length: {}\r\n", INDEX_HTML.len())),
        "{answer}"
    );
    assert!(
        answer.ends_with("\r\n\r\n"),
        "HEAD answered a body: {answer:?}"
    );

    origin.terminate();
    origin.wait(STOP_DEADLINE);
    let logs = origin.stderr.lock().unwrap().clone();
    assert!(
        logs.contains("loaded the www directory into memory")
            && logs.contains("files=5")
            && logs.contains("bytes="),
        "no start-up line about the loaded files in:\n{logs}"
    );
}

#[test]
fn raw_traversal_requests_never_escape_www() {
    let site = Site::new();
    let www = www_arg(&site);
    let origin = Origin::start(&["static-main", "--www", &www]);
    for target in [
        "GET /../secret.txt",
        "GET /pkg/../../secret.txt",
        "GET /%2e%2e/secret.txt",
        "GET /..%2fsecret.txt",
        "GET /..\\secret.txt",
        "GET /%5c..%5csecret.txt",
        "GET ../secret.txt",
    ] {
        let (status, answer) = origin.send_raw(target);
        assert!(
            status.is_some_and(|s| (400..500).contains(&s)),
            "{target}: {answer}"
        );
        assert!(
            !answer.contains(SECRET),
            "{target} leaked the secret: {answer}"
        );
    }
    let (status, answer) = origin.send_raw("BREW /");
    assert!(
        status.is_some_and(|s| (400..500).contains(&s)),
        "BREW /: {answer}"
    );
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stuck.sock");
    // A stats socket that accepts and never answers keeps /api/data busy for its 500 ms limit.
    let stuck = UnixListener::bind(&socket).unwrap();
    let (accepted_tx, accepted_rx) = mpsc::channel();
    thread::spawn(move || {
        if let Ok((mut conn, _)) = stuck.accept() {
            let _ = accepted_tx.send(());
            let _ = conn.read(&mut [0; 64]);
            let _ = conn.read(&mut [0; 64]);
        }
    });

    let socket_arg = socket.display().to_string();
    let mut origin = Origin::start(&["api-main", "--haproxy-socket", &socket_arg]);
    let url = format!("http://{}/api/data", origin.addr);
    let request = thread::spawn(move || http::get(&url));
    accepted_rx
        .recv_timeout(START_DEADLINE)
        .unwrap_or_else(|_| {
            panic!(
                "/api/data never reached the stats socket; {}",
                origin.report()
            )
        });

    origin.terminate();
    let answer = request.join().expect("the request thread panicked");
    let answer = answer.unwrap_or_else(|err| panic!("GET /api/data during SIGTERM: {err}"));
    assert_eq!(answer.status, 200, "{answer}");
    assert!(answer.text().contains(r#""reachable":false"#), "{answer}");
    let exit = origin.wait(STOP_DEADLINE);
    assert!(exit.success(), "exit status {exit}; {}", origin.report());
}

#[test]
fn an_address_in_use_is_explained() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(["api-fallback", "--listen", &addr])
        .env_remove("LISTEN_FDS")
        .output()
        .expect("run origin");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "origin started on a taken address: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: the address is already in use"
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn a_missing_www_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-www");
    let output = Command::new(env!("CARGO_BIN_EXE_origin"))
        .args(["static-main", "--www"])
        .arg(&missing)
        .env_remove("LISTEN_FDS")
        .output()
        .expect("run origin");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(
        Path::new(&missing)
            .to_str()
            .is_some_and(|m| stderr.contains(m)),
        "{stderr}"
    );
}
