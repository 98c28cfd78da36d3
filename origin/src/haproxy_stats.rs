//! HAProxy's view of the servers, read from its stats socket (runtime API, `show stat`): where
//! the socket is (`StatsSocket`, the API roles' shared flags; across hosts every load
//! balancer, `Peer`), how to read it, and the report `/api/data` shows.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use contract::stat::{Table, TableError};
use contract::Tier;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// How long `/api/data` waits for HAProxy's stats socket before reporting it unreachable.
pub const DEFAULT_STATS_TIMEOUT: Duration = Duration::from_millis(500);

/// HAProxy's stats socket (runtime API), which both API roles read: api-main for
/// `/api/data`, api-fallback while a recovery hint waits. On one entry point that is the
/// Unix socket; across hosts, every load balancer's TCP socket instead.
#[derive(Clone, Debug, Args)]
#[group(skip)]
pub struct StatsSocket {
    /// Path of HAProxy's stats socket.
    #[arg(
        long = "haproxy-socket",
        env = "ORIGIN_HAPROXY_SOCKET",
        value_name = "PATH",
        default_value = "target/stack/haproxy.sock"
    )]
    pub path: PathBuf,

    /// Across hosts: each load balancer's read-only stats address as `name=ip:port`,
    /// comma-separated, read over TCP (every one at once) instead of the socket. api-main
    /// reports them all in `/api/data` (`balancers`) and the one that forwarded the request
    /// as `haproxy`; api-fallback answers a waiting recovery hint once the balancer that
    /// forwarded it reports both main servers UP.
    #[arg(
        long = "haproxy-peers",
        env = "ORIGIN_HAPROXY_PEERS",
        value_name = "NAME=ADDR,...",
        value_delimiter = ',',
        value_parser = parse_peer
    )]
    pub peers: Vec<Peer>,

    /// Longest wait for the socket (connect, command and answer together).
    #[arg(skip = DEFAULT_STATS_TIMEOUT)]
    pub timeout: Duration,
}

/// One load balancer whose stats the API roles read over TCP, across hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its name, e.g. `lb-a`.
    pub name: String,
    /// Its `stats socket ipv4@...` address.
    pub addr: SocketAddr,
}

impl Peer {
    /// Whether a request from `from` came through this load balancer: HAProxy connects to an
    /// origin from its host's own address, the IP of its stats address.
    pub fn forwarded(&self, from: Option<SocketAddr>) -> bool {
        from.is_some_and(|from| from.ip() == self.addr.ip())
    }
}

pub(crate) fn parse_peer(text: &str) -> Result<Peer, String> {
    let (name, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=IP:PORT"))?;
    let addr = addr
        .parse()
        .map_err(|error| format!("`{addr}` in `{text}` is not IP:PORT: {error}"))?;
    if name.is_empty() {
        return Err(format!("`{text}` has no name before `=`"));
    }
    Ok(Peer {
        name: name.to_owned(),
        addr,
    })
}

/// Largest answer read from the socket; a real `show stat` for this stack is a few kB.
const MAX_ANSWER_BYTES: u64 = 4 * 1024 * 1024;

/// The `haproxy` object of `/api/data`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HaproxyReport {
    /// Whether the socket answered with a stats table.
    pub reachable: bool,
    /// Why not, as a sentence; `null` when reachable. It names no path on the server: the
    /// report goes to every visitor of the dashboard.
    pub error: Option<String>,
    /// One entry per server line (not FRONTEND, not BACKEND).
    pub servers: Vec<ServerState>,
    /// One entry per BACKEND line.
    pub backends: Vec<BackendState>,
}

