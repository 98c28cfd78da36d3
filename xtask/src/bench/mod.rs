//! `cargo xtask bench`: the figures behind the stack's design choices, each measured against
//! a comparator, printed as a table and written to BENCHMARKS.md.
//!
//! | figure | module | measures |
//! |---|---|---|
//! | P1, P2 | [`detection`] | api-main crashes or hangs until `/` answers maintenance |
//! | P3 | [`tabs`] | open maintenance tabs in headless Chromium until back on the dashboard |
//! | P4 | [`redeploy`] | failed requests over ten redeploys under fixed-rate load |
//! | P5 | [`throughput`] | static tier through HAProxy with wrk, against nginx |
//! | P6 | [`assets`] | maintenance assets as HAProxy sends them, against its buffer |
//! | P7 | [`herd`] | 10,000 simulated tabs of the client's own state machine |
//! | P11 | [`redeploy`] | maintenance answers over ten restarts, socket held by `up` vs closed |
//! | P12 | [`buffers`] | HAProxy's memory with 32 KB buffers against 16 KB, 1,000 and 5,000 connections |
//! | P10 | [`worker_cost`] | what the last-resort service worker adds to a navigation |
//! | P8, P9 | [`overload`] | a crowd up to 16× api-main's best: maintenance answers, servers down, queue; a crash in it |
//! | P13 | [`failover`] | across hosts: the VIP holder's HAProxy killed or its host cut off under fixed-rate load |
//! | P14 | [`redeploy`] | across hosts: failed requests over ten redeploys through the VIP, `up --hosts` |
//!
//! [`harness`] is what every figure shares (it imports none of them); [`report`] describes
//! the machine and writes the table. Benchmarks report: a slow result is
//! "goal not met", never an error. A figure fails only when it cannot measure (a process
//! does not start, a wait runs past its deadline); the others are still reported. Every
//! process a figure starts is owned by a guard that kills and reaps it, also when the
//! figure panics (the harness panics on timeouts), and Ctrl-C stops at the next poll.

mod assets;
mod buffers;
mod detection;
mod failover;
mod harness;
mod herd;
mod overload;
mod redeploy;
mod report;
mod tabs;
mod throughput;
mod worker_cost;

use std::{
    env, fs,
    panic::{self, AssertUnwindSafe},
    path::PathBuf,
    sync::{atomic::AtomicBool, Arc},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{client, cmd, install};
use harness::{Bench, FigureId, Outcome};

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Runs per figure and variant; each figure reports the median with min and max.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,
    /// Measure only these figures, comma-separated, e.g. `--only P1,P7`.
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true)]
    pub only: Vec<FigureId>,
}

/// `cargo xtask bench`.
pub fn run(args: &BenchArgs) -> Result<()> {
    let started = Instant::now();
    let selected: Vec<FigureId> = FigureId::MEASURE_ORDER
        .into_iter()
        .filter(|id| args.only.is_empty() || args.only.contains(id))
        .collect();

    install::everything(true)?;
    client::build()?;
    let origin = cmd::release_origin(true)?;
    // Every Stack the harness starts runs this build (see driver::ORIGIN_BIN_ENV). Set while
    // this process has a single thread: nothing has been spawned yet.
    env::set_var(driver::ORIGIN_BIN_ENV, &origin);

    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&interrupted))
            .context("could not install the Ctrl-C handler")?;
    }
    let dir = PathBuf::from("target/bench");
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    // /proc/self/exe reads this process's binary even after cargo has replaced the file.
    let xtask = env::current_dir()?.join(&dir).join("xtask");
    fs::copy("/proc/self/exe", &xtask)
        .with_context(|| format!("could not copy the xtask binary to {}", xtask.display()))?;
    let bench = Bench {
        runs: usize::try_from(args.runs).unwrap_or(3),
        dir,
        xtask,
        interrupted,
    };
    if bench.runs < 3 {
        println!(
            "bench: {} run(s) per figure; the report asks for at least 3 for a meaningful \
             median with min and max",
            bench.runs
        );
    }
    let machine = report::Machine::describe();
    println!("bench: {}", machine.one_line());

    let mut outcomes = Vec::new();
    for id in selected {
        bench.check_interrupt()?;
        println!("\n== {id}: {}", id.title());
        let outcome = measure(&bench, id);
        bench.check_interrupt()?;
        match &outcome {
            Outcome::Measured(_) => {}
            Outcome::Failed(_, why) => println!("{id}: could not measure: {why}"),
        }
        outcomes.push(outcome);
    }
    outcomes.sort_by_key(Outcome::id);

    let command = command_line(args);
    let elapsed = started.elapsed();
    println!();
    print!("{}", report::terminal_table(&outcomes));
    let path = PathBuf::from("BENCHMARKS.md");
    let mut markdown = report::markdown(&machine, &outcomes, &command, bench.runs, elapsed);
    if !args.only.is_empty() {
        // A subset replaces only its own figures in the existing report.
        if let Ok(existing) = fs::read_to_string(&path) {
            let ids: Vec<FigureId> = outcomes.iter().map(Outcome::id).collect();
            let note = format!(
                "{}: written by `{command}` on {}.",
                ids.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                machine.date
            );
            markdown = report::merge(&existing, &markdown, &ids, &note);
        }
    }
    fs::write(&path, markdown).with_context(|| format!("could not write {}", path.display()))?;
    println!(
        "\nbench: wrote {} in {:.1} min ({command})",
        path.display(),
        elapsed.as_secs_f64() / 60.0
    );
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Outcome::Failed(id, _) => Some(id.to_string()),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        bail!(
            "could not measure {}; the reasons are printed above and in BENCHMARKS.md",
            failed.join(", ")
        );
    }
    Ok(())
}

/// Measures one figure, turning a panic of the harness (e.g. a wait past its deadline) into
/// a failed outcome; the guards it owned have been dropped by then.
fn measure(bench: &Bench, id: FigureId) -> Outcome {
    let result = panic::catch_unwind(AssertUnwindSafe(|| match id {
        FigureId::P1 => detection::measure(bench, detection::Fault::Crash),
        FigureId::P2 => detection::measure(bench, detection::Fault::Hang),
        FigureId::P3 => tabs::measure(bench),
        FigureId::P4 => redeploy::measure(bench),
        FigureId::P11 => redeploy::measure_restarts(bench),
        FigureId::P5 => throughput::measure(bench),
        FigureId::P6 => assets::measure(bench),
        FigureId::P7 => herd::measure(bench),
        FigureId::P8 => overload::measure(bench),
        FigureId::P9 => overload::measure_crash(bench),
        FigureId::P10 => worker_cost::measure(bench),
        FigureId::P12 => buffers::measure(bench),
        FigureId::P13 => failover::measure(bench),
        FigureId::P14 => redeploy::measure_across_hosts(bench),
    }));
    match result {
        Ok(Ok(figure)) => Outcome::Measured(Box::new(figure)),
        Ok(Err(err)) => {
            eprintln!("{id}: error: {err:#}");
            Outcome::Failed(id, first_line(&format!("{err:#}")))
        }
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "the harness panicked".to_owned());
            Outcome::Failed(id, first_line(&message))
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// The command that reproduces this run.
fn command_line(args: &BenchArgs) -> String {
    let mut line = format!("cargo xtask bench --runs {}", args.runs);
    if !args.only.is_empty() {
        let ids: Vec<String> = FigureId::ALL
            .into_iter()
            .filter(|id| args.only.contains(id))
            .map(|id| id.to_string())
            .collect();
        line.push_str(" --only ");
        line.push_str(&ids.join(","));
    }
    line
}
