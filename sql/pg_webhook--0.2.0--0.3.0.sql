-- =============================================================================
-- pg_webhook 0.2.0 → 0.3.0
--
-- Written by hand, one hunk per change, each opening with the reason. The
-- upgrade test (tests/e2e/upgrade.rs) runs 0.1.0 → 0.2.0 → 0.3.0 and compares
-- the upgraded catalog with a fresh 0.3.0 install, object by object.
-- Released scripts (this one, once 0.3.0 is out) are never edited again:
-- the test checks their hashes.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- 0.3.0: a webhook-id never repeats. Every event stores the namespace of
-- the session that wrote it, drawn at random (webhook._id_namespace()), so
-- that two copies of a database that diverged (a base backup, PITR, a
-- promoted standby), whose event ids rewind together, still give their new
-- events different webhook-ids. Events written before keep theirs. The rule
-- is written once (webhook._event_namespace, webhook._webhook_id), inlined by
-- the fan-out, the claim and webhook.delivery_log.
-- -----------------------------------------------------------------------------
alter table webhook.events add column id_namespace bigint;
comment on column webhook.events.id_namespace is
    'The webhook-id namespace of the session that wrote it (random per session): its webhook-id is msg_ + this + its id, in 16 hex digits each, so ids never repeat, even between two copies of a database that diverged (a base backup, PITR, a promoted standby). Null for events written before 0.3.0 (see webhook._message_id).';
comment on table webhook.events is
    'One row per event, written in the producer''s transaction (and nothing else). The request body is {"type": event_type, "timestamp": created_at, "data": payload}; webhook-id is webhook._message_id(txid, id, id_namespace).';

CREATE  FUNCTION webhook."_id_namespace"() RETURNS bigint
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'id_namespace_wrapper';
revoke all on function webhook._id_namespace() from public;

drop function webhook._message_id(bigint, bigint);
create function webhook._incarnation_of(
    p_txid bigint -- a virtual transaction id
) returns integer
language sql immutable parallel safe
return (p_txid operator(pg_catalog.>>) 48)::integer;

create function webhook._event_namespace(
    p_txid bigint,                  -- webhook.events.txid
    p_namespace bigint,             -- webhook.events.id_namespace
    p_incarnation_namespace text    -- webhook.incarnations.namespace of the event's incarnation
) returns bigint
language sql immutable parallel safe
return case when p_namespace is not null then p_namespace
            when webhook._incarnation_of(p_txid) operator(pg_catalog.>) 0
                 then coalesce(('x' operator(pg_catalog.||) p_incarnation_namespace)::bit(64)::bigint, 0)
       end;

create function webhook._namespace_hex(
    p_namespace bigint -- see webhook._event_namespace
) returns text
language sql immutable parallel safe
return pg_catalog.lpad(pg_catalog.to_hex(p_namespace), 16, '0');

create function webhook._webhook_id(
    p_id bigint,        -- webhook.events.id
    p_namespace bigint  -- its namespace (webhook.deliveries.event_namespace)
) returns text
language sql immutable parallel safe
return coalesce('msg_' operator(pg_catalog.||) webhook._namespace_hex(p_namespace)
                    operator(pg_catalog.||) pg_catalog.lpad(pg_catalog.to_hex(p_id), 16, '0'),
                p_id::text);

create function webhook._message_id(
    p_txid bigint,      -- webhook.events.txid
    p_id bigint,        -- webhook.events.id
    p_namespace bigint  -- webhook.events.id_namespace
) returns text
language sql stable parallel safe
return webhook._webhook_id(p_id, webhook._event_namespace(p_txid, p_namespace,
    (select i.namespace from webhook.incarnations i
     where i.n operator(pg_catalog.=) webhook._incarnation_of(p_txid))));
revoke all on function webhook._message_id(bigint, bigint, bigint), webhook._webhook_id(bigint, bigint),
    webhook._namespace_hex(bigint), webhook._event_namespace(bigint, bigint, text), webhook._incarnation_of(bigint)
    from public;
grant execute on function webhook._message_id(bigint, bigint, bigint), webhook._webhook_id(bigint, bigint),
    webhook._namespace_hex(bigint), webhook._event_namespace(bigint, bigint, text), webhook._incarnation_of(bigint)
    to webhook_reader, webhook_worker;

-- Every delivery keeps its event's namespace, so that delivery_log's
-- message_id is a function of the delivery's own columns, which the
-- finished deliveries' hash index holds (created with the other slot
-- indexes below): "where message_id = 'msg_…'" read the whole log before
-- (4.3 s at 1,000,000 attempts). Every event before this upgrade has no
-- id_namespace: its deliveries' namespace is their incarnation's, found
-- from event_txid alone. Nearly always one incarnation holds them all: the
-- column is added with that one's namespace as a constant default, which
-- PostgreSQL records once instead of rewriting every row (an UPDATE of
-- each row took 26 s per 2,000,000 deliveries), and only the rows of other
-- incarnations (a restored dump's older ones; pg_webhook 0.1's, which have
-- none) are updated.
do $$
declare
    v_n integer;
begin
    select webhook._incarnation_of(d.event_txid) into v_n
    from webhook.deliveries d
    group by 1 order by count(*) desc limit 1;
    execute format('alter table webhook.deliveries add column event_namespace bigint default %s',
                   coalesce(webhook._event_namespace(coalesce(v_n, 0)::bigint << 48, null,
                            (select i.namespace from webhook.incarnations i where i.n = v_n))::text, 'null'));
    alter table webhook.deliveries alter column event_namespace drop default;
    update webhook.deliveries d
    set event_namespace = webhook._event_namespace(d.event_txid, null,
            (select i.namespace from webhook.incarnations i where i.n = webhook._incarnation_of(d.event_txid)))
    where webhook._incarnation_of(d.event_txid) <> coalesce(v_n, 0);
end
$$;
comment on column webhook.deliveries.event_namespace is
    'Its event''s webhook-id namespace (webhook._event_namespace), kept with the delivery so that message_id (webhook._webhook_id(event_id, event_namespace)) is indexed; null for an event of pg_webhook 0.1.';
-- Those that make or move deliveries now carry it.
create or replace function webhook_unsubscribe(
    endpoint_id bigint -- the endpoint to remove
) returns boolean
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_deleted_at timestamptz;
begin
    select e.deleted_at into v_deleted_at from webhook.endpoints e where e.id = v_id for update;
    if not found then
        perform webhook._live_endpoint(v_id); -- raises 42704
    end if;
    if v_deleted_at is not null then
        return false;
    end if;
    update webhook.endpoints e
    set is_active = false, deleted_at = now(), updated_at = now()
    where e.id = v_id;
    perform webhook._close_subscription(v_id);
    -- What it was holding (paused or disabled) can never be sent now: it is
    -- cancelled, and stays visible as such. What is pending still goes out:
    -- those events were committed while it was subscribed.
    perform webhook._hold_fanout();
    with held as (
        delete from webhook.deliveries_open d
        where d.endpoint_id = v_id and d.status = 'paused'
        returning d.*
    )
    insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status, attempt_count,
                                    next_attempt_at, last_attempt_at, last_status_code, last_error, replay_of,
                                    created_at, finalized_at, event_namespace)
    select h.id, h.event_slot, h.event_id, h.event_txid, h.event_slot, h.endpoint_id, 'cancelled', h.attempt_count,
           h.next_attempt_at, h.last_attempt_at, h.last_status_code, h.last_error, h.replay_of, h.created_at, now(),
           h.event_namespace
    from held h;
    -- The secret stays: events committed before now may not be fanned out
    -- yet. The worker's maintenance drops it once nothing is left to send.
    perform webhook._cluster_publish(v_id, false);
    return true;
end
$$;
create or replace function webhook._deliver_again(
    p_event webhook.events,   -- the event
    p_endpoint_id bigint,     -- to this endpoint
    p_replay_of bigint        -- the delivery it repeats, if any
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint;
begin
    insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status, replay_of,
                                         event_namespace)
    select p_event.id, p_event.txid, p_event.slot, e.id,
           case when e.paused_at is null and e.disabled_at is null then 'pending' else 'paused' end::webhook.delivery_status,
           p_replay_of,
           webhook._event_namespace(p_event.txid, p_event.id_namespace,
                                    (select i.namespace from webhook.incarnations i
                                     where i.n = webhook._incarnation_of(p_event.txid)))
    from webhook.endpoints e where e.id = p_endpoint_id
    returning id into v_id;
    perform webhook._wake();
    return v_id;
end
$$;
create or replace function webhook._invariant_violations()
returns table (object_id bigint, invariant text)
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select d.id, 'a delivery has its event in its event''s slot'
    from webhook.deliveries d
    where not exists (select from webhook.events e
                      where e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id)
    union all
    select d.id, 'a delivery carries its event''s webhook-id namespace'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    left join webhook.incarnations i on i.n = webhook._incarnation_of(e.txid)
    where webhook._event_namespace(e.txid, e.id_namespace, i.namespace) is distinct from d.event_namespace
    union all
    select d.id, 'a paused or disabled endpoint has no pending delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'pending' and (e.paused_at is not null or e.disabled_at is not null)
    union all
    select d.id, 'a sending endpoint has no paused delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.paused_at is null and e.disabled_at is null
    union all
    select d.id, 'a removed endpoint holds nothing'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.deleted_at is not null
    union all
    select s.id, 'a committed subscription period has its snapshots'
    from webhook.subscriptions s
    where s.from_xmin is null or (s.until_txid is not null and s.until_xmin is null)
    union all
    select e.id, 'a live endpoint has one open subscription period and a secret'
    from webhook.endpoints e
    where e.deleted_at is null
      and ((select count(*) from webhook.subscriptions s where s.endpoint_id = e.id and s.until_txid is null) <> 1
           or not exists (select from webhook.endpoint_secrets k where k.endpoint_id = e.id))
    union all
    select g.gen, 'only the current generation''s slot is written by new events'
    from webhook.generations g
    where g.purged_at is not null
      and exists (select from webhook.events e where e.slot = g.gen % webhook._slots())
      and not exists (select from webhook.generations n where n.gen > g.gen and n.gen % webhook._slots() = g.gen % webhook._slots())
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: an attempt says whether it moved its delivery (lease_held): one
-- recorded without the delivery's lease (lost, or never held) is marked,
-- and one for a delivery that does not exist is not logged.
-- -----------------------------------------------------------------------------
alter table webhook.attempts add column lease_held boolean;
comment on column webhook.attempts.lease_held is
    'True when the worker still held the delivery''s lease as it recorded the attempt (its outcome moved the delivery); false when it did not (the lease had expired and passed on, or was never its own): the attempt changed nothing. Null for attempts recorded before 0.3.0.';
create or replace function webhook._record_attempts(
    p_worker_id text,
    p_delivery_ids bigint[],
    p_lease_tokens bigint[],
    p_endpoint_ids bigint[],    -- each delivery's endpoint (as claimed)
    p_attempt_numbers integer[],
    p_started_at timestamptz[],
    p_duration_ms double precision[],
    p_status_codes integer[],
    p_response_excerpts text[],
    p_errors text[],
    p_outcomes text[],          -- 'succeeded' | 'retry' | 'failed'
    p_retry_delays_ms bigint[]  -- for 'retry': how long from now
) returns integer
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
-- Every row these statements touch is found by key; see "Plans" above.
set enable_seqscan = off
set jit = off
as $$
declare
    v_moved integer;
    v_touched bigint[];
    v_gone bigint[];
    v_id bigint;
    v_reason text;
    v_slot smallint := webhook._current_slot();
    v_n integer := coalesce(cardinality(p_delivery_ids), 0);
    v_failing_after integer := webhook._failing_after();
    v_failing bigint[];
    v_recovered jsonb[];
    v_exhausted bigint[];
begin
    if v_n <> coalesce(cardinality(p_lease_tokens), 0) or v_n <> coalesce(cardinality(p_endpoint_ids), 0)
       or v_n <> coalesce(cardinality(p_attempt_numbers), 0) or v_n <> coalesce(cardinality(p_started_at), 0)
       or v_n <> coalesce(cardinality(p_duration_ms), 0) or v_n <> coalesce(cardinality(p_status_codes), 0)
       or v_n <> coalesce(cardinality(p_response_excerpts), 0) or v_n <> coalesce(cardinality(p_errors), 0)
       or v_n <> coalesce(cardinality(p_outcomes), 0) or v_n <> coalesce(cardinality(p_retry_delays_ms), 0) then
        raise exception 'webhook._record_attempts: the arrays must all have the same length'
            using errcode = '22023';
    end if;
    if exists (select from unnest(p_outcomes) o where o is null or o not in ('succeeded', 'retry', 'failed'))
       or exists (select from unnest(p_outcomes, p_retry_delays_ms) r(o, d) where o = 'retry' and (d is null or d < 0))
       or exists (select from unnest(p_delivery_ids, p_lease_tokens, p_endpoint_ids, p_attempt_numbers, p_started_at,
                                     p_duration_ms) r(i, t, e, n, s, ms)
                  where i is null or t is null or e is null or n is null or s is null or ms is null) then
        raise exception 'webhook._record_attempts: an outcome is ''succeeded'', ''retry'' (with a delay of 0 ms or more) or ''failed'', and ids, tokens, endpoints, attempt numbers, start times and durations are never null'
            using errcode = '22023';
    end if;
    with r as (
        select *
        from unnest(p_delivery_ids, p_lease_tokens, p_endpoint_ids, p_attempt_numbers, p_started_at, p_duration_ms,
                    p_status_codes, p_response_excerpts, p_errors, p_outcomes, p_retry_delays_ms)
             as r(delivery_id, lease_token, endpoint_id, attempt_number, started_at, duration_ms,
                  status_code, response_excerpt, error, outcome, retry_delay_ms)
    ), retried as (
        update webhook.deliveries_open d
        set next_attempt_at = now() + r.retry_delay_ms * interval '1 millisecond',
            lease_token = null,
            lease_until = null,
            leased_by = null,
            last_attempt_at = r.started_at,
            last_status_code = r.status_code,
            last_error = r.error
        from r
        -- "= any (array)": see "Plans" above.
        where r.outcome = 'retry' and d.id = any (p_delivery_ids)
          and d.id = r.delivery_id and d.lease_token = r.lease_token
        returning d.id, d.event_slot, d.endpoint_id
    ), finished as (
        delete from webhook.deliveries_open d
        using r
        where r.outcome <> 'retry' and d.id = any (p_delivery_ids)
          and d.id = r.delivery_id and d.lease_token = r.lease_token
        returning d.id, d.event_id, d.event_txid, d.event_slot, d.endpoint_id, d.attempt_count,
                  d.next_attempt_at, d.replay_of, d.created_at, d.event_namespace,
                  r.outcome, r.started_at, r.status_code, r.error
    ), archived as (
        insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status,
                                        attempt_count, next_attempt_at, last_attempt_at, last_status_code,
                                        last_error, replay_of, created_at, finalized_at, event_namespace)
        select f.id, f.event_slot, f.event_id, f.event_txid, f.event_slot, f.endpoint_id,
               f.outcome::webhook.delivery_status, f.attempt_count, f.next_attempt_at, f.started_at,
               f.status_code, f.error, f.replay_of, f.created_at, now(), f.event_namespace
        from finished f
        returning 1
    ), held as (
        select rt.id, rt.event_slot, rt.endpoint_id from retried rt
        union all
        select f.id, f.event_slot, f.endpoint_id from finished f
    ), logged as (
        -- Every attempt is logged, and says whether it moved its delivery
        -- (lease_held). One whose lease was lost (it expired, and another
        -- worker claimed the delivery meanwhile) is logged in the current
        -- slot, marked: the caller may be that worker, or a holder of the
        -- worker role recording attempts it never made, and the log says
        -- which attempts changed nothing. An attempt of a delivery that
        -- does not exist, or for another endpoint, is not logged at all.
        insert into webhook.attempts (slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                                      status_code, response_excerpt, error, worker_id, lease_held)
        select coalesce(h.event_slot, v_slot), r.delivery_id, r.endpoint_id, r.attempt_number, r.started_at,
               r.duration_ms, r.status_code, r.response_excerpt, r.error, p_worker_id, h.id is not null
        from r left join held h on h.id = r.delivery_id
        where h.id is not null
           or exists (select from webhook.deliveries d where d.id = r.delivery_id and d.endpoint_id = r.endpoint_id)
    ), outcomes as (
        select h.endpoint_id, r.started_at, r.duration_ms, r.outcome = 'succeeded' as ok, r.status_code, r.error
        from r join held h on h.id = r.delivery_id
    ), buckets as (
        select o.endpoint_id, date_trunc('minute', o.started_at) as minute,
               webhook._latency_bucket(o.duration_ms) as bucket,
               count(*)::integer as n, (count(*) filter (where o.ok))::integer as ok
        from outcomes o
        group by 1, 2, 3
    ), minutes as (
        -- Counters per endpoint and minute, each histogram built whole.
        select k.endpoint_id, k.minute, sum(k.n)::integer as n, sum(k.ok)::integer as ok,
               webhook._hist_sum(webhook._hist_one(k.bucket, k.n))::integer[] as hist
        from buckets k
        group by k.endpoint_id, k.minute
    ), stats as (
        insert into webhook.endpoint_stats as st (endpoint_id, minute, attempts, successes, latency_hist)
        select m.endpoint_id, m.minute, m.n, m.ok, m.hist
        from minutes m
        on conflict (endpoint_id, minute) do update
        set attempts = st.attempts + excluded.attempts,
            successes = st.successes + excluded.successes,
            latency_hist = webhook._hist_add(st.latency_hist, excluded.latency_hist)
        returning 1
    ), hourly as (
        insert into webhook.endpoint_stats_hourly as sh (endpoint_id, hour, attempts, successes, latency_hist)
        select m.endpoint_id, date_trunc('hour', m.minute), sum(m.n), sum(m.ok),
               webhook._hist_sum(m.hist)::integer[]
        from minutes m
        group by m.endpoint_id, date_trunc('hour', m.minute)
        on conflict (endpoint_id, hour) do update
        set attempts = sh.attempts + excluded.attempts,
            successes = sh.successes + excluded.successes,
            latency_hist = webhook._hist_add(sh.latency_hist, excluded.latency_hist)
        returning 1
    ), last_ok as (
        select o.endpoint_id, max(o.started_at) filter (where o.ok) as at
        from outcomes o group by o.endpoint_id
    ), runs as (
        select o.endpoint_id, l.at as last_success_at,
               max(o.started_at) filter (where not o.ok) as last_failure_at,
               (array_agg(o.status_code order by o.started_at desc) filter (where not o.ok))[1] as last_failure_status,
               (array_agg(o.error order by o.started_at desc) filter (where not o.ok))[1] as last_failure_error,
               count(*) filter (where not o.ok and (l.at is null or o.started_at > l.at))::integer as failures,
               min(o.started_at) filter (where not o.ok and (l.at is null or o.started_at > l.at)) as failing_since,
               bool_or(o.status_code = 410) as gone
        from outcomes o join last_ok l on l.endpoint_id = o.endpoint_id
        group by o.endpoint_id, l.at
    ), before as (
        -- The runs as they were (every part of one statement reads the
        -- tables as they were before it).
        select a.endpoint_id, a.consecutive_failures, a.failing_since
        from webhook.endpoint_activity a
        where a.endpoint_id = any (array(select ru.endpoint_id from runs ru))
    ), activity as (
        insert into webhook.endpoint_activity as a (endpoint_id, last_success_at, last_failure_at, last_failure_status,
                                                   last_failure_error, consecutive_failures, failing_since)
        select ru.endpoint_id, ru.last_success_at, ru.last_failure_at, ru.last_failure_status,
               ru.last_failure_error, ru.failures, ru.failing_since
        from runs ru
        on conflict (endpoint_id) do update
        set last_success_at = greatest(a.last_success_at, excluded.last_success_at),
            last_failure_at = greatest(a.last_failure_at, excluded.last_failure_at),
            last_failure_status = case when excluded.last_failure_at is not null then excluded.last_failure_status
                                       else a.last_failure_status end,
            last_failure_error = case when excluded.last_failure_at is not null then excluded.last_failure_error
                                      else a.last_failure_error end,
            consecutive_failures = case when excluded.last_success_at is not null then excluded.consecutive_failures
                                        else a.consecutive_failures + excluded.consecutive_failures end,
            failing_since = case when excluded.last_success_at is not null then excluded.failing_since
                                 else coalesce(a.failing_since, excluded.failing_since) end
        returning a.endpoint_id, a.consecutive_failures
    )
    select (select count(*) from retried) + (select count(*) from archived),
           array(select ru.endpoint_id from runs ru where ru.failures > 0),
           array(select ru.endpoint_id from runs ru where ru.gone),
           -- Failing: the run reached the threshold in this batch (it was
           -- below, or a success in the batch started it over).
           array(select ac.endpoint_id
                 from activity ac
                 join runs ru on ru.endpoint_id = ac.endpoint_id
                 left join before b on b.endpoint_id = ac.endpoint_id
                 where ac.consecutive_failures >= v_failing_after
                   and (ru.last_success_at is not null or coalesce(b.consecutive_failures, 0) < v_failing_after)),
           -- Recovered: a success ended a run that had reached it.
           array(select jsonb_build_object('endpoint_id', b.endpoint_id, 'failing_since', b.failing_since,
                                           'consecutive_failures', b.consecutive_failures)
                 from runs ru
                 join before b on b.endpoint_id = ru.endpoint_id
                 where ru.last_success_at is not null and b.consecutive_failures >= v_failing_after),
           array(select f.id from finished f where f.outcome = 'failed')
    into v_moved, v_touched, v_gone, v_failing, v_recovered, v_exhausted;
    if cardinality(v_failing) + cardinality(v_recovered) + cardinality(v_exhausted) > 0 then
        perform webhook._report_runs(v_failing, v_recovered, v_exhausted);
    end if;

    -- 410 Gone: the receiver says the endpoint is no more; stop at once.
    -- Failing without a success for pg_webhook.disable_after: give up on it.
    for v_id, v_reason in
        select g, 'the endpoint answered 410 Gone' from unnest(v_gone) g
        union all
        select a.endpoint_id, 'no successful delivery since ' || a.failing_since
        from webhook.endpoint_activity a
        where a.endpoint_id = any (v_touched) and not a.endpoint_id = any (v_gone)
          and a.failing_since <= now() - webhook._disable_after_s() * interval '1 second'
    loop
        perform webhook._disable_endpoint(v_id, v_reason);
    end loop;
    return v_moved;
end
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: the worker's credential can no longer act at another time:
-- webhook._maintenance(p_now) with a date in the future purged the log and
-- disabled endpoints. The worker gets webhook._maintenance(), which acts
-- now; webhook._maintenance_at(p_now) is granted to no one.
-- -----------------------------------------------------------------------------
drop function webhook._maintenance(timestamptz);
create function webhook._maintenance_at(
    p_now timestamptz -- the time to act at
) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_removed bigint;
    v_disabled integer := 0;
    v_id bigint;
    v_since timestamptz;
    v_secrets integer;
    v_stats integer;
    v_hours integer;
    v_filters integer;
begin
    -- Transaction-scoped: released at commit. The key is 'pg_webho' as
    -- eight ASCII bytes, unlikely to collide with an application's keys.
    if not pg_try_advisory_xact_lock(8099547421255821423) then
        return null;
    end if;
    v_removed := webhook._purge(p_now);
    for v_id, v_since in
        select a.endpoint_id, a.failing_since
        from webhook.endpoint_activity a
        join webhook.endpoints e on e.id = a.endpoint_id and e.disabled_at is null and e.deleted_at is null
        where a.failing_since <= p_now - webhook._disable_after_s() * interval '1 second'
    loop
        if webhook._disable_endpoint(v_id, 'no successful delivery since ' || v_since) then
            v_disabled := v_disabled + 1;
        end if;
    end loop;
    -- Counters: per minute for the last hour's figures (two hours kept),
    -- per hour as long as the log. Both tables are small (one row per
    -- endpoint and minute or hour), so a DELETE leaves little to vacuum.
    delete from webhook.endpoint_stats s where s.minute < p_now - interval '2 hours';
    get diagnostics v_stats = row_count;
    delete from webhook.endpoint_stats_hourly s
    where s.hour < p_now - webhook._retention_s() * interval '1 second' - interval '1 hour';
    get diagnostics v_hours = row_count;
    v_stats := v_stats + v_hours;
    -- A removed endpoint's secret goes once the fan-out has passed its
    -- removal (every event committed before it has its deliveries) and
    -- none of them is left to send.
    delete from webhook.endpoint_secrets s
    using webhook.endpoints e, webhook.subscriptions sub, webhook.fanout_state f
    where e.id = s.endpoint_id and e.deleted_at is not null
      and sub.endpoint_id = e.id and sub.until_txid is not null
      and not exists (select from webhook.subscriptions o where o.endpoint_id = e.id and o.until_txid is null)
      and webhook._visible(sub.until_txid, f.prev_xmin, f.prev_xmax, f.prev_xip)
      and f.cur_xmax is null
      and not exists (select from webhook.deliveries_open d where d.endpoint_id = e.id);
    get diagnostics v_secrets = row_count;
    v_filters := webhook._prune_filters();
    return jsonb_build_object('events_purged', v_removed, 'endpoints_disabled', v_disabled,
                              'stats_rows_dropped', v_stats, 'secrets_dropped', v_secrets,
                              'filters_dropped', v_filters);
end
$$;

create function webhook._maintenance()
returns jsonb
language sql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
    select webhook._maintenance_at(now())
$$;
revoke all on function webhook._maintenance_at(timestamptz), webhook._maintenance() from public;
grant execute on function webhook._maintenance() to webhook_worker;

