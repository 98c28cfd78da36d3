//! P1 and P2: how long after api-main crashes (SIGKILL) or hangs (SIGSTOP) `/` answers the
//! maintenance page, with our haproxy.cfg and with HAProxy's default check settings.

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use driver::{Role, Stack};

use super::harness::{Bench, Figure, FigureId, Goal, Rng, Series, Unit};

/// How often `/` is asked while waiting for maintenance.
const POLL: Duration = Duration::from_millis(10);
/// Each poll gives up after this long (HAProxy answers `/` from static-main, which is fine).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for maintenance: HAProxy's defaults take ~12 s for a hang.
const DEADLINE: Duration = Duration::from_secs(60);
/// Longest wait for api-main to be UP again between runs (rise 2 × inter 2 s by default).
const RECOVERY_DEADLINE: Duration = Duration::from_secs(60);

/// What happens to api-main.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL: the port refuses connections at once.
    Crash,
    /// SIGSTOP: the kernel still accepts, nothing answers.
    Hang,
}

/// Measures P1 (crash) or P2 (hang).
pub fn measure(bench: &Bench, fault: Fault) -> Result<Figure> {
    let id = match fault {
        Fault::Crash => FigureId::P1,
        Fault::Hang => FigureId::P2,
    };
    let source = fs::read_to_string("haproxy.cfg").context("could not read haproxy.cfg")?;
    let default_config = bench.dir.join("haproxy-default-checks.cfg");
    fs::write(&default_config, default_checks_config(&source)?)
        .with_context(|| format!("could not write {}", default_config.display()))?;
    let default_config = default_config
        .canonicalize()
        .context("could not resolve the comparator configuration's path")?;

    let variants = [
        ("haproxy.cfg", PathBuf::from("haproxy.cfg").canonicalize()?),
        ("HAProxy default checks", default_config),
    ];
    let mut series = Vec::new();
    for (label, config) in variants {
        // The same pre-fault delays for both variants, run by run.
        let mut rng = Rng::new(0xD0_u64 + id as u64);
        let mut stack = Stack::builder().build_id("bench").config(&config).start();
        let mut values = Vec::new();
        for run in 1..=bench.runs {
            bench.check_interrupt()?;
            // The fault lands somewhere in the check cycle (default inter is 2 s).
            bench.pause(Duration::from_millis(200 + (rng.unit() * 2000.0) as u64))?;
            let seconds = one_run(bench, &mut stack, fault)?;
            bench.progress(id, run, label, &Unit::Seconds.format(seconds));
            values.push(seconds);
        }
        super::harness::stop_stack(stack);
        series.push(Series::new(label, values, Unit::Seconds));
    }
    let comparator = series.pop().context("two variants were measured")?;
    let ours = series.pop().context("two variants were measured")?;
    let limit = match fault {
        Fault::Crash => 0.5,
        Fault::Hang => 2.5,
    };
    let met = ours.summary().is_some_and(|s| s.median <= limit);
    let action = match fault {
        Fault::Crash => "SIGKILL",
        Fault::Hang => "SIGSTOP",
    };
    Ok(Figure {
        id,
        goal: Goal {
            text: format!("median ≤ {limit} s"),
            met,
        },
        findings: vec![
            format!("ours per run: {}", per_run(&ours)),
            format!("HAProxy default checks per run: {}", per_run(&comparator)),
        ],
        method: format!(
            "A stack from the end-to-end harness (HAProxy 2.6 and the four release origin \
             servers on loopback) with all servers UP. After a pause of 0.2–2.2 s (seeded, the \
             same for both variants) so that the fault lands at a different point of the check \
             cycle each run, api-main gets {action}; from just before the signal, `GET /` is \
             sent through HAProxy every {poll} ms (one connection each) until the answer is the \
             maintenance page (503 and the bytes of www/maintenance.html); the time is taken \
             when that answer arrives. Then api-main is {restore} and the next run waits until \
             HAProxy reports it UP. Only `/` is requested, never the API, so `observe layer4` \
             (which reacts to failed real traffic) has nothing to see: the time is the health \
             checks' alone, the worst case for a site without API traffic.\n\n\
             Comparator: a copy of haproxy.cfg (target/bench/haproxy-default-checks.cfg) with \
             the `default-server inter/fastinter/downinter/fall/rise` line and \
             `timeout check` removed and `observe layer4 error-limit 1 on-error mark-down` \
             taken off both main servers, i.e. HAProxy's defaults: inter 2s, fall 3, rise 2, \
             no `timeout check` (the check's read timeout is then `inter`), no observe. \
             Everything else (maintenance rules, `on-marked-down shutdown-sessions`, \
             timeouts) is unchanged.",
            poll = POLL.as_millis(),
            restore = match fault {
                Fault::Crash => "restarted on the same port",
                Fault::Hang => "continued (SIGCONT)",
            },
        ),
        ours,
        comparator,
    })
}

