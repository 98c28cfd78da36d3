//! The recovery rules as a deterministic, sans-IO state machine.
//!
//! [`RecoveryMachine`] takes [`Event`]s (the time, probe results, the tab's visibility, the
//! user's clicks) and answers with [`Action`]s for the browser glue to carry out. Time,
//! randomness and the network enter from outside, so every rule below is a plain `#[test]`:
//!
//! - one probe pair (static `/healthz` + API `/api/healthz`) at a time, each with a timeout;
//! - between pairs, the interval with random jitter, so tabs do not probe in lockstep;
//! - a healthy, build-compatible pair is confirmed by a second one `confirm_ms` later before
//!   anything happens, and an unhealthy confirmation goes back to waiting;
//! - once confirmed, navigation waits a random `0..spread_ms`, so tabs come back spread out;
//! - at most one navigation, ever: after [`Action::Navigate`] the machine ignores everything;
//! - a hidden tab does not probe; becoming visible, going online or "Check now" probes at once.
//!
//! This module allocates only small strings and avoids `format!`, so it stays cheap in Wasm.

use alloc::string::String;
use alloc::vec::Vec;

use crate::target;

/// Timing knobs, read from `data-*` attributes on the page's `<body>` ([`Config::KNOBS`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    /// Time between two probe pairs before jitter (`data-interval-ms`).
    pub interval_ms: u32,
    /// A probe that has not answered after this long counts as a timeout (`data-timeout-ms`).
    pub timeout_ms: u32,
    /// Relative jitter of the interval: the wait is `interval_ms * (1 ± jitter)` (`data-jitter`).
    pub jitter: f64,
    /// Delay of the confirming pair after the first healthy one (`data-confirm-ms`, at most 1 s).
    pub confirm_ms: u32,
    /// After a recovery that every tab learns at once (a probe-confirmed one, or the hint),
    /// a random `0..spread_ms` spreads the tabs out (`data-spread-ms`).
    pub spread_ms: u32,
    /// The wait after the page's first probe pair is a random part of the interval, so tabs
    /// that arrived together probe (and so come back) spread over one interval
    /// (`data-phase-spread`, `on` or `off`).
    pub phase_spread: bool,
    /// Waits on the fallback API's recovery hint ([`contract::RECOVERY_HINT_PATH`]), a
    /// long-poll answered the moment HAProxy reports both main servers UP (`data-hint`, `on`
    /// or `off`). The probes stay the rule of last resort.
    pub hint: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            interval_ms: 5000,
            timeout_ms: 3000,
            jitter: 0.2,
            confirm_ms: 250,
            spread_ms: 20_000,
            phase_spread: true,
            hint: true,
        }
    }
}

/// Longest wait for a recovery hint before it counts as failed: the fallback API answers
/// "not yet" after at most [`contract::RECOVERY_HINT_HOLD_MAX_MS`].
pub const HINT_TIMEOUT_MS: u32 = contract::RECOVERY_HINT_HOLD_MAX_MS + 10_000;

/// After a failed hint, the next one waits this many probe intervals.
const HINT_RETRY_INTERVALS: u64 = 3;

/// A "not yet" that comes back sooner than this is a misbehaving server, not a long-poll:
/// the hint then waits for the next probe pair instead of asking again at once.
const HINT_MIN_HOLD_MS: u64 = 1000;

impl Config {
    /// The `<body>` attributes the client reads, in [`Config::from_attributes`]'s order.
    pub const KNOBS: [&'static str; 7] = [
        "data-interval-ms",
        "data-timeout-ms",
        "data-jitter",
        "data-confirm-ms",
        "data-spread-ms",
        "data-phase-spread",
        "data-hint",
    ];

    /// Builds a configuration from the page's attributes, `attribute(name)` giving the raw
    /// value of each of [`Config::KNOBS`]; a value that is absent, not a plain decimal number
    /// (or `on`/`off`), or out of its sane range falls back to that knob's default.
    pub fn from_attributes(attribute: impl Fn(&str) -> Option<String>) -> Config {
        let [interval_ms, timeout_ms, jitter, confirm_ms, spread_ms, phase_spread, hint] =
            Config::KNOBS.map(attribute);
        let default = Config::default();
        let ms = |raw: &Option<String>, min: u32, max: u32, fallback: u32| {
            raw.as_deref()
                .and_then(parse_decimal)
                .filter(|v| {
                    *v >= f64::from(min) && *v <= f64::from(max) && f64::from(*v as u32) == *v
                })
                .map_or(fallback, |v| v as u32)
        };
        let switch = |raw: &Option<String>, fallback: bool| match raw.as_deref() {
            Some("on") => true,
            Some("off") => false,
            _ => fallback,
        };
        Config {
            interval_ms: ms(&interval_ms, 100, 3_600_000, default.interval_ms),
            timeout_ms: ms(&timeout_ms, 1, 60_000, default.timeout_ms),
            jitter: jitter
                .as_deref()
                .and_then(parse_decimal)
                .filter(|j| (0.0..=0.5).contains(j))
                .unwrap_or(default.jitter),
            confirm_ms: ms(&confirm_ms, 0, 1000, default.confirm_ms),
            spread_ms: ms(&spread_ms, 0, 60_000, default.spread_ms),
            phase_spread: switch(&phase_spread, default.phase_spread),
            hint: switch(&hint, default.hint),
        }
    }

    /// The `(name, value)` attributes of the `<body>` tag of `page` (a maintenance page's
    /// HTML), as written; for tools and tests that read the page outside a browser.
    pub fn body_attributes(page: &str) -> Vec<(String, String)> {
        let Some(start) = page.find("\n<body ").map(|at| at + 1) else {
            return Vec::new();
        };
        let tag = &page[start..];
        let tag = &tag[..tag.find('>').unwrap_or(tag.len())];
        tag.split_whitespace()
            .skip(1)
            .filter_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                Some((name.to_owned(), value.trim_matches('"').to_owned()))
            })
            .collect()
    }

    /// The configuration a maintenance page's `<body>` sets (see [`Config::body_attributes`]).
    pub fn from_page(page: &str) -> Config {
        let attributes = Config::body_attributes(page);
        Config::from_attributes(|name| {
            attributes
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    /// The wait before the next regular probe: `interval_ms * (1 + jitter * (2r - 1))` for a
    /// random `r` in `[0, 1)`, so always within `interval_ms * (1 ± jitter)`.
    pub fn jittered_interval(&self, random: f64) -> u32 {
        let spread = self.jitter * (2.0 * unit(random) - 1.0);
        (f64::from(self.interval_ms) * (1.0 + spread)) as u32
    }

    /// The wait after the page's first probe pair: a random `0..interval_ms` with the phase
    /// spread, else the jittered interval.
    pub fn first_interval(&self, random: f64) -> u32 {
        if self.phase_spread {
            (unit(random) * f64::from(self.interval_ms)) as u32
        } else {
            self.jittered_interval(random)
        }
    }

    /// The spreading wait after a recovery every tab learns at once: a random `0..spread_ms`.
    pub fn spread_delay(&self, random: f64) -> u32 {
        (unit(random) * f64::from(self.spread_ms)) as u32
    }
}

/// Parses `123` or `0.25`: digits with at most one dot, nothing else (no sign, exponent or
/// spaces). Hand-written because `str::parse::<f64>` costs kilobytes of Wasm.
fn parse_decimal(raw: &str) -> Option<f64> {
    let bytes = raw.as_bytes();
    let (int, frac) = match bytes.iter().position(|&b| b == b'.') {
        Some(dot) => (bytes.get(..dot)?, bytes.get(dot + 1..)?),
        None => (bytes, &[][..]),
    };
    if int.is_empty() && frac.is_empty() || int.len() > 9 || frac.len() > 9 {
        return None;
    }
    let mut value = 0.0;
    for &b in int {
        value = value * 10.0 + f64::from(digit(b)?);
    }
    let mut scale = 1.0;
    for &b in frac {
        scale /= 10.0;
        value += f64::from(digit(b)?) * scale;
    }
    Some(value)
}

fn digit(b: u8) -> Option<u8> {
    b.is_ascii_digit().then(|| b - b'0')
}

/// Clamps a random number into `[0, 1)`; anything else (NaN included) becomes 0.
fn unit(random: f64) -> f64 {
    if (0.0..1.0).contains(&random) {
        random
    } else {
        0.0
    }
}

/// How one health probe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 200 answer ([`contract::is_healthy`]).
    Healthy,
    /// Any other answer; `0` is an opaque redirect (probes use `redirect: "manual"`).
    Unhealthy(u16),
    /// The request failed before any answer: refused, reset, DNS, offline.
    NetworkError,
    /// No answer within the timeout (the request was aborted).
    Timeout,
}

impl Outcome {
    /// Only a 200 is healthy, as for HAProxy's checks (`http-check expect status 200`): a 204,
    /// a 3xx, an opaque redirect (status 0), 4xx and 5xx are not.
    pub fn from_status(status: u16) -> Outcome {
        if contract::is_healthy(status) {
            Outcome::Healthy
        } else {
            Outcome::Unhealthy(status)
        }
    }

    /// True when the tier could not be reached at all (as opposed to answering "not ok").
    pub fn is_network_level(self) -> bool {
        matches!(self, Outcome::NetworkError | Outcome::Timeout)
    }
}

/// The result of probing one tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    /// How the probe ended.
    pub outcome: Outcome,
    /// The `build` field of a healthy answer's JSON body, when present.
    pub build: Option<String>,
}

