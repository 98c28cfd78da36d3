//! `cargo xtask redeploy` under load drops no request.
//!
//! Runs the real `xtask up` on a stack of its own (a temporary `--stack-dir`, a free port, a
//! stub www/), sends steady load through HAProxy with `xtask load --strict`, redeploys both
//! tiers several times meanwhile, and requires a clean load report: no failed request, no
//! 5xx, no maintenance answer. Every process it starts is stopped when it ends, pass or fail.

use std::{
    env, fs,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
/// How long the stack may take to come up (HAProxy's checks need two passes per server).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `up` may take to stop everything after SIGTERM before the guard kills it all.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Redeploys per tier.
const ROUNDS: usize = 3;

#[test]
fn redeploys_under_load_fail_no_request() {
    build_origin();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let stack = StackUnderTest::start(scratch.path());

    let mut load = LoadUnderTest::start(&stack, 500, &["/", "/api/data"]);
    let mut builds = Vec::new();
    for round in 1..=ROUNDS {
        for tier in ["api", "static"] {
            // The last round takes the default build id: the old id's base and the time.
            let build_id = (round < ROUNDS).then(|| format!("{tier}-{round}"));
            let mut args = vec!["redeploy", tier];
            if let Some(id) = &build_id {
                args.extend(["--build-id", id]);
            }
            let output = stack.xtask(&args);
            assert_success(&output, &stack);
            let serving = stack.build_of(tier);
            match &build_id {
                Some(id) => assert_eq!(&serving, id, "{tier} serves another build"),
                None => assert!(
                    !builds.contains(&serving),
                    "{tier} still serves an old build ({serving})"
                ),
            }
            builds.push(serving);
        }
    }
    let report = load.stop();
    println!("{report}");
    assert!(
        load.succeeded(),
        "the load saw failed requests, 5xx or maintenance answers across {ROUNDS} redeploys \
         of each tier:\n{report}\n--- up ---\n{}",
        stack.log()
    );
    let sent = report
        .lines()
        .find_map(|line| {
            line.split(" due, ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no request count in the load report:\n{report}"));
    assert!(sent >= 250, "the load sent only {sent} requests:\n{report}");

    // The supervisor kept the new process: a plain restart restarts it, same build.
    let api_build = stack.build_of("api");
    assert_success(&stack.xtask(&["restart", "api-main"]), &stack);
    stack.wait_for("api-main back after `restart`", || {
        stack.get("/api/healthz").is_some_and(|(status, body)| {
            status == 200 && body.contains(&format!("\"build\":\"{api_build}\""))
        })
    });
    assert_success(&stack.xtask(&["stop"]), &stack);
}

#[test]
fn redeploy_without_a_stack_says_so() {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let output = Command::new(XTASK)
        .arg("--stack-dir")
        .arg(scratch.path())
        .args(["redeploy", "api"])
        .output()
        .expect("xtask runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no stack is running"), "{stderr}");
}

/// `cargo build --release -p origin`, which `up --no-build` runs (a no-op when fresh).
fn build_origin() {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace())
        .args(["build", "--release", "-p", "origin"]);
    let output = command.output().expect("cargo runs");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn assert_success(output: &Output, stack: &StackUnderTest) {
    assert!(
        output.status.success(),
        "xtask failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- up ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        stack.log()
    );
}

/// `xtask up` on a stack of its own. Dropping it stops `up` (SIGTERM, then SIGKILL after a
/// bound) and kills whatever server its pid files still name.
struct StackUnderTest {
    up: Child,
    dir: PathBuf,
    site: String,
}

impl StackUnderTest {
    fn start(scratch: &Path) -> Self {
        let www = scratch.join("www");
        write_stub_www(&www);
        let dir = scratch.join("stack");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let site = format!("127.0.0.1:{port}");
        let log = fs::File::create(scratch.join("up.log")).expect("up's log");
        let up = Command::new(XTASK)
            .arg("--stack-dir")
            .arg(&dir)
            .args(["up", "--no-build", "--listen", &site, "--www"])
            .arg(&www)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("up's log"))
            .stderr(log)
            .spawn()
            .expect("xtask up starts");
        let mut stack = StackUnderTest { up, dir, site };
        stack.wait_for("the stack to serve /healthz and /api/healthz", || {
            stack
                .get("/healthz")
                .is_some_and(|(status, _)| status == 200)
                && stack
                    .get("/api/healthz")
                    .is_some_and(|(status, _)| status == 200)
        });
        if let Ok(Some(status)) = stack.up.try_wait() {
            panic!("xtask up exited ({status}):\n{}", stack.log());
        }
        stack
    }

    fn xtask(&self, args: &[&str]) -> Output {
        Command::new(XTASK)
            .arg("--stack-dir")
            .arg(&self.dir)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("xtask runs")
    }

    fn log(&self) -> String {
        let scratch = self
            .dir
            .parent()
            .expect("the stack dir is in the scratch dir");
        fs::read_to_string(scratch.join("up.log")).unwrap_or_default()
    }

    /// `GET path` through HAProxy: status and body, or None if nothing answered.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(&self.site).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        let status = answer.split(' ').nth(1)?.parse().ok()?;
        let body = answer.split_once("\r\n\r\n")?.1.to_owned();
        Some((status, body))
    }

    /// The build a tier's health check reports through HAProxy.
    fn build_of(&self, tier: &str) -> String {
        let path = if tier == "api" {
            "/api/healthz"
        } else {
            "/healthz"
        };
        let (status, body) = self
            .get(path)
            .unwrap_or_else(|| panic!("nothing answered GET {path}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        body.split("\"build\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no build in {body}"))
            .to_owned()
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        tests::wait_until(
            READY_TIMEOUT,
            what,
            || if done() { Ok(()) } else { Err("not yet") },
            || format!("--- up ---\n{}", self.log()),
        );
    }
}

