//! The deliveries a worker has in flight: the tasks sending them, how many
//! belong to each endpoint (what the claim needs to give every endpoint no
//! more than its share of the slots) and their payload bytes (what bounds
//! the worker's memory).
//!
//! Must not: send, claim or record anything; it only keeps count.

use std::collections::HashMap;
use std::future::Future;
use tokio::task::{Id, JoinError, JoinSet};

/// The delivery tasks, counted per endpoint.
#[derive(Default)]
pub(crate) struct InFlight {
    tasks: JoinSet<()>,
    /// each task's endpoint and payload bytes
    task_of: HashMap<Id, (i64, usize)>,
    per_endpoint: HashMap<i64, usize>,
    bytes: usize,
}

impl InFlight {
    /// Starts a task delivering `bytes` of payload to `endpoint_id`.
    pub(crate) fn spawn(
        &mut self,
        endpoint_id: i64,
        bytes: usize,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let handle = self.tasks.spawn(task);
        self.task_of.insert(handle.id(), (endpoint_id, bytes));
        *self.per_endpoint.entry(endpoint_id).or_default() += 1;
        self.bytes += bytes;
    }

    /// Payload bytes in flight.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Tasks still running.
    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    /// True when nothing is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Deliveries in flight per endpoint.
    pub(crate) fn per_endpoint(&self) -> Vec<(i64, usize)> {
        self.per_endpoint.iter().map(|(e, n)| (*e, *n)).collect()
    }

    /// Accounts for every task that has finished, without waiting.
    pub(crate) fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
    }

    /// Waits for one task to finish; `None` when none is running.
    pub(crate) async fn next(&mut self) -> Option<()> {
        let done = self.tasks.join_next_with_id().await?;
        self.finished(done);
        Some(())
    }

    /// Waits for every task, up to `timeout`; returns how many were left
    /// (and aborted) when it ran out.
    pub(crate) async fn drain(&mut self, timeout: std::time::Duration) -> usize {
        let all = async { while self.next().await.is_some() {} };
        if tokio::time::timeout(timeout, all).await.is_ok() {
            return 0;
        }
        let left = self.tasks.len();
        self.tasks.shutdown().await;
        self.task_of.clear();
        self.per_endpoint.clear();
        self.bytes = 0;
        left
    }

    fn finished(&mut self, done: Result<(Id, ()), JoinError>) {
        let id = match &done {
            Ok((id, ())) => *id,
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "a delivery task panicked; its lease will expire and it will be retried");
                }
                e.id()
            }
        };
        if let Some((endpoint, bytes)) = self.task_of.remove(&id) {
            self.bytes -= bytes;
            if let Some(n) = self.per_endpoint.get_mut(&endpoint) {
                *n -= 1;
                if *n == 0 {
                    self.per_endpoint.remove(&endpoint);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_per_endpoint_until_tasks_end() {
        let mut f = InFlight::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        f.spawn(7, 10, async {});
        f.spawn(7, 200, async {
            let _ = rx.await;
        });
        f.spawn(9, 3000, async {
            panic!("a delivery task panicked on purpose")
        });
        let mut counts = f.per_endpoint();
        counts.sort();
        assert_eq!(counts, vec![(7, 2), (9, 1)]);
        assert_eq!(f.bytes(), 3210);
        // Two finish (one of them by panicking); the third waits.
        f.next().await.unwrap();
        f.next().await.unwrap();
        assert_eq!(f.per_endpoint(), vec![(7, 1)]);
        assert_eq!(f.bytes(), 200);
        tx.send(()).unwrap();
        f.next().await.unwrap();
        assert!(f.is_empty() && f.per_endpoint().is_empty());
        assert_eq!(f.bytes(), 0);
        assert!(f.next().await.is_none());
    }
}