impl HealthReport {
    /// A report without a build id.
    pub fn new(outcome: Outcome) -> HealthReport {
        HealthReport {
            outcome,
            build: None,
        }
    }

    /// A report for an answer with `status` and, for a healthy one, its body.
    pub fn from_answer(status: u16, body: Option<&str>) -> HealthReport {
        let outcome = Outcome::from_status(status);
        let build = match outcome {
            Outcome::Healthy => body.and_then(build_of),
            _ => None,
        };
        HealthReport { outcome, build }
    }

    fn is_healthy(&self) -> bool {
        self.outcome == Outcome::Healthy
    }
}

/// Reads the string value of the `"build"` key of a small health JSON object.
///
/// A tiny byte scan instead of a JSON parser keeps the Wasm small; the health bodies are our
/// own flat objects. A value that is not a short printable-ASCII string gives `None`.
pub fn build_of(body: &str) -> Option<String> {
    const KEY: &[u8] = b"\"build\"";
    let bytes = body.as_bytes();
    let key = bytes.windows(KEY.len()).position(|w| w == KEY)?;
    let mut rest = bytes.get(key + KEY.len()..)?.iter().copied();
    let mut token = || rest.by_ref().find(|b| !b.is_ascii_whitespace());
    if token()? != b':' || token()? != b'"' {
        return None;
    }
    let mut value = String::new();
    for b in rest {
        match b {
            b'"' => return (!value.is_empty() && value.len() <= 200).then_some(value),
            b'!'..=b'~' if b != b'\\' => value.push(char::from(b)),
            _ => return None,
        }
    }
    None
}

/// What the page shows; [`State::as_str`] is the `<body data-state>` test hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// No answer yet.
    Checking,
    /// The static tier is unhealthy, the API is healthy.
    StaticDown,
    /// The API tier is unhealthy, the static tier is healthy.
    ApiDown,
    /// Both tiers answered, both unhealthy.
    BothDown,
    /// Neither tier answered at all (network errors or timeouts): the site, or we, are offline.
    Unreachable,
    /// Both tiers are healthy but run different builds: a deployment is under way.
    Updating,
    /// One healthy pair seen; the confirming pair is due (shown as `checking`).
    Confirming,
    /// Recovery confirmed; navigation waits for its random spread.
    Recovering,
    /// Navigation issued. Terminal.
    Navigating,
}

impl State {
    /// The `data-state` value: `checking`, `static-down`, `api-down`, `both-down`,
    /// `unreachable`, `updating`, `recovering` or `navigating`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Checking | State::Confirming => "checking",
            State::StaticDown => "static-down",
            State::ApiDown => "api-down",
            State::BothDown => "both-down",
            State::Unreachable => "unreachable",
            State::Updating => "updating",
            State::Recovering => "recovering",
            State::Navigating => "navigating",
        }
    }

    /// The sentence for `#status` (announced politely to screen readers when it changes).
    pub fn sentence(self) -> &'static str {
        match self {
            State::Checking => "Checking whether the site is back\u{2026}",
            State::StaticDown => "The web server (static tier) is down; the API is up.",
            State::ApiDown => "The API is down; the web server (static tier) is up.",
            State::BothDown => "Both the web server (static tier) and the API are down.",
            State::Unreachable => {
                "The site does not answer at all: it or your connection is offline."
            }
            State::Updating => {
                "A new version is being deployed; waiting for the web server and the API to match."
            }
            State::Confirming => "The site answers again; making sure it stays up\u{2026}",
            State::Recovering => "The site is back. Returning to your page in a moment\u{2026}",
            State::Navigating => "The site is back. Returning to your page now\u{2026}",
        }
    }
}

/// What one probe pair says: `None` when both tiers are healthy and run compatible builds
/// (equal, or either unknown), else the state to show.
pub fn assess(static_tier: &HealthReport, api_tier: &HealthReport) -> Option<State> {
    match (static_tier.is_healthy(), api_tier.is_healthy()) {
        (true, true) => match (&static_tier.build, &api_tier.build) {
            (Some(web), Some(api)) if web != api => Some(State::Updating),
            _ => None,
        },
        (false, true) => Some(State::StaticDown),
        (true, false) => Some(State::ApiDown),
        (false, false)
            if static_tier.outcome.is_network_level() && api_tier.outcome.is_network_level() =>
        {
            Some(State::Unreachable)
        }
        (false, false) => Some(State::BothDown),
    }
}

/// Something that happened, with the time it happened (`Date.now()`, ms).
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The page loaded; `hidden` is `document.hidden`.
    Start {
        /// Current time, ms since the epoch.
        now_ms: u64,
        /// Whether the tab is hidden.
        hidden: bool,
    },
    /// A timer asked for by [`Action::Wait`] fired (stray or early ticks are harmless).
    Tick {
        /// Current time, ms since the epoch.
        now_ms: u64,
    },
    /// The probe pair asked for by [`Action::Probe`] finished.
    ProbeDone {
        /// Current time, ms since the epoch.
        now_ms: u64,
        /// Result of `GET /healthz`.
        static_tier: HealthReport,
        /// Result of `GET /api/healthz`.
        api_tier: HealthReport,
    },
    /// `visibilitychange`.
    VisibilityChanged {
        /// Current time, ms since the epoch.
        now_ms: u64,
        /// The new `document.hidden`.
        hidden: bool,
    },
    /// The browser's `online` event.
    Online {
        /// Current time, ms since the epoch.
        now_ms: u64,
    },
    /// The "Check now" button.
    CheckNow {
        /// Current time, ms since the epoch.
        now_ms: u64,
    },
    /// The recovery hint asked for by [`Action::Hint`] with this `id` ended.
    HintDone {
        /// Current time, ms since the epoch.
        now_ms: u64,
        /// The `id` of the [`Action::Hint`] (a cancelled hint's late answer is ignored).
        id: u32,
        /// How it ended.
        answer: HintAnswer,
    },
}

/// How a recovery hint ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HintAnswer {
    /// 200: HAProxy reports both main servers UP. `spread_ms` is the answer's spread for the
    /// tabs it told at once (`None` when the body lacks a valid one).
    Recovered {
        /// The server's spread, ms.
        spread_ms: Option<u32>,
    },
    /// 204: no news within the server's hold.
    NotYet,
    /// Anything else: another status, a network error, the client's timeout.
    Failed,
}

impl HintAnswer {
    /// Classifies an answer: 200 is recovered (with the body's `spread_ms`), 204 not yet,
    /// anything else failed.
    pub fn from_answer(status: u16, body: Option<&str>) -> HintAnswer {
        match status {
            200 => HintAnswer::Recovered {
                spread_ms: body.and_then(|b| number_of(b, "spread_ms")),
            },
            204 => HintAnswer::NotYet,
            _ => HintAnswer::Failed,
        }
    }
}

