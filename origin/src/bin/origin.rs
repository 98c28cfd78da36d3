//! `origin <role>`: parse, log, listen, report the address, serve until SIGTERM.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use actix_web::{App, HttpServer};
use clap::Parser;
use origin::listener::obtain_listener;
use origin::{Cli, Metrics, Role};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match serve(cli.role) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("origin: {err}");
            ExitCode::FAILURE
        }
    }
}

fn serve(role: Role) -> Result<(), String> {
    if let Role::StaticMain { site, .. } = &role {
        if !site.www.is_dir() {
            return Err(format!(
                "the www directory {} does not exist; build the site first or pass --www (env ORIGIN_WWW)",
                site.www.display()
            ));
        }
    }
    let (listener, source) =
        obtain_listener(&role.server().listen).map_err(|err| err.to_string())?;
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
                let (role, metrics) = (role.clone(), metrics.clone());
                App::new().configure(move |cfg| role.configure(cfg, &metrics))
            })
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
