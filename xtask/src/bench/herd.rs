//! P7: the recovery herd. 10,000 simulated tabs, each running the client's own
//! [`RecoveryMachine`] natively on a simulated clock, sit on the maintenance page through a
//! 60 s outage; after recovery, how many probe and navigate in each second.

use std::{cmp::Reverse, collections::BinaryHeap, fs};

use anyhow::{Context, Result};
use client::recovery::{Action, Config, Event, HealthReport, Outcome, RecoveryMachine};

use super::{thousands, Bench, Figure, FigureId, Goal, Rng, Series, Unit};

/// Simulated tabs.
const TABS: usize = 10_000;
/// Tabs reach the maintenance page spread uniformly over this long after the outage starts.
const ARRIVAL_WINDOW_MS: u64 = 1_000;
/// How long both tiers stay down for the probes.
const OUTAGE_MS: u64 = 60_000;
/// A probe pair's answer takes 2–20 ms (uniform).
const LATENCY_MS: (u64, u64) = (2, 20);
/// The simulation gives up on tabs still waiting this long after recovery.
const HORIZON_MS: u64 = 120_000;
/// The clock starts at a realistic `Date.now()`.
const EPOCH_MS: u64 = 1_700_000_000_000;
/// Goal: no 1 s bucket holds more than this share of the tabs navigating.
const GOAL_PERCENT: f64 = 30.0;

/// What one simulation saw, per 1 s bucket after recovery.
struct Herd {
    /// Probe pairs started in each second after recovery.
    probes: Vec<u32>,
    /// Navigations in each second after recovery.
    navigations: Vec<u32>,
    /// The most probe pairs started in one second during the outage (after every tab
    /// arrived): how synchronised the tabs poll.
    outage_peak_probes: u32,
    /// Navigation times, ms after recovery.
    navigation_times: Vec<u64>,
}

impl Herd {
    fn peak_navigations(&self) -> u32 {
        self.navigations.iter().copied().max().unwrap_or(0)
    }

    fn peak_probes(&self) -> u32 {
        self.probes.iter().copied().max().unwrap_or(0)
    }

