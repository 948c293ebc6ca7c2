-- =============================================================================
-- pg_webhook: the worker's contract — claim, record, next due — and the
-- endpoint state changes the worker's outcomes cause (private).
--
-- The worker never touches the tables directly: these functions are the
-- whole state machine it may drive. Each runs as the extension owner
-- (SECURITY DEFINER), so the worker's role needs EXECUTE on them only.
--
-- Plans: deliveries_open is a queue table; it fills and drains between two
-- ANALYZEs, so its statistics are stale by nature, and a plan built on
-- them may read the whole backlog (a hash join over a sequential scan) to
-- touch a hundred rows. The claim and the record therefore name their rows
-- with "id = any (array)" (an index scan, whatever the row estimate) and
-- run with enable_seqscan off. And with jit off: a plan that keeps a
-- sequential scan (a one-row table has no better path) carries the
-- disable cost, which is far above jit_above_cost, and compiling it would
-- take a hundred times longer than running it.
-- =============================================================================

-- API: Private
-- One of pg_webhook's operator events about an endpoint (p_type is
-- webhook.endpoint.disabled, .failing or .recovered, or
-- webhook.delivery.exhausted): an event for the endpoints subscribed to
-- it, but never for the endpoint it is about (webhook._fan_out skips it:
-- a failing endpoint would otherwise be told, in vain, that it fails), and
-- a NOTIFY with the endpoint's id on the channel named after it
-- (pg_webhook_endpoint_failing, ...).
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
    perform webhook._enqueue(p_type, p_data, null, null);
end
$$;

-- API: Private
-- The operator events of one recording: endpoints whose run of failures
-- reached pg_webhook.failing_after, endpoints that succeeded after one
-- (their run as it was: {endpoint_id, failing_since, consecutive_failures}),
-- and deliveries that gave up. A delivery of an operator event that gives
-- up is not reported: two failing endpoints subscribed to each other's
-- events would otherwise report each other forever.
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

-- API: Private
-- Holds a disabled endpoint's deliveries: marks it disabled and its
-- pending deliveries paused (until webhook_resume). Returns its name, or
-- null if it was already disabled or removed.
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

-- API: Private
-- Disables an endpoint: its deliveries wait (paused) until webhook_resume,
-- listeners of pg_webhook_endpoint_disabled hear of it, and a
-- webhook.endpoint.disabled event goes to the endpoints subscribed to it
-- (operational webhooks, as Svix has); on a Citus coordinator, every node
-- disables it too. False if it was already disabled or removed.
create function webhook._disable_endpoint(
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

-- API: Private
-- The endpoints with a pending delivery, each found by one descent of
-- deliveries_open_due (a skip scan: PostgreSQL 15 has none of its own, so
-- a recursive query asks for the next endpoint id after the last one).
-- Defined once for the claim, the next-due time and the queue lag, which
-- must agree on who has work; a SQL-standard body so that it is inlined
-- into each of them (an SRF that is not inlined is planned again at every
-- call), with every name bound when the extension script runs.
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

-- API: Private
-- How many more deliveries each endpoint with work may have in flight at
-- this worker (its quota; zero or less: none now): an equal share of the
-- worker's p_concurrency slots among the endpoints with work, never more
-- than half of them (see webhook._claim_deliveries), less if its
-- max_in_flight says so, minus what the worker already has in flight for
-- it. Held endpoints have no quota (their deliveries are paused; this
-- only guards a race). The claim and the next-due time both read it: if
-- they disagreed on who may take work, a worker would spin, or sleep
-- while work waits. Inlined as webhook._endpoints_with_work is.
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

-- API: Private
-- A token bucket's tokens at p_at: p_tokens at p_since, plus p_per_second
-- for each second since, up to p_burst.
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
-- When a bucket holding p_tokens at p_since, filling at p_per_second, has
-- a whole token.
create function webhook._token_at(
    p_tokens double precision, -- tokens at p_since
    p_since timestamptz,       -- when it had them
    p_per_second integer       -- its rate
) returns timestamptz
language sql immutable parallel safe
return p_since + greatest(1 - p_tokens, 0) / p_per_second * interval '1 second';

-- API: Private
-- Rate limits (max_per_second), one budget for all workers: takes, for
-- each rate-limited endpoint with work, as many tokens as it may use now
-- (its quota at most) and returns how many. The claim takes at most that
-- many of its deliveries and puts back what it did not take, in its own
-- statement. Each bucket is taken under its row's lock, in endpoint order
-- (two workers never wait on each other in a cycle), and the lock is held
-- to the claim's commit: a second worker sees what the first one took.
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

-- API: Private
-- Claims up to p_limit due deliveries, fairly across endpoints, and leases
-- them until the endpoint's timeout plus a margin; a worker that dies simply
-- lets its leases lapse and the deliveries become claimable again; no
-- rescuer process is needed. First it fans out what was committed since
-- the last call (one round trip for both). The caller commits before
-- sending anything.
--
-- Fairness: each endpoint with work may have at most an equal share of
-- this worker's slots in flight (p_concurrency divided by the number of
-- endpoints with work, and never more than half of them; less if its
-- max_in_flight says so), and the batch is split evenly among them. So an
-- endpoint that stops answering holds at most its share of the slots while
-- it times out, and the others keep theirs. Why half even for an endpoint
-- alone: its neighbour's rate must not depend on whether the bad endpoint
-- got there first. With an equal share of whatever endpoints have work, a
-- healthy endpoint alone used every slot, and beside a blackholed one half
-- of them, so the neighbour's rate halved (measured 0.50 of its rate alone,
-- issue 6.4); capped at half, it has the same slots in both cases.
-- Endpoints with work and their quotas come from webhook._endpoint_quotas
-- (shared with webhook._next_due_ms), their deliveries oldest first.
--
-- Why the lease is kept in columns of their own (and next_attempt_at is
-- left alone): no indexed column changes, so the claim is a HOT update
-- (deliveries_open keeps half of each page free for it, see 03_log.sql).
-- plpgsql and not SQL: PostgreSQL 15 re-plans a SQL function's statement at
-- every call, plpgsql keeps the plan.
--
-- Two kinds of rows come back, each saying which it is (row_kind): one
-- per endpoint of the claimed deliveries ('endpoint': its URL, headers,
-- timeout, secrets and retry policy, delivery columns null), then one per
-- claimed delivery ('delivery': endpoint settings null). An endpoint's
-- settings are the same for all its deliveries in the batch; sent once,
-- they are converted and decoded once. The message id and the event's
-- time travel as their parts (the incarnation's namespace, the event id,
-- the timestamp) and are put together by the worker
-- (pg_webhook_protocol::envelope), which does it for a fraction of what
-- the string functions cost here on every row (measured with callgrind:
-- 15,000 instructions per delivery).
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
-- The latency histogram's bucket of a duration: bucket 1 holds up to
-- 1 ms, then each bucket doubles (2, 4, … ms), bucket 20 holds the rest
-- (over 262 s). Percentiles read from it are exact to a factor of two.
create function webhook._latency_bucket(
    p_ms double precision -- a duration
) returns integer
language sql immutable parallel safe
return least(20, pg_catalog.ceil(pg_catalog.ln(greatest(p_ms, 1::double precision))
                                 operator(pg_catalog./) pg_catalog.ln(2::double precision))::integer
                 operator(pg_catalog.+) 1);

