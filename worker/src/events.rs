//! Optional signals about the worker's progress, for tests and embedders
//! (River's test signals): a test waits on "attempt recorded" instead of
//! sleeping.

use tokio::sync::mpsc::UnboundedSender;

/// Something the worker did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The LISTEN connection is (re)established.
    Listening,
    /// The metrics server listens on this address (`--metrics-addr`).
    Serving(std::net::SocketAddr),
    /// A claim returned this many deliveries.
    Claimed(usize),
    /// A batch of attempts was written; `moved` deliveries changed state
    /// (the others had lost their lease).
    Recorded {
        /// the deliveries whose attempts were recorded
        delivery_ids: Vec<i64>,
        /// how many of them changed state
        moved: u64,
    },
    /// The periodic maintenance ran: its report (JSON), or `None` when
    /// another worker was running it.
    Maintenance(Option<String>),
}

/// Where events go; a no-op when nobody listens.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events(Option<UnboundedSender<WorkerEvent>>);

impl Events {
    pub(crate) fn new(tx: Option<UnboundedSender<WorkerEvent>>) -> Self {
        Self(tx)
    }

    pub(crate) fn emit(&self, event: WorkerEvent) {
        if let Some(tx) = &self.0 {
            // A dropped receiver only means nobody is watching any more.
            let _ = tx.send(event);
        }
    }
}
