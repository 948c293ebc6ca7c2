-- =============================================================================
-- pg_webhook: private functions (the `_` prefix; not part of the contract)
--
-- Validation helpers used by the public API, the enqueue path shared by
-- webhook_publish and the capture trigger, and the claim/record pair that the
-- worker calls. The worker never touches the tables directly: these two
-- functions are the whole state machine it may drive.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- validation
-- -----------------------------------------------------------------------------

-- API: Private
create function webhook._check_event_type(
    p_event_type text -- e.g. 'order.created'
) returns text
language plpgsql immutable
set search_path = pg_catalog
as $$
begin
    if p_event_type is null
       or length(p_event_type) > 255
       or p_event_type !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' then
        raise exception 'invalid event type: %', coalesce(quote_literal(p_event_type), 'NULL')
            using errcode = '22023',
                  hint = 'An event type is dot-separated words of letters, digits, "_" or "-", such as ''order.created'' (at most 255 characters).';
    end if;
    return p_event_type;
end
$$;

-- API: Private
create function webhook._check_patterns(
    p_patterns text[] -- e.g. '{order.*,invoice.paid}'
) returns text[]
language plpgsql immutable
set search_path = pg_catalog
as $$
declare
    v_pattern text;
begin
    if p_patterns is null or cardinality(p_patterns) = 0 then
        raise exception 'event_types must list at least one pattern'
            using errcode = '22023', hint = 'Use ''{*}'' for every event.';
    end if;
    foreach v_pattern in array p_patterns loop
        if v_pattern is null
           or length(v_pattern) > 255
           or v_pattern !~ '^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$' then
            raise exception 'invalid event type pattern: %', coalesce(quote_literal(v_pattern), 'NULL')
                using errcode = '22023',
                      hint = 'A pattern is ''*'', an exact type such as ''order.created'', or a prefix ending in ''.*'' such as ''order.*''.';
        end if;
    end loop;
    return array(select distinct unnest(p_patterns) order by 1);
end
$$;

-- API: Private
create function webhook._check_headers(
    p_headers jsonb -- {"name": "value", ...}
) returns jsonb
language plpgsql immutable
set search_path = pg_catalog
as $$
declare
    v_key text;
    v_value jsonb;
    v_out jsonb := '{}';
