//! The command line: one subcommand per role, every flag with an environment fallback.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use crate::haproxy_stats::{Peer, StatsSocket, DEFAULT_STATS_TIMEOUT};

/// Build id used when neither `--build-id` nor `ORIGIN_BUILD_ID` is given.
pub const DEFAULT_BUILD_ID: &str = concat!(env!("CARGO_PKG_VERSION"), "-dev");

/// The origin servers behind HAProxy: static tier, main API and their fallbacks.
///
/// Prints the bound address as the first line of standard output; logs go to standard error
/// (filter with RUST_LOG, default `info`). With systemd-style socket activation (`LISTEN_FDS`)
/// it serves on the inherited listening socket instead of binding `--listen`.
#[derive(Debug, Parser)]
#[command(name = "origin", version)]
pub struct Cli {
    /// The role this process plays.
    #[command(subcommand)]
    pub role: Role,

    /// Worker threads serving requests [default: one per CPU but one, at least one].
    #[arg(long, global = true, env = "ORIGIN_WORKERS", value_name = "N")]
    pub workers: Option<std::num::NonZeroUsize>,
}

impl Cli {
    /// How many worker threads to start: `--workers`, else one per CPU but one.
    ///
    /// HAProxy runs on the same machine, in front of every origin, and relays every request:
    /// a CPU left to it saves switching between its threads and the workers, and one worker
    /// alone answers well over 100,000 requests a second. Measured with `cargo xtask bench
    /// --only P5` on two CPUs (HAProxy and wrk on the same two): one worker serves about 5 %
    /// more requests through HAProxy than two.
    pub fn workers(&self) -> usize {
        self.workers.map_or_else(
            || {
                std::thread::available_parallelism()
                    .map_or(1, |cpus| cpus.get().saturating_sub(1).max(1))
            },
            std::num::NonZeroUsize::get,
        )
    }
}

/// The four roles; HAProxy sends traffic to a fallback only while its main server is down.
#[derive(Clone, Debug, Subcommand)]
pub enum Role {
    /// Serve the dashboard and its assets from the www directory.
    StaticMain {
        /// Where and how to listen.
        #[command(flatten)]
        server: ServerArgs,
        /// What to serve.
        #[command(flatten)]
        site: StaticMain,
    },
    /// Answer every page with the maintenance page (503), serving only its own assets.
    StaticFallback {
        /// Where and how to listen.
        #[command(flatten)]
        server: ServerArgs,
        /// What to serve.
        #[command(flatten)]
        site: StaticFallback,
    },
    /// Serve `/api/healthz` and `/api/data` (host metrics and HAProxy's view of the servers).
    ApiMain {
        /// Where and how to listen.
        #[command(flatten)]
        server: ServerArgs,
        /// What to serve.
        #[command(flatten)]
        api: ApiMain,
    },
    /// Answer every API request with 503 `{"status":"maintenance"}`.
    ApiFallback {
        /// Where and how to listen.
        #[command(flatten)]
        server: ServerArgs,
        /// What to serve.
        #[command(flatten)]
        api: ApiFallback,
    },
}

impl Role {
    /// The role's name as written on the command line, used in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Role::StaticMain { .. } => "static-main",
            Role::StaticFallback { .. } => "static-fallback",
            Role::ApiMain { .. } => "api-main",
            Role::ApiFallback { .. } => "api-fallback",
        }
    }

    /// The listening and shutdown settings, shared by every role.
    pub fn server(&self) -> &ServerArgs {
        match self {
            Role::StaticMain { server, .. }
            | Role::StaticFallback { server, .. }
            | Role::ApiMain { server, .. }
            | Role::ApiFallback { server, .. } => server,
        }
    }

    /// The build id this process reports.
    pub fn build_id(&self) -> &str {
        match self {
            Role::StaticMain { site, .. } => &site.build_id,
            Role::StaticFallback { site, .. } => &site.build_id,
            Role::ApiMain { api, .. } => &api.build_id,
            Role::ApiFallback { api, .. } => &api.build_id,
        }
    }
}

/// Where to listen and how long to wait for in-flight requests at shutdown.
#[derive(Clone, Debug, Args)]
#[group(skip)]
pub struct ServerArgs {
    /// Address to listen on (host:port; port 0 picks a free port). Ignored when a listening
    /// socket is inherited through LISTEN_FDS.
    #[arg(
        long,
        env = "ORIGIN_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:0"
    )]
    pub listen: String,

    /// Seconds to let in-flight requests finish after SIGTERM before closing them.
    #[arg(
        long,
        env = "ORIGIN_SHUTDOWN_TIMEOUT",
        value_name = "SECS",
        default_value_t = 10
    )]
    pub shutdown_timeout: u64,
}

/// Settings of the `static-main` role.
#[derive(Clone, Debug, Args)]
#[group(skip)]
pub struct StaticMain {
    /// Directory to serve (index.html at `/`).
    #[arg(long, env = "ORIGIN_WWW", value_name = "DIR", default_value = "www")]
    pub www: PathBuf,

