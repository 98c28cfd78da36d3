//! What every scenario shares: a stack with a www directory at a chosen pace, one browser
//! tab in the scenario's engine, a reading of the page's test hooks, waits that print everything on timeout, and the
//! timing records behind the table printed at the end.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use driver::browser::{Browser, Engine};
use driver::{default_www_dir, target_dir, Role, Signal, Stack, StackBuilder};
use serde::Deserialize;
use tempfile::TempDir;

/// Deadline of every wait: generous, it only fails a scenario that hangs. Recovery on the
/// shipped pace takes up to ~12 s (5 s ± 20 % interval, 0.5 s confirmation, 0–3 s spread).
pub const DEADLINE: Duration = Duration::from_secs(60);

/// How long HAProxy may take to mark a server down or up (it aims at well under 2 s).
pub const DETECTION: Duration = Duration::from_secs(30);

/// Lines of each process's log in a failure message.
const LOG_LINES: usize = 40;

/// The recovery client's timing knobs, set through the maintenance page's `<body data-*>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pace {
    /// The page exactly as shipped: 5 s interval, 0.5 s confirmation, 3 s spread.
    Shipped,
    /// A copy of www/ whose maintenance page probes every 1 s and spreads returns over
    /// 0.5 s, so most scenarios take seconds instead of tens of seconds.
    Fast,
    /// Probes every 0.25 s but confirms only after 1 s (the longest allowed): every short
    /// recovery is seen, so a client that skipped the confirmation would act on it.
    Eager,
}

impl Pace {
    /// The `<body>` attributes this pace rewrites; the others keep their shipped values
    /// (3 s probe timeout, ±20 % jitter, 0.5 s confirmation unless set here).
    fn attributes(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Pace::Shipped => &[],
            Pace::Fast => &[("data-interval-ms", "1000"), ("data-spread-ms", "500")],
            Pace::Eager => &[
                ("data-interval-ms", "250"),
                ("data-confirm-ms", "1000"),
                ("data-spread-ms", "500"),
            ],
        }
    }
}

/// One reading of the test hooks of whatever page the tab shows (dashboard, maintenance
/// page, or anything else), taken by a single script so the fields agree.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct View {
    /// `location.href`.
    pub url: String,
    /// `location.origin`.
    pub origin: String,
    /// `location.pathname`.
    pub path: String,
    /// The query parameters, in order.
    pub query: Vec<(String, String)>,
    /// `<body data-page>`: `dashboard` on the dashboard.
    pub page: Option<String>,
    /// `<body data-state>`, set by the recovery client on the maintenance page.
    pub state: Option<String>,
    /// `<body data-client>`: `fallback` when the Wasm client could not run.
    pub client: Option<String>,
    /// `<body data-build>` on the dashboard (the static build it saw first).
    pub build: Option<String>,
    /// Whether the page has the maintenance page's `#status`.
    pub maintenance: bool,
    /// `#status` (maintenance page).
    pub status: Option<String>,
    /// `#data-status` (dashboard): `ok` once /api/data has been rendered.
    pub data_status: Option<String>,
    /// `#summary` (dashboard).
    pub summary: Option<String>,
    /// Dashboard rows: server name to `data-state` (HAProxy's status string).
    pub servers: BTreeMap<String, String>,
    /// `sessionStorage.dashboardLoads`: dashboards loaded in this tab.
    pub dashboard_loads: u32,
    /// `sessionStorage.maintenanceLoads`: maintenance pages loaded in this tab.
    pub maintenance_loads: u32,
    /// How many `/healthz` requests this document has completed (Resource Timing).
    pub health_polls: u32,
}