/// A server as HAProxy sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServerState {
    /// Its backend (`pxname`).
    pub backend: String,
    /// Its name (`svname`).
    pub server: String,
    /// `status`: "UP", "DOWN", "MAINT", "no check", "UP 1/2", ...
    pub state: String,
    /// Whether it is a backup server (`bck`).
    pub backup: bool,
    /// Seconds since its last state change (`lastchg`).
    pub since_s: Option<u64>,
    /// Last health check's result (`check_status`, e.g. "L7OK"); `null` without checks.
    pub check_status: Option<String>,
    /// Last health check's duration (`check_duration`).
    pub check_duration_ms: Option<u64>,
    /// Current sessions (`scur`).
    pub sessions: u64,
    /// Sessions since start (`stot`).
    pub total_sessions: u64,
    /// Responses with a 5xx status (`hrsp_5xx`).
    pub http_5xx: u64,
    /// Connection plus response errors (`econ` + `eresp`).
    pub errors: u64,
}

/// A backend as HAProxy sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BackendState {
    /// Its name (`pxname`).
    pub name: String,
    /// `status`: "UP" or "DOWN".
    pub state: String,
    /// Current sessions (`scur`).
    pub sessions: u64,
    /// HTTP requests since start (`req_tot`).
    pub total_requests: u64,
    /// Responses with a 5xx status (`hrsp_5xx`).
    pub http_5xx: u64,
    /// Connection plus response errors (`econ` + `eresp`).
    pub errors: u64,
}

/// Why the stats could not be read. The messages name no path: they reach every visitor of
/// the dashboard (the operator knows `--haproxy-socket`).
#[derive(Debug)]
pub enum StatsError {
    /// Connecting to the socket failed.
    Connect(io::Error),
    /// Sending the command or reading the answer failed.
    Exchange(io::Error),
    /// No complete answer within the time limit.
    Timeout(Duration),
    /// The answer was not a `show stat` table (e.g. "Permission denied"), or it lacks a
    /// column this report needs.
    Table(TableError),
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsError::Connect(err) if err.kind() == io::ErrorKind::NotFound => f.write_str(
                "HAProxy's stats socket does not exist; is HAProxy running with `stats socket` at the path api-main was given (--haproxy-socket)?",
            ),
            StatsError::Connect(err) if err.kind() == io::ErrorKind::ConnectionRefused => f
                .write_str(
                    "nothing listens on HAProxy's stats socket (connection refused); HAProxy is probably stopped.",
                ),
            StatsError::Connect(err) => {
                write!(f, "cannot connect to HAProxy's stats socket: {err}.")
            }
            StatsError::Exchange(err) => {
                write!(f, "HAProxy's stats socket broke off the exchange: {err}.")
            }
            StatsError::Timeout(limit) => write!(
                f,
                "HAProxy's stats socket did not answer `show stat` within {} ms.",
                limit.as_millis()
            ),
            StatsError::Table(error) => write!(f, "`show stat`: {error}."),
        }
    }
}

impl std::error::Error for StatsError {}

/// The server and backend lines of a `show stat` table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StatsTable {
    /// Server lines.
    pub servers: Vec<ServerState>,
    /// BACKEND lines.
    pub backends: Vec<BackendState>,
}

/// Asks HAProxy for `show stat` on its Unix socket and reports the result, reachable or not.
pub async fn report(socket: &Path, limit: Duration) -> HaproxyReport {
    let connect = async {
        UnixStream::connect(socket)
            .await
            .map_err(StatsError::Connect)
    };
    report_from(connect, limit).await
}

/// The same on a `stats socket ipv4@addr` of another host.
pub async fn report_tcp(addr: SocketAddr, limit: Duration) -> HaproxyReport {
    let connect = async { TcpStream::connect(addr).await.map_err(StatsError::Connect) };
    report_from(connect, limit).await
}

/// Every load balancer's view across hosts, in the order of `peers`: read at once, one task
/// each, so the slowest one sets the pace rather than the sum of them.
pub async fn report_peers(peers: &[Peer], limit: Duration) -> Vec<HaproxyReport> {
    let reads: Vec<_> = peers
        .iter()
        .map(|peer| tokio::spawn(report_tcp(peer.addr, limit)))
        .collect();
    let mut reports = Vec::with_capacity(reads.len());
    for read in reads {
        reports.push(read.await.unwrap_or_else(|error| HaproxyReport {
            reachable: false,
            error: Some(format!("reading its stats failed: {error}")),
            servers: Vec::new(),
            backends: Vec::new(),
        }));
    }
    reports
}

