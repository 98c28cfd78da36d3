//! A throw-away site on disk, a fake HAProxy stats socket and small request helpers.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use actix_web::dev::ServiceResponse;
use actix_web::http::header::HeaderName;
use actix_web::test;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};

/// What `show stat` printed on Debian's HAProxy 2.6.12 for a stack like ours, with api-main
/// put in MAINT over the runtime API and four requests then answered by api-fallback.
pub const SHOW_STAT_2_6: &str = include_str!("fixtures/haproxy-2.6-show-stat.csv");

/// The contents of a file placed next to `www/`, which no URL may ever return.
pub const SECRET: &str = "secret-next-to-www-7f3a";

pub const INDEX_HTML: &str = "<!doctype html><title>dashboard</title><p>dashboard</p>\n";
pub const MAINTENANCE_HTML: &str = "<!doctype html><title>maintenance</title><p>back soon</p>\n";

/// A temporary directory holding `www/` (a small built site) and `secret.txt` beside it.
pub struct Site {
    dir: TempDir,
}

impl Site {
    /// A complete site: dashboard, maintenance page and a wasm-pack `pkg/`.
    pub fn new() -> Site {
        let site = Site::without_maintenance_page();
        site.write("maintenance.html", MAINTENANCE_HTML);
        site
    }

    /// A site whose `www/` lacks `maintenance.html`.
    pub fn without_maintenance_page() -> Site {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        fs::create_dir_all(dir.path().join("www/pkg")).expect("create www/pkg");
        fs::write(dir.path().join("secret.txt"), SECRET).expect("write the secret");
        let site = Site { dir };
        site.write("index.html", INDEX_HTML);
        // Large and repetitive enough that compression is worth it.
        site.write("app.css", &"main { display: grid; }\n".repeat(200));
        site.write(
            "pkg/client.js",
            &"export default async function init() { return 1; }\n".repeat(50),
        );
        let wasm: &[u8] = b"\0asm\x01\0\0\0";
        fs::write(site.www().join("pkg/client_bg.wasm"), wasm).expect("write the wasm");
        site
    }

    pub fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, name: &str, contents: &str) {
        fs::write(self.www().join(name), contents).expect("write a www file");
    }
}

/// The value of a response header as text, or "" when absent.
pub fn header<B>(res: &ServiceResponse<B>, name: impl Into<HeaderName>) -> String {
    res.headers()
        .get(name.into())
        .map(|value| value.to_str().expect("ASCII header").to_owned())
        .unwrap_or_default()
}

/// The response body as text.
pub async fn body_text<B: actix_web::body::MessageBody>(res: ServiceResponse<B>) -> String {
    String::from_utf8(test::read_body(res).await.to_vec()).expect("UTF-8 body")
}

/// A fake HAProxy runtime API: reads one command line per connection and answers `answer`
/// (or nothing at all when `answer` is `None`, holding the connection open), then closes.
///
/// The accept loop runs on the test's runtime and ends with it.
pub fn fake_stats_socket(path: &Path, answer: Option<&'static str>) {
    let listener = UnixListener::bind(path).expect("bind the fake stats socket");
    actix_web::rt::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            actix_web::rt::spawn(answer_show_stat(stream, answer));
        }
    });
}

/// The same on TCP, as a load balancer's `stats socket ipv4@...` across hosts: listens on a
/// free port of `ip` (any 127.x.y.z works on Linux, so fakes can stand for distinct hosts)
/// and returns the address.
pub async fn fake_stats_tcp(ip: IpAddr, answer: Option<&'static str>) -> SocketAddr {
    let listener = TcpListener::bind((ip, 0))
        .await
        .unwrap_or_else(|err| panic!("cannot bind a fake stats socket on {ip}: {err}"));
    let addr = listener
        .local_addr()
        .expect("the fake stats socket's address");
    actix_web::rt::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            actix_web::rt::spawn(answer_show_stat(stream, answer));
        }
    });
    addr
}

/// One exchange of the fake runtime API (see [`fake_stats_socket`]).
async fn answer_show_stat(
    stream: impl AsyncRead + AsyncWrite + Unpin,
    answer: Option<&'static str>,
) {
    let mut stream = BufReader::new(stream);
    let mut command = String::new();
    if stream.read_line(&mut command).await.is_err() {
        return;
    }
    match answer {
        Some(answer) if command == "show stat\n" => {
            let _ = stream.get_mut().write_all(answer.as_bytes()).await;
        }
        Some(_) => {
            let _ = stream.get_mut().write_all(b"Unknown command.\n\n").await;
        }
        // Hold the connection until the client gives up.
        None => {
            let _ = stream.read_line(&mut command).await;
        }
    }
}