/// Reads the unsigned integer value of `"key"` in a small flat JSON object (at most 9 digits).
pub fn number_of(body: &str, key: &str) -> Option<u32> {
    let bytes = body.as_bytes();
    let quoted = |at: usize| {
        bytes.get(at) == Some(&b'"')
            && bytes.get(at + 1..at + 1 + key.len()) == Some(key.as_bytes())
            && bytes.get(at + 1 + key.len()) == Some(&b'"')
    };
    let at = (0..bytes.len()).find(|&i| quoted(i))?;
    let mut rest = bytes.get(at + key.len() + 2..)?.iter().copied().peekable();
    while rest.next_if(u8::is_ascii_whitespace).is_some() {}
    if rest.next()? != b':' {
        return None;
    }
    while rest.next_if(u8::is_ascii_whitespace).is_some() {}
    let mut value: u32 = 0;
    let mut digits = 0;
    while let Some(b) = rest.next_if(u8::is_ascii_digit) {
        value = value * 10 + u32::from(b - b'0');
        digits += 1;
        if digits > 9 {
            return None;
        }
    }
    match rest.peek() {
        _ if digits == 0 => None,
        None | Some(b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t') => Some(value),
        Some(_) => None,
    }
}

/// Something for the browser glue to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Probe both tiers in parallel, each aborted after `timeout_ms`; then send
    /// [`Event::ProbeDone`].
    Probe {
        /// Per-probe timeout.
        timeout_ms: u32,
    },
    /// Send [`Event::Tick`] after this many ms, replacing any earlier pending wait.
    Wait(u32),
    /// Replace the page's location with this same-origin URL.
    Navigate(String),
    /// Start the recovery hint (`GET` [`contract::RECOVERY_HINT_PATH`], aborted after
    /// `timeout_ms`); then send [`Event::HintDone`] with this `id`.
    Hint {
        /// Identifies this hint's [`Event::HintDone`].
        id: u32,
        /// The client's own limit on the long-poll.
        timeout_ms: u32,
    },
    /// Abort the hint in flight (the tab was hidden); its late answer is ignored.
    CancelHint,
    /// Render this snapshot.
    Show(Status),
}

/// A snapshot of what the page shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// The current state.
    pub state: State,
    /// When the current state began (ms since the epoch).
    pub since_ms: u64,
    /// When the last probe pair finished, if any.
    pub last_check_ms: Option<u64>,
    /// When the next probe pair is due; `None` when none is planned.
    pub next_check_ms: Option<u64>,
    /// A probe pair is in flight.
    pub probing: bool,
    /// Probing is paused because the tab is hidden.
    pub paused: bool,
    /// When navigation will happen, once recovering.
    pub navigate_at_ms: Option<u64>,
}

impl Status {
    /// The countdown text for `#next-check`, e.g. `in 4 s`.
    pub fn next_check_text(&self, now_ms: u64) -> String {
        let mut text = String::new();
        let in_seconds = |text: &mut String, at: u64| {
            text.push_str("in ");
            push_decimal(text, at.saturating_sub(now_ms).div_ceil(1000));
            text.push_str(" s");
        };
        match (self.navigate_at_ms, self.next_check_ms) {
            _ if self.state == State::Navigating => text.push_str("none: returning now"),
            (Some(at), _) => {
                text.push_str("none: returning to your page ");
                in_seconds(&mut text, at);
            }
            _ if self.probing => text.push_str("checking now\u{2026}"),
            _ if self.paused => text.push_str("paused while this tab is hidden"),
            (None, Some(at)) => in_seconds(&mut text, at),
            (None, None) => text.push('\u{2014}'),
        }
        text
    }

    /// Whether "Check now" can do anything (it cannot once recovery is under way).
    pub fn can_check_now(&self) -> bool {
        !matches!(self.state, State::Recovering | State::Navigating)
    }
}

/// Appends `n` in decimal, without `format!`.
pub fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut n = n;
    loop {
        if let Some(d) = digits.get_mut(len) {
            *d = b'0' + (n % 10) as u8;
        }
        len += 1;
        n /= 10;
        if n == 0 || len == digits.len() {
            break;
        }
    }
    for d in digits.iter().take(len).rev() {
        out.push(char::from(*d));
    }
}

/// Formats a local wall-clock time (ms since the epoch, already shifted to local time) as
/// `HH:MM:SS`.
pub fn clock_text(local_ms: i64) -> String {
    let seconds = local_ms.div_euclid(1000).rem_euclid(86_400) as u64;
    let mut text = String::new();
    for (i, part) in [seconds / 3600, seconds / 60 % 60, seconds % 60]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            text.push(':');
        }
        if part < 10 {
            text.push('0');
        }
        push_decimal(&mut text, part);
    }
    text
}

/// The recovery rules; see the module documentation.
#[derive(Clone, Debug)]
pub struct RecoveryMachine {
    config: Config,
    /// Sanitised same-origin path and query to return to, without any `v` parameter.
    target: String,
    state: State,
    since_ms: u64,
    last_check_ms: Option<u64>,
    /// When the next probe pair is due; `None` while one is in flight or once recovering.
    next_probe_ms: Option<u64>,
    navigate_at_ms: Option<u64>,
    in_flight: bool,
    hidden: bool,
    started: bool,
    /// The loop guard's hold: healthy this long before recovering (0: the confirmation alone).
    hold_ms: u64,
    /// The first probe pair of the page has not finished yet (its wait is the phase spread).
    first_pair: bool,
    /// The id of the hint in flight, if any.
    hint_in_flight: Option<u32>,
    /// The id of the last hint started.
    hint_id: u32,
    /// When the last hint started.
    hint_started_ms: u64,
    /// No new hint before this time.
    hint_next_ms: u64,
    /// A hint said the site is back and the pair that checks it is due or in flight: a
    /// healthy pair then ends the waiting at once (the hint was the first observation, and
    /// the hint's spread already passed).
    hinted: bool,
}

impl RecoveryMachine {
    /// A machine that will return to `target`, a path from [`target::return_target`].
    pub fn new(config: Config, target: String) -> RecoveryMachine {
        RecoveryMachine {
            config,
            target,
            state: State::Checking,
            since_ms: 0,
            last_check_ms: None,
            next_probe_ms: None,
            navigate_at_ms: None,
            in_flight: false,
            hidden: false,
            started: false,
            hold_ms: 0,
            first_pair: true,
            hint_in_flight: None,
            hint_id: 0,
            hint_started_ms: 0,
            hint_next_ms: 0,
            hinted: false,
        }
    }

    /// Returns only once the site has stayed healthy for `ms` since the first healthy pair,
    /// probing at the regular pace meanwhile: the answer of [`crate::loop_guard`] to an
    /// unstable site. Any unhealthy pair starts the hold again.
    pub fn hold_healthy_for(&mut self, ms: u32) {
        self.hold_ms = u64::from(ms);
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What the page should show now.
    pub fn status(&self) -> Status {
        Status {
            state: self.state,
            since_ms: self.since_ms,
            last_check_ms: self.last_check_ms,
            next_check_ms: self.next_probe_ms,
            probing: self.in_flight,
            paused: self.hidden && self.navigate_at_ms.is_none(),
            navigate_at_ms: self.navigate_at_ms,
        }
    }

    /// Handles one event. `random` is a fresh random number in `[0, 1)` (`Math.random()`),
    /// used for jitter and spread. The actions are to be carried out in order; the last one
    /// is always [`Action::Show`], except once navigating, when nothing happens any more.
    pub fn handle(&mut self, event: Event, random: f64) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.state == State::Navigating {
            return actions;
        }
        let now_ms = match event {
            Event::Start { now_ms, hidden } => {
                if !self.started {
                    self.started = true;
                    self.hidden = hidden;
                    self.since_ms = now_ms;
                    self.next_probe_ms = Some(now_ms);
                }
                now_ms
            }
            Event::Tick { now_ms } => now_ms,
            Event::ProbeDone {
                now_ms,
                static_tier,
                api_tier,
            } => {
                if self.in_flight {
                    self.in_flight = false;
                    self.last_check_ms = Some(now_ms);
                    self.judge(now_ms, &static_tier, &api_tier, random);
                }
                now_ms
            }
            Event::VisibilityChanged { now_ms, hidden } => {
                self.hidden = hidden;
                if !hidden {
                    self.probe_soon(now_ms);
                } else if self.hint_in_flight.take().is_some() {
                    // A hidden tab holds no connection open (browsers allow six per site).
                    actions.push(Action::CancelHint);
                }
                now_ms
            }
            Event::Online { now_ms } | Event::CheckNow { now_ms } => {
                self.probe_soon(now_ms);
                now_ms
            }
            Event::HintDone { now_ms, id, answer } => {
                if self.hint_in_flight == Some(id) {
                    self.hint_in_flight = None;
                    self.hint_ended(now_ms, answer, random);
                }
                now_ms
            }
        };
        if self.started {
            self.poll(now_ms, &mut actions);
        }
        if self.state != State::Navigating {
            actions.push(Action::Show(self.status()));
        }
        actions
    }

