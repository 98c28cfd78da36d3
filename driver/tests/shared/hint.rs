//! The recovery hint's main promise, as a scenario both suites run: on loopback (the stack
//! suite) and across hosts, where api-fallback reads every load balancer over TCP.

use std::thread;
use std::time::{Duration, Instant};

use driver::{expect, Role, Signal, Stack};

const DETECTION: Duration = Duration::from_secs(10);
/// Longer than api-fallback's longest hold, so a held request is never cut by the client.
const HELD: Duration = Duration::from_secs(40);

/// With api-main down, a hint request through the site is held at api-fallback; it answers
/// `recovered` (one tab, no spread) within 2 s of HAProxy reporting api-main UP again: news,
/// not the end of a hold.
pub fn a_held_hint_answers_once_haproxy_reports_both_mains_up(mut stack: Stack) {
    let api_main = stack.server_mut(Role::ApiMain);
    api_main.kill(Signal::SIGKILL);
    assert!(api_main.wait_exit(Duration::from_secs(5)).is_some());
    stack.wait_server_status(Role::ApiMain, "DOWN", DETECTION);

    let request = stack.request(contract::RECOVERY_HINT_PATH).timeout(HELD);
    let waiter = thread::spawn(move || {
        let answer = request.send();
        (answer, Instant::now())
    });
    // The request reaches api-fallback through the `hint` backend and is held there.
    stack.wait_until(DETECTION, "HAProxy holds the hint at api-fallback", || {
        let rows = stack.stat_rows().map_err(|e| e.to_string())?;
        let held = rows
            .iter()
            .find(|r| r.backend == "hint" && r.server == Role::ApiFallback.name())
            .map_or(0, |r| r.count("scur"));
        if held == 1 {
            Ok(())
        } else {
            Err(format!("{held} sessions at hint/api-fallback"))
        }
    });
    assert!(
        !waiter.is_finished(),
        "the hint answered while api-main was down"
    );

    stack.server_mut(Role::ApiMain).restart();
    stack.wait_server_status(Role::ApiMain, "UP", DETECTION);
    let up_at = Instant::now();
    let (answer, answered_at) = waiter.join().expect("the waiting thread");
    let answer = answer.expect("the hint answered");
    expect::status(&answer, 200, "the hint after api-main came back");
    expect::no_store(&answer, "the hint");
    let body = answer.json();
    assert_eq!(body["recovered"], true, "{answer}");
    // One tab told at once.
    assert_eq!(
        body["spread_ms"],
        contract::recovery_hint_spread_ms(1),
        "{answer}"
    );
    let late = answered_at.saturating_duration_since(up_at);
    eprintln!("hint answered {late:.2?} after the test saw api-main UP");
    assert!(
        late < Duration::from_secs(2),
        "the hint came {late:.2?} after HAProxy reported api-main UP"
    );
}
