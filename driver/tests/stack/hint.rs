//! The recovery hint: a long-poll through HAProxy to api-fallback, answered when HAProxy
//! reports both main servers UP.

use std::time::{Duration, Instant};

use driver::{expect, Role, Signal, Stack};

#[test]
fn a_held_hint_answers_once_haproxy_reports_both_mains_up() {
    crate::held_hint::a_held_hint_answers_once_haproxy_reports_both_mains_up(Stack::start());
}

#[test]
fn the_hint_answers_at_once_while_the_site_is_up_and_fails_fast_without_api_fallback() {
    let mut stack = Stack::start();
    let started = Instant::now();
    let answer = stack.get(contract::RECOVERY_HINT_PATH);
    expect::status(&answer, 200, "the hint with every server up");
    assert!(started.elapsed() < Duration::from_secs(2), "{answer}");

    let fallback = stack.server_mut(Role::ApiFallback);
    fallback.kill(Signal::SIGKILL);
    assert!(fallback.wait_exit(Duration::from_secs(5)).is_some());
    let started = Instant::now();
    let answer = stack.get(contract::RECOVERY_HINT_PATH);
    expect::status(&answer, 503, "the hint with api-fallback gone");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a dead api-fallback must fail the hint at once, took {:.2?}",
        started.elapsed()
    );
    // The API tier itself is untouched: its main server still answers.
    expect::health(&stack.get("/api/healthz"), 200, "GET /api/healthz");
}