    /// Asks for a probe at once, unless one is in flight (its result then decides) or
    /// recovery is already confirmed.
    fn probe_soon(&mut self, now_ms: u64) {
        if self.started && !self.in_flight && self.navigate_at_ms.is_none() {
            self.next_probe_ms = Some(now_ms);
        }
    }

    fn judge(
        &mut self,
        now_ms: u64,
        static_tier: &HealthReport,
        api_tier: &HealthReport,
        random: f64,
    ) {
        let held = now_ms.saturating_sub(self.since_ms);
        let first_pair = core::mem::replace(&mut self.first_pair, false);
        match assess(static_tier, api_tier) {
            None if self.state == State::Confirming && held < self.hold_ms => {
                // Probe on at the regular pace until the hold is over.
                self.next_probe_ms = Some(now_ms + u64::from(self.config.interval_ms));
            }
            None if self.state == State::Confirming => {
                self.enter(State::Recovering, now_ms);
                self.next_probe_ms = None;
                // A tab that found the recovery with its own probes is spread out by its
                // probe phase; without the phase spread, tabs that probe in step need the
                // random spread. After a hint, the hint's spread has passed already.
                let spread = if self.hinted || self.config.phase_spread {
                    0
                } else {
                    self.config.spread_delay(random)
                };
                self.navigate_at_ms = Some(now_ms + u64::from(spread));
            }
            None => {
                self.enter(State::Confirming, now_ms);
                self.next_probe_ms = Some(now_ms + u64::from(self.config.confirm_ms));
            }
            Some(state) => {
                self.enter(state, now_ms);
                let wait = if first_pair {
                    self.config.first_interval(random)
                } else {
                    self.config.jittered_interval(random)
                };
                self.next_probe_ms = Some(now_ms + u64::from(wait));
                if self.hinted {
                    // The hint was wrong (or the site fell again): no new hint before the
                    // next regular pair.
                    self.hinted = false;
                    self.hint_next_ms = now_ms + u64::from(wait);
                }
            }
        }
    }

    fn hint_ended(&mut self, now_ms: u64, answer: HintAnswer, random: f64) {
        match answer {
            HintAnswer::Recovered { spread_ms } => {
                if self.hinted || self.navigate_at_ms.is_some() {
                    return;
                }
                self.hinted = true;
                if self.state != State::Confirming {
                    self.enter(State::Confirming, now_ms);
                }
                if !self.in_flight {
                    // The pair that checks the hint comes after the hint's spread (capped by
                    // the page's own limit), in place of the regular one: a regular pair due
                    // sooner would bunch the tabs up again. A pair in flight checks it instead.
                    let limit =
                        spread_ms.map_or(self.config.spread_ms, |s| s.min(self.config.spread_ms));
                    let spread = Config {
                        spread_ms: limit,
                        ..self.config
                    }
                    .spread_delay(random);
                    self.next_probe_ms = Some(now_ms + u64::from(spread));
                }
            }
            HintAnswer::NotYet
                if now_ms.saturating_sub(self.hint_started_ms) >= HINT_MIN_HOLD_MS => {}
            HintAnswer::NotYet | HintAnswer::Failed => {
                // Ask again only after a few regular pairs: the fallback API may be gone, or
                // HAProxy already holds as many hints as it will (a herd), and then this tab
                // must not hammer it. The probes go on meanwhile.
                self.hint_next_ms =
                    now_ms + HINT_RETRY_INTERVALS * u64::from(self.config.interval_ms);
            }
        }
    }

    fn enter(&mut self, state: State, now_ms: u64) {
        if self.state != state {
            self.state = state;
            self.since_ms = now_ms;
        }
    }

    /// Starts whatever is due now, or asks to be woken when it will be.
    fn poll(&mut self, now_ms: u64, actions: &mut Vec<Action>) {
        if self.config.hint
            && !self.hidden
            && !self.hinted
            && self.hint_in_flight.is_none()
            && self.navigate_at_ms.is_none()
            && now_ms >= self.hint_next_ms
        {
            self.hint_id = self.hint_id.wrapping_add(1);
            self.hint_in_flight = Some(self.hint_id);
            self.hint_started_ms = now_ms;
            actions.push(Action::Hint {
                id: self.hint_id,
                timeout_ms: HINT_TIMEOUT_MS,
            });
        }
        if let Some(at) = self.navigate_at_ms {
            // A hidden tab still navigates: the page is ready when the user comes back.
            if now_ms >= at {
                self.state = State::Navigating;
                self.since_ms = now_ms;
                actions.push(Action::Navigate(target::with_cache_buster(
                    &self.target,
                    now_ms,
                )));
            } else {
                actions.push(Action::Wait(wait_ms(at - now_ms)));
            }
            return;
        }
        if self.in_flight || self.hidden {
            return;
        }
        match self.next_probe_ms {
            Some(at) if now_ms >= at => {
                self.in_flight = true;
                self.next_probe_ms = None;
                actions.push(Action::Probe {
                    timeout_ms: self.config.timeout_ms,
                });
            }
            Some(at) => actions.push(Action::Wait(wait_ms(at - now_ms))),
            None => {}
        }
    }
}

