//! Real-browser end-to-end scenarios, each in three engines (Chromium, Firefox and WebKit,
//! each through its own WebDriver server) in front of the real HAProxy and origin binaries.
//! Each scenario starts its own stack and browser, injects a fault, and follows one tab
//! through the maintenance page and back.
//!
//! Needs `haproxy`, the three engines and their drivers (`cargo xtask install`) and the built
//! client (`cargo xtask build-client`). Runs on libtest-mimic, one trial at a time unless
//! `--test-threads` says otherwise (at most 2 make sense on 2 cores). A trial is named
//! `<engine>::<scenario>`, so the filter picks engines as well as scenarios. Prints a table of
//! detection and recovery times at the end, a column per engine. Screenshots go to
//! `target/screenshots/<engine>/`.
//!
//! ```text
//! cargo test -p driver --test browser                     # every scenario in every engine
//! cargo test -p driver --test browser -- firefox::        # every scenario in Firefox
//! cargo test -p driver --test browser -- --skip webkit::  # all but WebKit
//! cargo test -p driver --test browser -- f7               # one scenario, every engine
//! cargo test -p driver --test browser -- webkit::f7       # one scenario in one engine
//! ```

mod csp;
mod dashboard;
mod flapping;
mod harness;
mod last_known;
mod last_resort;
mod outages;
mod return_targets;
mod support;
mod vip;

use std::time::Instant;

use driver::browser::Engine;
use libtest_mimic::{Arguments, Trial};

/// A scenario, run once per engine.
type Scenario = fn(Engine);

/// Every scenario, in the order they run.
const SCENARIOS: [(&str, Scenario); 25] = [
    ("f1_api_main_crash", outages::f1_api_main_crash),
    ("f2_static_main_crash", outages::f2_static_main_crash),
    ("f3_both_mains_crash", outages::f3_both_mains_crash),
    ("f4_api_main_hangs", outages::f4_api_main_hangs),
    ("f5_api_health_too_slow", outages::f5_api_health_too_slow),
    ("f6_every_origin_dead", outages::f6_every_origin_dead),
    ("f7_api_main_flaps", flapping::f7_api_main_flaps),
    (
        "f8_haproxy_reload_mid_outage",
        outages::f8_haproxy_reload_mid_outage,
    ),
    ("f9_ten_crash_cycles", outages::f9_ten_crash_cycles),
    ("deep_link", return_targets::deep_link),
    (
        "hostile_return_targets",
        return_targets::hostile_return_targets,
    ),
    (
        "dashboard_shows_servers_and_flips",
        dashboard::dashboard_shows_servers_and_flips,
    ),
    (
        "dashboard_self_detects_outage",
        dashboard::dashboard_self_detects_outage,
    ),
    (
        "dashboard_reloads_once_on_new_static_build",
        dashboard::dashboard_reloads_once_on_new_static_build,
    ),
    (
        "csp_blocks_injected_script",
        csp::csp_blocks_injected_script,
    ),
    (
        "last_known_state_on_the_maintenance_page",
        last_known::last_known_state_on_the_maintenance_page,
    ),
    (
        "lr1_haproxy_dies_under_the_dashboard",
        last_resort::haproxy_dies_under_the_dashboard,
    ),
    (
        "lr2_worker_answers_a_deep_link_while_haproxy_is_dead",
        last_resort::worker_answers_a_deep_link_while_haproxy_is_dead,
    ),
    (
        "lr3_worker_passes_haproxys_503_through",
        last_resort::worker_passes_haproxys_503_through,
    ),
    (
        "lr4_kill_switch_removes_the_worker",
        last_resort::kill_switch_removes_the_worker,
    ),
    (
        "lr5_flapping_is_bounded_by_the_loop_guard",
        last_resort::flapping_is_bounded_by_the_loop_guard,
    ),
    (
        "vip1_dashboard_rides_out_haproxy_killed",
        vip::vip1_dashboard_rides_out_haproxy_killed,
    ),
    (
        "vip2_dashboard_rides_out_its_balancer_cut_off",
        vip::vip2_dashboard_rides_out_its_balancer_cut_off,
    ),
    (
        "vip3_maintenance_tab_returns_after_haproxy_killed",
        vip::vip3_maintenance_tab_returns_after_haproxy_killed,
    ),
    (
        "browser_reaped_after_a_panic",
        harness::browser_reaped_after_a_panic,
    ),
];

fn main() {
    let mut args = Arguments::from_args();
    // Each scenario runs HAProxy, four origins and a browser: one at a time by default.
    args.test_threads.get_or_insert(1);
    let trials = Engine::ALL
        .into_iter()
        .flat_map(|engine| {
            SCENARIOS.iter().map(move |&(name, scenario)| {
                Trial::test(format!("{engine}::{name}"), move || {
                    support::run(name, engine, scenario)
                })
            })
        })
        .collect();
    let started = Instant::now();
    let conclusion = libtest_mimic::run(&args, trials);
    if !args.list && conclusion.num_passed + conclusion.num_failed > 0 {
        println!("{}", support::timing_table(started.elapsed()));
    }
    conclusion.exit();
}
