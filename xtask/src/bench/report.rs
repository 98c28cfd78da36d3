//! The machine description, the terminal table and BENCHMARKS.md.

use std::{fmt::Write as _, fs, process::Command, thread, time::Duration};

use super::{FigureId, Outcome};

/// What the figures were measured on.
pub struct Machine {
    cpu: String,
    cores: String,
    memory: String,
    os: String,
    kernel: String,
    haproxy: String,
    nginx: String,
    wrk: String,
    chromium: String,
    rustc: String,
    date: String,
}

impl Machine {
    /// Reads /proc and asks each tool for its version; anything unreadable says so.
    pub fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let logical = cpuinfo
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count();
        let usable = thread::available_parallelism().map_or(0, usize::from);
        let cores = format!("{usable} usable ({logical} listed in /proc/cpuinfo)");
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let kb: f64 = info
                    .lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kb / 1024.0 / 1024.0))
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let os = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|release| {
                release
                    .lines()
                    .find_map(|line| line.strip_prefix("PRETTY_NAME="))
                    .map(|name| name.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| format!("Linux {}", release.trim()))
            .unwrap_or_else(|_| "unknown".to_owned());
        Machine {
            cpu,
            cores,
            memory,
            os,
            kernel,
            haproxy: version(Command::new("haproxy").arg("-v")),
            nginx: version(Command::new("nginx").arg("-v")),
            wrk: version(Command::new("wrk").arg("-v")),
            chromium: version(Command::new("chromium").arg("--version")),
            rustc: version(Command::new("rustc").arg("--version")),
            date: version(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
        }
    }

    /// CPU, cores, RAM, kernel and HAProxy on one line.
    pub fn one_line(&self) -> String {
        format!(
            "{}, {} cores, {} RAM, {}, {}",
            self.cpu, self.cores, self.memory, self.kernel, self.haproxy
        )
    }
}

/// The first non-empty line a tool prints about itself, on stdout or stderr, whatever its
/// exit status (`nginx -v` writes to stderr, `wrk -v` exits 1).
fn version(command: &mut Command) -> String {
    command
        .output()
        .ok()
        .and_then(|output| {
            let text = [output.stdout, output.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "not installed".to_owned())
}

/// `(ours, comparator, goal, verdict)` cells of one outcome.
fn cells(outcome: &Outcome) -> [String; 4] {
    match outcome {
        Outcome::Measured(figure) => [
            format!("{}: {}", figure.ours.label, figure.ours.cell()),
            format!("{}: {}", figure.comparator.label, figure.comparator.cell()),
            figure.goal.text.clone(),
            if figure.goal.met { "met" } else { "not met" }.to_owned(),
        ],
        Outcome::Failed(_, why) => [
            format!("could not measure: {why}"),
            String::new(),
            String::new(),
            "could not measure".to_owned(),
        ],
    }
}

fn id_of(outcome: &Outcome) -> FigureId {
    match outcome {
        Outcome::Measured(figure) => figure.id,
        Outcome::Failed(id, _) => *id,
    }
}

/// The table for the terminal: one block per figure, so long cells stay readable.
pub fn terminal_table(outcomes: &[Outcome]) -> String {
    let mut text = String::new();
    for outcome in outcomes {
        let id = id_of(outcome);
        let [ours, comparator, goal, verdict] = cells(outcome);
        let _ = writeln!(text, "{id}  {}", id.title());
        let _ = writeln!(text, "    ours        {ours}");
        if !comparator.is_empty() {
            let _ = writeln!(text, "    comparator  {comparator}");
        }
        if goal.is_empty() {
            let _ = writeln!(text, "    goal        {verdict}");
        } else {
            let _ = writeln!(text, "    goal        {goal}: {verdict}");
        }
    }
    text
}

fn escape(cell: &str) -> String {
    cell.replace('|', "\\|")
}

/// BENCHMARKS.md: machine, date, the table, goals, method notes and findings per figure, and
/// the command.
pub fn markdown(
    machine: &Machine,
    outcomes: &[Outcome],
    command: &str,
    runs: usize,
    elapsed: Duration,
) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `{command}` on {}; the whole run (install check, client and release \
         builds included) took {:.1} min. Each cell is the median over {runs} run(s) with \
         [min–max]. Benchmarks report: a goal not met is a finding, not a failure. Figures \
         measured on a small shared machine are rough: compare within one table, not across \
         machines.\n",
        machine.date,
        elapsed.as_secs_f64() / 60.0
    );
    let _ = writeln!(md, "## Machine\n");
    let _ = writeln!(md, "| | |\n|---|---|");
    for (what, value) in [
        ("CPU", &machine.cpu),
        ("cores", &machine.cores),
        ("RAM", &machine.memory),
        ("OS", &machine.os),
        ("kernel", &machine.kernel),
        ("HAProxy", &machine.haproxy),
        ("nginx", &machine.nginx),
        ("wrk", &machine.wrk),
        ("Chromium", &machine.chromium),
        ("Rust", &machine.rustc),
    ] {
        let _ = writeln!(md, "| {what} | {} |", escape(value));
    }
    let _ = writeln!(md, "\n## Results\n");
    let _ = writeln!(
        md,
        "| | figure | ours | comparator | goal | |\n|---|---|---|---|---|---|"
    );
    for outcome in outcomes {
        let id = id_of(outcome);
        let [ours, comparator, goal, verdict] = cells(outcome);
        let verdict = match outcome {
            Outcome::Measured(figure) if figure.goal.met => "**met**".to_owned(),
            Outcome::Measured(_) => "**not met**".to_owned(),
            _ => verdict,
        };
        let _ = writeln!(
            md,
            "| {id} | {} | {} | {} | {} | {verdict} |",
            escape(id.title()),
            escape(&ours),
            escape(&comparator),
            escape(&goal)
        );
    }
    let _ = writeln!(md, "\n## Method and findings\n");
    for outcome in outcomes {
        let id = id_of(outcome);
        let _ = writeln!(md, "### {id}: {}\n", id.title());
        match outcome {
            Outcome::Measured(figure) => {
                let _ = writeln!(md, "{}\n", figure.method.trim());
                if !figure.findings.is_empty() {
                    let _ = writeln!(md, "Seen in this run:\n");
                    for finding in &figure.findings {
                        if finding.starts_with('|') || finding.is_empty() {
                            let _ = writeln!(md, "{finding}");
                        } else {
                            let _ = writeln!(md, "- {finding}");
                        }
                    }
                    let _ = writeln!(md);
                }
            }
            Outcome::Failed(_, why) => {
                let _ = writeln!(
                    md,
                    "Could not measure: {why}. The terminal output of the run has the \
                     details.\n"
                );
            }
        }
    }
    let _ = writeln!(md, "## Reproduce\n");
    let _ = writeln!(
        md,
        "```sh\n{command}\n```\n\n`--runs N` sets the runs per figure and variant (default \
         3), `--only P1,P7` measures a subset (the file then lists only those). The command \
         first runs `cargo xtask install --bench` (nginx and wrk from Debian when missing) \
         and `cargo xtask build-client`, builds origin in release, and keeps comparator \
         configurations under target/bench/."
    );
    md
}
