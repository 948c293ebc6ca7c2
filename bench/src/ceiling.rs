//! The ceilings: what dispatch could do at best (the worker's own HTTP client
//! blasting the sink, no database), what the database could do at best
//! (plain batched INSERT and UPDATE of 200-byte rows), and what pg_webhook's
//! own SQL could do at best: the drain's claim (fan-out included) and record
//! statements in a loop on two connections, as the worker runs them, with
//! no HTTP and no worker (its CPU left to PostgreSQL).

use crate::db::BenchDb;
use crate::{median, Args};
use pg_webhook_protocol::Secret;
use pg_webhook_worker::claim::{Claim, Target};
use pg_webhook_worker::http::dispatch::Dispatcher;
use pg_webhook_worker::retry::RetryPolicy;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    pub http_requests_per_sec: f64,
    pub insert_rows_per_sec: f64,
    pub update_rows_per_sec: f64,
    /// deliveries per second through claim and record alone
    pub sql_deliveries_per_sec: f64,
}

const SQL_EVENTS: usize = 100_000;
const CLAIM_SQL: &str = "select delivery_id, lease_token, endpoint_id, attempt_number
    from webhook._claim_deliveries('ceiling', 100, '1 minute', 256, '{}', '{}', 1000, 33554432)
    where delivery_id is not null";
const RECORD_SQL: &str = "select webhook._record_attempts('ceiling', $1::bigint[], $2::bigint[], $3::bigint[],
    $4::integer[], array_fill(now(), array[$5::integer]), array_fill(1.0::float8, array[$5::integer]),
    array_fill(200, array[$5::integer]), array_fill(null::text, array[$5::integer]),
    array_fill(null::text, array[$5::integer]), array_fill('succeeded'::text, array[$5::integer]),
    array_fill(null::bigint, array[$5::integer]))";

/// One connection's loop: claim, record, until nothing is left.
async fn claim_record_loop(c: tokio_postgres::Client) -> anyhow::Result<usize> {
    let mut done = 0;
    loop {
        let rows = c.query(CLAIM_SQL, &[]).await?;
        if rows.is_empty() {
            if crate::db::any_pending(&c).await? {
                continue; // the other connection holds the fan-out or the rest
            }
            return Ok(done);
        }
        let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let tokens: Vec<i64> = rows.iter().map(|r| r.get(1)).collect();
        let endpoints: Vec<i64> = rows.iter().map(|r| r.get(2)).collect();
        let attempts: Vec<i32> = rows.iter().map(|r| r.get(3)).collect();
        let n = rows.len() as i32;
        c.query_one(RECORD_SQL, &[&ids, &tokens, &endpoints, &attempts, &n])
            .await?;
        done += rows.len();
    }
}

async fn sql_once(args: &Args) -> anyhow::Result<f64> {
    let db = BenchDb::new(&args.dsn, "sqlceiling").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 1).await?;
    crate::db::watched_table(&c, "bench_rows").await?;
    crate::drain::fill(&c, SQL_EVENTS).await?;
    let (a, b) = (db.client().await?, db.client().await?);
    let start = Instant::now();
    let (x, y) = tokio::try_join!(claim_record_loop(a), claim_record_loop(b))?;
    let elapsed = start.elapsed().as_secs_f64();
    anyhow::ensure!(x + y == SQL_EVENTS, "{} of {SQL_EVENTS} recorded", x + y);
    drop(c);
    db.drop().await?;
    Ok(SQL_EVENTS as f64 / elapsed)
}

fn claim(target: &Arc<Target>, i: i64) -> Claim {
    Claim {
        delivery_id: i,
        lease_token: 0,
        attempt: 1,
        message_id: format!("msg_{i:032x}"),
        event_type: "row.created".into(),
        event_time: "2026-01-01T00:00:00.000000Z".into(),
        event_created_us: 0,
        payload: format!(
            r#"{{"op": "INSERT", "new": {{"id": {i}, "payload": "{}"}}, "old": null, "table": "bench_rows", "schema": "public"}}"#,
            "x".repeat(200)
        ),
        endpoint_id: 1,
        target: target.clone(),
    }
}

