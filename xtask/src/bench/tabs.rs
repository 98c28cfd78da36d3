//! P3: five maintenance tabs in headless Chromium, from the tier being healthy again until
//! each shows the dashboard, with the page as shipped and with the base 5 s rule.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use tempfile::TempDir;
use tests::{browser::Browser, Role, Stack};

use super::{Bench, Figure, FigureId, Goal, Rng, Series, Summary, Unit};

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
/// The comparator's `<body>` attributes: the base 5 s rule.
const BASE_RULE: [(&str, &str); 3] = [
    ("data-jitter", "0"),
    ("data-confirm-ms", "0"),
    ("data-spread-ms", "0"),
];

/// What a tab shows, read in one script.
const READ_TAB_JS: &str = r#"
const body = document.body;
const nav = performance.getEntriesByType("navigation")[0];
let d = 0, m = 0;
try { d = +sessionStorage.dashboardLoads || 0; m = +sessionStorage.maintenanceLoads || 0; } catch (e) {}
return {
  page: body && body.dataset.page ? body.dataset.page : null,
  state: body && body.dataset.state ? body.dataset.state : null,
  path: location.pathname,
  dashboard_loads: d, maintenance_loads: m,
  shown_at_ms: nav && nav.domContentLoadedEventEnd > 0 ? performance.timeOrigin + nav.domContentLoadedEventEnd : null,
};
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

/// One run of one variant: seconds per tab until back, and whether each navigated once.
struct RunResult {
    seconds: Vec<f64>,
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
    let tabs: Vec<Browser> = (0..TABS).map(|_| Browser::start()).collect();
    let mut medians = [Vec::new(), Vec::new()];
    let mut all_seconds = [Vec::new(), Vec::new()];
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
                    "median {} (tabs: {}), navigations per tab: {:?}",
                    Unit::Seconds.format(median),
                    seconds_list(&result.seconds),
                    result.navigations
                ),
            );
            findings.push(format!(
                "run {run}, {label} (outage {:.1} s after the last tab showed it): tabs back \
                 after {}; navigations per tab {:?}",
                outage.as_secs_f64(),
                seconds_list(&result.seconds),
                result.navigations
            ));
            medians[variant].push(median);
            all_seconds[variant].extend(result.seconds);
            exactly_once[variant] += once;
        }
    }
    drop(tabs);
    let total = TABS * bench.runs;
    let describe = |variant: usize| {
        let slowest = all_seconds[variant]
            .iter()
            .copied()
            .fold(f64::NAN, f64::max);
        format!(
            "slowest tab {}; one navigation in {}/{total} tabs",
            Unit::Seconds.format(slowest),
            exactly_once[variant]
        )
    };
    let [ours_medians, base_medians] = medians;
    let mut ours = Series::new("page as shipped", ours_medians, Unit::Seconds);
    ours.detail = Some(describe(0));
    let mut comparator = Series::new("base 5 s rule", base_medians, Unit::Seconds);
    comparator.detail = Some(describe(1));
    let met = ours.summary().is_some_and(|s| s.median <= 3.0) && exactly_once[0] == total;
    Ok(Figure {
        id: FigureId::P3,
        goal: Goal {
            text: "median ≤ 3 s, exactly one navigation per tab".to_owned(),
            met,
        },
        findings,
        method: format!(
            "{TABS} headless Chromium instances (one window each, so every tab is visible and \
             probes; the end-to-end harness's WebDriver guard) and, per run and variant, a \
             fresh stack (new port, so fresh sessionStorage). api-main is killed and HAProxy \
             reports it DOWN; each tab then opens `/`, gets the maintenance page in place, and \
             its client shows `api-down` after its first probe. The outage then lasts \
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
             {TABS} tabs.\n\n\
             Ours: www/maintenance.html as shipped. Comparator: a temporary copy of www/ \
             whose maintenance page has `data-jitter=\"0\" data-confirm-ms=\"0\" \
             data-spread-ms=\"0\"` (the same 5 s interval and 3 s probe timeout): the base \
             rule \"probe every 5 s, go back on the first healthy answer\" (the machine \
             always confirms; with 0 ms the confirming pair follows at once).",
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
    stack.server_mut(Role::ApiMain).kill(tests::Signal::SIGKILL);
    stack.wait_server_status(Role::ApiMain, "DOWN", DEADLINE);
    let url = stack.url("/");
    for (i, tab) in tabs.iter().enumerate() {
        tab.goto(&url);
        wait_for(bench, &format!("tab {} shows api-down", i + 1), || {
            let view = TabView::read(tab)?;
            if view.state.as_deref() == Some("api-down") && view.path == "/" {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        })?;
    }
    bench.pause(outage)?;
    stack.server_mut(Role::ApiMain).restart();
    let healthy_at = epoch_ms();
    let started = Instant::now();
    let mut back: Vec<Option<f64>> = vec![None; tabs.len()];
    while back.iter().any(Option::is_none) {
        bench.check_interrupt()?;
        for (slot, tab) in back.iter_mut().zip(tabs) {
            if slot.is_none() {
                if let Ok(view) = TabView::read(tab) {
                    if view.on_dashboard() {
                        *slot = view.shown_at_ms;
                    }
                }
            }
        }
        if started.elapsed() > DEADLINE {
            let views: Vec<String> = tabs
                .iter()
                .map(|tab| format!("{:?}", TabView::read(tab)))
                .collect();
            bail!(
                "not every tab was back on the dashboard {DEADLINE:?} after api-main \
                 restarted; tabs: {}",
                views.join("; ")
            );
        }
        bench.pause(Duration::from_millis(100))?;
    }
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
    super::stop_stack(stack);
    let seconds = back
        .into_iter()
        .map(|at| (at.unwrap_or(f64::NAN) - healthy_at) / 1000.0)
        .collect();
    Ok(RunResult {
        seconds,
        navigations,
    })
}

/// Polls `check` every 100 ms until it holds, for at most [`DEADLINE`].
fn wait_for(
    bench: &Bench,
    what: &str,
    mut check: impl FnMut() -> Result<(), String>,
) -> Result<()> {
    let started = Instant::now();
    loop {
        bench.check_interrupt()?;
        match check() {
            Ok(()) => return Ok(()),
            Err(seen) if started.elapsed() > DEADLINE => {
                bail!("timed out after {DEADLINE:?} waiting until {what}; last seen: {seen}")
            }
            Err(_) => bench.pause(Duration::from_millis(100))?,
        }
    }
}
