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
//!
//! Across hosts (`--haproxy-peers`) each reading asks every load balancer at once, and a
//! request is answered when the balancer that forwarded it reports both mains UP: that one
//! holds the VIP, so the tab's next probes go through it, and another balancer's view says
//! nothing about what the tab will see. A request from no known balancer is answered when
//! any of them reports both UP.

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use contract::Role;
use serde_json::json;
use tokio::sync::watch;

use crate::haproxy_stats::{self, HaproxyReport, Peer, StatsSocket};

/// How often HAProxy's view is read while someone waits: HAProxy's own checks run every
/// 500 ms, so a recovery reaches the waiting tabs at most this much after HAProxy saw it.
pub const POLL: Duration = Duration::from_millis(100);

/// One reading of HAProxy's view, shared by every waiting request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Reading {
    /// Counts the readings, so a request waits for one made after it arrived.
    seq: u64,
    /// Whether each view read reported both main servers UP: one entry per peer, in
    /// `--haproxy-peers` order, or a single one for the Unix socket without peers.
    recovered: Vec<bool>,
    /// Requests waiting when the reading was made: the tabs this reading tells at once.
    waiting: usize,
}

impl Reading {
    /// Whether this reading is news for a request that arrived when reading `since` was the
    /// last one and came through peer `via`: a later reading, in which that balancer reports
    /// recovery, or any view does when the request came through no known balancer.
    fn answers(&self, since: u64, via: Option<usize>) -> bool {
        self.seq > since
            && match via {
                Some(peer) => self.recovered.get(peer) == Some(&true),
                None => self.recovered.contains(&true),
            }
    }
}

/// Whether a view reports both main servers UP; an unreachable one reports no server, so no.
fn mains_up(view: &HaproxyReport) -> bool {
    let up = |role: Role| {
        view.servers.iter().any(|s| {
            s.backend == role.backend() && s.server == role.name() && s.state.starts_with("UP")
        })
    };
    up(Role::StaticMain) && up(Role::ApiMain)
}

/// One reading's [`Reading::recovered`]: every peer's view at once, else the Unix socket's.
async fn read_views(stats: &StatsSocket) -> Vec<bool> {
    if stats.peers.is_empty() {
        let view = haproxy_stats::report(&stats.path, stats.timeout).await;
        return vec![mains_up(&view)];
    }
    haproxy_stats::report_peers(&stats.peers, stats.timeout)
        .await
        .iter()
        .map(mains_up)
        .collect()
}