fn wait_ms(ms: u64) -> u32 {
    u32::try_from(ms).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    /// The probe rules alone, with the timings these tests were written for: confirmation
    /// 500 ms, spread 0-3 s after it, no phase spread, no hint. The hint and the phase spread
    /// have tests of their own below.
    fn classic() -> Config {
        Config {
            confirm_ms: 500,
            spread_ms: 3000,
            phase_spread: false,
            hint: false,
            ..Config::default()
        }
    }

    fn healthy(build: Option<&str>) -> HealthReport {
        HealthReport {
            outcome: Outcome::Healthy,
            build: build.map(str::to_owned),
        }
    }

    fn down(status: u16) -> HealthReport {
        HealthReport::new(Outcome::Unhealthy(status))
    }

    fn machine() -> RecoveryMachine {
        RecoveryMachine::new(classic(), "/dash?x=1".to_owned())
    }

    /// A machine that has started and has its first probe pair in flight.
    fn probing() -> RecoveryMachine {
        let mut m = machine();
        let actions = m.handle(
            Event::Start {
                now_ms: T0,
                hidden: false,
            },
            0.5,
        );
        assert_eq!(actions.first(), Some(&Action::Probe { timeout_ms: 3000 }));
        m
    }

    fn done(now_ms: u64, static_tier: HealthReport, api_tier: HealthReport) -> Event {
        Event::ProbeDone {
            now_ms,
            static_tier,
            api_tier,
        }
    }

    fn waits(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Wait(ms) => Some(*ms),
                _ => None,
            })
            .collect()
    }

    fn probes(actions: &[Action]) -> usize {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Probe { .. }))
            .count()
    }

    fn navigations(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Navigate(url) => Some(url.clone()),
                _ => None,
            })
            .collect()
    }

    fn shown(actions: &[Action]) -> Status {
        match actions.last() {
            Some(Action::Show(status)) => *status,
            other => panic!("expected Show last, got {other:?}"),
        }
    }

    /// Drives `m` through a first healthy pair at `t` and its confirmation; returns the
    /// actions of the confirmation.
    fn confirm(m: &mut RecoveryMachine, t: u64, spread_random: f64) -> Vec<Action> {
        let a = m.handle(done(t, healthy(None), healthy(None)), 0.5);
        assert_eq!(waits(&a), vec![500], "confirmation is due confirm_ms later");
        let a = m.handle(Event::Tick { now_ms: t + 500 }, 0.5);
        assert_eq!(probes(&a), 1);
        m.handle(done(t + 600, healthy(None), healthy(None)), spread_random)
    }

    #[test]
    fn start_probes_at_once_with_the_configured_timeout() {
        let mut m = machine();
        let a = m.handle(
            Event::Start {
                now_ms: T0,
                hidden: false,
            },
            0.5,
        );
        assert_eq!(a.first(), Some(&Action::Probe { timeout_ms: 3000 }));
        let status = shown(&a);
        assert_eq!(status.state, State::Checking);
        assert!(status.probing);
        assert_eq!(status.since_ms, T0);
    }

    #[test]
    fn timeout_comes_from_the_config_and_counts_as_unhealthy() {
        let config = Config {
            timeout_ms: 1234,
            ..classic()
        };
        let mut m = RecoveryMachine::new(config, "/".to_owned());
        let a = m.handle(
            Event::Start {
                now_ms: T0,
                hidden: false,
            },
            0.5,
        );
        assert_eq!(a.first(), Some(&Action::Probe { timeout_ms: 1234 }));
        let a = m.handle(
            done(
                T0 + 1234,
                HealthReport::new(Outcome::Timeout),
                healthy(None),
            ),
            0.5,
        );
        assert_eq!(shown(&a).state, State::StaticDown);
        assert!(navigations(&a).is_empty());
    }

    #[test]
    fn no_new_probe_while_one_is_in_flight() {
        let mut m = probing();
        for event in [
            Event::Tick {
                now_ms: T0 + 10_000,
            },
            Event::CheckNow {
                now_ms: T0 + 10_001,
            },
            Event::Online {
                now_ms: T0 + 10_002,
            },
            Event::VisibilityChanged {
                now_ms: T0 + 10_003,
                hidden: false,
            },
            Event::Start {
                now_ms: T0 + 10_004,
                hidden: false,
            },
        ] {
            let a = m.handle(event, 0.5);
            assert_eq!(probes(&a), 0);
            assert!(shown(&a).probing);
        }
        // The pair's result schedules the next one normally.
        let a = m.handle(done(T0 + 10_010, down(503), down(503)), 0.5);
        assert_eq!(waits(&a), vec![5000]);
    }

    #[test]
    fn stray_probe_results_are_ignored() {
        let mut m = probing();
        m.handle(done(T0 + 100, down(503), down(503)), 0.5);
        let before = m.status();
        let a = m.handle(done(T0 + 200, healthy(None), healthy(None)), 0.5);
        assert_eq!(shown(&a), before);
    }

    #[test]
    fn unhealthy_pair_waits_a_jittered_interval_then_probes() {
        let mut m = probing();
        let a = m.handle(done(T0 + 100, down(503), down(503)), 0.0);
        assert_eq!(waits(&a), vec![4000]);
        let status = shown(&a);
        assert_eq!(status.state, State::BothDown);
        assert_eq!(status.last_check_ms, Some(T0 + 100));
        assert_eq!(status.next_check_ms, Some(T0 + 4100));
        // An early tick only re-arms the timer for the rest.
        let a = m.handle(Event::Tick { now_ms: T0 + 3000 }, 0.9);
        assert_eq!(waits(&a), vec![1100]);
        assert_eq!(probes(&a), 0);
        let a = m.handle(Event::Tick { now_ms: T0 + 4100 }, 0.9);
        assert_eq!(probes(&a), 1);
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for config in [
            classic(),
            Config {
                interval_ms: 1000,
                jitter: 0.5,
                ..classic()
            },
            Config {
                jitter: 0.0,
                ..classic()
            },
        ] {
            let low = f64::from(config.interval_ms) * (1.0 - config.jitter);
            let high = f64::from(config.interval_ms) * (1.0 + config.jitter);
            let mut seen_low = false;
            let mut seen_high = false;
            for i in 0..=1000 {
                let r = f64::from(i) / 1000.0;
                let mut m = RecoveryMachine::new(config, "/".to_owned());
                m.handle(
                    Event::Start {
                        now_ms: T0,
                        hidden: false,
                    },
                    r,
                );
                let a = m.handle(done(T0, down(503), down(502)), r);
                let wait = f64::from(*waits(&a).first().expect("a wait"));
                assert!(
                    wait >= low.floor() && wait <= high,
                    "{wait} outside {low}..{high}"
                );
                seen_low |= wait < f64::from(config.interval_ms) * (1.0 - config.jitter * 0.9);
                seen_high |= wait > f64::from(config.interval_ms) * (1.0 + config.jitter * 0.9);
            }
            if config.jitter > 0.0 {
                assert!(seen_low && seen_high, "jitter spans the whole range");
            }
        }
        // Out-of-range randomness is clamped, never stretches the bounds.
        let config = classic();
        for r in [-1.0, 1.0, 7.5, f64::NAN, f64::INFINITY] {
            let wait = config.jittered_interval(r);
            assert!((4000..=6000).contains(&wait), "{r} gave {wait}");
        }
    }

    #[test]
    fn first_healthy_pair_does_not_navigate_the_second_does() {
        let mut m = probing();
        let a = m.handle(
            done(T0 + 100, healthy(Some("b1")), healthy(Some("b1"))),
            0.5,
        );
        assert!(navigations(&a).is_empty());
        assert_eq!(shown(&a).state, State::Confirming);
        assert_eq!(State::Confirming.as_str(), "checking");
        assert_eq!(waits(&a), vec![500]);

        let a = m.handle(Event::Tick { now_ms: T0 + 600 }, 0.5);
        assert_eq!(probes(&a), 1);
        // Confirmed: spread 0.5 * 3000 = 1500 ms, nothing yet.
        let a = m.handle(
            done(T0 + 700, healthy(Some("b1")), healthy(Some("b1"))),
            0.5,
        );
        assert!(navigations(&a).is_empty());
        assert_eq!(waits(&a), vec![1500]);
        let status = shown(&a);
        assert_eq!(status.state, State::Recovering);
        assert_eq!(status.navigate_at_ms, Some(T0 + 2200));

        let a = m.handle(Event::Tick { now_ms: T0 + 2200 }, 0.5);
        assert_eq!(
            navigations(&a),
            vec!["/dash?x=1&v=1700000002200".to_owned()]
        );
        assert_eq!(m.status().state, State::Navigating);
    }

    #[test]
    fn failed_confirmation_goes_back_to_waiting() {
        let mut m = probing();
        m.handle(done(T0, healthy(None), healthy(None)), 0.5);
        m.handle(Event::Tick { now_ms: T0 + 500 }, 0.5);
        let a = m.handle(done(T0 + 600, healthy(None), down(503)), 0.5);
        assert!(navigations(&a).is_empty());
        assert_eq!(shown(&a).state, State::ApiDown);
        assert_eq!(waits(&a), vec![5000]);
        // The next healthy pair starts a new confirmation rather than navigating.
        m.handle(Event::Tick { now_ms: T0 + 5600 }, 0.5);
        let a = m.handle(done(T0 + 5700, healthy(None), healthy(None)), 0.5);
        assert!(navigations(&a).is_empty());
        assert_eq!(shown(&a).state, State::Confirming);
    }

    #[test]
    fn at_most_one_navigation() {
        let mut m = probing();
        let a = confirm(&mut m, T0, 0.0);
        // Spread 0: navigate at once.
        assert_eq!(navigations(&a).len(), 1);
        assert!(!a.iter().any(|a| matches!(a, Action::Show(_))));
        for event in [
            Event::Tick { now_ms: T0 + 5000 },
            Event::CheckNow { now_ms: T0 + 5001 },
            Event::Online { now_ms: T0 + 5002 },
            Event::VisibilityChanged {
                now_ms: T0 + 5003,
                hidden: false,
            },
            Event::Start {
                now_ms: T0 + 5004,
                hidden: false,
            },
            done(T0 + 5005, healthy(None), healthy(None)),
        ] {
            assert_eq!(m.handle(event, 0.0), vec![]);
        }
    }

    #[test]
    fn recovering_ignores_probe_requests() {
        let mut m = probing();
        let a = confirm(&mut m, T0, 0.75);
        assert_eq!(waits(&a), vec![2250]);
        for event in [
            Event::CheckNow { now_ms: T0 + 1000 },
            Event::Online { now_ms: T0 + 1001 },
            Event::VisibilityChanged {
                now_ms: T0 + 1002,
                hidden: false,
            },
        ] {
            let a = m.handle(event, 0.5);
            assert_eq!(probes(&a), 0);
            assert!(navigations(&a).is_empty());
            assert!(!shown(&a).can_check_now());
        }
        let a = m.handle(Event::Tick { now_ms: T0 + 3600 }, 0.5);
        assert_eq!(navigations(&a).len(), 1);
    }

    #[test]
    fn spread_stays_within_bounds() {
        let config = classic();
        let mut max_seen = 0;
        for i in 0..1000 {
            let r = f64::from(i) / 1000.0;
            let mut m = RecoveryMachine::new(config, "/".to_owned());
            m.handle(
                Event::Start {
                    now_ms: T0,
                    hidden: false,
                },
                r,
            );
            let a = confirm(&mut m, T0, r);
            let delay = m.status().navigate_at_ms.map_or(0, |at| at - (T0 + 600));
            assert!(delay < 3000, "{delay}");
            if delay > 0 {
                assert_eq!(waits(&a), vec![delay as u32]);
            }
            max_seen = max_seen.max(delay);
        }
        assert!(max_seen >= 2990);
        for r in [-0.5, 1.0, 2.0, f64::NAN] {
            assert!(config.spread_delay(r) < 3000);
        }
        let none = Config {
            spread_ms: 0,
            ..classic()
        };
        assert_eq!(none.spread_delay(0.999), 0);
    }

    #[test]
    fn hidden_tab_pauses_and_resumes_at_once_when_visible() {
        let mut m = probing();
        m.handle(done(T0 + 100, down(503), down(503)), 0.5);
        let a = m.handle(
            Event::VisibilityChanged {
                now_ms: T0 + 200,
                hidden: true,
            },
            0.5,
        );
        assert!(shown(&a).paused);
        assert_eq!(
            shown(&a).next_check_text(T0 + 200),
            "paused while this tab is hidden"
        );
        // The due time passes: no probe while hidden.
        let a = m.handle(
            Event::Tick {
                now_ms: T0 + 60_000,
            },
            0.5,
        );
        assert_eq!(probes(&a), 0);
        assert!(waits(&a).is_empty());
        let a = m.handle(
            Event::Online {
                now_ms: T0 + 60_001,
            },
            0.5,
        );
        assert_eq!(probes(&a), 0);
        let a = m.handle(
            Event::CheckNow {
                now_ms: T0 + 60_002,
            },
            0.5,
        );
        assert_eq!(probes(&a), 0);
        // Visible again: probe at once.
        let a = m.handle(
            Event::VisibilityChanged {
                now_ms: T0 + 61_000,
                hidden: false,
            },
            0.5,
        );
        assert_eq!(probes(&a), 1);
        assert!(!shown(&a).paused);
    }

    #[test]
    fn hidden_at_start_waits_for_visibility() {
        let mut m = machine();
        let a = m.handle(
            Event::Start {
                now_ms: T0,
                hidden: true,
            },
            0.5,
        );
        assert_eq!(probes(&a), 0);
        let a = m.handle(
            Event::VisibilityChanged {
                now_ms: T0 + 9000,
                hidden: false,
            },
            0.5,
        );
        assert_eq!(probes(&a), 1);
    }

    #[test]
    fn hidden_tab_still_navigates_once_recovering() {
        let mut m = probing();
        confirm(&mut m, T0, 0.5);
        m.handle(
            Event::VisibilityChanged {
                now_ms: T0 + 700,
                hidden: true,
            },
            0.5,
        );
        let a = m.handle(Event::Tick { now_ms: T0 + 2600 }, 0.5);
        assert_eq!(navigations(&a).len(), 1);
    }

    #[test]
    fn online_probes_at_once() {
        let mut m = probing();
        m.handle(
            done(
                T0 + 100,
                HealthReport::new(Outcome::NetworkError),
                HealthReport::new(Outcome::NetworkError),
            ),
            0.5,
        );
        assert_eq!(m.status().state, State::Unreachable);
        let a = m.handle(Event::Online { now_ms: T0 + 200 }, 0.5);
        assert_eq!(probes(&a), 1);
    }

    #[test]
    fn check_now_probes_at_once_and_respects_no_overlap() {
        let mut m = probing();
        m.handle(done(T0 + 100, down(503), healthy(None)), 0.5);
        let a = m.handle(Event::CheckNow { now_ms: T0 + 200 }, 0.5);
        assert_eq!(probes(&a), 1);
        let a = m.handle(Event::CheckNow { now_ms: T0 + 250 }, 0.5);
        assert_eq!(probes(&a), 0);
        assert!(shown(&a).can_check_now());
        assert_eq!(shown(&a).next_check_text(T0 + 250), "checking now\u{2026}");
    }

    #[test]
    fn check_now_during_confirmation_confirms_early() {
        let mut m = probing();
        m.handle(done(T0, healthy(None), healthy(None)), 0.5);
        let a = m.handle(Event::CheckNow { now_ms: T0 + 100 }, 0.5);
        assert_eq!(probes(&a), 1);
        let a = m.handle(done(T0 + 150, healthy(None), healthy(None)), 0.5);
        assert_eq!(shown(&a).state, State::Recovering);
    }

    #[test]
    fn incompatible_builds_keep_waiting_and_show_updating() {
        let mut m = probing();
        let a = m.handle(done(T0, healthy(Some("new")), healthy(Some("old"))), 0.5);
        assert_eq!(shown(&a).state, State::Updating);
        assert_eq!(waits(&a), vec![5000]);
        m.handle(Event::Tick { now_ms: T0 + 5000 }, 0.5);
        // Still different after a confirmation attempt would have been due.
        let a = m.handle(
            done(T0 + 5100, healthy(Some("new")), healthy(Some("old"))),
            0.5,
        );
        assert_eq!(shown(&a).state, State::Updating);
        assert!(navigations(&a).is_empty());
    }

    #[test]
    fn build_compatibility() {
        let h = |b: Option<&str>| healthy(b);
        assert_eq!(assess(&h(Some("a")), &h(Some("a"))), None);
        assert_eq!(assess(&h(None), &h(Some("a"))), None);
        assert_eq!(assess(&h(Some("a")), &h(None)), None);
        assert_eq!(assess(&h(None), &h(None)), None);
        assert_eq!(assess(&h(Some("a")), &h(Some("b"))), Some(State::Updating));
        // An unhealthy tier's build does not matter.
        let mut old_api = down(503);
        old_api.build = Some("b".to_owned());
        assert_eq!(assess(&h(Some("a")), &old_api), Some(State::ApiDown));
    }

    #[test]
    fn status_classification() {
        assert_eq!(Outcome::from_status(200), Outcome::Healthy);
        for status in [
            0, 101, 199, 201, 204, 299, 301, 302, 304, 404, 500, 502, 503, 504,
        ] {
            assert_eq!(Outcome::from_status(status), Outcome::Unhealthy(status));
        }
        let net = HealthReport::new(Outcome::NetworkError);
        let timeout = HealthReport::new(Outcome::Timeout);
        let ok = healthy(None);
        let redirect = down(0);
        assert_eq!(assess(&down(503), &ok), Some(State::StaticDown));
        assert_eq!(assess(&redirect, &ok), Some(State::StaticDown));
        assert_eq!(assess(&ok, &down(503)), Some(State::ApiDown));
        assert_eq!(assess(&ok, &timeout), Some(State::ApiDown));
        assert_eq!(assess(&down(503), &down(503)), Some(State::BothDown));
        assert_eq!(assess(&down(503), &net), Some(State::BothDown));
        assert_eq!(assess(&net, &net), Some(State::Unreachable));
        assert_eq!(assess(&net, &timeout), Some(State::Unreachable));
        assert_eq!(assess(&timeout, &timeout), Some(State::Unreachable));
    }

    #[test]
    fn data_state_values() {
        let all = [
            (State::Checking, "checking"),
            (State::StaticDown, "static-down"),
            (State::ApiDown, "api-down"),
            (State::BothDown, "both-down"),
            (State::Unreachable, "unreachable"),
            (State::Updating, "updating"),
            (State::Confirming, "checking"),
            (State::Recovering, "recovering"),
            (State::Navigating, "navigating"),
        ];
        for (state, value) in all {
            assert_eq!(state.as_str(), value);
            assert!(state.sentence().ends_with(['.', '\u{2026}']));
        }
    }

    #[test]
    fn the_page_styles_only_states_the_client_sets() {
        // The maintenance page's CSS keys on `[data-state=...]`: a value the client never
        // sets is a rule that can never apply.
        let page = include_str!("../../www/maintenance.html");
        let values: Vec<&str> = [
            State::Checking,
            State::StaticDown,
            State::ApiDown,
            State::BothDown,
            State::Unreachable,
            State::Updating,
            State::Recovering,
            State::Navigating,
        ]
        .map(State::as_str)
        .to_vec();
        let styled: Vec<&str> = page
            .split("[data-state=")
            .skip(1)
            .filter_map(|rest| rest.split(']').next())
            .collect();
        assert!(!styled.is_empty(), "maintenance.html styles no data-state");
        for value in styled {
            assert!(
                values.contains(&value),
                "maintenance.html styles data-state={value}"
            );
        }
    }

    #[test]
    fn since_changes_only_with_the_state() {
        let mut m = probing();
        m.handle(done(T0 + 100, down(503), down(503)), 0.5);
        m.handle(Event::Tick { now_ms: T0 + 5100 }, 0.5);
        m.handle(done(T0 + 5200, down(503), down(503)), 0.5);
        assert_eq!(m.status().since_ms, T0 + 100);
        m.handle(
            Event::Tick {
                now_ms: T0 + 10_200,
            },
            0.5,
        );
        m.handle(done(T0 + 10_300, down(503), healthy(None)), 0.5);
        assert_eq!(m.status().since_ms, T0 + 10_300);
        assert_eq!(m.status().state, State::StaticDown);
    }

    #[test]
    fn health_report_reads_the_build() {
        let report = HealthReport::from_answer(
            200,
            Some(r#"{"status":"ok","tier":"static","build":"0.1.0-abc"}"#),
        );
        assert_eq!(report, healthy(Some("0.1.0-abc")));
        let report = HealthReport::from_answer(200, Some(r#"{ "build" : "x" }"#));
        assert_eq!(report.build.as_deref(), Some("x"));
        let report =
            HealthReport::from_answer(503, Some(r#"{"status":"maintenance","build":"x"}"#));
        assert_eq!(report, down(503));
        assert_eq!(build_of(r#"{"status":"ok"}"#), None);
        assert_eq!(build_of(r#"{"build":null}"#), None);
        assert_eq!(build_of(r#"{"build":12}"#), None);
        assert_eq!(build_of(r#"{"build":""}"#), None);
        assert_eq!(build_of(r#"{"build":"a\"b"}"#), None);
        assert_eq!(build_of(r#"{"build":"unterminated"#), None);
        assert_eq!(build_of(r#"{"build""#), None);
        assert_eq!(build_of(""), None);
        assert_eq!(build_of("<html>"), None);
    }

    #[test]
    fn config_from_attributes() {
        /// A page whose `<body>` has these attributes.
        fn page(attributes: &[(&str, &str)]) -> Config {
            Config::from_attributes(|name| {
                attributes
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| (*value).to_owned())
            })
        }
        assert_eq!(page(&[]), Config::default());
        let c = page(&[
            ("data-interval-ms", "1000"),
            ("data-timeout-ms", "250"),
            ("data-jitter", "0.1"),
            ("data-confirm-ms", "100"),
            ("data-spread-ms", "0"),
            ("data-phase-spread", "off"),
            ("data-hint", "off"),
        ]);
        assert_eq!(
            c,
            Config {
                interval_ms: 1000,
                timeout_ms: 250,
                jitter: 0.1,
                confirm_ms: 100,
                spread_ms: 0,
                phase_spread: false,
                hint: false,
            }
        );
        // Invalid values fall back one by one.
        let c = page(&[
            ("data-interval-ms", "-5"),
            ("data-timeout-ms", "abc"),
            ("data-jitter", "2"),
            ("data-confirm-ms", "1500"),
            ("data-spread-ms", "1.5"),
            ("data-phase-spread", "no"),
            ("data-hint", "OFF"),
        ]);
        assert_eq!(c, Config::default());
        for bad in ["", " 5000", "5e3", "0x10", ".", "1..2", "99999999999", "50"] {
            assert_eq!(
                page(&[("data-interval-ms", bad)]).interval_ms,
                5000,
                "{bad:?}"
            );
        }
        assert_eq!(page(&[("data-jitter", ".25")]).jitter, 0.25);
        // Every knob is read: a page that sets all of them to a non-default value changes
        // every field.
        assert_eq!(Config::KNOBS.len(), 7);
    }

    #[test]
    fn countdown_and_clock_texts() {
        let mut m = probing();
        let a = m.handle(done(T0, down(503), down(503)), 0.5);
        let status = shown(&a);
        assert_eq!(status.next_check_text(T0), "in 5 s");
        assert_eq!(status.next_check_text(T0 + 4001), "in 1 s");
        assert_eq!(status.next_check_text(T0 + 9000), "in 0 s");
        let mut m = probing();
        confirm(&mut m, T0, 0.5);
        assert_eq!(
            m.status().next_check_text(T0 + 600),
            "none: returning to your page in 2 s"
        );
        assert_eq!(clock_text(0), "00:00:00");
        assert_eq!(
            clock_text(((13 * 60 + 5) * 60 + 9) * 1000 + 999),
            "13:05:09"
        );
        assert_eq!(clock_text(-1000), "23:59:59");
        let mut s = String::new();
        push_decimal(&mut s, u64::MAX);
        assert_eq!(s, u64::MAX.to_string());
    }

    /// The page as shipped by default: phase spread and hint on.
    fn started() -> (RecoveryMachine, Vec<Action>) {
        let mut m = RecoveryMachine::new(Config::default(), "/dash".to_owned());
        let a = m.handle(
            Event::Start {
                now_ms: T0,
                hidden: false,
            },
            0.5,
        );
        (m, a)
    }

    fn hints(actions: &[Action]) -> Vec<u32> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Hint { id, timeout_ms } => {
                    assert_eq!(*timeout_ms, HINT_TIMEOUT_MS);
                    Some(*id)
                }
                _ => None,
            })
            .collect()
    }

    fn hint(now_ms: u64, id: u32, answer: HintAnswer) -> Event {
        Event::HintDone { now_ms, id, answer }
    }

    const BACK_IN_10_S: HintAnswer = HintAnswer::Recovered {
        spread_ms: Some(10_000),
    };

    #[test]
    fn phase_spread_makes_the_first_wait_a_random_part_of_the_interval() {
        for (r, first) in [(0.1, 500), (0.25, 1250), (0.999, 4995)] {
            let (mut m, _) = started();
            let a = m.handle(done(T0 + 10, down(503), down(503)), r);
            assert_eq!(waits(&a), vec![first], "random {r}");
            // Later waits are the jittered interval again.
            m.handle(
                Event::Tick {
                    now_ms: T0 + 10 + u64::from(first),
                },
                0.5,
            );
            let a = m.handle(done(T0 + 20 + u64::from(first), down(503), down(503)), 0.0);
            assert_eq!(waits(&a), vec![4000]);
        }
        // Without it, the first wait is jittered like every other.
        let mut m = RecoveryMachine::new(classic(), "/".to_owned());
        m.handle(
            Event::Start {
                now_ms: T0,
                hidden: false,
            },
            0.5,
        );
        assert_eq!(
            waits(&m.handle(done(T0, down(503), down(503)), 0.0)),
            vec![4000]
        );
    }

    #[test]
    fn a_probe_found_recovery_with_phase_spread_returns_without_a_further_spread() {
        let (mut m, _) = started();
        let a = m.handle(done(T0 + 10, healthy(None), healthy(None)), 0.9);
        assert_eq!(waits(&a), vec![250], "the confirming pair");
        m.handle(Event::Tick { now_ms: T0 + 260 }, 0.9);
        let a = m.handle(done(T0 + 270, healthy(None), healthy(None)), 0.9);
        assert_eq!(navigations(&a), vec!["/dash?v=1700000000270".to_owned()]);
    }

    #[test]
    fn the_hint_starts_with_the_page_and_a_recovered_hint_is_checked_after_its_spread() {
        let (mut m, a) = started();
        assert_eq!(hints(&a), vec![1]);
        assert_eq!(probes(&a), 1, "the first pair goes out beside the hint");
        let a = m.handle(done(T0 + 10, healthy(None), down(503)), 0.5);
        assert!(hints(&a).is_empty(), "one hint at a time");
        assert_eq!(shown(&a).state, State::ApiDown);
        // The hint: back, spread 10 s; this tab draws 0.3 of it.
        let a = m.handle(hint(T0 + 30_000, 1, BACK_IN_10_S), 0.3);
        assert_eq!(waits(&a), vec![3000]);
        assert_eq!(shown(&a).state, State::Confirming);
        assert!(navigations(&a).is_empty());
        let a = m.handle(
            Event::Tick {
                now_ms: T0 + 33_000,
            },
            0.5,
        );
        assert_eq!(probes(&a), 1);
        assert!(
            hints(&a).is_empty(),
            "no hint while one said the site is back"
        );
        // One healthy pair after the hint is the whole confirmation.
        let a = m.handle(done(T0 + 33_010, healthy(None), healthy(None)), 0.5);
        assert_eq!(navigations(&a), vec!["/dash?v=1700000033010".to_owned()]);
    }

    #[test]
    fn the_hint_spread_is_capped_by_the_page() {
        for (answer, spread) in [
            (
                HintAnswer::Recovered {
                    spread_ms: Some(1_000_000),
                },
                20_000,
            ),
            (HintAnswer::Recovered { spread_ms: None }, 20_000),
            (HintAnswer::Recovered { spread_ms: Some(0) }, 0),
        ] {
            let (mut m, _) = started();
            m.handle(done(T0 + 10, healthy(None), down(503)), 0.5);
            let a = m.handle(hint(T0 + 100, 1, answer), 0.999_999);
            let wait = waits(&a).first().copied().unwrap_or(0);
            assert!(
                wait <= spread && wait + 1 >= spread,
                "{answer:?}: waited {wait}"
            );
        }
    }

    #[test]
    fn a_wrong_hint_goes_back_to_probing_and_asks_again_after_the_next_pair() {
        let (mut m, _) = started();
        m.handle(done(T0 + 10, healthy(None), down(503)), 0.5);
        // This tab draws 0 of the spread: the checking pair goes out at once.
        let a = m.handle(hint(T0 + 1000, 1, BACK_IN_10_S), 0.0);
        assert_eq!(probes(&a), 1);
        let a = m.handle(done(T0 + 1010, healthy(None), down(503)), 0.0);
        assert_eq!(shown(&a).state, State::ApiDown);
        assert!(navigations(&a).is_empty());
        assert!(hints(&a).is_empty(), "not at once");
        assert_eq!(waits(&a), vec![4000]);
        let a = m.handle(Event::Tick { now_ms: T0 + 5010 }, 0.5);
        assert_eq!(probes(&a), 1);
        assert_eq!(hints(&a), vec![2]);
    }

    #[test]
    fn not_yet_asks_again_at_once_and_a_failure_waits_three_intervals() {
        let (mut m, _) = started();
        m.handle(done(T0 + 10, healthy(None), down(503)), 0.5);
        // A long-poll that held 20 s: ask again at once.
        let a = m.handle(hint(T0 + 20_000, 1, HintAnswer::NotYet), 0.5);
        assert_eq!(hints(&a), vec![2]);
        // One that came back after 10 ms is no long-poll: wait for the next pair.
        let a = m.handle(hint(T0 + 20_010, 2, HintAnswer::NotYet), 0.5);
        assert!(hints(&a).is_empty());
        let tick =
            |m: &mut RecoveryMachine, at: u64| m.handle(Event::Tick { now_ms: T0 + at }, 0.5);
        assert!(
            hints(&tick(&mut m, 30_000)).is_empty(),
            "not before three intervals"
        );
        assert_eq!(hints(&tick(&mut m, 35_010)), vec![3]);
        // A failure (fallback gone, HAProxy's queue full, timeout) waits too.
        let a = m.handle(hint(T0 + 35_020, 3, HintAnswer::Failed), 0.5);
        assert!(hints(&a).is_empty());
        assert!(
            hints(&tick(&mut m, 45_000)).is_empty(),
            "not before three intervals"
        );
        assert_eq!(hints(&tick(&mut m, 50_020)), vec![4]);
    }

    #[test]
    fn a_hidden_tab_cancels_its_hint_and_ignores_the_late_answer() {
        let (mut m, _) = started();
        m.handle(done(T0 + 10, healthy(None), down(503)), 0.5);
        let a = m.handle(
            Event::VisibilityChanged {
                now_ms: T0 + 100,
                hidden: true,
            },
            0.5,
        );
        assert!(a.contains(&Action::CancelHint));
        // The aborted request's answer arrives later: ignored.
        let before = m.status();
        let a = m.handle(hint(T0 + 150, 1, BACK_IN_10_S), 0.5);
        assert_eq!(shown(&a), before);
        let a = m.handle(
            Event::VisibilityChanged {
                now_ms: T0 + 200,
                hidden: false,
            },
            0.5,
        );
        assert_eq!(hints(&a), vec![2]);
        assert_eq!(probes(&a), 1);
        // The answer of a hint other than the one in flight is ignored too.
        let before = m.status();
        assert_eq!(
            shown(&m.handle(hint(T0 + 300, 1, BACK_IN_10_S), 0.5)),
            before
        );
    }

    #[test]
    fn a_hint_does_not_shorten_the_loop_guard_hold() {
        let (mut m, _) = started();
        m.hold_healthy_for(30_000);
        m.handle(done(T0 + 10, healthy(None), down(503)), 0.5);
        m.handle(hint(T0 + 1000, 1, BACK_IN_10_S), 0.0);
        m.handle(Event::Tick { now_ms: T0 + 1000 }, 0.5);
        let a = m.handle(done(T0 + 1010, healthy(None), healthy(None)), 0.5);
        assert!(navigations(&a).is_empty());
        assert_eq!(waits(&a), vec![5000]);
        let mut t = T0 + 1010;
        while t < T0 + 31_010 {
            t += 5000;
            m.handle(Event::Tick { now_ms: t }, 0.5);
            let a = m.handle(done(t, healthy(None), healthy(None)), 0.5);
            if t - 1000 - T0 >= 30_000 {
                assert_eq!(navigations(&a).len(), 1);
                return;
            }
            assert!(navigations(&a).is_empty(), "at {}", t - T0);
        }
        panic!("never navigated");
    }

    #[test]
    fn hint_answers() {
        let body = r#"{"recovered":true,"spread_ms":15}"#;
        assert_eq!(
            HintAnswer::from_answer(200, Some(body)),
            HintAnswer::Recovered {
                spread_ms: Some(15)
            }
        );
        assert_eq!(
            HintAnswer::from_answer(200, None),
            HintAnswer::Recovered { spread_ms: None }
        );
        assert_eq!(HintAnswer::from_answer(204, None), HintAnswer::NotYet);
        for status in [0, 201, 302, 404, 500, 503] {
            assert_eq!(HintAnswer::from_answer(status, None), HintAnswer::Failed);
        }
        for (body, value) in [
            (r#"{"spread_ms": 0}"#, Some(0)),
            (r#"{"a":1, "spread_ms" :  250 }"#, Some(250)),
            (r#"{"spread_ms":999999999}"#, Some(999_999_999)),
            (r#"{"spread_ms":1000000000}"#, None),
            (r#"{"spread_ms":-5}"#, None),
            (r#"{"spread_ms":1.5}"#, None),
            (r#"{"spread_ms":"5"}"#, None),
            (r#"{"xspread_ms":5}"#, None),
            (r#"{"spread_ms"}"#, None),
            ("", None),
        ] {
            assert_eq!(number_of(body, "spread_ms"), value, "{body}");
        }
    }

    /// The page's `<body>` sets exactly the knobs the client reads, and each value parses as
    /// written: a typo that silently fell back to a default fails here.
    #[test]
    fn the_page_sets_every_knob_and_each_parses_as_written() {
        let page = include_str!("../../www/maintenance.html");
        let attributes = Config::body_attributes(page);
        let names: Vec<&str> = attributes.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, Config::KNOBS, "the page's <body> attributes");
        let config = Config::from_page(page);
        let switch = |on: bool| if on { "on" } else { "off" }.to_owned();
        for (name, value) in &attributes {
            let parsed = match name.as_str() {
                "data-interval-ms" => config.interval_ms.to_string(),
                "data-timeout-ms" => config.timeout_ms.to_string(),
                "data-jitter" => config.jitter.to_string(),
                "data-confirm-ms" => config.confirm_ms.to_string(),
                "data-spread-ms" => config.spread_ms.to_string(),
                "data-phase-spread" => switch(config.phase_spread),
                "data-hint" => switch(config.hint),
                other => panic!("{other} is not a knob"),
            };
            assert_eq!(&parsed, value, "{name} did not parse as written");
        }
        // And the shipped page is the default configuration.
        assert_eq!(config, Config::default());
    }
}
