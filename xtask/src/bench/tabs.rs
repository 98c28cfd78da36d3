//! P3: five maintenance tabs in headless Chromium, from the tier being healthy again until
//! each shows the dashboard, with the page as shipped and with the base 5 s rule.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use driver::browser::{Browser, Engine};
use driver::{Role, Stack};
use serde_json::Value;
use tempfile::TempDir;

use super::harness::{Bench, Figure, FigureId, Goal, Rng, Series, Summary, Unit};

/// Open tabs, each a Chromium of its own (a visible window: hidden tabs pause probing).
const TABS: usize = 5;
/// Longest wait for a tab to show the outage, and for all tabs to return.
const DEADLINE: Duration = Duration::from_secs(60);
/// After the last tab is back, tabs are watched this long for any further navigation.
const WATCH: Duration = Duration::from_secs(2);
/// The outage lasts this long after the last tab showed it, plus up to `OUTAGE_SPREAD`
/// (seeded), so recovery lands at a different point of the tabs' probe cycles each run.
const OUTAGE_MIN: Duration = Duration::from_secs(1);
const OUTAGE_SPREAD: Duration = Duration::from_secs(5);
/// Tabs are opened this far apart, so their probe cycles (5 s) start at different moments,
/// as tabs that people opened at different times do.
const STAGGER: Duration = Duration::from_millis(1000);
/// The comparator's `<body>` attributes: the base 5 s rule (as `herd::base_rule`).
const BASE_RULE: [(&str, &str); 5] = [
    ("data-jitter", "0"),
    ("data-confirm-ms", "0"),
    ("data-spread-ms", "0"),
    ("data-phase-spread", "off"),
    ("data-hint", "off"),
];

/// What a tab shows, read in one script.
const READ_TAB_JS: &str = r#"
const body = document.body;
const nav = performance.getEntriesByType("navigation")[0];
let d = 0, m = 0, h = null;
try {
  d = +sessionStorage.dashboardLoads || 0; m = +sessionStorage.maintenanceLoads || 0;
  h = sessionStorage.benchHealthySeenAt ? +sessionStorage.benchHealthySeenAt : null;
} catch (e) {}
return {
  page: body && body.dataset.page ? body.dataset.page : null,
  state: body && body.dataset.state ? body.dataset.state : null,
  path: location.pathname,
  dashboard_loads: d, maintenance_loads: m, healthy_seen_ms: h,
  shown_at_ms: nav && nav.domContentLoadedEventEnd > 0 ? performance.timeOrigin + nav.domContentLoadedEventEnd : null,
};
"#;

/// Installed on a maintenance page showing `api-down`: keeps in sessionStorage (which the
/// dashboard loaded next in the tab can still read) the moment the client last left
/// `api-down`, i.e. received the healthy pair that led to the navigation.
const WATCH_HEALTHY_JS: &str = r#"
const body = document.body;
let down = body.dataset.state === "api-down";
new MutationObserver(() => {
  const state = body.dataset.state;
  if (state === "api-down") { down = true; return; }
  if (down && state) {
    down = false;
    try { sessionStorage.benchHealthySeenAt = String(Date.now()); } catch (e) {}
  }
}).observe(body, { attributes: true, attributeFilter: ["data-state"] });
return null;
"#;

/// One reading of a tab.
#[derive(Debug, Default)]
struct TabView {
    page: Option<String>,
    state: Option<String>,
    path: String,
    dashboard_loads: u64,
    maintenance_loads: u64,
    shown_at_ms: Option<f64>,
    healthy_seen_ms: Option<f64>,
}

impl TabView {
    fn read(tab: &Browser) -> Result<TabView, String> {
        let value = tab.try_eval(READ_TAB_JS)?;
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        let count = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        Ok(TabView {
            page: text("page"),
            state: text("state"),
            path: text("path").unwrap_or_default(),
            dashboard_loads: count("dashboard_loads"),
            maintenance_loads: count("maintenance_loads"),
            shown_at_ms: value.get("shown_at_ms").and_then(Value::as_f64),
            healthy_seen_ms: value.get("healthy_seen_ms").and_then(Value::as_f64),
        })
    }

    fn on_dashboard(&self) -> bool {
        self.page.as_deref() == Some("dashboard") && self.shown_at_ms.is_some()
    }

    /// Page loads after the maintenance page: dashboards plus maintenance reloads.
    fn navigations(&self) -> u64 {
        self.dashboard_loads + self.maintenance_loads.saturating_sub(1)
    }
}

/// One run of one variant, per tab: seconds from the tier's return until back, seconds from
/// the tab's own healthy answer until back, and the navigations made.
struct RunResult {
    seconds: Vec<f64>,
    after_healthy: Vec<f64>,
    navigations: Vec<u64>,
}

