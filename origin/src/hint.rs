//! The recovery hint ([`contract::RECOVERY_HINT_PATH`]), served by api-fallback.
//!
//! The maintenance page probes every 5 s; on its own that costs each tab 2.5 s on average
//! after the site is back. So each visible maintenance tab also holds one long-poll here, and
//! api-fallback answers every held request the moment HAProxy reports both main servers UP
//! (read from HAProxy's stats socket every [`POLL`], only while a request waits). The answer
//! carries `spread_ms`, sized by how many tabs it tells at once
//! ([`contract::RECOVERY_HINT_TABS_PER_S`]), so a large herd comes back spread out and a small
//! one at once. Without news, a request gets 204 after a random hold between
//! [`contract::RECOVERY_HINT_HOLD_MIN_MS`] and [`contract::RECOVERY_HINT_HOLD_MAX_MS`].

use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use contract::Role;
use serde_json::json;
use tokio::sync::watch;

use crate::config::StatsSocket;
use crate::haproxy_stats;

/// How often HAProxy's view is read while someone waits: HAProxy's own checks run every
/// 500 ms, so a recovery reaches the waiting tabs at most this much after HAProxy saw it.
pub const POLL: Duration = Duration::from_millis(100);

/// One reading of HAProxy's view, shared by every waiting request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Reading {
    /// Counts the readings, so a request waits for one made after it arrived.
    seq: u64,
    /// HAProxy reported both main servers UP.
    recovered: bool,
    /// Requests waiting when the reading was made: the tabs this reading tells at once.
    waiting: usize,
}

/// The shared state of api-fallback's hint: one watcher for all workers (clones share it).
#[derive(Clone, Debug)]
pub struct Hint {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    readings: watch::Sender<Reading>,
    waiting: AtomicUsize,
    watching: AtomicBool,
}

impl Default for Hint {
    fn default() -> Self {
        Hint {
            inner: Arc::new(Inner {
                readings: watch::Sender::new(Reading::default()),
                waiting: AtomicUsize::new(0),
                watching: AtomicBool::new(false),
            }),
        }
    }
}

/// Counts a waiting request until it is answered or dropped (the client went away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hint {
    /// Starts the watcher on the first request: it reads `socket` every [`POLL`] while any
    /// request waits, and idles otherwise.
    fn watch(&self, socket: PathBuf, limit: Duration) {
        if self.inner.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        actix_web::rt::spawn(async move {
            let mut seq = 0;
            loop {
                tokio::time::sleep(POLL).await;
                let waiting = inner.waiting.load(Ordering::Relaxed);
                if waiting == 0 {
                    continue;
                }
                let report = haproxy_stats::report(&socket, limit).await;
                let up = |role: Role| {
                    report.servers.iter().any(|s| {
                        s.backend == role.backend()
                            && s.server == role.name()
                            && s.state.starts_with("UP")
                    })
                };
                seq += 1;
                inner.readings.send_replace(Reading {
                    seq,
                    recovered: up(Role::StaticMain) && up(Role::ApiMain),
                    waiting,
                });
            }
        });
    }

    /// Waits for a reading made after now that reports recovery, for at most `hold`; the
    /// number of tabs told at once, or `None` without news.
    async fn wait(&self, hold: Duration) -> Option<usize> {
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.inner.waiting);
        let mut readings = self.inner.readings.subscribe();
        let since = readings.borrow().seq;
        let news = readings.wait_for(|r| r.seq > since && r.recovered);
        let tabs = match tokio::time::timeout(hold, news).await {
            Ok(Ok(reading)) => Some(reading.waiting),
            _ => None,
        };
        tabs
    }
}

/// A random hold between the contract's bounds, so tabs that started together do not all ask
/// again in the same instant.
fn random_hold() -> Duration {
    let (min, max) = (
        u64::from(contract::RECOVERY_HINT_HOLD_MIN_MS),
        u64::from(contract::RECOVERY_HINT_HOLD_MAX_MS),
    );
    let random = RandomState::new().hash_one(std::time::Instant::now());
    Duration::from_millis(min + random % (max - min + 1))
}

/// Registers [`contract::RECOVERY_HINT_PATH`] on api-fallback, reading HAProxy's view from
/// `socket`.
pub fn configure(cfg: &mut web::ServiceConfig, hint: &Hint, stats: &StatsSocket) {
    let hint = hint.clone();
    let (socket, limit) = (stats.path.clone(), stats.timeout);
    cfg.route(
        contract::RECOVERY_HINT_PATH,
        web::get().to(move || {
            let (hint, socket) = (hint.clone(), socket.clone());
            async move {
                hint.watch(socket, limit);
                match hint.wait(random_hold()).await {
                    Some(tabs) => HttpResponse::Ok()
                        .insert_header((header::CACHE_CONTROL, "no-store"))
                        .json(json!({"recovered": true, "spread_ms": contract::recovery_hint_spread_ms(tabs as u64)})),
                    None => HttpResponse::NoContent()
                        .insert_header((header::CACHE_CONTROL, "no-store"))
                        .finish(),
                }
            }
        }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spread_grows_with_the_herd() {
        let spread = contract::recovery_hint_spread_ms;
        assert_eq!((spread(0), spread(15), spread(1000)), (0, 30, 2000));
    }

    #[test]
    fn holds_stay_within_the_contract() {
        for _ in 0..1000 {
            let hold = random_hold().as_millis();
            assert!((15_000..=25_000).contains(&hold), "{hold}");
        }
    }
}
