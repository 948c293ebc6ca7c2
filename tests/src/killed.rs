//! Two worker processes (the real binary) that are SIGKILLed and started
//! again in turn, for the chaos tests.

use crate::worker_binary;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Starts the worker binary on `dsn` as `<name>-<id>`, with short timers
/// (a 200 ms poll, a 500 ms lease margin) so that a killed worker's
/// deliveries are taken over soon.
fn start(dsn: &str, name: &str, id: usize) -> std::process::Child {
    std::process::Command::new(worker_binary())
        .env("DATABASE_URL", dsn)
        .env("PG_WEBHOOK_ALLOW_PRIVATE_TARGETS", "true")
        .env("PG_WEBHOOK_POLL_INTERVAL_MS", "200")
        .env("PG_WEBHOOK_LEASE_MARGIN_MS", "500")
        .env("PG_WEBHOOK_WORKER_ID", format!("{name}-{id}"))
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start the worker binary")
}

/// Two worker processes, one of them SIGKILLed and restarted every
/// `every`, in turn, until [`KilledInTurn::stop`].
pub struct KilledInTurn {
    stop: Arc<AtomicBool>,
    supervisor: tokio::task::JoinHandle<usize>,
}

impl KilledInTurn {
    /// Starts both workers on `dsn` (worker ids `<name>-0` and `<name>-1`).
    pub fn start(dsn: &str, name: &str, every: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let supervisor = {
            let (dsn, name, stop) = (dsn.to_owned(), name.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut workers = [start(&dsn, &name, 0), start(&dsn, &name, 1)];
                let mut kills = 0;
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(every).await;
                    let _ = workers[turn].kill(); // SIGKILL
                    let _ = workers[turn].wait();
                    workers[turn] = start(&dsn, &name, turn);
                    kills += 1;
                    turn = 1 - turn;
                }
                for w in &mut workers {
                    let _ = w.kill();
                    let _ = w.wait();
                }
                kills
            })
        };
        Self { stop, supervisor }
    }

    /// Kills both for good; returns how many kills happened meanwhile.
    pub async fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.supervisor.await.expect("the supervisor task")
    }
}