/// Measures P3.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let base_www = base_rule_www()?;
    let variants: [(&str, &Path); 2] = [
        ("page as shipped", Path::new("www")),
        ("base 5 s rule", base_www.path()),
    ];
    println!("P3: starting {TABS} headless Chromium windows");
    let tabs: Vec<Browser> = (0..TABS)
        .map(|_| Browser::start(Engine::Chromium))
        .collect();
    let mut medians = [Vec::new(), Vec::new()];
    let mut all_seconds = [Vec::new(), Vec::new()];
    let mut all_after_healthy = [Vec::new(), Vec::new()];
    let mut exactly_once = [0_usize, 0];
    let mut findings = Vec::new();
    for run in 1..=bench.runs {
        let outage = OUTAGE_MIN + OUTAGE_SPREAD.mul_f64(Rng::new(0x33_u64 + run as u64).unit());
        for (variant, (label, www)) in variants.iter().enumerate() {
            bench.check_interrupt()?;
            let result = one_run(bench, &tabs, www, outage)?;
            let median = Summary::of(&result.seconds).map_or(f64::NAN, |s| s.median);
            let once = result.navigations.iter().filter(|n| **n == 1).count();
            bench.progress(
                FigureId::P3,
                run,
                label,
                &format!(
                    "median {} (tabs: {}; after their own healthy answer: {}), navigations \
                     per tab: {:?}",
                    Unit::Seconds.format(median),
                    seconds_list(&result.seconds),
                    seconds_list(&result.after_healthy),
                    result.navigations
                ),
            );
            findings.push(format!(
                "run {run}, {label} (outage {:.1} s after the last tab showed it): tabs back \
                 after {}; after each tab's own healthy answer {}; navigations per tab {:?}",
                outage.as_secs_f64(),
                seconds_list(&result.seconds),
                seconds_list(&result.after_healthy),
                result.navigations
            ));
            medians[variant].push(median);
            all_seconds[variant].extend(result.seconds);
            all_after_healthy[variant].extend(result.after_healthy);
            exactly_once[variant] += once;
        }
    }
    drop(tabs);
    let total = TABS * bench.runs;
    let pooled = |variant: usize| Summary::of(&all_seconds[variant]).map_or(f64::NAN, |s| s.median);
    let describe = |variant: usize| {
        let slowest = all_seconds[variant]
            .iter()
            .copied()
            .fold(f64::NAN, f64::max);
        let after_healthy = Summary::of(&all_after_healthy[variant]).map_or(f64::NAN, |s| s.median);
        format!(
            "median over all {total} tabs {}; slowest tab {}; from each tab's own healthy \
             answer, median {}; one navigation in {}/{total} tabs",
            Unit::Seconds.format(pooled(variant)),
            Unit::Seconds.format(slowest),
            Unit::Seconds.format(after_healthy),
            exactly_once[variant]
        )
    };
    let [ours_medians, base_medians] = medians;
    let mut ours = Series::new("page as shipped", ours_medians, Unit::Seconds);
    ours.detail = Some(describe(0));
    let mut comparator = Series::new("base 5 s rule", base_medians, Unit::Seconds);
    comparator.detail = Some(describe(1));
    let met = pooled(0) <= pooled(1) && exactly_once[0] == total && exactly_once[1] == total;
    Ok(Figure {
        id: FigureId::P3,
        goal: Goal {
            text: format!(
                "median over all {total} tabs ≤ the base rule's in the same run, exactly one \
                 navigation per tab"
            ),
            met,
        },
        findings,
        method: format!(
            "{TABS} headless Chromium instances (one window each, so every tab is visible and \
             probes; the end-to-end harness's WebDriver guard) and, per run and variant, a \
             fresh stack (new port, so fresh sessionStorage). api-main is killed and HAProxy \
             reports it DOWN; the tabs then open `/` {} s apart (so their 5 s probe cycles \
             are spread out, as for tabs people opened at different times), each gets the \
             maintenance page in place, and its client shows `api-down` after its first \
             probe. The outage then lasts \
             another {}–{} s (seeded per run, the same for both variants), so recovery lands \
             at a different point of the tabs' probe cycles. api-main is restarted; the \
             clock starts when the new process reports its address (\"tier healthy again\"; \
             HAProxy's own `rise 2` detection is part of what the tabs wait for). A tab is \
             back when the dashboard's document has loaded: its \
             `performance.timeOrigin + domContentLoadedEventEnd`, on the same machine clock, \
             so the time does not depend on how often WebDriver looks. After the last tab is \
             back, every tab is watched {} s more; navigations per tab are counted from the \
             pages' own hooks (`sessionStorage.dashboardLoads` plus \
             `maintenanceLoads` beyond the first). The figure per run is the median over the \
             {TABS} tabs; the goal compares the medians over every tab of every run (at least \
             15 tabs with the default 3 runs), ours against the base rule's. The detail also \
             gives, per tab, the time from its own first sign of recovery (the moment its \
             client left `api-down`: the hint, or a healthy probe pair; kept in sessionStorage \
             by a MutationObserver the bench installs) until the dashboard: the part the \
             client's confirmation and spread decide. For a client that only probes every \
             5 s, the wait for the next probe is 2.5 s at the median after HAProxy's rise \
             detection (≈0.5–0.75 s); the recovery hint removes that wait.\n\n\
             Ours: www/maintenance.html as shipped (hint, phase spread, 250 ms confirmation). \
             Comparator: a temporary copy of www/ whose maintenance page has \
             `data-jitter=\"0\" data-confirm-ms=\"0\" data-spread-ms=\"0\" \
             data-phase-spread=\"off\" data-hint=\"off\"` (the same 5 s interval and 3 s \
             probe timeout): the base rule \"probe every 5 s, go back on the first healthy \
             answer\" (the machine always confirms; with 0 ms the confirming pair follows at \
             once).",
            STAGGER.as_secs_f64(),
            OUTAGE_MIN.as_secs(),
            (OUTAGE_MIN + OUTAGE_SPREAD).as_secs(),
            WATCH.as_secs()
        ),
        ours,
        comparator,
    })
}

