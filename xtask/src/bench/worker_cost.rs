//! P10: what the last-resort service worker (www/sw.js) adds to a normal navigation. The
//! dashboard is opened 50 times in a row in headless Chromium, with the worker controlling
//! the tab and, as the comparator, from a copy of www/ whose pages never register it.

use std::{fs, time::Duration};

use anyhow::{bail, Context, Result};
use driver::browser::{Browser, Engine};
use driver::Stack;
use serde_json::Value;
use tempfile::TempDir;

use super::harness::{Bench, Figure, FigureId, Goal, Series, Summary, Unit};

/// Navigations per run and variant.
const NAVIGATIONS: usize = 50;
/// The goal: the worker adds at most this much to the median navigation.
const GOAL_MS: f64 = 10.0;
/// How long the dashboard may take to install the worker.
const INSTALL_DEADLINE: Duration = Duration::from_secs(30);

/// The navigation's own timing: from its start until the document's last byte.
const TIMING_JS: &str = r#"
const n = performance.getEntriesByType("navigation")[0];
return { response_end: n ? n.responseEnd : null, worker_start: n ? n.workerStart : 0,
  controlled: !!(navigator.serviceWorker && navigator.serviceWorker.controller) };
"#;

/// One variant's navigation times (ms) over one run.
fn navigate(tab: &Browser, stack: &Stack, run: usize, controlled: bool) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(NAVIGATIONS);
    for i in 0..NAVIGATIONS {
        tab.goto(&stack.url(&format!("/?p9={run}-{i}")));
        let value = tab.try_eval(TIMING_JS).map_err(anyhow::Error::msg)?;
        if value["controlled"].as_bool() != Some(controlled) {
            bail!("navigation {i}: expected controlled = {controlled}, the tab says {value}");
        }
        let ms = value["response_end"]
            .as_f64()
            .with_context(|| format!("navigation {i} has no timing: {value}"))?;
        times.push(ms);
    }
    Ok(times)
}

/// The value at quantile `q` (nearest rank) of `values`.
fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A copy of www/ whose dashboard and maintenance page never register the worker.
fn without_worker_www() -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("www-no-worker-")
        .tempdir()?;
    let copy = |from: &std::path::Path, to: &std::path::Path| -> Result<()> {
        let mut stack = vec![(from.to_owned(), to.to_owned())];
        while let Some((from, to)) = stack.pop() {
            fs::create_dir_all(&to)?;
            for entry in fs::read_dir(&from)? {
                let entry = entry?;
                let target = to.join(entry.file_name());
                if entry.file_type()?.is_dir() {
                    stack.push((entry.path(), target));
                } else {
                    fs::copy(entry.path(), target)?;
                }
            }
        }
        Ok(())
    };
    copy(std::path::Path::new("www"), dir.path())?;
    for (file, call, instead) in [
        ("assets/dashboard.js", "registerLastResort(build);", ""),
        (
            "maintenance.html",
            "if (\"serviceWorker\" in navigator) navigator.serviceWorker",
            "if (false) navigator.serviceWorker",
        ),
    ] {
        let path = dir.path().join(file);
        let text = fs::read_to_string(&path)?;
        if !text.contains(call) {
            bail!("{file} no longer contains `{call}`: update P10's comparator");
        }
        fs::write(&path, text.replace(call, instead))?;
    }
    Ok(dir)
}

/// Measures P10.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let bare = without_worker_www()?;
    let mut with = Vec::new();
    let mut without = Vec::new();
    let mut added_medians = Vec::new();
    let mut all_with = Vec::new();
    let mut all_without = Vec::new();
    for run in 1..=bench.runs {
        bench.check_interrupt()?;
        // Without: a fresh browser on a site that never registers the worker.
        let stack = Stack::builder().www(bare.path()).build_id("bench").start();
        let tab = Browser::start(Engine::Chromium);
        // Warm up like the other variant, whose tab loads pages while the worker installs.
        for _ in 0..3 {
            tab.goto(&stack.url("/?p9=warm-up"));
        }
        let times = navigate(&tab, &stack, run, false)?;
        drop(tab);
        super::harness::stop_stack(stack);
        let plain = Summary::of(&times).map_or(f64::NAN, |s| s.median);
        bench.progress(
            FigureId::P10,
            run,
            "without worker",
            &format!("median {plain:.1} ms"),
        );
        all_without.extend(&times);
        without.push(plain);

        // With: the shipped site, once the dashboard has installed the worker.
        let stack = Stack::builder().build_id("bench").start();
        let tab = Browser::start(Engine::Chromium);
        tab.goto(&stack.url("/"));
        tab.wait_for(
            INSTALL_DEADLINE,
            "the worker controls the tab",
            |tab| {
                tab.goto(&stack.url("/?p9=install"));
                let value = tab.try_eval(TIMING_JS)?;
                (value["controlled"] == Value::Bool(true))
                    .then_some(())
                    .ok_or_else(|| value.to_string())
            },
            || stack.logs(20),
        );
        let times = navigate(&tab, &stack, run, true)?;
        drop(tab);
        super::harness::stop_stack(stack);
        let controlled = Summary::of(&times).map_or(f64::NAN, |s| s.median);
        bench.progress(
            FigureId::P10,
            run,
            "with worker",
            &format!("median {controlled:.1} ms"),
        );
        all_with.extend(&times);
        with.push(controlled);
        added_medians.push(controlled - plain);
    }
    let added = Summary::of(&added_medians).map_or(f64::NAN, |s| s.median);
    let p99_with = quantile(&all_with, 0.99);
    let p99_without = quantile(&all_without, 0.99);
    let (median_with, median_without) = (quantile(&all_with, 0.5), quantile(&all_without, 0.5));
    let findings = vec![
        format!(
            "{} navigations per variant, all runs together: median {median_with:.1} ms with \
             the worker, {median_without:.1} ms without (added {:.1} ms); p99 \
             {p99_with:.1} ms with, {p99_without:.1} ms without (added {:.1} ms)",
            all_with.len(),
            median_with - median_without,
            p99_with - p99_without
        ),
        format!("added per run (median with − median without): {added_medians:.1?} ms"),
    ];
    Ok(Figure {
        id: FigureId::P10,
        ours: Series {
            detail: Some(format!("p99 {p99_with:.1} ms")),
            ..Series::new("with the worker", with, Unit::Milliseconds)
        },
        comparator: Series {
            detail: Some(format!("p99 {p99_without:.1} ms")),
            ..Series::new("without a worker", without, Unit::Milliseconds)
        },
        goal: Goal {
            text: format!("adds ≤ {GOAL_MS:.0} ms at the median"),
            met: added <= GOAL_MS,
        },
        findings,
        method: format!(
            "Headless Chromium opens the dashboard (`/?p9=<run>-<i>`) {NAVIGATIONS} times in a \
             row per run, through HAProxy, on the release origins; each value is the \
             navigation's `responseEnd` (from its start until the document's last byte, \
             Navigation Timing). \"With the worker\": the shipped www/, after the dashboard \
             installed www/sw.js and it controls the tab (every navigation then goes through \
             its `fetch` handler: `fetch(request)`, network first). \"Without\": a copy of \
             www/ whose pages never register it, in a fresh browser. Back-to-back \
             navigations keep the worker running; a worker the browser stopped after 30 s \
             idle also pays its start-up once."
        ),
    })
}
