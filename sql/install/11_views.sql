-- =============================================================================
-- pg_webhook: views for people — the delivery log, endpoint health, event
-- types (schema webhook). Granted to webhook_reader; no secret or header
-- value is reachable through them.
-- =============================================================================

-- API: Public
-- One row per attempt, and one per delivery no attempt has moved yet.
-- Built from the attempts (and those deliveries) up, not from the
-- deliveries down: both sides of the UNION ALL are single tables, which
-- PostgreSQL flattens into one set of partitions, so the questions people
-- ask first are index reads of a few rows, whatever the size of the log:
-- "order by started_at desc limit 50" merges each slot's attempts read
-- backwards by time (the deliveries without an attempt, few, come first:
-- a null sorts first in descending order), "order by delivery_id desc",
-- "where event_id = …", "where message_id = 'msg_…'" (a finished
-- delivery's; an open one is found by reading the open ones) and "where
-- endpoint_id = … and started_at > …" reach their indexes too. (Built from the deliveries with a left join to
-- the attempts, "the latest 50 attempts" sorted the whole log: 1.7 s at
-- 1,000,000 attempts.) A delivery is shown without an attempt while its
-- last_attempt_at is null: not sent yet, or finished without being sent;
-- an attempt recorded after its lease had passed on moves nothing, so its
-- delivery also shows that row until an attempt moves it.
create view webhook.delivery_log as
select
    x.delivery_id,
    d.event_id,
    -- From the delivery's own columns, inlined: the expression the
    -- finished deliveries' message_id index holds, so "where message_id =
    -- 'msg_…'" is an index read.
    webhook._webhook_id(d.event_id, d.event_namespace) as message_id,
    ev.event_type,
    ev.created_at       as event_created_at,
    -- The attempts' side's endpoint: a filter on it reaches the attempts'
    -- (endpoint_id, started_at) index.
    x.endpoint_id,
    ep.name             as endpoint_name,
    ep.url,
    d.status,
    d.attempt_count,
    d.next_attempt_at,
    d.replay_of,
    x.attempt_number,
    x.started_at,
    x.duration_ms,
    x.status_code,
    x.error,
    x.response_excerpt,
    x.worker_id
from (
    select a.delivery_id, a.endpoint_id, a.attempt_number, a.started_at, a.duration_ms, a.status_code,
           a.error, a.response_excerpt, a.worker_id
    from webhook.attempts a
    union all
    select u.id, u.endpoint_id, null::integer, null::timestamptz, null::double precision, null::integer,
           null::text, null::text, null::text
    from webhook.deliveries u
    where u.last_attempt_at is null
) x
join webhook.deliveries d on d.id = x.delivery_id and d.endpoint_id = x.endpoint_id
-- Its event, by its key, one per delivery. A subquery the planner keeps
-- whole (offset 0), not a join: joined on (slot, txid, id) it multiplies
-- the three selectivities and expects a handful of rows out of millions,
-- which hides the ordered plans (measured on the benchmark's 10,000,000
-- attempts: "the latest 50 deliveries" hashed the whole log, over 40 s,
-- instead of 4 ms). event_id is the delivery's column, so that a filter on
-- it reaches the deliveries' index.
cross join lateral (
    select ev.event_type, ev.created_at
    from webhook.events ev
    where ev.slot = d.event_slot and ev.txid = d.event_txid and ev.id = d.event_id
    offset 0
) ev
join webhook.endpoints ep on ep.id = d.endpoint_id;

comment on view webhook.delivery_log is
    'Every attempt with its delivery, event and endpoint, and once each delivery no attempt has moved yet (attempt columns null). message_id is the webhook-id header receivers saw. Read from the attempts up: "order by started_at desc limit 50" and filters on delivery_id, event_id, endpoint_id or message_id are index reads.';

-- API: Public
-- The last hour from the per-minute counters (at most 60 rows per
-- endpoint), the last 24 hours from the hourly ones (25 rows: the hour
-- 24 hours ago is counted whole), the queue from deliveries_open (open
-- deliveries only: its cost grows with a backlog, not with the log);
-- never the attempts. webhook._hist_sum adds histograms in Rust.
create view webhook.endpoint_health as
with minutes as (
    select s.endpoint_id, sum(s.attempts) as attempts, sum(s.successes) as successes,
           webhook._hist_sum(s.latency_hist) as hist
    from webhook.endpoint_stats s
    where s.minute >= now() - interval '1 hour'
    group by s.endpoint_id
), hours as (
    select s.endpoint_id, sum(s.attempts) as attempts, sum(s.successes) as successes,
           webhook._hist_sum(s.latency_hist) as hist
    from webhook.endpoint_stats_hourly s
    where s.hour >= date_trunc('hour', now() - interval '24 hours')
    group by s.endpoint_id
), queue as (
    select d.endpoint_id,
           -- (An ordered endpoint's deliveries waiting behind their key
           -- count as pending: 'waiting' is not named, see the type.)
           count(*) filter (where d.status <> 'paused') as pending,
           count(*) filter (where d.status = 'paused') as waiting,
           min(d.created_at) as oldest_created_at
    from webhook.deliveries_open d
    group by d.endpoint_id
)
select
    e.id as endpoint_id,
    e.name,
    e.url,
    case when e.deleted_at is not null then 'removed'
         when e.disabled_at is not null then 'disabled'
         when e.paused_at is not null then 'paused'
         else 'active' end as state,
    e.disabled_reason,
    coalesce(m.attempts, 0) as attempts_1h,
    round(m.successes::numeric / nullif(m.attempts, 0), 4) as success_rate_1h,
    webhook._hist_percentile(m.hist, 0.5) as p50_ms_1h,
    webhook._hist_percentile(m.hist, 0.95) as p95_ms_1h,
    coalesce(h.attempts, 0) as attempts_24h,
    round(h.successes::numeric / nullif(h.attempts, 0), 4) as success_rate_24h,
    webhook._hist_percentile(h.hist, 0.5) as p50_ms_24h,
    webhook._hist_percentile(h.hist, 0.95) as p95_ms_24h,
    a.last_success_at,
    a.last_failure_at,
    a.last_failure_status,
    a.last_failure_error,
    coalesce(a.consecutive_failures, 0) as consecutive_failures,
    a.failing_since,
    coalesce(q.pending, 0) as pending,
    coalesce(q.waiting, 0) as waiting,
    now() - q.oldest_created_at as oldest_open_age
from webhook.endpoints e
left join minutes m on m.endpoint_id = e.id
left join hours h on h.endpoint_id = e.id
left join webhook.endpoint_activity a on a.endpoint_id = e.id
left join queue q on q.endpoint_id = e.id;

comment on view webhook.endpoint_health is
    'Per endpoint: state (active, paused, disabled and why, removed), attempts, success rate and p50/p95 latency over the last hour and 24 hours (from the per-minute and hourly counters; the 24 hours start at a whole hour, so they span 24 to 25 hours; percentiles are bucket bounds, exact to a factor of two), last success and failure, the current run of failures, open deliveries (pending, waiting while held) and the age of the oldest.';
comment on column webhook.endpoint_health.pending is
    'Deliveries to send: pending, and an ordered endpoint''s waiting behind an earlier event of their key.';
comment on column webhook.endpoint_health.waiting is 'Deliveries held (paused) while the endpoint is paused or disabled.';
