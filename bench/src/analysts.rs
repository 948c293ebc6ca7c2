//! The questions analysts ask of a month of log, timed on at least
//! 10,000,000 attempts: 4,800,000 events over 30 days, each delivered to 2
//! of 20 endpoints (9,600,000 deliveries), one in 19 of them after a
//! failed first attempt (10,105,263 attempts), laid out in the slots a 30-day
//! retention gives (one generation per 30/7 days), the hourly counters
//! built from those attempts as the recorder would have. Every query is
//! the one the README shows; each time is the median of 5 runs measured
//! by the client (planning, execution and transfer), after one warm-up.

use crate::db::BenchDb;
use crate::{median, Args};
use serde::Serialize;
use std::time::Instant;
use tokio_postgres::types::ToSql;

const EVENTS: i64 = 4_800_000;
const ENDPOINTS: usize = 20;

/// One question and what answering it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Question {
    pub question: String,
    pub sql: String,
    pub rows: usize,
    /// median wall time, ms
    pub ms: f64,
    /// the scans of its plan
    pub plan: String,
}

/// The whole scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Analysts {
    pub events: i64,
    pub deliveries: i64,
    pub attempts: i64,
    pub hourly_rows: i64,
    pub fill_secs: f64,
    pub questions: Vec<Question>,
}

