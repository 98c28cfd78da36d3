//! When the entry point itself does not answer (issue "the browser never strands a user"):
//! the dashboard stays instead of leaving for a page that cannot load, the last-resort
//! service worker (www/sw.js) answers a failed navigation with its copy of the maintenance
//! page and passes every HTTP answer through, its kill switch (www/sw-kill.js) removes it,
//! and the reload-loop guard (client/src/loop_guard.rs) bounds the navigations of a tab
//! while a main server flaps.
//!
//! Every check reads the document (its markers), not only the URL: a browser error page has
//! none of them. Only engine-neutral script is used (no DevTools protocol), so the scenarios
//! run unchanged in any WebDriver engine; `http://127.x.y.z` is a secure context (loopback,
//! 127.0.0.0/8), which service workers need.

use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant};

use client::loop_guard::GuardConfig;
use driver::browser::Engine;
use driver::{Role, Signal};
use serde::Deserialize;

use crate::support::{Pace, Scene, DEADLINE};

/// How long HAProxy stays dead under the open dashboard.
const OUTAGE: Duration = Duration::from_secs(10);

/// Half a flap of api-main: down this long, then up this long.
const FLAP_HALF: Duration = Duration::from_secs(2);

/// How long api-main flaps (the issue's two minutes).
const FLAPPING: Duration = Duration::from_secs(120);

/// What this file reads of a tab, in one script (which awaits the worker's promises).
#[derive(Clone, Debug, Default, Deserialize)]
struct Tab {
    url: String,
    path: String,
    search: String,
    ready: String,
    /// `<body data-page>`: `dashboard` on the dashboard.
    page: Option<String>,
    /// The maintenance page's markers (`#status` and `#check-now`).
    maintenance: bool,
    /// `<body data-state>` of the maintenance page's client.
    state: Option<String>,
    /// `<body data-client>`: `fallback` when the Wasm client did not run.
    client: Option<String>,
    /// `<body data-served-by>`: `service-worker` on the worker's copy.
    served_by: Option<String>,
    /// `<body data-connection>`: `lost` while the dashboard gets no answer at all.
    connection: Option<String>,
    /// `<body data-unstable>` on the maintenance page: the loop guard holds.
    unstable: bool,
    /// `#data-status` on the dashboard.
    data_status: Option<String>,
    summary: Option<String>,
    /// A service worker controls this document.
    controlled: bool,
    /// The body shows some text (WebKit's error page is an about:blank with a message).
    has_text: bool,
    /// Script URLs of every registration of this origin.
    registrations: Vec<String>,
    /// Cache Storage names of this origin.
    caches: Vec<String>,
    dashboard_loads: u32,
    maintenance_loads: u32,
}

const TAB_JS: &str = r#"
const body = document.body;
const data = body ? body.dataset : {};
const text = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
let registrations = [], names = [];
try {
  const all = await navigator.serviceWorker.getRegistrations();
  registrations = all.map((r) => { const w = r.active || r.waiting || r.installing; return w ? w.scriptURL : "(none)"; });
} catch (e) {}
try { names = await caches.keys(); } catch (e) {}
let d = 0, m = 0;
try { d = +sessionStorage.dashboardLoads || 0; m = +sessionStorage.maintenanceLoads || 0; } catch (e) {}
return {
  url: location.href, path: location.pathname, search: location.search, ready: document.readyState,
  page: data.page ?? null, maintenance: !!document.getElementById("status") && !!document.getElementById("check-now"),
  state: data.state ?? null, client: data.client ?? null, served_by: data.servedBy ?? null,
  connection: data.connection ?? null, unstable: data.unstable === "true",
  data_status: text("data-status"), summary: text("summary"),
  controlled: !!(navigator.serviceWorker && navigator.serviceWorker.controller),
  has_text: !!(body && body.innerText && body.innerText.trim()),
  registrations, caches: names, dashboard_loads: d, maintenance_loads: m,
};
"#;

