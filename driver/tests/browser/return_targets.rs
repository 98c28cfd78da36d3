//! Where the recovery client takes the tab back to: the URL the tab was on (deep links keep
//! their path and query), and never anywhere off this origin, whatever `?return=` says.

use std::time::Instant;

use driver::browser::Engine;
use driver::Role;

use crate::support::{Pace, Scene, View, DEADLINE};

/// deep_link: a tab on `/some/page?x=1` during an outage comes back to that same URL, plus
/// `v=`. (static-main answers 404 for that path: only the URL matters here.)
pub fn deep_link(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Fast);
    let fault = Instant::now();
    scene.crash(Role::ApiMain);
    scene.wait_haproxy_down(Role::ApiMain);
    scene.open("/some/page?x=1");
    let shown = scene.wait_maintenance(&["api-down"], "the deep link shows the maintenance page");
    scene.record_fault_to_maintenance(fault.elapsed());
    assert_eq!(
        (shown.path.as_str(), shown.query.clone()),
        ("/some/page", vec![("x".to_owned(), "1".to_owned())]),
        "the maintenance page must be served in place: {}",
        shown.summary_line()
    );
    let healthy = {
        scene.stack.server_mut(Role::ApiMain).restart();
        Instant::now()
    };
    let back = wait_back_at(&scene, "/some/page", &[("x", "1")]);
    scene.record_healthy_to_back(healthy.elapsed());
    assert!(!back.maintenance, "{}", back.summary_line());
}

/// Waits until the tab is on this origin at `path` with exactly the query `params` plus a
/// fresh `v=`, off the maintenance page. Panics at once if the tab is ever seen on another
/// origin, or with a dialog open (a `javascript:` URL ran).
///
/// The URL comes from WebDriver, not from the page: for a 404 without a body (static-main's
/// answer to `/some/page`) Chromium shows its own error page, whose `location` is
/// `chrome-error://chromewebdata/`, while the tab's URL is still the one requested.
fn wait_back_at(scene: &Scene, path: &str, params: &[(&str, &str)]) -> View {
    let origin = scene.url("");
    let what = format!("the tab is back at {path} with {params:?} and v=");
    let expected: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    scene.tab.wait_for(
        DEADLINE,
        &what,
        |tab| {
            if let Some(text) = tab.alert_text() {
                panic!("a dialog opened ({text:?}): the return target ran script");
            }
            let url = tab.try_current_url()?;
            // Firefox reports the empty document between two pages of a navigation (one
            // the service worker answers among them) as about:blank: not another site.
            if url == "about:blank" {
                return Err("between two documents (about:blank)".to_owned());
            }
            let Some(local) = url.strip_prefix(&origin).filter(|l| l.starts_with('/')) else {
                panic!("the tab left this origin ({origin}): it is at {url}");
            };
            let view = scene.try_view()?;
            let (url_path, query) = local.split_once('?').unwrap_or((local, ""));
            let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
            let cache_buster = pairs.pop().and_then(|last| last.strip_prefix("v="));
            let fresh = cache_buster
                .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            if url_path == path && pairs == expected && fresh && !view.maintenance {
                Ok(view)
            } else {
                Err(format!(
                    "WebDriver URL {url}; page: {}",
                    view.summary_line()
                ))
            }
        },
        || scene.logs(),
    )
}

/// Return targets that must never take the tab off this origin or run script.
const HOSTILE: [&str; 6] = [
    "//elsewhere.example",
    "https://elsewhere.example/",
    "javascript:alert(1)",
    "%2F%2Felsewhere.example",
    "/%5Celsewhere.example",
    "java%0Ascript:alert(1)",
];

/// Percent-encodes everything but RFC 3986's unreserved characters, as
/// `encodeURIComponent` would for these inputs.
fn encode_component(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// hostile_return_targets: `/maintenance.html?return=<t>` with the stack healthy, for each
/// hostile `t` both as written and percent-encoded once more: the tab ends on this origin at
/// `/` with `v=`, never elsewhere. A well-formed target first, to show `return` is honoured.
pub fn hostile_return_targets(engine: Engine) {
    let scene = Scene::start(engine, Pace::Fast);
    scene.open(&format!(
        "/maintenance.html?return={}",
        encode_component("/some/page?x=1")
    ));
    wait_back_at(&scene, "/some/page", &[("x", "1")]);

    let mut checked = 0;
    for target in HOSTILE {
        for query_value in [target.to_owned(), encode_component(target)] {
            let path = format!("/maintenance.html?return={query_value}");
            let started = Instant::now();
            scene.open(&path);
            let back = wait_back_at(&scene, "/", &[]);
            assert!(
                back.page.as_deref() == Some("dashboard"),
                "{path}: {}",
                back.summary_line()
            );
            eprintln!("    {path} -> {} in {:.2?}", back.url, started.elapsed());
            checked += 1;
        }
    }
    scene.note(format!("{checked} hostile targets"));
}
