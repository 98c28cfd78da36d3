//! The reload-loop guard, as pure functions of the time and what the tab remembers.
//!
//! A site that comes back for a moment and falls over again would send a tab round and round:
//! maintenance page, dashboard, maintenance page. Per tab (`sessionStorage`, [`STORAGE_KEY`])
//! the guard remembers when the recovery client last took the tab back, and counts a
//! maintenance page that loads again less than [`GuardConfig::short_ms`] later as a
//! *bounce*. After [`GuardConfig::trips`] bounces in a row the site counts as unstable: the
//! maintenance page then returns only once the site has stayed healthy for
//! [`GuardConfig::hold_ms`] (`RecoveryMachine::hold_healthy_for`) and says why. A return
//! after which the dashboard stayed up for `short_ms` or longer clears the count, and so
//! does a maintenance page opened by hand (no page of the site left the tab just before: the
//! page's script then hands over no record).
//!
//! Bound: while the site flaps faster than `hold_ms`, a tab returns to the dashboard at most
//! `trips` times, however long the flapping lasts; LiveView's guard instead reloads ten
//! times and then every 30 s, forever.

use alloc::string::String;

use crate::recovery::push_decimal;

/// The `sessionStorage` entry holding a tab's [`Trips`].
pub const STORAGE_KEY: &str = "recoveryTrips";

/// The `<body>` attribute through which the page hands [`STORAGE_KEY`] to the client and
/// back: the page's inline script fills it at load and stores it on `pagehide`.
pub const TRIPS_ATTRIBUTE: &str = "data-trips";

/// The guard's rules. Fixed in the build: every attribute the Wasm reads costs bytes of
/// HAProxy's buffer, and the end-to-end suite runs them as shipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardConfig {
    /// Bounces in a row that make the site unstable (3).
    pub trips: u32,
    /// A maintenance page this soon after a return is a bounce; a dashboard that stayed up
    /// longer resets the count (40 s: three bounces in a row fit in two minutes).
    pub short_ms: u32,
    /// While unstable, how long the site must stay healthy before the tab returns (30 s).
    pub hold_ms: u32,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            trips: 3,
            short_ms: 40_000,
            hold_ms: 30_000,
        }
    }
}

/// Parses exactly `out.len()` comma-separated whole numbers (at most 15 digits each) into
/// `out`; false for anything else. Hand-written: `str::parse` costs Wasm.
fn numbers(raw: Option<&str>, out: &mut [u64]) -> bool {
    let (mut index, mut digits) = (0, 0);
    for b in raw.unwrap_or_default().bytes() {
        match (b, out.get_mut(index)) {
            (b'0'..=b'9', Some(n)) if digits < 15 => {
                *n = *n * 10 + u64::from(b - b'0');
                digits += 1;
            }
            (b',', _) if digits > 0 => {
                index += 1;
                digits = 0;
            }
            _ => return false,
        }
    }
    digits > 0 && index + 1 == out.len()
}

/// What a tab remembers between its pages: when it last returned, and how many bounces in
/// a row it has seen. Two numbers: every byte of the Wasm counts against HAProxy's buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trips {
    /// When the recovery client last took the tab back (0: not since the last load).
    returned_ms: u64,
    /// Bounces in a row.
    bounces: u64,
}

impl Trips {
    /// Reads the stored form (`<returned>,<bounces>`); anything unreadable is a fresh start.
    pub fn decode(raw: Option<&str>) -> Trips {
        let mut v = [0u64; 2];
        if !numbers(raw, &mut v) {
            return Trips::default();
        }
        Trips {
            returned_ms: v[0],
            bounces: v[1],
        }
    }

    /// The stored form, read back by [`Trips::decode`].
    pub fn encode(&self) -> String {
        let mut text = String::new();
        push_decimal(&mut text, self.returned_ms);
        text.push(',');
        push_decimal(&mut text, self.bounces);
        text
    }

    /// A maintenance page loaded at `now_ms`; returns whether the site is now unstable.
    pub fn maintenance_loaded(&mut self, now_ms: u64, config: &GuardConfig) -> bool {
        let returned = core::mem::take(&mut self.returned_ms);
        if returned != 0 {
            if now_ms.saturating_sub(returned) < u64::from(config.short_ms) {
                self.bounces += 1;
            } else {
                // The dashboard stayed up for a while: the site was fine in between.
                self.bounces = 0;
            }
        }
        self.bounces >= u64::from(config.trips)
    }