    /// Build id reported by `/healthz` and in logs and metrics.
    #[arg(long, env = "ORIGIN_BUILD_ID", value_name = "ID", default_value = DEFAULT_BUILD_ID)]
    pub build_id: String,
}

/// Settings of the `static-fallback` role.
#[derive(Clone, Debug, Args)]
#[group(skip)]
pub struct StaticFallback {
    /// Directory holding maintenance.html and pkg/.
    #[arg(long, env = "ORIGIN_WWW", value_name = "DIR", default_value = "www")]
    pub www: PathBuf,

    /// Build id reported by `/healthz` and in logs and metrics.
    #[arg(long, env = "ORIGIN_BUILD_ID", value_name = "ID", default_value = DEFAULT_BUILD_ID)]
    pub build_id: String,

    /// Value of the Retry-After header on 503 answers, in seconds.
    #[arg(
        long,
        env = "ORIGIN_RETRY_AFTER",
        value_name = "SECS",
        default_value_t = contract::RETRY_AFTER_S
    )]
    pub retry_after: u32,
}

/// Settings of the `api-main` role.
#[derive(Clone, Debug, Args)]
#[group(skip)]
pub struct ApiMain {
    /// HAProxy's stats socket or, across hosts, every load balancer's: read for `/api/data`.
    #[command(flatten)]
    pub stats: StatsSocket,

    /// Build id reported by `/api/healthz`, `/api/data` and in logs and metrics.
    #[arg(long, env = "ORIGIN_BUILD_ID", value_name = "ID", default_value = DEFAULT_BUILD_ID)]
    pub build_id: String,

    /// Fault injection for end-to-end tests: hold every `/api/healthz` answer this many
    /// milliseconds, so a test can make the API's health slower than HAProxy's check timeout
    /// while the process stays alive. Hidden from `--help`; 0 (the default) in production.
    #[arg(
        long,
        env = "ORIGIN_HEALTH_DELAY_MS",
        value_name = "MS",
        default_value_t = 0,
        hide = true
    )]
    pub health_delay_ms: u64,
}

/// Settings of the `api-fallback` role.
#[derive(Clone, Debug, Args)]
#[group(skip)]
pub struct ApiFallback {
    /// HAProxy's stats socket or, across hosts, every load balancer's: read while a recovery
    /// hint waits.
    #[command(flatten)]
    pub stats: StatsSocket,

    /// The recovery hint's shared state (one for all workers).
    #[arg(skip)]
    pub hint: crate::hint::Hint,

    /// Build id reported in logs and metrics.
    #[arg(long, env = "ORIGIN_BUILD_ID", value_name = "ID", default_value = DEFAULT_BUILD_ID)]
    pub build_id: String,

    /// Value of the Retry-After header on 503 answers, in seconds.
    #[arg(
        long,
        env = "ORIGIN_RETRY_AFTER",
        value_name = "SECS",
        default_value_t = contract::RETRY_AFTER_S
    )]
    pub retry_after: u32,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn peers_are_names_with_addresses() {
        // Both API roles read the load balancers across hosts, so both take the flag.
        for role in ["api-main", "api-fallback"] {
            let cli = Cli::try_parse_from([
                "origin",
                role,
                "--haproxy-peers",
                "lb-a=198.18.0.11:9100,lb-b=198.18.0.12:9100",
            ])
            .unwrap();
            let stats = match cli.role {
                Role::ApiMain { api, .. } => api.stats,
                Role::ApiFallback { api, .. } => api.stats,
                other => panic!("{role} parsed as {other:?}"),
            };
            assert_eq!(
                stats.peers,
                [
                    Peer {
                        name: "lb-a".to_owned(),
                        addr: "198.18.0.11:9100".parse().unwrap()
                    },
                    Peer {
                        name: "lb-b".to_owned(),
                        addr: "198.18.0.12:9100".parse().unwrap()
                    },
                ],
                "{role}"
            );
            for bad in ["198.18.0.11:9100", "=198.18.0.11:9100", "lb-a=nowhere"] {
                assert!(
                    Cli::try_parse_from(["origin", role, "--haproxy-peers", bad]).is_err(),
                    "{role} accepted {bad}"
                );
            }
        }
    }

    #[test]
    fn flags_reach_the_role() {
        let cli = Cli::try_parse_from([
            "origin",
            "api-main",
            "--listen",
            "127.0.0.1:9000",
            "--haproxy-socket",
            "/run/h.sock",
            "--build-id",
            "b1",
        ])
        .unwrap();
        assert_eq!(cli.role.name(), "api-main");
        assert_eq!(cli.role.server().listen, "127.0.0.1:9000");
        assert_eq!(cli.role.build_id(), "b1");
        let Role::ApiMain { api, .. } = cli.role else {
            panic!("parsed the wrong role");
        };
        assert_eq!(api.stats.path, PathBuf::from("/run/h.sock"));
        assert_eq!(api.stats.timeout, DEFAULT_STATS_TIMEOUT);
        assert_eq!(
            api.health_delay_ms, 0,
            "no fault injection unless asked for"
        );
    }
}
