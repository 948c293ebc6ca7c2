//! What `select * from webhook.endpoint_health` costs on a big log: 100
//! endpoints, two hours of per-minute and 30 days of hourly counters for
//! each (what the maintenance keeps), 2,000,000 attempts and deliveries in
//! the log and 10,000 open deliveries. The view
//! reads the counters and the open deliveries, never the attempts; this
//! shows it, with the plan's shape and the median time of 5 executions.

use crate::db::BenchDb;
use crate::{median, Args};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub endpoints: i64,
    pub stats_rows: i64,
    pub attempts: i64,
    pub open_deliveries: i64,
    pub execution_ms: f64,
    pub shared_buffers: i64,
    /// the top of the plan (node types)
    pub plan: String,
}

pub async fn run(args: &Args) -> anyhow::Result<Health> {
    let db = BenchDb::new(&args.dsn, "health").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, 100).await?;
    eprintln!("  health: filling 30 days of counters, 2,000,000 attempts and deliveries, 10,000 open deliveries");
    c.batch_execute(
        "insert into webhook.endpoint_stats (endpoint_id, minute, attempts, successes, latency_hist)
         select e.id, date_trunc('minute', now()) - m * interval '1 minute', 100, 97,
                array[0,0,10,40,30,10,5,3,1,1,0,0,0,0,0,0,0,0,0,0]
         from webhook.endpoints e, generate_series(0, 119) m;
         insert into webhook.endpoint_stats_hourly (endpoint_id, hour, attempts, successes, latency_hist)
         select e.id, date_trunc('hour', now()) - h * interval '1 hour', 6000, 5820,
                array[0,0,600,2400,1800,600,300,180,60,60,0,0,0,0,0,0,0,0,0,0]
         from webhook.endpoints e, generate_series(0, 719) h;
         insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes)
         select i, 0, 1, 'row.created', '{}', 2 from generate_series(1, 20000) i;
         insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status, attempt_count, finalized_at)
         select i, 0, 1 + i % 20000, 1, 0, 1 + i % 100, 'succeeded', 1, now() from generate_series(1, 2000000) i;
         insert into webhook.attempts (slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms, status_code, worker_id)
         select 0, i, 1 + i % 100, 1, now() - (i % 86400) * interval '1 second', 5, 200, 'bench' from generate_series(1, 2000000) i;
         insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id)
         select 1 + i % 20000, 1, 0, 1 + i % 100 from generate_series(1, 10000) i;",
    )
    .await?;
    c.batch_execute("vacuum analyze webhook.endpoint_stats, webhook.endpoint_stats_hourly, webhook.deliveries, webhook.attempts, webhook.events")
        .await?;
    let count = |sql: &'static str| {
        let c = &c;
        async move { anyhow::Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0)) }
    };
    let (endpoints, stats_rows, attempts, open_deliveries) = (
        count("select count(*) from webhook.endpoints").await?,
        count("select (select count(*) from webhook.endpoint_stats) + (select count(*) from webhook.endpoint_stats_hourly)").await?,
        count("select count(*) from webhook.attempts").await?,
        count("select count(*) from webhook.deliveries_open").await?,
    );
    let mut times = Vec::new();
    let mut last: Option<serde_json::Value> = None;
    for _ in 0..5 {
        let plan: serde_json::Value = c
            .query_one(
                "explain (analyze, buffers, format json) select * from webhook.endpoint_health",
                &[],
            )
            .await?
            .get(0);
        times.push(plan[0]["Execution Time"].as_f64().unwrap_or(f64::NAN));
        last = Some(plan);
    }
    let plan = last.unwrap_or_default();
    let top = &plan[0]["Plan"];
    let mut nodes = vec![top["Node Type"].as_str().unwrap_or("?").to_owned()];
    if let Some(children) = top["Plans"].as_array() {
        nodes.extend(children.iter().map(|n| {
            let t = n["Node Type"].as_str().unwrap_or("?");
            match n["Relation Name"].as_str().or(n["Index Name"].as_str()) {
                Some(rel) => format!("{t} on {rel}"),
                None => t.to_owned(),
            }
        }));
    }
    let health = Health {
        endpoints,
        stats_rows,
        attempts,
        open_deliveries,
        execution_ms: median(times),
        shared_buffers: top["Shared Hit Blocks"].as_i64().unwrap_or(-1)
            + top["Shared Read Blocks"].as_i64().unwrap_or(0),
        plan: nodes.join(" › "),
    };
    eprintln!(
        "  health: {} endpoints, {} counter rows, {} attempts: {:.1} ms ({} buffers)",
        health.endpoints,
        health.stats_rows,
        health.attempts,
        health.execution_ms,
        health.shared_buffers
    );
    drop(c);
    db.drop().await?;
    Ok(health)
}
