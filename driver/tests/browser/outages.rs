//! F1–F6, F8, F9: a main server crashes, hangs, answers its health too slowly, or every
//! origin dies; a tab opening `/` gets the maintenance page in place, and the recovery client
//! brings it back to a freshly loaded dashboard by itself once the stack is healthy.

use std::time::Instant;

use driver::browser::Engine;
use driver::Role;

use crate::support::{Pace, Scene, View, DETECTION};

/// A tab opening `/` once HAProxy has taken `down` out: the maintenance page, in place (the
/// URL stays `/`), with its client showing one of `states`. Records the time since `fault`.
fn open_during_outage(
    scene: &Scene,
    fault: Instant,
    down: &[Role],
    states: &[&str],
    screenshot: Option<&str>,
) -> View {
    for &role in down {
        scene.wait_haproxy_down(role);
    }
    scene.open("/");
    let shown = scene.wait_maintenance(
        states,
        &format!("a tab opening / shows the maintenance page in {states:?}"),
    );
    scene.record_fault_to_maintenance(fault.elapsed());
    assert_eq!(
        shown.path,
        "/",
        "the maintenance page must be served in place, at the URL the tab asked for: {}",
        shown.summary_line()
    );
    if let Some(file) = screenshot {
        scene.screenshot(file);
    }
    shown
}

/// Restarts `roles` and waits until the tab is back on a freshly loaded dashboard at `/`.
fn restart_and_return(scene: &mut Scene, roles: &[Role], shown: &View) {
    let healthy = {
        for &role in roles {
            scene.stack.server_mut(role).restart();
        }
        Instant::now()
    };
    let back = scene.wait_back_on_dashboard(
        shown,
        &format!("the tab returns to the dashboard by itself after restarting {roles:?}"),
    );
    scene.record_healthy_to_back(healthy.elapsed());
    assert_eq!(
        back.path,
        "/",
        "the tab must return to /: {}",
        back.summary_line()
    );
}

/// Crashes `roles` (SIGKILL), checks the maintenance page in `state`, restarts them.
fn crash_and_recover(engine: Engine, pace: Pace, roles: &[Role], state: &str, screenshot: &str) {
    let mut scene = Scene::start(engine, pace);
    let fault = Instant::now();
    for &role in roles {
        scene.crash(role);
    }
    let shown = open_during_outage(&scene, fault, roles, &[state], Some(screenshot));
    restart_and_return(&mut scene, roles, &shown);
}

/// F1, on the page's shipped pace (5 s interval, 3 s spread): api-main crashes.
pub fn f1_api_main_crash(engine: Engine) {
    crash_and_recover(
        engine,
        Pace::Shipped,
        &[Role::ApiMain],
        "api-down",
        "maintenance-api-down.png",
    );
}

/// F2: static-main crashes.
pub fn f2_static_main_crash(engine: Engine) {
    crash_and_recover(
        engine,
        Pace::Fast,
        &[Role::StaticMain],
        "static-down",
        "maintenance-static-down.png",
    );
}

/// F3: both main servers crash.
pub fn f3_both_mains_crash(engine: Engine) {
    crash_and_recover(
        engine,
        Pace::Fast,
        &[Role::StaticMain, Role::ApiMain],
        "both-down",
        "maintenance-both-down.png",
    );
}

/// F4: api-main hangs (SIGSTOP: the kernel still accepts, nothing answers), then resumes.
pub fn f4_api_main_hangs(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    let fault = Instant::now();
    scene.stack.server_mut(Role::ApiMain).stop();
    let shown = open_during_outage(&scene, fault, &[Role::ApiMain], &["api-down"], None);
    scene.stack.server_mut(Role::ApiMain).cont();
    let healthy = Instant::now();
    let back = scene.wait_back_on_dashboard(&shown, "the tab returns after SIGCONT");
    scene.record_healthy_to_back(healthy.elapsed());
    assert_eq!(back.path, "/");
}

/// How long api-main's `/api/healthz` is held in F5: slower than HAProxy's `timeout check`
/// (500 ms) and than the client's probe timeout (3 s).
const SLOW_HEALTH_MS: &str = "4000";