const VIEW_JS: &str = r#"
const body = document.body;
const data = body ? body.dataset : {};
const text = (id) => { const e = document.getElementById(id); return e ? e.textContent.trim() : null; };
const servers = {};
for (const row of document.querySelectorAll("[data-server]")) servers[row.dataset.server] = row.dataset.state || "";
let loads = {};
try { loads = { d: +sessionStorage.dashboardLoads || 0, m: +sessionStorage.maintenanceLoads || 0 }; } catch (e) {}
const health = new URL("/healthz", location.href).href;
return {
  url: location.href, origin: location.origin, path: location.pathname,
  query: [...new URLSearchParams(location.search)],
  page: data.page ?? null, state: data.state ?? null, client: data.client ?? null, build: data.build ?? null,
  maintenance: !!document.getElementById("status") && !!document.getElementById("check-now"),
  status: text("status"), data_status: text("data-status"), summary: text("summary"), servers,
  dashboard_loads: loads.d || 0, maintenance_loads: loads.m || 0,
  health_polls: performance.getEntriesByName(health).length,
};
"#;

impl View {
    /// The dashboard, rendered from a successful `/api/data`.
    pub fn is_dashboard_with_data(&self) -> bool {
        self.page.as_deref() == Some("dashboard") && self.data_status.as_deref() == Some("ok")
    }

    /// The maintenance page with its client showing one of `states`.
    pub fn is_maintenance_in(&self, states: &[&str]) -> bool {
        self.maintenance && self.state.as_deref().is_some_and(|s| states.contains(&s))
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// Whether the URL carries the recovery client's cache-buster `v=<timestamp>`.
    pub fn has_cache_buster(&self) -> bool {
        self.param("v")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    }

    /// One line for "last seen" messages.
    pub fn summary_line(&self) -> String {
        format!(
            "{} page={:?} state={:?} client={:?} data={:?} build={:?} loads: dashboard {} \
             maintenance {} servers={:?}",
            self.url,
            self.page,
            self.state,
            self.client,
            self.data_status,
            self.build,
            self.dashboard_loads,
            self.maintenance_loads,
            self.servers
        )
    }
}

/// A running stack, the www directory it serves, and one browser tab.
pub struct Scene {
    // Fields drop in order: the browser first, then the stack, then the www copy it served.
    /// The browser tab.
    pub tab: Browser,
    /// HAProxy and the four origins.
    pub stack: Stack,
    _www: Option<TempDir>,
    key: Key,
}

impl Scene {
    /// Starts a stack serving www/ at `pace`, and a browser in `engine`.
    pub fn start(engine: Engine, pace: Pace) -> Scene {
        Scene::start_on(engine, pace, Stack::builder())
    }

    /// The same across hosts: each server in its own network namespace, the tab reaching
    /// the site through keepalived's VIP (needs root).
    pub fn across_hosts(engine: Engine, pace: Pace) -> Scene {
        Scene::start_on(engine, pace, Stack::builder().hosts())
    }

    fn start_on(engine: Engine, pace: Pace, mut builder: StackBuilder) -> Scene {
        let www = match pace {
            Pace::Shipped => None,
            paced => Some(paced_www(paced)),
        };
        if let Some(dir) = &www {
            builder = builder.www(dir.path());
        }
        let stack = builder.start();
        let tab = Browser::start(engine);
        Scene {
            tab,
            stack,
            _www: www,
            key: (current_scenario(), engine),
        }
    }

    /// `http://<haproxy><path>`.
    pub fn url(&self, path: &str) -> String {
        self.stack.url(path)
    }

    /// Opens `path` in the tab.
    pub fn open(&self, path: &str) {
        self.tab.goto(&self.url(path));
    }

    /// Reads the page's test hooks, or says why they could not be read (e.g. mid-navigation).
    pub fn try_view(&self) -> Result<View, String> {
        self.tab.try_eval_as(VIEW_JS)
    }

    /// Waits until `check` accepts a [`View`]; on timeout panics with the last view, the tab
    /// and every process's log.
    pub fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl FnMut(&View) -> Result<T, String>,
    ) -> T {
        self.tab.wait_for(
            timeout,
            what,
            |_| {
                let view = self.try_view()?;
                if view.client.as_deref() == Some("fallback") {
                    // Not worth waiting for: the Wasm client failed to start or trapped.
                    panic!(
                        "the maintenance page fell back to reloading: its Wasm client did not \
                         run\n{}\n{}",
                        view.summary_line(),
                        self.logs()
                    );
                }
                check(&view).map_err(|seen| format!("{seen}\n  view: {}", view.summary_line()))
            },
            || self.logs(),
        )
    }

