//! `pg-webhook-worker`: configuration from flags and `PG_WEBHOOK_*` /
//! `DATABASE_URL`, logs to stderr (`RUST_LOG`, default `info`), graceful
//! shutdown on SIGTERM or Ctrl-C. `pg-webhook-worker listen` runs the local
//! development receiver instead (receiver.rs).

use clap::Parser;
use pg_webhook_worker::config::LogFormat;
use pg_webhook_worker::receiver::{self, ListenCli};
use pg_webhook_worker::{run, CancellationToken, Config};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let listen = std::env::args().nth(1).as_deref() == Some("listen");
    // Flags first: a refused flag, --help or --version ends here, as clap prints them.
    let parsed = (!listen).then(|| Config::try_parse().unwrap_or_else(|e| e.exit()));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match parsed.as_ref().map(|c| c.log_format) {
        Some(LogFormat::Json) => logs.json().init(),
        _ => logs.init(),
    }
    let config = match parsed.map(|c| c.resolve(|k| std::env::var(k).ok())) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => return fail(e.into()),
        None => None,
    };
    let threads = config.as_ref().map_or(1, |c| c.threads);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(anyhow::Error::new(e).context("cannot start the async runtime")),
    };
    runtime.block_on(async {
        let Some(config) = config else {
            let name = "pg-webhook-worker listen".to_owned();
            let args = ListenCli::parse_from(std::iter::once(name).chain(std::env::args().skip(2)));
            return receiver::run(args)
                .await
                .map_or_else(fail, |()| ExitCode::SUCCESS);
        };
        let cancel = CancellationToken::new();
        tokio::spawn(stop_on_signal(cancel.clone()));
        run(config, cancel)
            .await
            .map_or_else(|e| fail(e.into()), |()| ExitCode::SUCCESS)
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
