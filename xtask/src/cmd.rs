//! Running other programs: show the command, stream its output, turn failures into sentences.

use std::{
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{Command, ExitStatus, Output, Stdio},
};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

/// The command line as a person would type it.
pub fn display(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with this process's stdout and stderr; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let line = display(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{line}`: is it installed and on PATH?"))?;
    if !status.success() {
        bail!("`{line}` failed ({})", describe(status));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its trimmed stdout, or `None` if it cannot start or fails.
/// For questions such as "which version is installed?".
pub fn probe(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A finished command's stdout followed by its stderr, as text: what an error shows.
pub fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// How a process ended, in words: "exit code 1", "signal 9 (SIGKILL)".
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit code {code}");
    }
    match status.signal() {
        Some(number) => match Signal::try_from(number) {
            Ok(signal) => format!("signal {number}, {signal}"),
            Err(_) => format!("signal {number}"),
        },
        None => "unknown status".to_owned(),
    }
}

/// The release build of the origin servers, which `up` and the benchmarks run: built first
/// (`cargo build --release -p origin`) when `build`, else only looked for.
pub fn release_origin(build: bool) -> Result<PathBuf> {
    if build {
        let mut cargo = Command::new("cargo");
        cargo.args([
            "build",
            "--release",
            "--package",
            "origin",
            "--bin",
            "origin",
        ]);
        println!("xtask: {}", display(&cargo));
        run(&mut cargo)
            .context("the origin servers do not build; cargo's output above says why")?;
    }
    let binary = driver::target_dir().join("release/origin");
    if !binary.is_file() {
        bail!(
            "{} is missing: run `cargo build --release -p origin` (or leave out --no-build); \
             if it was built, CARGO_TARGET_DIR or build.target-dir points elsewhere",
            binary.display()
        );
    }
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_exit_codes_and_signals() {
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exit code 1");
        assert_eq!(describe(ExitStatus::from_raw(9)), "signal 9, SIGKILL");
    }

    #[test]
    fn displays_a_command_line() {
        let mut cmd = Command::new("cargo");
        cmd.args(["build", "-p", "origin"]);
        assert_eq!(display(&cmd), "cargo build -p origin");
    }
}