-- -----------------------------------------------------------------------------
-- 0.3.0: readers see endpoint URLs without their path and query, which
-- often carry a capability token (webhook.endpoints.url: scheme, host, port
-- and /…); the whole URL moves beside the other secrets, where the worker's
-- claim and webhook_admin read it.
-- -----------------------------------------------------------------------------
CREATE  FUNCTION webhook."_redact_url"(
	"url" TEXT /* & str */
) RETURNS TEXT /* Result < String, ErrorReport > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'redact_url_wrapper';
revoke all on function webhook._redact_url(text) from public;

alter table webhook.endpoint_secrets add column url text;
update webhook.endpoint_secrets s set url = e.url from webhook.endpoints e where e.id = s.endpoint_id;
alter table webhook.endpoint_secrets alter column url set not null;
update webhook.endpoints e set url = webhook._redact_url(e.url);
comment on column webhook.endpoints.url is
    'Where requests go, as readers may see it: scheme, host and port, with /… in place of a path or query (they often carry a token). The whole URL is in webhook.endpoint_secrets.url, readable by webhook_admin.';
comment on table webhook.endpoint_secrets is
    'Signing secrets (whsec_…), header values, credentials and the whole URL. Readable by the worker''s claim only (webhook_admin may read the URLs). During a rotation''s grace period both secrets sign every request.';
comment on column webhook.endpoint_secrets.url is
    'The URL requests go to, path and query included (webhook.endpoints.url shows it without them).';
grant select (endpoint_id, url) on webhook.endpoint_secrets to webhook_admin;

create or replace function webhook._subscribe(
    p_url text,
    p_event_types text[],
    p_name text,
    p_secret text,
    p_headers jsonb,
    p_retry_policy jsonb,
    p_timeout interval,
    p_auth jsonb,
    p_max_in_flight integer,
    out o_endpoint_id bigint,
    out o_name text,
    out o_signing_secret text
)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_url text := webhook._check_url(p_url);
    v_patterns text[] := webhook._check_patterns(p_event_types);
    v_headers jsonb := webhook._check_headers(p_headers);
    v_policy jsonb := webhook._check_retry_policy(p_retry_policy);
    v_timeout interval := webhook._check_timeout(p_timeout);
    v_auth jsonb := webhook._check_auth(p_auth);
    v_max integer := webhook._check_max_in_flight(p_max_in_flight);
    v_secret text := case when p_secret is null then webhook._generate_secret() else webhook._check_secret(p_secret) end;
begin
    perform webhook._check_name(p_name);
    o_endpoint_id := nextval(pg_get_serial_sequence('webhook.endpoints', 'id'));
    o_name := coalesce(p_name, 'endpoint-' || o_endpoint_id);
    perform webhook._insert_endpoint(o_endpoint_id, o_name, v_url, v_patterns, v_headers, v_auth, v_policy, v_timeout,
                                     v_max, v_secret);
    perform webhook._cluster_publish(o_endpoint_id, false);
    o_signing_secret := v_secret;
end
$$;

create or replace function webhook_update(
    endpoint_id bigint,             -- the endpoint to change
    url text default null,          -- new URL: used from the next attempt of every pending delivery
    event_types text[] default null, -- new patterns: for events committed after this
    name text default null,         -- new unique name
    headers jsonb default null,     -- replaces the extra headers
    retry_policy jsonb default null, -- replaces the policy; 'null'::jsonb for the default
    timeout interval default null,  -- per request
    is_active boolean default null, -- false disables it (deliveries wait), true re-enables it
    auth jsonb default null,        -- replaces the credentials; 'null'::jsonb removes them
    max_in_flight integer default null -- its share of a worker's slots; 0 for the default
) returns webhook.endpoints
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_url text := $2;
    v_patterns text[] := $3;
    v_name text := $4;
    v_headers jsonb := $5;
    v_policy jsonb := $6;
    v_timeout interval := $7;
    v_active boolean := $8;
    v_auth jsonb := $9;
    v_max integer := $10;
    v webhook.endpoints;
begin
    v := webhook._live_endpoint(v_id);
    perform from webhook.endpoints e where e.id = v_id for update;
    if v_url is not null then
        v_url := webhook._check_url(v_url);
        update webhook.endpoint_secrets s set url = v_url where s.endpoint_id = v_id;
        v.url := webhook._redact_url(v_url);
    end if;
    if v_patterns is not null then
        v_patterns := webhook._check_patterns(v_patterns);
        if v_patterns is distinct from v.event_types then
            perform webhook._close_subscription(v_id);
            perform webhook._open_subscription(v_id, v_patterns);
            v.event_types := v_patterns;
        end if;
    end if;
    if v_name is not null then
        v.name := webhook._check_name(v_name);
    end if;
    if v_headers is not null then
        v_headers := webhook._check_headers(v_headers);
        update webhook.endpoint_secrets s set headers = v_headers where s.endpoint_id = v_id;
        v.header_names := array(select jsonb_object_keys(v_headers) order by 1);
    end if;
    if v_policy is not null then
        v.retry_policy := webhook._check_retry_policy(v_policy);
    end if;
    if v_timeout is not null then
        v.timeout := webhook._check_timeout(v_timeout);
    end if;
    if v_auth is not null then
        v_auth := webhook._check_auth(v_auth);
        update webhook.endpoint_secrets s set auth = v_auth where s.endpoint_id = v_id;
        v.auth_type := v_auth ->> 'type';
    end if;
    if v_max is not null then
        v.max_in_flight := nullif(webhook._check_max_in_flight(nullif(v_max, 0)), 0);
    end if;
    begin
        update webhook.endpoints e
        set url = v.url, event_types = v.event_types, name = v.name, header_names = v.header_names,
            auth_type = v.auth_type, retry_policy = v.retry_policy, timeout = v.timeout,
            max_in_flight = v.max_in_flight, updated_at = now()
        where e.id = v_id;
    exception when unique_violation then
        raise exception 'an endpoint named % already exists', quote_literal(v.name)
            using errcode = '42710', hint = 'Pick another name.';
    end;
    if v_active is true and v.disabled_at is not null then
        perform webhook._enable_endpoint(v_id);
    elsif v_active is false and v.disabled_at is null then
        perform webhook._disable_endpoint(v_id, 'disabled by webhook_update');
    end if;
    perform webhook._cluster_publish(v_id, false);
    select * into v from webhook.endpoints e where e.id = v_id;
    return v;
end
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: auth is bounded as headers are (8 KiB).
-- -----------------------------------------------------------------------------
create or replace function webhook._check_auth(
    p_auth jsonb -- null for none
) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    c_hint constant text := 'For example {"type": "bearer", "token": "…"}, {"type": "basic", "username": "…", "password": "…"} or {"type": "api_key", "key": "…", "header": "x-api-key"}.';
    v_type text;
    v_keys text[];
    v_key text;
    v_out jsonb;
begin
    if p_auth is null or p_auth = 'null'::jsonb then
        return null;
    end if;
    if jsonb_typeof(p_auth) <> 'object' then
        raise exception 'auth must be a JSON object' using errcode = '22023', hint = c_hint;
    end if;
    -- Bounded as headers are (it becomes one): no endpoint can make every
    -- request of the worker huge.
    if octet_length(p_auth::text) > 8192 then
        raise exception 'auth takes at most 8192 bytes' using errcode = '22023', hint = c_hint;
    end if;
    v_type := p_auth ->> 'type';
    v_keys := case v_type
        when 'basic' then array['username', 'password']
        when 'bearer' then array['token']
        when 'api_key' then array['key']
    end;
    if v_keys is null then
        raise exception 'auth.type must be basic, bearer or api_key, not %', coalesce(quote_literal(v_type), 'NULL')
            using errcode = '22023', hint = c_hint;
    end if;
    v_out := jsonb_build_object('type', v_type);
    if v_type = 'api_key' then
        v_out := v_out || jsonb_build_object('header', lower(coalesce(p_auth ->> 'header', 'x-api-key')));
        perform webhook._check_headers(jsonb_build_object(v_out ->> 'header', 'x'));
    end if;
    foreach v_key in array v_keys loop
        if jsonb_typeof(p_auth -> v_key) is distinct from 'string' or length(p_auth ->> v_key) = 0
           or (p_auth ->> v_key) ~ '[\r\n\x01-\x1f\x7f]' then
            raise exception 'auth.% must be a non-empty string without control characters', v_key
                using errcode = '22023', hint = c_hint;
        end if;
        v_out := v_out || jsonb_build_object(v_key, p_auth -> v_key);
    end loop;
    if v_type = 'basic' and strpos(p_auth ->> 'username', ':') > 0 then
        raise exception 'auth.username must not contain ":"' using errcode = '22023', hint = c_hint;
    end if;
    return v_out;
end
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: one definition per rule. Who has work and how much of it a
-- worker may take (the skip scan over deliveries_open and the quotas) was
-- written out in the claim, the next-due time and the queue lag; whether
-- the fan-out has work, in the fan-out and the next-due time. Were two
-- copies to disagree, a worker would spin, or sleep while work waits.
-- -----------------------------------------------------------------------------
create function webhook._endpoints_with_work()
returns setof bigint
language sql stable parallel safe
begin atomic
    with recursive with_work(endpoint_id) as (
        (select d.endpoint_id from webhook.deliveries_open d
         where d.status operator(pg_catalog.=) 'pending' order by d.endpoint_id limit 1)
        union all
        select (select d.endpoint_id from webhook.deliveries_open d
                where d.status operator(pg_catalog.=) 'pending'
                  and d.endpoint_id operator(pg_catalog.>) w.endpoint_id
                order by d.endpoint_id limit 1)
        from with_work w
        where w.endpoint_id is not null
    )
    select w.endpoint_id from with_work w where w.endpoint_id is not null;
end;

create function webhook._endpoint_quotas(
    p_concurrency integer,      -- the worker's slots
    p_busy_endpoints bigint[],  -- endpoints this worker has deliveries in flight for ...
    p_busy_counts integer[]     -- ... and how many
) returns table (endpoint_id bigint, quota integer)
language sql stable parallel safe
begin atomic
    select ep.id,
           least(coalesce(ep.max_in_flight, p_concurrency),
                 pg_catalog.ceil(p_concurrency::numeric operator(pg_catalog./)
                                 greatest(pg_catalog.count(*) over (), 2))::integer)
           operator(pg_catalog.-) coalesce(b.n, 0)
    from webhook._endpoints_with_work() w(endpoint_id)
    join webhook.endpoints ep on ep.id operator(pg_catalog.=) w.endpoint_id
    -- (Multi-argument unnest is syntax, ROWS FROM, and takes no schema.)
    left join unnest(p_busy_endpoints, p_busy_counts) as b(endpoint_id, n)
        on b.endpoint_id operator(pg_catalog.=) ep.id
    where ep.paused_at is null and ep.disabled_at is null;
end;

create function webhook._fanout_pending(
    st webhook.fanout_state -- the fan-out's position
) returns boolean
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    return st.cur_xmax is not null
        or exists (select from webhook.events e where e.txid >= st.prev_xmax)
        or exists (select from webhook.events e where e.txid = any (st.prev_xip));
end
$$;
revoke all on function webhook._endpoints_with_work(), webhook._endpoint_quotas(integer, bigint[], integer[]),
    webhook._fanout_pending(webhook.fanout_state) from public;

create or replace function webhook._fan_out(
    p_max_events integer -- chunk size in events (whole transactions: a chunk may be larger)
) returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
-- One generic plan per session, as for the claim: planning the chunk's
-- statement across the partitions at every call cost more than running
-- it (a fan-out of one event: 1.3-2.5 ms with custom plans, 0.75 ms
-- generic; a 100,000-event transaction: the same 6.5 s either way), and
-- under load that planning sat in every claim, in front of the commit to
-- receipt latency. Sequential scans off, so that the generic plan reaches
-- the chunk's events by the (txid, id) index whatever the bounds.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set jit = off
as $$
declare
    st webhook.fanout_state;
    v_snap bigint[];
    v_resumed boolean;
    v_xip bigint[];
    v_lo bigint;
    v_hi bigint;
    v_more boolean;
    v_events bigint;
    v_created bigint;
begin
    select * into st from webhook.fanout_state for update skip locked;
    if not found then
        if exists (select from webhook.fanout_state) then
            return 0; -- another worker is fanning out
        end if;
        -- First run: nothing is fanned out yet, every event is after "prev".
        insert into webhook.fanout_state (prev_xmin, prev_xmax, prev_xip) values (1, 1, '{}')
        on conflict do nothing;
        select * into st from webhook.fanout_state for update skip locked;
        if not found then
            return 0;
        end if;
    end if;
    v_resumed := st.cur_xmax is not null;
    -- Nothing committed since prev (the usual case while a backlog drains):
    -- return before taking a snapshot and planning the chunk's statement,
    -- which costs more than everything else here together. An event this
    -- statement cannot see yet is found by a later call.
    if not webhook._fanout_pending(st) then
        return 0;
    end if;
    if not v_resumed then
        v_snap := webhook._vsnapshot();
        st.cur_xmin := v_snap[1];
        st.cur_xmax := v_snap[2];
        st.cur_xip := v_snap[3:];
        st.done_txid := 0;
    end if;

    -- Transactions running at prev that have committed since (visible in cur).
    v_xip := array(select x from unnest(st.prev_xip) x
                   where x > st.done_txid and webhook._visible(x, st.cur_xmin, st.cur_xmax, st.cur_xip)
                   order by x);
    -- Then those that started after prev, in txid order: this chunk ends
    -- with the transaction of its p_max_events-th event.
    v_lo := greatest(st.prev_xmax, st.done_txid + 1);
    select e.txid into v_hi
    from webhook.events e
    where e.txid >= v_lo and e.txid < st.cur_xmax and not e.txid = any (st.cur_xip)
    order by e.txid, e.id
    offset greatest(p_max_events - 1, 0) limit 1;
    v_more := found;
    if not v_more then
        v_hi := st.cur_xmax - 1;
    end if;

    with chunk as (
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace
        from webhook.events e
        where e.txid = any (v_xip)
        union all
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace
        from webhook.events e
        where e.txid >= v_lo and e.txid <= v_hi and not e.txid = any (st.cur_xip)
    ), targets as (
        select c.id, c.slot, c.txid, ep.id as endpoint_id,
               webhook._event_namespace(c.txid, c.id_namespace, i.namespace) as event_namespace,
               (ep.paused_at is not null or ep.disabled_at is not null) as held,
               ep.deleted_at is not null as deleted
        from chunk c
        join webhook.subscriptions s
          on (s.until_xmax is null or s.until_xmax > st.prev_xmin)
         and (c.txid = s.from_txid or not webhook._visible(c.txid, s.from_xmin, s.from_xmax, s.from_xip))
         and (s.until_txid is null
              or (c.txid <> s.until_txid and webhook._visible(c.txid, s.until_xmin, s.until_xmax, s.until_xip)))
         and webhook._matches(s.event_types, c.event_type)
        join webhook.endpoints ep on ep.id = s.endpoint_id
        -- Only events written before 0.3.0 need their incarnation's namespace.
        left join webhook.incarnations i on c.id_namespace is null and i.n = webhook._incarnation_of(c.txid)
        -- webhook_send_test creates its delivery itself, for one endpoint.
        where c.event_type <> 'webhook.test'
          -- An operator event does not go to the endpoint it is about; only
          -- pg_webhook's own events have their data read for it.
          and (c.event_type not like 'webhook.%'
               or ep.id is distinct from (select (o.payload ->> 'endpoint_id')::bigint
                                          from webhook.events o
                                          where o.slot = c.slot and o.txid = c.txid and o.id = c.id))
    ), opened as (
        insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status, event_namespace)
        select t.id, t.txid, t.slot, t.endpoint_id,
               case when t.held then 'paused' else 'pending' end::webhook.delivery_status, t.event_namespace
        from targets t
        where not (t.held and t.deleted)
        -- In the events' order: the claim takes an endpoint's deliveries by
        -- due time, and those made together are due together, so their
        -- order in the index (the order they were made) is the order they go
        -- out in.
        order by t.txid, t.id
        returning 1
    ), cancelled as (
        -- An endpoint removed while paused or disabled can never send what it held.
        insert into webhook.deliveries (slot, event_id, event_txid, event_slot, endpoint_id, status, finalized_at,
                                        event_namespace)
        select t.slot, t.id, t.txid, t.slot, t.endpoint_id, 'cancelled', now(), t.event_namespace
        from targets t
        where t.held and t.deleted
        returning 1
    )
    select (select count(*) from chunk), (select count(*) from opened) + (select count(*) from cancelled)
    into v_events, v_created;

    if v_more then
        update webhook.fanout_state
        set cur_xmin = st.cur_xmin, cur_xmax = st.cur_xmax, cur_xip = st.cur_xip, done_txid = v_hi, updated_at = now();
    elsif v_events > 0 or v_resumed then
        update webhook.fanout_state
        set prev_xmin = st.cur_xmin, prev_xmax = st.cur_xmax, prev_xip = st.cur_xip,
            cur_xmin = null, cur_xmax = null, cur_xip = null, done_txid = 0, updated_at = now();
    end if;
    -- Else nothing was committed since prev: keep prev (no write at all), so
    -- that an idle worker's fan-out is one read.
    return v_created;
end
$$;

create or replace function webhook._next_due_ms(
    p_concurrency integer,      -- the worker's slots
    p_busy_endpoints bigint[],  -- endpoints this worker has deliveries in flight for ...
    p_busy_counts integer[]     -- ... and how many
) returns bigint
language plpgsql stable
security definer
set search_path = pg_catalog, webhook, pg_temp
-- Called every few milliseconds while the worker lingers: one plan per
-- session (as the claim), index access whatever the statistics.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set jit = off
as $$
declare
    st webhook.fanout_state;
    v_next timestamptz;
begin
    select * into st from webhook.fanout_state;
    if not found then
        if exists (select from webhook.events) then
            return 0;
        end if;
    elsif webhook._fanout_pending(st) then
        return 0;
    end if;
    select min(n.next_attempt_at) into v_next
    from webhook._endpoint_quotas(p_concurrency, p_busy_endpoints, p_busy_counts) q
    cross join lateral (
        select d.next_attempt_at from webhook.deliveries_open d
        where d.endpoint_id = q.endpoint_id and d.status = 'pending'
          and (d.lease_until is null or d.lease_until <= now())
        order by d.next_attempt_at
        limit 1
    ) n
    where q.quota > 0;
    if v_next is null then
        return null;
    end if;
    return greatest(0, ceil(extract(epoch from (v_next - clock_timestamp())) * 1000))::bigint;
end
$$;

create or replace function webhook._queue_lag_seconds()
returns double precision
language plpgsql stable
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    st webhook.fanout_state;
    v_event timestamptz;
    v_delivery timestamptz;
begin
    select * into st from webhook.fanout_state;
    select e.created_at into v_event
    from webhook.events e
    where e.txid >= coalesce(st.prev_xmax, 0)
    order by e.txid
    limit 1;
    select min(n.next_attempt_at) into v_delivery
    from webhook._endpoints_with_work() w(endpoint_id)
    cross join lateral (
        select d.next_attempt_at from webhook.deliveries_open d
        where d.endpoint_id = w.endpoint_id and d.status = 'pending' and d.next_attempt_at <= now()
          and (d.lease_until is null or d.lease_until <= now())
        order by d.next_attempt_at
        limit 1
    ) n;
    return greatest(0, coalesce(extract(epoch from now() - least(v_event, v_delivery)), 0))::double precision;
end
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: the functions that write or read events learn the new columns.
-- -----------------------------------------------------------------------------
create or replace function webhook._enqueue(
    p_event_type text,      -- validated event type
    p_data jsonb,           -- the body's "data"
    p_idempotency_key text  -- null, or a key that makes a repeat a no-op
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_event_id bigint;
    v_payload json := p_data::json;
    v_bytes integer := octet_length(v_payload::text);
begin
    perform webhook._check_payload_size(v_bytes);
    v_event_id := nextval('webhook.events_id_seq');
    if p_idempotency_key is not null then
        -- ON CONFLICT waits for a concurrent transaction holding the same key,
        -- so two racing publishers still end with one event: the second one
        -- finds the first one's row once it commits.
        insert into webhook.idempotency_keys (idempotency_key, event_id)
        values (p_idempotency_key, v_event_id)
        on conflict (idempotency_key) do nothing;
        if not found then
            select k.event_id into v_event_id from webhook.idempotency_keys k where k.idempotency_key = p_idempotency_key;
            return v_event_id;
        end if;
    end if;
    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, idempotency_key, id_namespace)
    values (v_event_id, webhook._current_slot(), webhook._vxid(), p_event_type, v_payload, v_bytes, p_idempotency_key,
            webhook._id_namespace());
    insert into webhook.published_types (event_type) values (p_event_type) on conflict do nothing;
    perform webhook._wake();
    return v_event_id;
end
$$;

create or replace function webhook._purge_slot(
    p_gen bigint,        -- the generation whose slot to purge
    p_now timestamptz    -- the time to act at
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_slot integer := p_gen % webhook._slots();
    v_cur smallint := webhook._current_slot();
    v_cutoff timestamptz := p_now - webhook._retention_s() * interval '1 second';
    st webhook.fanout_state;
    v_total bigint;
    v_kept bigint;
    v_lock_timeout text := current_setting('lock_timeout');
begin
    if v_cur = v_slot then
        raise exception 'pg_webhook: refusing to purge the current slot %', v_slot using errcode = '55000';
    end if;
    -- Counted before locking: nobody adds events to a slot this old.
    select count(*) into v_total from webhook.events e where e.slot = v_slot;
    perform set_config('lock_timeout', '500ms', true);
    execute format('lock table webhook.%I, webhook.%I, webhook.%I in access exclusive mode',
                   'events_' || v_slot, 'deliveries_' || v_slot, 'attempts_' || v_slot);
    perform set_config('lock_timeout', v_lock_timeout, true);
    select * into st from webhook.fanout_state;

    create temporary table pg_webhook_keep (txid bigint, id bigint, primary key (txid, id)) on commit drop;
    insert into pg_webhook_keep
    select d.event_txid, d.event_id from webhook.deliveries_open d where d.event_slot = v_slot
    union
    select e.txid, e.id from webhook.events e
    where e.slot = v_slot
      and (st is null or (e.txid >= st.prev_xmin and not webhook._visible(e.txid, st.prev_xmin, st.prev_xmax, st.prev_xip)))
    union
    select d.event_txid, d.event_id from webhook.deliveries d
    where d.slot = v_slot and d.finalized_at > v_cutoff;

    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, source_table, idempotency_key,
                                created_at, id_namespace)
    select e.id, v_cur, e.txid, e.event_type, e.payload, e.payload_bytes, e.source_table, e.idempotency_key,
           e.created_at, e.id_namespace
    from webhook.events e join pg_webhook_keep k on k.txid = e.txid and k.id = e.id
    where e.slot = v_slot;
    get diagnostics v_kept = row_count;
    insert into webhook.attempts (id, slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                                  status_code, response_excerpt, error, worker_id, lease_held)
    select a.id, v_cur, a.delivery_id, a.endpoint_id, a.attempt_number, a.started_at, a.duration_ms, a.status_code,
           a.response_excerpt, a.error, a.worker_id, a.lease_held
    from webhook.attempts a
    where a.slot = v_slot
      and a.delivery_id in (select d.id from webhook.deliveries d
                            join pg_webhook_keep k on k.txid = d.event_txid and k.id = d.event_id
                            where d.slot = v_slot or d.slot is null);
    insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status, attempt_count,
                                    next_attempt_at, last_attempt_at, last_status_code, last_error, replay_of,
                                    created_at, finalized_at, event_namespace)
    select d.id, v_cur, d.event_id, d.event_txid, v_cur, d.endpoint_id, d.status, d.attempt_count,
           d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.replay_of,
           d.created_at, d.finalized_at, d.event_namespace
    from webhook.deliveries d join pg_webhook_keep k on k.txid = d.event_txid and k.id = d.event_id
    where d.slot = v_slot;
    update webhook.deliveries_open d set event_slot = v_cur where d.event_slot = v_slot;

    drop table pg_webhook_keep;
    execute format('truncate webhook.%I, webhook.%I, webhook.%I',
                   'events_' || v_slot, 'deliveries_' || v_slot, 'attempts_' || v_slot);
    update webhook.generations g set purged_at = p_now where g.gen = p_gen;
    return v_total - v_kept;
end
$$;

-- (Its rows now say which kind they are, row_kind: a new result type.)
drop function webhook._claim_deliveries(text, integer, interval, integer, bigint[], integer[], integer, bigint);
create function webhook._claim_deliveries(
    p_worker_id text,           -- recorded in leased_by
    p_limit integer,            -- at most this many rows
    p_lease_margin interval,    -- added to each endpoint's timeout
    p_concurrency integer,      -- the worker's slots, shared among endpoints with work
    p_busy_endpoints bigint[],  -- endpoints this worker has deliveries in flight for ...
    p_busy_counts integer[],    -- ... and how many
    p_fanout_events integer,    -- most events to fan out first
    p_max_bytes bigint          -- most payload bytes (the first delivery is claimed whatever its size)
) returns table (
    row_kind text,
    delivery_id bigint,
    lease_token bigint,
    attempt_number integer,
    event_id bigint,
    message_namespace text,
    event_type text,
    event_created_at timestamptz,
    payload text,
    endpoint_id bigint,
    url text,
    headers text,
    timeout_ms integer,
    secrets text[],
    max_attempts integer,
    initial_delay_ms bigint,
    max_delay_ms bigint,
    backoff_multiplier double precision
)
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
-- Every row these statements touch is found by key; see "Plans" above.
set enable_seqscan = off
set jit = off
-- One plan, made once per session: planning the statement (partitions
-- included) costs more than running it for a hundred rows, and its shape
-- does not depend on the arguments.
set plan_cache_mode = force_generic_plan
as $$
declare
    -- Lease tokens are this claim's random seed hashed with each delivery
    -- id: distinct within the claim, unrelated across claims, and one call
    -- of the random source per claim instead of one per row (which cost
    -- 15,000 instructions per delivery).
    v_seed bigint := ('x' || translate(left(gen_random_uuid()::text, 18), '-', ''))::bit(64)::bigint;
begin
    -- A claim's commit need not wait for its WAL flush. Were the server to
    -- crash before the flush, the lease would be lost and the delivery sent
    -- again: a duplicate, which at-least-once allows; and a lost fan-out is
    -- lost together with the position it advanced, so it runs again. A
    -- later (durable) commit of the attempt flushes the claim's WAL first.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    if p_fanout_events > 0 then
        perform webhook._fan_out(p_fanout_events);
    end if;
    return query
    with quotas as (
        select q.endpoint_id as id, q.quota
        from webhook._endpoint_quotas(p_concurrency, p_busy_endpoints, p_busy_counts) q
    ), fair as (
        select greatest(1, ceil(p_limit::numeric / greatest(count(*), 1)))::integer as share
        from quotas q
        where q.quota > 0
    ), due as (
        -- The events' columns come along (a json value stays a pointer to
        -- its TOAST data until the final select reads it), so that each
        -- event is found once.
        select d.id, d.next_attempt_at, ev.id as event_id, d.event_namespace, ev.event_type, ev.created_at,
               ev.payload, ev.payload_bytes
        from quotas q
        cross join fair
        cross join lateral (
            select d.id, d.next_attempt_at, d.event_slot, d.event_txid, d.event_id, d.event_namespace
            from webhook.deliveries_open d
            where d.endpoint_id = q.id
              and d.status = 'pending'
              and d.next_attempt_at <= now()
              and (d.lease_until is null or d.lease_until <= now())
            order by d.next_attempt_at
            limit greatest(least(q.quota, fair.share, p_limit), 0)
            for update skip locked
        ) d
        -- Each delivery's event by its key, one index probe each: a lateral
        -- subquery with "offset 0" is planned as a nested loop whatever the
        -- estimates. As a plain join, the generic plan (made once, from the
        -- statistics of the moment) sometimes expected thousands of
        -- deliveries and hashed the whole event table for every claim:
        -- 150 ms instead of 5 for a claim of 100 beside 100,000 events,
        -- which made the drain benchmark swing between 2,300 and 8,000/s.
        cross join lateral (
            select ev.id, ev.event_type, ev.created_at, ev.payload, ev.payload_bytes
            from webhook.events ev
            where ev.slot = d.event_slot and ev.txid = d.event_txid and ev.id = d.event_id
            offset 0
        ) ev
        order by d.next_attempt_at
        limit p_limit
    ), fitting as (
        -- Memory is bounded by bytes, not rows: the oldest deliveries whose
        -- payloads fit in p_max_bytes, and at least one. The rows left out
        -- were locked, not leased: their locks go with this transaction.
        -- Usually all of them fit: then the running sum (a sort and a
        -- window over the batch) is skipped; each branch is gated by the
        -- batch's total, worked out once.
        select due.id, due.next_attempt_at, due.event_id, due.event_namespace, due.event_type, due.created_at,
               due.payload, due.payload_bytes
        from due
        where (select coalesce(sum(t.payload_bytes), 0) from due t) <= p_max_bytes
        union all
        select f.id, f.next_attempt_at, f.event_id, f.event_namespace, f.event_type, f.created_at, f.payload,
               f.payload_bytes
        from (select due.*,
                     sum(due.payload_bytes) over w as total,
                     row_number() over w as n
              from due
              window w as (order by due.next_attempt_at, due.id)) f
        where (select coalesce(sum(t.payload_bytes), 0) from due t) > p_max_bytes
          and (f.n = 1 or f.total <= p_max_bytes)
    ), claimed as (
        update webhook.deliveries_open d
        set lease_until = now() + ep.timeout + p_lease_margin,
            -- Random, one per delivery: a token cannot be guessed from
            -- another one or from a transaction id (60 random bits of a v4 UUID).
            lease_token = hashint8extended(d.id, v_seed),
            leased_by = p_worker_id,
            -- An attempt counts when it is claimed, not when it is recorded:
            -- a delivery whose sending kills the worker runs out of attempts
            -- (the worker then records it failed without sending it again)
            -- instead of being claimed again forever.
            attempt_count = d.attempt_count + 1
        from webhook.endpoints ep
        -- "= any (array)", not a join with due: see "Plans" above.
        where d.id = any (array(select f.id from fitting f)) and ep.id = d.endpoint_id
        returning d.id, d.lease_token, d.attempt_count, d.endpoint_id
    ), targets as materialized (
        -- What the worker needs of each endpoint, worked out once per
        -- endpoint and not once per delivery.
        select ep.id,
               -- The whole URL (endpoints.url hides its path); an empty one,
               -- which the worker records as a failure, if the secrets'
               -- row is gone (it cannot be: see the secret below).
               coalesce(s.url, '') as url,
               (coalesce(s.headers, '{}') || coalesce(webhook._auth_header(s.auth), '{}'))::text as headers,
               (extract(epoch from ep.timeout) * 1000)::integer as timeout_ms,
               -- No secret (it cannot happen: it is dropped only when nothing is
               -- left to send) makes the worker record a failure, not lose the row.
               case when s.secret is null then '{}'::text[]
                    when s.previous_secret is not null and s.previous_expires_at > now()
                    then array[s.secret, s.previous_secret]
                    else array[s.secret] end as secrets,
               (ep.retry_policy ->> 'max_attempts')::integer as max_attempts,
               (extract(epoch from (ep.retry_policy ->> 'initial_delay')::interval) * 1000)::bigint as initial_delay_ms,
               (extract(epoch from (ep.retry_policy ->> 'max_delay')::interval) * 1000)::bigint as max_delay_ms,
               (ep.retry_policy ->> 'backoff_multiplier')::double precision as backoff_multiplier
        from quotas q
        join webhook.endpoints ep on ep.id = q.id
        left join webhook.endpoint_secrets s on s.endpoint_id = q.id
    )
    -- The endpoints first, then the deliveries (see above), oldest first:
    -- the worker starts them in this order (a join returns rows in whatever
    -- order its plan makes).
    select 'endpoint', null::bigint, null::bigint, null::integer, null::bigint, null::text, null::text,
           null::timestamptz, null::text,
           t.id, t.url, t.headers, t.timeout_ms, t.secrets, t.max_attempts,
           t.initial_delay_ms, t.max_delay_ms, t.backoff_multiplier
    from targets t
    where t.id = any (array(select c.endpoint_id from claimed c))
    union all
    (select 'delivery',
           c.id,
           c.lease_token,
           c.attempt_count,
           f.event_id,
           -- The webhook-id's namespace (the worker puts the id together);
           -- null for an event of pg_webhook 0.1, whose message id is its number.
           webhook._namespace_hex(f.event_namespace),
           f.event_type,
           f.created_at,
           f.payload::text,
           c.endpoint_id,
           null::text, null::text, null::integer, null::text[], null::integer,
           null::bigint, null::bigint, null::double precision
    from claimed c
    join fitting f on f.id = c.id
    order by f.next_attempt_at, f.id);
end
$$;
revoke all on function webhook._claim_deliveries(text, integer, interval, integer, bigint[], integer[], integer, bigint)
    from public;
grant execute on function webhook._claim_deliveries(text, integer, interval, integer, bigint[], integer[], integer, bigint)
    to webhook_worker;

-- -----------------------------------------------------------------------------
-- 0.3.0: the natural questions of the delivery log are index reads:
-- "order by started_at desc limit 50" sorted the whole log (1.7 s at
-- 1,000,000 attempts, seconds more at 10,000,000). The view is built from
-- the attempts up (see its comment), attempts are indexed by time with a
-- B-tree (BRIN gives no order), and finished deliveries never moved by an
-- attempt are indexed apart.
-- -----------------------------------------------------------------------------
drop index webhook.attempts_started;
create index attempts_started on webhook.attempts (started_at);
do $$
declare
    s integer;
begin
    for s in 0 .. webhook._slots() - 1 loop
        execute format('create index %I on webhook.%I (id) where last_attempt_at is null',
                       'deliveries_' || s || '_unattempted', 'deliveries_' || s);
        execute format('create index %I on webhook.%I using hash (webhook._webhook_id(event_id, event_namespace))',
                       'deliveries_' || s || '_message', 'deliveries_' || s);
    end loop;
end
$$;
create or replace view webhook.delivery_log as
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

-- -----------------------------------------------------------------------------
-- 0.3.0: no function resolves a name through its caller's search_path.
-- Every function with a search_path of its own lists the session's
-- temporary schema last (otherwise it is searched first, for relations and
-- types), and the small SQL functions that had none (their callers', so a
-- planted public.power() ran with a reader's rights) get a SQL-standard
-- body, parsed once here, with every name qualified.
-- -----------------------------------------------------------------------------
alter function webhook._check_event_type(text) set search_path = pg_catalog, pg_temp;
alter function webhook._check_patterns(text[]) set search_path = pg_catalog, pg_temp;
alter function webhook._check_headers(jsonb) set search_path = pg_catalog, pg_temp;
alter function webhook._check_retry_policy(jsonb) set search_path = pg_catalog, pg_temp;
alter function webhook._policy_interval(jsonb,text,text) set search_path = pg_catalog, pg_temp;
alter function webhook._check_timeout(interval) set search_path = pg_catalog, pg_temp;
alter function webhook._live_endpoint(bigint) set search_path = pg_catalog, pg_temp;
alter function webhook._check_name(text) set search_path = pg_catalog, pg_temp;
alter function webhook._check_max_in_flight(integer) set search_path = pg_catalog, pg_temp;
alter function webhook._auth_header(jsonb) set search_path = pg_catalog, pg_temp;
alter function webhook._endpoints_check() set search_path = pg_catalog, pg_temp;
alter function webhook._register_incarnation(bigint,oid) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._open_subscription(bigint,text[]) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._close_subscription(bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._subscription_commit() set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._hold_fanout() set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._disable_endpoint(bigint,text) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._rotate(timestamp with time zone) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._purge(timestamp with time zone) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_subscribe(text,text[],text,text,jsonb,jsonb,interval,jsonb,integer) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_unsubscribe(bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._enable_endpoint(bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_pause(bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_resume(bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_rotate_secret(bigint,interval) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_publish(text,jsonb,text) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_watch(regclass,text[],text,text[]) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_unwatch(regclass) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._deliver_again(webhook.events,bigint,bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_send_test(bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._logged_event(bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_replay(bigint,bigint) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_replay_failed(bigint,timestamp with time zone) set search_path = pg_catalog, webhook, pg_temp;
alter function webhook_purge() set search_path = pg_catalog, webhook, pg_temp;
alter function webhook._invariant_violations() set search_path = pg_catalog, webhook, pg_temp;

create or replace function webhook._slots() returns integer
language sql immutable parallel safe
return 8;

create or replace function webhook._visible(
    p_txid bigint,
    p_xmin bigint,
    p_xmax bigint,
    p_xip bigint[]
) returns boolean
language sql immutable parallel safe
return p_txid operator(pg_catalog.<) p_xmin
    or (p_txid operator(pg_catalog.<) p_xmax and not p_txid operator(pg_catalog.=) any (p_xip));

create or replace function webhook.message_event_id(
    p_message_id text -- a webhook-id: 'msg_' + 32 hex digits, or a 0.1.0 decimal id
) returns bigint
language sql immutable strict parallel safe
return case
    when p_message_id operator(pg_catalog.~) '^msg_[0-9a-f]{16}[0-7][0-9a-f]{15}$'
        then ('x' operator(pg_catalog.||) pg_catalog.substr(p_message_id, 21, 16))::bit(64)::bigint
    when p_message_id operator(pg_catalog.~) '^[0-9]{1,18}$' then p_message_id::bigint
end;

create or replace function webhook._latency_bucket(
    p_ms double precision -- a duration
) returns integer
language sql immutable parallel safe
return least(20, pg_catalog.ceil(pg_catalog.ln(greatest(p_ms, 1::double precision))
                                 operator(pg_catalog./) pg_catalog.ln(2::double precision))::integer
                 operator(pg_catalog.+) 1);

create or replace function webhook._latency_bound(
    p_bucket integer -- 1 to 20
) returns double precision
language sql immutable parallel safe
return case when p_bucket operator(pg_catalog.>=) 20 then 'infinity'::double precision
            else pg_catalog.power(2::double precision, (p_bucket operator(pg_catalog.-) 1)::double precision) end;

create or replace function webhook._hist_one(
    p_bucket integer, -- see webhook._latency_bucket
    p_count integer   -- the count
) returns integer[]
language sql immutable parallel safe
return pg_catalog.array_fill(0, array[p_bucket operator(pg_catalog.-) 1])
       operator(pg_catalog.||) p_count
       operator(pg_catalog.||) pg_catalog.array_fill(0, array[20 operator(pg_catalog.-) p_bucket]);

create or replace function webhook._hist_percentile(
    p_hist bigint[],         -- counts per bucket (see webhook._latency_bucket)
    p_fraction double precision -- 0.5 for the median
) returns double precision
language sql immutable parallel safe
return (
    select webhook._latency_bound(pg_catalog.min(c.i)::integer)
    from (select h.i, pg_catalog.sum(h.n) over (order by h.i) as cum, pg_catalog.sum(h.n) over () as total
          from pg_catalog.unnest(p_hist) with ordinality as h(n, i)) c
    where c.total operator(pg_catalog.>) 0
      and c.cum operator(pg_catalog.>=) (c.total operator(pg_catalog.*) p_fraction)
);

-- -----------------------------------------------------------------------------
-- 0.3.0: capture triggers that 0.1.0 let any table owner attach (EXECUTE
-- on webhook._capture was PUBLIC's then) are reported, since such a trigger
-- may emit whatever types its owner chose. Since 0.2.0 only webhook_admin
-- attaches them; from 0.3.0 the trigger also refuses pg_webhook's own
-- "webhook" prefix whenever it fires.
-- -----------------------------------------------------------------------------
do $$
declare
    v record;
begin
    for v in
        select t.tgrelid::regclass as tbl, c.relowner::regrole as owner
        from pg_catalog.pg_trigger t
        join pg_catalog.pg_class c on c.oid = t.tgrelid
        join pg_catalog.pg_roles r on r.oid = c.relowner
        where t.tgfoid = 'webhook._capture'::regproc and not t.tgisinternal and not r.rolsuper
          and not pg_catalog.pg_has_role(c.relowner, 'webhook_admin', 'member')
    loop
        raise warning 'pg_webhook: table % has a capture trigger, but its owner % is not a member of webhook_admin (pg_webhook 0.1.0 let any table owner attach one)', v.tbl, v.owner
            using hint = format('Check the trigger''s event prefix (its first argument); keep it, or remove it with: select webhook_unwatch(%L);', v.tbl::text);
    end loop;
end
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: a watched partitioned table is listed once in webhook.event_types,
-- not once more for each partition its trigger was cloned onto (and its
-- events name it, not the partition: extension/src/relation.rs).
-- -----------------------------------------------------------------------------
create or replace view webhook.event_types as
with seen as (
    select e.event_type, count(*) as events, max(e.created_at) as last_seen_at
    from webhook.events e
    group by e.event_type
), types as (
    select p.event_type, 'published'::text as source, null::regclass as source_table, p.first_published_at as since
    from webhook.published_types p
    union all
    -- The prefix is the first argument, or the fourth after a Citus
    -- table's "@table", schema, name (see webhook_watch).
    select a.prefix || '.' || op.suffix, 'watched', t.tgrelid::regclass, null
    from pg_catalog.pg_trigger t
    cross join lateral (select case split_part(encode(t.tgargs, 'escape'), '\000', 1)
                                   when '@table' then split_part(encode(t.tgargs, 'escape'), '\000', 4)
                                   else split_part(encode(t.tgargs, 'escape'), '\000', 1) end as prefix) a
    cross join lateral (values (4, 'created'), (16, 'updated'), (8, 'deleted')) as op(bit, suffix)
    -- A watched partitioned table, not the clones of its trigger on its partitions.
    where t.tgname = 'webhook_capture' and t.tgfoid = 'webhook._capture'::regproc and t.tgparentid = 0
      and t.tgtype & op.bit <> 0
)
select t.event_type, t.source, t.source_table, t.since,
       coalesce(s.events, 0) as events_kept, s.last_seen_at
from types t
left join seen s on s.event_type = t.event_type;

-- -----------------------------------------------------------------------------
-- 0.3.0: the same constraint names as a fresh install on PostgreSQL 18,
-- which names NOT NULL constraints (<table>_<column>_not_null, inherited by
-- partitions under the parent's name). 0.1.0's upgrade created the 0.2.0
-- tables while 0.1.0's, renamed aside, still held those names, so on 18
-- theirs took a suffix (attempts_id_not_null1); renamed back here. Before
-- 18 there are no such constraints and this does nothing.
-- -----------------------------------------------------------------------------
do $$
declare
    c record;
begin
    for c in
        select r.relname, n.conname, pg_catalog.regexp_replace(n.conname, '[0-9]+$', '') as wanted
        from pg_catalog.pg_constraint n
        join pg_catalog.pg_class r on r.oid = n.conrelid
        where r.relnamespace = 'webhook'::regnamespace and n.contype = 'n' and n.conislocal
          and n.conname ~ '_not_null[0-9]+$'
    loop
        if not exists (select from pg_catalog.pg_constraint o
                       where o.connamespace = 'webhook'::regnamespace and o.conname = c.wanted) then
            execute format('alter table webhook.%I rename constraint %I to %I', c.relname, c.conname, c.wanted);
        end if;
    end loop;
end
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: webhook_watch and webhook_unwatch on Citus. A distributed table's
-- shards fire the trigger under their own names, so the trigger names the
-- table ('@table', schema, name before the prefix); Citus's
-- enable_unsafe_triggers is set for the DDL alone; a reference table (one
-- event per node) is refused.
-- -----------------------------------------------------------------------------
-- API: Private
create function webhook._citus_table_kind(
    p_tbl regclass -- the table
) returns text
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_method text;
    v_model text;
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'citus') then
        return null;
    end if;
    execute 'select p.partmethod::text, p.repmodel::text from pg_catalog.pg_dist_partition p where p.logicalrelid = $1'
        into v_method, v_model using p_tbl;
    return case
        when v_method is null then null
        when v_method <> 'n' then 'distributed'
        when v_model = 't' then 'reference'
        else 'local'
    end;
end
$$;
revoke all on function webhook._citus_table_kind(regclass) from public;
grant execute on function webhook._citus_table_kind(regclass) to webhook_admin;

create or replace function webhook_watch(
    tbl regclass,                                       -- the table to capture
    operations text[] default '{insert,update,delete}', -- any of insert, update, delete
    event_prefix text default null,                     -- event types <prefix>.created/.updated/.deleted; the table name when null
    columns text[] default null                         -- the columns sent in new/old; all when null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_tbl regclass := $1;
    v_operations text[] := $2;
    v_columns text[] := $4;
    v_relkind "char";
    v_schema name;
    v_relname name;
    v_ops text[];
    v_events text;
    v_prefix text;
    v_missing text;
    v_args text[];
    v_citus text;
begin
    if v_tbl is null or v_operations is null then
        raise exception 'webhook_watch: tbl and operations must not be null' using errcode = '22004';
    end if;
    select c.relkind, n.nspname, c.relname into v_relkind, v_schema, v_relname
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.oid = v_tbl;
    if v_relkind not in ('r', 'p') then
        raise exception '% is not a table', v_tbl using errcode = '42809';
    end if;
    if v_schema = 'webhook' then
        raise exception 'the tables of pg_webhook itself cannot be watched' using errcode = '22023';
    end if;
    if v_schema in ('pg_catalog', 'information_schema') or v_schema like 'pg\_toast%' then
        raise exception 'system catalogs cannot be watched' using errcode = '22023';
    end if;
    select array_agg(distinct lower(op) order by lower(op)) into v_ops from unnest(v_operations) as op;
    if v_ops is null or not v_ops <@ array['delete', 'insert', 'update'] or array_position(v_ops, null) is not null then
        raise exception 'operations must be a non-empty subset of {insert,update,delete}, not %', coalesce(v_operations::text, 'NULL')
            using errcode = '22023';
    end if;
    v_prefix := coalesce($3, v_relname);
    if v_prefix !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' or length(v_prefix) > 240 then
        raise exception 'invalid event prefix: %', quote_literal(v_prefix)
            using errcode = '22023',
                  hint = 'Pass event_prefix => ''order'' (dot-separated words of letters, digits, "_" or "-").';
    end if;
    if v_prefix = 'webhook' or v_prefix like 'webhook.%' then
        raise exception 'the event prefix "webhook" is reserved for pg_webhook''s own events'
            using errcode = '22023', hint = 'Pass another event_prefix.';
    end if;
    if v_columns is not null then
        if cardinality(v_columns) = 0 or array_position(v_columns, null) is not null then
            raise exception 'columns must list at least one column, or be null for all of them' using errcode = '22023';
        end if;
        select string_agg(quote_ident(c), ', ') into v_missing
        from unnest(v_columns) c
        where not exists (select from pg_attribute a
                          where a.attrelid = v_tbl and a.attname = c and a.attnum > 0 and not a.attisdropped);
        if v_missing is not null then
            raise exception 'table % has no column %', v_tbl, v_missing using errcode = '42703';
        end if;
        v_columns := array(select distinct c from unnest(v_columns) c order by 1);
    end if;
    -- Keywords only (validated above), never user text, go into the DDL;
    -- the prefix and column names go in as quoted literals.
    v_events := array_to_string(array(
        select case op when 'insert' then 'insert' when 'update' then 'update' when 'delete' then 'delete' end
        from unnest(v_ops) as op), ' or ');
    v_args := array[v_prefix] || coalesce(v_columns, '{}');
    v_citus := webhook._citus_table_kind(v_tbl);
    if v_citus = 'reference' then
        -- Its trigger would fire on every node's copy: one event per node.
        raise exception '% is a Citus reference table: it cannot be watched', v_tbl
            using errcode = '0A000',
                  hint = 'Watch a distributed table, or call webhook_publish() where the reference table is written.';
    elsif v_citus is not null then
        -- Citus puts the trigger on every shard, where it fires under the
        -- shard's name: it is told the table's. Citus refuses triggers on
        -- its tables unless told they are safe; this one only inserts into
        -- the node's own local tables (nothing distributed).
        v_args := array['@table', v_schema::text, v_relname::text] || v_args;
        perform set_config('citus.enable_unsafe_triggers', 'on', true);
    end if;
    if exists (select from pg_trigger t where t.tgrelid = v_tbl and t.tgname = 'webhook_capture') then
        execute format('drop trigger %I on %s', 'webhook_capture', v_tbl);
    end if;
    execute format('create trigger %I after %s on %s for each row execute function webhook._capture(%s)',
                   'webhook_capture', v_events, v_tbl,
                   (select string_agg(quote_literal(a), ', ') from unnest(v_args) a));
end
$$;

create or replace function webhook_unwatch(
    tbl regclass -- the table to stop capturing
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if $1 is null then
        raise exception 'webhook_unwatch: tbl must not be null' using errcode = '22004';
    end if;
    if not exists (select from pg_trigger t where t.tgrelid = $1 and t.tgname = 'webhook_capture') then
        return false;
    end if;
    if webhook._citus_table_kind($1) is not null then
        perform set_config('citus.enable_unsafe_triggers', 'on', true);
    end if;
    execute format('drop trigger %I on %s', 'webhook_capture', $1);
    return true;
end
$$;

comment on function webhook._capture() is
    'Row-change capture trigger installed by webhook_watch; arguments: the event prefix, then the columns to send (all when none); on a Citus distributed table, ''@table'', its schema and its name first.';

-- -----------------------------------------------------------------------------
-- 0.3.0: a Citus cluster's endpoints, the same on every node (see
-- sql/install/12_cluster.sql): every endpoint change publishes the
-- endpoint's state, which webhook_cluster_enable() makes reach every node.
-- Without Citus nothing changes.
-- -----------------------------------------------------------------------------
-- API: Private
create function webhook._hold_endpoint(
    p_endpoint_id bigint, -- the endpoint
    p_reason text         -- why, for people (disabled_reason)
) returns text
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_name text;
begin
    update webhook.endpoints e
    set is_active = false, disabled_at = now(), disabled_reason = p_reason, updated_at = now()
    where e.id = p_endpoint_id and e.disabled_at is null and e.deleted_at is null
    returning e.name into v_name;
    if not found then
        return null;
    end if;
    perform webhook._hold_fanout();
    update webhook.deliveries_open d set status = 'paused'
    where d.endpoint_id = p_endpoint_id and d.status = 'pending';
    return v_name;
end
$$;

create or replace function webhook._disable_endpoint(
    p_endpoint_id bigint, -- the endpoint
    p_reason text         -- why, for people (disabled_reason)
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_name text := webhook._hold_endpoint(p_endpoint_id, p_reason);
    v_failing_since timestamptz;
begin
    if v_name is null then
        return false;
    end if;
    select a.failing_since into v_failing_since from webhook.endpoint_activity a where a.endpoint_id = p_endpoint_id;
    perform webhook._operator_event('webhook.endpoint.disabled', p_endpoint_id,
        jsonb_build_object('endpoint_id', p_endpoint_id, 'name', v_name, 'reason', p_reason,
                           'disabled_at', now(), 'failing_since', v_failing_since));
    perform webhook._cluster_publish(p_endpoint_id, true);
    return true;
end
$$;

create or replace function webhook_pause(
    endpoint_id bigint -- the endpoint to pause
) returns boolean
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
begin
    perform webhook._live_endpoint(v_id);
    update webhook.endpoints e set paused_at = now(), updated_at = now()
    where e.id = v_id and e.paused_at is null;
    if not found then
        return false; -- already paused
    end if;
    -- Deliveries in flight keep their lease: their outcome is recorded as usual.
    perform webhook._hold_fanout();
    update webhook.deliveries_open d set status = 'paused'
    where d.endpoint_id = v_id and d.status = 'pending';
    perform webhook._cluster_publish(v_id, false);
    return true;
end
$$;

create or replace function webhook_resume(
    endpoint_id bigint -- the endpoint to resume (paused or disabled)
) returns boolean
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_resumed boolean;
begin
    perform webhook._live_endpoint($1);
    v_resumed := webhook._enable_endpoint($1);
    -- Whether or not it was held here: a node's own worker may have
    -- disabled it there, and resuming on the coordinator resumes it everywhere.
    perform webhook._cluster_publish($1, false);
    return v_resumed;
end
$$;

create or replace function webhook_rotate_secret(
    endpoint_id bigint,                -- the endpoint
    grace interval default '24 hours'  -- how long the old secret keeps signing too
) returns text
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_grace interval := $2;
    v_secret text := webhook._generate_secret();
begin
    perform webhook._live_endpoint(v_id);
    if v_grace is null or v_grace < interval '0' or v_grace > interval '30 days' then
        raise exception 'grace must be between 0 and 30 days, not %', coalesce(v_grace::text, 'NULL')
            using errcode = '22023';
    end if;
    update webhook.endpoint_secrets s
    set previous_secret = case when v_grace > interval '0' then s.secret end,
        previous_expires_at = case when v_grace > interval '0' then now() + v_grace end,
        secret = v_secret
    where s.endpoint_id = v_id;
    update webhook.endpoints e set updated_at = now() where e.id = v_id;
    perform webhook._cluster_publish(v_id, false);
    return v_secret;
end
$$;

-- API: Private
-- The endpoints' states as the coordinator last wrote them (a Citus
-- reference table once webhook_cluster_enable() has run). It holds the
-- signing secrets: readable by the extension owner only.
create table webhook.cluster_endpoints (
    endpoint_id bigint primary key,
    state       jsonb not null,
    updated_at  timestamptz not null default now()
);
comment on table webhook.cluster_endpoints is
    'On a Citus cluster (after webhook_cluster_enable()): each endpoint''s settings and state as the coordinator last wrote them, replicated to every node, where a trigger applies them to the node''s own endpoint tables. Holds secrets.';

-- API: Private
-- An endpoint's settings and state as every node must have them: what the
-- API sets, not what each node keeps of its own (times, health, the
-- subscription history, whose snapshots are the node's own transactions).
-- Null for an unknown endpoint.
create function webhook._endpoint_state(
    p_endpoint_id bigint -- the endpoint
) returns jsonb
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'url', s.url,
        'event_types', to_jsonb(e.event_types),
        'headers', s.headers,
        'auth', s.auth,
        'retry_policy', e.retry_policy,
        -- Times and intervals as numbers and UTC text: their text form
        -- depends on each session's TimeZone and IntervalStyle.
        'timeout_us', (extract(epoch from e.timeout) * 1000000)::bigint,
        'max_in_flight', e.max_in_flight,
        'paused', e.paused_at is not null,
        'disabled_reason', e.disabled_reason,
        'deleted', e.deleted_at is not null,
        'secret', s.secret,
        'previous_secret', s.previous_secret,
        'previous_expires_at',
            to_char(s.previous_expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    from webhook.endpoints e
    -- The secrets' row of a removed endpoint goes once nothing is left to send.
    left join webhook.endpoint_secrets s on s.endpoint_id = e.id
    where e.id = p_endpoint_id
$$;

-- API: Private
-- Makes this node's endpoint p_state.id what p_state says, through the
-- functions the API uses (a pause holds the node's pending deliveries, new
-- event types open a subscription period at this node's commit, and so
-- on). Returns false when there was nothing to change.
create function webhook._apply_endpoint_state(
    p_state jsonb -- from webhook._endpoint_state() on the coordinator
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := (p_state ->> 'id')::bigint;
    v_local jsonb := webhook._endpoint_state(v_id);
    v_patterns text[] := array(select jsonb_array_elements_text(p_state -> 'event_types'));
    -- What webhook_update sets (the rest is state, secrets and identity).
    v_settings text[] := array['url', 'event_types', 'name', 'headers', 'auth', 'retry_policy', 'timeout_us',
                               'max_in_flight'];
    v_timeout interval := (p_state ->> 'timeout_us')::bigint * interval '1 microsecond';
    v_paused boolean;
    v_reason text;
begin
    if v_local is not distinct from p_state then
        return false;
    end if;
    if v_local is null then
        if (p_state ->> 'deleted')::boolean then
            return false; -- removed before this node knew it: nothing to send
        end if;
        -- As webhook._subscribe makes it, with the coordinator's id and secret
        -- (the coordinator checked the settings).
        perform webhook._insert_endpoint(v_id, p_state ->> 'name', p_state ->> 'url', v_patterns, p_state -> 'headers',
                                         nullif(p_state -> 'auth', 'null'::jsonb),
                                         nullif(p_state -> 'retry_policy', 'null'::jsonb), v_timeout,
                                         (p_state ->> 'max_in_flight')::integer, p_state ->> 'secret');
        -- Ids are the coordinator's: keep this node's sequence past them.
        perform setval(pg_get_serial_sequence('webhook.endpoints', 'id'), (select max(e.id) from webhook.endpoints e));
        v_local := webhook._endpoint_state(v_id);
    end if;
    if (v_local ->> 'deleted')::boolean then
        return true; -- a removed endpoint changes no more
    end if;
    if (p_state ->> 'deleted')::boolean then
        perform @extschema@.webhook_unsubscribe(v_id);
        return true;
    end if;
    if (select jsonb_object_agg(k, v_local -> k) from unnest(v_settings) k)
       is distinct from (select jsonb_object_agg(k, p_state -> k) from unnest(v_settings) k) then
        perform @extschema@.webhook_update(v_id,
                               url => p_state ->> 'url',
                               event_types => v_patterns,
                               name => p_state ->> 'name',
                               headers => p_state -> 'headers',
                               retry_policy => p_state -> 'retry_policy',
                               timeout => v_timeout,
                               auth => p_state -> 'auth',
                               max_in_flight => coalesce((p_state ->> 'max_in_flight')::integer, 0));
    end if;
    update webhook.endpoint_secrets s
    set secret = p_state ->> 'secret',
        previous_secret = p_state ->> 'previous_secret',
        previous_expires_at = (p_state ->> 'previous_expires_at')::timestamptz
    where s.endpoint_id = v_id
      and (s.secret, s.previous_secret, s.previous_expires_at)
          is distinct from (p_state ->> 'secret', p_state ->> 'previous_secret',
                            (p_state ->> 'previous_expires_at')::timestamptz);
    -- Held (paused, disabled) as the coordinator holds it: released first
    -- when it holds less, then held again as it says.
    v_paused := (v_local ->> 'paused')::boolean;
    v_reason := v_local ->> 'disabled_reason';
    if (v_paused and not (p_state ->> 'paused')::boolean)
       or v_reason is distinct from (p_state ->> 'disabled_reason') then
        perform webhook._enable_endpoint(v_id);
        v_paused := false;
        v_reason := null;
    end if;
    if (p_state ->> 'paused')::boolean and not v_paused then
        perform @extschema@.webhook_pause(v_id);
    end if;
    if p_state ->> 'disabled_reason' is not null and v_reason is null then
        -- Held, without a second webhook.endpoint.disabled event: the node
        -- where it was disabled sent it.
        perform webhook._hold_endpoint(v_id, p_state ->> 'disabled_reason');
    end if;
    return true;
end
$$;

-- API: Private
-- The trigger on each node's copy of webhook.cluster_endpoints. The API
-- functions it calls would publish again: a transaction setting tells
-- them not to. (Anyone may set it; an admin who does changes that node
-- alone, and the invariants then list the endpoint as stale there.)
create function webhook._cluster_apply()
returns trigger
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform pg_catalog.set_config('pg_webhook_cluster.applying', 'on', true);
    perform webhook._apply_endpoint_state(new.state);
    perform pg_catalog.set_config('pg_webhook_cluster.applying', '', true);
    return null;
end
$$;

create trigger cluster_endpoints_apply
    after insert or update on webhook.cluster_endpoints
    for each row execute function webhook._cluster_apply();

-- API: Private
-- 'coordinator' or 'node' on a Citus cluster where webhook_cluster_enable()
-- has run, else null.
create function webhook._cluster_role()
returns text
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_coordinator boolean;
begin
    if webhook._citus_table_kind('webhook.cluster_endpoints') is null then
        return null;
    end if;
    -- Citus's function: a dynamic statement, as it exists only with Citus.
    execute 'select pg_catalog.citus_is_coordinator()' into v_coordinator;
    return case when v_coordinator then 'coordinator' else 'node' end;
end
$$;

-- API: Private
-- Called by every endpoint change of the API: on a Citus cluster, writes
-- the endpoint's new state to every node (see above); elsewhere nothing.
-- Endpoints are managed on the coordinator only (their ids are its own),
-- so the change is refused on another node, unless it is a node's worker
-- disabling an endpoint there (p_local_ok): that stays on the node.
create function webhook._cluster_publish(
    p_endpoint_id bigint, -- the endpoint changed
    p_local_ok boolean    -- true: on a node that is not the coordinator, change nothing more
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_role text;
begin
    if pg_catalog.current_setting('pg_webhook_cluster.applying', true) = 'on' then
        return; -- applying the coordinator's change
    end if;
    v_role := webhook._cluster_role();
    if v_role is null or (v_role = 'node' and p_local_ok) then
        return;
    end if;
    if v_role = 'node' then
        raise exception 'on a Citus cluster, endpoints are managed on the coordinator'
            using errcode = '0A000', hint = 'Connect to the coordinator and call the function there.';
    end if;
    -- Citus allows only immutable expressions in DO UPDATE SET: the new
    -- values come through "excluded".
    insert into webhook.cluster_endpoints (endpoint_id, state, updated_at)
    values (p_endpoint_id, webhook._endpoint_state(p_endpoint_id), now())
    on conflict (endpoint_id) do update set state = excluded.state, updated_at = excluded.updated_at;
end
$$;

-- API: Private
-- The endpoints this node does not have as the coordinator last published
-- them: missing, or with other settings or state. Two differences are
-- allowed: a disable by the node's own worker (it stays on the node), and
-- anything about a removed endpoint (each node drops its secret once
-- nothing is left to send there). Empty without Citus.
create function webhook._cluster_stale()
returns setof bigint
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select c.endpoint_id
    from webhook.cluster_endpoints c
    where not (c.state ->> 'deleted')::boolean
      and (webhook._endpoint_state(c.endpoint_id) - 'disabled_reason') is distinct from (c.state - 'disabled_reason')
$$;

-- API: Private
-- How many endpoints this node lacks or has otherwise than the coordinator
-- published them: the worker warns at start-up when it is not 0 (a node
-- added without running webhook_cluster_enable() again).
create function webhook._cluster_behind()
returns bigint
language sql stable
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
    select count(*) from webhook._cluster_stale()
$$;

-- API: Private
-- Runs p_query (one json array) on every node and returns its elements with
-- the node's id; fails with the first node's error. p_query runs in a
-- session of each node with that session's search_path: every name and
-- operator in it is qualified.
create function webhook._cluster_gather(
    p_query text -- a statement returning one json array of rows
) returns table (node_id integer, row_json json)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    r record;
begin
    if webhook._cluster_role() is distinct from 'coordinator' then
        raise exception 'the cluster-wide views are read on the coordinator of a Citus cluster where webhook_cluster_enable() has run'
            using errcode = '0A000';
    end if;
    -- Citus's function: a dynamic statement, as it exists only with Citus.
    for r in execute 'select n.nodeid, n.success, n.result from pg_catalog.run_command_on_all_nodes($1) n'
        using p_query
    loop
        if not r.success then
            raise exception 'node % could not answer: %', r.nodeid, r.result using errcode = '58000';
        end if;
        return query select r.nodeid, e.value from pg_catalog.json_array_elements(r.result::json) e;
    end loop;
end
$$;

-- API: Public
-- Every node's webhook.delivery_log since p_since (attempts started, or
-- deliveries not attempted yet whose event is that recent), read from the
-- coordinator: each node answers for its own log (Citus's
-- run_command_on_all_nodes). As the extension owner, so that a reader
-- needs no login on every node; the statement run there is fixed. A node
-- that cannot answer fails the query.
create function webhook.cluster_delivery_log(
    p_since timestamptz default now() - interval '1 day' -- the oldest attempt returned
) returns table (node_id integer, log webhook.delivery_log)
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    return query select n.node_id, pg_catalog.json_populate_record(null::webhook.delivery_log, n.row_json)
    from webhook._cluster_gather(pg_catalog.format(
        'select coalesce(pg_catalog.json_agg(d), ''[]'') from webhook.delivery_log d
         where coalesce(d.started_at, d.event_created_at) operator(pg_catalog.>=) %L::pg_catalog.timestamptz',
        p_since)) n;
end
$$;
comment on function webhook.cluster_delivery_log(timestamptz) is
    'On a Citus coordinator: every node''s webhook.delivery_log rows since the given time (default: one day), with the node''s id (pg_dist_node.nodeid).';

-- API: Public
-- Every node's webhook.endpoint_health, read from the coordinator (see
-- webhook.cluster_delivery_log).
create function webhook.cluster_endpoint_health()
returns table (node_id integer, health webhook.endpoint_health)
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    return query select n.node_id, pg_catalog.json_populate_record(null::webhook.endpoint_health, n.row_json)
    from webhook._cluster_gather(
        'select coalesce(pg_catalog.json_agg(h), ''[]'') from webhook.endpoint_health h') n;
end
$$;
comment on function webhook.cluster_endpoint_health() is
    'On a Citus coordinator: every node''s webhook.endpoint_health rows, with the node''s id (pg_dist_node.nodeid).';



-- API: Public
-- The one step that turns a Citus cluster's pg_webhook into one: run on
-- the coordinator by the extension's owner (a superuser), after
-- `create extension pg_webhook` there (Citus creates it on every node).
-- Run it again after adding a node (and replicate_reference_tables()),
-- before the node receives shards: every node is brought up to date.
create function webhook_cluster_enable()
returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_coordinator boolean;
    v_count integer;
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'citus') then
        raise exception 'webhook_cluster_enable needs the citus extension in this database'
            using errcode = '0A000', hint = 'Without Citus, pg_webhook needs no such step.';
    end if;
    execute 'select pg_catalog.citus_is_coordinator()' into v_coordinator;
    if not v_coordinator then
        raise exception 'webhook_cluster_enable runs on the coordinator' using errcode = '0A000';
    end if;
    if webhook._citus_table_kind('webhook.cluster_endpoints') is null then
        -- The trigger on it runs on every node's copy; Citus allows that
        -- only when told (it writes nothing distributed).
        perform pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
        execute 'select pg_catalog.create_reference_table(''webhook.cluster_endpoints'')';
    end if;
    -- Each node's worker registers its database's webhook-id namespace at
    -- its first claim; done here too, before the first distributed write:
    -- registering takes a lock that two connections of one distributed
    -- transaction (Citus opens several per node) would wait on in turn.
    execute 'select count(*) from pg_catalog.run_command_on_all_nodes(''select webhook._vxid()'')';
    -- Every endpoint's state, written again: each node creates what it
    -- lacks and changes what differs (a node added since gets them all).
    insert into webhook.cluster_endpoints (endpoint_id, state, updated_at)
    select e.id, webhook._endpoint_state(e.id), now() from webhook.endpoints e
    on conflict (endpoint_id) do update set state = excluded.state, updated_at = excluded.updated_at;
    get diagnostics v_count = row_count;
    return v_count;
end
$$;
comment on function webhook_cluster_enable() is
    'On a Citus coordinator: makes every endpoint change reach every node (see docs/production.md); run again after adding a node, before it receives shards. Returns the number of endpoints written to every node.';

revoke all on table webhook.cluster_endpoints from public;
revoke all on function webhook._hold_endpoint(bigint, text), webhook._endpoint_state(bigint),
    webhook._apply_endpoint_state(jsonb), webhook._cluster_apply(), webhook._cluster_role(),
    webhook._cluster_publish(bigint, boolean), webhook_cluster_enable(), webhook._cluster_stale(),
    webhook._cluster_behind() from public;
grant execute on function webhook._cluster_behind() to webhook_worker;
revoke all on function webhook._cluster_gather(text), webhook.cluster_delivery_log(timestamptz),
    webhook.cluster_endpoint_health() from public;
grant execute on function webhook.cluster_delivery_log(timestamptz), webhook.cluster_endpoint_health()
    to webhook_reader;

-- The invariants, with the cluster's (after the functions they call).
create or replace function webhook._invariant_violations()
returns table (object_id bigint, invariant text)
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select d.id, 'a delivery has its event in its event''s slot'
    from webhook.deliveries d
    where not exists (select from webhook.events e
                      where e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id)
    union all
    select d.id, 'a delivery carries its event''s webhook-id namespace'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    left join webhook.incarnations i on i.n = webhook._incarnation_of(e.txid)
    where webhook._event_namespace(e.txid, e.id_namespace, i.namespace) is distinct from d.event_namespace
    union all
    select d.id, 'a paused or disabled endpoint has no pending delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'pending' and (e.paused_at is not null or e.disabled_at is not null)
    union all
    select d.id, 'a sending endpoint has no paused delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.paused_at is null and e.disabled_at is null
    union all
    select d.id, 'a removed endpoint holds nothing'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.deleted_at is not null
    union all
    select s.id, 'a committed subscription period has its snapshots'
    from webhook.subscriptions s
    where s.from_xmin is null or (s.until_txid is not null and s.until_xmin is null)
    union all
    select e.id, 'a live endpoint has one open subscription period and a secret'
    from webhook.endpoints e
    where e.deleted_at is null
      and ((select count(*) from webhook.subscriptions s where s.endpoint_id = e.id and s.until_txid is null) <> 1
           or not exists (select from webhook.endpoint_secrets k where k.endpoint_id = e.id))
    union all
    select c, 'a Citus node has each endpoint as the coordinator last published it'
    from webhook._cluster_stale() c
    union all
    select g.gen, 'only the current generation''s slot is written by new events'
    from webhook.generations g
    where g.purged_at is not null
      and exists (select from webhook.events e where e.slot = g.gen % webhook._slots())
      and not exists (select from webhook.generations n where n.gen > g.gen and n.gen % webhook._slots() = g.gen % webhook._slots())
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: operator events before things break: webhook.endpoint.failing
-- (pg_webhook.failing_after failed attempts in a row), .recovered and
-- webhook.delivery.exhausted, beside webhook.endpoint.disabled; never
-- delivered to the endpoint they are about (see webhook._fan_out).
-- -----------------------------------------------------------------------------
-- pg_webhook::api::webhook::_failing_after
CREATE  FUNCTION webhook."_failing_after"() RETURNS INT /* i32 */
STRICT STABLE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'failing_after_wrapper';