-- API: Private
-- The upper bound, in ms, of latency bucket p_bucket (see _latency_bucket).
create function webhook._latency_bound(
    p_bucket integer -- 1 to 20
) returns double precision
language sql immutable parallel safe
return case when p_bucket operator(pg_catalog.>=) 20 then 'infinity'::double precision
            else pg_catalog.power(2::double precision, (p_bucket operator(pg_catalog.-) 1)::double precision) end;

-- API: Private
-- A histogram holding p_count in bucket p_bucket (1 to 20) and 0 elsewhere.
create function webhook._hist_one(
    p_bucket integer, -- see webhook._latency_bucket
    p_count integer   -- the count
) returns integer[]
language sql immutable parallel safe
return pg_catalog.array_fill(0, array[p_bucket operator(pg_catalog.-) 1])
       operator(pg_catalog.||) p_count
       operator(pg_catalog.||) pg_catalog.array_fill(0, array[20 operator(pg_catalog.-) p_bucket]);

-- API: Private
-- The element-wise sum of latency histograms (webhook._hist_acc, in Rust,
-- adds one row; see extension/src/histogram.rs).
create aggregate webhook._hist_sum(integer[]) (
    sfunc = webhook._hist_acc,
    stype = bigint[],
    initcond = '{}'
);

-- API: Private
-- The duration (upper bound of its bucket, in ms) under which a fraction
-- p_fraction of the attempts counted in a latency histogram fall.
create function webhook._hist_percentile(
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

-- API: Private
-- Records a batch of finished attempts in one statement. Every attempt is
-- logged (it happened); a delivery moves only where the caller still holds
-- its lease (River's "if still running"), so a worker whose lease expired
-- cannot overwrite the newer owner's outcome. A finished delivery leaves
-- deliveries_open for its event's slot. The per-minute counters and each
-- endpoint's running health are updated in the same statement, and an
-- endpoint that answered 410 Gone, or has failed without a success for
-- pg_webhook.disable_after, is disabled. Returns how many deliveries moved.
create function webhook._record_attempts(
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

-- API: Private
-- Milliseconds until the worker should look again: 0 when events await
-- their fan-out or a delivery it may claim is due, else until the earliest
-- pending delivery of an endpoint with room in its share is due; null when
-- nothing waits. The share is computed as in webhook._claim_deliveries, so
-- that a worker whose endpoints are all at their share sleeps instead of
-- claiming nothing in a loop. A delivery in flight elsewhere is not
-- counted: if its worker dies, the poll interval bounds how long its
-- lease goes unnoticed.
create function webhook._next_due_ms(
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

-- API: Private
-- How far behind the worker is, in seconds: the age of the oldest of an
-- event not fanned out yet and a due delivery no one is sending (0 when
-- nothing waits). The worker reads it for its queue_lag_seconds metric;
-- index probes only (the first such event by transaction, the first due
-- delivery of each endpoint with work).
create function webhook._queue_lag_seconds()
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
