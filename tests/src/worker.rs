//! The worker, in-process, with its events and metrics at hand.

use pg_webhook_worker::{CancellationToken, Config, Worker, WorkerEvent};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A worker running in this process.
pub struct RunningWorker {
    cancel: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), pg_webhook_worker::Error>>,
    /// Its progress signals.
    pub events: mpsc::UnboundedReceiver<WorkerEvent>,
    /// Its metrics (what it counts as it runs).
    pub metrics: Arc<pg_webhook_worker::metrics::Metrics>,
}

impl RunningWorker {
    /// Starts a worker with `config`.
    pub fn start(config: Config) -> Self {
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let worker = Worker::new(config).with_events(tx);
        let metrics = worker.metrics();
        let handle = tokio::spawn(worker.run(cancel.clone()));
        Self {
            cancel,
            handle,
            events,
            metrics,
        }
    }

    /// Cancels it and waits for a clean exit.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.handle
            .await
            .expect("worker task")
            .expect("worker ran without a fatal error");
    }
}