impl Tab {
    fn is_app(&self) -> bool {
        self.page.as_deref() == Some("dashboard") || self.maintenance
    }

    /// A parsed document that is neither the dashboard nor the maintenance page: a browser
    /// error page. What each engine shows for a navigation that got no answer (seen here):
    /// Chromium `chrome-error://chromewebdata/`, "complete", "This site can't be reached";
    /// Firefox the failed URL with an empty body, "interactive" for good (hence "parsed"
    /// rather than "complete"; the app's own markers are in its HTML, there by
    /// "interactive"); WebKit `about:blank`, "complete", "Could not connect to ...". Firefox
    /// also shows an empty about:blank between two pages of a navigation: no error page.
    fn shows_error_page(&self) -> bool {
        !self.is_app() && self.ready != "loading" && (self.url != "about:blank" || self.has_text)
    }

    fn is_live_dashboard(&self) -> bool {
        self.page.as_deref() == Some("dashboard")
            && self.data_status.as_deref() == Some("ok")
            && self.connection.is_none()
    }

    fn line(&self) -> String {
        format!(
            "{} ({}) page={:?} maintenance={} state={:?} served_by={:?} connection={:?} \
             unstable={} data={:?} controlled={} text={} registrations={:?} caches={:?} \
             loads: dashboard {} maintenance {} summary={:?}",
            self.url,
            self.ready,
            self.page,
            self.maintenance,
            self.state,
            self.served_by,
            self.connection,
            self.unstable,
            self.data_status,
            self.controlled,
            self.has_text,
            self.registrations,
            self.caches,
            self.dashboard_loads,
            self.maintenance_loads,
            self.summary
        )
    }
}

fn read(scene: &Scene) -> Result<Tab, String> {
    scene
        .tab
        .try_eval_as(&format!("return (async () => {{ {TAB_JS} }})();"))
}

/// Fails at once on a browser error page ([`Tab::shows_error_page`]).
fn assert_not_stranded(tab: &Tab, scene: &Scene, journal: &str) {
    assert!(
        !tab.shows_error_page(),
        "the tab shows a page that is neither the dashboard nor the maintenance page (a \
         browser error page): {}\n{journal}\n{}",
        tab.line(),
        scene.logs()
    );
    assert_ne!(
        tab.client.as_deref(),
        Some("fallback"),
        "the maintenance page's Wasm client did not run: {}",
        tab.line()
    );
}

fn wait_tab<T>(
    scene: &Scene,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Tab) -> Result<T, String>,
) -> T {
    scene.tab.wait_for(
        timeout,
        what,
        |_| {
            let tab = read(scene)?;
            check(&tab).map_err(|seen| format!("{seen}\n  tab: {}", tab.line()))
        },
        || scene.logs(),
    )
}

/// Navigates by script, so that a navigation that fails does not fail the WebDriver call.
fn navigate(scene: &Scene, path: &str) {
    let url = serde_json::to_string(&scene.url(path)).expect("a URL is JSON");
    scene
        .tab
        .try_eval(&format!(
            "setTimeout(() => location.assign({url}), 0); return null;"
        ))
        .unwrap_or_else(|error| panic!("could not navigate to {path}: {error}"));
}

/// Waits until the worker controls the tab and holds its copy (the dashboard registers it
/// with the build id `e2e`).
fn wait_worker_installed(scene: &Scene) -> Tab {
    wait_tab(
        scene,
        DEADLINE,
        "the last-resort worker controls the tab",
        |tab| {
            let copied = tab.caches.iter().any(|c| c == "last-resort-e2e");
            if tab.controlled
                && copied
                && tab.registrations.iter().any(|r| r.contains("/sw.js?v=e2e"))
            {
                Ok(tab.clone())
            } else {
                Err("no controlling worker with its cache yet".to_owned())
            }
        },
    )
}

