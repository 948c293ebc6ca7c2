//! Hostile receivers: every endpoint answers with the largest response
//! head the worker accepts and then stalls, never finishing it, until the
//! endpoint's timeout. The worker (its binary, default settings) fills all
//! of its slots with such requests; its peak RSS is measured next to the
//! bound the README states: its RSS at rest plus, per slot,
//! `dispatch::SLOT_BYTES` (hyper's HTTP/1 head buffer, which an answer can
//! fill and reqwest does not let us lower, and the connection's buffers).

use crate::db::BenchDb;
use crate::worker::WorkerProcess;
use crate::Args;
use pg_webhook_worker::http::dispatch::SLOT_BYTES;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Endpoints, each with half of the worker's slots (its fair share cap),
/// so that every slot holds a stalled request.
const ENDPOINTS: usize = 2;
/// Headers per answer (hyper accepts up to 100) and bytes of each: just
/// under hyper's head buffer in all.
const HEADERS: usize = 95;
const HEADER_BYTES: usize = 4200;

#[derive(Debug, Clone, Serialize)]
pub struct Heads {
    pub slots: usize,
    pub stalled: usize,
    pub head_bytes_sent: usize,
    pub rss_at_rest_mib: f64,
    pub peak_rss_mib: f64,
    pub per_slot_bound_kib: f64,
    pub bound_mib: f64,
}

/// A receiver that reads each request's head, answers 200 with
/// [`HEADERS`] long headers and never ends the head; counts such stalls.
async fn hostile_receiver() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/", listener.local_addr()?);
    let stalled = Arc::new(AtomicUsize::new(0));
    let counter = stalled.clone();
    let mut head = String::from("HTTP/1.1 200 OK\r\n");
    for i in 0..HEADERS {
        head.push_str(&format!("x-pad-{i}: {}\r\n", "a".repeat(HEADER_BYTES)));
    }
    let head = Arc::new(head.into_bytes());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let (head, counter) = (head.clone(), counter.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                if socket.write_all(&head).await.is_err() {
                    return;
                }
                counter.fetch_add(1, Ordering::Relaxed);
                // Stall: hold the connection, never end the head.
                let _ = socket.read(&mut buf).await;
                counter.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    Ok((url, stalled))
}

pub async fn run(args: &Args) -> anyhow::Result<Heads> {
    let slots = pg_webhook_worker::config::DEFAULT_CONCURRENCY;
    let db = BenchDb::new(&args.dsn, "heads").await?;
    let c = db.client().await?;
    let (url, stalled) = hostile_receiver().await?;
    for i in 0..ENDPOINTS {
        c.execute(
            "select webhook_subscribe($1, name => $2, timeout => '5 minutes')",
            &[&url, &format!("hostile-{i}")],
        )
        .await?;
    }
    let worker = WorkerProcess::start(&args.worker_bin, &db.dsn)?;
    // At rest: connected, listening, nothing to send.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rest = worker.rss_mib().map_or(0.0, |(rss, _)| rss);
    let events = i64::try_from(slots / ENDPOINTS).unwrap_or(i64::MAX);
    c.execute(
        "select webhook_publish('hostile.head', jsonb_build_object('n', n)) from generate_series(1, $1::bigint) n",
        &[&events],
    )
    .await?;
    // Until the stalls stop growing for a while: the worker fills its slots
    // a claim at a time (it claims once half a batch is free, so a few
    // slots stay empty when nothing ever finishes).
    let start = Instant::now();
    let mut peak = 0.0f64;
    let (mut most, mut since) = (0, Instant::now());
    loop {
        if let Some((rss, hwm)) = worker.rss_mib() {
            peak = peak.max(rss).max(hwm);
        }
        let now = stalled.load(Ordering::Relaxed);
        if now > most {
            (most, since) = (now, Instant::now());
        }
        if most > 0 && since.elapsed() > Duration::from_secs(5) {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the stalled answers kept growing for 2 minutes ({most} of {slots} slots)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(
        most * 10 >= slots * 9,
        "only {most} of {slots} slots held a stalled answer"
    );
    worker.stop_within(Duration::from_secs(5)).await;
    drop(c);
    db.drop().await?;
    let per_slot = SLOT_BYTES as f64 / 1024.0;
    let h = Heads {
        slots,
        stalled: most,
        head_bytes_sent: HEADERS * (HEADER_BYTES + 12),
        rss_at_rest_mib: rest,
        peak_rss_mib: peak,
        per_slot_bound_kib: per_slot,
        bound_mib: rest + slots as f64 * per_slot / 1024.0,
    };
    eprintln!(
        "  heads: {} of {} slots stalled on a {} KiB answer head: peak RSS {:.1} MiB (at rest {:.1}); stated bound {:.1} MiB ({:.0} KiB per slot)",
        h.stalled, h.slots, h.head_bytes_sent / 1024, h.peak_rss_mib, h.rss_at_rest_mib, h.bound_mib, h.per_slot_bound_kib
    );
    Ok(h)
}
