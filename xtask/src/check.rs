//! `cargo xtask test`: every check, in the order CI runs them, with one summary at the end.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{client, cmd, install};

/// One step of `cargo xtask test`.
struct Phase {
    name: &'static str,
    what: &'static str,
    run: fn() -> Result<()>,
    /// Whether the phases after it cannot run without it.
    required: bool,
}

const PHASES: &[Phase] = &[
    Phase {
        name: "install",
        what: "tools and packages (skips what is present)",
        run: || install::everything(false),
        required: true,
    },
    Phase {
        name: "build-client",
        what: "the Wasm client into www/pkg, with size checks",
        run: client::build,
        // The later phases still say something useful (and the end-to-end tests say
        // what a missing or oversized asset breaks).
        required: false,
    },
    Phase {
        name: "fmt",
        what: "cargo fmt --all --check",
        run: || cargo(&["fmt", "--all", "--check"]),
        required: false,
    },
    Phase {
        name: "clippy",
        what: "cargo clippy --workspace --all-targets -- -D warnings",
        run: || {
            cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        },
        required: false,
    },
    Phase {
        name: "clippy-wasm",
        what: "the client's browser-only code, linted for wasm32",
        run: || {
            cargo(&[
                "clippy",
                "-p",
                "client",
                "--target",
                "wasm32-unknown-unknown",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        },
        required: false,
    },
    Phase {
        name: "cargo-test",
        what: "cargo test --workspace: unit, route and end-to-end tests",
        run: || cargo(&["test", "--workspace", "--no-fail-fast"]),
        required: false,
    },
    Phase {
        name: "browser-test",
        what: "the client's wasm-bindgen tests in headless Chromium",
        run: || {
            cmd::run(Command::new("wasm-pack").args([
                "test",
                "--headless",
                "--chrome",
                "--chromedriver",
                "/usr/bin/chromedriver",
                "--mode",
                "no-install",
                "client",
            ]))
        },
        required: false,
    },
    Phase {
        name: "browser-test-firefox",
        what: "the client's wasm-bindgen tests in headless Firefox",
        run: || {
            let geckodriver = install::geckodriver_path().ok_or_else(|| {
                anyhow::anyhow!(
                    "geckodriver is not installed; run `cargo xtask install`, which installs it \
                     from crates.io"
                )
            })?;
            cmd::run(
                Command::new("wasm-pack")
                    .args(["test", "--headless", "--firefox", "--geckodriver"])
                    .arg(geckodriver)
                    .args(["--mode", "no-install", "client"]),
            )
        },
        required: false,
    },
];

/// `cargo xtask test`.
pub fn test() -> Result<()> {
    let started = Instant::now();
    let mut results: Vec<(&Phase, Duration, Result<()>)> = Vec::new();
    for (number, phase) in PHASES.iter().enumerate() {
        println!(
            "\n==> [{}/{}] {}: {} ({} elapsed)",
            number + 1,
            PHASES.len(),
            phase.name,
            phase.what,
            clock(started.elapsed())
        );
        let phase_started = Instant::now();
        let outcome = (phase.run)();
        let took = phase_started.elapsed();
        match &outcome {
            Ok(()) => println!("<== {} passed in {}", phase.name, clock(took)),
            Err(err) => println!("<== {} FAILED in {}: {err:#}", phase.name, clock(took)),
        }
        let stop = outcome.is_err() && phase.required;
        results.push((phase, took, outcome));
        if stop {
            println!(
                "{} is needed by every later phase; stopping here",
                phase.name
            );
            break;
        }
    }

    println!("\nsummary ({} in all):", clock(started.elapsed()));
    for (phase, took, outcome) in &results {
        let verdict = if outcome.is_ok() { "ok" } else { "FAILED" };
        println!("  {verdict:<7} {:<20} {:>8}", phase.name, clock(*took));
    }
    for phase in &PHASES[results.len()..] {
        println!("  skipped {}", phase.name);
    }
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, _, outcome)| outcome.is_err())
        .map(|(phase, _, _)| phase.name)
        .collect();
    if !failed.is_empty() {
        bail!(
            "{} of {} phases failed: {}; scroll up to the `==>` line of each for its output",
            failed.len(),
            PHASES.len(),
            failed.join(", ")
        );
    }
    println!("every check passed");
    Ok(())
}

fn cargo(args: &[&str]) -> Result<()> {
    cmd::run(Command::new("cargo").args(args))
}

/// "4.2s", "3m07s".
fn clock(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = duration.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reads_naturally() {
        assert_eq!(clock(Duration::from_millis(4_200)), "4.2s");
        assert_eq!(clock(Duration::from_secs(187)), "3m07s");
    }
}
