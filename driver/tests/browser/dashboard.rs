//! The dashboard in a real browser (issue 5): it lists the servers and follows their states,
//! hands over to the maintenance page by itself when the API dies, and reloads exactly once
//! when a new static build is deployed.

use std::time::Instant;

use driver::browser::Engine;
use driver::Role;

use crate::support::{Pace, Scene, DEADLINE};

/// The build id every origin of a fresh stack reports (`Stack::builder`'s default).
const FIRST_BUILD: &str = "e2e";

/// The build id static-main is redeployed with.
const NEXT_BUILD: &str = "e2e-next";

/// dashboard_shows_servers_and_flips: the dashboard lists all four servers, and a killed main
/// server's row flips to a DOWN state while the dashboard stays open, then back to UP; a
/// killed fallback's row flips to DOWN, the dashboard undisturbed.
///
/// The row that flips is static-main's. api-main's own row can never be seen DOWN: api-main
/// is what serves `/api/data`, so while it is down the rows cannot be refreshed at all, and
/// the dashboard rightly hands over to the maintenance page instead
/// (`dashboard_self_detects_outage`).
pub fn dashboard_shows_servers_and_flips(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    let healthy = scene.open_dashboard();
    scene.screenshot("dashboard.png");
    let fault = Instant::now();
    scene.crash(Role::StaticMain);
    let flipped = scene.wait(
        DEADLINE,
        "static-main's row flips to a DOWN state",
        |view| match view.servers.get("static-main") {
            Some(state) if state.starts_with("DOWN") => Ok(view.clone()),
            other => Err(format!("static-main's row: {other:?}")),
        },
    );
    scene.record_fault_to_maintenance(fault.elapsed());
    assert!(
        flipped.is_dashboard_with_data() && flipped.dashboard_loads == healthy.dashboard_loads,
        "the dashboard must stay open while static-main is down: {}",
        flipped.summary_line()
    );
    assert!(
        flipped
            .summary
            .as_deref()
            .is_some_and(|s| s.contains("static-main")),
        "the summary must name the server that is not UP: {}",
        flipped.summary_line()
    );
    let restarted = {
        scene.stack.server_mut(Role::StaticMain).restart();
        Instant::now()
    };
    scene.wait(
        DEADLINE,
        "static-main's row flips back to UP",
        |view| match view.servers.get("static-main") {
            Some(state) if state == "UP" => Ok(()),
            other => Err(format!("static-main's row: {other:?}")),
        },
    );
    scene.record_healthy_to_back(restarted.elapsed());
    // A dead fallback while its main is healthy (F15): the dashboard stays as it is and shows
    // the fallback DOWN (HAProxy's liveness check of it, backend `fallbacks`).
    let before = scene.wait(DEADLINE, "the dashboard shows live data", |view| {
        if view.is_dashboard_with_data() {
            Ok(view.clone())
        } else {
            Err(view.summary_line())
        }
    });
    scene.crash(Role::StaticFallback);
    let fallback_down =
        scene.wait(
            DEADLINE,
            "static-fallback's row flips to DOWN",
            |view| match view.servers.get("static-fallback") {
                Some(state) if state.starts_with("DOWN") => Ok(view.clone()),
                other => Err(format!("static-fallback's row: {other:?}")),
            },
        );
    assert!(
        fallback_down.is_dashboard_with_data()
            && fallback_down.dashboard_loads == before.dashboard_loads,
        "a dead fallback must not disturb the dashboard: {}",
        fallback_down.summary_line()
    );
    scene.note("times: row flips DOWN / back UP; then static-fallback shown DOWN");
}

/// dashboard_self_detects_outage: an open dashboard goes to the maintenance page by itself
/// when api-main dies, and comes back to the dashboard after the restart.
pub fn dashboard_self_detects_outage(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    let fault = Instant::now();
    scene.crash(Role::ApiMain);
    let shown = scene.wait_maintenance(
        &["api-down"],
        "the open dashboard hands over to the maintenance page by itself",
    );
    scene.record_fault_to_maintenance(fault.elapsed());
    let in_place = shown.path == "/" && shown.query.is_empty();
    let redirected = shown.path == "/maintenance.html" && shown.param("return") == Some("/");
    assert!(
        in_place || redirected,
        "expected the maintenance page at / or at /maintenance.html?return=%2F: {}",
        shown.summary_line()
    );
    let healthy = {
        scene.stack.server_mut(Role::ApiMain).restart();
        Instant::now()
    };
    let back = scene.wait_back_on_dashboard(&shown, "the tab returns to the dashboard");
    scene.record_healthy_to_back(healthy.elapsed());
    assert_eq!(back.path, "/", "{}", back.summary_line());
    scene.note(if in_place {
        "maintenance in place"
    } else {
        "via /maintenance.html?return=%2F"
    });
}

/// dashboard_reloads_once_on_new_static_build: static-main is restarted with another
/// `--build-id`; the open dashboard reloads exactly once (one more load, `v=` in the URL,
/// `data-build` the new id) and then stays.
pub fn dashboard_reloads_once_on_new_static_build(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    let first = scene.wait(
        DEADLINE,
        "the dashboard has recorded the static build",
        |view| {
            if view.build.as_deref() == Some(FIRST_BUILD) {
                Ok(view.clone())
            } else {
                Err(format!("data-build {:?}", view.build))
            }
        },
    );
    let deployed = {
        scene
            .stack
            .server_mut(Role::StaticMain)
            .restart_with(|spec| spec.set_arg("--build-id", NEXT_BUILD));
        Instant::now()
    };
    let reloaded = scene.wait(
        DEADLINE,
        "the dashboard reloads for the new build",
        |view| {
            if view.is_dashboard_with_data()
                && view.build.as_deref() == Some(NEXT_BUILD)
                && view.has_cache_buster()
            {
                Ok(view.clone())
            } else {
                Err("not the reloaded dashboard yet".to_owned())
            }
        },
    );
    scene.record_healthy_to_back(deployed.elapsed());
    assert_eq!(
        (reloaded.dashboard_loads, reloaded.maintenance_loads),
        (first.dashboard_loads + 1, first.maintenance_loads),
        "exactly one reload, straight to the dashboard: before {}\nafter {}",
        first.summary_line(),
        reloaded.summary_line()
    );
    // Exactly once: the new page sees its own build and stays, refresh after refresh.
    scene.wait(
        DEADLINE,
        "the reloaded dashboard stays for two more refreshes",
        |view| {
            assert_eq!(
                (view.dashboard_loads, view.url.as_str()),
                (reloaded.dashboard_loads, reloaded.url.as_str()),
                "the dashboard reloaded again: {}",
                view.summary_line()
            );
            if view.health_polls >= reloaded.health_polls + 2 {
                Ok(())
            } else {
                Err(format!("{} refreshes so far", view.health_polls))
            }
        },
    );
    scene.note("time: redeploy -> reloaded dashboard");
}