/// Stops HAProxy (SIGTERM: the master stops its workers at once) and waits until its port
/// refuses connections.
fn stop_haproxy(scene: &mut Scene) {
    let haproxy = scene.stack.haproxy_mut();
    haproxy.kill(Signal::SIGTERM);
    assert!(
        haproxy.wait_exit(Duration::from_secs(10)).is_some(),
        "HAProxy survived SIGTERM: {haproxy:?}"
    );
    let addr = scene.stack.addr();
    driver::wait_until(
        Duration::from_secs(10),
        "HAProxy's port refuses connections",
        || match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(_) => Err("still accepting"),
            Err(_) => Ok(()),
        },
        || scene.logs(),
    );
}

/// HAProxy killed under an open dashboard for 10 s, then started again: the tab stays on
/// the dashboard (never an error page), says the connection is lost, and carries on live.
pub fn haproxy_dies_under_the_dashboard(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    let start = read(&scene).expect("the dashboard can be read");
    stop_haproxy(&mut scene);
    let dead = Instant::now();
    let mut journal = String::new();
    let mut lost_seen = None;
    while dead.elapsed() < OUTAGE {
        if let Ok(tab) = read(&scene) {
            assert_not_stranded(&tab, &scene, &journal);
            if tab.connection.as_deref() == Some("lost") && lost_seen.is_none() {
                assert_eq!(tab.data_status.as_deref(), Some("stale"), "{}", tab.line());
                lost_seen = Some(tab.clone());
                let _ = writeln!(journal, "{:5.1?} {}", dead.elapsed(), tab.line());
            }
        }
        std::thread::sleep(driver::browser::BROWSER_POLL);
    }
    let lost = lost_seen.unwrap_or_else(|| {
        panic!(
            "the dashboard never said the connection was lost in {OUTAGE:?}\n{}",
            scene.tab.describe()
        )
    });
    assert!(
        lost.summary
            .as_deref()
            .is_some_and(|s| s.starts_with("Connection to the site lost since ")),
        "{}",
        lost.line()
    );
    scene.screenshot("dashboard-connection-lost.png");
    scene.stack.haproxy_mut().restart();
    let back = Instant::now();
    let live = wait_tab(&scene, DEADLINE, "the dashboard is live again", |tab| {
        assert_not_stranded(tab, &scene, &journal);
        if tab.is_live_dashboard() {
            Ok(tab.clone())
        } else {
            Err("not the live dashboard yet".to_owned())
        }
    });
    scene.record_healthy_to_back(back.elapsed());
    assert!(
        live.dashboard_loads >= start.dashboard_loads,
        "{}",
        live.line()
    );
    scene.note(format!(
        "dashboard loads {} -> {}, maintenance loads {} -> {}",
        start.dashboard_loads,
        live.dashboard_loads,
        start.maintenance_loads,
        live.maintenance_loads
    ));
}

/// With the worker installed and HAProxy dead, a new navigation to a deep link shows the
/// worker's copy of the maintenance page; once HAProxy is back the tab returns to that
/// deep link with a fresh `v=`.
pub fn worker_answers_a_deep_link_while_haproxy_is_dead(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    wait_worker_installed(&scene);
    stop_haproxy(&mut scene);
    navigate(&scene, "/index.html?x=1");
    let copy = wait_tab(
        &scene,
        DEADLINE,
        "the worker's copy shows at the deep link",
        |tab| {
            assert_not_stranded(tab, &scene, "");
            let at_link = tab.path == "/index.html" && tab.search == "?x=1";
            if at_link && tab.maintenance && tab.state.as_deref() == Some("unreachable") {
                Ok(tab.clone())
            } else {
                Err("not the maintenance page, unreachable, at the deep link yet".to_owned())
            }
        },
    );
    assert_eq!(
        copy.served_by.as_deref(),
        Some("service-worker"),
        "with HAProxy dead only the worker can have answered: {}",
        copy.line()
    );
    scene.screenshot("maintenance-worker-copy.png");
    scene.stack.haproxy_mut().restart();
    let back_at = Instant::now();
    let back = wait_tab(
        &scene,
        DEADLINE,
        "the tab is back at the deep link",
        |tab| {
            assert_not_stranded(tab, &scene, "");
            let v = tab.search.strip_prefix("?x=1&v=").unwrap_or_default();
            let fresh = !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
            if tab.path == "/index.html" && fresh && tab.is_live_dashboard() {
                Ok(tab.clone())
            } else {
                Err("not the live dashboard at /index.html?x=1&v=<now> yet".to_owned())
            }
        },
    );
    assert!(back.served_by.is_none(), "{}", back.line());
    scene.record_healthy_to_back(back_at.elapsed());
}