async fn report_from<S: AsyncRead + AsyncWrite + Unpin>(
    connect: impl Future<Output = Result<S, StatsError>>,
    limit: Duration,
) -> HaproxyReport {
    let exchange = async { show_stat(connect.await?).await };
    let outcome = match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(answer)) => parse_show_stat(&answer),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(StatsError::Timeout(limit)),
    };
    match outcome {
        Ok(mut table) => {
            borrow_tracked_checks(&mut table);
            // The site's two tiers only. haproxy.cfg's other backends are plumbing that names
            // the same servers again (`hint`: api-fallback; `fallbacks`: the fallbacks'
            // liveness checks, which their servers in the tiers track).
            let tier = |backend: &str| Tier::ALL.iter().any(|tier| tier.name() == backend);
            HaproxyReport {
                reachable: true,
                error: None,
                servers: table
                    .servers
                    .into_iter()
                    .filter(|server| tier(&server.backend))
                    .collect(),
                backends: table
                    .backends
                    .into_iter()
                    .filter(|backend| tier(&backend.name))
                    .collect(),
            }
        }
        Err(err) => HaproxyReport {
            reachable: false,
            error: Some(err.to_string()),
            servers: Vec::new(),
            backends: Vec::new(),
        },
    }
}

/// One non-interactive runtime-API exchange: HAProxy closes the connection after answering.
async fn show_stat(mut stream: impl AsyncRead + AsyncWrite + Unpin) -> Result<String, StatsError> {
    let exchange = StatsError::Exchange;
    stream.write_all(b"show stat\n").await.map_err(exchange)?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER_BYTES)
        .read_to_end(&mut answer)
        .await
        .map_err(exchange)?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A fallback has no check of its own: it tracks its liveness check in the backend
/// [`contract::FALLBACK_CHECKS_BACKEND`]. Its row shows that check's last result, so the
/// dashboard says how HAProxy knows a fallback is up or down rather than "no check".
fn borrow_tracked_checks(table: &mut StatsTable) {
    let checks: Vec<ServerState> = table
        .servers
        .iter()
        .filter(|server| server.backend == contract::FALLBACK_CHECKS_BACKEND)
        .cloned()
        .collect();
    for server in table
        .servers
        .iter_mut()
        .filter(|s| s.check_status.is_none())
    {
        if let Some(check) = checks.iter().find(|check| check.server == server.server) {
            server.check_status.clone_from(&check.check_status);
            server.check_duration_ms = check.check_duration_ms;
        }
    }
}

