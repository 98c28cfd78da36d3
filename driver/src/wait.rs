//! Waiting for a condition with a deadline instead of sleeping a fixed time.

use std::fmt::{self, Debug};
use std::thread;
use std::time::{Duration, Instant};

/// How long [`poll_until`] sleeps between two looks at its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A wait that ran out of time: what was waited for and what was seen last.
#[derive(Clone, Debug)]
pub struct TimedOut {
    /// The condition, e.g. "api-main is DOWN".
    pub what: String,
    /// How long the wait lasted.
    pub elapsed: Duration,
    /// The last `Err` the check returned, pretty-printed.
    pub last_seen: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:.2?} waiting until {}\nlast seen: {}",
            self.elapsed, self.what, self.last_seen
        )
    }
}

impl std::error::Error for TimedOut {}

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Ok`, and returns that value; after
/// `timeout`, returns [`TimedOut`] with the last thing `check` saw (its `Err`).
pub fn poll_until<T, E: Debug>(
    timeout: Duration,
    what: &str,
    check: impl FnMut() -> Result<T, E>,
) -> Result<T, TimedOut> {
    poll_every(POLL_INTERVAL, timeout, what, check)
}

/// [`poll_until`], looking every `interval` (a browser round trip costs more than a socket's).
pub fn poll_every<T, E: Debug>(
    interval: Duration,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
) -> Result<T, TimedOut> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(seen) if started.elapsed() >= timeout => {
                return Err(TimedOut {
                    what: what.to_owned(),
                    elapsed: started.elapsed(),
                    last_seen: format!("{seen:#?}"),
                })
            }
            Err(_) => thread::sleep(interval),
        }
    }
}

/// [`poll_until`] for tests: panics on timeout with the [`TimedOut`] message followed by
/// `context()` (typically the processes' log tails), computed only then.
#[track_caller]
pub fn wait_until<T, E: Debug>(
    timeout: Duration,
    what: &str,
    check: impl FnMut() -> Result<T, E>,
    context: impl FnOnce() -> String,
) -> T {
    match poll_until(timeout, what, check) {
        Ok(value) => value,
        Err(timed_out) => panic!("{timed_out}\n{}", context()),
    }
}
