//! `cargo xtask redeploy` and `cargo xtask restart` under load drop no request, on loopback
//! and across hosts.
//!
//! Runs the real `xtask up` on a stack of its own (a temporary `--stack-dir`, a free port or
//! `--hosts`, a stub www/), sends steady load through HAProxy (across hosts: through the VIP)
//! with `xtask load --strict`, redeploys and restarts meanwhile, and requires a clean load
//! report: no failed request, no 5xx, no maintenance answer. Every process, namespace and
//! link it starts is removed when it ends, pass or fail. The hosts test needs root, like the
//! driver's hosts suite, and fails saying so without it.

use std::{
    env, fs, io,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use driver::{http::Request, ProcessSpec, ServerProcess, Signal};

const XTASK: &str = env!("CARGO_BIN_EXE_xtask");
/// How long the stack may take to come up (HAProxy's checks need two passes per server).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `up` may take to stop everything after SIGTERM before the guard kills it all.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Redeploys per tier.
const ROUNDS: usize = 3;

#[test]
fn redeploys_under_load_fail_no_request() {
    let _turn = build_origin();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let stack = StackUnderTest::start(scratch.path(), Where::Loopback);

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
    let (report, printed) = load.stop();
    println!("{printed}");
    assert!(
        load.succeeded() && report["clean"] == true,
        "the load saw failed requests, 5xx or maintenance answers across {ROUNDS} redeploys \
         of each tier:\n{printed}\n--- up ---\n{}",
        stack.log()
    );
    let sent = report["sent"]
        .as_u64()
        .unwrap_or_else(|| panic!("no request count in the load report:\n{printed}"));
    assert!(
        sent >= 250,
        "the load sent only {sent} requests:\n{printed}"
    );

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

/// `cargo xtask restart <origin>` hands the held socket to the new process: under load, no
/// request fails, none is answered with the maintenance page, and HAProxy sees no refused
/// connection, no failed check and no down-marking of either main server.
#[test]
fn restarts_under_load_refuse_nothing() {
    let _turn = build_origin();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let stack = StackUnderTest::start(scratch.path(), Where::Loopback);

    let mut load = LoadUnderTest::start(&stack, 500, &["/", "/api/data"]);
    for _ in 0..ROUNDS {
        for role in ["api-main", "static-main"] {
            let before = stack.pid_of(role);
            assert_success(&stack.xtask(&["restart", role]), &stack);
            let after = stack.pid_of(role);
            assert_ne!(
                before, after,
                "`restart {role}` left the same process serving"
            );
        }
    }
    let (report, printed) = load.stop();
    println!("{printed}");
    assert!(
        load.succeeded() && report["clean"] == true,
        "the load saw failed requests, 5xx or maintenance answers across {ROUNDS} restarts \
         of each main origin:\n{printed}\n--- up ---\n{}",
        stack.log()
    );
    let api = driver::RuntimeApi::new(stack.dir.join("haproxy.sock"));
    let stats = api
        .server_stats()
        .unwrap_or_else(|err| panic!("HAProxy's runtime API: {err}\n{}", stack.log()));
    for role in [driver::Role::ApiMain, driver::Role::StaticMain] {
        let row = stats
            .iter()
            .find(|row| row.server == role.name())
            .unwrap_or_else(|| panic!("no `show stat` row for {role}"));
        // Retries (`wretr`) are not counted against the restart: the old process closes its
        // idle keep-alive connections at SIGTERM, and HAProxy retries a GET that it had just
        // put on one of them (`retry-on empty-response`); the client never sees it.
        println!(
            "{role}: {} retried on a closed keep-alive connection",
            row.count("wretr")
        );
        for (field, meaning) in [
            ("econ", "refused or failed connections"),
            ("chkfail", "failed health checks"),
            ("chkdown", "times marked down"),
        ] {
            assert_eq!(
                row.count(field),
                0,
                "HAProxy counted {meaning} ({field}) on {role} across {ROUNDS} restarts: {row:?}"
            );
        }
    }
    assert_success(&stack.xtask(&["stop"]), &stack);
}

/// Across hosts (`up --hosts`): every redeploy switches both load balancers, the new process
/// runs on the origin's host on its other port, and a restart takes over the socket held on
/// the origin's host; under load through the VIP nothing fails, and neither HAProxy sees a
/// refused connection or marks a main server down.
#[test]
fn across_hosts_redeploys_and_restarts_fail_no_request() {
    let _turn = build_origin();
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let stack = StackUnderTest::start(scratch.path(), Where::Hosts);

    let mut load = LoadUnderTest::start(&stack, 300, &["/", "/api/data"]);
    // Twice per tier: from the origin's first port to its second and back.
    for round in 1..=2 {
        for tier in ["api", "static"] {
            let id = format!("{tier}-hosts-{round}");
            assert_success(&stack.xtask(&["redeploy", tier, "--build-id", &id]), &stack);
            assert_eq!(stack.build_of(tier), id, "{tier} serves another build");
            if round == 1 {
                // The new process listens on its host's other port: closed to all but the
                // load balancers, like the first one.
                let role = tier.parse::<driver::Tier>().expect("a tier").main();
                let addr =
                    SocketAddr::from((driver::Host::Origin(role).ip(), driver::ORIGIN_NEXT_PORT));
                match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                    Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
                    other => panic!("{addr} must refuse the root namespace, got {other:?}"),
                }
            }
        }
    }
    for role in ["api-main", "static-main"] {
        let before = stack.pid_of(role);
        assert_success(&stack.xtask(&["restart", role]), &stack);
        assert_ne!(
            before,
            stack.pid_of(role),
            "`restart {role}` left the same process"
        );
    }
    // Both balancers reload, under the same load.
    assert_success(&stack.xtask(&["restart", "haproxy"]), &stack);
    let (report, printed) = load.stop();
    println!("{printed}");
    assert!(
        load.succeeded() && report["clean"] == true,
        "the load through the VIP saw failed requests, 5xx or maintenance answers across \
         redeploys and restarts:\n{printed}\n--- up ---\n{}",
        stack.log()
    );
    for lb in driver::Host::BALANCERS {
        let api = driver::RuntimeApi::new(stack.dir.join(format!("haproxy-{lb}.sock")));
        for role in [driver::Role::ApiMain, driver::Role::StaticMain] {
            let state = api
                .server_state(role)
                .unwrap_or_else(|err| panic!("{lb}'s runtime API: {err}\n{}", stack.log()));
            assert_eq!(
                (state.addr.as_str(), state.port, state.is_up()),
                (
                    driver::Host::Origin(role).ip().to_string().as_str(),
                    driver::ORIGIN_PORT,
                    true
                ),
                "after two redeploys {lb} must send {role} to its host's first port again"
            );
            let row = api
                .server_stat(role)
                .unwrap_or_else(|err| panic!("{lb}'s runtime API: {err}"));
            for (field, meaning) in [
                ("econ", "refused or failed connections"),
                ("chkdown", "times marked down"),
            ] {
                assert_eq!(
                    row.count(field),
                    0,
                    "{lb} counted {meaning} ({field}) on {role}: {row:?}"
                );
            }
        }
    }
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

/// The two tests under load take turns: each claims that no request fails across its
/// restarts or redeploys, a claim about the hand-over, not about sharing 2 cores with another
/// stack under load (seen once: a failed request with both running at once).
static ONE_STACK_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Waits for this test's turn, then runs `cargo build --release -p origin`, which
/// `up --no-build` runs (a no-op when fresh); the turn lasts while the returned guard lives.
fn build_origin() -> MutexGuard<'static, ()> {
    let turn = ONE_STACK_AT_A_TIME
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
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
    turn
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

/// Where the stack under test runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Where {
    /// `up --listen 127.0.0.1:<free port>`.
    Loopback,
    /// `up --hosts`: network namespaces, the site on the VIP.
    Hosts,
}

/// `xtask up` on a stack of its own. Dropping it stops `up` (SIGTERM, then SIGKILL after a
/// bound) and kills whatever server its pid files still name; across hosts, a network a
/// killed `up` left goes too.
struct StackUnderTest {
    up: ServerProcess,
    dir: PathBuf,
    site: String,
    topology: Where,
}

impl StackUnderTest {
    fn start(scratch: &Path, topology: Where) -> Self {
        let www = scratch.join("www");
        write_stub_www(&www);
        let dir = scratch.join("stack");
        let (site, place) = match topology {
            Where::Loopback => {
                let site = format!("127.0.0.1:{}", driver::free_port());
                (site.clone(), vec!["--listen".to_owned(), site])
            }
            Where::Hosts => (
                format!("{}:{}", driver::VIP, driver::SITE_PORT),
                vec!["--hosts".to_owned()],
            ),
        };
        let up = ServerProcess::spawn(
            ProcessSpec::new("xtask up", XTASK)
                .arg("--stack-dir")
                .arg(&dir)
                .args(["up", "--no-build", "--www"])
                .arg(&www)
                .args(place),
        );
        let mut stack = StackUnderTest {
            up,
            dir,
            site,
            topology,
        };
        // Our `up` names the site in its site.addr; without that check, another program
        // that took the free port meanwhile would pass for our stack.
        stack.wait_for(
            "this stack's HAProxy to serve /healthz and /api/healthz",
            || {
                fs::read_to_string(stack.dir.join("site.addr"))
                    .is_ok_and(|addr| addr.trim() == stack.site)
                    && stack
                        .get("/healthz")
                        .is_some_and(|(status, _)| status == 200)
                    && stack
                        .get("/api/healthz")
                        .is_some_and(|(status, _)| status == 200)
            },
        );
        if !stack.up.is_running() {
            panic!("xtask up exited:\n{}", stack.log());
        }
        stack
    }

    fn xtask(&self, args: &[&str]) -> Output {
        Command::new(XTASK)
            .arg("--stack-dir")
            .arg(&self.dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("xtask runs")
    }

    fn log(&self) -> String {
        self.up.log()
    }

    /// `GET path` through HAProxy: status and body, or None if nothing answered.
    fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = Request::get(&format!("http://{}{path}", self.site))
            .timeout(Duration::from_secs(5))
            .send()
            .ok()?;
        Some((response.status, response.text().into_owned()))
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

    /// The pid `up` wrote for `server`.
    fn pid_of(&self, server: &str) -> u32 {
        let path = self.dir.join(format!("{server}.pid"));
        fs::read_to_string(&path)
            .ok()
            .and_then(|pid| pid.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}:\n{}", path.display(), self.log()))
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        driver::wait_until(
            READY_TIMEOUT,
            what,
            || if done() { Ok(()) } else { Err("not yet") },
            || format!("--- up ---\n{}", self.log()),
        );
    }
}

impl Drop for StackUnderTest {
    fn drop(&mut self) {
        let stopped = self.up.terminate(STOP_TIMEOUT);
        // If `up` had to be killed, its servers (each its own process group) are still there.
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "pid") {
                let pid = fs::read_to_string(&path)
                    .ok()
                    .and_then(|pid| pid.trim().parse().ok());
                if let Some(pid) = pid.filter(|&pid| driver::runs_stack_program(pid)) {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        let killed = !stopped.is_some_and(|status| status.success());
        if self.topology == Where::Hosts && killed {
            if let Err(error) = driver::remove_leftovers() {
                eprintln!("could not remove the network `up --hosts` left: {error}");
            }
        }
    }
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
    load: ServerProcess,
    status: Option<std::process::ExitStatus>,
}

impl LoadUnderTest {
    fn start(stack: &StackUnderTest, rate: u32, paths: &[&str]) -> Self {
        let mut spec = ProcessSpec::new("xtask load", XTASK)
            .arg("--stack-dir")
            .arg(&stack.dir)
            .args([
                "load",
                "--strict",
                "--json",
                "--connections",
                "16",
                "--seconds",
                "300",
            ])
            .args(["--rate", &rate.to_string()]);
        for path in paths {
            spec = spec.args(["--path", path]);
        }
        let load = ServerProcess::spawn(spec);
        let load = LoadUnderTest { load, status: None };
        driver::wait_until(
            READY_TIMEOUT,
            "xtask load reports that it started",
            || {
                let log = load.load.log();
                if log.contains("load: ") {
                    Ok(())
                } else {
                    Err(log)
                }
            },
            String::new,
        );
        load
    }

    /// Ctrl-C: the load stops and prints its report. Returns the report (its `--json` line)
    /// and everything it printed.
    fn stop(&mut self) -> (serde_json::Value, String) {
        self.load.kill(Signal::SIGINT);
        self.status = self.load.wait_exit(STOP_TIMEOUT);
        assert!(self.status.is_some(), "xtask load did not stop on SIGINT");
        let printed = self.load.log();
        let report = printed
            .lines()
            .find_map(|line| line.strip_prefix("[stdout] {"))
            .map(|json| format!("{{{json}"))
            .unwrap_or_else(|| panic!("xtask load --json printed no JSON report:\n{printed}"));
        let report = serde_json::from_str(&report)
            .unwrap_or_else(|error| panic!("the load's report is not JSON ({error}): {report}"));
        (report, printed)
    }

    fn succeeded(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }
}
