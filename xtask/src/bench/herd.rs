//! P7: the recovery herd. 10,000 simulated tabs, each running the client's own
//! [`RecoveryMachine`] natively on a simulated clock, sit on the maintenance page through a
//! 60 s outage; after recovery, how many probe and navigate in each second. Two entry
//! patterns: every tab entering within one second (every open dashboard notices the outage
//! within one poll), and tabs entering spread over the whole outage.

use std::{cmp::Reverse, collections::BinaryHeap, fs};

use anyhow::{Context, Result};
use client::recovery::{Action, Config, Event, HealthReport, HintAnswer, Outcome, RecoveryMachine};

use super::harness::{thousands, Bench, Figure, FigureId, Goal, Rng, Series, Summary, Unit};

/// Simulated tabs.
const TABS: usize = 10_000;
/// The entry patterns: tabs reach the maintenance page spread uniformly over this long after
/// the outage starts.
const PATTERNS: [(&str, u64); 2] = [
    ("entered together", 1_000),
    ("entered over the outage", OUTAGE_MS),
];
/// How long both tiers stay down for the probes.
const OUTAGE_MS: u64 = 60_000;
/// A probe pair's (and a hint's) answer takes 2–20 ms (uniform).
const LATENCY_MS: (u64, u64) = (2, 20);
/// api-fallback reads HAProxy's view this often while hints wait (origin's `hint::POLL`).
const HINT_POLL_MS: u64 = 100;
/// haproxy.cfg's `timeout queue`: a hint beyond the `hint` backend's `maxconn` waits this
/// long in HAProxy's queue, then gets a 503.
const QUEUE_MS: u64 = 2_000;
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
    /// Tabs the hint told of the recovery, and the spread its first answer gave.
    hinted: usize,
    /// Hints HAProxy refused because every slot was taken.
    refused: usize,
    first_spread_ms: Option<u32>,
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

    fn median_back_s(&self) -> f64 {
        let mut times = self.navigation_times.clone();
        times.sort_unstable();
        times
            .get(times.len() / 2)
            .map_or(0.0, |t| *t as f64 / 1000.0)
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
    /// api-fallback's hold of this hint ends without news.
    HintHeld(u32),
    /// The answer to a hint reaches the tab.
    HintDone(u32, Option<u32>),
    /// HAProxy's 503 for a hint that found every slot taken.
    HintRefused(u32),
    /// api-fallback reads HAProxy's view (every `HINT_POLL_MS` from recovery on) and answers
    /// every waiting hint, telling them how many it told at once.
    Reading,
}