    /// Every process's log tail and HAProxy's view of the servers.
    pub fn logs(&self) -> String {
        self.stack.logs(LOG_LINES)
    }

    /// Opens `/` and waits until the dashboard has rendered data, lists all four servers and
    /// shows both main servers UP.
    pub fn open_dashboard(&self) -> View {
        self.open("/");
        self.wait_dashboard("the dashboard shows data with all four servers")
    }

    /// Waits until the tab shows the dashboard with data, all four servers listed, both
    /// main servers UP.
    pub fn wait_dashboard(&self, what: &str) -> View {
        self.wait(DEADLINE, what, |view| {
            let mains_up = view.servers.get("static-main").map(String::as_str) == Some("UP")
                && view.servers.get("api-main").map(String::as_str) == Some("UP");
            if view.is_dashboard_with_data() && all_servers_listed(view) && mains_up {
                Ok(view.clone())
            } else {
                Err("not the dashboard with data and both main servers UP yet".to_owned())
            }
        })
    }

    /// Waits until the tab shows the maintenance page with its client in `state`.
    pub fn wait_maintenance(&self, states: &[&str], what: &str) -> View {
        self.wait(DEADLINE, what, |view| {
            if view.is_maintenance_in(states) {
                Ok(view.clone())
            } else {
                Err(format!("not the maintenance page in {states:?} yet"))
            }
        })
    }

    /// Waits until the recovery client has brought the tab back: the dashboard, reloaded
    /// once more than `before` counted, with `v=` in the URL and data rendered. Asserts it
    /// was exactly one more load.
    pub fn wait_back_on_dashboard(&self, before: &View, what: &str) -> View {
        let back = self.wait(DEADLINE, what, |view| {
            if view.is_dashboard_with_data()
                && view.has_cache_buster()
                && view.dashboard_loads > before.dashboard_loads
            {
                Ok(view.clone())
            } else {
                Err("not back on a freshly loaded dashboard (with v=) yet".to_owned())
            }
        });
        assert_eq!(
            back.dashboard_loads,
            before.dashboard_loads + 1,
            "{what}: the dashboard was loaded more than once on the way back\nbefore: {}\nafter: {}",
            before.summary_line(),
            back.summary_line()
        );
        back
    }

    /// SIGKILLs `role` and makes sure it is gone.
    pub fn crash(&mut self, role: Role) {
        let server = self.stack.server_mut(role);
        server.kill(Signal::SIGKILL);
        assert!(
            server.wait_exit(Duration::from_secs(5)).is_some(),
            "{role} survived SIGKILL: {server:?}"
        );
    }

    /// Waits until HAProxy has marked `role` DOWN.
    pub fn wait_haproxy_down(&self, role: Role) {
        self.stack.wait_server_status(role, "DOWN", DETECTION);
    }

    /// The engine the tab runs in.
    pub fn engine(&self) -> Engine {
        self.tab.engine()
    }

    /// Saves a screenshot as `target/screenshots/<engine>/<file>`.
    pub fn screenshot(&self, file: &str) {
        let path = screenshot_dir().join(self.engine().name()).join(file);
        self.tab.screenshot(&path);
        eprintln!("    screenshot: {}", path.display());
    }

    /// Records how long it took from injecting a fault to the tab showing the outage.
    pub fn record_fault_to_maintenance(&self, took: Duration) {
        record(self.key, |m| m.fault_to_maintenance.push(took));
    }

    /// Records how long it took from the stack being healthy again (restart or SIGCONT
    /// returned) to the tab being back.
    pub fn record_healthy_to_back(&self, took: Duration) {
        record(self.key, |m| m.healthy_to_back.push(took));
    }