/// While HAProxy answers its own 503 maintenance page, the worker passes it through: the
/// document is HAProxy's (no worker marker) and HAProxy logged the 503 for that URL.
pub fn worker_passes_haproxys_503_through(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    wait_worker_installed(&scene);
    scene.crash(Role::ApiMain);
    scene.wait_haproxy_down(Role::ApiMain);
    scene.open("/index.html?through=1");
    let page = wait_tab(
        &scene,
        DEADLINE,
        "HAProxy's maintenance page shows",
        |tab| {
            if tab.search == "?through=1"
                && tab.maintenance
                && tab.state.as_deref() == Some("api-down")
            {
                Ok(tab.clone())
            } else {
                Err("not the maintenance page in api-down at ?through=1 yet".to_owned())
            }
        },
    );
    assert!(
        page.controlled,
        "the worker must be in the path: {}",
        page.line()
    );
    assert!(
        page.served_by.is_none(),
        "the worker replaced HAProxy's 503 with its copy: {}",
        page.line()
    );
    let status = scene
        .tab
        .eval("const n = performance.getEntriesByType('navigation')[0]; return n && 'responseStatus' in n ? n.responseStatus : null;");
    if let Some(status) = status.as_u64() {
        assert_eq!(status, 503, "the navigation's status: {}", page.line());
    }
    let log = scene.stack.haproxy().log();
    assert!(
        log.lines()
            .any(|l| l.contains(" 503 ") && l.contains("GET /index.html?through=1 ")),
        "HAProxy did not log its 503 for /index.html?through=1:\n{}",
        scene.stack.haproxy().log_tail(20)
    );
}

/// Deploying the kill switch (www/sw-kill.js copied over sw.js, HAProxy reloaded) removes an
/// installed worker and its caches; a navigation with HAProxy dead then gets no copy.
pub fn kill_switch_removes_the_worker(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    wait_worker_installed(&scene);
    let www = scene.stack.www_dir().to_owned();
    let kill = fs::read(www.join("sw-kill.js")).expect("www/sw-kill.js is deployed with the site");
    fs::write(www.join("sw.js"), kill).expect("the stack's www copy is writable");
    scene.stack.haproxy_reload();
    scene.open("/");
    let gone = wait_tab(
        &scene,
        DEADLINE,
        "the worker and its caches are gone",
        |tab| {
            let ours = tab
                .caches
                .iter()
                .filter(|c| c.starts_with("last-resort-"))
                .count();
            if tab.registrations.is_empty() && ours == 0 && tab.page.as_deref() == Some("dashboard")
            {
                Ok(tab.clone())
            } else {
                Err("a registration or a last-resort cache is still there".to_owned())
            }
        },
    );
    // A fresh document is no longer controlled either.
    scene.open("/?after=kill");
    let fresh = read(&scene).expect("the dashboard can be read");
    assert!(!fresh.controlled, "{}", fresh.line());
    stop_haproxy(&mut scene);
    navigate(&scene, "/index.html?z=1");
    let stranded = wait_tab(
        &scene,
        DEADLINE,
        "the navigation fails without a worker",
        |tab| {
            if tab.served_by.is_some() {
                panic!("the removed worker still answered: {}", tab.line())
            } else if tab.shows_error_page() {
                Ok(tab.clone())
            } else {
                Err("the old document is still shown".to_owned())
            }
        },
    );
    // HAProxy back, so the scene's closing CSP check can read this origin's record.
    scene.stack.haproxy_mut().restart();
    scene.note(format!(
        "after the kill switch: {} registrations, caches {:?}; then {}",
        gone.registrations.len(),
        gone.caches,
        stranded.url
    ));
}

