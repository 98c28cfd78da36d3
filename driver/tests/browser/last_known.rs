//! The last known state (issue 12): during an outage the maintenance page shows what the
//! dashboard last showed, marked with its age, and nothing when the browser has no snapshot.

use std::time::Instant;

use driver::browser::Engine;
use driver::Role;
use serde::Deserialize;

use crate::support::{Pace, Scene, DEADLINE};

/// What the maintenance page shows of the last known state.
#[derive(Debug, Deserialize)]
struct LastKnown {
    /// The tab shows the maintenance page (it has the last known state's section).
    maintenance: bool,
    page_state: Option<String>,
    shown: bool,
    title: String,
    text: String,
    age_s: Option<String>,
}

const READ_LAST_KNOWN_JS: &str = r#"
const known = document.getElementById("last-known");
return {
  maintenance: !!known,
  page_state: document.body ? document.body.dataset.state || null : null,
  shown: !!known && !known.hidden && known.offsetParent !== null,
  title: known ? document.getElementById("last-known-title").textContent : "",
  text: known ? known.textContent : "",
  age_s: known ? known.getAttribute("data-age-s") : null,
};
"#;

fn read(scene: &Scene) -> Result<LastKnown, String> {
    scene.tab.try_eval_as(READ_LAST_KNOWN_JS)
}

/// last_known_state_on_the_maintenance_page: a dashboard that has shown data hands over to the
/// maintenance page when api-main dies; that page shows the last known state with its time and
/// age, the servers and the host, also when every origin is dead and the page comes from
/// HAProxy's memory alone. A fresh browser (no snapshot) opening the maintenance page shows
/// none.
pub fn last_known_state_on_the_maintenance_page(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    // Nothing stored yet: the maintenance page itself shows no snapshot.
    scene.open("/maintenance.html");
    let empty = scene.tab.wait_for(
        DEADLINE,
        "the maintenance page has run its script",
        |_| match read(&scene)? {
            view if view.maintenance && view.page_state.is_some() => Ok(view),
            view => Err(format!("{view:?}")),
        },
        || scene.logs(),
    );
    assert!(
        !empty.shown && empty.age_s.is_none(),
        "a browser without a snapshot must show no last known state: {empty:?}"
    );

    scene.open_dashboard();
    let fault = Instant::now();
    scene.crash(Role::ApiMain);
    scene.wait_maintenance(
        &["api-down"],
        "the dashboard hands over to the maintenance page",
    );
    scene.record_fault_to_maintenance(fault.elapsed());
    let known = scene.tab.wait_for(
        DEADLINE,
        "the maintenance page shows the last known state",
        |_| match read(&scene)? {
            view if view.maintenance && view.shown => Ok(view),
            view => Err(format!("{view:?}")),
        },
        || scene.logs(),
    );
    scene.screenshot("last-known.png");
    assert!(
        known.title.starts_with("Last known state at ") && known.title.ends_with(", not live"),
        "the snapshot must say it is not live: {known:?}"
    );
    let clock = known
        .title
        .trim_start_matches("Last known state at ")
        .trim_end_matches(", not live");
    assert!(
        clock.len() == 5 && clock.as_bytes()[2] == b':',
        "HH:MM expected in {known:?}"
    );
    let age: u64 = known
        .age_s
        .as_deref()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no age on {known:?}"));
    assert!(age < 120, "the snapshot was taken moments ago, age {age} s");
    assert!(
        known.text.contains("less than a minute ago"),
        "its age in words: {known:?}"
    );
    for server in ["static-main", "api-main", "static-fallback", "api-fallback"] {
        assert!(known.text.contains(server), "{server} missing: {known:?}");
    }
    assert!(
        known.text.contains("api/api-main: UP"),
        "api-main was UP when the dashboard last saw it: {known:?}"
    );
    assert!(
        known.text.contains("Host ") && known.text.contains("GiB memory available"),
        "the host figures: {known:?}"
    );
    // With every origin dead the page comes from HAProxy's memory alone, and still shows it.
    for role in [Role::StaticMain, Role::StaticFallback, Role::ApiFallback] {
        scene.crash(role);
    }
    scene.open("/");
    let alone = scene.tab.wait_for(
        DEADLINE,
        "the page HAProxy serves with every origin dead shows the last known state",
        |_| match read(&scene)? {
            view if view.maintenance && view.shown && view.page_state.is_some() => Ok(view),
            view => Err(format!("{view:?}")),
        },
        || scene.logs(),
    );
    assert!(alone.text.contains("api/api-main: UP"), "{alone:?}");
    for role in Role::ALL {
        scene.stack.server_mut(role).restart();
    }
    scene.wait_dashboard("the tab returns to the dashboard");
    scene.assert_no_csp_violations();
}