    /// The recovery client takes the tab back at `now_ms`.
    pub fn returning(&mut self, now_ms: u64) {
        self.returned_ms = now_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;
    const S: u64 = 1000;

    /// One maintenance load after a return `stayed` ms earlier, starting at `at`.
    fn round_trip(trips: &mut Trips, at: u64, stayed: u64) -> bool {
        trips.returning(at);
        trips.maintenance_loaded(at + stayed, &GuardConfig::default())
    }

    #[test]
    fn three_quick_round_trips_in_a_row_make_the_site_unstable() {
        let mut trips = Trips::default();
        assert!(!trips.maintenance_loaded(T0, &GuardConfig::default()));
        assert!(!round_trip(&mut trips, T0 + 10 * S, 39 * S));
        assert!(!round_trip(&mut trips, T0 + 50 * S, 39 * S));
        assert!(round_trip(&mut trips, T0 + 90 * S, 39 * S));
        // And it stays so while the bounces go on.
        assert!(round_trip(&mut trips, T0 + 70 * S, 5 * S));
    }

    #[test]
    fn a_load_without_a_return_is_no_bounce() {
        let mut trips = Trips::default();
        for i in 0..10 {
            // The fallback's 30 s reload, or the user reloading: no return happened.
            assert!(!trips.maintenance_loaded(T0 + i * S, &GuardConfig::default()));
        }
    }

    #[test]
    fn a_dashboard_that_stayed_up_resets_the_count() {
        let mut trips = Trips::default();
        round_trip(&mut trips, T0, 5 * S);
        round_trip(&mut trips, T0 + 10 * S, 5 * S);
        // Up for 40 s: reset; the next two quick trips are not enough.
        assert!(!round_trip(&mut trips, T0 + 20 * S, 40 * S));
        assert!(!round_trip(&mut trips, T0 + 90 * S, 5 * S));
        assert!(!round_trip(&mut trips, T0 + 100 * S, 5 * S));
        assert!(round_trip(&mut trips, T0 + 110 * S, 5 * S));
    }

    #[test]
    fn storage_round_trips_and_garbage_starts_afresh() {
        let mut trips = Trips::default();
        round_trip(&mut trips, T0, 5 * S);
        round_trip(&mut trips, T0 + 10 * S, 5 * S);
        trips.returning(T0 + 20 * S);
        let text = trips.encode();
        assert_eq!(Trips::decode(Some(&text)), trips);
        for garbage in [
            None,
            Some(""),
            Some("x"),
            Some("1,,2"),
            Some("-1"),
            Some("1,2,3"),
            Some("1"),
            Some(",1"),
        ] {
            assert_eq!(Trips::decode(garbage), Trips::default(), "{garbage:?}");
        }
        assert_eq!(Trips::default().encode(), "0,0");
    }

    #[test]
    fn an_unstable_site_stays_so_until_the_dashboard_stays_up() {
        let mut trips = Trips::default();
        for i in 0..50 {
            let unstable = round_trip(&mut trips, T0 + i * 20 * S, S);
            assert_eq!(unstable, i >= 2, "round trip {i}");
        }
        assert!(!round_trip(&mut trips, T0 + 2000 * S, 40 * S));
    }

    /// Drives a machine whose probes answer `healthy_at(t)`; returns when it navigated.
    fn navigates_at(hold_ms: u32, healthy_at: impl Fn(u64) -> bool) -> u64 {
        use crate::recovery::{Action, Config, Event, HealthReport, Outcome, RecoveryMachine};
        let mut m = RecoveryMachine::new(Config::default(), "/".into());
        m.hold_healthy_for(hold_ms);
        let mut t = T0;
        let mut actions = m.handle(
            Event::Start {
                now_ms: t,
                hidden: false,
            },
            0.5,
        );
        for _ in 0..10_000 {
            let mut next = None;
            for action in &actions {
                match action {
                    Action::Navigate(_) => return t,
                    Action::Probe { .. } => {
                        t += 10;
                        let outcome = if healthy_at(t) {
                            Outcome::Healthy
                        } else {
                            Outcome::Unhealthy(503)
                        };
                        next = Some(Event::ProbeDone {
                            now_ms: t,
                            static_tier: HealthReport::new(outcome),
                            api_tier: HealthReport::new(Outcome::Healthy),
                        });
                    }
                    Action::Wait(ms) if next.is_none() => {
                        t += u64::from(*ms);
                        next = Some(Event::Tick { now_ms: t });
                    }
                    _ => {}
                }
            }
            actions = m.handle(next.expect("the machine always asks for something"), 0.5);
        }
        panic!("never navigated");
    }

    #[test]
    fn a_held_machine_returns_only_after_the_site_stayed_healthy_that_long() {
        // Healthy from the start: the first healthy pair is at T0 + 10 ms.
        let at = navigates_at(30_000, |_| true);
        assert!(
            at >= T0 + 10 + 30_000,
            "navigated {} ms after the first healthy pair",
            at - T0
        );
        assert!(at <= T0 + 30_000 + 6_000 + 3_000, "took {} ms", at - T0);
        // Flapping every 2 s for a minute: no return until it has stayed up 30 s.
        let flaps_until = T0 + 60_000;
        let at = navigates_at(30_000, |t| t > flaps_until || (t - T0) / 2000 % 2 == 1);
        // The last down phase is 56-58 s: from 58 s on the site stays up.
        let last_down_ended = flaps_until - 2000;
        assert!(
            at >= last_down_ended + 30_000,
            "returned during or too soon after the flapping"
        );
        // Without a hold the plain confirmation decides, as before.
        assert!(navigates_at(0, |_| true) < T0 + 5_000);
    }

    #[test]
    fn the_page_keeps_the_record_under_the_same_names() {
        // The maintenance page's inline script moves the record between sessionStorage and
        // <body data-trips>; it must spell both names as this module does.
        let page = include_str!("../../www/maintenance.html");
        let key = alloc::format!("sessionStorage.{STORAGE_KEY}");
        assert_eq!(
            page.matches(key.as_str()).count(),
            2,
            "{key} read and written"
        );
        let attribute = alloc::format!("\"{TRIPS_ATTRIBUTE}\"");
        assert_eq!(
            page.matches(attribute.as_str()).count(),
            2,
            "{attribute} set and read"
        );
    }
}