/// Which peer forwarded a request from `from`, by index; `None` when none did (or there are
/// no peers), so that the request hears of recovery from any view.
fn forwarder(peers: &[Peer], from: Option<SocketAddr>) -> Option<usize> {
    peers.iter().position(|peer| peer.forwarded(from))
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
    /// Starts the watcher on the first request: it reads HAProxy's view (`stats`: the socket
    /// or every peer) every [`POLL`] while any request waits, and idles otherwise.
    fn watch(&self, stats: &StatsSocket) {
        if self.inner.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let (inner, stats) = (self.inner.clone(), stats.clone());
        actix_web::rt::spawn(async move {
            let mut seq = 0;
            loop {
                tokio::time::sleep(POLL).await;
                let waiting = inner.waiting.load(Ordering::Relaxed);
                if waiting == 0 {
                    continue;
                }
                let recovered = read_views(&stats).await;
                seq += 1;
                inner.readings.send_replace(Reading {
                    seq,
                    recovered,
                    waiting,
                });
            }
        });
    }

    /// Waits for a reading made after now that reports recovery to a request that came
    /// through peer `via` ([`Reading::answers`]), for at most `hold`; the number of tabs told
    /// at once, or `None` without news.
    async fn wait(&self, via: Option<usize>, hold: Duration) -> Option<usize> {
        self.inner.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.inner.waiting);
        let mut readings = self.inner.readings.subscribe();
        let since = readings.borrow().seq;
        let news = readings.wait_for(|r| r.answers(since, via));
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
/// `stats`: its socket, or across hosts every peer.
pub fn configure(cfg: &mut web::ServiceConfig, hint: &Hint, stats: &StatsSocket) {
    let (hint, stats) = (hint.clone(), stats.clone());
    cfg.route(
        contract::RECOVERY_HINT_PATH,
        web::get().to(move |request: HttpRequest| {
            hint.watch(&stats);
            let via = forwarder(&stats.peers, request.peer_addr());
            let hint = hint.clone();
            async move {
                match hint.wait(via, random_hold()).await {
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
    use crate::haproxy_stats::parse_show_stat;

    /// A reachable view with these `backend,server,status` lines.
    fn view(lines: &[&str]) -> HaproxyReport {
        let mut csv = String::from("# pxname,svname,status,type,scur,stot,lastchg,check_status,check_duration,bck,hrsp_5xx,eresp,econ,req_tot,\n");
        for line in lines {
            csv.push_str(&format!("{line},2,0,0,1,L7OK,0,0,0,0,0,,\n"));
        }
        HaproxyReport {
            reachable: true,
            error: None,
            servers: parse_show_stat(&csv).unwrap().servers,
            backends: Vec::new(),
        }
    }

    fn reading(seq: u64, recovered: &[bool]) -> Reading {
        Reading {
            seq,
            recovered: recovered.to_vec(),
            waiting: 1,
        }
    }

    #[test]
    fn a_view_has_recovered_when_both_mains_are_up() {
        let both = view(&["static,static-main,UP", "api,api-main,UP"]);
        assert!(mains_up(&both));
        for (lines, why) in [
            (
                ["static,static-main,UP", "api,api-main,MAINT"],
                "api-main in MAINT",
            ),
            (
                ["static,static-main,DOWN", "api,api-main,UP"],
                "static-main DOWN",
            ),
            // The same names in another backend (haproxy.cfg's `hint`) are not the tiers.
            (
                ["static,static-main,UP", "hint,api-main,UP"],
                "api-main UP elsewhere",
            ),
        ] {
            assert!(!mains_up(&view(&lines)), "{why}");
        }
        let unreachable = HaproxyReport {
            reachable: false,
            error: Some("nothing listens on HAProxy's stats socket.".to_owned()),
            servers: Vec::new(),
            backends: Vec::new(),
        };
        assert!(!mains_up(&unreachable), "an unreachable balancer");
    }

    #[test]
    fn a_request_hears_the_balancer_that_forwarded_it() {
        // lb-a (0) reports both mains UP, lb-b (1) does not yet.
        let news = reading(1, &[true, false]);
        assert!(news.answers(0, Some(0)), "through lb-a");
        assert!(!news.answers(0, Some(1)), "through lb-b, still down there");
        let news = reading(1, &[false, true]);
        assert!(!news.answers(0, Some(0)), "through lb-a, still down there");
        assert!(news.answers(0, Some(1)), "through lb-b");
    }

    #[test]
    fn a_request_from_no_balancer_hears_any() {
        assert!(reading(1, &[false, true]).answers(0, None), "one peer");
        assert!(!reading(1, &[false, false]).answers(0, None), "no peer");
        // Without peers: the Unix socket's single view, today's rule.
        assert!(reading(1, &[true]).answers(0, None));
        assert!(!reading(1, &[false]).answers(0, None));
        // Before any reading.
        assert!(!Reading::default().answers(0, None));
    }

    #[test]
    fn only_a_reading_made_after_the_request_answers_it() {
        let news = reading(7, &[true, true]);
        assert!(!news.answers(7, Some(0)));
        assert!(!news.answers(7, None));
        assert!(news.answers(6, Some(0)));
    }

    #[test]
    fn the_forwarder_is_the_peer_at_the_request_s_address() {
        let peers = [
            Peer {
                name: "lb-a".to_owned(),
                addr: "198.18.0.11:9100".parse().unwrap(),
            },
            Peer {
                name: "lb-b".to_owned(),
                addr: "198.18.0.12:9100".parse().unwrap(),
            },
        ];
        let from = |addr: &str| Some(addr.parse::<SocketAddr>().unwrap());
        assert_eq!(forwarder(&peers, from("198.18.0.12:40000")), Some(1));
        assert_eq!(forwarder(&peers, from("198.18.0.11:40000")), Some(0));
        assert_eq!(forwarder(&peers, from("198.18.0.1:40000")), None, "no peer");
        assert_eq!(forwarder(&peers, None), None, "no address");
        assert_eq!(forwarder(&[], from("198.18.0.11:40000")), None, "no peers");
    }

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
