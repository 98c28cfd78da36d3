//! The Content-Security-Policy in the browser: the pages run under it (every scene's teardown
//! fails on a violation), and it really blocks what it must, which the teardown check sees.

use driver::browser::Engine;
use driver::{wait_until, Role};

use crate::support::{Pace, Scene, DEADLINE};

/// csp_blocks_injected_script: on the dashboard and on the maintenance page (served by
/// HAProxy), an inline script added at run time does not run, and the violation it causes
/// is in the record every scene's teardown checks. api-main is down for the maintenance page,
/// so its client keeps it on screen instead of taking the tab back to `/`.
pub fn csp_blocks_injected_script(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Shipped);
    for path in ["/", "/maintenance.html"] {
        if path == "/maintenance.html" {
            scene.crash(Role::ApiMain);
            scene.wait_haproxy_down(Role::ApiMain);
            scene.open(path);
            scene.wait_maintenance(&["api-down"], "the maintenance page shows api-main down");
        } else {
            scene.open_dashboard();
        }
        assert_eq!(
            scene.csp_violations(),
            Vec::<String>::new(),
            "{path} loaded with CSP violations"
        );
        let ran = scene.tab.eval(
            "const s = document.createElement('script'); \
             s.textContent = 'window.injectedRan = true'; \
             document.head.appendChild(s); return window.injectedRan === true;",
        );
        assert_eq!(
            ran, false,
            "{path}: an injected inline script ran despite the CSP"
        );
        let seen = wait_until(
            DEADLINE,
            &format!("{path}: the blocked script is reported"),
            || {
                let violations = scene.csp_violations();
                if violations.iter().any(|v| v.starts_with("script-src")) {
                    Ok(violations)
                } else {
                    Err(violations)
                }
            },
            || scene.logs(),
        );
        assert_eq!(seen.len(), 1, "{path}: {seen:?}");
        // Clear the record: this violation was the point, the teardown check looks for others.
        scene
            .tab
            .eval("sessionStorage.removeItem('cspViolations'); return null;");
    }
}