    /// The most navigations within any 1 s window, wherever it starts.
    fn peak_sliding(&self) -> usize {
        let mut times = self.navigation_times.clone();
        times.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= 1000 {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    fn all_back_s(&self) -> f64 {
        self.navigation_times.iter().copied().max().unwrap_or(0) as f64 / 1000.0
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Wake {
    /// The tab loads the maintenance page.
    Start,
    /// A timer asked for by `Action::Wait`; stale ones (replaced by a later wait) are skipped.
    Tick(u32),
    /// The probe pair answers; whether it was sent after recovery.
    ProbeDone(bool),
}

/// Runs one herd with `config` and `seed`.
fn simulate(config: Config, seed: u64) -> Herd {
    let mut rng = Rng::new(seed);
    let recovery = EPOCH_MS + OUTAGE_MS;
    let mut machines: Vec<RecoveryMachine> = (0..TABS)
        .map(|_| RecoveryMachine::new(config, "/".to_owned()))
        .collect();
    let mut timer_generation = vec![0_u32; TABS];
    let mut queue = BinaryHeap::new();
    for tab in 0..TABS {
        let arrival = EPOCH_MS + (rng.unit() * ARRIVAL_WINDOW_MS as f64) as u64;
        queue.push(Reverse((arrival, tab, Wake::Start)));
    }
    let buckets = (HORIZON_MS / 1000) as usize + 1;
    let mut herd = Herd {
        probes: vec![0; buckets],
        navigations: vec![0; buckets],
        outage_peak_probes: 0,
        navigation_times: Vec::with_capacity(TABS),
    };
    let mut outage_probes = vec![0_u32; (OUTAGE_MS / 1000) as usize + 1];
    let healthy = || HealthReport::from_answer(200, Some(r#"{"status":"ok","build":"bench"}"#));
    while let Some(Reverse((now_ms, tab, wake))) = queue.pop() {
        if now_ms > recovery + HORIZON_MS {
            break;
        }
        let event = match wake {
            Wake::Start => Event::Start {
                now_ms,
                hidden: false,
            },
            Wake::Tick(generation) if generation != timer_generation[tab] => continue,
            Wake::Tick(_) => Event::Tick { now_ms },
            Wake::ProbeDone(recovered) => Event::ProbeDone {
                now_ms,
                // During the outage the static tier answers and the API's fallback says 503.
                static_tier: healthy(),
                api_tier: if recovered {
                    healthy()
                } else {
                    HealthReport::new(Outcome::Unhealthy(503))
                },
            },
        };
        for action in machines[tab].handle(event, rng.unit()) {
            match action {
                Action::Probe { .. } => {
                    if now_ms >= recovery {
                        herd.probes[bucket(now_ms - recovery)] += 1;
                    } else if now_ms >= EPOCH_MS + ARRIVAL_WINDOW_MS {
                        outage_probes[bucket(now_ms - EPOCH_MS)] += 1;
                    }
                    let latency =
                        LATENCY_MS.0 + (rng.unit() * (LATENCY_MS.1 - LATENCY_MS.0) as f64) as u64;
                    queue.push(Reverse((
                        now_ms + latency,
                        tab,
                        Wake::ProbeDone(now_ms >= recovery),
                    )));
                }
                Action::Wait(ms) => {
                    timer_generation[tab] += 1;
                    queue.push(Reverse((
                        now_ms + u64::from(ms),
                        tab,
                        Wake::Tick(timer_generation[tab]),
                    )));
                }
                Action::Navigate(_) => {
                    let after = now_ms.saturating_sub(recovery);
                    herd.navigations[bucket(after)] += 1;
                    herd.navigation_times.push(after);
                }
                Action::Show(_) => {}
            }
        }
    }
    herd.outage_peak_probes = outage_probes.into_iter().max().unwrap_or(0);
    herd
}

fn bucket(ms: u64) -> usize {
    usize::try_from(ms / 1000).unwrap_or(usize::MAX)
}

/// The `data-*` attributes of `<body>` in www/maintenance.html, as the client reads them.
fn shipped_config() -> Result<Config> {
    let page = fs::read_to_string("www/maintenance.html")
        .context("could not read www/maintenance.html")?;
    let body = page
        .find("<body")
        .and_then(|start| page[start..].find('>').map(|end| &page[start..start + end]))
        .context("www/maintenance.html has no <body> tag")?;
    let attr = |name: &str| {
        let key = format!("{name}=\"");
        let start = body.find(&key)? + key.len();
        let len = body[start..].find('"')?;
        Some(body[start..start + len].to_owned())
    };
    Ok(Config::from_attributes(
        attr("data-interval-ms").as_deref(),
        attr("data-timeout-ms").as_deref(),
        attr("data-jitter").as_deref(),
        attr("data-confirm-ms").as_deref(),
        attr("data-spread-ms").as_deref(),
    ))
}

/// Measures P7.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let ours_config = shipped_config()?;
    let base_config = Config {
        jitter: 0.0,
        confirm_ms: 0,
        spread_ms: 0,
        ..ours_config
    };
    let mut shares = [Vec::new(), Vec::new()];
    let mut peaks = [Vec::new(), Vec::new()];
    let mut back = [Vec::new(), Vec::new()];
    let mut findings = Vec::new();
    let mut first: Vec<Herd> = Vec::new();
    for run in 1..=bench.runs {
        bench.check_interrupt()?;
        for (variant, (label, config)) in [("ours", ours_config), ("base 5 s rule", base_config)]
            .into_iter()
            .enumerate()
        {
            let herd = simulate(config, 0x4E_u64 + run as u64);
            let share = f64::from(herd.peak_navigations()) * 100.0 / TABS as f64;
            bench.progress(
                FigureId::P7,
                run,
                label,
                &format!(
                    "peak {:.1} % of tabs navigating in one second, peak {} probe pairs/s, \
                     all back after {:.1} s",
                    share,
                    herd.peak_probes(),
                    herd.all_back_s()
                ),
            );
            findings.push(format!(
                "run {run}, {label}: {} of {} tabs navigated; peak {} navigations in a \
                 1 s bucket ({share:.1} %), {} in any sliding 1 s window; peak {} probe \
                 pairs/s after recovery, {} during the outage; last tab back {:.1} s after \
                 recovery",
                thousands(herd.navigation_times.len() as f64),
                thousands(TABS as f64),
                thousands(f64::from(herd.peak_navigations())),
                thousands(herd.peak_sliding() as f64),
                thousands(f64::from(herd.peak_probes())),
                thousands(f64::from(herd.outage_peak_probes)),
                herd.all_back_s()
            ));
            shares[variant].push(share);
            peaks[variant].push(f64::from(herd.peak_probes()));
            back[variant].push(herd.all_back_s());
            if run == 1 {
                first.push(herd);
            }
        }
    }
    if let [ours, base] = first.as_slice() {
        let rows = ours
            .navigations
            .iter()
            .zip(&base.navigations)
            .rposition(|(a, b)| *a > 0 || *b > 0)
            .map_or(0, |last| last + 1);
        findings.push(String::new());
        findings.push(
            "| second after recovery (run 1) | ours: probe pairs | ours: navigations | \
             base: probe pairs | base: navigations |"
                .to_owned(),
        );
        findings.push("|---|---|---|---|---|".to_owned());
        for second in 0..rows {
            findings.push(format!(
                "| {second}–{} | {} | {} | {} | {} |",
                second + 1,
                thousands(f64::from(ours.probes[second])),
                thousands(f64::from(ours.navigations[second])),
                thousands(f64::from(base.probes[second])),
                thousands(f64::from(base.navigations[second])),
            ));
        }
    }
    let detail = |variant: usize| {
        let peak = super::Summary::of(&peaks[variant]).map_or(0.0, |s| s.median);
        let back = super::Summary::of(&back[variant]).map_or(0.0, |s| s.median);
        format!(
            "peak {} probe pairs/s; all back {:.1} s after recovery",
            thousands(peak),
            back
        )
    };
    let [ours_shares, base_shares] = shares;
    let mut ours = Series::new("ours", ours_shares, Unit::Percent);
    ours.detail = Some(detail(0));
    let mut comparator = Series::new("base 5 s rule", base_shares, Unit::Percent);
    comparator.detail = Some(detail(1));
    let worst = ours.summary().map_or(f64::INFINITY, |s| s.max);
    Ok(Figure {
        id: FigureId::P7,
        goal: Goal {
            text: format!("no 1 s bucket > {GOAL_PERCENT:.0} % of tabs (every run)"),
            met: worst <= GOAL_PERCENT,
        },
        findings,
        method: format!(
            "A discrete-event simulation on a simulated clock, no network: {} tabs, each \
             running the client's own `client::recovery::RecoveryMachine` (the rlib, natively), \
             with a seeded SplitMix64 generator for `Math.random()` (run n uses seed 0x4E + n; \
             both variants see the same seed). The tabs reach the maintenance page uniformly \
             within {ARRIVAL_WINDOW_MS} ms of the outage start and all stay visible. For \
             {} s the API answers 503 (static tier healthy); from then on both tiers are \
             healthy with the same build. A probe pair takes 2–20 ms; a pair counts as healthy \
             when it was sent after recovery. `Action::Wait` replaces the tab's pending timer, \
             as the browser glue does. Counted per 1 s bucket from the recovery instant: probe \
             pairs started (each is two requests, /healthz and /api/healthz) and navigations.\n\n\
             Ours: the timing attributes of www/maintenance.html as shipped \
             (interval {} ms, jitter ±{:.0} %, confirmation {} ms, spread 0–{} ms). \
             Comparator: the base 5 s rule, the same page with jitter 0, confirmation 0 and \
             spread 0 (the machine always confirms: with 0 ms the confirming pair follows the \
             first healthy one at once, hence about two pairs per tab right after recovery). The figure is the largest share of the tabs that navigates within one \
             bucket; the goal holds when no run of ours exceeds {GOAL_PERCENT:.0} %.",
            thousands(TABS as f64),
            OUTAGE_MS / 1000,
            ours_config.interval_ms,
            ours_config.jitter * 100.0,
            ours_config.confirm_ms,
            ours_config.spread_ms,
        ),
        ours,
        comparator,
    })
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn every_tab_of_a_base_herd_navigates_once() {
        let config = Config {
            jitter: 0.0,
            confirm_ms: 0,
            spread_ms: 0,
            ..Config::default()
        };
        let herd = simulate(config, 1);
        assert_eq!(herd.navigation_times.len(), TABS);
        assert_eq!(
            herd.navigations.iter().map(|n| *n as usize).sum::<usize>(),
            TABS
        );
    }
}