fn seconds_list(seconds: &[f64]) -> String {
    let shown: Vec<String> = seconds.iter().map(|s| format!("{s:.2}")).collect();
    format!("{} s", shown.join(", "))
}

/// A copy of www/ whose maintenance page follows the base 5 s rule.
fn base_rule_www() -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("bench-www-")
        .tempdir()
        .context("could not create a temporary directory")?;
    copy_dir(Path::new("www"), dir.path())?;
    let page_path = dir.path().join("maintenance.html");
    let mut page = fs::read_to_string(&page_path).context("could not read the copied page")?;
    for (name, value) in BASE_RULE {
        let key = format!("{name}=\"");
        let Some(start) = page.find(&key).map(|at| at + key.len()) else {
            bail!("www/maintenance.html has no {name} attribute; update xtask/src/bench/tabs.rs");
        };
        let len = page[start..]
            .find('"')
            .with_context(|| format!("{name} has no closing quote"))?;
        page.replace_range(start..start + len, value);
    }
    fs::write(&page_path, page).context("could not write the comparator's page")?;
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("could not create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("could not read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)
                .with_context(|| format!("could not copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn epoch_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1000.0)
}

fn one_run(bench: &Bench, tabs: &[Browser], www: &Path, outage: Duration) -> Result<RunResult> {
    let mut stack = Stack::builder().build_id("bench").www(www).start();
    stack
        .server_mut(Role::ApiMain)
        .kill(driver::Signal::SIGKILL);
    stack.wait_server_status(Role::ApiMain, "DOWN", DEADLINE);
    let url = stack.url("/");
    let opening = Instant::now();
    for (i, tab) in tabs.iter().enumerate() {
        bench.pause((STAGGER * i as u32).saturating_sub(opening.elapsed()))?;
        tab.goto(&url);
        bench.wait_until(DEADLINE, &format!("tab {} shows api-down", i + 1), || {
            Ok(TabView::read(tab).and_then(|view| {
                if view.state.as_deref() == Some("api-down") && view.path == "/" {
                    Ok(())
                } else {
                    Err(format!("{view:?}"))
                }
            }))
        })?;
        tab.try_eval(WATCH_HEALTHY_JS).map_err(anyhow::Error::msg)?;
    }
    bench.pause(outage)?;
    stack.server_mut(Role::ApiMain).restart();
    let healthy_at = epoch_ms();
    let mut back: Vec<Option<(f64, Option<f64>)>> = vec![None; tabs.len()];
    bench.wait_until(DEADLINE, "every tab is back on the dashboard", || {
        for (slot, tab) in back.iter_mut().zip(tabs) {
            if slot.is_none() {
                if let Ok(view) = TabView::read(tab) {
                    if view.on_dashboard() {
                        *slot = view.shown_at_ms.map(|shown| (shown, view.healthy_seen_ms));
                    }
                }
            }
        }
        Ok(if back.iter().all(Option::is_some) {
            Ok(())
        } else {
            let views: Vec<String> = tabs
                .iter()
                .map(|tab| format!("{:?}", TabView::read(tab)))
                .collect();
            Err(format!("tabs: {}", views.join("; ")))
        })
    })?;
    bench.pause(WATCH)?;
    let mut navigations = Vec::new();
    for tab in tabs {
        let view = TabView::read(tab).map_err(anyhow::Error::msg)?;
        navigations.push(view.navigations());
        // A later stack may get the same port, hence the same origin and storage: clear it.
        // Then leave the origin before the stack goes, so the dashboard stops polling it.
        tab.try_eval("sessionStorage.clear(); return null;")
            .map_err(anyhow::Error::msg)?;
        tab.goto("about:blank");
    }
    super::harness::stop_stack(stack);
    let mut seconds = Vec::new();
    let mut after_healthy = Vec::new();
    for (i, (shown, seen)) in back.into_iter().flatten().enumerate() {
        let Some(seen) = seen else {
            bail!(
                "tab {} came back without its client having left `api-down` first",
                i + 1
            );
        };
        seconds.push((shown - healthy_at) / 1000.0);
        after_healthy.push((shown - seen) / 1000.0);
    }
    Ok(RunResult {
        seconds,
        after_healthy,
        navigations,
    })
}
