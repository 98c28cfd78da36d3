//! Waiting for a condition with a deadline instead of sleeping a fixed time.

use std::fmt::Debug;
use std::thread;
use std::time::{Duration, Instant};

/// How long [`wait_until`] sleeps between two looks at its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` every [`POLL_INTERVAL`] until it returns `Ok`, and returns that value.
///
/// `check` returns `Err(what it saw)`. When `timeout` has passed, panics with `what` (the
/// condition waited for, e.g. "api-main is DOWN"), the elapsed time and the last thing seen,
/// followed by `context()` (typically the processes' log tails), computed only then.
#[track_caller]
pub fn wait_until<T, E: Debug>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, E>,
    context: impl FnOnce() -> String,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if started.elapsed() >= timeout => panic!(
                "timed out after {:.2?} waiting until {what}\nlast seen: {seen:#?}\n{}",
                started.elapsed(),
                context()
            ),
            Err(_) => thread::sleep(POLL_INTERVAL),
        }
    }
}
