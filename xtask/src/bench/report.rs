//! The machine description, the terminal table and BENCHMARKS.md.

use std::{fmt::Write as _, fs, process::Command, thread, time::Duration};

use super::harness::{FigureId, Outcome};

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
    pub date: String,
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
         3), `--only P1,P7` measures a subset (it replaces only those figures in the file). The command \
         first runs `cargo xtask install --bench` (nginx and wrk from Debian when missing) \
         and `cargo xtask build-client`, builds origin in release, and keeps comparator \
         configurations under target/bench/."
    );
    md
}

/// `existing` BENCHMARKS.md with the figures `ids` taken from `fresh` (a report of only those):
/// their rows of the results table and their method sections are replaced, or added in
/// figure order, and `note` goes under the first paragraph. Everything else is kept.
pub fn merge(existing: &str, fresh: &str, ids: &[FigureId], note: &str) -> String {
    let row_id = |line: &str| {
        FigureId::ALL
            .into_iter()
            .find(|id| line.starts_with(&format!("| {id} |")))
    };
    let section_id = |line: &str| {
        FigureId::ALL
            .into_iter()
            .find(|id| line.starts_with(&format!("### {id}: ")))
    };
    // The fresh rows and sections, by figure.
    let fresh_row = |id: FigureId| fresh.lines().find(|l| row_id(l) == Some(id));
    let fresh_section = |id: FigureId| {
        let mut lines = fresh.lines().skip_while(|l| section_id(l) != Some(id));
        let first = lines.next()?;
        let rest: Vec<&str> = lines
            .take_while(|l| !l.starts_with("### ") && !l.starts_with("## "))
            .collect();
        let text = std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .join("\n");
        Some(text.trim_end().to_owned())
    };
    let mut out: Vec<String> = Vec::new();
    let mut lines = existing.lines().peekable();
    let mut noted = false;
    let mut pending: Vec<FigureId> = ids.to_vec();
    while let Some(line) = lines.next() {
        if superseded_note(line, ids) {
            // An earlier subset's note whose figures this run measured again.
            if lines.peek().is_some_and(|next| next.is_empty()) {
                lines.next();
            }
            continue;
        }
        if !noted && line.starts_with("Written by ") {
            out.push(line.to_owned());
            out.push(String::new());
            out.push(note.to_owned());
            if lines.peek().is_some_and(|next| !next.is_empty()) {
                out.push(String::new());
            }
            noted = true;
            continue;
        }
        if let Some(id) = row_id(line) {
            // Rows of new figures go before the first later one.
            for new in pending
                .iter()
                .filter(|n| **n < id && !existing_has_row(existing, **n))
            {
                out.extend(fresh_row(*new).map(str::to_owned));
            }
            match fresh_row(id).filter(|_| ids.contains(&id)) {
                Some(row) => out.push(row.to_owned()),
                None => out.push(line.to_owned()),
            }
            if lines.peek().is_some_and(|next| !next.starts_with("| P")) {
                for new in pending
                    .iter()
                    .filter(|n| **n > id && !existing_has_row(existing, **n))
                {
                    out.extend(fresh_row(*new).map(str::to_owned));
                }
            }
            continue;
        }
        let section = section_id(line);
        let reproduce = line.starts_with("## Reproduce");
        if section.is_some() || reproduce {
            let here = section.unwrap_or(FigureId::P12);
            // Sections of new figures go before the first later one (or before Reproduce).
            let (due, later): (Vec<FigureId>, Vec<FigureId>) = pending
                .iter()
                .partition(|n| (reproduce || **n < here) && !existing_has_section(existing, **n));
            for new in due {
                out.extend(fresh_section(new));
                out.push(String::new());
            }
            pending = later;
            if let Some(id) = section.filter(|id| ids.contains(id)) {
                if let Some(text) = fresh_section(id) {
                    out.push(text);
                    out.push(String::new());
                    // Skip the old section.
                    while lines
                        .peek()
                        .is_some_and(|l| !l.starts_with("### ") && !l.starts_with("## "))
                    {
                        lines.next();
                    }
                    continue;
                }
            }
        }
        out.push(line.to_owned());
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// `P3, P7: written by ...` where every figure named is among `ids`.
fn superseded_note(line: &str, ids: &[FigureId]) -> bool {
    let Some((named, _)) = line.split_once(": written by `") else {
        return false;
    };
    named.split(", ").all(|name| {
        FigureId::ALL
            .into_iter()
            .any(|id| id.to_string() == name && ids.contains(&id))
    })
}

fn existing_has_row(existing: &str, id: FigureId) -> bool {
    existing
        .lines()
        .any(|l| l.starts_with(&format!("| {id} |")))
}

fn existing_has_section(existing: &str, id: FigureId) -> bool {
    existing
        .lines()
        .any(|l| l.starts_with(&format!("### {id}: ")))
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    const OLD: &str = "# Benchmarks\n\nWritten by `x` on d0.\n\nP3: written by `z` on d.\n\nP1, P3: written by `w` on d.\n\n## Results\n\n| | figure |\n|---|---|\n| P1 | one old |\n| P3 | three old |\n\n## Method and findings\n\n### P1: one\n\nold one\n\n### P3: three\n\nold three\n\n## Reproduce\n\nend\n";
    const NEW: &str = "# Benchmarks\n\nWritten by `y` on d1.\n\n## Results\n\n| | figure |\n|---|---|\n| P3 | three new |\n| P12 | twelve new |\n\n## Method and findings\n\n### P3: three\n\nnew three\n\n### P12: twelve\n\nnew twelve\n\n## Reproduce\n\nend\n";

    #[test]
    fn a_subset_replaces_its_figures_and_keeps_the_rest() {
        let merged = merge(OLD, NEW, &[FigureId::P3, FigureId::P12], "P3, P12: by y.");
        let expected = "# Benchmarks\n\nWritten by `x` on d0.\n\nP3, P12: by y.\n\nP1, P3: written by `w` on d.\n\n## Results\n\n| | figure |\n|---|---|\n| P1 | one old |\n| P3 | three new |\n| P12 | twelve new |\n\n## Method and findings\n\n### P1: one\n\nold one\n\n### P3: three\n\nnew three\n\n### P12: twelve\n\nnew twelve\n\n## Reproduce\n\nend\n";
        assert_eq!(merged, expected);
    }
}