/// F5: api-main is alive but its health answer is slower than the probe timeout.
///
/// Which layer counts it as down: HAProxy's `timeout check 500ms`. Its checks of
/// `/api/healthz` time out (check status `L7TOUT`), two in a row (`fall 2`) mark api-main
/// DOWN, and from then on HAProxy answers pages with the maintenance page and routes the
/// client's `/api/healthz` probes to api-fallback, whose prompt 503 is what the client sees
/// (`api-down`). The client's own 3 s abort is the backstop for probes that reach a slow
/// server before HAProxy has given up on it; it is not what decides here, and the scenario
/// proves that by requiring `L7TOUT` while the process is still running.
pub fn f5_api_health_too_slow(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    let fault = Instant::now();
    scene
        .stack
        .server_mut(Role::ApiMain)
        .restart_with(|spec| spec.set_arg("--health-delay-ms", SLOW_HEALTH_MS));
    scene.stack.wait_until(
        DETECTION,
        "HAProxy marks api-main DOWN because its health check timed out (L7TOUT)",
        || match scene.stack.server_stat(Role::ApiMain) {
            Ok(stat) if stat.status == "DOWN" && stat.check_status.contains("L7TOUT") => Ok(()),
            Ok(stat) => Err(format!("{} ({})", stat.status, stat.check_status)),
            Err(error) => Err(error.to_string()),
        },
    );
    assert!(
        scene.stack.server_mut(Role::ApiMain).is_running(),
        "api-main must be slow, not dead"
    );
    let shown = open_during_outage(&scene, fault, &[Role::ApiMain], &["api-down"], None);
    let healthy = {
        scene
            .stack
            .server_mut(Role::ApiMain)
            .restart_with(|spec| spec.set_arg("--health-delay-ms", "0"));
        Instant::now()
    };
    let back = scene.wait_back_on_dashboard(&shown, "the tab returns once health is fast again");
    scene.record_healthy_to_back(healthy.elapsed());
    assert_eq!(back.path, "/");
}

/// F6: every origin is dead, fallbacks included. The maintenance page and its Wasm client
/// come from HAProxy alone, and the client shows the outage after its first probe pair:
/// `both-down`, since HAProxy itself answers both probes with 503 (not `unreachable`,
/// which means no answer at all).
pub fn f6_every_origin_dead(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    let fault = Instant::now();
    for role in Role::ALL {
        scene.crash(role);
    }
    let shown = open_during_outage(
        &scene,
        fault,
        &[Role::StaticMain, Role::ApiMain],
        &["both-down"],
        Some("maintenance-unreachable.png"),
    );
    for role in Role::ALL {
        assert!(
            !scene.stack.server_mut(role).is_running(),
            "{role} must still be dead: the page has to come from HAProxy alone"
        );
    }
    scene.note(format!(
        "client showed {}",
        shown.state.as_deref().unwrap_or("?")
    ));
    restart_and_return(&mut scene, &Role::ALL, &shown);
}

/// F8: HAProxy is reloaded (SIGUSR2) in the middle of an outage; the tab still recovers.
pub fn f8_haproxy_reload_mid_outage(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    let fault = Instant::now();
    scene.crash(Role::ApiMain);
    open_during_outage(&scene, fault, &[Role::ApiMain], &["api-down"], None);
    scene.stack.haproxy_reload();
    // The new worker must see the same outage: the tab keeps showing it.
    let shown = scene.wait_maintenance(
        &["api-down"],
        "the tab still shows the outage after the reload",
    );
    restart_and_return(&mut scene, &[Role::ApiMain], &shown);
}

/// F9: ten crash/restart cycles of api-main in a row, with the dashboard open. Each time the
/// dashboard hands over to the maintenance page by itself, and the tab comes back.
pub fn f9_ten_crash_cycles(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    for cycle in 1..=10 {
        let fault = Instant::now();
        scene.crash(Role::ApiMain);
        let shown = scene.wait_maintenance(
            &["api-down"],
            &format!("cycle {cycle}: the open dashboard hands over to the maintenance page"),
        );
        scene.record_fault_to_maintenance(fault.elapsed());
        let healthy = {
            scene.stack.server_mut(Role::ApiMain).restart();
            Instant::now()
        };
        let back = scene.wait_back_on_dashboard(
            &shown,
            &format!("cycle {cycle}: the tab returns to the dashboard"),
        );
        scene.record_healthy_to_back(healthy.elapsed());
        assert_eq!(back.path, "/", "cycle {cycle}: {}", back.summary_line());
    }
}
