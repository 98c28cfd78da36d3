//! Build, run and check automation for the stack, behind `cargo xtask <verb>`.
//!
//! `up` starts HAProxy and the four origin servers on localhost and supervises them in the
//! foreground; `test` runs every check CI runs. Both first install whatever this machine is
//! missing (see `install`), so a fresh Debian 12 machine needs nothing but Rust.

mod bench;
mod check;
mod client;
mod cmd;
mod control;
mod files;
mod install;
mod loadgen;
mod up;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use driver::{Server, Tier};

/// Build, run and check automation for the monitoring-dashboard stack.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version)]
struct Cli {
    /// Where the stack keeps its pid, address and log files and its control socket (default
    /// target/stack): a second stack, such as a test's, runs next to yours with its own.
    #[arg(long, global = true, value_name = "DIR")]
    stack_dir: Option<PathBuf>,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Install what building and testing need, skipping whatever is already present:
    /// the wasm32 target, haproxy, chromium and chromedriver (apt), wasm-pack and
    /// wasm-bindgen-cli (crates.io), wasm-opt (npm, into target/tools).
    Install {
        /// Also install what benchmarks need (nginx, wrk).
        #[arg(long)]
        bench: bool,
    },
    /// Build the Wasm client into www/pkg, gzip it, print sizes and check the size limits.
    BuildClient,
    /// Build everything and run the whole stack on localhost in the foreground.
    Up(up::UpArgs),
    /// Ask the running `cargo xtask up` to restart one server (haproxy: reload). An origin's
    /// new process takes over the listening socket `up` holds, so no connection is refused.
    Restart {
        /// Which server: haproxy, static-main, static-fallback, api-main, api-fallback.
        name: Server,
        /// Close the origin's socket too: stop the old process, then start the new one on a
        /// fresh socket at the same address, as a service without socket activation restarts
        /// (the benchmark's comparator; it refuses connections meanwhile).
        #[arg(long)]
        cold: bool,
    },
    /// Ask the running `cargo xtask up` to replace a tier's main server without failing a
    /// request: a new process next to the old one, HAProxy switched to it, the old one drained.
    Redeploy {
        /// Which tier: static or api.
        tier: Tier,
        /// The new server's build id (default: the old id's base with the current unix time).
        #[arg(long)]
        build_id: Option<String>,
    },
    /// Send fixed-rate HTTP load to the running stack and report every failed request.
    Load(loadgen::LoadArgs),
    /// Show each server of the stack and whether its process is alive.
    Status,
    /// Ask the running `cargo xtask up` to stop the stack, and wait until it has.
    Stop,
    /// Run every check CI runs: install, build-client, fmt, clippy, native and browser tests.
    Test,
    /// Measure the stack against its goals and comparators; print a table and write
    /// BENCHMARKS.md (installs nginx and wrk, builds the client and origin in release first).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    match try_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  because: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn try_main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(dir) = &cli.stack_dir {
        // Relative to where the command was typed, before moving to the workspace root.
        files::set_stack_dir(std::path::absolute(dir).context("--stack-dir is unusable")?);
    }
    let root = workspace_root();
    env::set_current_dir(&root)
        .with_context(|| format!("could not enter the workspace at {}", root.display()))?;
    put_tools_on_path(&root)?;
    match cli.verb {
        Verb::Install { bench } => install::everything(bench),
        Verb::BuildClient => client::build(),
        Verb::Up(args) => up::up(&args),
        Verb::Restart { name, cold } => control::restart(name, cold),
        Verb::Redeploy { tier, build_id } => control::redeploy(tier, build_id.as_deref()),
        Verb::Load(args) => loadgen::load(&args),
        Verb::Status => control::status(),
        Verb::Stop => control::stop(),
        Verb::Test => check::test(),
        Verb::Bench(args) => bench::run(&args),
    }
}

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR at run time too, which survives moving the checkout.
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or(manifest_dir)
}

/// Puts the tools `install` provides first on PATH, for this process and every command it
/// runs: wasm-pack only finds wasm-opt and wasm-bindgen through PATH. Debian installs
/// haproxy in /usr/sbin, which is not on a normal user's PATH, so that comes last.
fn put_tools_on_path(root: &Path) -> Result<()> {
    let mut dirs = vec![install::binaryen_bin(root)];
    if let Some(cargo_bin) = install::cargo_bin_dir() {
        dirs.push(cargo_bin);
    }
    let current = env::var_os("PATH").unwrap_or_default();
    for dir in env::split_paths(&current).chain([PathBuf::from("/usr/sbin")]) {
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let joined: OsString = env::join_paths(dirs).context("a PATH entry contains ':'")?;
    // Safe to change here: the process has a single thread until a verb starts.
    env::set_var("PATH", joined);
    Ok(())
}
