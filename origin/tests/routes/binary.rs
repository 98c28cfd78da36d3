//! The real `origin` binary: reports its address, serves, stops cleanly on SIGTERM (finishing
//! in-flight requests), and explains start-up failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

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

/// One HTTP/1.1 request over a fresh connection; returns the status code and the whole answer.
fn http(addr: &str, request_line: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|err| panic!("connect to {addr}: {err}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        stream,
        "{request_line} HTTP/1.1\r\nHost: origin.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .unwrap_or_else(|err| panic!("read the answer to {request_line}: {err}"));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in the answer to {request_line}: {answer:?}"));
    (status, answer)
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

    let (status, answer) = http(&origin.addr, "GET /");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.ends_with(INDEX_HTML), "{answer}");
    let (status, answer) = http(&origin.addr, "GET /healthz");
    assert_eq!(status, 200);
    assert!(answer.contains(r#""build":"bin-test""#), "{answer}");

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
    let (status, answer) = http(&origin.addr, "HEAD /");
    assert_eq!(status, 200, "{answer}");
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
        let (status, answer) = http(&origin.addr, target);
        assert!((400..500).contains(&status), "{target}: {answer}");
        assert!(
            !answer.contains(SECRET),
            "{target} leaked the secret: {answer}"
        );
    }
    let (status, _) = http(&origin.addr, "BREW /");
    assert!((400..500).contains(&status), "BREW / answered {status}");
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
    let addr = origin.addr.clone();
    let request = thread::spawn(move || http(&addr, "GET /api/data"));
    accepted_rx
        .recv_timeout(START_DEADLINE)
        .unwrap_or_else(|_| {
            panic!(
                "/api/data never reached the stats socket; {}",
                origin.report()
            )
        });

    origin.terminate();
    let (status, answer) = request.join().expect("the request thread panicked");
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains(r#""reachable":false"#), "{answer}");
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