impl Drop for StackUnderTest {
    fn drop(&mut self) {
        let up = Pid::from_raw(self.up.id() as i32);
        let _ = kill(up, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.up.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.up.kill();
        let _ = self.up.wait();
        // If `up` had to be killed, its servers (each its own process group) are still there.
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "pid") {
                let pid = fs::read_to_string(&path)
                    .ok()
                    .and_then(|pid| pid.trim().parse().ok());
                if let Some(pid) = pid.filter(|&pid| is_stack_process(pid)) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
}

/// Whether `pid` is one of the stack's programs (a pid file may name a recycled pid).
fn is_stack_process(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| matches!(comm.trim(), "origin" | "haproxy"))
}

/// What `up --www` needs: the dashboard, the maintenance page and the files HAProxy serves
/// itself (it refuses to start without them).
fn write_stub_www(www: &Path) {
    fs::create_dir_all(www.join("pkg")).expect("www/pkg");
    for (file, contents) in [
        (
            "index.html",
            "<!doctype html><title>Dashboard</title><p>dashboard",
        ),
        (
            "maintenance.html",
            "<!doctype html><title>Maintenance</title><p>maintenance",
        ),
        ("maintenance.css", "body { color: black }"),
        ("sw.js", "// stub"),
        ("pkg/client.js", "export default function init() {}"),
        ("pkg/client.js.gz", "stub"),
        ("pkg/client_bg.wasm", "stub"),
        ("pkg/client_bg.wasm.gz", "stub"),
    ] {
        fs::write(www.join(file), contents).expect("a www file");
    }
}

/// `xtask load --strict` in the background. Dropping it kills it.
struct LoadUnderTest {
    child: Child,
    output: mpsc::Receiver<String>,
    status: Option<std::process::ExitStatus>,
}

impl LoadUnderTest {
    fn start(stack: &StackUnderTest, rate: u32, paths: &[&str]) -> Self {
        let mut command = Command::new(XTASK);
        command
            .arg("--stack-dir")
            .arg(&stack.dir)
            .args([
                "load",
                "--strict",
                "--connections",
                "16",
                "--seconds",
                "300",
            ])
            .args(["--rate", &rate.to_string()]);
        for path in paths {
            command.args(["--path", path]);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("xtask load starts");
        let (lines_tx, output) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for stream in [Box::new(stdout) as Box<dyn Read + Send>, Box::new(stderr)] {
            let lines_tx = lines_tx.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = lines_tx.send(line);
                }
            });
        }
        let first = output
            .recv_timeout(READY_TIMEOUT)
            .unwrap_or_else(|_| panic!("xtask load printed nothing"));
        assert!(first.starts_with("load: "), "xtask load: {first}");
        LoadUnderTest {
            child,
            output,
            status: None,
        }
    }

    /// Ctrl-C: the load stops and prints its report. Returns everything it printed.
    fn stop(&mut self) -> String {
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.status.is_none() && Instant::now() < deadline {
            self.status = self.child.try_wait().ok().flatten();
            thread::sleep(Duration::from_millis(50));
        }
        assert!(self.status.is_some(), "xtask load did not stop on SIGINT");
        let mut printed = Vec::new();
        while let Ok(line) = self.output.recv_timeout(Duration::from_secs(1)) {
            printed.push(line);
        }
        printed.join("\n")
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}

impl Drop for LoadUnderTest {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