    /// Adds a note to this scenario's line in the timing table.
    pub fn note(&self, note: impl Into<String>) {
        let note = note.into();
        record(self.key, |m| m.notes.push(note));
    }
}

/// Reads the tab's record of Content-Security-Policy violations (kept in `sessionStorage` by
/// the pages' first inline script, so it spans every page the tab loaded) and of how many
/// pages ran that script.
const CSP_JS: &str = r#"
let s = {};
try { s = sessionStorage; } catch (e) { return null; }
return {
  origin: location.origin,
  violations: JSON.parse(s.cspViolations || "[]"),
  hooks: +s.cspHooks || 0,
  pages: (+s.dashboardLoads || 0) + (+s.maintenanceLoads || 0),
};
"#;

/// What [`CSP_JS`] reads.
#[derive(Debug, Deserialize)]
struct CspRecord {
    origin: String,
    violations: Vec<String>,
    hooks: u32,
    pages: u32,
}

impl Scene {
    /// The CSP violations every page this tab loaded from the stack reported
    /// (`securitypolicyviolation`). Panics if a page of ours did not run the listener (its
    /// script blocked or gone), or if the record cannot be read.
    pub fn csp_violations(&self) -> Vec<String> {
        let origin = self.url("");
        // As `location.origin` writes it: without the default port (the VIP's site is on 80).
        let origin = origin.trim_end_matches('/').trim_end_matches(":80");
        let read = || -> Option<CspRecord> {
            let record: Option<CspRecord> = self.tab.try_eval_as(CSP_JS).ok().flatten();
            record.filter(|record| record.origin == origin)
        };
        // The tab may be on a browser error page or another origin: the record lives in
        // this origin's sessionStorage, so read it from a plain same-origin document.
        let record = read().or_else(|| {
            self.tab.goto(&self.url("/assets/dashboard.css"));
            read()
        });
        let Some(record) = record else {
            panic!(
                "cannot read the CSP violation record of {origin} in the tab:\n{}",
                self.tab.describe()
            );
        };
        // Each page counts its load after the listener's script ran, so a page that counted
        // itself without a listener had that script blocked.
        assert!(
            record.hooks >= record.pages,
            "{} pages were loaded but only {} ran the CSP violation listener: is its inline \
             script's hash in haproxy.cfg's CSP?",
            record.pages,
            record.hooks
        );
        record.violations
    }

    /// Panics if any page this tab loaded from the stack reported a CSP violation. Every
    /// scene calls it when it ends (`Drop`), so every scenario, present and future, is
    /// covered; a scenario may call it earlier.
    pub fn assert_no_csp_violations(&self) {
        let violations = self.csp_violations();
        assert!(
            violations.is_empty(),
            "the Content-Security-Policy blocked something in this tab:\n  {}\n{}",
            violations.join("\n  "),
            self.logs()
        );
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // A scenario that failed already says why; a second panic would abort the process.
        if !std::thread::panicking() {
            self.assert_no_csp_violations();
        }
    }
}

/// Whether the dashboard lists the four servers (their states aside).
pub fn all_servers_listed(view: &View) -> bool {
    Role::ALL
        .iter()
        .all(|role| view.servers.contains_key(role.name()))
}

/// `target/screenshots` (one directory per engine below it).
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("screenshots")
}

