//! `origin <role>`: parse, log, listen, report the address, serve until SIGTERM.

use std::io::{IsTerminal, Write};
use std::net::TcpListener;
use std::process::ExitCode;

use actix_web::{web, App, HttpServer};
use clap::Parser;
use origin::listener::{obtain_listener, ListenerSource};
use origin::{Cli, Metrics, Role};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let workers = cli.workers();
    // First, while no other thread runs (it may edit the environment).
    let listener = obtain_listener(&cli.role.server().listen);
    // Start-up, shutdown and errors only (requests are logged by HAProxy), so stderr
    // unbuffered is cheap enough.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let served = listener
        .map_err(|err| err.to_string())
        .and_then(|listener| serve(cli.role, workers, listener));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("origin: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    role: Role,
    workers: usize,
    (listener, source): (TcpListener, ListenerSource),
) -> Result<(), String> {
    // Before the address is reported: a www directory that cannot be served stops the start,
    // not a request.
    let files = role.load_files().map_err(|err| err.to_string())?;
    if let Role::StaticMain { site, .. } = &role {
        tracing::info!(
            dir = %site.www.display(),
            files = files.file_count(),
            bytes = files.total_bytes(),
            gzip_variants = files.gzip_count(),
            "loaded the www directory into memory"
        );
    }
    let files = web::Data::new(files);
    let addr = listener
        .local_addr()
        .map_err(|err| format!("cannot read the listening socket's address: {err}"))?;
    // Whoever started us learns the port from this line, so it must be first and flushed.
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = writeln!(stdout, "{addr}").and_then(|()| stdout.flush()) {
        tracing::warn!(%err, "cannot print the bound address on standard output");
    }
    drop(stdout);

    let metrics = Metrics::new(role.name(), role.build_id())
        .map_err(|err| format!("cannot set up the metrics: {err}"))?;
    let shutdown_timeout = role.server().shutdown_timeout;
    let role_name = role.name();
    tracing::info!(%addr, ?source, role = role_name, build = role.build_id(), "listening");

    actix_web::rt::System::new()
        .block_on(async move {
            HttpServer::new(move || {
                let (role, files, metrics) = (role.clone(), files.clone(), metrics.clone());
                App::new().configure(move |cfg| role.configure(cfg, &files, &metrics))
            })
            .workers(workers)
            .listen(listener)?
            .shutdown_timeout(shutdown_timeout)
            .run()
            .await
        })
        .map_err(|err| format!("the server stopped with an error: {err}"))?;
    tracing::info!(
        role = role_name,
        "stopped after finishing in-flight requests"
    );
    Ok(())
}