/// Parses HAProxy's `show stat` CSV, locating columns by the names in its header line.
pub fn parse_show_stat(answer: &str) -> Result<StatsTable, StatsError> {
    let csv = Table::show_stat(answer).map_err(StatsError::Table)?;
    let column = |name: &str| csv.column(name).map_err(StatsError::Table);
    let pxname = column("pxname")?;
    let svname = column("svname")?;
    let scur = column("scur")?;
    let stot = column("stot")?;
    let status = column("status")?;
    let lastchg = column("lastchg")?;
    let check_status = column("check_status")?;
    let check_duration = column("check_duration")?;
    let bck = column("bck")?;
    let hrsp_5xx = column("hrsp_5xx")?;
    let eresp = column("eresp")?;
    let econ = column("econ")?;
    let req_tot = column("req_tot")?;
    let kind = column("type")?;

    let mut table = StatsTable::default();
    for row in csv.rows() {
        let text = |index: usize| row.at(index);
        let number = |index: usize| text(index).parse::<u64>().ok();
        let count = |index: usize| number(index).unwrap_or(0);
        // type: 0 frontend, 1 backend, 2 server, 3 listener.
        match (text(kind), text(svname)) {
            ("0" | "3", _) | (_, "FRONTEND") => {}
            ("1", _) | (_, "BACKEND") => table.backends.push(BackendState {
                name: text(pxname).to_owned(),
                state: text(status).to_owned(),
                sessions: count(scur),
                total_requests: count(req_tot),
                http_5xx: count(hrsp_5xx),
                errors: count(econ) + count(eresp),
            }),
            _ => table.servers.push(ServerState {
                backend: text(pxname).to_owned(),
                server: text(svname).to_owned(),
                state: text(status).to_owned(),
                backup: text(bck) == "1",
                since_s: number(lastchg),
                // "* L7OK" means a check is running now; the last result is what matters.
                check_status: Some(text(check_status).trim_start_matches("* ").to_owned())
                    .filter(|status| !status.is_empty()),
                check_duration_ms: number(check_duration),
                sessions: count(scur),
                total_sessions: count(stot),
                http_5xx: count(hrsp_5xx),
                errors: count(econ) + count(eresp),
            }),
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_forwarded_what_came_from_its_address() {
        let peer = parse_peer("lb-a=198.18.0.11:9100").unwrap();
        // HAProxy connects from its host's address, on a port of its own choosing.
        assert!(peer.forwarded(Some("198.18.0.11:41234".parse().unwrap())));
        assert!(!peer.forwarded(Some("198.18.0.12:41234".parse().unwrap())));
        assert!(!peer.forwarded(None), "a request without an address");
    }

    #[test]
    fn rejects_answers_without_a_header() {
        let err = parse_show_stat("Permission denied\n\n").unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
        assert!(matches!(
            parse_show_stat(""),
            Err(StatsError::Table(TableError::NotATable(_)))
        ));
    }

    #[test]
    fn names_a_missing_column() {
        let err = parse_show_stat("# pxname,svname\nweb,FRONTEND\n").unwrap_err();
        assert!(
            matches!(&err, StatsError::Table(TableError::MissingColumn(name)) if name == "scur"),
            "{err}"
        );
    }

    #[test]
    fn finds_columns_by_name_in_any_order() {
        let csv = "# type,svname,pxname,status,scur,stot,lastchg,check_status,check_duration,bck,hrsp_5xx,eresp,econ,req_tot,\n\
                   0,FRONTEND,web,OPEN,1,10,,,,,0,,,10,\n\
                   2,a,api,UP,2,20,30,* L7OK,1,0,3,1,2,,\n\
                   2,b,api,no check,0,0,40,,,1,0,0,0,,\n\
                   1,BACKEND,api,UP,2,20,30,,,0,3,1,2,25,\n";
        let table = parse_show_stat(csv).unwrap();
        assert_eq!(table.servers.len(), 2);
        assert_eq!(table.servers[0].server, "a");
        assert_eq!(table.servers[0].check_status.as_deref(), Some("L7OK"));
        assert_eq!(table.servers[0].errors, 3);
        assert_eq!(table.servers[1].check_status, None);
        assert_eq!(table.servers[1].check_duration_ms, None);
        assert!(table.servers[1].backup);
        assert_eq!(table.backends.len(), 1);
        assert_eq!(table.backends[0].total_requests, 25);
    }

    #[test]
    fn a_fallback_shows_the_liveness_check_it_tracks() {
        let csv = "# type,svname,pxname,status,scur,stot,lastchg,check_status,check_duration,bck,hrsp_5xx,eresp,econ,req_tot,\n\
                   2,api-fallback,api,DOWN,0,0,3,,,1,0,0,0,,\n\
                   2,api-fallback,hint,DOWN,0,0,3,,,0,0,0,0,,\n\
                   2,api-fallback,fallbacks,DOWN,0,0,3,L4CON,0,0,0,0,0,,\n\
                   2,static-main,static,UP,0,0,3,L7OK,1,0,0,0,0,,\n";
        let mut table = parse_show_stat(csv).unwrap();
        borrow_tracked_checks(&mut table);
        let checks: Vec<_> = table
            .servers
            .iter()
            .map(|s| {
                (
                    s.backend.as_str(),
                    s.check_status.as_deref(),
                    s.check_duration_ms,
                )
            })
            .collect();
        assert_eq!(
            checks,
            [
                ("api", Some("L4CON"), Some(0)),
                ("hint", Some("L4CON"), Some(0)),
                ("fallbacks", Some("L4CON"), Some(0)),
                ("static", Some("L7OK"), Some(1)),
            ]
        );
    }
}
