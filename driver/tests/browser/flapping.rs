//! F7: api-main flaps under an open tab. No reload loop: every return to the dashboard needs
//! a recovery that actually happened, a recovery too short to be confirmed moves nothing, and
//! once the flapping stops the tab ends on the dashboard.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use driver::browser::{Engine, BROWSER_POLL};
use driver::Role;

use crate::support::{Pace, Scene, View, DEADLINE};

/// Half a flap: api-main is down this long, then up this long.
const HALF_PERIOD: Duration = Duration::from_secs(2);

/// Flap cycles (down + up): 5 × 4 s = 20 s.
const CYCLES: u32 = 5;

/// Recoveries shorter than the confirmation delay, one every [`HALF_PERIOD`].
const BLIPS: u32 = 6;

/// How long api-main is back during a blip. The [`Pace::Eager`] client probes every 0.25 s,
/// so it always sees a blip, and confirms 1 s later, when the blip is long over.
const BLIP: Duration = Duration::from_millis(400);

/// A blip that lasted this long (the test process stalled) could be confirmed: the
/// scenario would prove nothing, so it stops.
const BLIP_LIMIT: Duration = Duration::from_millis(800);

/// The page loads seen while watching the tab: a line per change of the load counters.
struct Journal {
    started: Instant,
    last: Option<(u32, u32)>,
    lines: String,
}

impl Journal {
    fn new() -> Journal {
        Journal {
            started: Instant::now(),
            last: None,
            lines: String::new(),
        }
    }

    fn note_event(&mut self, event: &str) {
        let _ = writeln!(
            self.lines,
            "{:6.2}s  {event}",
            self.started.elapsed().as_secs_f64()
        );
    }

    fn observe(&mut self, view: &View) {
        let loads = (view.dashboard_loads, view.maintenance_loads);
        if self.last != Some(loads) {
            self.last = Some(loads);
            let page = if view.maintenance {
                format!(
                    "maintenance ({})",
                    view.state.as_deref().unwrap_or("starting")
                )
            } else {
                format!("{:?}", view.page.as_deref().unwrap_or("other"))
            };
            self.note_event(&format!(
                "loads: dashboard {} maintenance {}  now {page} at {}",
                loads.0, loads.1, view.url
            ));
        }
    }

    /// Watches the tab until `until`, journalling every page load it sees; returns the last
    /// reading.
    fn watch(&mut self, scene: &Scene, until: Instant) -> Option<View> {
        let mut last = None;
        loop {
            if let Ok(view) = scene.try_view() {
                self.observe(&view);
                last = Some(view);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return last;
            }
            std::thread::sleep(left.min(BROWSER_POLL));
        }
    }
}

/// Sets api-main's administrative state in HAProxy (`ready` or `maint`) through the runtime
/// API: unlike a restart, this opens and closes a recovery at a precise moment.
fn set_api_main(scene: &Scene, state: &str) {
    let command = format!("set server api/api-main state {state}");
    match scene.stack.runtime_api(&command) {
        Ok(answer) if answer.trim().is_empty() => {}
        Ok(answer) => panic!("`{command}` answered {answer:?}"),
        Err(error) => panic!("`{command}` failed: {error}\n{}", scene.logs()),
    }
}

