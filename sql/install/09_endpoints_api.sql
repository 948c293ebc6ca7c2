-- =============================================================================
-- pg_webhook: public API, endpoints — subscribe, unsubscribe, update,
-- pause, resume, rotate the secret (schema of the extension, webhook_ prefix).
--
-- The names and signatures are the product's contract (PRODUCT.md). Errors
-- carry specific SQLSTATEs: 22023 bad input, 42704 unknown endpoint, 42710
-- duplicate name, 42501 a private destination. Every function runs as the
-- extension owner (SECURITY DEFINER, search_path pinned) and is granted to
-- webhook_admin only: admins need no right on the tables themselves.
-- =============================================================================

-- API: Private
-- Makes an endpoint from checked settings: its row, its secrets' row and
-- its first subscription period. For webhook._subscribe, and for a Citus
-- node's copy of the coordinator's endpoint (webhook._apply_endpoint_state,
-- with the coordinator's id and secret).
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
create function webhook_unsubscribe(
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

-- API: Private
-- Takes an endpoint out of its paused and disabled states: its waiting
-- deliveries go out again, oldest first, and its run of failures starts
-- over (else it would be disabled again at its next failure).
create function webhook._enable_endpoint(
    p_endpoint_id bigint -- the endpoint
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    update webhook.endpoints e
    set paused_at = null, disabled_at = null, disabled_reason = null, is_active = true, updated_at = now()
    where e.id = p_endpoint_id and e.deleted_at is null and (e.paused_at is not null or e.disabled_at is not null);
    if not found then
        return false;
    end if;
    perform webhook._hold_fanout();
    update webhook.deliveries_open d set status = 'pending'
    where d.endpoint_id = p_endpoint_id and d.status = 'paused';
    update webhook.endpoint_activity a set consecutive_failures = 0, failing_since = null
    where a.endpoint_id = p_endpoint_id;
    perform webhook._wake();
    return true;
end
$$;

-- API: Public
create function webhook_pause(
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
comment on function webhook_pause(bigint) is
    'Stops sending to an endpoint without losing anything: its deliveries wait as paused (and keep their attempts) until webhook_resume. False if it was already paused.';

-- API: Public
create function webhook_resume(
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
comment on function webhook_resume(bigint) is
    'Sends to a paused or disabled endpoint again; what waited goes out oldest first. False if it was neither paused nor disabled.';

-- API: Public
create function webhook_rotate_secret(
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
comment on function webhook_rotate_secret(bigint, interval) is
    'Replaces an endpoint''s signing secret and returns the new one (shown only here). During the grace every request carries both signatures.';