/// A copy of the www directory (with the built client) whose maintenance page runs at
/// `pace`. HAProxy and static-fallback serve the copy; the shipped page stays untouched.
fn paced_www(pace: Pace) -> TempDir {
    let source = default_www_dir();
    let copy = tempfile::Builder::new()
        .prefix("www-paced-")
        .tempdir()
        .unwrap_or_else(|error| panic!("cannot create a temporary directory: {error}"));
    copy_dir(&source, copy.path());
    let page_path = copy.path().join("maintenance.html");
    let page = fs::read_to_string(&page_path).unwrap_or_else(|error| {
        panic!(
            "cannot read {}: {error}; build the client first (`cargo xtask build-client`)",
            page_path.display()
        )
    });
    let mut rewritten = page.clone();
    for &(name, value) in pace.attributes() {
        rewritten = set_body_attribute(&rewritten, name, value);
        assert!(
            rewritten.contains(&format!(" {name}=\"{value}\"")),
            "could not set {name} on the maintenance page's <body>"
        );
    }
    fs::write(&page_path, rewritten)
        .unwrap_or_else(|error| panic!("cannot write {}: {error}", page_path.display()));
    copy
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to)
        .unwrap_or_else(|error| panic!("cannot create {}: {error}", to.display()));
    let entries = fs::read_dir(from)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|error| panic!("cannot list {}: {error}", from.display()));
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            copy_dir(&source, &target);
        } else {
            fs::copy(&source, &target).unwrap_or_else(|error| {
                panic!(
                    "cannot copy {} to {}: {error}",
                    source.display(),
                    target.display()
                )
            });
        }
    }
}

/// Sets `name="value"` on the page's `<body>` tag, replacing the attribute's value if it is
/// there and adding it otherwise.
pub fn set_body_attribute(html: &str, name: &str, value: &str) -> String {
    // The first `<body` outside a comment (the page's comments mention `<body data-state>`).
    let in_comment = |at: usize| {
        html[..at]
            .rfind("<!--")
            .is_some_and(|open| !html[open..at].contains("-->"))
    };
    let start = html
        .match_indices("<body")
        .map(|(at, _)| at)
        .find(|&at| !in_comment(at))
        .unwrap_or_else(|| panic!("the maintenance page has no <body> tag"));
    let end = start + html[start..].find('>').expect("the <body> tag is closed");
    let tag = &html[start..end];
    let prefix = format!(" {name}=\"");
    let new_tag = match tag.find(&prefix) {
        Some(at) => {
            let value_start = at + prefix.len();
            let value_end = value_start
                + tag[value_start..]
                    .find('"')
                    .expect("attribute values are quoted");
            format!("{}{value}{}", &tag[..value_start], &tag[value_end..])
        }
        None => format!("{tag}{prefix}{value}\""),
    };
    format!("{}{new_tag}{}", &html[..start], &html[end..])
}

/// Durations and notes recorded by one scenario.
#[derive(Clone, Debug, Default)]
pub struct Measurements {
    fault_to_maintenance: Vec<Duration>,
    healthy_to_back: Vec<Duration>,
    notes: Vec<String>,
}

/// A scenario in one engine.
type Key = (&'static str, Engine);

/// One scenario in one engine, for the table printed after the run.
#[derive(Clone, Debug)]
struct Row {
    name: &'static str,
    engine: Engine,
    passed: bool,
    wall: Duration,
    measurements: Measurements,
}

static MEASUREMENTS: Mutex<BTreeMap<Key, Measurements>> = Mutex::new(BTreeMap::new());
static ROWS: Mutex<Vec<Row>> = Mutex::new(Vec::new());

thread_local! {
    static CURRENT: std::cell::Cell<&'static str> = const { std::cell::Cell::new("") };
}

fn current_scenario() -> &'static str {
    CURRENT.with(std::cell::Cell::get)
}

fn record(key: Key, change: impl FnOnce(&mut Measurements)) {
    let mut all = MEASUREMENTS.lock().unwrap_or_else(|p| p.into_inner());
    change(all.entry(key).or_default());
}

/// Runs one scenario in `engine`, recording its outcome and wall time for the table; a panic
/// becomes a failed trial with the panic's message.
pub fn run(
    name: &'static str,
    engine: Engine,
    scenario: fn(Engine),
) -> Result<(), libtest_mimic::Failed> {
    CURRENT.with(|current| current.set(name));
    let started = Instant::now();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| scenario(engine)));
    let wall = started.elapsed();
    let measurements = MEASUREMENTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&(name, engine))
        .unwrap_or_default();
    ROWS.lock().unwrap_or_else(|p| p.into_inner()).push(Row {
        name,
        engine,
        passed: outcome.is_ok(),
        wall,
        measurements,
    });
    outcome.map_err(|payload| {
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "the scenario panicked".to_owned());
        libtest_mimic::Failed::from(message)
    })
}

