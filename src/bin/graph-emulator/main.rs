//! `graph-emulator`: a local stand-in for the Microsoft Graph profile photo
//! update settings (`/beta/admin/people/photoUpdateSettings`) and the Entra ID
//! client-credentials token endpoint, for tests, demos and users.
//!
//! It is written from Graph's public documentation and shares no code with
//! the operator, so that a misreading of the API in one does not hide in the
//! other. `--help` lists the options. The control API below lets tests
//! inject drift, faults and throttling. Its text is the same as in
//! `--help`:
//!
//! ```text
#![doc = include_str!("control-api.md")]
//! ```

mod aadsts;
mod app;
mod assertion;
mod cli;
mod context;
mod control;
mod faults;
mod graph;
mod graph_error;
mod identity;
mod journal;
mod patch;
mod server;
mod state;
mod tenant_id;
mod tenants;
mod throttle;
mod token;

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::cli::{Args, LogFormat};
use crate::state::Emulator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(args.log_format);
    run(args).await
}

async fn run(args: Args) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() && !args.allow_remote {
        bail!(
            "--listen {} is not a loopback address; pass --allow-remote to accept \
             connections from other hosts, which can then also use the unauthenticated control API",
            args.listen
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(server::tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("failed to listen on {}", args.listen))?;
    let local_addr = listener.local_addr()?;
    let emulator = Arc::new(Emulator::new(&args, local_addr));
    let base_url = emulator.config.base_url.clone();

    announce(&base_url)?;
    let registrations = args.clients.len() + args.client_certificates.len() + args.federated.len();
    tracing::info!(%base_url, registrations, "graph-emulator started");
    if registrations == 0 {
        tracing::warn!(
            "no --client, --client-cert or --federated given: token requests fail with \
             AADSTS90002 until a client is registered through \
             PUT /_emulator/tenants/{{tenant}}/clients/{{clientId}}"
        );
    }
    server::serve(listener, tls, app::router(emulator), shutdown_signal()).await;
    tracing::info!("graph-emulator stopped");
    Ok(())
}

/// Prints the one stdout line that tests and scripts wait for to learn the port.
fn announce(base_url: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "graph-emulator listening on {base_url}")?;
    stdout.flush()?;
    Ok(())
}

/// Sends logs to stderr, because stdout carries only the start line.
fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