-- API: Private
create function webhook._operator_event(
    p_type text,          -- the event type
    p_endpoint_id bigint, -- the endpoint it is about (p_data's endpoint_id)
    p_data jsonb          -- the event's data
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform pg_notify('pg_' || replace(p_type, '.', '_'), p_endpoint_id::text);
    perform webhook._enqueue(p_type, p_data, null);
end
$$;

-- API: Private
create function webhook._report_runs(
    p_failing bigint[],    -- endpoints now failing
    p_recovered jsonb[],   -- endpoints recovered, with the run that ended
    p_exhausted bigint[]   -- deliveries that failed for good
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    r record;
begin
    for r in
        select e.id, e.name, a.consecutive_failures, a.failing_since, a.last_failure_status, a.last_failure_error,
               a.failing_since + webhook._disable_after_s() * interval '1 second' as disables_at
        from webhook.endpoints e
        join webhook.endpoint_activity a on a.endpoint_id = e.id
        where e.id = any (p_failing) and e.deleted_at is null and e.disabled_at is null
        order by e.id
    loop
        perform webhook._operator_event('webhook.endpoint.failing', r.id,
            jsonb_build_object('endpoint_id', r.id, 'name', r.name,
                               'consecutive_failures', r.consecutive_failures, 'failing_since', r.failing_since,
                               'last_failure_status', r.last_failure_status, 'last_failure_error', r.last_failure_error,
                               'disables_at', r.disables_at,
                               'disables_in_seconds', greatest(0, floor(extract(epoch from r.disables_at - now())))));
    end loop;
    for r in
        select e.id, e.name, x.run
        from unnest(p_recovered) x(run)
        join webhook.endpoints e on e.id = (x.run ->> 'endpoint_id')::bigint
        order by e.id
    loop
        perform webhook._operator_event('webhook.endpoint.recovered', r.id,
            jsonb_build_object('endpoint_id', r.id, 'name', r.name, 'recovered_at', now(),
                               'failing_since', r.run -> 'failing_since',
                               'consecutive_failures', r.run -> 'consecutive_failures'));
    end loop;
    for r in
        select d.id, d.endpoint_id, e.name, d.event_id, webhook._webhook_id(d.event_id, d.event_namespace) as message_id,
               ev.event_type, d.attempt_count, d.last_status_code, d.last_error
        from webhook.deliveries d
        join webhook.events ev on ev.slot = d.event_slot and ev.txid = d.event_txid and ev.id = d.event_id
        join webhook.endpoints e on e.id = d.endpoint_id
        where d.id = any (p_exhausted) and d.status = 'failed' and ev.event_type not like 'webhook.%'
        order by d.id
    loop
        perform webhook._operator_event('webhook.delivery.exhausted', r.endpoint_id,
            jsonb_build_object('delivery_id', r.id, 'endpoint_id', r.endpoint_id, 'name', r.name,
                               'event_id', r.event_id, 'message_id', r.message_id, 'event_type', r.event_type,
                               'attempts', r.attempt_count, 'last_status_code', r.last_status_code,
                               'last_error', r.last_error));
    end loop;
end
$$;

revoke all on function webhook._failing_after(), webhook._operator_event(text, bigint, jsonb),
    webhook._report_runs(bigint[], jsonb[], bigint[]) from public;

-- -----------------------------------------------------------------------------
-- 0.3.0: one way to make an endpoint's rows, for webhook_subscribe and for a
-- Citus node's copy of the coordinator's endpoint.
-- -----------------------------------------------------------------------------
-- API: Private
create function webhook._insert_endpoint(
    p_id bigint,             -- its id
    p_name text,             -- its name
    p_url text,              -- the whole URL
    p_event_types text[],    -- checked patterns
    p_headers jsonb,         -- checked extra headers
    p_auth jsonb,            -- checked credentials, or null
    p_retry_policy jsonb,    -- checked policy, or null for the default
    p_timeout interval,      -- checked per-request timeout
    p_max_in_flight integer, -- checked share of a worker's slots, or null
    p_secret text            -- its signing secret
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    begin
        insert into webhook.endpoints (id, name, url, event_types, header_names, auth_type, retry_policy, timeout, max_in_flight)
        values (p_id, p_name, webhook._redact_url(p_url), p_event_types,
                array(select jsonb_object_keys(p_headers) order by 1), p_auth ->> 'type', p_retry_policy, p_timeout,
                p_max_in_flight);
    exception when unique_violation then
        raise exception 'an endpoint named % already exists', quote_literal(p_name)
            using errcode = '42710', hint = 'Pick another name, or unsubscribe the existing endpoint first.';
    end;
    insert into webhook.endpoint_secrets (endpoint_id, secret, headers, auth, url)
    values (p_id, p_secret, p_headers, p_auth, p_url);
    perform webhook._open_subscription(p_id, p_event_types);
end
$$;
revoke all on function webhook._insert_endpoint(bigint, text, text, text[], jsonb, jsonb, jsonb, interval, integer, text)
    from public;

-- -----------------------------------------------------------------------------
-- 0.3.0: filters in SQL and rate limits. webhook_watch(…, "when" => …) puts
-- the condition on the capture trigger (a row that does not match writes no
-- event); webhook_subscribe/webhook_update(…, filter => …) give a
-- subscription period a condition on the event, applied by the fan-out as
-- webhook_filter, a role with no rights (see 13_filters.sql);
-- webhook_filter_preview() is its dry run. max_per_second and burst limit
-- an endpoint's requests, all workers together (a token bucket per endpoint
-- in webhook.endpoint_rates, taken by the claim). New parameters: the
-- functions are dropped and made again.
-- -----------------------------------------------------------------------------
do $$
begin
    create role webhook_filter nologin;
exception when duplicate_object or unique_violation then null;
end
$$;

alter table webhook.endpoints add column filter text;
alter table webhook.subscriptions add column filter text;
alter table webhook.endpoints add column max_per_second integer, add column burst integer,
    add constraint endpoints_max_per_second_range check (max_per_second between 1 and 100000),
    add constraint endpoints_burst_range check (burst is null or (burst between 1 and 1000000 and max_per_second is not null));
comment on column webhook.endpoints.max_per_second is
    'Most requests per second to this endpoint, all workers together (a token bucket shared in webhook.endpoint_rates); null for no limit.';
comment on column webhook.endpoints.burst is
    'Most requests at once after a quiet spell (the bucket''s size); null for max_per_second.';
-- API: Private
create table webhook.endpoint_rates (
    endpoint_id    bigint primary key references webhook.endpoints (id),
    per_second     integer not null,
    tokens         double precision not null,
    updated_at     timestamptz not null
);
comment on table webhook.endpoint_rates is
    'The token bucket of each rate-limited endpoint (max_per_second): tokens left at updated_at; it fills at per_second up to the endpoint''s burst.';
revoke all on webhook.endpoint_rates from public;
comment on column webhook.endpoints.filter is
    'The current filter on the event: a SQL condition on data (jsonb) and event_type (text), or null for every event of its types. Its history is in webhook.subscriptions.';
comment on column webhook.subscriptions.filter is
    'The period''s filter on the event (a SQL condition on data and event_type), or null. It runs as webhook._filter_<id>, owned by webhook_filter, a role with no rights (see webhook._define_filter).';

-- API: Private
-- The name of subscription period p_subscription_id's filter function.
create function webhook._filter_name(
    p_subscription_id bigint -- the subscription period
) returns name
language sql immutable
return ('_filter_' || p_subscription_id)::name;

-- API: Private
-- On Citus, turns its DDL propagation off (p_off) for this transaction and
-- back to what it was (p_was): each node makes its own filter functions
-- (for its own subscription periods, applied there by
-- webhook._apply_endpoint_state), and Citus refuses DDL on a worker node
-- that it would propagate. Returns the setting as it was, null without
-- Citus.
create function webhook._citus_ddl_propagation(
    p_off boolean, -- true: off; false: back to p_was
    p_was text     -- the setting to go back to
) returns text
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_was text := current_setting('citus.enable_ddl_propagation', true);
begin
    if v_was is not null then
        perform set_config('citus.enable_ddl_propagation', case when p_off then 'off' else p_was end, true);
    end if;
    return v_was;
end
$$;

-- API: Private
-- Raises 42501 unless webhook_filter has no right at all: the filters and
-- the backfills' readers (14_backfill.sql) rely on running as it to read
-- nothing.
create function webhook._check_filter_role()
returns void
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    -- The role was made without rights, but roles are cluster-wide and
    -- made only when missing: one that someone made beforehand, or gave
    -- rights to since, would lend its rights to every filter.
    if exists (select from pg_roles r
               where r.rolname = 'webhook_filter'
                 and (r.rolsuper or r.rolcanlogin or r.rolcreaterole or r.rolcreatedb or r.rolreplication
                      or r.rolbypassrls
                      or exists (select from pg_auth_members m where m.member = r.oid or m.roleid = r.oid))) then
        raise exception 'the role webhook_filter has rights: filters run as it, so it must have none'
            using errcode = '42501',
                  hint = 'Make it NOLOGIN, NOSUPERUSER, NOCREATEROLE, NOCREATEDB, NOREPLICATION, NOBYPASSRLS, '
                         'and a member of no role.';
    end if;
end
$$;

-- API: Private
-- Makes p_filter the filter of subscription period p_subscription_id, or
-- raises what is wrong with it (its syntax, a name it does not know, a type
-- other than boolean, something it may not read).
create function webhook._define_filter(
    p_subscription_id bigint, -- the subscription period
    p_filter text             -- a SQL condition on data (jsonb) and event_type (text)
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_name name := webhook._filter_name(p_subscription_id);
    v_state text;
    v_message text;
    v_hint text := 'A filter is a SQL condition on data (the event''s data, jsonb) and event_type (text), '
                   'e.g. filter => ''data->>''''status'''' = ''''paid'''''', and reads nothing else.';
    v_propagation text;
begin
    if p_filter is null or btrim(p_filter) = '' then
        raise exception 'a filter must be a SQL condition' using errcode = '22023', hint = v_hint;
    end if;
    if octet_length(p_filter) > 8192 then
        raise exception 'a filter is at most 8 KiB' using errcode = '22023';
    end if;
    -- One condition, one statement: without a semicolon the function's
    -- body cannot hold a second one.
    if strpos(p_filter, ';') > 0 then
        raise exception 'a filter is one SQL condition: it has no ";"' using errcode = '42601', hint = v_hint;
    end if;
    perform webhook._check_filter_role();
    v_propagation := webhook._citus_ddl_propagation(true, null);
    begin
        -- Without ";" this is one statement, and RETURN its last clause.
        -- The condition goes on lines of its own, so that a -- comment in
        -- it ends where it does.
        execute format(E'create function webhook.%I(data jsonb, event_type text) returns boolean'
                       ' language sql stable security definer return (\n%s\n)', v_name, p_filter);
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        raise exception 'invalid filter: %', v_message using errcode = v_state, hint = v_hint;
    end;
    execute format('alter function webhook.%I(jsonb, text) owner to webhook_filter', v_name);
    execute format('revoke all on function webhook.%I(jsonb, text) from public', v_name);
    -- A part of the extension (dropped with it), kept out of pg_dump: the
    -- filter's text is in webhook.subscriptions, which pg_dump keeps. Added
    -- last, so that the rights it was added with (which pg_dump compares
    -- a member's with) are its final ones.
    execute format('alter extension pg_webhook add function webhook.%I(jsonb, text)', v_name);
    perform webhook._citus_ddl_propagation(false, v_propagation);
    -- PostgreSQL checks a statement's rights as it starts: a filter reading
    -- a table or a schema webhook_filter may not read fails on this empty
    -- event, whatever it would do with a real one. Other errors here are
    -- the empty event's (a cast of a missing key, say).
    begin
        perform webhook._filter_by_name(p_subscription_id, null, null);
    exception
        when insufficient_privilege then
            get stacked diagnostics v_message = message_text;
            raise exception 'invalid filter: %', v_message using errcode = '42501', hint = v_hint;
        when others then
            null;
    end;
end
$$;

-- API: Private
-- Calls subscription period p_subscription_id's filter by name: the
-- dispatcher's way for a period it does not know yet.
create function webhook._filter_by_name(
    p_subscription_id bigint, -- the subscription period
    p_data jsonb,             -- the event's data
    p_event_type text         -- its type
) returns boolean
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_matched boolean;
begin
    execute format('select webhook.%I($1, $2)', webhook._filter_name(p_subscription_id))
        into v_matched using p_data, p_event_type;
    return v_matched;
end
$$;

-- API: Private
-- Whether an event passes subscription period p_subscription_id's filter:
-- true or false; with p_safe, null when the filter raised an error on it
-- (the fan-out then does not deliver it, and warns), without, the error.
-- Catching costs a subtransaction per call, several times the filter's
-- own cost: the fan-out calls it without, and again with, for a chunk
-- where a filter failed. Rewritten by webhook._write_filter_match with a
-- branch per filter.
create function webhook._filter_match(
    p_subscription_id bigint, -- the subscription period
    p_data jsonb,             -- the event's data
    p_event_type text,        -- its type
    p_safe boolean            -- null for an error, rather than the error
) returns boolean
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if not p_safe then
        return webhook._filter_by_name(p_subscription_id, p_data, p_event_type);
    end if;
    begin
        return webhook._filter_by_name(p_subscription_id, p_data, p_event_type);
    exception when others then
        return null;
    end;
end
$$;

-- API: Private
-- The subscription periods webhook._filter_match has a branch for.
-- Rewritten with it.
create function webhook._filter_match_knows()
returns bigint[]
language sql immutable
return '{}'::bigint[];

-- API: Private
-- The subscription periods whose filter the fan-out may still call, in
-- order: those with a filter that are open, or that ended after the point
-- the fan-out has passed (an event committed before their end may still be
-- fanned out; the fan-out's own join, 06_fanout.sql, leaves the others out).
-- A period the fan-out has passed stays passed: its position only moves on.
create function webhook._filter_periods()
returns bigint[]
language sql stable
set search_path = pg_catalog, webhook, pg_temp
return array(select s.id from webhook.subscriptions s
             where s.filter is not null
               and (s.until_xmax is null
                    or s.until_xmax > coalesce((select f.prev_xmin from webhook.fanout_state f), 0))
             order by s.id);

-- API: Private
-- Rewrites webhook._filter_match (and webhook._filter_match_knows) with a
-- branch per subscription period whose filter the fan-out may still call
-- (webhook._filter_periods), and makes again the filter functions of those
-- that are missing (after a restore). Its text is made of subscription ids
-- alone. Concurrent rewrites queue on a transaction advisory lock (two at
-- once would fail on the function's row; a table lock taken after the
-- caller's own writes to the table would deadlock).
create function webhook._write_filter_match()
returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_ids bigint[];
    v_case text;
    v_body text;
    v_sub record;
    v_propagation text;
begin
    perform pg_advisory_xact_lock(hashtext('pg_webhook: webhook._filter_match'));
    v_ids := webhook._filter_periods();
    for v_sub in
        select s.id, s.filter from webhook.subscriptions s
        where s.id = any (v_ids)
          and to_regprocedure(format('webhook.%I(jsonb, text)', webhook._filter_name(s.id))) is null
    loop
        begin
            perform webhook._define_filter(v_sub.id, v_sub.filter);
        exception when others then
            -- Left missing: its events raise an error in the dispatcher
            -- (not delivered, with a warning), nobody else's do.
            raise warning 'the filter of subscription period % cannot be made again: %', v_sub.id, sqlerrm;
        end;
    end loop;
    v_case := E'case p_subscription_id\n'
              || coalesce((select string_agg(format(E'        when %s then return webhook.%I(p_data, p_event_type);\n',
                                                    i, webhook._filter_name(i)), '' order by i)
                           from unnest(v_ids) i), '')
              || E'        else return webhook._filter_by_name(p_subscription_id, p_data, p_event_type);\n'
              || E'    end case;\n';
    v_body := E'begin\n    if not p_safe then\n    ' || v_case || E'    end if;\n    begin\n    ' || v_case
              || E'    exception when others then\n        return null;\n    end;\nend\n';
    v_propagation := webhook._citus_ddl_propagation(true, null);
    execute format($f$create or replace function webhook._filter_match(
    p_subscription_id bigint, p_data jsonb, p_event_type text, p_safe boolean) returns boolean
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as %L$f$, v_body);
    execute format($f$create or replace function webhook._filter_match_knows() returns bigint[]
language sql immutable
return %L::bigint[]$f$, v_ids::text);
    perform webhook._citus_ddl_propagation(false, v_propagation);
end
$$;

-- API: Private
-- Rewrites the dispatcher when it does not know every filter the fan-out
-- may call (after a restore); true when it did. Run by the fan-out before
-- each chunk that a filter may apply to. (A branch for a period the
-- fan-out has passed is harmless: it is never taken; the maintenance
-- removes it, webhook._prune_filters.)
create function webhook._refresh_filter_match()
returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if webhook._filter_periods() <@ webhook._filter_match_knows() then
        return false;
    end if;
    perform webhook._write_filter_match();
    return true;
end
$$;

-- API: Private
-- Drops the filter functions of the subscription periods the fan-out has
-- passed, after rewriting the dispatcher without their branches; returns
-- how many (the maintenance's report). Without it every filter change
-- would leave a function and a dispatcher branch behind for good, and
-- each filtered event would walk past all of them. Safe while the fan-out
-- runs: a period is passed once a fan-out that moved past its end has
-- committed, and every later one reads that position (it locks its row
-- first) and never calls the period's filter again. The subscription
-- period itself, with its filter's text, stays (the history).
create function webhook._prune_filters()
returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_live bigint[];
    v_passed name[];
    v_name name;
    v_propagation text;
begin
    -- Not waited for: the maintenance calls this after its purge, holding
    -- locks on the log that a fan-out rewriting the dispatcher (holding
    -- this lock) may be waiting for. Busy: next time.
    if not pg_try_advisory_xact_lock(hashtext('pg_webhook: webhook._filter_match')) then
        return 0;
    end if;
    v_live := webhook._filter_periods();
    v_passed := array(select p.proname from pg_proc p
                      join webhook.subscriptions s on p.proname = webhook._filter_name(s.id)
                      where p.pronamespace = 'webhook'::regnamespace
                        and s.filter is not null and not s.id = any (v_live)
                      order by s.id);
    if cardinality(v_passed) = 0 and webhook._filter_match_knows() <@ v_live then
        return 0;
    end if;
    perform webhook._write_filter_match();
    v_propagation := webhook._citus_ddl_propagation(true, null);
    foreach v_name in array v_passed loop
        if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') then
            execute format('alter extension pg_webhook drop function webhook.%I(jsonb, text)', v_name);
        end if;
        execute format('drop function webhook.%I(jsonb, text)', v_name);
    end loop;
    perform webhook._citus_ddl_propagation(false, v_propagation);
    return cardinality(v_passed);
end
$$;

-- API: Public
create function webhook_filter_preview(
    filter text,                       -- a SQL condition on data (jsonb) and event_type (text)
    event_types text[] default '{*}',  -- among the events of these types
    last integer default 100           -- the last this many logged events, 1 to 10,000
) returns table (event_id bigint, event_type text, created_at timestamptz, matched boolean, error text)
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_filter text := $1;
    v_patterns text[] := webhook._check_patterns($2);
    v_last integer := $3;
    -- A period id no subscription has: this backend's, negative.
    v_id bigint := -pg_backend_pid();
    v_name name := webhook._filter_name(v_id);
    v_event record;
    v_propagation text;
begin
    if v_last is null or v_last not between 1 and 10000 then
        raise exception 'last must be between 1 and 10000, not %', coalesce(v_last::text, 'NULL') using errcode = '22023';
    end if;
    perform webhook._define_filter(v_id, v_filter);
    for v_event in
        select e.id, e.event_type, e.created_at, e.payload
        from webhook.events e
        where webhook._matches(v_patterns, e.event_type)
        order by e.txid desc, e.id desc
        limit v_last
    loop
        event_id := v_event.id;
        event_type := v_event.event_type;
        created_at := v_event.created_at;
        error := null;
        begin
            matched := webhook._filter_by_name(v_id, v_event.payload::jsonb, v_event.event_type);
        exception when others then
            matched := null;
            error := sqlerrm;
        end;
        return next;
    end loop;
    v_propagation := webhook._citus_ddl_propagation(true, null);
    execute format('alter extension pg_webhook drop function webhook.%I(jsonb, text)', v_name);
    execute format('drop function webhook.%I(jsonb, text)', v_name);
    perform webhook._citus_ddl_propagation(false, v_propagation);
end
$$;
comment on function webhook_filter_preview(text, text[], integer) is
    'A dry run of a filter: for each of the last logged events (of the given types), whether the filter matches it, or the error it raises on it (an event a filter raises an error on is not delivered). Changes nothing.';

drop function webhook_watch(regclass, text[], text, text[]);
drop function webhook._open_subscription(bigint, text[]);
drop function webhook._insert_endpoint(bigint, text, text, text[], jsonb, jsonb, jsonb, interval, integer, text);
drop function webhook._subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer);
drop function webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer);
drop function webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer);

-- API: Private
create function webhook._check_rate(
    p_max_per_second integer, -- requests per second, or null for no limit
    p_burst integer           -- the bucket's size, or null for one second's worth
) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_max_per_second is not null and p_max_per_second not between 1 and 100000 then
        raise exception 'max_per_second must be between 1 and 100000, not %', p_max_per_second
            using errcode = '22023', hint = 'Pass null for no limit.';
    end if;
    if p_burst is not null and p_burst not between 1 and 1000000 then
        raise exception 'burst must be between 1 and 1000000, not %', p_burst
            using errcode = '22023', hint = 'Pass null for one second''s worth (max_per_second).';
    end if;
    if p_burst is not null and p_max_per_second is null then
        raise exception 'burst needs max_per_second' using errcode = '22023';
    end if;
end
$$;

-- API: Private
create function webhook._refilled(
    p_tokens double precision, -- tokens at p_since
    p_since timestamptz,       -- when it had them
    p_per_second integer,      -- its rate
    p_burst integer,           -- its size
    p_at timestamptz           -- the time asked about
) returns double precision
language sql immutable parallel safe
return least(p_burst::double precision,
             p_tokens + p_per_second * greatest(extract(epoch from p_at - p_since)::double precision, 0));


-- API: Private
create function webhook._token_at(
    p_tokens double precision, -- tokens at p_since
    p_since timestamptz,       -- when it had them
    p_per_second integer       -- its rate
) returns timestamptz
language sql immutable parallel safe
return p_since + greatest(1 - p_tokens, 0) / p_per_second * interval '1 second';


-- API: Private
create function webhook._take_tokens(
    p_concurrency integer,      -- the worker's slots
    p_busy_endpoints bigint[],  -- endpoints this worker has deliveries in flight for ...
    p_busy_counts integer[]     -- ... and how many
) returns table (endpoint_id bigint, allowed integer)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    r record;
    v_bucket webhook.endpoint_rates;
    v_now timestamptz;
    v_tokens double precision;
begin
    -- Most databases limit no endpoint: one look at the endpoints, no more.
    if not exists (select from webhook.endpoints e where e.max_per_second is not null and e.is_active) then
        return;
    end if;
    for r in
        select q.endpoint_id as id, q.quota, e.max_per_second, coalesce(e.burst, e.max_per_second) as burst
        from webhook._endpoint_quotas(p_concurrency, p_busy_endpoints, p_busy_counts) q
        join webhook.endpoints e on e.id = q.endpoint_id
        where e.max_per_second is not null and q.quota > 0
        order by q.endpoint_id
    loop
        -- A new bucket starts full.
        insert into webhook.endpoint_rates (endpoint_id, per_second, tokens, updated_at)
        values (r.id, r.max_per_second, r.burst, clock_timestamp())
        on conflict on constraint endpoint_rates_pkey do nothing;
        select * into v_bucket from webhook.endpoint_rates b where b.endpoint_id = r.id for update;
        v_now := clock_timestamp();
        v_tokens := webhook._refilled(v_bucket.tokens, v_bucket.updated_at, r.max_per_second, r.burst, v_now);
        allowed := least(floor(v_tokens)::integer, r.quota);
        update webhook.endpoint_rates b
        set tokens = v_tokens - allowed, updated_at = v_now
        where b.endpoint_id = r.id;
        endpoint_id := r.id;
        return next;
    end loop;
end
$$;

-- API: Public
create function webhook_watch(
    tbl regclass,                                       -- the table to capture
    operations text[] default '{insert,update,delete}', -- any of insert, update, delete
    event_prefix text default null,                     -- event types <prefix>.created/.updated/.deleted; the table name when null
    columns text[] default null,                        -- the columns sent in new/old; all when null
    "when" text default null                            -- a condition on new and old; every row when null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_tbl regclass := $1;
    v_operations text[] := $2;
    v_columns text[] := $4;
    v_when text := $5;
    v_schema name;
    v_relname name;
    v_ops text[];
    v_events text;
    v_prefix text;
    v_missing text;
    v_args text[];
    v_citus text;
    v_state text;
    v_message text;
begin
    if v_tbl is null or v_operations is null then
        raise exception 'webhook_watch: tbl and operations must not be null' using errcode = '22004';
    end if;
    select t.nspname, t.relname into v_schema, v_relname from webhook._check_capturable(v_tbl) t;
    select array_agg(distinct lower(op) order by lower(op)) into v_ops from unnest(v_operations) as op;
    if v_ops is null or not v_ops <@ array['delete', 'insert', 'update'] or array_position(v_ops, null) is not null then
        raise exception 'operations must be a non-empty subset of {insert,update,delete}, not %', coalesce(v_operations::text, 'NULL')
            using errcode = '22023';
    end if;
    v_prefix := coalesce($3, v_relname);
    if v_prefix !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' or length(v_prefix) > 240 then
        raise exception 'invalid event prefix: %', quote_literal(v_prefix)
            using errcode = '22023',
                  hint = 'Pass event_prefix => ''order'' (dot-separated words of letters, digits, "_" or "-").';
    end if;
    if v_prefix = 'webhook' or v_prefix like 'webhook.%' then
        raise exception 'the event prefix "webhook" is reserved for pg_webhook''s own events'
            using errcode = '22023', hint = 'Pass another event_prefix.';
    end if;
    if v_columns is not null then
        if cardinality(v_columns) = 0 or array_position(v_columns, null) is not null then
            raise exception 'columns must list at least one column, or be null for all of them' using errcode = '22023';
        end if;
        select string_agg(quote_ident(c), ', ') into v_missing
        from unnest(v_columns) c
        where not exists (select from pg_attribute a
                          where a.attrelid = v_tbl and a.attname = c and a.attnum > 0 and not a.attisdropped);
        if v_missing is not null then
            raise exception 'table % has no column %', v_tbl, v_missing using errcode = '42703';
        end if;
        v_columns := array(select distinct c from unnest(v_columns) c order by 1);
    end if;
    -- Keywords only (validated above), never user text, go into the DDL;
    -- the prefix and column names go in as quoted literals.
    v_events := array_to_string(array(
        select case op when 'insert' then 'insert' when 'update' then 'update' when 'delete' then 'delete' end
        from unnest(v_ops) as op), ' or ');
    v_args := array[v_prefix] || coalesce(v_columns, '{}');
    v_citus := webhook._citus_table_kind(v_tbl);
    if v_citus = 'reference' then
        -- Its trigger would fire on every node's copy: one event per node.
        raise exception '% is a Citus reference table: it cannot be watched', v_tbl
            using errcode = '0A000',
                  hint = 'Watch a distributed table, or call webhook_publish() where the reference table is written.';
    elsif v_citus is not null then
        -- Citus puts the trigger on every shard, where it fires under the
        -- shard's name: it is told the table's. Citus refuses triggers on
        -- its tables unless told they are safe; this one only inserts into
        -- the node's own local tables (nothing distributed).
        v_args := array['@table', v_schema::text, v_relname::text] || v_args;
        perform set_config('citus.enable_unsafe_triggers', 'on', true);
    end if;
    if exists (select from pg_trigger t where t.tgrelid = v_tbl and t.tgname = 'webhook_capture') then
        execute format('drop trigger %I on %s', 'webhook_capture', v_tbl);
    end if;
    if v_when is not null and btrim(v_when) = '' then
        raise exception '"when" must be a condition on new and old, or null for every row' using errcode = '22023';
    end if;
    begin
        -- The condition goes on lines of its own, so that a -- comment in
        -- it ends where it does. Its names are bound now, with this
        -- function's search_path (pg_catalog first): a function of the
        -- caller's is named with its schema.
        execute format('create trigger %I after %s on %s for each row %s execute function webhook._capture(%s)',
                       'webhook_capture', v_events, v_tbl,
                       case when v_when is null then '' else E'when (\n' || v_when || E'\n)' end,
                       (select string_agg(quote_literal(a), ', ') from unnest(v_args) a));
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        if v_when is null or v_state = '42501' then
            raise; -- not the condition's fault
        end if;
        raise exception 'invalid "when" condition for %: %', v_tbl, v_message
            using errcode = v_state,
                  hint = 'A condition on the row: new.<column> on insert and update, old.<column> on update and delete. '
                         'Pass operations => ''{insert,update}'' for a condition on new, ''{update,delete}'' for one on '
                         'old, ''{update}'' for one on both.';
    end;
end
$$;
comment on function webhook_watch(regclass, text[], text, text[], text) is
    'Installs the row-change trigger on a table: events <prefix>.created, .updated, .deleted with data {table, schema, op, new, old} (new and old limited to the given columns), for the rows matching "when" (all when null). Calling it again replaces the previous settings.';

-- API: Private
create function webhook._open_subscription(
    p_endpoint_id bigint,   -- the endpoint
    p_event_types text[],   -- validated patterns
    p_filter text           -- a SQL condition on the event, or null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint;
begin
    insert into webhook.subscriptions (endpoint_id, event_types, from_txid, filter)
    values (p_endpoint_id, p_event_types, webhook._vxid(), p_filter)
    returning id into v_id;
    if p_filter is not null then
        perform webhook._define_filter(v_id, p_filter);
        perform webhook._write_filter_match();
    end if;
end
$$;

-- API: Private
create function webhook._insert_endpoint(
    p_id bigint,             -- its id
    p_name text,             -- its name
    p_url text,              -- the whole URL
    p_event_types text[],    -- checked patterns
    p_headers jsonb,         -- checked extra headers
    p_auth jsonb,            -- checked credentials, or null
    p_retry_policy jsonb,    -- checked policy, or null for the default
    p_timeout interval,      -- checked per-request timeout
    p_max_in_flight integer, -- checked share of a worker's slots, or null
    p_secret text,           -- its signing secret
    p_filter text,           -- a SQL condition on the event, or null
    p_max_per_second integer, -- checked rate limit, or null
    p_burst integer          -- checked burst, or null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    begin
        insert into webhook.endpoints (id, name, url, event_types, header_names, auth_type, retry_policy, timeout,
                                       max_in_flight, filter, max_per_second, burst)
        values (p_id, p_name, webhook._redact_url(p_url), p_event_types,
                array(select jsonb_object_keys(p_headers) order by 1), p_auth ->> 'type', p_retry_policy, p_timeout,
                p_max_in_flight, p_filter, p_max_per_second, p_burst);
    exception when unique_violation then
        raise exception 'an endpoint named % already exists', quote_literal(p_name)
            using errcode = '42710', hint = 'Pick another name, or unsubscribe the existing endpoint first.';
    end;
    insert into webhook.endpoint_secrets (endpoint_id, secret, headers, auth, url)
    values (p_id, p_secret, p_headers, p_auth, p_url);
    perform webhook._open_subscription(p_id, p_event_types, p_filter);
end
$$;

-- API: Private
create function webhook._subscribe(
    p_url text,
    p_event_types text[],
    p_name text,
    p_secret text,
    p_headers jsonb,
    p_retry_policy jsonb,
    p_timeout interval,
    p_auth jsonb,
    p_max_in_flight integer,
    p_filter text,
    p_max_per_second integer,
    p_burst integer,
    out o_endpoint_id bigint,
    out o_name text,
    out o_signing_secret text
)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_url text := webhook._check_url(p_url);
    v_patterns text[] := webhook._check_patterns(p_event_types);
    v_headers jsonb := webhook._check_headers(p_headers);
    v_policy jsonb := webhook._check_retry_policy(p_retry_policy);
    v_timeout interval := webhook._check_timeout(p_timeout);
    v_auth jsonb := webhook._check_auth(p_auth);
    v_max integer := webhook._check_max_in_flight(p_max_in_flight);
    v_secret text := case when p_secret is null then webhook._generate_secret() else webhook._check_secret(p_secret) end;
begin
    perform webhook._check_name(p_name);
    perform webhook._check_rate(p_max_per_second, p_burst);
    o_endpoint_id := nextval(pg_get_serial_sequence('webhook.endpoints', 'id'));
    o_name := coalesce(p_name, 'endpoint-' || o_endpoint_id);
    perform webhook._insert_endpoint(o_endpoint_id, o_name, v_url, v_patterns, v_headers, v_auth, v_policy, v_timeout,
                                     v_max, v_secret, nullif(btrim(p_filter), ''), p_max_per_second, p_burst);
    perform webhook._cluster_publish(o_endpoint_id, false);
    o_signing_secret := v_secret;
end
$$;

-- API: Public
create function webhook_subscribe(
    url text,                             -- http(s) URL of the receiver
    event_types text[] default '{*}',     -- patterns: '*', 'order.*', 'order.created'
    name text default null,               -- unique label; 'endpoint-<id>' when null
    secret text default null,             -- whsec_…; generated when null
    headers jsonb default '{}',           -- extra request headers
    retry_policy jsonb default null,      -- null for the default (about 24 hours)
    timeout interval default '10 seconds', -- per request
    auth jsonb default null,              -- {"type": "basic"|"bearer"|"api_key", …}
    max_in_flight integer default null,   -- this endpoint's share of a worker's slots; null for the default
    filter text default null,             -- a SQL condition on the event's data and event_type; null for all
    max_per_second integer default null,  -- most requests per second, all workers together; null for no limit
    burst integer default null            -- most at once after a quiet spell; null for max_per_second
) returns table (endpoint_id bigint, name text, signing_secret text)
language sql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
    select s.o_endpoint_id, s.o_name, s.o_signing_secret
    from webhook._subscribe($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) as s
$$;
comment on function webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer) is
    'Registers an endpoint and returns its id, name and signing secret (shown here and on rotation only). It receives the matching events committed from now on (those of its types that pass its filter).';

-- API: Public
create function webhook_update(
    endpoint_id bigint,             -- the endpoint to change
    url text default null,          -- new URL: used from the next attempt of every pending delivery
    event_types text[] default null, -- new patterns: for events committed after this
    name text default null,         -- new unique name
    headers jsonb default null,     -- replaces the extra headers
    retry_policy jsonb default null, -- replaces the policy; 'null'::jsonb for the default
    timeout interval default null,  -- per request
    is_active boolean default null, -- false disables it (deliveries wait), true re-enables it
    auth jsonb default null,        -- replaces the credentials; 'null'::jsonb removes them
    max_in_flight integer default null, -- its share of a worker's slots; 0 for the default
    filter text default null,       -- new filter on the event, for events committed after this; '' removes it
    max_per_second integer default null, -- new rate limit; 0 removes it
    burst integer default null      -- new burst; 0 for max_per_second
) returns webhook.endpoints
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_url text := $2;
    v_patterns text[] := $3;
    v_name text := $4;
    v_headers jsonb := $5;
    v_policy jsonb := $6;
    v_timeout interval := $7;
    v_active boolean := $8;
    v_auth jsonb := $9;
    v_max integer := $10;
    v_filter text := $11;
    v_rate integer := $12;
    v_burst integer := $13;
    v webhook.endpoints;
begin
    v := webhook._live_endpoint(v_id);
    perform from webhook.endpoints e where e.id = v_id for update;
    if v_url is not null then
        v_url := webhook._check_url(v_url);
        update webhook.endpoint_secrets s set url = v_url where s.endpoint_id = v_id;
        v.url := webhook._redact_url(v_url);
    end if;
    v_patterns := case when v_patterns is null then v.event_types else webhook._check_patterns(v_patterns) end;
    -- Null keeps the filter, '' removes it.
    v_filter := case when v_filter is null then v.filter else nullif(btrim(v_filter), '') end;
    -- New types or a new filter: a new subscription period, from this commit.
    if v_patterns is distinct from v.event_types or v_filter is distinct from v.filter then
        perform webhook._close_subscription(v_id);
        perform webhook._open_subscription(v_id, v_patterns, v_filter);
        v.event_types := v_patterns;
        v.filter := v_filter;
    end if;
    if v_name is not null then
        v.name := webhook._check_name(v_name);
    end if;
    if v_headers is not null then
        v_headers := webhook._check_headers(v_headers);
        update webhook.endpoint_secrets s set headers = v_headers where s.endpoint_id = v_id;
        v.header_names := array(select jsonb_object_keys(v_headers) order by 1);
    end if;
    if v_policy is not null then
        v.retry_policy := webhook._check_retry_policy(v_policy);
    end if;
    if v_timeout is not null then
        v.timeout := webhook._check_timeout(v_timeout);
    end if;
    if v_auth is not null then
        v_auth := webhook._check_auth(v_auth);
        update webhook.endpoint_secrets s set auth = v_auth where s.endpoint_id = v_id;
        v.auth_type := v_auth ->> 'type';
    end if;
    if v_max is not null then
        v.max_in_flight := nullif(webhook._check_max_in_flight(nullif(v_max, 0)), 0);
    end if;
    if v_rate is not null or v_burst is not null then
        v_rate := case when v_rate is null then v.max_per_second else nullif(v_rate, 0) end;
        -- The burst given, else the one it had (none once the rate is gone).
        v_burst := case when v_burst is not null then nullif(v_burst, 0) when v_rate is not null then v.burst end;
        perform webhook._check_rate(v_rate, v_burst);
        if (v_rate, v_burst) is distinct from (v.max_per_second, v.burst) then
            -- A new bucket, made at the next claim with the new settings.
            delete from webhook.endpoint_rates r where r.endpoint_id = v_id;
        end if;
        v.max_per_second := v_rate;
        v.burst := v_burst;
    end if;
    begin
        update webhook.endpoints e
        set url = v.url, event_types = v.event_types, name = v.name, header_names = v.header_names,
            auth_type = v.auth_type, retry_policy = v.retry_policy, timeout = v.timeout,
            max_in_flight = v.max_in_flight, filter = v.filter, max_per_second = v.max_per_second, burst = v.burst,
            updated_at = now()
        where e.id = v_id;
    exception when unique_violation then
        raise exception 'an endpoint named % already exists', quote_literal(v.name)
            using errcode = '42710', hint = 'Pick another name.';
    end;
    if v_active is true and v.disabled_at is not null then
        perform webhook._enable_endpoint(v_id);
    elsif v_active is false and v.disabled_at is null then
        perform webhook._disable_endpoint(v_id, 'disabled by webhook_update');
    end if;
    perform webhook._cluster_publish(v_id, false);
    select * into v from webhook.endpoints e where e.id = v_id;
    return v;
end
$$;
comment on function webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text,
                                   integer, integer) is
    'Changes an endpoint (named arguments; null leaves a setting unchanged) and returns it as it now is. New event types and a new filter apply to events committed after the change.';

-- API: Private
create function webhook._fan_out_chunk(
    st webhook.fanout_state, -- the fan-out's position and snapshot (cur)
    p_xip bigint[],          -- transactions running at prev, committed since
    p_lo bigint,             -- and those from p_lo ...
    p_hi bigint,             -- ... to p_hi
    p_filtered boolean,      -- whether a filter may apply (the events' data is read then)
    p_safe boolean,          -- catch each filter's error (and count it), rather than raise it
    out o_events bigint,
    out o_created bigint,
    out o_refused bigint[],
    out o_refusals bigint
)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    with chunk as (
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace, e.endpoint_id,
               case when p_filtered then e.payload::jsonb end as data
        from webhook.events e
        where e.txid = any (p_xip)
        union all
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace, e.endpoint_id,
               case when p_filtered then e.payload::jsonb end as data
        from webhook.events e
        where e.txid >= p_lo and e.txid <= p_hi and not e.txid = any (st.cur_xip)
    ), targets as (
        select c.id, c.slot, c.txid, ep.id as endpoint_id,
               webhook._event_namespace(c.txid, c.id_namespace, i.namespace) as event_namespace,
               (ep.paused_at is not null or ep.disabled_at is not null) as held,
               ep.deleted_at is not null as deleted,
               -- The period's filter: false leaves the event out, null is
               -- the filter's error on it.
               case when s.filter is null then true
                    else webhook._filter_match(s.id, c.data, c.event_type, p_safe)
               end as matched
        from chunk c
        join webhook.subscriptions s
          on (s.until_xmax is null or s.until_xmax > st.prev_xmin)
         and (c.txid = s.from_txid or not webhook._visible(c.txid, s.from_xmin, s.from_xmax, s.from_xip))
         and (s.until_txid is null
              or (c.txid <> s.until_txid and webhook._visible(c.txid, s.until_xmin, s.until_xmax, s.until_xip)))
         and webhook._matches(s.event_types, c.event_type)
        join webhook.endpoints ep on ep.id = s.endpoint_id
        -- Only events written before 0.3.0 need their incarnation's namespace.
        left join webhook.incarnations i on c.id_namespace is null and i.n = webhook._incarnation_of(c.txid)
        -- webhook_send_test and a backfill to one endpoint create their
        -- delivery themselves, for that endpoint.
        where c.event_type <> 'webhook.test' and c.endpoint_id is null
          -- An operator event does not go to the endpoint it is about; only
          -- pg_webhook's own events have their data read for it.
          and (c.event_type not like 'webhook.%'
               or ep.id is distinct from (select (o.payload ->> 'endpoint_id')::bigint
                                          from webhook.events o
                                          where o.slot = c.slot and o.txid = c.txid and o.id = c.id))
    ), opened as (
        insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status, event_namespace)
        select t.id, t.txid, t.slot, t.endpoint_id,
               case when t.held then 'paused' else 'pending' end::webhook.delivery_status, t.event_namespace
        from targets t
        where t.matched and not (t.held and t.deleted)
        -- In the events' order: the claim takes an endpoint's deliveries by
        -- due time, and those made together are due together, so their
        -- order in the index (the order they were made) is the order they go
        -- out in.
        order by t.txid, t.id
        returning 1
    ), cancelled as (
        -- An endpoint removed while paused or disabled can never send what it held.
        insert into webhook.deliveries (slot, event_id, event_txid, event_slot, endpoint_id, status, finalized_at,
                                        event_namespace)
        select t.slot, t.id, t.txid, t.slot, t.endpoint_id, 'cancelled', now(), t.event_namespace
        from targets t
        where t.matched and t.held and t.deleted
        returning 1
    )
    select (select count(*) from chunk), (select count(*) from opened) + (select count(*) from cancelled),
           (select array_agg(distinct t.endpoint_id order by t.endpoint_id) from targets t where t.matched is null),
           (select count(*) from targets t where t.matched is null)
    into o_events, o_created, o_refused, o_refusals;
end
$$;

create or replace function webhook._fan_out(
    p_max_events integer -- chunk size in events (whole transactions: a chunk may be larger)
) returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
-- One generic plan per session, as for the claim: planning the chunk's
-- statement across the partitions at every call cost more than running
-- it (a fan-out of one event: 1.3-2.5 ms with custom plans, 0.75 ms
-- generic; a 100,000-event transaction: the same 6.5 s either way), and
-- under load that planning sat in every claim, in front of the commit to
-- receipt latency. Sequential scans off, so that the generic plan reaches
-- the chunk's events by the (txid, id) index whatever the bounds.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set jit = off
as $$
declare
    st webhook.fanout_state;
    v_snap bigint[];
    v_resumed boolean;
    v_xip bigint[];
    v_lo bigint;
    v_hi bigint;
    v_more boolean;
    v_events bigint;
    v_created bigint;
    v_refused bigint[];
    v_refusals bigint;
    v_filtered boolean;
begin
    select * into st from webhook.fanout_state for update skip locked;
    if not found then
        if exists (select from webhook.fanout_state) then
            return 0; -- another worker is fanning out
        end if;
        -- First run: nothing is fanned out yet, every event is after "prev".
        insert into webhook.fanout_state (prev_xmin, prev_xmax, prev_xip) values (1, 1, '{}')
        on conflict do nothing;
        select * into st from webhook.fanout_state for update skip locked;
        if not found then
            return 0;
        end if;
    end if;
    v_resumed := st.cur_xmax is not null;
    -- Nothing committed since prev (the usual case while a backlog drains):
    -- return before taking a snapshot and planning the chunk's statement,
    -- which costs more than everything else here together. An event this
    -- statement cannot see yet is found by a later call.
    if not webhook._fanout_pending(st) then
        return 0;
    end if;
    -- Subscription filters (see 13_filters.sql) that may apply to this
    -- chunk: then every one has its function and dispatcher branch (a
    -- restore keeps the filters, not their functions), and the chunk's
    -- events their data.
    v_filtered := exists (select from webhook.subscriptions s
                          where s.filter is not null and (s.until_xmax is null or s.until_xmax > st.prev_xmin));
    if v_filtered then
        perform webhook._refresh_filter_match();
    end if;
    if not v_resumed then
        v_snap := webhook._vsnapshot();
        st.cur_xmin := v_snap[1];
        st.cur_xmax := v_snap[2];
        st.cur_xip := v_snap[3:];
        st.done_txid := 0;
    end if;

    -- Transactions running at prev that have committed since (visible in cur).
    v_xip := array(select x from unnest(st.prev_xip) x
                   where x > st.done_txid and webhook._visible(x, st.cur_xmin, st.cur_xmax, st.cur_xip)
                   order by x);
    -- Then those that started after prev, in txid order: this chunk ends
    -- with the transaction of its p_max_events-th event.
    v_lo := greatest(st.prev_xmax, st.done_txid + 1);
    select e.txid into v_hi
    from webhook.events e
    where e.txid >= v_lo and e.txid < st.cur_xmax and not e.txid = any (st.cur_xip)
    order by e.txid, e.id
    offset greatest(p_max_events - 1, 0) limit 1;
    v_more := found;
    if not v_more then
        v_hi := st.cur_xmax - 1;
    end if;

    -- Filters run without catching their errors (a subtransaction per call
    -- costs several times a filter); a chunk where one raised an error is
    -- made again, each error then caught alone. Without filters, no
    -- subtransaction at all.
    if not v_filtered then
        select * into v_events, v_created, v_refused, v_refusals
        from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, false, false);
    else
        begin
            select * into v_events, v_created, v_refused, v_refusals
            from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, true, false);
        exception when others then
            -- A filter's error (any other error comes again, and is raised).
            select * into v_events, v_created, v_refused, v_refusals
            from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, true, true);
        end;
    end if;
    if v_refusals > 0 then
        -- The worker logs it; webhook_filter_preview() tells which events and why.
        raise warning 'the filters of endpoints % raised an error on % deliveries, which were not made',
            array_to_string(v_refused, ', '), v_refusals
            using hint = 'See which events and why with webhook_filter_preview(''<the filter>''), then fix the filter '
                         'with webhook_update(<endpoint>, filter => …) and resend them with webhook_replay().';
    end if;

    if v_more then
        update webhook.fanout_state
        set cur_xmin = st.cur_xmin, cur_xmax = st.cur_xmax, cur_xip = st.cur_xip, done_txid = v_hi, updated_at = now();
    elsif v_events > 0 or v_resumed then
        update webhook.fanout_state
        set prev_xmin = st.cur_xmin, prev_xmax = st.cur_xmax, prev_xip = st.cur_xip,
            cur_xmin = null, cur_xmax = null, cur_xip = null, done_txid = 0, updated_at = now();
    end if;
    -- Else nothing was committed since prev: keep prev (no write at all), so
    -- that an idle worker's fan-out is one read.
    return v_created;
end
$$;
comment on function webhook._fan_out(integer) is
    'Creates the deliveries of the next chunk of committed events (whole transactions, in commit-snapshot order); returns how many. Called by webhook._claim_deliveries.';

create or replace function webhook._endpoint_state(
    p_endpoint_id bigint -- the endpoint
) returns jsonb
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'url', s.url,
        'event_types', to_jsonb(e.event_types),
        'headers', s.headers,
        'auth', s.auth,
        'retry_policy', e.retry_policy,
        -- Times and intervals as numbers and UTC text: their text form
        -- depends on each session's TimeZone and IntervalStyle.
        'timeout_us', (extract(epoch from e.timeout) * 1000000)::bigint,
        'max_in_flight', e.max_in_flight,
        'filter', e.filter,
        'max_per_second', e.max_per_second,
        'burst', e.burst,
        'paused', e.paused_at is not null,
        'disabled_reason', e.disabled_reason,
        'deleted', e.deleted_at is not null,
        'secret', s.secret,
        'previous_secret', s.previous_secret,
        'previous_expires_at',
            to_char(s.previous_expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    from webhook.endpoints e
    -- The secrets' row of a removed endpoint goes once nothing is left to send.
    left join webhook.endpoint_secrets s on s.endpoint_id = e.id
    where e.id = p_endpoint_id
$$;

create or replace function webhook._apply_endpoint_state(
    p_state jsonb -- from webhook._endpoint_state() on the coordinator
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := (p_state ->> 'id')::bigint;
    v_local jsonb := webhook._endpoint_state(v_id);
    v_patterns text[] := array(select jsonb_array_elements_text(p_state -> 'event_types'));
    -- What webhook_update sets (the rest is state, secrets and identity).
    v_settings text[] := array['url', 'event_types', 'name', 'headers', 'auth', 'retry_policy', 'timeout_us',
                               'max_in_flight', 'filter', 'max_per_second', 'burst'];
    v_timeout interval := (p_state ->> 'timeout_us')::bigint * interval '1 microsecond';
    v_paused boolean;
    v_reason text;
begin
    if v_local is not distinct from p_state then
        return false;
    end if;
    if v_local is null then
        if (p_state ->> 'deleted')::boolean then
            return false; -- removed before this node knew it: nothing to send
        end if;
        -- As webhook._subscribe makes it, with the coordinator's id and secret
        -- (the coordinator checked the settings).
        perform webhook._insert_endpoint(v_id, p_state ->> 'name', p_state ->> 'url', v_patterns, p_state -> 'headers',
                                         nullif(p_state -> 'auth', 'null'::jsonb),
                                         nullif(p_state -> 'retry_policy', 'null'::jsonb), v_timeout,
                                         (p_state ->> 'max_in_flight')::integer, p_state ->> 'secret',
                                         p_state ->> 'filter', (p_state ->> 'max_per_second')::integer,
                                         (p_state ->> 'burst')::integer);
        -- Ids are the coordinator's: keep this node's sequence past them.
        perform setval(pg_get_serial_sequence('webhook.endpoints', 'id'), (select max(e.id) from webhook.endpoints e));
        v_local := webhook._endpoint_state(v_id);
    end if;
    if (v_local ->> 'deleted')::boolean then
        return true; -- a removed endpoint changes no more
    end if;
    if (p_state ->> 'deleted')::boolean then
        perform @extschema@.webhook_unsubscribe(v_id);
        return true;
    end if;
    if (select jsonb_object_agg(k, v_local -> k) from unnest(v_settings) k)
       is distinct from (select jsonb_object_agg(k, p_state -> k) from unnest(v_settings) k) then
        perform @extschema@.webhook_update(v_id,
                               url => p_state ->> 'url',
                               event_types => v_patterns,
                               name => p_state ->> 'name',
                               headers => p_state -> 'headers',
                               retry_policy => p_state -> 'retry_policy',
                               timeout => v_timeout,
                               auth => p_state -> 'auth',
                               max_in_flight => coalesce((p_state ->> 'max_in_flight')::integer, 0),
                               filter => coalesce(p_state ->> 'filter', ''),
                               max_per_second => coalesce((p_state ->> 'max_per_second')::integer, 0),
                               burst => coalesce((p_state ->> 'burst')::integer, 0));
    end if;
    update webhook.endpoint_secrets s
    set secret = p_state ->> 'secret',
        previous_secret = p_state ->> 'previous_secret',
        previous_expires_at = (p_state ->> 'previous_expires_at')::timestamptz
    where s.endpoint_id = v_id
      and (s.secret, s.previous_secret, s.previous_expires_at)
          is distinct from (p_state ->> 'secret', p_state ->> 'previous_secret',
                            (p_state ->> 'previous_expires_at')::timestamptz);
    -- Held (paused, disabled) as the coordinator holds it: released first
    -- when it holds less, then held again as it says.
    v_paused := (v_local ->> 'paused')::boolean;
    v_reason := v_local ->> 'disabled_reason';
    if (v_paused and not (p_state ->> 'paused')::boolean)
       or v_reason is distinct from (p_state ->> 'disabled_reason') then
        perform webhook._enable_endpoint(v_id);
        v_paused := false;
        v_reason := null;
    end if;
    if (p_state ->> 'paused')::boolean and not v_paused then
        perform @extschema@.webhook_pause(v_id);
    end if;
    if p_state ->> 'disabled_reason' is not null and v_reason is null then
        -- Held, without a second webhook.endpoint.disabled event: the node
        -- where it was disabled sent it.
        perform webhook._hold_endpoint(v_id, p_state ->> 'disabled_reason');
    end if;
    return true;
end
$$;

create or replace function webhook._claim_deliveries(
    p_worker_id text,           -- recorded in leased_by
    p_limit integer,            -- at most this many rows
    p_lease_margin interval,    -- added to each endpoint's timeout
    p_concurrency integer,      -- the worker's slots, shared among endpoints with work
    p_busy_endpoints bigint[],  -- endpoints this worker has deliveries in flight for ...
    p_busy_counts integer[],    -- ... and how many
    p_fanout_events integer,    -- most events to fan out first
    p_max_bytes bigint          -- most payload bytes (the first delivery is claimed whatever its size)
) returns table (
    row_kind text,
    delivery_id bigint,
    lease_token bigint,
    attempt_number integer,
    event_id bigint,
    message_namespace text,
    event_type text,
    event_created_at timestamptz,
    payload text,
    endpoint_id bigint,
    url text,
    headers text,
    timeout_ms integer,
    secrets text[],
    max_attempts integer,
    initial_delay_ms bigint,
    max_delay_ms bigint,
    backoff_multiplier double precision
)
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
-- Every row these statements touch is found by key; see "Plans" above.
set enable_seqscan = off
set jit = off
-- One plan, made once per session: planning the statement (partitions
-- included) costs more than running it for a hundred rows, and its shape
-- does not depend on the arguments.
set plan_cache_mode = force_generic_plan
as $$
declare
    -- Lease tokens are this claim's random seed hashed with each delivery
    -- id: distinct within the claim, unrelated across claims, and one call
    -- of the random source per claim instead of one per row (which cost
    -- 15,000 instructions per delivery).
    v_seed bigint := ('x' || translate(left(gen_random_uuid()::text, 18), '-', ''))::bit(64)::bigint;
    v_limited bigint[];
    v_allowed integer[];
begin
    -- A claim's commit need not wait for its WAL flush. Were the server to
    -- crash before the flush, the lease would be lost and the delivery sent
    -- again: a duplicate, which at-least-once allows; and a lost fan-out is
    -- lost together with the position it advanced, so it runs again. A
    -- later (durable) commit of the attempt flushes the claim's WAL first.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    if p_fanout_events > 0 then
        perform webhook._fan_out(p_fanout_events);
    end if;
    -- A backfill's batch (14_backfill.sql), when one runs and has room:
    -- its deliveries to one endpoint are claimable by the statement below.
    if exists (select from webhook.backfills b where b.status = 'running') then
        perform webhook._backfill_step();
    end if;
    select array_agg(t.endpoint_id), array_agg(t.allowed) into v_limited, v_allowed
    from webhook._take_tokens(p_concurrency, p_busy_endpoints, p_busy_counts) t;
    return query
    with quotas as (
        -- A rate-limited endpoint takes no more than the tokens it got.
        select q.endpoint_id as id, least(q.quota, coalesce(a.allowed, q.quota)) as quota
        from webhook._endpoint_quotas(p_concurrency, p_busy_endpoints, p_busy_counts) q
        left join unnest(v_limited, v_allowed) as a(endpoint_id, allowed) on a.endpoint_id = q.endpoint_id
    ), fair as (
        select greatest(1, ceil(p_limit::numeric / greatest(count(*), 1)))::integer as share
        from quotas q
        where q.quota > 0
    ), due as (
        -- The events' columns come along (a json value stays a pointer to
        -- its TOAST data until the final select reads it), so that each
        -- event is found once.
        select d.id, d.next_attempt_at, ev.id as event_id, d.event_namespace, ev.event_type, ev.created_at,
               ev.payload, ev.payload_bytes
        from quotas q
        cross join fair
        cross join lateral (
            select d.id, d.next_attempt_at, d.event_slot, d.event_txid, d.event_id, d.event_namespace
            from webhook.deliveries_open d
            where d.endpoint_id = q.id
              and d.status = 'pending'
              and d.next_attempt_at <= now()
              and (d.lease_until is null or d.lease_until <= now())
            order by d.next_attempt_at
            limit greatest(least(q.quota, fair.share, p_limit), 0)
            for update skip locked
        ) d
        -- Each delivery's event by its key, one index probe each: a lateral
        -- subquery with "offset 0" is planned as a nested loop whatever the
        -- estimates. As a plain join, the generic plan (made once, from the
        -- statistics of the moment) sometimes expected thousands of
        -- deliveries and hashed the whole event table for every claim:
        -- 150 ms instead of 5 for a claim of 100 beside 100,000 events,
        -- which made the drain benchmark swing between 2,300 and 8,000/s.
        cross join lateral (
            select ev.id, ev.event_type, ev.created_at, ev.payload, ev.payload_bytes
            from webhook.events ev
            where ev.slot = d.event_slot and ev.txid = d.event_txid and ev.id = d.event_id
            offset 0
        ) ev
        order by d.next_attempt_at
        limit p_limit
    ), fitting as (
        -- Memory is bounded by bytes, not rows: the oldest deliveries whose
        -- payloads fit in p_max_bytes, and at least one. The rows left out
        -- were locked, not leased: their locks go with this transaction.
        -- Usually all of them fit: then the running sum (a sort and a
        -- window over the batch) is skipped; each branch is gated by the
        -- batch's total, worked out once.
        select due.id, due.next_attempt_at, due.event_id, due.event_namespace, due.event_type, due.created_at,
               due.payload, due.payload_bytes
        from due
        where (select coalesce(sum(t.payload_bytes), 0) from due t) <= p_max_bytes
        union all
        select f.id, f.next_attempt_at, f.event_id, f.event_namespace, f.event_type, f.created_at, f.payload,
               f.payload_bytes
        from (select due.*,
                     sum(due.payload_bytes) over w as total,
                     row_number() over w as n
              from due
              window w as (order by due.next_attempt_at, due.id)) f
        where (select coalesce(sum(t.payload_bytes), 0) from due t) > p_max_bytes
          and (f.n = 1 or f.total <= p_max_bytes)
    ), claimed as (
        update webhook.deliveries_open d
        set lease_until = now() + ep.timeout + p_lease_margin,
            -- Random, one per delivery: a token cannot be guessed from
            -- another one or from a transaction id (60 random bits of a v4 UUID).
            lease_token = hashint8extended(d.id, v_seed),
            leased_by = p_worker_id,
            -- An attempt counts when it is claimed, not when it is recorded:
            -- a delivery whose sending kills the worker runs out of attempts
            -- (the worker then records it failed without sending it again)
            -- instead of being claimed again forever.
            attempt_count = d.attempt_count + 1
        from webhook.endpoints ep
        -- "= any (array)", not a join with due: see "Plans" above.
        where d.id = any (array(select f.id from fitting f)) and ep.id = d.endpoint_id
        returning d.id, d.lease_token, d.attempt_count, d.endpoint_id
    ), refunded as (
        -- Tokens taken for deliveries this claim did not take (fewer were
        -- due, another worker held some, the fair share, the bytes) go back.
        update webhook.endpoint_rates b
        set tokens = b.tokens + (a.allowed - a.taken)
        from (select l.endpoint_id, l.allowed,
                     (select count(*) from claimed c where c.endpoint_id = l.endpoint_id) as taken
              from unnest(v_limited, v_allowed) as l(endpoint_id, allowed)) a
        where b.endpoint_id = a.endpoint_id and a.allowed > a.taken
    ), targets as materialized (
        -- What the worker needs of each endpoint, worked out once per
        -- endpoint and not once per delivery.
        select ep.id,
               -- The whole URL (endpoints.url hides its path); an empty one,
               -- which the worker records as a failure, if the secrets'
               -- row is gone (it cannot be: see the secret below).
               coalesce(s.url, '') as url,
               (coalesce(s.headers, '{}') || coalesce(webhook._auth_header(s.auth), '{}'))::text as headers,
               (extract(epoch from ep.timeout) * 1000)::integer as timeout_ms,
               -- No secret (it cannot happen: it is dropped only when nothing is
               -- left to send) makes the worker record a failure, not lose the row.
               case when s.secret is null then '{}'::text[]
                    when s.previous_secret is not null and s.previous_expires_at > now()
                    then array[s.secret, s.previous_secret]
                    else array[s.secret] end as secrets,
               (ep.retry_policy ->> 'max_attempts')::integer as max_attempts,
               (extract(epoch from (ep.retry_policy ->> 'initial_delay')::interval) * 1000)::bigint as initial_delay_ms,
               (extract(epoch from (ep.retry_policy ->> 'max_delay')::interval) * 1000)::bigint as max_delay_ms,
               (ep.retry_policy ->> 'backoff_multiplier')::double precision as backoff_multiplier
        from quotas q
        join webhook.endpoints ep on ep.id = q.id
        left join webhook.endpoint_secrets s on s.endpoint_id = q.id
    )
    -- The endpoints first, then the deliveries (see above), oldest first:
    -- the worker starts them in this order (a join returns rows in whatever
    -- order its plan makes).
    select 'endpoint', null::bigint, null::bigint, null::integer, null::bigint, null::text, null::text,
           null::timestamptz, null::text,
           t.id, t.url, t.headers, t.timeout_ms, t.secrets, t.max_attempts,
           t.initial_delay_ms, t.max_delay_ms, t.backoff_multiplier
    from targets t
    where t.id = any (array(select c.endpoint_id from claimed c))
    union all
    (select 'delivery',
           c.id,
           c.lease_token,
           c.attempt_count,
           f.event_id,
           -- The webhook-id's namespace (the worker puts the id together);
           -- null for an event of pg_webhook 0.1, whose message id is its number.
           webhook._namespace_hex(f.event_namespace),
           f.event_type,
           f.created_at,
           f.payload::text,
           c.endpoint_id,
           null::text, null::text, null::integer, null::text[], null::integer,
           null::bigint, null::bigint, null::double precision
    from claimed c
    join fitting f on f.id = c.id
    order by f.next_attempt_at, f.id);
end
$$;

create or replace function webhook._next_due_ms(
    p_concurrency integer,      -- the worker's slots
    p_busy_endpoints bigint[],  -- endpoints this worker has deliveries in flight for ...
    p_busy_counts integer[]     -- ... and how many
) returns bigint
language plpgsql stable
security definer
set search_path = pg_catalog, webhook, pg_temp
-- Called every few milliseconds while the worker lingers: one plan per
-- session (as the claim), index access whatever the statistics.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set jit = off
as $$
declare
    st webhook.fanout_state;
    v_next timestamptz;
begin
    select * into st from webhook.fanout_state;
    if not found then
        if exists (select from webhook.events) then
            return 0;
        end if;
    elsif webhook._fanout_pending(st) then
        return 0;
    end if;
    -- A backfill may read its next batch (the claim does it).
    if exists (select from webhook.backfills b where b.status = 'running') and webhook._backfill_ready() then
        return 0;
    end if;
    -- A rate-limited endpoint's next delivery waits for its next token too
    -- (else the worker would claim at once, get nothing, and spin).
    select min(greatest(n.next_attempt_at, webhook._token_at(b.tokens, b.updated_at, b.per_second))) into v_next
    from webhook._endpoint_quotas(p_concurrency, p_busy_endpoints, p_busy_counts) q
    cross join lateral (
        select d.next_attempt_at from webhook.deliveries_open d
        where d.endpoint_id = q.endpoint_id and d.status = 'pending'
          and (d.lease_until is null or d.lease_until <= now())
        order by d.next_attempt_at
        limit 1
    ) n
    left join webhook.endpoint_rates b on b.endpoint_id = q.endpoint_id
    where q.quota > 0;
    if v_next is null then
        return null;
    end if;
    return greatest(0, ceil(extract(epoch from (v_next - clock_timestamp())) * 1000))::bigint;
end
$$;

revoke all on function webhook._filter_name(bigint), webhook._define_filter(bigint, text),
    webhook._citus_ddl_propagation(boolean, text),
    webhook._fan_out_chunk(webhook.fanout_state, bigint[], bigint, bigint, boolean, boolean),
    webhook._check_rate(integer, integer),
    webhook._refilled(double precision, timestamptz, integer, integer, timestamptz),
    webhook._token_at(double precision, timestamptz, integer),
    webhook._take_tokens(integer, bigint[], integer[]),
    webhook._filter_by_name(bigint, jsonb, text), webhook._filter_match(bigint, jsonb, text, boolean),
    webhook._filter_match_knows(), webhook._write_filter_match(), webhook._refresh_filter_match(),
    webhook._filter_periods(), webhook._prune_filters(),
    webhook_filter_preview(text, text[], integer),
    webhook_watch(regclass, text[], text, text[], text), webhook._open_subscription(bigint, text[], text),
    webhook._insert_endpoint(bigint, text, text, text[], jsonb, jsonb, jsonb, interval, integer, text, text, integer,
                             integer),
    webhook._subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer),
    webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer),
    webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text, integer, integer)
    from public;
grant execute on function
    webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer),
    webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text, integer, integer),
    webhook_filter_preview(text, text[], integer),
    webhook_watch(regclass, text[], text, text[], text)
    to webhook_admin;

-- -----------------------------------------------------------------------------
-- 0.3.0: backfill without a replication slot. webhook_backfill() sends a
-- table's rows as <prefix>.read events, a batch per claim, read with the
-- rights of the role that asks (see 14_backfill.sql); an event may be for
-- one endpoint alone (events.endpoint_id), which the fan-out leaves out.
-- -----------------------------------------------------------------------------
alter table webhook.events add column endpoint_id bigint;
comment on column webhook.events.endpoint_id is
    'The one endpoint the event is for (a backfill to one endpoint), whose delivery is made with it; null: every endpoint subscribed to its type, through the fan-out.';

-- API: Private
create function webhook._check_capturable(
    p_tbl regclass,   -- the table
    out nspname name,
    out relname name
)
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_relkind "char";
begin
    if p_tbl is null then
        raise exception 'tbl must not be null' using errcode = '22004';
    end if;
    select c.relkind, n.nspname, c.relname into v_relkind, nspname, relname
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.oid = p_tbl;
    if v_relkind is distinct from 'r' and v_relkind is distinct from 'p' then
        raise exception '% is not a table', p_tbl using errcode = '42809';
    end if;
    if nspname = 'webhook' then
        raise exception 'the tables of pg_webhook itself cannot be watched or backfilled' using errcode = '22023';
    end if;
    if nspname in ('pg_catalog', 'information_schema') or nspname like 'pg\_toast%' then
        raise exception 'system catalogs cannot be watched or backfilled' using errcode = '22023';
    end if;
end
$$;

-- API: Private
create sequence webhook.backfills_id_seq;

-- API: Public
create table webhook.backfills (
    id            bigint primary key default nextval('webhook.backfills_id_seq'),
    source_table  regclass not null,
    endpoint_id   bigint,
    event_type    text not null,
    condition     text,
    columns       text[],
    key_columns   text[] not null,
    requested_by  name not null,
    status        text not null default 'running',
    last_key      jsonb,
    rows_read     bigint not null default 0,
    rows_sent     bigint not null default 0,
    rows_estimate bigint,
    last_txid     bigint,
    error         text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    finished_at   timestamptz,
    constraint backfills_status check (status in ('running', 'done', 'cancelled', 'failed')),
    constraint backfills_finished check ((status = 'running') = (finished_at is null))
);
alter sequence webhook.backfills_id_seq owned by webhook.backfills.id;
-- The claim asks at every call whether a backfill runs.
create index backfills_running on webhook.backfills (updated_at) where status = 'running';
comment on table webhook.backfills is
    'One row per webhook_backfill: what it sends, to whom, and how far it got. The progress of a running one is rows_read against rows_estimate.';
comment on column webhook.backfills.source_table is 'The table whose rows are sent.';
comment on column webhook.backfills.endpoint_id is
    'The one endpoint the events go to (whatever its event types and filter); null: every endpoint subscribed to event_type, through the fan-out.';
comment on column webhook.backfills.event_type is '<prefix>.read, the prefix of the table''s watch (its name when not watched).';
comment on column webhook.backfills.condition is 'The "where" condition on the rows; null for every row.';
comment on column webhook.backfills.columns is 'The columns sent in new: the watch''s; null for all.';
comment on column webhook.backfills.key_columns is 'The primary key, which the backfill walks in order.';
comment on column webhook.backfills.requested_by is 'The role that asked for it: the rows are read with its rights.';
comment on column webhook.backfills.status is
    'running, then done (every row read), cancelled (webhook_backfill_cancel, or its endpoint removed) or failed (error says why).';
comment on column webhook.backfills.last_key is 'The key of the last row read: the next batch starts after it. Null before the first.';
comment on column webhook.backfills.rows_read is 'Rows read so far (whether or not they matched "where").';
comment on column webhook.backfills.rows_sent is 'Events written so far (rows that matched).';
comment on column webhook.backfills.rows_estimate is 'The table''s row count as PostgreSQL estimated it when the backfill began; null if never analyzed.';
comment on column webhook.backfills.error is
    'Why it failed; for a running one, the last batch that gave up (a lock on the table not had within 100 ms, a deadlock), tried again a second later.';
comment on column webhook.backfills.last_txid is 'The transaction of the last batch (a backfill to every endpoint waits for its fan-out).';

-- API: Private
-- How many open deliveries an endpoint may hold before a backfill sending
-- to it waits: a bound on what a backfill queues ahead of live events, and
-- twice a batch (webhook._backfill_step), so the worker always has a batch
-- to send while the next one is read.
create function webhook._backfill_window()
returns integer
language sql immutable
return 2000;

-- API: Private
-- The arguments of a table's capture trigger (webhook_watch), without the
-- Citus '@table' prefix: the event prefix, then the columns sent; null
-- when the table is not watched.
create function webhook._watch_args(
    p_tbl regclass -- the table
) returns text[]
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_raw bytea;
    v_args text[] := '{}';
    v_at integer;
begin
    select t.tgargs into v_raw from pg_trigger t where t.tgrelid = p_tbl and t.tgname = 'webhook_capture';
    if not found then
        return null;
    end if;
    -- tgargs holds each argument followed by a zero byte.
    loop
        v_at := position('\x00'::bytea in v_raw);
        exit when v_at = 0;
        v_args := v_args || convert_from(substring(v_raw from 1 for v_at - 1), getdatabaseencoding());
        v_raw := substring(v_raw from v_at + 1);
    end loop;
    if v_args[1] = '@table' then
        v_args := v_args[4:];
    end if;
    return v_args;
end
$$;

-- API: Private
-- The number of open deliveries endpoint p_endpoint_id holds, counted up
-- to p_most (two index probes: pending and paused ones).
create function webhook._open_deliveries(
    p_endpoint_id bigint, -- the endpoint
    p_most integer        -- stop counting here
) returns integer
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select ((select count(*) from (select from webhook.deliveries_open d
                                   where d.endpoint_id = p_endpoint_id and d.status = 'pending'
                                   limit p_most) p)
          + (select count(*) from (select from webhook.deliveries_open d
                                   where d.endpoint_id = p_endpoint_id and d.status = 'paused'
                                   limit p_most) q))::integer
$$;

-- API: Private
-- The endpoints subscribed now to event type p_event_type (an open period,
-- not removed): a backfill to every endpoint goes to them.
create function webhook._subscribed_now(
    p_event_type text -- an event type
) returns setof bigint
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select s.endpoint_id
    from webhook.subscriptions s
    join webhook.endpoints ep on ep.id = s.endpoint_id
    where s.until_txid is null and ep.deleted_at is null
      and webhook._matches(s.event_types, p_event_type)
$$;

-- API: Private
-- How many rows backfill p_backfill may send now: the window left by its
-- endpoint (for a backfill to all, by the fullest endpoint subscribed to
-- its events that is not paused or disabled: one held by its operator
-- would otherwise hold every other one's backfill for as long, while its
-- own deliveries wait in any case; by the fullest of all when every one is
-- held); none until its last batch is fanned out, nor for a second after a
-- batch gave up on a lock.
create function webhook._backfill_room(
    p_backfill webhook.backfills -- a running backfill
) returns integer
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_window integer := webhook._backfill_window();
    st webhook.fanout_state;
begin
    -- A batch that gave up on a lock (webhook._backfill_step) is tried
    -- again a second later, not at every claim.
    if p_backfill.error is not null and p_backfill.updated_at > clock_timestamp() - interval '1 second' then
        return 0;
    end if;
    if p_backfill.endpoint_id is not null then
        return v_window - webhook._open_deliveries(p_backfill.endpoint_id, v_window);
    end if;
    if p_backfill.last_txid is not null then
        select * into st from webhook.fanout_state;
        if not found or not webhook._visible(p_backfill.last_txid, st.prev_xmin, st.prev_xmax, st.prev_xip) then
            return 0;
        end if;
    end if;
    return v_window - coalesce((
        select coalesce(max(o.open) filter (where not o.held), max(o.open))
        from (select webhook._open_deliveries(e, v_window) as open,
                     (ep.paused_at is not null or ep.disabled_at is not null) as held
              from webhook._subscribed_now(p_backfill.event_type) e
              join webhook.endpoints ep on ep.id = e) o), 0);
end
$$;

-- API: Private
-- True when a running backfill may send a batch now (the worker's next-due
-- time is then 0): its endpoint has room for half a window.
create function webhook._backfill_ready()
returns boolean
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select exists (select from webhook.backfills b
                   where b.status = 'running' and webhook._backfill_room(b) >= webhook._backfill_window() / 2)
$$;

-- API: Private
-- The names of backfill p_id's functions: the reader (owned by the
-- requester) and the one the step calls (owned by webhook_filter).
create function webhook._backfill_functions(
    p_id bigint,     -- the backfill
    out reader name,
    out entry name
)
language sql immutable
set search_path = pg_catalog, pg_temp
as $$
    select format('_backfill_%s_rows', p_id)::name, format('_backfill_%s', p_id)::name
$$;

-- API: Private
-- Ends backfill p_id (status p_status, with p_error) and drops its functions.
create function webhook._finish_backfill(
    p_id bigint,       -- the backfill
    p_status text,     -- done, cancelled or failed
    p_error text       -- why, or null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    f record := webhook._backfill_functions(p_id);
    v_propagation text := webhook._citus_ddl_propagation(true, null);
begin
    update webhook.backfills b
    set status = p_status, error = p_error, finished_at = now(), updated_at = now()
    where b.id = p_id;
    execute format('drop function if exists webhook.%I(jsonb, integer)', f.entry);
    execute format('drop function if exists webhook.%I(jsonb, integer)', f.reader);
    perform webhook._citus_ddl_propagation(false, v_propagation);
end
$$;

-- API: Public
-- Sends the rows of a table that exist now as <prefix>.read events. The
-- function makes the backfill's reader (see the head of this file) and
-- calls it once on nothing, which checks its SQL and the requester's
-- rights, then returns; the worker does the rest.
--
-- The requester is session_user: a SECURITY DEFINER function cannot see
-- the role its caller had, and the session's own login is the one role
-- whose rights the session holds in any case (it can RESET ROLE).
create function webhook_backfill(
    tbl regclass,              -- the table
    endpoint bigint default null, -- the one endpoint to send to; every endpoint subscribed to <prefix>.read when null
    "where" text default null  -- a condition on the row (its columns by name); every row when null
) returns bigint
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_tbl regclass := $1;
    v_endpoint_id bigint := $2;
    v_where text := $3;
    v_table record := webhook._check_capturable(v_tbl);
    v_args text[] := webhook._watch_args(v_tbl);
    v_type text := coalesce(v_args[1], v_table.relname) || '.read';
    v_columns text[] := nullif(v_args[2:], '{}');
    v_keys text[];
    v_id bigint;
    f record;
    v_alias text := quote_ident(v_table.relname);
    v_key_list text;
    v_select text;
    v_order text;
    v_key_object text;
    v_after text;
    v_new text;
    v_propagation text;
    v_state text;
    v_message text;
    v_hint text := 'A condition on the row, by column name (or <table>.<column>), e.g. "where" => ''created_at > '
                   'now() - interval ''''30 days'''''', with the functions of other schemas than pg_catalog named with '
                   'their schema.';
begin
    if v_endpoint_id is not null then
        perform webhook._live_endpoint(v_endpoint_id);
    elsif not exists (select from webhook._subscribed_now(v_type)) then
        raise exception 'no endpoint is subscribed to %', v_type
            using errcode = '22023',
                  hint = format('Pass endpoint => <id>, or subscribe an endpoint to %s first.', v_type);
    end if;
    if v_where is not null then
        if btrim(v_where) = '' then
            raise exception '"where" must be a condition on the row, or null for every row'
                using errcode = '22023', hint = v_hint;
        end if;
        -- One condition, one statement (as a filter, see 13_filters.sql).
        if strpos(v_where, ';') > 0 then
            raise exception '"where" is one SQL condition: it has no ";"' using errcode = '42601', hint = v_hint;
        end if;
    end if;
    perform webhook._check_filter_role();
    if (select c.relpersistence from pg_class c where c.oid = v_tbl) = 't' then
        raise exception '% is a temporary table: the worker cannot read it', v_tbl using errcode = '0A000';
    end if;
    select array_agg(a.attname::text order by k.ord) into v_keys
    from pg_index i
    cross join lateral unnest(i.indkey) with ordinality k(attnum, ord)
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where i.indrelid = v_tbl and i.indisprimary;
    if v_keys is null then
        raise exception '% has no primary key', v_tbl
            using errcode = '0A000', hint = 'A backfill walks the table by its primary key: add one.';
    end if;

    insert into webhook.backfills (source_table, endpoint_id, event_type, condition, columns, key_columns,
                                   requested_by, rows_estimate)
    select v_tbl, v_endpoint_id, v_type, v_where, v_columns, v_keys, session_user,
           nullif(greatest(c.reltuples, -1), -1)::bigint
    from pg_class c where c.oid = v_tbl
    returning id into v_id;
    f := webhook._backfill_functions(v_id);

    -- The reader: the next p_limit rows after the key p_after, in key
    -- order (n), each with its key (k, as jsonb: the cursor, read back
    -- with the columns' types) and, when it matches "where", its row
    -- (new: compact, as row_to_json makes a captured row, limited to the
    -- watch's columns). The condition and the row are computed on the
    -- table itself, so that only the columns they name need SELECT. Two
    -- branches, of which one-time filters run only one, so that each is an
    -- index scan (an OR of "no key yet" and the key condition is not).
    select string_agg(format('%s.%I', v_alias, k), ', ' order by o),
           string_agg(format('%L, %s.%I', k, v_alias, k), ', ' order by o),
           string_agg(format('(p_after ->> %L)::%s', k, format_type(a.atttypid, null)), ', ' order by o)
    into v_key_list, v_key_object, v_after
    from unnest(v_keys) with ordinality u(k, o)
    join pg_attribute a on a.attrelid = v_tbl and a.attname = u.k;
    v_new := case when v_columns is null then format('row_to_json(%s)', v_alias)
                  else (select format('(select row_to_json(c) from (select %s) c)',
                                      string_agg(format('%s.%I', v_alias, a.attname), ', ' order by a.attnum))
                        from pg_attribute a
                        where a.attrelid = v_tbl and a.attname = any (v_columns) and a.attnum > 0
                          and not a.attisdropped)
             end;
    -- Each branch is v_select, its key condition and v_order (the user's
    -- text is only ever an argument of format, never its format string).
    -- The condition goes on lines of its own, so that a -- comment in it
    -- ends where it does.
    v_select := format(E'select row_number() over (order by %s) as n, jsonb_build_object(%s) as k,\n'
                       || E'       case when (\n%s\n) then %s end as new\n'
                       || 'from %s as %s where ',
                       v_key_list, v_key_object, coalesce(v_where, 'true'), v_new, v_tbl, v_alias);
    v_order := format(' order by %s limit p_limit', v_key_list);
    v_propagation := webhook._citus_ddl_propagation(true, null);
    begin
        -- PL/pgSQL, not a SQL-standard body: Citus plans no SQL function
        -- with parameters that reads a distributed table. Its names are
        -- resolved as it runs, through its own pinned search_path; the
        -- body is a quoted literal, and without ";" in the condition its
        -- one statement cannot become two. use_column: a column named like
        -- an argument or an output (n, k, new) is the column.
        execute format(E'create function webhook.%I(p_after jsonb, p_limit integer)\n'
                       || E'returns table (n bigint, k jsonb, new json)\n'
                       || E'language plpgsql stable security definer\n'
                       || E'set search_path = pg_catalog, webhook, pg_temp\n'
                       || 'as %L',
                       f.reader,
                       format(E'#variable_conflict use_column\nbegin\nreturn query\n'
                              || E'select r.n, r.k, r.new from ((%s)\nunion all\n(%s)) as r order by r.n;\nend',
                              v_select || 'p_after is null' || v_order,
                              v_select || format('(%s) > (%s)', v_key_list, v_after) || v_order));
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        if v_where is null or v_state = '42501' then
            raise; -- not the condition's fault
        end if;
        raise exception 'invalid "where" condition for %: %', v_tbl, v_message using errcode = v_state, hint = v_hint;
    end;
    execute format('create function webhook.%I(p_after jsonb, p_limit integer) '
                   'returns table (n bigint, k jsonb, new json) language sql stable security definer '
                   'begin atomic select r.n, r.k, r.new from webhook.%I(p_after, p_limit) r; end',
                   f.entry, f.reader);
    execute format('alter function webhook.%I(jsonb, integer) owner to %I', f.reader, session_user);
    execute format('alter function webhook.%I(jsonb, integer) owner to webhook_filter', f.entry);
    execute format('revoke all on function webhook.%I(jsonb, integer) from public', f.reader);
    execute format('revoke all on function webhook.%I(jsonb, integer) from public', f.entry);
    execute format('grant execute on function webhook.%I(jsonb, integer) to webhook_filter', f.reader);
    perform webhook._citus_ddl_propagation(false, v_propagation);
    -- Reading nothing parses the reader's statement (an unknown column or
    -- function, a condition that is not boolean) and checks its rights,
    -- which PostgreSQL does as a statement starts: a table, column or
    -- function the requester may not use.
    begin
        execute format('select from webhook.%I(null, 0)', f.entry);
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        if v_state = '42501' or v_where is null then
            raise exception 'cannot backfill %: %', v_tbl, v_message
                using errcode = v_state,
                      hint = format('The rows are read with the rights of %s, the role that asks.', session_user);
        end if;
        raise exception 'invalid "where" condition for %: %', v_tbl, v_message using errcode = v_state, hint = v_hint;
    end;
    perform webhook._wake();
    return v_id;
end
$$;
comment on function webhook_backfill(regclass, bigint, text) is
    'Sends the rows of a table as <prefix>.read events (data {table, schema, op: "read", new, old: null}), in primary key order and batches, to one endpoint or to every endpoint subscribed; read with the rights of the role that asks. Returns the backfill''s id: its progress is its row in webhook.backfills.';

-- API: Public
create function webhook_backfill_cancel(
    backfill_id bigint -- the backfill
) returns boolean
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if (webhook._lock_backfill($1)).status <> 'running' then
        return false;
    end if;
    perform webhook._finish_backfill($1, 'cancelled', 'cancelled by ' || session_user);
    return true;
end
$$;
comment on function webhook_backfill_cancel(bigint) is
    'Stops a running backfill: no further row is read; the events it already wrote are delivered. False if it had already ended.';

-- API: Private
-- One batch of one running backfill whose endpoint has room (the one that
-- waited longest): its next rows become events (and deliveries, for a
-- backfill to one endpoint) and its cursor moves past them. Called by the
-- claim; returns the rows read (0 when no backfill could go on). An error
-- of the reader (a right revoked, the table gone) ends the backfill as
-- failed, with the error, instead of failing the claim.
create function webhook._backfill_step()
returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
-- Keys go out as text and come back: one format whatever the session's.
set datestyle = 'ISO, YMD'
set intervalstyle = 'postgres'
-- The batch runs inside the claim: a lock held on the table (an ALTER
-- TABLE, a LOCK) must not hold up the worker's deliveries. The batch gives
-- up after this, and its backfill waits a second (webhook._backfill_room).
set lock_timeout = '100ms'
as $$
declare
    b webhook.backfills;
    f record;
    v_limit integer;
    v_read bigint;
    v_sent bigint;
    v_last jsonb;
    v_status webhook.delivery_status;
    v_schema name;
    v_relname name;
    v_message text;
    v_state text;
begin
    for b in
        select * from webhook.backfills where status = 'running' order by updated_at for update skip locked
    loop
        if b.endpoint_id is not null then
            select case when ep.paused_at is null and ep.disabled_at is null then 'pending' else 'paused' end
            into v_status
            from webhook.endpoints ep where ep.id = b.endpoint_id and ep.deleted_at is null;
            if not found then
                perform webhook._finish_backfill(b.id, 'cancelled', 'its endpoint was removed');
                continue;
            end if;
        end if;
        -- Whole batches of half the window: a batch costs its statements'
        -- planning whatever its size, so the window refills in two.
        v_limit := webhook._backfill_window() / 2;
        continue when webhook._backfill_room(b) < v_limit;
        f := webhook._backfill_functions(b.id);
        select n.nspname, c.relname into v_schema, v_relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.oid = b.source_table;
        begin
            -- The step runs as the extension owner: the function it calls
            -- must be the one webhook_backfill made, owned by the role
            -- with no rights (a restore without the roles would leave it
            -- the restoring superuser's), and its reader the requester's.
            if not exists (select from pg_proc p
                           where p.oid = to_regprocedure(format('webhook.%I(jsonb, integer)', f.entry))
                             and p.prosecdef and p.proowner = 'webhook_filter'::regrole)
               or not exists (select from pg_proc p
                              where p.oid = to_regprocedure(format('webhook.%I(jsonb, integer)', f.reader))
                                and p.proowner = (select r.oid from pg_roles r where r.rolname = b.requested_by)) then
                raise exception 'the functions of backfill % are missing or not owned as webhook_backfill made them', b.id
                    using errcode = '42501', hint = 'Start it again: webhook_backfill(..., "where" => <a condition on the key past last_key>).';
            end if;
            execute format($q$
                with r as materialized (
                    select * from webhook.%I($1, $2)
                ), ev as (
                    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, source_table,
                                                id_namespace, endpoint_id)
                    select nextval('webhook.events_id_seq'), $3, $4, $5, x.payload, octet_length(x.payload::text),
                           $6, $7, $8
                    from r
                    -- The event: a captured row's shape (payload.rs), op
                    -- "read"; a row over pg_webhook.max_payload_bytes cut
                    -- down to its key, with "truncated": true. Written out
                    -- here rather than in a function: a function with its
                    -- own settings costs a call per row.
                    cross join lateral (
                        select format('{"table":%%s,"schema":%%s,"op":"read","new":%%s,"old":null}',
                                      $9, $10, r.new) as e
                    ) f
                    cross join lateral (
                        select case when octet_length(f.e) <= $12 then f.e
                                    else format('{"table":%%s,"schema":%%s,"op":"read","new":%%s,"old":null,'
                                                || '"truncated":true}',
                                                $9, $10, coalesce(case when $11 then r.k::text end, '{}'))
                               end::json as payload
                    ) x
                    where r.new is not null
                    order by r.n
                    returning id, slot, txid, id_namespace
                ), dl as (
                    insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status,
                                                         event_namespace)
                    select ev.id, ev.txid, ev.slot, $8, $13, webhook._event_namespace(ev.txid, ev.id_namespace, null)
                    from ev
                    where $8 is not null
                    order by ev.id
                    returning 1
                )
                select (select count(*) from r), (select r.k from r order by r.n desc limit 1),
                       (select count(*) from ev)
                $q$, f.entry)
            into v_read, v_last, v_sent
            using b.last_key, v_limit, webhook._current_slot(), webhook._vxid(), b.event_type,
                  format('%I.%I', v_schema, v_relname), webhook._id_namespace(), b.endpoint_id,
                  to_json(v_relname::text)::text, to_json(v_schema::text)::text,
                  b.columns is null or b.key_columns <@ b.columns,
                  coalesce(nullif(current_setting('pg_webhook.max_payload_bytes', true), '')::integer, 1048576),
                  v_status;
        exception when others then
            get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
            -- A lock not had in time, a deadlock, a serialization failure:
            -- the next batch may pass. Anything else would fail again.
            if v_state = '55P03' or v_state like '40%' then
                update webhook.backfills
                set error = format('%s (SQLSTATE %s); tried again a second later', v_message, v_state),
                    updated_at = clock_timestamp()
                where id = b.id;
            else
                perform webhook._finish_backfill(b.id, 'failed', format('%s (SQLSTATE %s)', v_message, v_state));
            end if;
            return 0;
        end;
        update webhook.backfills
        set last_key = coalesce(v_last, last_key), rows_read = rows_read + v_read, rows_sent = rows_sent + v_sent,
            last_txid = case when v_sent > 0 then webhook._vxid() else last_txid end, error = null,
            updated_at = now()
        where id = b.id;
        if v_read < v_limit then
            perform webhook._finish_backfill(b.id, 'done', null);
        end if;
        if v_sent > 0 then
            perform webhook._wake();
        end if;
        return v_read;
    end loop;
    return 0;
end
$$;

create or replace function webhook._invariant_violations()
returns table (object_id bigint, invariant text)
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select d.id, 'a delivery has its event in its event''s slot'
    from webhook.deliveries d
    where not exists (select from webhook.events e
                      where e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id)
    union all
    select d.id, 'a delivery carries its event''s webhook-id namespace'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    left join webhook.incarnations i on i.n = webhook._incarnation_of(e.txid)
    where webhook._event_namespace(e.txid, e.id_namespace, i.namespace) is distinct from d.event_namespace
    union all
    select d.id, 'a paused or disabled endpoint has no pending delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'pending' and (e.paused_at is not null or e.disabled_at is not null)
    union all
    select d.id, 'a sending endpoint has no paused delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.paused_at is null and e.disabled_at is null
    union all
    select d.id, 'a removed endpoint holds nothing'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.deleted_at is not null
    union all
    select s.id, 'a committed subscription period has its snapshots'
    from webhook.subscriptions s
    where s.from_xmin is null or (s.until_txid is not null and s.until_xmin is null)
    union all
    select e.id, 'a live endpoint has one open subscription period and a secret'
    from webhook.endpoints e
    where e.deleted_at is null
      and ((select count(*) from webhook.subscriptions s where s.endpoint_id = e.id and s.until_txid is null) <> 1
           or not exists (select from webhook.endpoint_secrets k where k.endpoint_id = e.id))
    union all
    select d.id, 'an event for one endpoint is delivered to it alone'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    where e.endpoint_id is not null and e.endpoint_id <> d.endpoint_id
    union all
    select b.id, 'a running backfill has its two functions, a finished one none'
    from webhook.backfills b
    cross join webhook._backfill_functions(b.id) f
    where (b.status = 'running') <> (to_regprocedure(format('webhook.%I(jsonb, integer)', f.entry)) is not null)
       or (b.status = 'running') <> (to_regprocedure(format('webhook.%I(jsonb, integer)', f.reader)) is not null)
    union all
    select c, 'a Citus node has each endpoint as the coordinator last published it'
    from webhook._cluster_stale() c
    union all
    select g.gen, 'only the current generation''s slot is written by new events'
    from webhook.generations g
    where g.purged_at is not null
      and exists (select from webhook.events e where e.slot = g.gen % webhook._slots())
      and not exists (select from webhook.generations n where n.gen > g.gen and n.gen % webhook._slots() = g.gen % webhook._slots())
$$;

revoke all on function webhook._check_capturable(regclass), webhook._check_filter_role(),
    webhook._backfill_window(), webhook._watch_args(regclass), webhook._open_deliveries(bigint, integer),
    webhook._backfill_room(webhook.backfills), webhook._backfill_ready(), webhook._backfill_functions(bigint),
    webhook._subscribed_now(text),
    webhook._finish_backfill(bigint, text, text), webhook_backfill(regclass, bigint, text),
    webhook_backfill_cancel(bigint),
    webhook._backfill_step()
    from public;
revoke all on webhook.backfills from public;
revoke all on sequence webhook.backfills_id_seq from public;
grant select on webhook.backfills to webhook_reader;
grant execute on function webhook_backfill(regclass, bigint, text), webhook_backfill_cancel(bigint),
    webhook._check_capturable(regclass)
    to webhook_admin;
select pg_catalog.pg_extension_config_dump('webhook.backfills', '');
select pg_catalog.pg_extension_config_dump('webhook.backfills_id_seq', '');

-- -----------------------------------------------------------------------------
-- 0.3.0: ordered delivery per key. webhook_subscribe/webhook_update(…,
-- ordered => true, on_exhausted => 'block' | 'skip'), webhook_publish(…,
-- ordering_key => …): an ordered endpoint's deliveries carry their event's
-- key, one of each key at a time (its head), the others 'waiting' in event
-- order (see 15_ordering.sql). The new status is added to the type here;
-- a value added in a transaction cannot be used before it commits, so
-- nothing below names it outside a PL/pgSQL body.
-- -----------------------------------------------------------------------------
alter type webhook.delivery_status add value 'waiting' after 'paused';
comment on type webhook.delivery_status is
    'pending (to send or being sent), paused (its endpoint is paused or disabled), waiting (an ordered endpoint''s delivery behind an earlier one of its key), then the final states: succeeded, failed (gave up after the retry policy), cancelled (its endpoint was removed while holding it).';
alter table webhook.endpoints add column ordered boolean not null default false,
    add column on_exhausted text not null default 'block',
    add constraint endpoints_on_exhausted_known check (on_exhausted in ('block', 'skip'));
alter table webhook.events add column ordering_key text;
alter table webhook.deliveries add column ordering_key text;
alter table webhook.deliveries_open drop constraint deliveries_open_state;
alter table webhook.deliveries_open add constraint deliveries_open_state
    check (status < 'succeeded' and finalized_at is null);
create index deliveries_open_key on webhook.deliveries_open (endpoint_id, ordering_key, event_id, id)
    where ordering_key is not null;
create unique index deliveries_open_head on webhook.deliveries_open (endpoint_id, ordering_key)
    where ordering_key is not null and status <= 'paused';
comment on column webhook.endpoints.ordered is
    'True: events of one key (a row''s table and primary key, or webhook_publish''s ordering_key) reach it one at a time, in the order of their ids; see webhook.blocked_keys.';
comment on column webhook.endpoints.on_exhausted is
    'For an ordered endpoint, what a delivery that gives up does to its key: block (the key waits, listed in webhook.blocked_keys, until webhook_unblock) or skip (the next event of the key goes).';
comment on column webhook.events.ordering_key is
    'The key given to webhook_publish(…, ordering_key): an ordered endpoint receives the events of one key in the order of their ids. Null for row events (their key is their table and primary key, see webhook._row_key) and for unkeyed custom events.';
comment on column webhook.deliveries.ordering_key is
    'For an ordered endpoint, its event''s key (webhook_publish''s ordering_key, or a row event''s table and primary key): one delivery of a key at a time, in event order. Null for an endpoint that is not ordered and for unkeyed events.';

-- API: Private
create function webhook._check_on_exhausted(
    p_on_exhausted text -- the setting asked for
) returns text
language plpgsql immutable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if p_on_exhausted is null or p_on_exhausted not in ('block', 'skip') then
        raise exception 'on_exhausted must be ''block'' or ''skip'', not %', coalesce(quote_literal(p_on_exhausted), 'NULL')
            using errcode = '22023',
                  hint = 'block: the key waits for webhook_unblock(); skip: the next event of the key goes.';
    end if;
    return p_on_exhausted;
end
$$;

-- API: Private
create function webhook._trigger_args(
    p_tbl regclass -- the table
) returns text[]
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_raw bytea;
    v_args text[] := '{}';
    v_at integer;
begin
    select t.tgargs into v_raw from pg_trigger t where t.tgrelid = p_tbl and t.tgname = 'webhook_capture';
    if not found then
        return null;
    end if;
    -- tgargs holds each argument followed by a zero byte.
    loop
        v_at := position('\x00'::bytea in v_raw);
        exit when v_at = 0;
        v_args := v_args || convert_from(substring(v_raw from 1 for v_at - 1), getdatabaseencoding());
        v_raw := substring(v_raw from v_at + 1);
    end loop;
    if v_args[1] = '@table' then
        v_args := v_args[4:];
    end if;
    return v_args;
end
$$;

create or replace function webhook._watch_args(
    p_tbl regclass -- the table
) returns text[]
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select case when array_position(a.args, '@key') is null then a.args
                else a.args[:array_position(a.args, '@key') - 1] end
    from (select webhook._trigger_args(p_tbl) as args) a
$$;

-- API: Private
create function webhook._watch_key_columns(
    p_tbl regclass -- the table
) returns text[]
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select a.args[array_position(a.args, '@key') + 1:]
    from (select webhook._trigger_args(p_tbl) as args) a
    where array_position(a.args, '@key') is not null
$$;

-- API: Public
create table webhook.key_blocks (
    endpoint_id  bigint not null references webhook.endpoints (id),
    ordering_key text not null,
    -- The delivery that gave up, and its event.
    delivery_id  bigint not null,
    event_id     bigint not null,
    blocked_at   timestamptz not null default now(),
    primary key (endpoint_id, ordering_key)
);
comment on table webhook.key_blocks is
    'The keys of ordered endpoints held back because a delivery gave up (on_exhausted = block): the rest of the key waits until webhook_unblock. See webhook.blocked_keys.';

-- API: Private
-- The columns that key the row events of a table given by its
-- schema-qualified name (webhook.events.source_table): its watch's
-- key_columns, else its primary key, in key order; '{}' without either or
-- once the table is gone.
create function webhook._key_columns(
    p_source_table text -- a row event's source table
) returns text[]
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select coalesce(webhook._watch_key_columns(to_regclass(p_source_table)),
                    (select array_agg(a.attname::text order by k.n)
                     from pg_index i
                     cross join lateral unnest(i.indkey) with ordinality as k(attnum, n)
                     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                     where i.indrelid = to_regclass(p_source_table) and i.indisprimary),
                    '{}')
$$;

-- API: Private
-- A row event's key: its table and the values of its key columns, as
-- '<schema>.<table>:<JSON array>' (public.orders:[42]); from new, or from
-- old for a delete. A key column the watch does not send is null: every
-- row of the table then shares a key, which keeps the order (and gives up
-- the parallelism). A table without a primary key is one key.
create function webhook._row_key(
    p_source_table text,   -- the event's source table
    p_key_columns text[],  -- its key columns (webhook._key_columns)
    p_data jsonb           -- the event's data
) returns text
language sql immutable parallel safe
return p_source_table operator(pg_catalog.||) ':' operator(pg_catalog.||) coalesce((
    select pg_catalog.jsonb_agg(coalesce(r.v operator(pg_catalog.->) c.name, 'null'::jsonb) order by c.n)::text
    from (select case when pg_catalog.jsonb_typeof(p_data operator(pg_catalog.->) 'new'::text)
                           operator(pg_catalog.=) 'object'
                      then p_data operator(pg_catalog.->) 'new'::text
                      else p_data operator(pg_catalog.->) 'old'::text end) as r(v)
    cross join pg_catalog.unnest(p_key_columns) with ordinality as c(name, n)), '[]');

-- API: Private
-- The key of an event: the ordering_key it was published with, or a row
-- event's; null for an unkeyed custom event (sent as to an endpoint that
-- is not ordered).
create function webhook._event_key(
    p_event webhook.events -- the event
) returns text
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select coalesce(p_event.ordering_key,
                    case when p_event.source_table is not null
                         then webhook._row_key(p_event.source_table, webhook._key_columns(p_event.source_table),
                                               p_event.payload::jsonb) end)
$$;

-- API: Private
-- Gives each of the keys (p_endpoint_ids[i], p_keys[i]) its head: the
-- first waiting delivery becomes pending (paused while the endpoint is
-- held) when the key has none and is not blocked; and a head that was
-- never sent gives its place back to an earlier waiting event (the
-- fan-out found it in a later chunk; a replay). The caller holds the
-- fan-out's lock (see above).
create function webhook._settle_keys(
    p_endpoint_ids bigint[], -- the endpoints ...
    p_keys text[]            -- ... and keys touched
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_demote bigint[];
    v_promote bigint[];
begin
    select array_agg(h.head) filter (where h.head is not null), array_agg(w.first)
    into v_demote, v_promote
    from (select distinct x.e, x.k from unnest(p_endpoint_ids, p_keys) as x(e, k) where x.k is not null) k
    left join lateral (
        select d.id as head, d.event_id, d.attempt_count, d.lease_token
        from webhook.deliveries_open d
        where d.endpoint_id = k.e and d.ordering_key = k.k and d.status <= 'paused'
    ) h on true
    cross join lateral (
        select d.id as first, d.event_id
        from webhook.deliveries_open d
        where d.endpoint_id = k.e and d.ordering_key = k.k and d.status = 'waiting'
        order by d.event_id, d.id
        limit 1
    ) w
    where not exists (select from webhook.key_blocks b where b.endpoint_id = k.e and b.ordering_key = k.k)
      and (h.head is null
           or (h.attempt_count = 0 and h.lease_token is null and (w.event_id, w.first) < (h.event_id, h.head)));
    if v_promote is null then
        return;
    end if;
    -- Out first: a key has one head at a time (deliveries_open_head).
    update webhook.deliveries_open d set status = 'waiting' where d.id = any (v_demote);
    update webhook.deliveries_open d
    set status = case when ep.paused_at is null and ep.disabled_at is null then 'pending' else 'paused' end::webhook.delivery_status
    from webhook.endpoints ep
    where d.id = any (v_promote) and ep.id = d.endpoint_id;
end
$$;

-- API: Private
-- What the outcomes of an ordered endpoint's heads do to their keys
-- (webhook._record_attempts): one that gave up blocks its key when its
-- endpoint says so (on_exhausted = 'block'), and every other key goes on
-- with its next event.
create function webhook._heads_finished(
    p_delivery_ids bigint[], -- deliveries that left deliveries_open ...
    p_endpoint_ids bigint[], -- ... their endpoints ...
    p_keys text[],           -- ... keys ...
    p_event_ids bigint[],    -- ... events ...
    p_failed boolean[]       -- ... and whether they gave up
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform webhook._hold_fanout();
    insert into webhook.key_blocks (endpoint_id, ordering_key, delivery_id, event_id)
    select x.e, x.k, x.d, x.ev
    from unnest(p_delivery_ids, p_endpoint_ids, p_keys, p_event_ids, p_failed) as x(d, e, k, ev, failed)
    join webhook.endpoints ep on ep.id = x.e
    where x.failed and ep.on_exhausted = 'block' and ep.ordered
    on conflict do nothing;
    perform webhook._settle_keys(p_endpoint_ids, p_keys);
end
$$;

-- API: Private
-- Makes endpoint p_endpoint_id's open deliveries unordered (ordered was
-- turned off): every waiting delivery goes out as any other, and its
-- blocked keys are forgotten.
create function webhook._unorder_endpoint(
    p_endpoint_id bigint -- the endpoint
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform webhook._hold_fanout();
    update webhook.deliveries_open d
    set ordering_key = null,
        status = case when d.status <> 'waiting' then d.status
                      when ep.paused_at is null and ep.disabled_at is null then 'pending'
                      else 'paused' end::webhook.delivery_status
    from webhook.endpoints ep
    where d.endpoint_id = p_endpoint_id and d.ordering_key is not null and ep.id = d.endpoint_id;
    delete from webhook.key_blocks b where b.endpoint_id = p_endpoint_id;
end
$$;

-- API: Public
-- Resumes blocked keys of an ordered endpoint: the event that gave up is
-- delivered again first (a replay of its delivery) and the rest of the
-- key follows; with skip => true, it is left as failed and the key goes
-- on with its next event.
create function webhook_unblock(
    endpoint_id bigint,          -- the ordered endpoint
    ordering_key text default null, -- one key (see webhook.blocked_keys); every blocked key of the endpoint when null
    skip boolean default false   -- true: leave the failed event, send the next one
) returns integer
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_key text := $2;
    v_skip boolean := $3;
    v_block webhook.key_blocks;
    v_event webhook.events;
    v_count integer := 0;
begin
    perform webhook._live_endpoint(v_id);
    if v_skip is null then
        raise exception 'skip must be true or false' using errcode = '22004';
    end if;
    perform webhook._hold_fanout();
    for v_block in
        delete from webhook.key_blocks b
        where b.endpoint_id = v_id and (v_key is null or b.ordering_key = v_key)
        returning *
    loop
        if not v_skip then
            select * into v_event from webhook.events e where e.id = v_block.event_id;
            if not found then
                raise exception 'the event that blocked key % (event %) was purged', quote_literal(v_block.ordering_key),
                    v_block.event_id
                    using errcode = '42704', hint = 'Pass skip => true to go on with the next event of the key.';
            end if;
            perform webhook._deliver_again(v_event, v_id, v_block.delivery_id);
        end if;
        perform webhook._settle_keys(array[v_id], array[v_block.ordering_key]);
        v_count := v_count + 1;
    end loop;
    if v_count > 0 then
        perform webhook._wake();
    end if;
    return v_count;
end
$$;
comment on function webhook_unblock(bigint, text, boolean) is
    'Resumes the blocked keys of an ordered endpoint (one key, or all when ordering_key is null): the event that gave up is sent again first, or with skip => true the next event goes. Returns the number of keys resumed.';

-- API: Public
-- The blocked keys, for people: what gave up, when, and how much waits
-- behind it. (status::text: see webhook.delivery_status.)
create view webhook.blocked_keys as
select b.endpoint_id,
       e.name as endpoint_name,
       b.ordering_key,
       b.delivery_id,
       b.event_id,
       b.blocked_at,
       d.last_status_code,
       d.last_error,
       (select count(*) from webhook.deliveries_open w
        where w.endpoint_id = b.endpoint_id and w.ordering_key = b.ordering_key
          and w.status::text = 'waiting') as waiting
from webhook.key_blocks b
join webhook.endpoints e on e.id = b.endpoint_id
left join webhook.deliveries d on d.id = b.delivery_id and d.endpoint_id = b.endpoint_id;
comment on view webhook.blocked_keys is
    'Keys of ordered endpoints held back by a delivery that gave up (on_exhausted = block), with its last error and how many deliveries wait behind it. webhook_unblock(endpoint_id, ordering_key) resumes one.';

drop function webhook._enqueue(text, jsonb, text);
drop function webhook_watch(regclass, text[], text, text[], text);
drop function webhook._claim_deliveries(text, integer, interval, integer, bigint[], integer[], integer, bigint);
drop function webhook._fan_out_chunk(webhook.fanout_state, bigint[], bigint, bigint, boolean, boolean);
drop function webhook_publish(text, jsonb, text);
drop function webhook._subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer);
drop function webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer);
drop function webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text, integer,
                             integer);

-- API: Private
create function webhook._enqueue(
    p_event_type text,      -- validated event type
    p_data jsonb,           -- the body's "data"
    p_idempotency_key text, -- null, or a key that makes a repeat a no-op
    p_ordering_key text     -- null, or the event's key (see 15_ordering.sql)
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_event_id bigint;
    v_payload json := p_data::json;
    v_bytes integer := octet_length(v_payload::text);
begin
    perform webhook._check_payload_size(v_bytes);
    v_event_id := nextval('webhook.events_id_seq');
    if p_idempotency_key is not null then
        -- ON CONFLICT waits for a concurrent transaction holding the same key,
        -- so two racing publishers still end with one event: the second one
        -- finds the first one's row once it commits.
        insert into webhook.idempotency_keys (idempotency_key, event_id)
        values (p_idempotency_key, v_event_id)
        on conflict (idempotency_key) do nothing;
        if not found then
            select k.event_id into v_event_id from webhook.idempotency_keys k where k.idempotency_key = p_idempotency_key;
            return v_event_id;
        end if;
    end if;
    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, idempotency_key, id_namespace,
                                ordering_key)
    values (v_event_id, webhook._current_slot(), webhook._vxid(), p_event_type, v_payload, v_bytes, p_idempotency_key,
            webhook._id_namespace(), p_ordering_key);
    insert into webhook.published_types (event_type) values (p_event_type) on conflict do nothing;
    perform webhook._wake();
    return v_event_id;
end
$$;

-- API: Private
create function webhook._check_columns(
    p_tbl regclass,      -- the table
    p_columns text[],    -- the column names given
    p_argument text,     -- the argument's name, for the message
    p_when_null text     -- what null would have meant, for the message
) returns void
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_missing text;
begin
    if cardinality(p_columns) = 0 or array_position(p_columns, null) is not null then
        raise exception '% must list at least one column, or be null for %', p_argument, p_when_null
            using errcode = '22023';
    end if;
    select string_agg(quote_ident(c), ', ') into v_missing
    from unnest(p_columns) c
    where not exists (select from pg_attribute a
                      where a.attrelid = p_tbl and a.attname = c and a.attnum > 0 and not a.attisdropped);
    if v_missing is not null then
        raise exception 'table % has no column %', p_tbl, v_missing using errcode = '42703';
    end if;
end
$$;

-- API: Public
create function webhook_watch(
    tbl regclass,                                       -- the table to capture
    operations text[] default '{insert,update,delete}', -- any of insert, update, delete
    event_prefix text default null,                     -- event types <prefix>.created/.updated/.deleted; the table name when null
    columns text[] default null,                        -- the columns sent in new/old; all when null
    "when" text default null,                           -- a condition on new and old; every row when null
    key_columns text[] default null                     -- what keys its rows for ordered endpoints; the primary key when null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_tbl regclass := $1;
    v_operations text[] := $2;
    v_columns text[] := $4;
    v_when text := $5;
    v_keys text[] := $6;
    v_schema name;
    v_relname name;
    v_ops text[];
    v_events text;
    v_prefix text;
    v_args text[];
    v_citus text;
    v_state text;
    v_message text;
begin
    if v_tbl is null or v_operations is null then
        raise exception 'webhook_watch: tbl and operations must not be null' using errcode = '22004';
    end if;
    select t.nspname, t.relname into v_schema, v_relname from webhook._check_capturable(v_tbl) t;
    select array_agg(distinct lower(op) order by lower(op)) into v_ops from unnest(v_operations) as op;
    if v_ops is null or not v_ops <@ array['delete', 'insert', 'update'] or array_position(v_ops, null) is not null then
        raise exception 'operations must be a non-empty subset of {insert,update,delete}, not %', coalesce(v_operations::text, 'NULL')
            using errcode = '22023';
    end if;
    v_prefix := coalesce($3, v_relname);
    if v_prefix !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' or length(v_prefix) > 240 then
        raise exception 'invalid event prefix: %', quote_literal(v_prefix)
            using errcode = '22023',
                  hint = 'Pass event_prefix => ''order'' (dot-separated words of letters, digits, "_" or "-").';
    end if;
    if v_prefix = 'webhook' or v_prefix like 'webhook.%' then
        raise exception 'the event prefix "webhook" is reserved for pg_webhook''s own events'
            using errcode = '22023', hint = 'Pass another event_prefix.';
    end if;
    if v_columns is not null then
        perform webhook._check_columns(v_tbl, v_columns, 'columns', 'all of them');
        v_columns := array(select distinct c from unnest(v_columns) c order by 1);
    end if;
    if v_keys is not null then
        perform webhook._check_columns(v_tbl, v_keys, 'key_columns', 'the primary key');
        -- An ordered endpoint reads the key from the event's data.
        if v_columns is not null and not v_keys <@ v_columns then
            raise exception 'key_columns must be among the columns sent'
                using errcode = '22023', hint = 'Add them to columns, or leave columns null to send every column.';
        end if;
    end if;
    -- Keywords only (validated above), never user text, go into the DDL;
    -- the prefix and column names go in as quoted literals.
    v_events := array_to_string(array(
        select case op when 'insert' then 'insert' when 'update' then 'update' when 'delete' then 'delete' end
        from unnest(v_ops) as op), ' or ');
    -- The key columns, if any, after a '@key' mark (see webhook._watch_key_columns).
    v_args := array[v_prefix] || coalesce(v_columns, '{}')
              || case when v_keys is not null then array['@key'] || v_keys else '{}' end;
    v_citus := webhook._citus_table_kind(v_tbl);
    if v_citus = 'reference' then
        -- Its trigger would fire on every node's copy: one event per node.
        raise exception '% is a Citus reference table: it cannot be watched', v_tbl
            using errcode = '0A000',
                  hint = 'Watch a distributed table, or call webhook_publish() where the reference table is written.';
    elsif v_citus is not null then
        -- Citus puts the trigger on every shard, where it fires under the
        -- shard's name: it is told the table's. Citus refuses triggers on
        -- its tables unless told they are safe; this one only inserts into
        -- the node's own local tables (nothing distributed).
        v_args := array['@table', v_schema::text, v_relname::text] || v_args;
        perform set_config('citus.enable_unsafe_triggers', 'on', true);
    end if;
    if exists (select from pg_trigger t where t.tgrelid = v_tbl and t.tgname = 'webhook_capture') then
        execute format('drop trigger %I on %s', 'webhook_capture', v_tbl);
    end if;
    if v_when is not null and btrim(v_when) = '' then
        raise exception '"when" must be a condition on new and old, or null for every row' using errcode = '22023';
    end if;
    begin
        -- The condition goes on lines of its own, so that a -- comment in
        -- it ends where it does. Its names are bound now, with this
        -- function's search_path (pg_catalog first): a function of the
        -- caller's is named with its schema.
        execute format('create trigger %I after %s on %s for each row %s execute function webhook._capture(%s)',
                       'webhook_capture', v_events, v_tbl,
                       case when v_when is null then '' else E'when (\n' || v_when || E'\n)' end,
                       (select string_agg(quote_literal(a), ', ') from unnest(v_args) a));
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        if v_when is null or v_state = '42501' then
            raise; -- not the condition's fault
        end if;
        raise exception 'invalid "when" condition for %: %', v_tbl, v_message
            using errcode = v_state,
                  hint = 'A condition on the row: new.<column> on insert and update, old.<column> on update and delete. '
                         'Pass operations => ''{insert,update}'' for a condition on new, ''{update,delete}'' for one on '
                         'old, ''{update}'' for one on both.';
    end;
end
$$;
comment on function webhook_watch(regclass, text[], text, text[], text, text[]) is
    'Installs the row-change trigger on a table: events <prefix>.created, .updated, .deleted with data {table, schema, op, new, old} (new and old limited to the given columns), for the rows matching "when" (all when null); key_columns key its rows for ordered endpoints (the primary key when null). Calling it again replaces the previous settings.';

-- API: Private
create function webhook._claim_deliveries(
    p_worker_id text,           -- recorded in leased_by
    p_limit integer,            -- at most this many rows
    p_lease_margin interval,    -- added to each endpoint's timeout
    p_concurrency integer,      -- the worker's slots, shared among endpoints with work
    p_busy_endpoints bigint[],  -- endpoints this worker has deliveries in flight for ...
    p_busy_counts integer[],    -- ... and how many
    p_fanout_events integer,    -- most events to fan out first
    p_max_bytes bigint          -- most payload bytes (the first delivery is claimed whatever its size)
) returns table (
    row_kind text,
    delivery_id bigint,
    lease_token bigint,
    attempt_number integer,
    event_id bigint,
    message_namespace text,
    event_type text,
    event_created_at timestamptz,
    payload text,
    endpoint_id bigint,
    url text,
    headers text,
    timeout_ms integer,
    secrets text[],
    max_attempts integer,
    initial_delay_ms bigint,
    max_delay_ms bigint,
    backoff_multiplier double precision,
    -- An ordered endpoint (15_ordering.sql): the worker records its
    -- outcomes at once, as the next event of each key waits for them.
    ordered boolean
)
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
-- Every row these statements touch is found by key; see "Plans" above.
set enable_seqscan = off
set jit = off
-- One plan, made once per session: planning the statement (partitions
-- included) costs more than running it for a hundred rows, and its shape
-- does not depend on the arguments.
set plan_cache_mode = force_generic_plan
as $$
declare
    -- Lease tokens are this claim's random seed hashed with each delivery
    -- id: distinct within the claim, unrelated across claims, and one call
    -- of the random source per claim instead of one per row (which cost
    -- 15,000 instructions per delivery).
    v_seed bigint := ('x' || translate(left(gen_random_uuid()::text, 18), '-', ''))::bit(64)::bigint;
    v_limited bigint[];
    v_allowed integer[];
    v_batch webhook.fanout_state;
begin
    -- A claim's commit need not wait for its WAL flush. Were the server to
    -- crash before the flush, the lease would be lost and the delivery sent
    -- again: a duplicate, which at-least-once allows; and a lost fan-out is
    -- lost together with the position it advanced, so it runs again. A
    -- later (durable) commit of the attempt flushes the claim's WAL first.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    if p_fanout_events > 0 then
        perform webhook._fan_out(p_fanout_events);
    end if;
    -- A backfill's batch (14_backfill.sql), when one runs and has room:
    -- its deliveries to one endpoint are claimable by the statement below.
    if exists (select from webhook.backfills b where b.status = 'running') then
        perform webhook._backfill_step();
    end if;
    select array_agg(t.endpoint_id), array_agg(t.allowed) into v_limited, v_allowed
    from webhook._take_tokens(p_concurrency, p_busy_endpoints, p_busy_counts) t;
    -- While a fan-out batch is in progress (cur_xmax set), a key's head
    -- made in it may yet give way to an earlier event of its key in a
    -- later chunk (15_ordering.sql): the claim leaves such heads alone.
    select * into v_batch from webhook.fanout_state;
    return query
    with quotas as (
        -- A rate-limited endpoint takes no more than the tokens it got,
        -- and none when it got none: this statement's snapshot is not
        -- _take_tokens' (READ COMMITTED), and work another worker's
        -- fan-out committed in between is here for an endpoint that had
        -- none there (once, that let 50 deliveries past a 40/s limit).
        select q.endpoint_id as id,
               case when a.endpoint_id is not null then least(q.quota, a.allowed)
                    when ep.max_per_second is null then q.quota
                    else 0 end as quota
        from webhook._endpoint_quotas(p_concurrency, p_busy_endpoints, p_busy_counts) q
        join webhook.endpoints ep on ep.id = q.endpoint_id
        left join unnest(v_limited, v_allowed) as a(endpoint_id, allowed) on a.endpoint_id = q.endpoint_id
    ), fair as (
        select greatest(1, ceil(p_limit::numeric / greatest(count(*), 1)))::integer as share
        from quotas q
        where q.quota > 0
    ), due as (
        -- The events' columns come along (a json value stays a pointer to
        -- its TOAST data until the final select reads it), so that each
        -- event is found once.
        select d.id, d.next_attempt_at, ev.id as event_id, d.event_namespace, ev.event_type, ev.created_at,
               ev.payload, ev.payload_bytes
        from quotas q
        cross join fair
        cross join lateral (
            select d.id, d.next_attempt_at, d.event_slot, d.event_txid, d.event_id, d.event_namespace
            from webhook.deliveries_open d
            where d.endpoint_id = q.id
              and d.status = 'pending'
              and d.next_attempt_at <= now()
              and (d.lease_until is null or d.lease_until <= now())
              and (d.ordering_key is null or v_batch.cur_xmax is null
                   or webhook._visible(d.event_txid, v_batch.prev_xmin, v_batch.prev_xmax, v_batch.prev_xip))
            order by d.next_attempt_at
            limit greatest(least(q.quota, fair.share, p_limit), 0)
            for update skip locked
        ) d
        -- Each delivery's event by its key, one index probe each: a lateral
        -- subquery with "offset 0" is planned as a nested loop whatever the
        -- estimates. As a plain join, the generic plan (made once, from the
        -- statistics of the moment) sometimes expected thousands of
        -- deliveries and hashed the whole event table for every claim:
        -- 150 ms instead of 5 for a claim of 100 beside 100,000 events,
        -- which made the drain benchmark swing between 2,300 and 8,000/s.
        cross join lateral (
            select ev.id, ev.event_type, ev.created_at, ev.payload, ev.payload_bytes
            from webhook.events ev
            where ev.slot = d.event_slot and ev.txid = d.event_txid and ev.id = d.event_id
            offset 0
        ) ev
        order by d.next_attempt_at
        limit p_limit
    ), fitting as (
        -- Memory is bounded by bytes, not rows: the oldest deliveries whose
        -- payloads fit in p_max_bytes, and at least one. The rows left out
        -- were locked, not leased: their locks go with this transaction.
        -- Usually all of them fit: then the running sum (a sort and a
        -- window over the batch) is skipped; each branch is gated by the
        -- batch's total, worked out once.
        select due.id, due.next_attempt_at, due.event_id, due.event_namespace, due.event_type, due.created_at,
               due.payload, due.payload_bytes
        from due
        where (select coalesce(sum(t.payload_bytes), 0) from due t) <= p_max_bytes
        union all
        select f.id, f.next_attempt_at, f.event_id, f.event_namespace, f.event_type, f.created_at, f.payload,
               f.payload_bytes
        from (select due.*,
                     sum(due.payload_bytes) over w as total,
                     row_number() over w as n
              from due
              window w as (order by due.next_attempt_at, due.id)) f
        where (select coalesce(sum(t.payload_bytes), 0) from due t) > p_max_bytes
          and (f.n = 1 or f.total <= p_max_bytes)
    ), claimed as (
        update webhook.deliveries_open d
        set lease_until = now() + ep.timeout + p_lease_margin,
            -- Random, one per delivery: a token cannot be guessed from
            -- another one or from a transaction id (60 random bits of a v4 UUID).
            lease_token = hashint8extended(d.id, v_seed),
            leased_by = p_worker_id,
            -- An attempt counts when it is claimed, not when it is recorded:
            -- a delivery whose sending kills the worker runs out of attempts
            -- (the worker then records it failed without sending it again)
            -- instead of being claimed again forever.
            attempt_count = d.attempt_count + 1
        from webhook.endpoints ep
        -- "= any (array)", not a join with due: see "Plans" above.
        where d.id = any (array(select f.id from fitting f)) and ep.id = d.endpoint_id
        returning d.id, d.lease_token, d.attempt_count, d.endpoint_id
    ), refunded as (
        -- Tokens taken for deliveries this claim did not take (fewer were
        -- due, another worker held some, the fair share, the bytes) go back.
        update webhook.endpoint_rates b
        set tokens = b.tokens + (a.allowed - a.taken)
        from (select l.endpoint_id, l.allowed,
                     (select count(*) from claimed c where c.endpoint_id = l.endpoint_id) as taken
              from unnest(v_limited, v_allowed) as l(endpoint_id, allowed)) a
        where b.endpoint_id = a.endpoint_id and a.allowed > a.taken
    ), targets as materialized (
        -- What the worker needs of each endpoint, worked out once per
        -- endpoint and not once per delivery.
        select ep.id,
               -- The whole URL (endpoints.url hides its path); an empty one,
               -- which the worker records as a failure, if the secrets'
               -- row is gone (it cannot be: see the secret below).
               coalesce(s.url, '') as url,
               (coalesce(s.headers, '{}') || coalesce(webhook._auth_header(s.auth), '{}'))::text as headers,
               (extract(epoch from ep.timeout) * 1000)::integer as timeout_ms,
               -- No secret (it cannot happen: it is dropped only when nothing is
               -- left to send) makes the worker record a failure, not lose the row.
               case when s.secret is null then '{}'::text[]
                    when s.previous_secret is not null and s.previous_expires_at > now()
                    then array[s.secret, s.previous_secret]
                    else array[s.secret] end as secrets,
               (ep.retry_policy ->> 'max_attempts')::integer as max_attempts,
               (extract(epoch from (ep.retry_policy ->> 'initial_delay')::interval) * 1000)::bigint as initial_delay_ms,
               (extract(epoch from (ep.retry_policy ->> 'max_delay')::interval) * 1000)::bigint as max_delay_ms,
               (ep.retry_policy ->> 'backoff_multiplier')::double precision as backoff_multiplier,
               ep.ordered
        from quotas q
        join webhook.endpoints ep on ep.id = q.id
        left join webhook.endpoint_secrets s on s.endpoint_id = q.id
    )
    -- The endpoints first, then the deliveries (see above), oldest first:
    -- the worker starts them in this order (a join returns rows in whatever
    -- order its plan makes).
    select 'endpoint', null::bigint, null::bigint, null::integer, null::bigint, null::text, null::text,
           null::timestamptz, null::text,
           t.id, t.url, t.headers, t.timeout_ms, t.secrets, t.max_attempts,
           t.initial_delay_ms, t.max_delay_ms, t.backoff_multiplier, t.ordered
    from targets t
    where t.id = any (array(select c.endpoint_id from claimed c))
    union all
    (select 'delivery',
           c.id,
           c.lease_token,
           c.attempt_count,
           f.event_id,
           -- The webhook-id's namespace (the worker puts the id together);
           -- null for an event of pg_webhook 0.1, whose message id is its number.
           webhook._namespace_hex(f.event_namespace),
           f.event_type,
           f.created_at,
           f.payload::text,
           c.endpoint_id,
           null::text, null::text, null::integer, null::text[], null::integer,
           null::bigint, null::bigint, null::double precision, null::boolean
    from claimed c
    join fitting f on f.id = c.id
    order by f.next_attempt_at, f.id);
end
$$;

-- API: Private
create function webhook._fan_out_chunk(
    st webhook.fanout_state, -- the fan-out's position and snapshot (cur)
    p_xip bigint[],          -- transactions running at prev, committed since
    p_lo bigint,             -- and those from p_lo ...
    p_hi bigint,             -- ... to p_hi
    p_filtered boolean,      -- whether a filter may apply (the events' data is read then)
    p_ordered boolean,       -- whether an endpoint is ordered (row events' data is read then for their keys)
    p_safe boolean,          -- catch each filter's error (and count it), rather than raise it
    out o_events bigint,
    out o_created bigint,
    out o_refused bigint[],
    out o_refusals bigint
)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_endpoints bigint[];
    v_keys text[];
begin
    with chunk as (
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace, e.endpoint_id, e.ordering_key, e.source_table,
               case when p_filtered or (p_ordered and e.source_table is not null) then e.payload::jsonb end as data
        from webhook.events e
        where e.txid = any (p_xip)
        union all
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace, e.endpoint_id, e.ordering_key, e.source_table,
               case when p_filtered or (p_ordered and e.source_table is not null) then e.payload::jsonb end as data
        from webhook.events e
        where e.txid >= p_lo and e.txid <= p_hi and not e.txid = any (st.cur_xip)
    ), key_columns as materialized (
        -- Each watched table's key, looked up once per chunk.
        select t.source_table, webhook._key_columns(t.source_table) as columns
        from (select distinct c.source_table from chunk c where p_ordered and c.source_table is not null) t
    ), targets as (
        select c.id, c.slot, c.txid, ep.id as endpoint_id,
               webhook._event_namespace(c.txid, c.id_namespace, i.namespace) as event_namespace,
               (ep.paused_at is not null or ep.disabled_at is not null) as held,
               ep.deleted_at is not null as deleted,
               -- The period's filter: false leaves the event out, null is
               -- the filter's error on it.
               case when s.filter is null then true
                    else webhook._filter_match(s.id, c.data, c.event_type, p_safe)
               end as matched,
               -- An ordered endpoint's deliveries carry their event's key.
               case when ep.ordered then
                   coalesce(c.ordering_key,
                            case when c.source_table is not null
                                 then webhook._row_key(c.source_table,
                                                       (select k.columns from key_columns k
                                                        where k.source_table = c.source_table),
                                                       c.data) end)
               end as ordering_key
        from chunk c
        join webhook.subscriptions s
          on (s.until_xmax is null or s.until_xmax > st.prev_xmin)
         and (c.txid = s.from_txid or not webhook._visible(c.txid, s.from_xmin, s.from_xmax, s.from_xip))
         and (s.until_txid is null
              or (c.txid <> s.until_txid and webhook._visible(c.txid, s.until_xmin, s.until_xmax, s.until_xip)))
         and webhook._matches(s.event_types, c.event_type)
        join webhook.endpoints ep on ep.id = s.endpoint_id
        -- Only events written before 0.3.0 need their incarnation's namespace.
        left join webhook.incarnations i on c.id_namespace is null and i.n = webhook._incarnation_of(c.txid)
        -- webhook_send_test and a backfill to one endpoint create their
        -- delivery themselves, for that endpoint.
        where c.event_type <> 'webhook.test' and c.endpoint_id is null
          -- An operator event does not go to the endpoint it is about; only
          -- pg_webhook's own events have their data read for it.
          and (c.event_type not like 'webhook.%'
               or ep.id is distinct from (select (o.payload ->> 'endpoint_id')::bigint
                                          from webhook.events o
                                          where o.slot = c.slot and o.txid = c.txid and o.id = c.id))
    ), opened as (
        -- A keyed delivery waits; its key's head is chosen below.
        insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status, event_namespace,
                                             ordering_key)
        select t.id, t.txid, t.slot, t.endpoint_id,
               case when t.ordering_key is not null then 'waiting'
                    when t.held then 'paused' else 'pending' end::webhook.delivery_status,
               t.event_namespace, t.ordering_key
        from targets t
        where t.matched and not (t.held and t.deleted)
        -- In the events' order: the claim takes an endpoint's deliveries by
        -- due time, and those made together are due together, so their
        -- order in the index (the order they were made) is the order they go
        -- out in.
        order by t.txid, t.id
        returning endpoint_id, ordering_key
    ), cancelled as (
        -- An endpoint removed while paused or disabled can never send what it held.
        insert into webhook.deliveries (slot, event_id, event_txid, event_slot, endpoint_id, status, finalized_at,
                                        event_namespace)
        select t.slot, t.id, t.txid, t.slot, t.endpoint_id, 'cancelled', now(), t.event_namespace
        from targets t
        where t.matched and t.held and t.deleted
        returning 1
    )
    select (select count(*) from chunk), (select count(*) from opened) + (select count(*) from cancelled),
           (select array_agg(distinct t.endpoint_id order by t.endpoint_id) from targets t where t.matched is null),
           (select count(*) from targets t where t.matched is null),
           (select array_agg(o.endpoint_id) from opened o where o.ordering_key is not null),
           (select array_agg(o.ordering_key) from opened o where o.ordering_key is not null)
    into o_events, o_created, o_refused, o_refusals, v_endpoints, v_keys;
    if v_keys is not null then
        perform webhook._settle_keys(v_endpoints, v_keys);
    end if;
end
$$;

-- API: Public
create function webhook_publish(
    event_type text,                   -- e.g. 'order.shipped'
    data jsonb,                        -- the body's "data"
    idempotency_key text default null, -- a repeated key is a no-op returning the first id
    ordering_key text default null     -- events of one key reach an ordered endpoint in order; null: no order
) returns bigint
language plpgsql volatile
-- Publishers need no privilege on the webhook tables, only EXECUTE on this.
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_type text := $1;
    v_data jsonb := $2;
    v_key text := $3;
    v_ordering_key text := $4;
begin
    if v_data is null then
        raise exception 'webhook_publish needs a data value'
            using errcode = '22004', hint = 'Pass ''null''::jsonb for an event without data.';
    end if;
    if v_key is not null and (length(v_key) = 0 or length(v_key) > 255) then
        raise exception 'idempotency_key must be 1 to 255 characters' using errcode = '22023';
    end if;
    if v_ordering_key is not null and (length(v_ordering_key) = 0 or length(v_ordering_key) > 1024) then
        raise exception 'ordering_key must be 1 to 1024 characters, or null for an event without order'
            using errcode = '22023';
    end if;
    perform webhook._check_event_type(v_type);
    if v_type like 'webhook.%' then
        raise exception 'event types starting with "webhook." are reserved for pg_webhook''s own events, not %', quote_literal(v_type)
            using errcode = '22023', hint = 'Use your own prefix, such as ''order.shipped''.';
    end if;
    return webhook._enqueue(v_type, v_data, v_key, v_ordering_key);
end
$$;
comment on function webhook_publish(text, jsonb, text, text) is
    'Enqueues a custom event in the caller''s transaction and returns its id; sent after commit, never after rollback. Events with one ordering_key reach an ordered endpoint one at a time, in the order of their ids.';

-- API: Private
create function webhook._subscribe(
    p_url text,
    p_event_types text[],
    p_name text,
    p_secret text,
    p_headers jsonb,
    p_retry_policy jsonb,
    p_timeout interval,
    p_auth jsonb,
    p_max_in_flight integer,
    p_filter text,
    p_max_per_second integer,
    p_burst integer,
    p_ordered boolean,
    p_on_exhausted text,
    out o_endpoint_id bigint,
    out o_name text,
    out o_signing_secret text
)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_url text := webhook._check_url(p_url);
    v_patterns text[] := webhook._check_patterns(p_event_types);
    v_headers jsonb := webhook._check_headers(p_headers);
    v_policy jsonb := webhook._check_retry_policy(p_retry_policy);
    v_timeout interval := webhook._check_timeout(p_timeout);
    v_auth jsonb := webhook._check_auth(p_auth);
    v_max integer := webhook._check_max_in_flight(p_max_in_flight);
    v_secret text := case when p_secret is null then webhook._generate_secret() else webhook._check_secret(p_secret) end;
begin
    perform webhook._check_name(p_name);
    perform webhook._check_rate(p_max_per_second, p_burst);
    o_endpoint_id := nextval(pg_get_serial_sequence('webhook.endpoints', 'id'));
    o_name := coalesce(p_name, 'endpoint-' || o_endpoint_id);
    perform webhook._insert_endpoint(o_endpoint_id, o_name, v_url, v_patterns, v_headers, v_auth, v_policy, v_timeout,
                                     v_max, v_secret, nullif(btrim(p_filter), ''), p_max_per_second, p_burst);
    if p_ordered or p_on_exhausted is distinct from 'block' then
        update webhook.endpoints e
        set ordered = coalesce(p_ordered, false), on_exhausted = webhook._check_on_exhausted(p_on_exhausted)
        where e.id = o_endpoint_id;
    end if;
    perform webhook._cluster_publish(o_endpoint_id, false);
    o_signing_secret := v_secret;
end
$$;

-- API: Public
create function webhook_subscribe(
    url text,                             -- http(s) URL of the receiver
    event_types text[] default '{*}',     -- patterns: '*', 'order.*', 'order.created'
    name text default null,               -- unique label; 'endpoint-<id>' when null
    secret text default null,             -- whsec_…; generated when null
    headers jsonb default '{}',           -- extra request headers
    retry_policy jsonb default null,      -- null for the default (about 24 hours)
    timeout interval default '10 seconds', -- per request
    auth jsonb default null,              -- {"type": "basic"|"bearer"|"api_key", …}
    max_in_flight integer default null,   -- this endpoint's share of a worker's slots; null for the default
    filter text default null,             -- a SQL condition on the event's data and event_type; null for all
    max_per_second integer default null,  -- most requests per second, all workers together; null for no limit
    burst integer default null,           -- most at once after a quiet spell; null for max_per_second
    ordered boolean default false,        -- events of one key one at a time, in order (see webhook.blocked_keys)
    on_exhausted text default 'block'     -- ordered: a delivery that gives up blocks its key ('block') or not ('skip')
) returns table (endpoint_id bigint, name text, signing_secret text)
language sql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
    select s.o_endpoint_id, s.o_name, s.o_signing_secret
    from webhook._subscribe($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) as s
$$;
comment on function webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer,
                                      boolean, text) is
    'Registers an endpoint and returns its id, name and signing secret (shown here and on rotation only). It receives the matching events committed from now on (those of its types that pass its filter).';

-- API: Public
create function webhook_update(
    endpoint_id bigint,             -- the endpoint to change
    url text default null,          -- new URL: used from the next attempt of every pending delivery
    event_types text[] default null, -- new patterns: for events committed after this
    name text default null,         -- new unique name
    headers jsonb default null,     -- replaces the extra headers
    retry_policy jsonb default null, -- replaces the policy; 'null'::jsonb for the default
    timeout interval default null,  -- per request
    is_active boolean default null, -- false disables it (deliveries wait), true re-enables it
    auth jsonb default null,        -- replaces the credentials; 'null'::jsonb removes them
    max_in_flight integer default null, -- its share of a worker's slots; 0 for the default
    filter text default null,       -- new filter on the event, for events committed after this; '' removes it
    max_per_second integer default null, -- new rate limit; 0 removes it
    burst integer default null,     -- new burst; 0 for max_per_second
    ordered boolean default null,   -- true: events of one key in order; false: every delivery as it comes
    on_exhausted text default null  -- ordered: 'block' or 'skip' the key of a delivery that gives up
) returns webhook.endpoints
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_url text := $2;
    v_patterns text[] := $3;
    v_name text := $4;
    v_headers jsonb := $5;
    v_policy jsonb := $6;
    v_timeout interval := $7;
    v_active boolean := $8;
    v_auth jsonb := $9;
    v_max integer := $10;
    v_filter text := $11;
    v_rate integer := $12;
    v_burst integer := $13;
    v_ordered boolean := $14;
    v_on_exhausted text := $15;
    v webhook.endpoints;
begin
    v := webhook._live_endpoint(v_id);
    perform from webhook.endpoints e where e.id = v_id for update;
    if v_url is not null then
        v_url := webhook._check_url(v_url);
        update webhook.endpoint_secrets s set url = v_url where s.endpoint_id = v_id;
        v.url := webhook._redact_url(v_url);
    end if;
    v_patterns := case when v_patterns is null then v.event_types else webhook._check_patterns(v_patterns) end;
    -- Null keeps the filter, '' removes it.
    v_filter := case when v_filter is null then v.filter else nullif(btrim(v_filter), '') end;
    -- New types or a new filter: a new subscription period, from this commit.
    if v_patterns is distinct from v.event_types or v_filter is distinct from v.filter then
        perform webhook._close_subscription(v_id);
        perform webhook._open_subscription(v_id, v_patterns, v_filter);
        v.event_types := v_patterns;
        v.filter := v_filter;
    end if;
    if v_name is not null then
        v.name := webhook._check_name(v_name);
    end if;
    if v_headers is not null then
        v_headers := webhook._check_headers(v_headers);
        update webhook.endpoint_secrets s set headers = v_headers where s.endpoint_id = v_id;
        v.header_names := array(select jsonb_object_keys(v_headers) order by 1);
    end if;
    if v_policy is not null then
        v.retry_policy := webhook._check_retry_policy(v_policy);
    end if;
    if v_timeout is not null then
        v.timeout := webhook._check_timeout(v_timeout);
    end if;
    if v_auth is not null then
        v_auth := webhook._check_auth(v_auth);
        update webhook.endpoint_secrets s set auth = v_auth where s.endpoint_id = v_id;
        v.auth_type := v_auth ->> 'type';
    end if;
    if v_max is not null then
        v.max_in_flight := nullif(webhook._check_max_in_flight(nullif(v_max, 0)), 0);
    end if;
    if v_rate is not null or v_burst is not null then
        v_rate := case when v_rate is null then v.max_per_second else nullif(v_rate, 0) end;
        -- The burst given, else the one it had (none once the rate is gone).
        v_burst := case when v_burst is not null then nullif(v_burst, 0) when v_rate is not null then v.burst end;
        perform webhook._check_rate(v_rate, v_burst);
        if (v_rate, v_burst) is distinct from (v.max_per_second, v.burst) then
            -- A new bucket, made at the next claim with the new settings.
            delete from webhook.endpoint_rates r where r.endpoint_id = v_id;
        end if;
        v.max_per_second := v_rate;
        v.burst := v_burst;
    end if;
    if v_on_exhausted is not null then
        v.on_exhausted := webhook._check_on_exhausted(v_on_exhausted);
    end if;
    if v_ordered is not null then
        if v.ordered and not v_ordered then
            -- What waits behind its key goes out as it comes.
            perform webhook._unorder_endpoint(v_id);
        end if;
        v.ordered := v_ordered;
    end if;
    begin
        update webhook.endpoints e
        set url = v.url, event_types = v.event_types, name = v.name, header_names = v.header_names,
            auth_type = v.auth_type, retry_policy = v.retry_policy, timeout = v.timeout,
            max_in_flight = v.max_in_flight, filter = v.filter, max_per_second = v.max_per_second, burst = v.burst,
            ordered = v.ordered, on_exhausted = v.on_exhausted, updated_at = now()
        where e.id = v_id;
    exception when unique_violation then
        raise exception 'an endpoint named % already exists', quote_literal(v.name)
            using errcode = '42710', hint = 'Pick another name.';
    end;
    if v_active is true and v.disabled_at is not null then
        perform webhook._enable_endpoint(v_id);
    elsif v_active is false and v.disabled_at is null then
        perform webhook._disable_endpoint(v_id, 'disabled by webhook_update');
    end if;
    perform webhook._cluster_publish(v_id, false);
    select * into v from webhook.endpoints e where e.id = v_id;
    return v;
end
$$;
comment on function webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text,
                                   integer, integer, boolean, text) is
    'Changes an endpoint (named arguments; null leaves a setting unchanged) and returns it as it now is. New event types and a new filter apply to events committed after the change.';

create or replace function webhook._operator_event(
    p_type text,          -- the event type
    p_endpoint_id bigint, -- the endpoint it is about (p_data's endpoint_id)
    p_data jsonb          -- the event's data
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform pg_notify('pg_' || replace(p_type, '.', '_'), p_endpoint_id::text);
    perform webhook._enqueue(p_type, p_data, null, null);
end
$$;

create or replace function webhook._fan_out(
    p_max_events integer -- chunk size in events (whole transactions: a chunk may be larger)
) returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
-- One generic plan per session, as for the claim: planning the chunk's
-- statement across the partitions at every call cost more than running
-- it (a fan-out of one event: 1.3-2.5 ms with custom plans, 0.75 ms
-- generic; a 100,000-event transaction: the same 6.5 s either way), and
-- under load that planning sat in every claim, in front of the commit to
-- receipt latency. Sequential scans off, so that the generic plan reaches
-- the chunk's events by the (txid, id) index whatever the bounds.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set jit = off
as $$
declare
    st webhook.fanout_state;
    v_snap bigint[];
    v_resumed boolean;
    v_xip bigint[];
    v_lo bigint;
    v_hi bigint;
    v_more boolean;
    v_events bigint;
    v_created bigint;
    v_refused bigint[];
    v_refusals bigint;
    v_filtered boolean;
    v_ordered boolean;
begin
    select * into st from webhook.fanout_state for update skip locked;
    if not found then
        if exists (select from webhook.fanout_state) then
            return 0; -- another worker is fanning out
        end if;
        -- First run: nothing is fanned out yet, every event is after "prev".
        insert into webhook.fanout_state (prev_xmin, prev_xmax, prev_xip) values (1, 1, '{}')
        on conflict do nothing;
        select * into st from webhook.fanout_state for update skip locked;
        if not found then
            return 0;
        end if;
    end if;
    v_resumed := st.cur_xmax is not null;
    -- Nothing committed since prev (the usual case while a backlog drains):
    -- return before taking a snapshot and planning the chunk's statement,
    -- which costs more than everything else here together. An event this
    -- statement cannot see yet is found by a later call.
    if not webhook._fanout_pending(st) then
        return 0;
    end if;
    -- Subscription filters (see 13_filters.sql) that may apply to this
    -- chunk: then every one has its function and dispatcher branch (a
    -- restore keeps the filters, not their functions), and the chunk's
    -- events their data.
    v_filtered := exists (select from webhook.subscriptions s
                          where s.filter is not null and (s.until_xmax is null or s.until_xmax > st.prev_xmin));
    if v_filtered then
        perform webhook._refresh_filter_match();
    end if;
    -- Ordered endpoints (15_ordering.sql): row events' keys are read from their data.
    v_ordered := exists (select from webhook.subscriptions s join webhook.endpoints e on e.id = s.endpoint_id
                         where e.ordered and (s.until_xmax is null or s.until_xmax > st.prev_xmin));
    if not v_resumed then
        v_snap := webhook._vsnapshot();
        st.cur_xmin := v_snap[1];
        st.cur_xmax := v_snap[2];
        st.cur_xip := v_snap[3:];
        st.done_txid := 0;
    end if;

    -- Transactions running at prev that have committed since (visible in cur).
    v_xip := array(select x from unnest(st.prev_xip) x
                   where x > st.done_txid and webhook._visible(x, st.cur_xmin, st.cur_xmax, st.cur_xip)
                   order by x);
    -- Then those that started after prev, in txid order: this chunk ends
    -- with the transaction of its p_max_events-th event.
    v_lo := greatest(st.prev_xmax, st.done_txid + 1);
    select e.txid into v_hi
    from webhook.events e
    where e.txid >= v_lo and e.txid < st.cur_xmax and not e.txid = any (st.cur_xip)
    order by e.txid, e.id
    offset greatest(p_max_events - 1, 0) limit 1;
    v_more := found;
    if not v_more then
        v_hi := st.cur_xmax - 1;
    end if;

    -- Filters run without catching their errors (a subtransaction per call
    -- costs several times a filter); a chunk where one raised an error is
    -- made again, each error then caught alone. Without filters, no
    -- subtransaction at all.
    if not v_filtered then
        select * into v_events, v_created, v_refused, v_refusals
        from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, false, v_ordered, false);
    else
        begin
            select * into v_events, v_created, v_refused, v_refusals
            from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, true, v_ordered, false);
        exception when others then
            -- A filter's error (any other error comes again, and is raised).
            select * into v_events, v_created, v_refused, v_refusals
            from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, true, v_ordered, true);
        end;
    end if;
    if v_refusals > 0 then
        -- The worker logs it; webhook_filter_preview() tells which events and why.
        raise warning 'the filters of endpoints % raised an error on % deliveries, which were not made',
            array_to_string(v_refused, ', '), v_refusals
            using hint = 'See which events and why with webhook_filter_preview(''<the filter>''), then fix the filter '
                         'with webhook_update(<endpoint>, filter => …) and resend them with webhook_replay().';
    end if;

    if v_more then
        update webhook.fanout_state
        set cur_xmin = st.cur_xmin, cur_xmax = st.cur_xmax, cur_xip = st.cur_xip, done_txid = v_hi, updated_at = now();
    elsif v_events > 0 or v_resumed then
        update webhook.fanout_state
        set prev_xmin = st.cur_xmin, prev_xmax = st.cur_xmax, prev_xip = st.cur_xip,
            cur_xmin = null, cur_xmax = null, cur_xip = null, done_txid = 0, updated_at = now();
    end if;
    -- Else nothing was committed since prev: keep prev (no write at all), so
    -- that an idle worker's fan-out is one read.
    return v_created;
end
$$;
comment on function webhook._fan_out(integer) is
    'Creates the deliveries of the next chunk of committed events (whole transactions, in commit-snapshot order); returns how many. Called by webhook._claim_deliveries.';

create or replace function webhook._record_attempts(
    p_worker_id text,
    p_delivery_ids bigint[],
    p_lease_tokens bigint[],
    p_endpoint_ids bigint[],    -- each delivery's endpoint (as claimed)
    p_attempt_numbers integer[],
    p_started_at timestamptz[],
    p_duration_ms double precision[],
    p_status_codes integer[],
    p_response_excerpts text[],
    p_errors text[],
    p_outcomes text[],          -- 'succeeded' | 'retry' | 'failed'
    p_retry_delays_ms bigint[]  -- for 'retry': how long from now
) returns integer
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
-- Every row these statements touch is found by key; see "Plans" above.
set enable_seqscan = off
set jit = off
as $$
declare
    v_moved integer;
    v_touched bigint[];
    v_gone bigint[];
    v_id bigint;
    v_reason text;
    v_slot smallint := webhook._current_slot();
    v_n integer := coalesce(cardinality(p_delivery_ids), 0);
    v_failing_after integer := webhook._failing_after();
    v_failing bigint[];
    v_recovered jsonb[];
    v_exhausted bigint[];
    v_heads bigint[];
    v_head_endpoints bigint[];
    v_head_keys text[];
    v_head_events bigint[];
    v_head_failed boolean[];
begin
    if v_n <> coalesce(cardinality(p_lease_tokens), 0) or v_n <> coalesce(cardinality(p_endpoint_ids), 0)
       or v_n <> coalesce(cardinality(p_attempt_numbers), 0) or v_n <> coalesce(cardinality(p_started_at), 0)
       or v_n <> coalesce(cardinality(p_duration_ms), 0) or v_n <> coalesce(cardinality(p_status_codes), 0)
       or v_n <> coalesce(cardinality(p_response_excerpts), 0) or v_n <> coalesce(cardinality(p_errors), 0)
       or v_n <> coalesce(cardinality(p_outcomes), 0) or v_n <> coalesce(cardinality(p_retry_delays_ms), 0) then
        raise exception 'webhook._record_attempts: the arrays must all have the same length'
            using errcode = '22023';
    end if;
    if exists (select from unnest(p_outcomes) o where o is null or o not in ('succeeded', 'retry', 'failed'))
       or exists (select from unnest(p_outcomes, p_retry_delays_ms) r(o, d) where o = 'retry' and (d is null or d < 0))
       or exists (select from unnest(p_delivery_ids, p_lease_tokens, p_endpoint_ids, p_attempt_numbers, p_started_at,
                                     p_duration_ms) r(i, t, e, n, s, ms)
                  where i is null or t is null or e is null or n is null or s is null or ms is null) then
        raise exception 'webhook._record_attempts: an outcome is ''succeeded'', ''retry'' (with a delay of 0 ms or more) or ''failed'', and ids, tokens, endpoints, attempt numbers, start times and durations are never null'
            using errcode = '22023';
    end if;
    with r as (
        select *
        from unnest(p_delivery_ids, p_lease_tokens, p_endpoint_ids, p_attempt_numbers, p_started_at, p_duration_ms,
                    p_status_codes, p_response_excerpts, p_errors, p_outcomes, p_retry_delays_ms)
             as r(delivery_id, lease_token, endpoint_id, attempt_number, started_at, duration_ms,
                  status_code, response_excerpt, error, outcome, retry_delay_ms)
    ), retried as (
        update webhook.deliveries_open d
        set next_attempt_at = now() + r.retry_delay_ms * interval '1 millisecond',
            lease_token = null,
            lease_until = null,
            leased_by = null,
            last_attempt_at = r.started_at,
            last_status_code = r.status_code,
            last_error = r.error
        from r
        -- "= any (array)": see "Plans" above.
        where r.outcome = 'retry' and d.id = any (p_delivery_ids)
          and d.id = r.delivery_id and d.lease_token = r.lease_token
        returning d.id, d.event_slot, d.endpoint_id
    ), finished as (
        delete from webhook.deliveries_open d
        using r
        where r.outcome <> 'retry' and d.id = any (p_delivery_ids)
          and d.id = r.delivery_id and d.lease_token = r.lease_token
        returning d.id, d.event_id, d.event_txid, d.event_slot, d.endpoint_id, d.attempt_count,
                  d.next_attempt_at, d.replay_of, d.created_at, d.event_namespace, d.ordering_key,
                  r.outcome, r.started_at, r.status_code, r.error
    ), archived as (
        insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status,
                                        attempt_count, next_attempt_at, last_attempt_at, last_status_code,
                                        last_error, replay_of, created_at, finalized_at, event_namespace,
                                        ordering_key)
        select f.id, f.event_slot, f.event_id, f.event_txid, f.event_slot, f.endpoint_id,
               f.outcome::webhook.delivery_status, f.attempt_count, f.next_attempt_at, f.started_at,
               f.status_code, f.error, f.replay_of, f.created_at, now(), f.event_namespace, f.ordering_key
        from finished f
        returning 1
    ), held as (
        select rt.id, rt.event_slot, rt.endpoint_id from retried rt
        union all
        select f.id, f.event_slot, f.endpoint_id from finished f
    ), logged as (
        -- Every attempt is logged, and says whether it moved its delivery
        -- (lease_held). One whose lease was lost (it expired, and another
        -- worker claimed the delivery meanwhile) is logged in the current
        -- slot, marked: the caller may be that worker, or a holder of the
        -- worker role recording attempts it never made, and the log says
        -- which attempts changed nothing. An attempt of a delivery that
        -- does not exist, or for another endpoint, is not logged at all.
        insert into webhook.attempts (slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                                      status_code, response_excerpt, error, worker_id, lease_held)
        select coalesce(h.event_slot, v_slot), r.delivery_id, r.endpoint_id, r.attempt_number, r.started_at,
               r.duration_ms, r.status_code, r.response_excerpt, r.error, p_worker_id, h.id is not null
        from r left join held h on h.id = r.delivery_id
        where h.id is not null
           or exists (select from webhook.deliveries d where d.id = r.delivery_id and d.endpoint_id = r.endpoint_id)
    ), outcomes as (
        select h.endpoint_id, r.started_at, r.duration_ms, r.outcome = 'succeeded' as ok, r.status_code, r.error
        from r join held h on h.id = r.delivery_id
    ), buckets as (
        select o.endpoint_id, date_trunc('minute', o.started_at) as minute,
               webhook._latency_bucket(o.duration_ms) as bucket,
               count(*)::integer as n, (count(*) filter (where o.ok))::integer as ok
        from outcomes o
        group by 1, 2, 3
    ), minutes as (
        -- Counters per endpoint and minute, each histogram built whole.
        select k.endpoint_id, k.minute, sum(k.n)::integer as n, sum(k.ok)::integer as ok,
               webhook._hist_sum(webhook._hist_one(k.bucket, k.n))::integer[] as hist
        from buckets k
        group by k.endpoint_id, k.minute
    ), stats as (
        insert into webhook.endpoint_stats as st (endpoint_id, minute, attempts, successes, latency_hist)
        select m.endpoint_id, m.minute, m.n, m.ok, m.hist
        from minutes m
        on conflict (endpoint_id, minute) do update
        set attempts = st.attempts + excluded.attempts,
            successes = st.successes + excluded.successes,
            latency_hist = webhook._hist_add(st.latency_hist, excluded.latency_hist)
        returning 1
    ), hourly as (
        insert into webhook.endpoint_stats_hourly as sh (endpoint_id, hour, attempts, successes, latency_hist)
        select m.endpoint_id, date_trunc('hour', m.minute), sum(m.n), sum(m.ok),
               webhook._hist_sum(m.hist)::integer[]
        from minutes m
        group by m.endpoint_id, date_trunc('hour', m.minute)
        on conflict (endpoint_id, hour) do update
        set attempts = sh.attempts + excluded.attempts,
            successes = sh.successes + excluded.successes,
            latency_hist = webhook._hist_add(sh.latency_hist, excluded.latency_hist)
        returning 1
    ), last_ok as (
        select o.endpoint_id, max(o.started_at) filter (where o.ok) as at
        from outcomes o group by o.endpoint_id
    ), runs as (
        select o.endpoint_id, l.at as last_success_at,
               max(o.started_at) filter (where not o.ok) as last_failure_at,
               (array_agg(o.status_code order by o.started_at desc) filter (where not o.ok))[1] as last_failure_status,
               (array_agg(o.error order by o.started_at desc) filter (where not o.ok))[1] as last_failure_error,
               count(*) filter (where not o.ok and (l.at is null or o.started_at > l.at))::integer as failures,
               min(o.started_at) filter (where not o.ok and (l.at is null or o.started_at > l.at)) as failing_since,
               bool_or(o.status_code = 410) as gone
        from outcomes o join last_ok l on l.endpoint_id = o.endpoint_id
        group by o.endpoint_id, l.at
    ), before as (
        -- The runs as they were (every part of one statement reads the
        -- tables as they were before it).
        select a.endpoint_id, a.consecutive_failures, a.failing_since
        from webhook.endpoint_activity a
        where a.endpoint_id = any (array(select ru.endpoint_id from runs ru))
    ), activity as (
        insert into webhook.endpoint_activity as a (endpoint_id, last_success_at, last_failure_at, last_failure_status,
                                                   last_failure_error, consecutive_failures, failing_since)
        select ru.endpoint_id, ru.last_success_at, ru.last_failure_at, ru.last_failure_status,
               ru.last_failure_error, ru.failures, ru.failing_since
        from runs ru
        on conflict (endpoint_id) do update
        set last_success_at = greatest(a.last_success_at, excluded.last_success_at),
            last_failure_at = greatest(a.last_failure_at, excluded.last_failure_at),
            last_failure_status = case when excluded.last_failure_at is not null then excluded.last_failure_status
                                       else a.last_failure_status end,
            last_failure_error = case when excluded.last_failure_at is not null then excluded.last_failure_error
                                      else a.last_failure_error end,
            consecutive_failures = case when excluded.last_success_at is not null then excluded.consecutive_failures
                                        else a.consecutive_failures + excluded.consecutive_failures end,
            failing_since = case when excluded.last_success_at is not null then excluded.failing_since
                                 else coalesce(a.failing_since, excluded.failing_since) end
        returning a.endpoint_id, a.consecutive_failures
    )
    select (select count(*) from retried) + (select count(*) from archived),
           array(select ru.endpoint_id from runs ru where ru.failures > 0),
           array(select ru.endpoint_id from runs ru where ru.gone),
           -- Failing: the run reached the threshold in this batch (it was
           -- below, or a success in the batch started it over).
           array(select ac.endpoint_id
                 from activity ac
                 join runs ru on ru.endpoint_id = ac.endpoint_id
                 left join before b on b.endpoint_id = ac.endpoint_id
                 where ac.consecutive_failures >= v_failing_after
                   and (ru.last_success_at is not null or coalesce(b.consecutive_failures, 0) < v_failing_after)),
           -- Recovered: a success ended a run that had reached it.
           array(select jsonb_build_object('endpoint_id', b.endpoint_id, 'failing_since', b.failing_since,
                                           'consecutive_failures', b.consecutive_failures)
                 from runs ru
                 join before b on b.endpoint_id = ru.endpoint_id
                 where ru.last_success_at is not null and b.consecutive_failures >= v_failing_after),
           array(select f.id from finished f where f.outcome = 'failed'),
           -- Heads of ordered endpoints' keys that finished (one pass).
           h.ids, h.endpoints, h.keys, h.events, h.failed
    from (select array_agg(f.id) as ids, array_agg(f.endpoint_id) as endpoints, array_agg(f.ordering_key) as keys,
                 array_agg(f.event_id) as events, array_agg(f.outcome = 'failed') as failed
          from finished f
          where f.ordering_key is not null) h
    into v_moved, v_touched, v_gone, v_failing, v_recovered, v_exhausted,
         v_heads, v_head_endpoints, v_head_keys, v_head_events, v_head_failed;
    if cardinality(v_heads) > 0 then
        perform webhook._heads_finished(v_heads, v_head_endpoints, v_head_keys, v_head_events, v_head_failed);
    end if;
    if cardinality(v_failing) + cardinality(v_recovered) + cardinality(v_exhausted) > 0 then
        perform webhook._report_runs(v_failing, v_recovered, v_exhausted);
    end if;

    -- 410 Gone: the receiver says the endpoint is no more; stop at once.
    -- Failing without a success for pg_webhook.disable_after: give up on it.
    for v_id, v_reason in
        select g, 'the endpoint answered 410 Gone' from unnest(v_gone) g
        union all
        select a.endpoint_id, 'no successful delivery since ' || a.failing_since
        from webhook.endpoint_activity a
        where a.endpoint_id = any (v_touched) and not a.endpoint_id = any (v_gone)
          and a.failing_since <= now() - webhook._disable_after_s() * interval '1 second'
    loop
        perform webhook._disable_endpoint(v_id, v_reason);
    end loop;
    return v_moved;
end
$$;

create or replace function webhook_unsubscribe(
    endpoint_id bigint -- the endpoint to remove
) returns boolean
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_deleted_at timestamptz;
    v_held boolean;
begin
    select e.deleted_at, e.paused_at is not null or e.disabled_at is not null into v_deleted_at, v_held
    from webhook.endpoints e where e.id = v_id for update;
    if not found then
        perform webhook._live_endpoint(v_id); -- raises 42704
    end if;
    if v_deleted_at is not null then
        return false;
    end if;
    update webhook.endpoints e
    set is_active = false, deleted_at = now(), updated_at = now()
    where e.id = v_id;
    perform webhook._close_subscription(v_id);
    -- What it was holding (paused or disabled; for an ordered endpoint, the
    -- deliveries waiting behind them and behind its blocked keys) can
    -- never be sent now: it is cancelled, and stays visible as such. What
    -- is pending still goes out (and the rest of its keys after it): those
    -- events were committed while it was subscribed.
    perform webhook._hold_fanout();
    with held as (
        delete from webhook.deliveries_open d
        where d.endpoint_id = v_id
          and (d.status = 'paused'
               or (d.status = 'waiting'
                   and (v_held or exists (select from webhook.key_blocks b
                                          where b.endpoint_id = v_id and b.ordering_key = d.ordering_key))))
        returning d.*
    )
    insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status, attempt_count,
                                    next_attempt_at, last_attempt_at, last_status_code, last_error, replay_of,
                                    created_at, finalized_at, event_namespace, ordering_key)
    select h.id, h.event_slot, h.event_id, h.event_txid, h.event_slot, h.endpoint_id, 'cancelled', h.attempt_count,
           h.next_attempt_at, h.last_attempt_at, h.last_status_code, h.last_error, h.replay_of, h.created_at, now(),
           h.event_namespace, h.ordering_key
    from held h;
    delete from webhook.key_blocks b where b.endpoint_id = v_id;
    -- The secret stays: events committed before now may not be fanned out
    -- yet. The worker's maintenance drops it once nothing is left to send.
    perform webhook._cluster_publish(v_id, false);
    return true;
end
$$;
comment on function webhook_unsubscribe(bigint) is
    'Removes an endpoint: it receives no event committed after this; deliveries of earlier events still go out (pause it first to stop them: held ones are cancelled). History stays. False if it was already removed.';

create or replace function webhook._deliver_again(
    p_event webhook.events,   -- the event
    p_endpoint_id bigint,     -- to this endpoint
    p_replay_of bigint        -- the delivery it repeats, if any
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint;
    v_key text;
begin
    -- A replay keeps the key its delivery had (a watch's key_columns may
    -- have changed since: webhook_unblock must resume the key it blocked).
    select coalesce((select d.ordering_key from webhook.deliveries d
                     where d.id = p_replay_of and d.endpoint_id = p_endpoint_id),
                    webhook._event_key(p_event))
    into v_key
    from webhook.endpoints e where e.id = p_endpoint_id and e.ordered;
    insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status, replay_of,
                                         event_namespace, ordering_key)
    select p_event.id, p_event.txid, p_event.slot, e.id,
           case when v_key is not null then 'waiting'
                when e.paused_at is null and e.disabled_at is null then 'pending'
                else 'paused' end::webhook.delivery_status,
           p_replay_of,
           webhook._event_namespace(p_event.txid, p_event.id_namespace,
                                    (select i.namespace from webhook.incarnations i
                                     where i.n = webhook._incarnation_of(p_event.txid))),
           v_key
    from webhook.endpoints e where e.id = p_endpoint_id
    returning id into v_id;
    if v_key is not null then
        perform webhook._hold_fanout();
        perform webhook._settle_keys(array[p_endpoint_id], array[v_key]);
    end if;
    perform webhook._wake();
    return v_id;
end
$$;

create or replace function webhook_send_test(
    endpoint_id bigint -- the endpoint to test
) returns bigint
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_endpoint webhook.endpoints := webhook._live_endpoint($1);
    v_event_id bigint;
    v_event webhook.events;
begin
    v_event_id := webhook._enqueue('webhook.test',
        jsonb_build_object('endpoint_id', v_endpoint.id, 'endpoint_name', v_endpoint.name,
                           'message', 'A test event from pg_webhook.', 'sent_at', now()),
        null, null);
    select * into v_event from webhook.events e where e.id = v_event_id and e.txid = webhook._vxid();
    perform webhook._deliver_again(v_event, v_endpoint.id, null);
    return v_event_id;
end
$$;
comment on function webhook_send_test(bigint) is
    'Sends a webhook.test event to one endpoint, whatever its filters; returns the event id (see webhook.delivery_log).';

create or replace function webhook._endpoint_state(
    p_endpoint_id bigint -- the endpoint
) returns jsonb
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select jsonb_build_object(
        'id', e.id,
        'name', e.name,
        'url', s.url,
        'event_types', to_jsonb(e.event_types),
        'headers', s.headers,
        'auth', s.auth,
        'retry_policy', e.retry_policy,
        -- Times and intervals as numbers and UTC text: their text form
        -- depends on each session's TimeZone and IntervalStyle.
        'timeout_us', (extract(epoch from e.timeout) * 1000000)::bigint,
        'max_in_flight', e.max_in_flight,
        'filter', e.filter,
        'max_per_second', e.max_per_second,
        'burst', e.burst,
        'ordered', e.ordered,
        'on_exhausted', e.on_exhausted,
        'paused', e.paused_at is not null,
        'disabled_reason', e.disabled_reason,
        'deleted', e.deleted_at is not null,
        'secret', s.secret,
        'previous_secret', s.previous_secret,
        'previous_expires_at',
            to_char(s.previous_expires_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
    from webhook.endpoints e
    -- The secrets' row of a removed endpoint goes once nothing is left to send.
    left join webhook.endpoint_secrets s on s.endpoint_id = e.id
    where e.id = p_endpoint_id
$$;

create or replace function webhook._apply_endpoint_state(
    p_state jsonb -- from webhook._endpoint_state() on the coordinator
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := (p_state ->> 'id')::bigint;
    v_local jsonb := webhook._endpoint_state(v_id);
    v_patterns text[] := array(select jsonb_array_elements_text(p_state -> 'event_types'));
    -- What webhook_update sets (the rest is state, secrets and identity).
    v_settings text[] := array['url', 'event_types', 'name', 'headers', 'auth', 'retry_policy', 'timeout_us',
                               'max_in_flight', 'filter', 'max_per_second', 'burst', 'ordered', 'on_exhausted'];
    v_timeout interval := (p_state ->> 'timeout_us')::bigint * interval '1 microsecond';
    v_paused boolean;
    v_reason text;
begin
    if v_local is not distinct from p_state then
        return false;
    end if;
    if v_local is null then
        if (p_state ->> 'deleted')::boolean then
            return false; -- removed before this node knew it: nothing to send
        end if;
        -- As webhook._subscribe makes it, with the coordinator's id and secret
        -- (the coordinator checked the settings).
        perform webhook._insert_endpoint(v_id, p_state ->> 'name', p_state ->> 'url', v_patterns, p_state -> 'headers',
                                         nullif(p_state -> 'auth', 'null'::jsonb),
                                         nullif(p_state -> 'retry_policy', 'null'::jsonb), v_timeout,
                                         (p_state ->> 'max_in_flight')::integer, p_state ->> 'secret',
                                         p_state ->> 'filter', (p_state ->> 'max_per_second')::integer,
                                         (p_state ->> 'burst')::integer);
        -- Ids are the coordinator's: keep this node's sequence past them.
        perform setval(pg_get_serial_sequence('webhook.endpoints', 'id'), (select max(e.id) from webhook.endpoints e));
        v_local := webhook._endpoint_state(v_id);
    end if;
    if (v_local ->> 'deleted')::boolean then
        return true; -- a removed endpoint changes no more
    end if;
    if (p_state ->> 'deleted')::boolean then
        perform @extschema@.webhook_unsubscribe(v_id);
        return true;
    end if;
    if (select jsonb_object_agg(k, v_local -> k) from unnest(v_settings) k)
       is distinct from (select jsonb_object_agg(k, p_state -> k) from unnest(v_settings) k) then
        perform @extschema@.webhook_update(v_id,
                               url => p_state ->> 'url',
                               event_types => v_patterns,
                               name => p_state ->> 'name',
                               headers => p_state -> 'headers',
                               retry_policy => p_state -> 'retry_policy',
                               timeout => v_timeout,
                               auth => p_state -> 'auth',
                               max_in_flight => coalesce((p_state ->> 'max_in_flight')::integer, 0),
                               filter => coalesce(p_state ->> 'filter', ''),
                               max_per_second => coalesce((p_state ->> 'max_per_second')::integer, 0),
                               burst => coalesce((p_state ->> 'burst')::integer, 0),
                               -- (An older coordinator's state has neither: left as they are.)
                               ordered => (p_state ->> 'ordered')::boolean,
                               on_exhausted => p_state ->> 'on_exhausted');
    end if;
    update webhook.endpoint_secrets s
    set secret = p_state ->> 'secret',
        previous_secret = p_state ->> 'previous_secret',
        previous_expires_at = (p_state ->> 'previous_expires_at')::timestamptz
    where s.endpoint_id = v_id
      and (s.secret, s.previous_secret, s.previous_expires_at)
          is distinct from (p_state ->> 'secret', p_state ->> 'previous_secret',
                            (p_state ->> 'previous_expires_at')::timestamptz);
    -- Held (paused, disabled) as the coordinator holds it: released first
    -- when it holds less, then held again as it says.
    v_paused := (v_local ->> 'paused')::boolean;
    v_reason := v_local ->> 'disabled_reason';
    if (v_paused and not (p_state ->> 'paused')::boolean)
       or v_reason is distinct from (p_state ->> 'disabled_reason') then
        perform webhook._enable_endpoint(v_id);
        v_paused := false;
        v_reason := null;
    end if;
    if (p_state ->> 'paused')::boolean and not v_paused then
        perform @extschema@.webhook_pause(v_id);
    end if;
    if p_state ->> 'disabled_reason' is not null and v_reason is null then
        -- Held, without a second webhook.endpoint.disabled event: the node
        -- where it was disabled sent it.
        perform webhook._hold_endpoint(v_id, p_state ->> 'disabled_reason');
    end if;
    return true;
end
$$;

create or replace function webhook._open_deliveries(
    p_endpoint_id bigint, -- the endpoint
    p_most integer        -- stop counting here
) returns integer
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select ((select count(*) from (select from webhook.deliveries_open d
                                   where d.endpoint_id = p_endpoint_id and d.status = 'pending'
                                   limit p_most) p)
          + (select count(*) from (select from webhook.deliveries_open d
                                   where d.endpoint_id = p_endpoint_id and d.status = 'paused'
                                   limit p_most) q)
          -- And an ordered endpoint's waiting ones (the only open status
          -- after paused; see webhook.delivery_status for why not by name).
          + (select count(*) from (select from webhook.deliveries_open d
                                   where d.endpoint_id = p_endpoint_id and d.ordering_key is not null
                                     and d.status > 'paused'
                                   limit p_most) w))::integer
$$;

create or replace function webhook._backfill_step()
returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
-- Keys go out as text and come back: one format whatever the session's.
set datestyle = 'ISO, YMD'
set intervalstyle = 'postgres'
-- The batch runs inside the claim: a lock held on the table (an ALTER
-- TABLE, a LOCK) must not hold up the worker's deliveries. The batch gives
-- up after this, and its backfill waits a second (webhook._backfill_room).
set lock_timeout = '100ms'
as $$
declare
    b webhook.backfills;
    f record;
    v_limit integer;
    v_read bigint;
    v_sent bigint;
    v_last jsonb;
    v_status webhook.delivery_status;
    v_ordered boolean;
    v_keys text[];
    v_schema name;
    v_relname name;
    v_message text;
    v_state text;
begin
    for b in
        select * from webhook.backfills where status = 'running' order by updated_at for update skip locked
    loop
        if b.endpoint_id is not null then
            -- An ordered endpoint's deliveries wait for their key's turn (15_ordering.sql).
            select case when ep.ordered then 'waiting'
                        when ep.paused_at is null and ep.disabled_at is null then 'pending' else 'paused' end,
                   ep.ordered
            into v_status, v_ordered
            from webhook.endpoints ep where ep.id = b.endpoint_id and ep.deleted_at is null;
            if not found then
                perform webhook._finish_backfill(b.id, 'cancelled', 'its endpoint was removed');
                continue;
            end if;
        end if;
        -- Whole batches of half the window: a batch costs its statements'
        -- planning whatever its size, so the window refills in two.
        v_limit := webhook._backfill_window() / 2;
        continue when webhook._backfill_room(b) < v_limit;
        f := webhook._backfill_functions(b.id);
        select n.nspname, c.relname into v_schema, v_relname
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.oid = b.source_table;
        begin
            -- The step runs as the extension owner: the function it calls
            -- must be the one webhook_backfill made, owned by the role
            -- with no rights (a restore without the roles would leave it
            -- the restoring superuser's), and its reader the requester's.
            if not exists (select from pg_proc p
                           where p.oid = to_regprocedure(format('webhook.%I(jsonb, integer)', f.entry))
                             and p.prosecdef and p.proowner = 'webhook_filter'::regrole)
               or not exists (select from pg_proc p
                              where p.oid = to_regprocedure(format('webhook.%I(jsonb, integer)', f.reader))
                                and p.proowner = (select r.oid from pg_roles r where r.rolname = b.requested_by)) then
                -- (The backfill ends failed with this message, which says
                -- what to do: a hint would be lost.)
                raise exception 'the functions of backfill % are missing or not owned as webhook_backfill made them; '
                                'webhook_backfill_resume(%) makes them again for the role that calls it', b.id, b.id
                    using errcode = '42501';
            end if;
            execute format($q$
                with r as materialized (
                    select * from webhook.%I($1, $2)
                ), ev as (
                    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, source_table,
                                                id_namespace, endpoint_id)
                    select nextval('webhook.events_id_seq'), $3, $4, $5, x.payload, octet_length(x.payload::text),
                           $6, $7, $8
                    from r
                    -- The event: a captured row's shape (payload.rs), op
                    -- "read"; a row over pg_webhook.max_payload_bytes cut
                    -- down to its key, with "truncated": true. Written out
                    -- here rather than in a function: a function with its
                    -- own settings costs a call per row.
                    cross join lateral (
                        select format('{"table":%%s,"schema":%%s,"op":"read","new":%%s,"old":null}',
                                      $9, $10, r.new) as e
                    ) f
                    cross join lateral (
                        select case when octet_length(f.e) <= $12 then f.e
                                    else format('{"table":%%s,"schema":%%s,"op":"read","new":%%s,"old":null,'
                                                || '"truncated":true}',
                                                $9, $10, coalesce(case when $11 then r.k::text end, '{}'))
                               end::json as payload
                    ) x
                    where r.new is not null
                    order by r.n
                    returning id, slot, txid, id_namespace, payload
                ), dl as (
                    insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status,
                                                         event_namespace, ordering_key)
                    select ev.id, ev.txid, ev.slot, $8, $13, webhook._event_namespace(ev.txid, ev.id_namespace, null),
                           case when $14 then webhook._row_key($6, $15, ev.payload::jsonb) end
                    from ev
                    where $8 is not null
                    order by ev.id
                    returning ordering_key
                )
                select (select count(*) from r), (select r.k from r order by r.n desc limit 1),
                       (select count(*) from ev),
                       (select array_agg(distinct dl.ordering_key) from dl where dl.ordering_key is not null)
                $q$, f.entry)
            into v_read, v_last, v_sent, v_keys
            using b.last_key, v_limit, webhook._current_slot(), webhook._vxid(), b.event_type,
                  format('%I.%I', v_schema, v_relname), webhook._id_namespace(), b.endpoint_id,
                  to_json(v_relname::text)::text, to_json(v_schema::text)::text,
                  b.columns is null or b.key_columns <@ b.columns,
                  coalesce(nullif(current_setting('pg_webhook.max_payload_bytes', true), '')::integer, 1048576),
                  v_status, coalesce(v_ordered, false), webhook._key_columns(format('%I.%I', v_schema, v_relname));
            if v_keys is not null then
                -- Each key's head, under the fan-out's lock (15_ordering.sql).
                perform webhook._hold_fanout();
                perform webhook._settle_keys(array_fill(b.endpoint_id, array[cardinality(v_keys)]), v_keys);
            end if;
        exception when others then
            get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
            -- A lock not had in time, a deadlock, a serialization failure:
            -- the next batch may pass. Anything else would fail again.
            if v_state = '55P03' or v_state like '40%' then
                update webhook.backfills
                set error = format('%s (SQLSTATE %s); tried again a second later', v_message, v_state),
                    updated_at = clock_timestamp()
                where id = b.id;
            else
                perform webhook._finish_backfill(b.id, 'failed', format('%s (SQLSTATE %s)', v_message, v_state));
            end if;
            return 0;
        end;
        update webhook.backfills
        set last_key = coalesce(v_last, last_key), rows_read = rows_read + v_read, rows_sent = rows_sent + v_sent,
            last_txid = case when v_sent > 0 then webhook._vxid() else last_txid end, error = null,
            updated_at = now()
        where id = b.id;
        if v_read < v_limit then
            perform webhook._finish_backfill(b.id, 'done', null);
        end if;
        if v_sent > 0 then
            perform webhook._wake();
        end if;
        return v_read;
    end loop;
    return 0;
end
$$;

create or replace function webhook._invariant_violations()
returns table (object_id bigint, invariant text)
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select d.id, 'a delivery has its event in its event''s slot'
    from webhook.deliveries d
    where not exists (select from webhook.events e
                      where e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id)
    union all
    select d.id, 'a delivery carries its event''s webhook-id namespace'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    left join webhook.incarnations i on i.n = webhook._incarnation_of(e.txid)
    where webhook._event_namespace(e.txid, e.id_namespace, i.namespace) is distinct from d.event_namespace
    union all
    select d.id, 'a paused or disabled endpoint has no pending delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'pending' and (e.paused_at is not null or e.disabled_at is not null)
    union all
    select d.id, 'a sending endpoint has no paused delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.paused_at is null and e.disabled_at is null
    union all
    select d.id, 'a removed endpoint holds nothing'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.deleted_at is not null
    union all
    -- Ordered endpoints (15_ordering.sql). 'waiting' is the only open
    -- status after 'paused' (see webhook.delivery_status for why not by name).
    select d.id, 'a waiting delivery has a key'
    from webhook.deliveries_open d
    where d.status > 'paused' and d.ordering_key is null
    union all
    select d.id, 'a waiting delivery''s key has a head or is blocked'
    from webhook.deliveries_open d
    where d.status > 'paused'
      and not exists (select from webhook.deliveries_open h
                      where h.endpoint_id = d.endpoint_id and h.ordering_key = d.ordering_key and h.status <= 'paused')
      and not exists (select from webhook.key_blocks b
                      where b.endpoint_id = d.endpoint_id and b.ordering_key = d.ordering_key)
    union all
    select h.id, 'a head never sent comes before the rest of its key'
    from webhook.deliveries_open h
    where h.ordering_key is not null and h.status <= 'paused' and h.attempt_count = 0
      and exists (select from webhook.deliveries_open d
                  where d.endpoint_id = h.endpoint_id and d.ordering_key = h.ordering_key and d.status > 'paused'
                    and (d.event_id, d.id) < (h.event_id, h.id))
    union all
    select b.endpoint_id, 'a blocked key is an ordered endpoint''s, without a head'
    from webhook.key_blocks b
    join webhook.endpoints e on e.id = b.endpoint_id
    where not e.ordered
       or exists (select from webhook.deliveries_open h
                  where h.endpoint_id = b.endpoint_id and h.ordering_key = b.ordering_key and h.status <= 'paused')
    union all
    select s.id, 'a committed subscription period has its snapshots'
    from webhook.subscriptions s
    where s.from_xmin is null or (s.until_txid is not null and s.until_xmin is null)
    union all
    select e.id, 'a live endpoint has one open subscription period and a secret'
    from webhook.endpoints e
    where e.deleted_at is null
      and ((select count(*) from webhook.subscriptions s where s.endpoint_id = e.id and s.until_txid is null) <> 1
           or not exists (select from webhook.endpoint_secrets k where k.endpoint_id = e.id))
    union all
    select d.id, 'an event for one endpoint is delivered to it alone'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    where e.endpoint_id is not null and e.endpoint_id <> d.endpoint_id
    union all
    select b.id, 'a running backfill has its two functions, a finished one none'
    from webhook.backfills b
    cross join webhook._backfill_functions(b.id) f
    where (b.status = 'running') <> (to_regprocedure(format('webhook.%I(jsonb, integer)', f.entry)) is not null)
       or (b.status = 'running') <> (to_regprocedure(format('webhook.%I(jsonb, integer)', f.reader)) is not null)
    union all
    select c, 'a Citus node has each endpoint as the coordinator last published it'
    from webhook._cluster_stale() c
    union all
    select g.gen, 'only the current generation''s slot is written by new events'
    from webhook.generations g
    where g.purged_at is not null
      and exists (select from webhook.events e where e.slot = g.gen % webhook._slots())
      and not exists (select from webhook.generations n where n.gen > g.gen and n.gen % webhook._slots() = g.gen % webhook._slots())
$$;

create or replace function webhook._purge_slot(
    p_gen bigint,        -- the generation whose slot to purge
    p_now timestamptz    -- the time to act at
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_slot integer := p_gen % webhook._slots();
    v_cur smallint := webhook._current_slot();
    v_cutoff timestamptz := p_now - webhook._retention_s() * interval '1 second';
    st webhook.fanout_state;
    v_total bigint;
    v_kept bigint;
    v_lock_timeout text := current_setting('lock_timeout');
begin
    if v_cur = v_slot then
        raise exception 'pg_webhook: refusing to purge the current slot %', v_slot using errcode = '55000';
    end if;
    -- Counted before locking: nobody adds events to a slot this old.
    select count(*) into v_total from webhook.events e where e.slot = v_slot;
    perform set_config('lock_timeout', '500ms', true);
    execute format('lock table webhook.%I, webhook.%I, webhook.%I in access exclusive mode',
                   'events_' || v_slot, 'deliveries_' || v_slot, 'attempts_' || v_slot);
    perform set_config('lock_timeout', v_lock_timeout, true);
    select * into st from webhook.fanout_state;

    create temporary table pg_webhook_keep (txid bigint, id bigint, primary key (txid, id)) on commit drop;
    insert into pg_webhook_keep
    select d.event_txid, d.event_id from webhook.deliveries_open d where d.event_slot = v_slot
    union
    select e.txid, e.id from webhook.events e
    where e.slot = v_slot
      and (st is null or (e.txid >= st.prev_xmin and not webhook._visible(e.txid, st.prev_xmin, st.prev_xmax, st.prev_xip)))
    union
    select d.event_txid, d.event_id from webhook.deliveries d
    where d.slot = v_slot and d.finalized_at > v_cutoff;

    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, source_table, idempotency_key,
                                created_at, id_namespace, endpoint_id, ordering_key)
    select e.id, v_cur, e.txid, e.event_type, e.payload, e.payload_bytes, e.source_table, e.idempotency_key,
           e.created_at, e.id_namespace, e.endpoint_id, e.ordering_key
    from webhook.events e join pg_webhook_keep k on k.txid = e.txid and k.id = e.id
    where e.slot = v_slot;
    get diagnostics v_kept = row_count;
    insert into webhook.attempts (id, slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                                  status_code, response_excerpt, error, worker_id, lease_held)
    select a.id, v_cur, a.delivery_id, a.endpoint_id, a.attempt_number, a.started_at, a.duration_ms, a.status_code,
           a.response_excerpt, a.error, a.worker_id, a.lease_held
    from webhook.attempts a
    where a.slot = v_slot
      and a.delivery_id in (select d.id from webhook.deliveries d
                            join pg_webhook_keep k on k.txid = d.event_txid and k.id = d.event_id
                            where d.slot = v_slot or d.slot is null);
    insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status, attempt_count,
                                    next_attempt_at, last_attempt_at, last_status_code, last_error, replay_of,
                                    created_at, finalized_at, event_namespace, ordering_key)
    select d.id, v_cur, d.event_id, d.event_txid, v_cur, d.endpoint_id, d.status, d.attempt_count,
           d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.replay_of,
           d.created_at, d.finalized_at, d.event_namespace, d.ordering_key
    from webhook.deliveries d join pg_webhook_keep k on k.txid = d.event_txid and k.id = d.event_id
    where d.slot = v_slot;
    update webhook.deliveries_open d set event_slot = v_cur where d.event_slot = v_slot;

    drop table pg_webhook_keep;
    execute format('truncate webhook.%I, webhook.%I, webhook.%I',
                   'events_' || v_slot, 'deliveries_' || v_slot, 'attempts_' || v_slot);
    update webhook.generations g set purged_at = p_now where g.gen = p_gen;
    return v_total - v_kept;
end
$$;

create or replace view webhook.endpoint_health as
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
comment on column webhook.endpoint_health.pending is
    'Deliveries to send: pending, and an ordered endpoint''s waiting behind an earlier event of their key.';

revoke all on function webhook._check_on_exhausted(text), webhook._key_columns(text),
    webhook._trigger_args(regclass), webhook._watch_args(regclass), webhook._watch_key_columns(regclass),
    webhook_watch(regclass, text[], text, text[], text, text[]), webhook._check_columns(regclass, text[], text, text),
    webhook._row_key(text, text[], jsonb), webhook._event_key(webhook.events), webhook._settle_keys(bigint[], text[]),
    webhook._heads_finished(bigint[], bigint[], text[], bigint[], boolean[]), webhook._unorder_endpoint(bigint),
    webhook_unblock(bigint, text, boolean), webhook._enqueue(text, jsonb, text, text),
    webhook._fan_out_chunk(webhook.fanout_state, bigint[], bigint, bigint, boolean, boolean, boolean),
    webhook_publish(text, jsonb, text, text),
    webhook._subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer, boolean,
                       text),
    webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer, boolean,
                      text),
    webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text, integer, integer,
                   boolean, text)
    from public;
revoke all on webhook.key_blocks, webhook.blocked_keys from public;
grant select on webhook.key_blocks, webhook.blocked_keys to webhook_reader;
grant execute on function
    webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer, boolean,
                      text),
    webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text, integer, integer,
                   boolean, text),
    webhook_unblock(bigint, text, boolean),
    webhook_watch(regclass, text[], text, text[], text, text[]),
    webhook._check_columns(regclass, text[], text, text)
    to webhook_admin;
comment on function webhook._capture() is
    'Row-change capture trigger installed by webhook_watch; arguments: the event prefix, then the columns to send (all when none), then ''@key'' and the key columns for ordered endpoints when the watch names them (read by the fan-out, not here); on a Citus distributed table, ''@table'', its schema and its name first.';
grant execute on function webhook_publish(text, jsonb, text, text) to webhook_publisher, webhook_admin;
revoke all on function webhook._claim_deliveries(text, integer, interval, integer, bigint[], integer[], integer, bigint)
    from public;
grant execute on function
    webhook._claim_deliveries(text, integer, interval, integer, bigint[], integer[], integer, bigint)
    to webhook_worker;
select pg_catalog.pg_extension_config_dump('webhook.key_blocks', '');

-- 0.3.0: the SQL flavor (pg_webhook without its library, sql/plain/): a filter's
-- function joins the extension only when there is one, the role that owns
-- pg_webhook may be a member of webhook_filter (it gives it the filters
-- when it is no superuser, through webhook._give_function, which grants
-- CREATE on schema webhook for that ALTER only), and a backfill says so
-- when its owner cannot make a function of the role that asks.
create or replace function webhook._check_filter_role()
returns void
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    -- The role was made without rights, but roles are cluster-wide and
    -- made only when missing: one that someone made beforehand, or gave
    -- rights to since, would lend its rights to every filter.
    if exists (select from pg_roles r
               where r.rolname = 'webhook_filter'
                 and (r.rolsuper or r.rolcanlogin or r.rolcreaterole or r.rolcreatedb or r.rolreplication
                      or r.rolbypassrls
                      or exists (select from pg_auth_members m
                                 where m.member = r.oid
                                    -- Without a superuser (the SQL flavor), the owner of
                                    -- pg_webhook can take the role to give it the filters.
                                    or (m.roleid = r.oid and m.member <> (select n.nspowner from pg_namespace n
                                                                          where n.nspname = 'webhook'))))) then
        raise exception 'the role webhook_filter has rights: filters run as it, so it must have none'
            using errcode = '42501',
                  hint = 'Make it NOLOGIN, NOSUPERUSER, NOCREATEROLE, NOCREATEDB, NOREPLICATION, NOBYPASSRLS, '
                         'and a member of no role.';
    end if;
end
$$;

-- API: Private
-- Gives p_function to p_role. An owner of pg_webhook that is no superuser
-- (the SQL flavor) may only give a function to a role with CREATE on
-- schema webhook, which neither webhook_filter, webhook_capture nor a
-- backfill's asking role may hold for longer: code running as them (a
-- filter's or a reader's call, a writer's cast) could put a function in
-- schema webhook that a call in pg_webhook's SECURITY DEFINER functions
-- would resolve to. So the right is granted for this one ALTER, in this
-- transaction, and taken back: no other session ever sees it (the same
-- for a superuser owner, who needs no grant: one way for both flavors).
-- Grants to one schema at once fail on its row, hence the lock.
create function webhook._give_function(
    p_function regprocedure, -- a function in schema webhook
    p_role name              -- its new owner
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if has_schema_privilege(p_role, 'webhook', 'CREATE') then
        execute format('alter function %s owner to %I', p_function, p_role);
        return;
    end if;
    perform pg_advisory_xact_lock(hashtext('pg_webhook: create on schema webhook'));
    execute format('grant create on schema webhook to %I', p_role);
    execute format('alter function %s owner to %I', p_function, p_role);
    execute format('revoke create on schema webhook from %I', p_role);
end
$$;
revoke all on function webhook._give_function(regprocedure, name) from public;

create or replace function webhook._define_filter(
    p_subscription_id bigint, -- the subscription period
    p_filter text             -- a SQL condition on data (jsonb) and event_type (text)
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_name name := webhook._filter_name(p_subscription_id);
    v_state text;
    v_message text;
    v_hint text := 'A filter is a SQL condition on data (the event''s data, jsonb) and event_type (text), '
                   'e.g. filter => ''data->>''''status'''' = ''''paid'''''', and reads nothing else.';
    v_propagation text;
begin
    if p_filter is null or btrim(p_filter) = '' then
        raise exception 'a filter must be a SQL condition' using errcode = '22023', hint = v_hint;
    end if;
    if octet_length(p_filter) > 8192 then
        raise exception 'a filter is at most 8 KiB' using errcode = '22023';
    end if;
    -- One condition, one statement: without a semicolon the function's
    -- body cannot hold a second one.
    if strpos(p_filter, ';') > 0 then
        raise exception 'a filter is one SQL condition: it has no ";"' using errcode = '42601', hint = v_hint;
    end if;
    perform webhook._check_filter_role();
    v_propagation := webhook._citus_ddl_propagation(true, null);
    begin
        -- Without ";" this is one statement, and RETURN its last clause.
        -- The condition goes on lines of its own, so that a -- comment in
        -- it ends where it does.
        execute format(E'create function webhook.%I(data jsonb, event_type text) returns boolean'
                       ' language sql stable security definer return (\n%s\n)', v_name, p_filter);
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        raise exception 'invalid filter: %', v_message using errcode = v_state, hint = v_hint;
    end;
    -- Its rights set before it is given away: an owner of pg_webhook that
    -- is no superuser has none on a function of webhook_filter's (its
    -- REVOKE would do nothing, with a warning).
    execute format('revoke all on function webhook.%I(jsonb, text) from public', v_name);
    perform webhook._give_function(format('webhook.%I(jsonb, text)', v_name)::regprocedure, 'webhook_filter');
    -- A part of the extension (dropped with it), kept out of pg_dump: the
    -- filter's text is in webhook.subscriptions, which pg_dump keeps. Added
    -- last, so that the rights it was added with (which pg_dump compares
    -- a member's with) are its final ones.
    -- (No extension when pg_webhook came from the SQL flavor's script.)
    if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') then
        execute format('alter extension pg_webhook add function webhook.%I(jsonb, text)', v_name);
    end if;
    perform webhook._citus_ddl_propagation(false, v_propagation);
    -- PostgreSQL checks a statement's rights as it starts: a filter reading
    -- a table or a schema webhook_filter may not read fails on this empty
    -- event, whatever it would do with a real one. Other errors here are
    -- the empty event's (a cast of a missing key, say).
    begin
        perform webhook._filter_by_name(p_subscription_id, null, null);
    exception
        when insufficient_privilege then
            get stacked diagnostics v_message = message_text;
            raise exception 'invalid filter: %', v_message using errcode = '42501', hint = v_hint;
        when others then
            null;
    end;
end
$$;

create or replace function webhook_filter_preview(
    filter text,                       -- a SQL condition on data (jsonb) and event_type (text)
    event_types text[] default '{*}',  -- among the events of these types
    last integer default 100           -- the last this many logged events, 1 to 10,000
) returns table (event_id bigint, event_type text, created_at timestamptz, matched boolean, error text)
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_filter text := $1;
    v_patterns text[] := webhook._check_patterns($2);
    v_last integer := $3;
    -- A period id no subscription has: this backend's, negative.
    v_id bigint := -pg_backend_pid();
    v_name name := webhook._filter_name(v_id);
    v_event record;
    v_propagation text;
begin
    if v_last is null or v_last not between 1 and 10000 then
        raise exception 'last must be between 1 and 10000, not %', coalesce(v_last::text, 'NULL') using errcode = '22023';
    end if;
    perform webhook._define_filter(v_id, v_filter);
    for v_event in
        select e.id, e.event_type, e.created_at, e.payload
        from webhook.events e
        where webhook._matches(v_patterns, e.event_type)
        order by e.txid desc, e.id desc
        limit v_last
    loop
        event_id := v_event.id;
        event_type := v_event.event_type;
        created_at := v_event.created_at;
        error := null;
        begin
            matched := webhook._filter_by_name(v_id, v_event.payload::jsonb, v_event.event_type);
        exception when others then
            matched := null;
            error := sqlerrm;
        end;
        return next;
    end loop;
    v_propagation := webhook._citus_ddl_propagation(true, null);
    if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') then
        execute format('alter extension pg_webhook drop function webhook.%I(jsonb, text)', v_name);
    end if;
    execute format('drop function webhook.%I(jsonb, text)', v_name);
    perform webhook._citus_ddl_propagation(false, v_propagation);
end
$$;

-- API: Private
-- The hint of an invalid "where" (webhook_backfill), in one place.
create function webhook._backfill_where_hint()
returns text
language sql immutable
return 'A condition on the row, by column name (or <table>.<column>), e.g. "where" => ''created_at > '
       'now() - interval ''''30 days'''''', with the functions of other schemas than pg_catalog named with '
       'their schema.';


-- API: Private
-- The primary key columns of table p_tbl, in key order; null without one.
create function webhook._primary_key(
    p_tbl regclass -- the table
) returns text[]
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select array_agg(a.attname::text order by k.ord)
    from pg_index i
    cross join lateral unnest(i.indkey) with ordinality k(attnum, ord)
    join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
    where i.indrelid = p_tbl and i.indisprimary
$$;


-- API: Private
-- Raises unless a backfill of p_type events has somewhere to go: endpoint
-- p_endpoint_id (42704 unless it exists), or, when null, an endpoint
-- subscribed to p_type now (22023).
create function webhook._check_backfill_target(
    p_endpoint_id bigint, -- the one endpoint, or null for every one subscribed
    p_type text           -- the backfill's event type
) returns void
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    if p_endpoint_id is not null then
        perform webhook._live_endpoint(p_endpoint_id);
    elsif not exists (select from webhook._subscribed_now(p_type)) then
        raise exception 'no endpoint is subscribed to %', p_type
            using errcode = '22023',
                  hint = format('Subscribe an endpoint to %s first, or send to one endpoint: endpoint => <id>.', p_type);
    end if;
end
$$;

-- API: Private
-- Makes backfill p_id's two functions from its row: the reader (see the
-- head of this file), owned by the session's login, the role that asks,
-- and the one the step calls, owned by webhook_filter; then calls them
-- once on nothing, which checks the reader's SQL and that role's rights.
-- For webhook_backfill and webhook_backfill_resume (their caller is
-- SECURITY DEFINER: session_user is the one role whose rights the session
-- holds in any case, as it can RESET ROLE).
create function webhook._make_backfill_reader(
    p_id bigint -- the backfill
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    b webhook.backfills;
    v_tbl regclass;
    v_where text;
    f record := webhook._backfill_functions(p_id);
    v_alias text;
    v_key_list text;
    v_select text;
    v_order text;
    v_key_object text;
    v_after text;
    v_new text;
    v_propagation text;
    v_state text;
    v_message text;
    v_hint text := webhook._backfill_where_hint();
begin
    select * into strict b from webhook.backfills where id = p_id;
    v_tbl := b.source_table;
    v_where := b.condition;
    v_alias := quote_ident((select c.relname from pg_class c where c.oid = v_tbl));

    -- The reader: the next p_limit rows after the key p_after, in key
    -- order (n), each with its key (k, as jsonb: the cursor, read back
    -- with the columns' types) and, when it matches "where", its row
    -- (new: compact, as row_to_json makes a captured row, limited to the
    -- watch's columns). The condition and the row are computed on the
    -- table itself, so that only the columns they name need SELECT. Two
    -- branches, of which one-time filters run only one, so that each is an
    -- index scan (an OR of "no key yet" and the key condition is not).
    select string_agg(format('%s.%I', v_alias, k), ', ' order by o),
           string_agg(format('%L, %s.%I', k, v_alias, k), ', ' order by o),
           string_agg(format('(p_after ->> %L)::%s', k, format_type(a.atttypid, null)), ', ' order by o)
    into v_key_list, v_key_object, v_after
    from unnest(b.key_columns) with ordinality u(k, o)
    join pg_attribute a on a.attrelid = v_tbl and a.attname = u.k;
    v_new := case when b.columns is null then format('row_to_json(%s)', v_alias)
                  else (select format('(select row_to_json(c) from (select %s) c)',
                                      string_agg(format('%s.%I', v_alias, a.attname), ', ' order by a.attnum))
                        from pg_attribute a
                        where a.attrelid = v_tbl and a.attname = any (b.columns) and a.attnum > 0
                          and not a.attisdropped)
             end;
    -- Each branch is v_select, its key condition and v_order (the user's
    -- text is only ever an argument of format, never its format string).
    -- The condition goes on lines of its own, so that a -- comment in it
    -- ends where it does.
    v_select := format(E'select row_number() over (order by %s) as n, jsonb_build_object(%s) as k,\n'
                       || E'       case when (\n%s\n) then %s end as new\n'
                       || 'from %s as %s where ',
                       v_key_list, v_key_object, coalesce(v_where, 'true'), v_new, v_tbl, v_alias);
    v_order := format(' order by %s limit p_limit', v_key_list);
    v_propagation := webhook._citus_ddl_propagation(true, null);
    begin
        -- PL/pgSQL, not a SQL-standard body: Citus plans no SQL function
        -- with parameters that reads a distributed table. Its names are
        -- resolved as it runs, through its own pinned search_path; the
        -- body is a quoted literal, and without ";" in the condition its
        -- one statement cannot become two. use_column: a column named like
        -- an argument or an output (n, k, new) is the column.
        execute format(E'create function webhook.%I(p_after jsonb, p_limit integer)\n'
                       || E'returns table (n bigint, k jsonb, new json)\n'
                       || E'language plpgsql stable security definer\n'
                       || E'set search_path = pg_catalog, webhook, pg_temp\n'
                       || 'as %L',
                       f.reader,
                       format(E'#variable_conflict use_column\nbegin\nreturn query\n'
                              || E'select r.n, r.k, r.new from ((%s)\nunion all\n(%s)) as r order by r.n;\nend',
                              v_select || 'p_after is null' || v_order,
                              v_select || format('(%s) > (%s)', v_key_list, v_after) || v_order));
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        if v_where is null or v_state = '42501' then
            raise; -- not the condition's fault
        end if;
        raise exception 'invalid "where" condition for %: %', v_tbl, v_message using errcode = v_state, hint = v_hint;
    end;
    execute format('create function webhook.%I(p_after jsonb, p_limit integer) '
                   'returns table (n bigint, k jsonb, new json) language sql stable security definer '
                   'begin atomic select r.n, r.k, r.new from webhook.%I(p_after, p_limit) r; end',
                   f.entry, f.reader);
    -- Their rights set before they are given away: an owner of pg_webhook
    -- that is no superuser may have none on its new owners' functions
    -- (a REVOKE or GRANT would do nothing, with a warning).
    execute format('revoke all on function webhook.%I(jsonb, integer) from public', f.reader);
    execute format('revoke all on function webhook.%I(jsonb, integer) from public', f.entry);
    execute format('grant execute on function webhook.%I(jsonb, integer) to webhook_filter', f.reader);
    begin
        perform webhook._give_function(format('webhook.%I(jsonb, integer)', f.reader)::regprocedure, session_user);
    exception when insufficient_privilege then
        -- Only without a superuser (the SQL flavor): its owner may not
        -- make functions of other roles.
        raise exception 'cannot backfill % as %: the role that owns pg_webhook (%) cannot make a function of %',
            v_tbl, session_user, current_user, session_user
            using errcode = '42501',
                  hint = format('Ask for the backfill as %s, or give it the role: grant %I to %I with set true',
                                current_user, session_user, current_user);
    end;
    perform webhook._give_function(format('webhook.%I(jsonb, integer)', f.entry)::regprocedure, 'webhook_filter');
    perform webhook._citus_ddl_propagation(false, v_propagation);
    -- Reading nothing parses the reader's statement (an unknown column or
    -- function, a condition that is not boolean) and checks its rights,
    -- which PostgreSQL does as a statement starts: a table, column or
    -- function the requester may not use.
    begin
        execute format('select from webhook.%I(null, 0)', f.entry);
    exception when others then
        get stacked diagnostics v_state = returned_sqlstate, v_message = message_text;
        if v_state = '42501' or v_where is null then
            raise exception 'cannot backfill %: %', v_tbl, v_message
                using errcode = v_state,
                      hint = format('The rows are read with the rights of %s, the role that asks.', session_user);
        end if;
        raise exception 'invalid "where" condition for %: %', v_tbl, v_message using errcode = v_state, hint = v_hint;
    end;
end
$$;


create or replace function webhook_backfill(
    tbl regclass,              -- the table
    endpoint bigint default null, -- the one endpoint to send to; every endpoint subscribed to <prefix>.read when null
    "where" text default null  -- a condition on the row (its columns by name); every row when null
) returns bigint
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_tbl regclass := $1;
    v_endpoint_id bigint := $2;
    v_where text := $3;
    v_table record := webhook._check_capturable(v_tbl);
    v_args text[] := webhook._watch_args(v_tbl);
    v_type text := coalesce(v_args[1], v_table.relname) || '.read';
    v_columns text[] := nullif(v_args[2:], '{}');
    v_keys text[];
    v_id bigint;
    v_hint text := webhook._backfill_where_hint();
begin
    perform webhook._check_backfill_target(v_endpoint_id, v_type);
    if v_where is not null then
        if btrim(v_where) = '' then
            raise exception '"where" must be a condition on the row, or null for every row'
                using errcode = '22023', hint = v_hint;
        end if;
        -- One condition, one statement (as a filter, see 13_filters.sql).
        if strpos(v_where, ';') > 0 then
            raise exception '"where" is one SQL condition: it has no ";"' using errcode = '42601', hint = v_hint;
        end if;
    end if;
    perform webhook._check_filter_role();
    if (select c.relpersistence from pg_class c where c.oid = v_tbl) = 't' then
        raise exception '% is a temporary table: the worker cannot read it', v_tbl using errcode = '0A000';
    end if;
    v_keys := webhook._primary_key(v_tbl);
    if v_keys is null then
        raise exception '% has no primary key', v_tbl
            using errcode = '0A000', hint = 'A backfill walks the table by its primary key: add one.';
    end if;

    insert into webhook.backfills (source_table, endpoint_id, event_type, condition, columns, key_columns,
                                   requested_by, rows_estimate)
    select v_tbl, v_endpoint_id, v_type, v_where, v_columns, v_keys, session_user,
           nullif(greatest(c.reltuples, -1), -1)::bigint
    from pg_class c where c.oid = v_tbl
    returning id into v_id;
    perform webhook._make_backfill_reader(v_id);
    perform webhook._wake();
    return v_id;
end
$$;

-- -----------------------------------------------------------------------------
-- 0.3.0: webhook.event_types lists the backfills' <prefix>.read types
-- (webhook.backfills is made above).
-- -----------------------------------------------------------------------------
create or replace view webhook.event_types as
with seen as (
    select e.event_type, count(*) as events, max(e.created_at) as last_seen_at
    from webhook.events e
    group by e.event_type
), types as (
    select p.event_type, 'published'::text as source, null::regclass as source_table, p.first_published_at as since
    from webhook.published_types p
    union all
    -- The prefix is the first argument, or the fourth after a Citus
    -- table's "@table", schema, name (see webhook_watch).
    select a.prefix || '.' || op.suffix, 'watched', t.tgrelid::regclass, null
    from pg_catalog.pg_trigger t
    cross join lateral (select case split_part(encode(t.tgargs, 'escape'), '\000', 1)
                                   when '@table' then split_part(encode(t.tgargs, 'escape'), '\000', 4)
                                   else split_part(encode(t.tgargs, 'escape'), '\000', 1) end as prefix) a
    cross join lateral (values (4, 'created'), (16, 'updated'), (8, 'deleted')) as op(bit, suffix)
    -- A watched partitioned table, not the clones of its trigger on its partitions.
    where t.tgname = 'webhook_capture' and t.tgfoid = 'webhook._capture'::regproc and t.tgparentid = 0
      and t.tgtype & op.bit <> 0
    union all
    -- What backfills sent or send (<prefix>.read), from the first one asked.
    select b.event_type, 'backfilled', b.source_table, min(b.created_at)
    from webhook.backfills b
    group by b.event_type, b.source_table
)
select t.event_type, t.source, t.source_table, t.since,
       coalesce(s.events, 0) as events_kept, s.last_seen_at
from types t
left join seen s on s.event_type = t.event_type;

comment on view webhook.event_types is
    'The event types that exist: those of watched tables (<prefix>.created/.updated/.deleted), those of backfills (<prefix>.read) and every type passed to webhook_publish or sent by pg_webhook itself, with how many events of each the log holds (kept for pg_webhook.retention) and the last one''s time.';

-- -----------------------------------------------------------------------------
-- 0.3.0: a backfill that failed or was cancelled goes on from its last key
-- (webhook_backfill_resume), its reader made by webhook._make_backfill_reader.
-- -----------------------------------------------------------------------------
-- API: Private
-- Backfill p_id's row, locked (waiting for a batch in progress: what it
-- wrote is sent); 42704 when there is none.
create function webhook._lock_backfill(
    p_id bigint -- the backfill
) returns webhook.backfills
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    b webhook.backfills;
begin
    select * into b from webhook.backfills where id = p_id for update;
    if not found then
        raise exception 'backfill % does not exist', coalesce(p_id::text, 'NULL') using errcode = '42704';
    end if;
    return b;
end
$$;

-- API: Public
-- Goes on with a backfill that failed or was cancelled, from the row after
-- its last_key (what it sent is not sent again), with the rights of the
-- role that asks now, whose reader is made again. Its table must still
-- have the primary key the backfill walks.
create function webhook_backfill_resume(
    backfill_id bigint -- the backfill
) returns boolean
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    b webhook.backfills := webhook._lock_backfill($1);
begin
    if b.status in ('running', 'done') then
        return false;
    end if;
    if not exists (select from pg_class c where c.oid = b.source_table) then
        raise exception 'the table of backfill % no longer exists', b.id using errcode = '42P01';
    end if;
    perform webhook._check_capturable(b.source_table);
    perform webhook._check_backfill_target(b.endpoint_id, b.event_type);
    perform webhook._check_filter_role();
    if webhook._primary_key(b.source_table) is distinct from b.key_columns then
        raise exception 'the primary key of % is not (%) any more: backfill % cannot go on from its last key',
            b.source_table, array_to_string(b.key_columns, ', '), b.id
            using errcode = '55000', hint = 'Start a new backfill with webhook_backfill().';
    end if;
    update webhook.backfills
    set status = 'running', error = null, finished_at = null, requested_by = session_user, updated_at = now()
    where id = b.id;
    perform webhook._make_backfill_reader(b.id);
    perform webhook._wake();
    return true;
end
$$;

comment on function webhook_backfill_resume(bigint) is
    'Goes on with a backfill that failed or was cancelled, from the row after its last_key, with the rights of the role that asks now. False if it is running or done.';
revoke all on function webhook._backfill_where_hint(), webhook._primary_key(regclass),
    webhook._make_backfill_reader(bigint), webhook._check_backfill_target(bigint, text),
    webhook._lock_backfill(bigint), webhook_backfill_resume(bigint)
    from public;
grant execute on function webhook_backfill_resume(bigint) to webhook_admin;
