//! The worker where the database defaults to another isolation level
//! (worker/src/db/isolation.rs): the same drain (row events to one
//! endpoint, one worker) in a database whose sessions default to READ
//! COMMITTED and in one whose sessions default to SERIALIZABLE. The worker
//! runs each write in a READ COMMITTED transaction of its own in both, so
//! the two should not differ. Interleaved, so that the machine's drift
//! falls on both.

use crate::db::Flavor;
use crate::drain::{drain_in, Throughput};
use crate::Args;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Isolation {
    /// default_transaction_isolation = 'read committed' (PostgreSQL's default)
    pub read_committed: Throughput,
    /// default_transaction_isolation = 'serializable'
    pub serializable: Throughput,
}

pub async fn run(args: &Args) -> anyhow::Result<Isolation> {
    let (mut rc, mut ser) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        // Each run starts with the other one, as far as the runs go.
        let order: [Option<&str>; 2] = if i % 2 == 0 {
            [None, Some("serializable")]
        } else {
            [Some("serializable"), None]
        };
        for level in order {
            let r = drain_in(
                args,
                &args.worker_bin,
                args.drain_events,
                1,
                1,
                Flavor::Extension,
                level,
            )
            .await?;
            eprintln!(
                "  isolation, run {}: default {}: {:.0} deliveries/s, {:.0} µs of CPU per delivery",
                i + 1,
                level.unwrap_or("read committed"),
                r.per_sec,
                r.cpu_us
            );
            match level {
                None => rc.push(r),
                Some(_) => ser.push(r),
            }
        }
    }
    Ok(Isolation {
        read_committed: Throughput::of(args.drain_events, 1, 1, &rc),
        serializable: Throughput::of(args.drain_events, 1, 1, &ser),
    })
}