/// The timing table of every scenario run so far: a line per scenario, and per measure a
/// column per engine that ran; the last line sums each engine's wall time.
pub fn timing_table(total: Duration) -> String {
    let rows = ROWS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut engines: Vec<Engine> = rows.iter().map(|row| row.engine).collect();
    engines.sort();
    engines.dedup();
    let mut names: Vec<&'static str> = Vec::new();
    for row in &rows {
        if !names.contains(&row.name) {
            names.push(row.name);
        }
    }
    let find = |name: &str, engine: Engine| {
        rows.iter()
            .find(|row| row.name == name && row.engine == engine)
    };
    // One group of columns per measure, one column per engine in each.
    let cell = |text: String, width: usize| format!(" {text:<width$}");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nbrowser scenarios: seconds; 'fault -> maintenance' runs from the fault (signal or \
         restart) until the tab shows the outage,\n'healthy -> back' from the server being \
         healthy again (restart or SIGCONT returned) until the tab is back; n>1: median [max]; \
         FAILED: the scenario failed in that engine"
    );
    let (wall_w, time_w) = (8, 16);
    let mut header = format!("{:<44}", "");
    let mut engine_line = format!("{:<44}", "scenario");
    for (title, width) in [
        ("wall", wall_w),
        ("fault -> maintenance", time_w),
        ("healthy -> back", time_w),
    ] {
        header.push_str(&cell(title.to_owned(), (width + 1) * engines.len() - 1));
        for engine in &engines {
            engine_line.push_str(&cell(engine.name().to_owned(), width));
        }
        header.push_str(" |");
        engine_line.push_str(" |");
    }
    let _ = writeln!(out, "{header} notes");
    let _ = writeln!(out, "{engine_line}");
    for name in &names {
        let mut line = format!("{name:<44}");
        let mut notes = Vec::new();
        for measure in 0..3 {
            for &engine in &engines {
                let text = match (find(name, engine), measure) {
                    (None, _) => "-".to_owned(),
                    (Some(row), 0) if !row.passed => "FAILED".to_owned(),
                    (Some(row), 0) => format!("{:.1}", row.wall.as_secs_f64()),
                    (Some(row), 1) => spread(&row.measurements.fault_to_maintenance),
                    (Some(row), _) => spread(&row.measurements.healthy_to_back),
                };
                line.push_str(&cell(text, if measure == 0 { wall_w } else { time_w }));
            }
            line.push_str(" |");
        }
        for &engine in &engines {
            if let Some(row) = find(name, engine).filter(|row| !row.measurements.notes.is_empty()) {
                notes.push(format!("{engine}: {}", row.measurements.notes.join("; ")));
            }
        }
        let _ = writeln!(out, "{line} {}", notes.join(" / "));
    }
    let mut sums = format!("{:<44}", "all scenarios, per engine");
    for &engine in &engines {
        let wall: Duration = rows
            .iter()
            .filter(|r| r.engine == engine)
            .map(|r| r.wall)
            .sum();
        sums.push_str(&cell(format!("{:.1}", wall.as_secs_f64()), wall_w));
    }
    let _ = writeln!(out, "{sums}");
    let _ = writeln!(
        out,
        "{} runs ({} scenarios x {} engines) in {:.1} s",
        rows.len(),
        names.len(),
        engines.len(),
        total.as_secs_f64()
    );
    out
}

/// `-`, `1.23`, or `n=10 1.23 [2.34]`.
fn spread(durations: &[Duration]) -> String {
    let mut secs: Vec<f64> = durations.iter().map(Duration::as_secs_f64).collect();
    secs.sort_by(f64::total_cmp);
    match secs.as_slice() {
        [] => "-".to_owned(),
        [one] => format!("{one:.2}"),
        all => format!(
            "n={} {:.2} [{:.2}]",
            all.len(),
            all[all.len() / 2],
            all[all.len() - 1]
        ),
    }
}
