
-- =============================================================================
-- 0.1.0 → 0.2.0, step 3: the data moves into the 0.2.0 tables.
-- =============================================================================

-- 0.2.0: endpoints and their secrets keep their ids. 0.1.0 never paused or
-- disabled an endpoint; a removed one was inactive.
insert into webhook.endpoints (id, name, url, event_types, header_names, retry_policy, timeout, is_active,
                               paused_at, disabled_at, disabled_reason, deleted_at, created_at, updated_at)
select e.id, e.name, e.url, e.event_types, e.header_names, e.retry_policy, e.timeout, e.deleted_at is null,
       null, null, null, e.deleted_at, e.created_at, e.updated_at
from webhook._v01_endpoints e;
select setval('webhook.endpoints_id_seq', last_value, is_called) from webhook._v01_endpoints_id_seq;
insert into webhook.endpoint_secrets (endpoint_id, secret, headers, previous_secret, previous_expires_at)
select s.endpoint_id, s.secret, s.headers, s.previous_secret, s.previous_expires_at
from webhook._v01_endpoint_secrets s;

-- 0.2.0: a subscription period per endpoint. Every 0.1.0 event already has
-- its deliveries; a live endpoint's period is open from the beginning, a
-- removed one's closes with this update.
insert into webhook.subscriptions (endpoint_id, event_types, from_txid, from_xmin, from_xmax, from_xip,
                                   until_txid, created_at, ended_at)
select e.id, e.event_types, 0, 0, 0, '{}',
       case when e.deleted_at is not null then webhook._vxid() end, e.created_at, e.deleted_at
from webhook._v01_endpoints e;

-- 0.2.0: 0.1.0 events go into slot 0 with transaction id 0, which the
-- fan-out's starting point below counts as done, and which keeps the
-- webhook-id they were first sent with (their number; see webhook._message_id).
insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, source_table, idempotency_key,
                            created_at)
select e.id, 0, 0, e.event_type, e.payload, octet_length(e.payload::text), e.source_table, e.idempotency_key,
       e.created_at
from webhook._v01_events e;
select setval('webhook.events_id_seq', last_value, is_called) from webhook._v01_events_id_seq;
insert into webhook.fanout_state (prev_xmin, prev_xmax, prev_xip) values (1, 1, '{}');
insert into webhook.idempotency_keys (idempotency_key, event_id, created_at)
select k.idempotency_key, k.event_id, k.created_at from webhook._v01_idempotency_keys k;
insert into webhook.published_types (event_type, first_published_at)
select e.event_type, min(e.created_at) from webhook._v01_events e where e.source_table is null group by e.event_type;

-- 0.2.0: open deliveries join the worker's queue, finished ones slot 0.
insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status, attempt_count,
                                next_attempt_at, lease_token, lease_until, leased_by, last_attempt_at,
                                last_status_code, last_error, created_at, finalized_at)
select d.id, case when d.status <= 'paused' then null else 0 end, d.event_id, 0, 0, d.endpoint_id,
       d.status::text::webhook.delivery_status, d.attempt_count, d.next_attempt_at,
       case when d.status <= 'paused' then d.lease_token end, case when d.status <= 'paused' then d.lease_until end,
       case when d.status <= 'paused' then d.leased_by end, d.last_attempt_at, d.last_status_code, d.last_error,
       d.created_at, d.finalized_at
from webhook._v01_deliveries d;
select setval('webhook.deliveries_id_seq', last_value, is_called) from webhook._v01_deliveries_id_seq;
insert into webhook.attempts (id, slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                              status_code, response_excerpt, error, worker_id)
select a.id, 0, a.delivery_id, d.endpoint_id, a.attempt_number, a.started_at, a.duration_ms, a.status_code,
       a.response_excerpt, a.error, a.worker_id
from webhook._v01_attempts a
join webhook._v01_deliveries d on d.id = a.delivery_id;
-- 0.2.0: the hourly counters start with the 0.1.0 attempts (within the
-- retention), so that a daily success rate goes back past the upgrade.
-- A 2xx answer is a success, as the 0.1.0 worker decided.
insert into webhook.endpoint_stats_hourly (endpoint_id, hour, attempts, successes, latency_hist)
select b.endpoint_id, b.hour, sum(b.n)::integer, sum(b.ok)::integer,
       webhook._hist_sum(webhook._hist_one(b.bucket, b.n::integer))::integer[]
from (select d.endpoint_id, date_trunc('hour', a.started_at) as hour,
             webhook._latency_bucket(a.duration_ms) as bucket, count(*) as n,
             count(*) filter (where a.status_code between 200 and 299) as ok
      from webhook._v01_attempts a
      join webhook._v01_deliveries d on d.id = a.delivery_id
      where a.started_at >= now() - webhook._retention_s() * interval '1 second'
      group by 1, 2, 3) b
group by b.endpoint_id, b.hour;
select setval('webhook.attempts_id_seq', last_value, is_called) from webhook._v01_attempts_id_seq;

-- 0.2.0: the 0.1.0 tables and type go.
drop table webhook._v01_attempts;
drop table webhook._v01_deliveries;
drop table webhook._v01_idempotency_keys;
drop table webhook._v01_events;
drop table webhook._v01_endpoint_secrets;
drop table webhook._v01_endpoints;
drop type webhook._v01_delivery_status;
