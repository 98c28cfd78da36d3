//! The harness itself: a browser whose test panics leaves no process behind, in any engine.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Duration;

use driver::browser::{Browser, Engine};

/// What the panicking test hands out of its unwinding: the driver's pid (its process group)
/// and the profile directory every browser process names.
struct Started {
    group: u32,
    profile: PathBuf,
}

/// browser_reaped_after_a_panic: a test that opens a page and then panics; once it has
/// unwound, no process of the driver's group and none naming the profile is alive, and the
/// profile directory is gone.
pub fn browser_reaped_after_a_panic(engine: Engine) {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        let tab = Browser::start(engine);
        tab.goto("about:blank");
        let started = Started {
            group: tab.driver_pid(),
            profile: tab.profile_dir(),
        };
        panic::panic_any(started);
    }));
    let payload = outcome.expect_err("the test body panics");
    let started = payload
        .downcast::<Started>()
        .unwrap_or_else(|_| panic!("the browser failed before the planned panic"));
    let dir = started
        .profile
        .parent()
        .expect("the profile lives in the private directory")
        .to_owned();
    let needle = dir.as_os_str().as_encoded_bytes().to_owned();
    driver::wait_until(
        Duration::from_secs(10),
        "no process of the browser is left",
        || {
            let alive = live_processes(started.group, &needle);
            if alive.is_empty() {
                Ok(())
            } else {
                Err(alive)
            }
        },
        String::new,
    );
    assert!(
        !dir.exists(),
        "the private directory {} outlived the browser",
        dir.display()
    );
}

/// Live (not zombie) processes in process group `group` or whose command line names `needle`.
fn live_processes(group: u32, needle: &[u8]) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut alive = Vec::new();
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the ')'.
        let Some((comm, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields.first().copied(), fields.get(2).copied());
        if state == Some("Z") {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let in_group = pgrp == Some(group.to_string().as_str());
        let names_dir = cmdline.windows(needle.len()).any(|w| w == needle);
        if in_group || names_dir {
            alive.push(format!("{pid} {comm})"));
        }
    }
    alive
}