/// F7: see the module documentation.
///
/// Phase 1, crash flapping: api-main is killed and restarted every 2 s for 20 s. The bounds
/// come from the rules, not from timing: the client navigates at most once per page, and only
/// after a confirmed healthy pair, which needs HAProxy to see api-main UP; each restart gives
/// at most one such window, since the tab then sits on the dashboard (which leaves only on a
/// new outage) or on a fresh maintenance page that needs a new window. So with R restarts,
/// returns to the dashboard ≤ R and maintenance page loads ≤ R + 1 (one per dashboard that
/// hands over, plus client navigations that landed on the page served in place again). A
/// reload loop breaks them.
///
/// Phase 2, blips: api-main comes back for 0.4 s every 2 s, less than the 1 s confirmation.
/// None of these is an actual recovery, so the tab must not move at all; then a real one
/// brings it back exactly once.
pub fn f7_api_main_flaps(engine: Engine) {
    let mut scene = Scene::start(engine, Pace::Eager);
    let start = scene.open_dashboard();
    let mut journal = Journal::new();
    journal.observe(&start);

    // Phase 1: crash flapping.
    let mut restarts = 0;
    let flap = Instant::now();
    for cycle in 0..CYCLES {
        let kill_at = flap + HALF_PERIOD * 2 * cycle;
        journal.watch(&scene, kill_at);
        scene.crash(Role::ApiMain);
        journal.note_event("api-main killed");
        journal.watch(&scene, kill_at + HALF_PERIOD);
        scene.stack.server_mut(Role::ApiMain).restart();
        restarts += 1;
        journal.note_event("api-main restarted");
    }
    // The flapping is over: api-main stays up from the last restart on.
    let healthy = Instant::now();
    let end = scene.wait(
        DEADLINE,
        "the tab settles on the dashboard after the flapping",
        |view| {
            journal.observe(view);
            let api_up = view.servers.get("api-main").map(String::as_str) == Some("UP");
            if view.is_dashboard_with_data() && api_up {
                Ok(view.clone())
            } else {
                Err("not on the dashboard with api-main UP yet".to_owned())
            }
        },
    );
    scene.record_healthy_to_back(healthy.elapsed());
    // And it stays there: two more refreshes of the dashboard, without another page load.
    let end = scene.wait(
        DEADLINE,
        "the dashboard stays put for two more refreshes",
        |view| {
            journal.observe(view);
            assert_eq!(
                (view.dashboard_loads, view.maintenance_loads),
                (end.dashboard_loads, end.maintenance_loads),
                "the tab left the dashboard after the flapping stopped: {}\n{}",
                view.summary_line(),
                journal.lines
            );
            if view.health_polls >= end.health_polls + 2 {
                Ok(view.clone())
            } else {
                Err("fewer than two more refreshes yet".to_owned())
            }
        },
    );
    let returns = end.dashboard_loads - start.dashboard_loads;
    let maintenance_loads = end.maintenance_loads - start.maintenance_loads;
    assert!(
        returns <= restarts,
        "{returns} returns to the dashboard for {restarts} recoveries: more than one return \
         per recovery\n{}",
        journal.lines
    );
    assert!(
        maintenance_loads <= restarts + 1,
        "{maintenance_loads} maintenance page loads for {restarts} recoveries: a reload \
         loop\n{}",
        journal.lines
    );

    // Phase 2: blips shorter than the confirmation delay.
    set_api_main(&scene, "maint");
    journal.note_event("api-main in MAINT");
    let waiting = scene.wait(
        DEADLINE,
        "the dashboard hands over to the maintenance page, once",
        |view| {
            journal.observe(view);
            assert!(
                view.maintenance_loads <= end.maintenance_loads + 1,
                "a reload loop while api-main is in MAINT: {}\n{}",
                view.summary_line(),
                journal.lines
            );
            if view.is_maintenance_in(&["api-down"]) {
                Ok(view.clone())
            } else {
                Err("not the maintenance page in api-down yet".to_owned())
            }
        },
    );
    let blips = Instant::now();
    for blip in 0..BLIPS {
        journal.watch(&scene, blips + HALF_PERIOD * blip);
        let opened = Instant::now();
        set_api_main(&scene, "ready");
        journal.watch(&scene, opened + BLIP);
        set_api_main(&scene, "maint");
        let lasted = opened.elapsed();
        journal.note_event(&format!("blip of {lasted:.2?}"));
        assert!(
            lasted < BLIP_LIMIT,
            "a blip lasted {lasted:.2?}: the test process stalled, so it could have been \
             confirmed and proves nothing"
        );
    }
    let after = journal
        .watch(&scene, blips + HALF_PERIOD * BLIPS)
        .expect("the tab can be read");
    assert_eq!(
        (after.dashboard_loads, after.maintenance_loads),
        (waiting.dashboard_loads, waiting.maintenance_loads),
        "the tab navigated on a recovery shorter than the confirmation delay: {}\n{}",
        after.summary_line(),
        journal.lines
    );
    set_api_main(&scene, "ready");
    journal.note_event("api-main ready for good");
    let back = scene.wait_back_on_dashboard(&after, "the tab returns after the blips");
    journal.observe(&back);
    scene.note(format!(
        "{restarts} restarts: {returns} returns, {maintenance_loads} maintenance loads; \
         {BLIPS} blips: 0 moves"
    ));
    eprintln!("    F7 journal:\n{}", journal.lines);
}