/// Runs one herd with `config` and `seed`, the tabs arriving within `arrival_ms`.
fn simulate(config: Config, seed: u64, arrival_ms: u64) -> Herd {
    let mut rng = Rng::new(seed);
    let recovery = EPOCH_MS + OUTAGE_MS;
    let mut machines: Vec<RecoveryMachine> = (0..TABS)
        .map(|_| RecoveryMachine::new(config, "/".to_owned()))
        .collect();
    let mut timer_generation = vec![0_u32; TABS];
    // The hint each tab has waiting at api-fallback, by id.
    let mut waiting: Vec<Option<u32>> = vec![None; TABS];
    let mut held = 0_usize;
    let mut queue = BinaryHeap::new();
    for tab in 0..TABS {
        let arrival = EPOCH_MS + (rng.unit() * arrival_ms as f64) as u64;
        queue.push(Reverse((arrival, tab, Wake::Start)));
    }
    // The fallback's polling is not in step with the recovery.
    let first_reading = recovery + (rng.unit() * HINT_POLL_MS as f64) as u64;
    queue.push(Reverse((first_reading, 0, Wake::Reading)));
    let buckets = (HORIZON_MS / 1000) as usize + 1;
    let mut herd = Herd {
        probes: vec![0; buckets],
        navigations: vec![0; buckets],
        outage_peak_probes: 0,
        navigation_times: Vec::with_capacity(TABS),
        hinted: 0,
        refused: 0,
        first_spread_ms: None,
    };
    let mut outage_probes = vec![0_u32; (OUTAGE_MS / 1000) as usize + 1];
    let healthy = || HealthReport::from_answer(200, Some(r#"{"status":"ok","build":"bench"}"#));
    let latency =
        |rng: &mut Rng| LATENCY_MS.0 + (rng.unit() * (LATENCY_MS.1 - LATENCY_MS.0) as f64) as u64;
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
            Wake::Reading => {
                let told: Vec<(usize, u32)> = waiting
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(tab, id)| id.take().map(|id| (tab, id)))
                    .collect();
                let spread = contract::recovery_hint_spread_ms(told.len() as u64);
                let spread = u32::try_from(spread).unwrap_or(u32::MAX);
                if !told.is_empty() {
                    herd.first_spread_ms.get_or_insert(spread);
                }
                herd.hinted += told.len();
                held -= told.len();
                for (tab, id) in told {
                    let at = now_ms + latency(&mut rng);
                    queue.push(Reverse((at, tab, Wake::HintDone(id, Some(spread)))));
                }
                queue.push(Reverse((now_ms + HINT_POLL_MS, 0, Wake::Reading)));
                continue;
            }
            Wake::HintHeld(id) => {
                if waiting[tab] != Some(id) {
                    continue;
                }
                waiting[tab] = None;
                held -= 1;
                Event::HintDone {
                    now_ms,
                    id,
                    answer: HintAnswer::NotYet,
                }
            }
            Wake::HintDone(id, spread_ms) => Event::HintDone {
                now_ms,
                id,
                answer: HintAnswer::Recovered { spread_ms },
            },
            Wake::HintRefused(id) => Event::HintDone {
                now_ms,
                id,
                answer: HintAnswer::Failed,
            },
        };
        for action in machines[tab].handle(event, rng.unit()) {
            match action {
                Action::Probe { .. } => {
                    if now_ms >= recovery {
                        herd.probes[bucket(now_ms - recovery)] += 1;
                    } else if now_ms >= EPOCH_MS + arrival_ms {
                        outage_probes[bucket(now_ms - EPOCH_MS)] += 1;
                    }
                    let at = now_ms + latency(&mut rng);
                    queue.push(Reverse((at, tab, Wake::ProbeDone(now_ms >= recovery))));
                }
                Action::Wait(ms) => {
                    timer_generation[tab] += 1;
                    queue.push(Reverse((
                        now_ms + u64::from(ms),
                        tab,
                        Wake::Tick(timer_generation[tab]),
                    )));
                }
                Action::Hint { id, .. } if held >= contract::RECOVERY_HINT_MAXCONN as usize => {
                    // Every slot of the `hint` backend is taken: HAProxy's queue, then 503.
                    herd.refused += 1;
                    queue.push(Reverse((now_ms + QUEUE_MS, tab, Wake::HintRefused(id))));
                }
                Action::Hint { id, .. } => {
                    // Held at api-fallback for 15–25 s, or until a reading tells it.
                    waiting[tab] = Some(id);
                    held += 1;
                    let (min, max) = (
                        u64::from(contract::RECOVERY_HINT_HOLD_MIN_MS),
                        u64::from(contract::RECOVERY_HINT_HOLD_MAX_MS),
                    );
                    let hold = min + (rng.unit() * (max - min) as f64) as u64;
                    queue.push(Reverse((now_ms + hold, tab, Wake::HintHeld(id))));
                }
                Action::CancelHint => {
                    if waiting[tab].take().is_some() {
                        held -= 1;
                    }
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
    if Config::body_attributes(&page).is_empty() {
        anyhow::bail!("www/maintenance.html has no <body> attributes");
    }
    Ok(Config::from_page(&page))
}

/// The base rule: probe every 5 s in step, go back on the first healthy answer.
pub fn base_rule(config: Config) -> Config {
    Config {
        jitter: 0.0,
        confirm_ms: 0,
        spread_ms: 0,
        phase_spread: false,
        hint: false,
        ..config
    }
}

/// Measures P7.
pub fn measure(bench: &Bench) -> Result<Figure> {
    let ours_config = shipped_config()?;
    let base_config = base_rule(ours_config);
    let mut shares = [Vec::new(), Vec::new()];
    let mut peaks = [Vec::new(), Vec::new()];
    let mut back = [Vec::new(), Vec::new()];
    let mut findings = Vec::new();
    let mut first: Vec<Herd> = Vec::new();
    for run in 1..=bench.runs {
        for (pattern, arrival_ms) in PATTERNS {
            bench.check_interrupt()?;
            for (variant, (label, config)) in
                [("ours", ours_config), ("base 5 s rule", base_config)]
                    .into_iter()
                    .enumerate()
            {
                let herd = simulate(config, 0x4E_u64 + run as u64, arrival_ms);
                let share = f64::from(herd.peak_navigations()) * 100.0 / TABS as f64;
                let label = format!("{label}, {pattern}");
                bench.progress(
                    FigureId::P7,
                    run,
                    &label,
                    &format!(
                        "peak {share:.1} % of tabs navigating in one second, peak {} probe \
                         pairs/s, median tab back after {:.1} s, all after {:.1} s",
                        herd.peak_probes(),
                        herd.median_back_s(),
                        herd.all_back_s()
                    ),
                );
                let hinted = match herd.first_spread_ms {
                    Some(spread) => format!(
                        "; the hint told {} tabs (spread {:.1} s in its first answer), {} \
                         hints were refused (every slot taken)",
                        thousands(herd.hinted as f64),
                        f64::from(spread) / 1000.0,
                        thousands(herd.refused as f64)
                    ),
                    None => String::new(),
                };
                findings.push(format!(
                    "run {run}, {label}: {} of {} tabs navigated; peak {} navigations in a \
                     1 s bucket ({share:.1} %), {} in any sliding 1 s window; peak {} probe \
                     pairs/s after recovery, {} during the outage; median tab back {:.1} s, \
                     last {:.1} s after recovery{hinted}",
                    thousands(herd.navigation_times.len() as f64),
                    thousands(TABS as f64),
                    thousands(f64::from(herd.peak_navigations())),
                    thousands(herd.peak_sliding() as f64),
                    thousands(f64::from(herd.peak_probes())),
                    thousands(f64::from(herd.outage_peak_probes)),
                    herd.median_back_s(),
                    herd.all_back_s()
                ));
                shares[variant].push(share);
                peaks[variant].push(f64::from(herd.peak_probes()));
                back[variant].push(herd.all_back_s());
                if run == 1 && arrival_ms == PATTERNS[0].1 {
                    first.push(herd);
                }
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
        findings.push(format!(
            "| second after recovery (run 1, {}) | ours: probe pairs | ours: navigations | \
             base: probe pairs | base: navigations |",
            PATTERNS[0].0
        ));
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
        let peak = Summary::of(&peaks[variant]).map_or(0.0, |s| s.median);
        let back = Summary::of(&back[variant]).map_or(0.0, |s| s.median);
        format!(
            "both entry patterns; peak {} probe pairs/s; all back {:.1} s after recovery",
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
            text: format!(
                "no 1 s bucket > {GOAL_PERCENT:.0} % of tabs (every run, both entry patterns)"
            ),
            met: worst <= GOAL_PERCENT,
        },
        findings,
        method: format!(
            "A discrete-event simulation on a simulated clock, no network: {} tabs, each \
             running the client's own `client::recovery::RecoveryMachine` (the rlib, natively), \
             with a seeded SplitMix64 generator for `Math.random()` (run n uses seed 0x4E + n; \
             every variant and pattern sees the same seed). Two entry patterns: the tabs reach \
             the maintenance page uniformly within {} ms of the outage start (every open \
             dashboard notices the outage within one poll), or uniformly over the whole \
             outage (pages opened at different times). All stay visible. For {} s the API \
             answers 503 (static tier healthy); from then on both tiers are healthy with the \
             same build. A probe pair or a hint answer takes 2–20 ms; a pair counts as \
             healthy when it was sent after recovery. The recovery hint is modelled as \
             origin/src/hint.rs and haproxy.cfg serve it: HAProxy holds at most {} hints at \
             once (the `hint` backend's maxconn; one more waits {QUEUE_MS} ms in its queue and \
             gets a 503, and that tab tries again three probe intervals later), each hint is \
             held 15–25 s (then answered \"not yet\"), and api-fallback reads HAProxy's view every {HINT_POLL_MS} ms (out \
             of step with the recovery), answering every waiting hint at the first reading \
             after recovery with `spread_ms` = tabs told × 1000 / {} \
             (`contract::recovery_hint_spread_ms`). `Action::Wait` replaces the tab's pending \
             timer, as the browser glue does. Counted per 1 s bucket from the recovery \
             instant: probe pairs started (each is two requests, /healthz and /api/healthz) \
             and navigations.\n\n\
             Ours: the attributes of www/maintenance.html as shipped (interval {} ms, jitter \
             ±{:.0} %, confirmation {} ms, phase spread {}, hint {}, spread cap {} ms). \
             Comparator: the base 5 s rule, the same page with jitter 0, confirmation 0, \
             spread 0, no phase spread and no hint (the machine always confirms: with 0 ms \
             the confirming pair follows the first healthy one at once, hence about two pairs \
             per tab right after recovery). The figure is the largest share of the tabs that \
             navigates within one bucket, per run and pattern; the goal holds when none of \
             ours exceeds {GOAL_PERCENT:.0} %.",
            thousands(TABS as f64),
            PATTERNS[0].1,
            OUTAGE_MS / 1000,
            thousands(f64::from(contract::RECOVERY_HINT_MAXCONN)),
            contract::RECOVERY_HINT_TABS_PER_S,
            ours_config.interval_ms,
            ours_config.jitter * 100.0,
            ours_config.confirm_ms,
            if ours_config.phase_spread {
                "on"
            } else {
                "off"
            },
            if ours_config.hint { "on" } else { "off" },
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
    fn every_tab_navigates_once_in_every_variant_and_pattern() {
        for config in [Config::default(), base_rule(Config::default())] {
            for (_, arrival_ms) in PATTERNS {
                let herd = simulate(config, 1, arrival_ms);
                assert_eq!(herd.navigation_times.len(), TABS);
                assert_eq!(
                    herd.navigations.iter().map(|n| *n as usize).sum::<usize>(),
                    TABS
                );
                // Only the default config uses the hint; it holds at most maxconn at once,
                // so a herd larger than that sees refusals.
                if config.hint {
                    let cap = contract::RECOVERY_HINT_MAXCONN as usize;
                    assert!(herd.hinted >= cap && herd.hinted < TABS, "{}", herd.hinted);
                    assert!(herd.refused > 0);
                } else {
                    assert_eq!((herd.hinted, herd.refused), (0, 0));
                }
            }
        }
    }
}
