//! `pg-webhook-worker`: configuration from flags and `PG_WEBHOOK_*` /
//! `DATABASE_URL`, logs to stderr (`RUST_LOG`, default `info`), graceful
//! shutdown on SIGTERM or Ctrl-C.

use clap::Parser;
use pg_webhook_worker::config::LogFormat;
use pg_webhook_worker::{run, CancellationToken, Cli, Config};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let config = match Config::from_cli(cli, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => return fail(e.into()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(stop_on_signal(cancel.clone()));
        match run(config, cancel).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e.into()),
        }
    })
}

/// Cancels on SIGTERM (what service managers send) or Ctrl-C.
async fn stop_on_signal(cancel: CancellationToken) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler works on Unix");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
    cancel.cancel();
}

fn fail(e: anyhow::Error) -> ExitCode {
    tracing::error!("{e:#}");
    eprintln!("pg-webhook-worker: {e:#}");
    ExitCode::FAILURE
}
