//! The stack across hosts: each server in a network namespace of its own on one bridge, two
//! HAProxy behind keepalived's VIP (`Stack::builder().hosts()`). Needs root, `ip`, `nft`,
//! `keepalived` and `haproxy` (`cargo xtask install`); without root every test fails saying
//! so. The tests take turns (one bridge per machine). Timings are printed: `--nocapture`.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use driver::http::Request;
use driver::{Host, Role, Signal, Stack, ORIGIN_PORT, STATS_PORT};

/// Bound for a VIP move or HAProxy noticing a host gone; generous for a busy machine.
const FAILOVER: Duration = Duration::from_secs(15);

#[test]
fn origins_answer_only_the_load_balancers() {
    let stack = Stack::builder().hosts().start();
    assert_eq!(stack.get("/").status, 200, "{}", stack.logs(20));
    assert_eq!(stack.get("/api/data").status, 200, "{}", stack.logs(20));
    // Each HAProxy answers the read-only runtime API on its own address (for api-main).
    for lb in Host::BALANCERS {
        let listening = stack
            .network()
            .expect("a hosts stack")
            .run_on(lb, &["ss", "-Htln", &format!("sport = {STATS_PORT}")])
            .unwrap_or_else(|error| panic!("{error}"));
        assert!(
            listening.contains(&format!("{}:{STATS_PORT}", lb.ip())),
            "{lb}'s HAProxy does not listen on {STATS_PORT}: {listening:?}"
        );
    }
    // From the root namespace (198.18.0.1): neither a load balancer nor api-main.
    let refused = Role::ALL
        .map(|role| SocketAddr::from((Host::Origin(role).ip(), ORIGIN_PORT)))
        .into_iter()
        .chain(Host::BALANCERS.map(|lb| SocketAddr::from((lb.ip(), STATS_PORT))));
    for addr in refused {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
            other => panic!("{addr} must refuse the root namespace, got {other:?}"),
        }
    }
}

/// How often the sequential load starts a request (when the previous one has ended).
const LOAD_INTERVAL: Duration = Duration::from_millis(10);

/// Sequential GETs of `/` through the VIP, one every [`LOAD_INTERVAL`] at most (the
/// fixed-rate load generator lives in xtask, out of the driver's reach), until dropped.
struct Load {
    counts: Arc<[AtomicU64; 2]>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Load {
    fn start(url: String) -> Load {
        let counts: Arc<[AtomicU64; 2]> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (counts_, stop_) = (counts.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !stop_.load(Ordering::Relaxed) {
                let due = Instant::now() + LOAD_INTERVAL;
                let ok = matches!(
                    Request::get(&url).timeout(Duration::from_secs(1)).send(),
                    Ok(response) if response.status == 200
                );
                counts_[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
                thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        });
        Load {
            counts,
            stop,
            thread: Some(thread),
        }
    }

    /// (answered 200, failed) so far.
    fn counts(&self) -> (u64, u64) {
        let [ok, failed] = &*self.counts;
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[test]
fn f11_haproxy_killed_on_the_vip_holder_moves_the_vip() {
    let mut stack = Stack::builder().hosts().start();
    let network = stack.network().expect("a hosts stack");
    stack.wait_until(
        FAILOVER,
        "lb-a (priority 150) holds the VIP",
        || match network.vip_holder() {
            Some(Host::LbA) => Ok(()),
            other => Err(other),
        },
    );
    let load = Load::start(stack.url("/"));
    stack.wait_until(
        FAILOVER,
        "the load gets answers through the VIP",
        || match load.counts() {
            (ok, 0) if ok >= 10 => Ok(()),
            counts => Err(counts),
        },
    );

    let killed = Instant::now();
    let haproxy = stack.balancer_mut(Host::LbA);
    let group = nix::unistd::Pid::from_raw(haproxy.pid() as i32);
    // The whole group, master and workers, as a crash of the host's HAProxy would.
    nix::sys::signal::killpg(group, Signal::SIGKILL).expect("lb-a's HAProxy group is there");
    assert!(haproxy.wait_exit(Duration::from_secs(5)).is_some());

    let network = stack.network().expect("a hosts stack");
    stack.wait_until(FAILOVER, "the VIP moves to lb-b", || {
        match network.vip_holder() {
            Some(Host::LbB) => Ok(()),
            other => Err(other),
        }
    });
    let moved = killed.elapsed();
    let (_, answered) = stack.wait_for_status("/", 200, FAILOVER);
    let answered = killed.elapsed().max(answered);
    let (ok_after_move, _) = load.counts();
    let (ok, failed) = stack.wait_until(FAILOVER, "the load gets answers again", || {
        match load.counts() {
            (ok, failed) if ok >= ok_after_move + 10 => Ok((ok, failed)),
            counts => Err(counts),
        }
    });
    drop(load);
    println!(
        "F11: VIP moved to lb-b {:.0} ms after lb-a's HAProxy was killed; / answered 200 \
         through the VIP after {:.0} ms; sequential load: {ok} answered 200, {failed} failed",
        moved.as_secs_f64() * 1e3,
        answered.as_secs_f64() * 1e3
    );
    assert!(
        stack.network().and_then(|n| n.vip_holder()) == Some(Host::LbB),
        "the VIP left lb-b during the test"
    );
}

#[test]
fn f15_api_fallback_host_dies_while_api_main_is_healthy() {
    let mut stack = Stack::builder().hosts().start();
    let network = stack.network().expect("a hosts stack");
    let gone = Instant::now();
    network
        .set_link(Host::Origin(Role::ApiFallback), false)
        .unwrap_or_else(|error| panic!("{error}"));
    let fallback = stack.server_mut(Role::ApiFallback);
    fallback.kill(Signal::SIGKILL);
    assert!(fallback.wait_exit(Duration::from_secs(5)).is_some());

    // Users notice nothing: the site answers throughout, while HAProxy's liveness check of
    // api-fallback (backend `fallbacks`, tracked by its servers) marks it DOWN, which the
    // dashboard's data shows.
    let shown = stack.wait_until(FAILOVER, "/api/data shows api-fallback DOWN", || {
        for path in ["/", "/api/healthz"] {
            let answer = stack.get(path);
            assert_eq!(
                answer.status,
                200,
                "GET {path} with api-fallback's host gone: {}\n{}",
                answer.summary(),
                stack.logs(20)
            );
        }
        let data = stack.get("/api/data");
        assert_eq!(data.status, 200, "{}\n{}", data.summary(), stack.logs(20));
        let json = data.json();
        let fallback = json["haproxy"]["servers"]
            .as_array()
            .and_then(|servers| servers.iter().find(|s| s["server"] == "api-fallback"))
            .unwrap_or_else(|| panic!("/api/data has no api-fallback: {json}"))
            .clone();
        match fallback["state"].as_str() {
            Some("DOWN") => Ok(gone.elapsed()),
            _ => Err(format!("api-fallback: {fallback}")),
        }
    });
    println!(
        "F15: api-fallback shown DOWN {:.0} ms after its host was cut off",
        shown.as_secs_f64() * 1e3
    );
    assert_eq!(stack.get("/").status, 200);
}