/// The distinct scans of a JSON plan, "Index Scan using x" style.
pub fn plan_scans(plan: &serde_json::Value) -> String {
    fn walk(node: &serde_json::Value, out: &mut Vec<String>) {
        let kind = node["Node Type"].as_str().unwrap_or("?");
        if kind.contains("Scan") {
            let target = node["Index Name"]
                .as_str()
                .or(node["Relation Name"].as_str())
                .unwrap_or("");
            let s = format!("{kind} {target}").trim().to_owned();
            if !out.contains(&s) {
                out.push(s);
            }
        }
        if let Some(children) = node["Plans"].as_array() {
            for c in children {
                walk(c, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&plan[0]["Plan"], &mut out);
    out.join(", ")
}

pub async fn run(args: &Args) -> anyhow::Result<Analysts> {
    let db = BenchDb::new(&args.dsn, "analysts").await?;
    let c = db.client().await?;
    db.subscribe(&c, &args.sink, ENDPOINTS).await?;
    eprintln!("  analysts: filling 30 days of log (4.8M events, 9.6M deliveries, 10.1M attempts)");
    let started = Instant::now();
    // Incarnation of this database and a session's webhook-id namespace, so
    // that message ids are the real kind (0.3.0's).
    let row = c
        .query_one(
            "select (webhook._vxid() >> 48) << 48, webhook._id_namespace()",
            &[],
        )
        .await?;
    let (base, namespace): (i64, i64) = (row.get(0), row.get(1));
    let fill = format!(
        "set synchronous_commit = off;
         set maintenance_work_mem = '256MB';
         -- Seven generations of 30/7 days: slot g holds day 30/7*g to 30/7*(g+1) ago...
         update webhook.generations set started_at = now() - interval '30 days' where gen = 0;
         insert into webhook.generations (gen, started_at)
         select g, now() - interval '30 days' + g * interval '30 days' / 7 from generate_series(1, 7) g;
         insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, created_at, id_namespace)
         select i, ((i - 1) * 7 / {EVENTS})::smallint, {base} + 1000 + i / 10, 'order.created',
                json_build_object('order_id', i, 'total', i % 997),
                octet_length(json_build_object('order_id', i, 'total', i % 997)::text),
                now() - interval '30 days' + i * (interval '30 days' / {EVENTS}), {namespace}
         from generate_series(1, {EVENTS}) i;
         insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status,
                                         attempt_count, next_attempt_at, last_attempt_at, last_status_code,
                                         created_at, finalized_at, event_namespace)
         select 2 * e.id - k, e.slot, e.id, e.txid, e.slot, 1 + (e.id + 7 * k) % {ENDPOINTS}, 'succeeded',
                case when (2 * e.id - k) % 19 = 0 then 2 else 1 end, e.created_at,
                e.created_at + interval '5 ms', 200, e.created_at, e.created_at + interval '6 ms', e.id_namespace
         from webhook.events e cross join (values (0), (1)) kk(k)
         order by e.id, k;
         insert into webhook.attempts (slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                                       status_code, error, worker_id)
         select d.slot, d.id, d.endpoint_id, a.n, d.created_at + (a.n - 1) * interval '5 s' + interval '1 ms',
                3 + d.id % 50, case when a.n < d.attempt_count then 500 else 200 end, null, 'bench'
         from webhook.deliveries d cross join lateral generate_series(1, d.attempt_count) a(n)
         order by d.id, a.n;
         insert into webhook.endpoint_stats_hourly (endpoint_id, hour, attempts, successes, latency_hist)
         select b.endpoint_id, b.hour, sum(b.n)::integer, sum(b.ok)::integer,
                webhook._hist_sum(webhook._hist_one(b.bucket, b.n::integer))::integer[]
         from (select a.endpoint_id, date_trunc('hour', a.started_at) as hour,
                      webhook._latency_bucket(a.duration_ms) as bucket, count(*) as n,
                      count(*) filter (where a.status_code between 200 and 299) as ok
               from webhook.attempts a group by 1, 2, 3) b
         group by 1, 2;
         select setval('webhook.events_id_seq', {EVENTS});
         select setval('webhook.deliveries_id_seq', 2 * {EVENTS});"
    );
    c.batch_execute(&fill).await?;
    c.batch_execute("vacuum (analyze) webhook.events, webhook.deliveries, webhook.attempts, webhook.endpoint_stats_hourly")
        .await?;
    let fill_secs = started.elapsed().as_secs_f64();
    let count = |sql: &'static str| {
        let c = &c;
        async move { anyhow::Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0)) }
    };
    let (events, deliveries, attempts, hourly_rows) = (
        count("select count(*) from webhook.events").await?,
        count("select count(*) from webhook.deliveries").await?,
        count("select count(*) from webhook.attempts").await?,
        count("select count(*) from webhook.endpoint_stats_hourly").await?,
    );
    eprintln!(
        "  analysts: {events} events, {deliveries} deliveries, {attempts} attempts, {hourly_rows} hourly rows in {fill_secs:.0} s"
    );

    // A recent event, and the webhook-id its receivers saw.
    let event_id = EVENTS - 1000;
    let message_id: String = c
        .query_one(
            "select webhook._message_id(e.txid, e.id, e.id_namespace) from webhook.events e where e.id = $1",
            &[&event_id],
        )
        .await?
        .get(0);
    let endpoint_id: i64 = 7;
    let questions: Vec<(&str, &str, Vec<&(dyn ToSql + Sync)>)> = vec![
        (
            "the latest 50 attempts, as the README's quick start asks",
            "select * from webhook.delivery_log order by started_at desc limit 50",
            vec![],
        ),
        (
            "the latest 50 rows of delivery_log",
            "select * from webhook.delivery_log order by delivery_id desc limit 50",
            vec![],
        ),
        (
            "daily success rate per endpoint over 7 days",
            "select endpoint_id, date_trunc('day', hour) as day,
                    round(sum(successes)::numeric / nullif(sum(attempts), 0), 4) as success_rate
             from webhook.endpoint_stats_hourly
             where hour >= now() - interval '7 days'
             group by 1, 2 order by 1, 2",
            vec![],
        ),
        (
            "one endpoint's failed attempts in the last 24 h",
            "select * from webhook.delivery_log
             where endpoint_id = $1 and started_at >= now() - interval '24 hours'
               and (status_code is null or status_code not between 200 and 299)
             order by started_at desc",
            vec![&endpoint_id],
        ),
        (
            "one event's deliveries",
            "select * from webhook.delivery_log where event_id = $1",
            vec![&event_id],
        ),
        (
            "everything about one webhook-id",
            "select * from webhook.delivery_log where message_id = $1",
            vec![&message_id],
        ),
    ];
    let mut out = Vec::new();
    for (question, sql, params) in questions {
        let mut times = Vec::new();
        let mut rows = 0;
        for run in 0..6 {
            let t = Instant::now();
            rows = c.query(sql, &params).await?.len();
            if run > 0 {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
        }
        let explain = format!("explain (analyze, format json) {sql}");
        let plan: serde_json::Value = c.query_one(explain.as_str(), &params).await?.get(0);
        let q = Question {
            question: question.to_owned(),
            sql: sql.split_whitespace().collect::<Vec<_>>().join(" "),
            rows,
            ms: median(times),
            plan: plan_scans(&plan),
        };
        eprintln!(
            "  analysts: {}: {} rows, {:.1} ms ({})",
            q.question, q.rows, q.ms, q.plan
        );
        out.push(q);
    }
    drop(c);
    db.drop().await?;
    Ok(Analysts {
        events,
        deliveries,
        attempts,
        hourly_rows,
        fill_secs,
        questions: out,
    })
}