begin
    if p_headers is null then
        return '{}';
    end if;
    if jsonb_typeof(p_headers) <> 'object' then
        raise exception 'headers must be a JSON object of strings'
            using errcode = '22023', hint = 'For example {"authorization": "Bearer …"}.';
    end if;
    for v_key, v_value in select key, value from jsonb_each(p_headers) loop
        if v_key !~ '^[A-Za-z0-9!#$%&''*+.^_`|~-]+$' then
            raise exception 'invalid header name: %', quote_literal(v_key) using errcode = '22023';
        end if;
        if lower(v_key) in ('content-type', 'content-length', 'host', 'transfer-encoding', 'connection')
           or lower(v_key) like 'webhook-%' then
            raise exception 'header % is set by pg_webhook and cannot be overridden', quote_literal(v_key)
                using errcode = '22023';
        end if;
        if jsonb_typeof(v_value) <> 'string' or (v_value #>> '{}') ~ '[\r\n\x01-\x08\x0b\x0c\x0e-\x1f\x7f]' then
            raise exception 'header % must have a string value without control characters', quote_literal(v_key)
                using errcode = '22023';
        end if;
        v_out := v_out || jsonb_build_object(lower(v_key), v_value);
    end loop;
    return v_out;
end
$$;

-- API: Private
create function webhook._check_retry_policy(
    p_policy jsonb -- null, or {"max_attempts", "initial_delay", "max_delay", "backoff_multiplier"}
) returns jsonb
language plpgsql stable
set search_path = pg_catalog
as $$
declare
    v_key text;
    v_initial interval;
    v_max interval;
    c_hint constant text := 'For example {"max_attempts": 8, "initial_delay": "5 seconds", "max_delay": "1 hour", "backoff_multiplier": 2}.';
begin
    if p_policy is null or p_policy = 'null'::jsonb then
        return null;
    end if;
    if jsonb_typeof(p_policy) <> 'object' then
        raise exception 'retry_policy must be a JSON object' using errcode = '22023', hint = c_hint;
    end if;
    for v_key in select jsonb_object_keys(p_policy) loop
        if v_key not in ('max_attempts', 'initial_delay', 'max_delay', 'backoff_multiplier') then
            raise exception 'unknown retry_policy key: %', quote_literal(v_key) using errcode = '22023', hint = c_hint;
        end if;
    end loop;
    if p_policy ? 'max_attempts' and (
           jsonb_typeof(p_policy -> 'max_attempts') <> 'number'
           or (p_policy ->> 'max_attempts')::numeric <> trunc((p_policy ->> 'max_attempts')::numeric)
           or (p_policy ->> 'max_attempts')::numeric not between 1 and 100) then
        raise exception 'retry_policy.max_attempts must be an integer from 1 to 100' using errcode = '22023', hint = c_hint;
    end if;
    if p_policy ? 'backoff_multiplier' and (
           jsonb_typeof(p_policy -> 'backoff_multiplier') <> 'number'
           or (p_policy ->> 'backoff_multiplier')::numeric not between 1 and 100) then
        raise exception 'retry_policy.backoff_multiplier must be a number from 1 to 100' using errcode = '22023', hint = c_hint;
    end if;
    v_initial := webhook._policy_interval(p_policy, 'initial_delay', c_hint);
    v_max := webhook._policy_interval(p_policy, 'max_delay', c_hint);
    if v_initial is not null and v_max is not null and v_max < v_initial then
        raise exception 'retry_policy.max_delay (%) is shorter than initial_delay (%)', v_max, v_initial
            using errcode = '22023', hint = c_hint;
    end if;
    return p_policy;
end
$$;

-- API: Private
create function webhook._policy_interval(
    p_policy jsonb, -- the retry policy
    p_key text,     -- 'initial_delay' or 'max_delay'
    p_hint text     -- hint for the error
) returns interval
language plpgsql stable
set search_path = pg_catalog
as $$
declare
    v interval;
begin
    if not p_policy ? p_key then
        return null;
    end if;
    if jsonb_typeof(p_policy -> p_key) <> 'string' then
        raise exception 'retry_policy.% must be an interval string such as ''5 seconds''', p_key
            using errcode = '22023', hint = p_hint;
    end if;
    begin
        v := (p_policy ->> p_key)::interval;
    exception when others then
        raise exception 'retry_policy.% is not a valid interval: %', p_key, quote_literal(p_policy ->> p_key)
            using errcode = '22023', hint = p_hint;
    end;
    if v <= interval '0' or v > interval '7 days' then
        raise exception 'retry_policy.% must be between 1 microsecond and 7 days, not %', p_key, v
            using errcode = '22023', hint = p_hint;
    end if;
    return v;
end
$$;

-- API: Private
create function webhook._check_timeout(
    p_timeout interval -- per-request timeout
) returns interval
language plpgsql immutable
set search_path = pg_catalog
as $$
begin
    if p_timeout is null or p_timeout < interval '1 millisecond' or p_timeout > interval '5 minutes' then
        raise exception 'timeout must be between 1 millisecond and 5 minutes, not %', coalesce(p_timeout::text, 'NULL')
            using errcode = '22023';
    end if;
    return p_timeout;
end
$$;

-- API: Private
create function webhook._live_endpoint(
    p_endpoint_id bigint -- the endpoint to find
) returns webhook.endpoints
language plpgsql stable
set search_path = pg_catalog
as $$
declare
    v webhook.endpoints;
begin
    select * into v from webhook.endpoints where id = p_endpoint_id and deleted_at is null;
    if not found then
        raise exception 'endpoint % does not exist', coalesce(p_endpoint_id::text, 'NULL')
            using errcode = '42704', hint = 'List endpoints with: select id, name, url from webhook.endpoints where deleted_at is null;';
    end if;
    return v;
end
$$;

-- -----------------------------------------------------------------------------
-- matching and enqueueing (webhook._matches(patterns, event_type) is Rust)
-- -----------------------------------------------------------------------------

-- API: Private
-- The enqueue path of webhook_publish (which runs it as the extension owner).
create function webhook._enqueue(
    p_event_type text,      -- validated event type
    p_data jsonb,           -- the body's "data"
    p_idempotency_key text  -- null, or a key that makes a repeat a no-op
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook
as $$
declare
    v_event_id bigint;
    v_deliveries integer;
begin
    perform webhook._check_payload_size(octet_length(p_data::text));
    v_event_id := nextval(pg_get_serial_sequence('webhook.events', 'id'));
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
    insert into webhook.events (id, event_type, payload, idempotency_key)
    overriding system value
    values (v_event_id, p_event_type, p_data::json, p_idempotency_key);

    insert into webhook.deliveries (event_id, endpoint_id, status)
    select v_event_id, e.id, case when e.paused_at is null then 'pending' else 'paused' end::webhook.delivery_status
    from webhook.endpoints e
    where e.is_active and webhook._matches(e.event_types, p_event_type);
    get diagnostics v_deliveries = row_count;

    if v_deliveries > 0 then
        perform webhook._wake();
    end if;
    return v_event_id;
end
$$;

-- -----------------------------------------------------------------------------
-- subscription
-- -----------------------------------------------------------------------------

-- API: Private
-- The body of webhook_subscribe. Separate because a plpgsql function cannot
-- have an input and an output parameter both called "name".
create function webhook._subscribe(
    p_url text,
    p_event_types text[],
    p_name text,
    p_secret text,
    p_headers jsonb,
    p_retry_policy jsonb,
    p_timeout interval,
    out o_endpoint_id bigint,
    out o_name text,
    out o_signing_secret text
)
language plpgsql volatile
set search_path = pg_catalog, webhook
as $$
declare
    v_url text := webhook._check_url(p_url);
    v_patterns text[] := webhook._check_patterns(p_event_types);
    v_headers jsonb := webhook._check_headers(p_headers);
    v_policy jsonb := webhook._check_retry_policy(p_retry_policy);
    v_timeout interval := webhook._check_timeout(p_timeout);
    v_secret text := case when p_secret is null then webhook._generate_secret() else webhook._check_secret(p_secret) end;
begin
    if p_name is not null and (length(p_name) = 0 or length(p_name) > 200) then
        raise exception 'endpoint name must be 1 to 200 characters' using errcode = '22023';
    end if;
    o_endpoint_id := nextval(pg_get_serial_sequence('webhook.endpoints', 'id'));
    o_name := coalesce(p_name, 'endpoint-' || o_endpoint_id);
    begin
        insert into webhook.endpoints (id, name, url, event_types, header_names, retry_policy, timeout)
        values (o_endpoint_id, o_name, v_url, v_patterns,
                array(select jsonb_object_keys(v_headers) order by 1), v_policy, v_timeout);
    exception when unique_violation then
        raise exception 'an endpoint named % already exists', quote_literal(o_name)
            using errcode = '42710', hint = 'Pick another name, or unsubscribe the existing endpoint first.';
    end;
    insert into webhook.endpoint_secrets (endpoint_id, secret, headers)
    values (o_endpoint_id, v_secret, v_headers);
    o_signing_secret := v_secret;
end
$$;

-- -----------------------------------------------------------------------------
-- the worker's contract: claim, record, next due
-- -----------------------------------------------------------------------------

-- API: Private
-- Claims up to p_limit due deliveries and leases them until the endpoint's
-- timeout plus a margin; a worker that dies simply lets its leases lapse and
-- the deliveries become claimable again; no rescuer process is needed. The
-- lease token is this transaction's 64-bit id: unique without coordination
-- between workers. The caller commits before sending anything.
-- Why the lease is kept in columns of their own (and next_attempt_at is left
-- alone): no indexed column changes, so the claim is a HOT update and writes
-- no index entry. The due index still lists leased rows, so the scan skips
-- them; there are at most as many as deliveries in flight.
-- plpgsql and not SQL: PostgreSQL 15 re-plans a SQL function's statement at
-- every call, plpgsql keeps the plan.
create function webhook._claim_deliveries(
    p_worker_id text,        -- recorded in leased_by
    p_limit integer,         -- at most this many rows
    p_lease_margin interval  -- added to each endpoint's timeout
) returns table (
    delivery_id bigint,
    lease_token bigint,
    attempt_number integer,
    event_id bigint,
    event_type text,
    event_time text,
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
set search_path = pg_catalog, webhook
as $$
begin
    -- A claim's commit need not wait for its WAL flush. Were the server to
    -- crash before the flush, the lease would be lost and the delivery sent
    -- again: a duplicate, which at-least-once allows; never a loss, since a
    -- later (durable) commit of the attempt flushes the claim's WAL first.
    -- Measured: a drain's claims otherwise spend their time waiting on fsync
    -- while delivery slots sit idle.
    perform pg_catalog.set_config('synchronous_commit', 'off', true);
    return query
    with due as (
        select d.id
        from webhook.deliveries d
        where d.status = 'pending'
          and d.next_attempt_at <= now()
          and (d.lease_until is null or d.lease_until <= now())
        order by d.next_attempt_at
        limit p_limit
        for update skip locked
    ), claimed as (
        update webhook.deliveries d
        set lease_until = now() + ep.timeout + p_lease_margin,
            lease_token = pg_current_xact_id()::text::bigint,
            leased_by = p_worker_id
        from due, webhook.endpoints ep
        where d.id = due.id and ep.id = d.endpoint_id
        returning d.id, d.lease_token, d.attempt_count, d.event_id, d.endpoint_id,
                  ep.url, ep.timeout, ep.retry_policy
    )
    select c.id,
           c.lease_token,
           c.attempt_count + 1,
           ev.id,
           ev.event_type,
           to_char(ev.created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
           ev.payload::text,
           c.endpoint_id,
           c.url,
           s.headers::text,
           (extract(epoch from c.timeout) * 1000)::integer,
           case when s.previous_secret is not null and s.previous_expires_at > now()
                then array[s.secret, s.previous_secret]
                else array[s.secret] end,
           (c.retry_policy ->> 'max_attempts')::integer,
           (extract(epoch from (c.retry_policy ->> 'initial_delay')::interval) * 1000)::bigint,
           (extract(epoch from (c.retry_policy ->> 'max_delay')::interval) * 1000)::bigint,
           (c.retry_policy ->> 'backoff_multiplier')::double precision
    from claimed c
    join webhook.events ev on ev.id = c.event_id
    join webhook.endpoint_secrets s on s.endpoint_id = c.endpoint_id;
end
$$;

-- API: Private
-- Records a batch of finished attempts in one statement. Every attempt is
-- logged (it happened); the delivery moves only where the caller still holds
-- the lease and the delivery is still pending (River's "if still running"),
-- so a worker whose lease expired cannot overwrite the newer owner's outcome.
-- Returns how many deliveries moved.
create function webhook._record_attempts(
    p_worker_id text,
    p_delivery_ids bigint[],
    p_lease_tokens bigint[],
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
set search_path = pg_catalog, webhook
as $$
declare
    v_moved integer;
begin
    with r as (
        select *
        from unnest(p_delivery_ids, p_lease_tokens, p_attempt_numbers, p_started_at, p_duration_ms,
                    p_status_codes, p_response_excerpts, p_errors, p_outcomes, p_retry_delays_ms)
             as r(delivery_id, lease_token, attempt_number, started_at, duration_ms,
                  status_code, response_excerpt, error, outcome, retry_delay_ms)
    ), logged as (
        insert into webhook.attempts (delivery_id, attempt_number, started_at, duration_ms,
                                      status_code, response_excerpt, error, worker_id)
        select r.delivery_id, r.attempt_number, r.started_at, r.duration_ms,
               r.status_code, r.response_excerpt, r.error, p_worker_id
        from r
    ), moved as (
        update webhook.deliveries d
        set status = case r.outcome when 'retry' then 'pending' else r.outcome end::webhook.delivery_status,
            attempt_count = d.attempt_count + 1,
            next_attempt_at = case when r.outcome = 'retry'
                                   then now() + r.retry_delay_ms * interval '1 millisecond'
                                   else d.next_attempt_at end,
            lease_token = null,
            lease_until = null,
            leased_by = null,
            last_attempt_at = r.started_at,
            last_status_code = r.status_code,
            last_error = r.error,
            finalized_at = case when r.outcome = 'retry' then null else now() end
        from r
        where d.id = r.delivery_id and d.lease_token = r.lease_token and d.status = 'pending'
        returning d.id
    )
    select count(*)::integer into v_moved from moved;
    return v_moved;
end
$$;

-- API: Private
-- Milliseconds until the earliest pending delivery is claimable (0 if one is
-- now, null if none is pending), so that an idle worker sleeps exactly until
-- the next retry or lease expiry instead of polling blindly. Two index
-- probes: the first unleased due time after now, and the earliest lease end
-- among rows already due (only leased ones are left when a worker is idle).
create function webhook._next_due_ms()
returns bigint
language plpgsql stable
security definer
set search_path = pg_catalog, webhook
as $$
declare
    v_next timestamptz;
    v_lease timestamptz;
begin
    select min(d.next_attempt_at) into v_next
    from webhook.deliveries d
    where d.status = 'pending' and d.next_attempt_at > now();
    select min(coalesce(d.lease_until, d.next_attempt_at)) into v_lease
    from webhook.deliveries d
    where d.status = 'pending' and d.next_attempt_at <= now();
    if v_next is null and v_lease is null then
        return null;
    end if;
    -- least() skips nulls: either bound alone is enough.
    return greatest(0, ceil(extract(epoch from (least(v_next, v_lease) - clock_timestamp())) * 1000))::bigint;
end
$$;

-- -----------------------------------------------------------------------------
-- invariants (see webhook.deliveries: kept by the writers, checked by tests)
-- -----------------------------------------------------------------------------

-- API: Private
-- Deliveries that break an invariant of the state machine, with the name of
-- the invariant. Empty in a healthy database; the test suites assert it.
create function webhook._invariant_violations()
returns table (delivery_id bigint, invariant text)
language sql stable
set search_path = pg_catalog, webhook
as $$
    select d.id, v.invariant
    from webhook.deliveries d
    cross join lateral (values
        ('open iff not finalized', (d.status <= 'paused') = (d.finalized_at is null)),
        ('leases only while pending', d.status = 'pending' or d.lease_token is null),
        ('a lease is complete', (d.lease_token is null) = (d.lease_until is null)),
        ('attempt_count >= 0', d.attempt_count >= 0)
    ) as v(invariant, holds)
    where not v.holds
$$;