/// api-main flaps (down and up every 2 s) for 2 minutes under an open dashboard. Bound, from
/// the guard's rule: a return is counted as a bounce when a maintenance page loads again
/// within `short_ms`, and after `trips` bounces no return happens before the site stayed up
/// `hold_ms` (longer than a flap). So during the flapping the tab returns at most `trips`
/// times, and loads the maintenance page at most `trips + 1` times (the first hand-over,
/// then once per return), however long the flapping lasts; the "unstable" message shows;
/// and once the flapping stops the tab is back on the dashboard by itself.
pub fn flapping_is_bounded_by_the_loop_guard(engine: Engine) {
    let guard = GuardConfig::default();
    let trips = guard.trips;
    let mut scene = Scene::start(engine, Pace::Fast);
    scene.open_dashboard();
    let start = read(&scene).expect("the dashboard can be read");
    let mut journal = String::new();
    let mut last: Option<(u32, u32)> = None;
    let mut unstable_seen = false;
    let flap = Instant::now();
    let mut watch = |scene: &Scene, until: Instant, journal: &mut String| {
        while Instant::now() < until {
            if let Ok(tab) = read(scene) {
                assert_not_stranded(&tab, scene, journal);
                let loads = (tab.dashboard_loads, tab.maintenance_loads);
                if last != Some(loads) || (tab.unstable && !unstable_seen) {
                    last = Some(loads);
                    let _ = writeln!(journal, "{:6.1?} {}", flap.elapsed(), tab.line());
                }
                if tab.unstable && tab.maintenance {
                    unstable_seen = true;
                }
            }
            std::thread::sleep(driver::browser::BROWSER_POLL);
        }
    };
    let mut cycle = 0;
    while flap.elapsed() < FLAPPING {
        let down_at = flap + FLAP_HALF * 2 * cycle;
        watch(&scene, down_at, &mut journal);
        scene.crash(Role::ApiMain);
        watch(&scene, down_at + FLAP_HALF, &mut journal);
        scene.stack.server_mut(Role::ApiMain).restart();
        cycle += 1;
    }
    let _ = writeln!(
        journal,
        "{:6.1?} flapping over after {cycle} cycles",
        flap.elapsed()
    );
    let during = read(&scene).expect("the tab can be read");
    let healthy = Instant::now();
    let end = wait_tab(
        &scene,
        DEADLINE + Duration::from_millis(u64::from(guard.hold_ms)),
        "the tab is back on the live dashboard after the flapping",
        |tab| {
            assert_not_stranded(tab, &scene, &journal);
            if tab.is_live_dashboard() {
                Ok(tab.clone())
            } else {
                Err("not on the live dashboard yet".to_owned())
            }
        },
    );
    scene.record_healthy_to_back(healthy.elapsed());
    let returns = during.dashboard_loads - start.dashboard_loads;
    let maintenance = during.maintenance_loads - start.maintenance_loads;
    assert!(
        unstable_seen,
        "{cycle} flaps and the maintenance page never said the site was unstable\n{journal}"
    );
    assert!(
        returns <= trips,
        "{returns} returns to the dashboard during {cycle} flaps: more than the guard's \
         {trips}\n{journal}"
    );
    assert!(
        maintenance <= trips + 1,
        "{maintenance} maintenance page loads during {cycle} flaps: more than {}\n{journal}",
        trips + 1
    );
    scene.note(format!(
        "{cycle} flaps: {returns} returns, {maintenance} maintenance loads (bound {trips} / {}); \
         {} dashboard loads in all",
        trips + 1,
        end.dashboard_loads - start.dashboard_loads
    ));
    eprintln!("    flapping journal:\n{journal}");
}