fn per_run(series: &Series) -> String {
    let values: Vec<String> = series
        .values
        .iter()
        .map(|v| Unit::Seconds.format(*v))
        .collect();
    values.join(", ")
}

/// One fault: returns the seconds until `/` answered maintenance, and leaves api-main UP.
pub(super) fn one_run(bench: &Bench, stack: &mut Stack, fault: Fault) -> Result<f64> {
    let maintenance = stack.www_file("maintenance.html");
    let started = Instant::now();
    match fault {
        Fault::Crash => stack
            .server_mut(Role::ApiMain)
            .kill(driver::Signal::SIGKILL),
        Fault::Hang => stack.server_mut(Role::ApiMain).stop(),
    }
    let detected = loop {
        bench.check_interrupt()?;
        let poll_started = Instant::now();
        let last_seen = match stack.request("/").timeout(REQUEST_TIMEOUT).send() {
            Ok(answer) if answer.status == 503 && answer.body == maintenance => {
                break started.elapsed();
            }
            Ok(answer) => answer.summary(),
            Err(error) => error.to_string(),
        };
        if started.elapsed() > DEADLINE {
            bail!(
                "`/` did not answer maintenance within {DEADLINE:?} after api-main got \
                 {fault:?}; last seen: {last_seen}\n{}",
                stack.logs(20)
            );
        }
        bench.pause(POLL.saturating_sub(poll_started.elapsed()))?;
    };
    match fault {
        Fault::Crash => stack.server_mut(Role::ApiMain).restart(),
        Fault::Hang => stack.server_mut(Role::ApiMain).cont(),
    }
    stack.wait_server_status(Role::ApiMain, "UP", RECOVERY_DEADLINE);
    Ok(detected.as_secs_f64())
}

/// haproxy.cfg with HAProxy's default check settings: no `default-server` check timings, no
/// `timeout check`, no `observe` on the servers. Fails when the file no longer has what is
/// removed, so the comparison never silently runs the same configuration twice.
pub fn default_checks_config(source: &str) -> Result<String> {
    let mut out = String::new();
    let (mut default_server, mut timeout_check, mut observed) = (false, false, 0);
    for line in source.lines() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if trimmed.starts_with("default-server ") {
            default_server = true;
            out.push_str(indent);
            out.push_str("# bench: `default-server` check timings removed (HAProxy defaults)\n");
            continue;
        }
        if trimmed.starts_with("timeout check ") {
            timeout_check = true;
            out.push_str(indent);
            out.push_str("# bench: `timeout check` removed (HAProxy default: none)\n");
            continue;
        }
        if trimmed.starts_with("server ") && trimmed.split_whitespace().any(|w| w == "observe") {
            observed += 1;
            let mut words = trimmed.split_whitespace();
            let mut kept = Vec::new();
            while let Some(word) = words.next() {
                if matches!(word, "observe" | "error-limit" | "on-error") {
                    words.next();
                } else {
                    kept.push(word);
                }
            }
            out.push_str(indent);
            out.push_str(&kept.join(" "));
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    let mut missing = Vec::new();
    if !default_server {
        missing.push("a `default-server` line");
    }
    if !timeout_check {
        missing.push("`timeout check`");
    }
    if observed == 0 {
        missing.push("`observe` on a server");
    }
    if !missing.is_empty() {
        bail!(
            "haproxy.cfg has no {}, so the default-checks comparator would equal it; update \
             xtask/src/bench/detection.rs to match haproxy.cfg",
            missing.join(", no ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn strips_check_settings_from_the_real_config() {
        let source = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../haproxy.cfg"))
            .expect("haproxy.cfg is at the workspace root");
        let rewritten = default_checks_config(&source).unwrap();
        let active: Vec<&str> = rewritten
            .lines()
            .map(str::trim)
            .filter(|line| !line.starts_with('#'))
            .collect();
        assert!(!active.iter().any(|l| l.starts_with("default-server")));
        assert!(!active.iter().any(|l| l.starts_with("timeout check")));
        assert!(!active.iter().any(|l| l.contains("observe")));
        // The main servers keep their checks (now at HAProxy's default timings); the other
        // checked servers are the fallbacks' liveness checks (backend `fallbacks`).
        let mains: Vec<&&str> = active
            .iter()
            .filter(|l| l.contains(" check"))
            .filter(|l| {
                Role::ALL
                    .into_iter()
                    .filter(|role| role.is_main())
                    .any(|role| l.starts_with(&format!("server {role} ")))
            })
            .collect();
        assert_eq!(mains.len(), 2, "{rewritten}");
        assert!(mains.iter().all(|l| l.contains("shutdown-sessions")));
    }

    #[test]
    fn refuses_a_config_without_check_settings() {
        assert!(default_checks_config("defaults\n    mode http\n").is_err());
    }
}