async fn http_once(args: &Args) -> anyhow::Result<f64> {
    let mut config = pg_webhook_worker::Config::for_database("host=unused")?;
    config.allow_private_targets = true;
    let concurrency = config.concurrency;
    let dispatcher = Arc::new(Dispatcher::new(&config)?);
    let permits = Arc::new(Semaphore::new(concurrency));
    let target = Arc::new(Target::new(
        1,
        &args.sink,
        Duration::from_secs(10),
        vec![Secret::from_bytes(&[7u8; 32]).expect("32 bytes is a valid key")],
        RetryPolicy::default(),
    ));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.ceiling_requests as i64 {
        let permit = permits.clone().acquire_owned().await?;
        let d = dispatcher.clone();
        let c = claim(&target, i);
        tasks.spawn(async move {
            let outcome = d.send(&c, 1_700_000_000).await;
            drop(permit);
            outcome.result.is_ok()
        });
        while let Some(done) = tasks.try_join_next() {
            anyhow::ensure!(done?, "the sink refused a request");
        }
    }
    while let Some(done) = tasks.join_next().await {
        anyhow::ensure!(done?, "the sink refused a request");
    }
    Ok(args.ceiling_requests as f64 / start.elapsed().as_secs_f64())
}

async fn db_once(args: &Args) -> anyhow::Result<(f64, f64)> {
    const ROWS: i64 = 100_000;
    const BATCH: i64 = 1000;
    let db = BenchDb::new(&args.dsn, "ceiling").await?;
    let c = db.client().await?;
    c.batch_execute("create table ceil_rows (id bigint primary key, n int not null default 0, payload text not null)").await?;
    let insert = c.prepare("insert into ceil_rows (id, payload) select i, repeat('x', 200) from generate_series($1::bigint, $2::bigint) i").await?;
    let update = c
        .prepare("update ceil_rows set n = n + 1 where id between $1 and $2")
        .await?;
    let start = Instant::now();
    for b in 0..ROWS / BATCH {
        c.execute(&insert, &[&(b * BATCH + 1), &((b + 1) * BATCH)])
            .await?;
    }
    let inserts = ROWS as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for b in 0..ROWS / BATCH {
        c.execute(&update, &[&(b * BATCH + 1), &((b + 1) * BATCH)])
            .await?;
    }
    let updates = ROWS as f64 / start.elapsed().as_secs_f64();
    drop(c);
    db.drop().await?;
    Ok((inserts, updates))
}

pub async fn run(args: &Args) -> anyhow::Result<Ceiling> {
    let (mut http, mut ins, mut upd, mut sql) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.runs {
        // On a runtime of its own with the worker binary's default thread
        // count, so that the ceiling is the worker's client as it runs.
        let threads = pg_webhook_worker::Config::for_database("host=unused")?.threads;
        let a = args.clone();
        let rps = tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .build()?
                .block_on(http_once(&a))
        })
        .await??;
        http.push(rps);
        let (i, u) = db_once(args).await?;
        ins.push(i);
        upd.push(u);
        sql.push(sql_once(args).await?);
    }
    let c = Ceiling {
        http_requests_per_sec: median(http),
        insert_rows_per_sec: median(ins),
        update_rows_per_sec: median(upd),
        sql_deliveries_per_sec: median(sql),
    };
    eprintln!(
        "  ceiling: HTTP {:.0} req/s, INSERT {:.0} rows/s, UPDATE {:.0} rows/s, claim+record {:.0} deliveries/s",
        c.http_requests_per_sec, c.insert_rows_per_sec, c.update_rows_per_sec, c.sql_deliveries_per_sec
    );
    Ok(c)
}
