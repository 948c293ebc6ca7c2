-- =============================================================================
-- pg_webhook on a Citus cluster: the same endpoints on every node.
--
-- Every pg_webhook table stays local to its node: an event is captured on
-- the node that holds its row's shard, and fanned out, claimed, sent and
-- logged there by that node's worker, in that node's own transactions (the
-- fan-out's snapshots are the node's own). Only the endpoints must be the
-- same everywhere. webhook_cluster_enable(), run once on the coordinator,
-- makes webhook.cluster_endpoints a Citus reference table: from then on
-- each endpoint change made on the coordinator writes the endpoint's whole
-- state there, Citus writes that row on every node in the same two-phase
-- transaction, and a trigger on each node's copy applies the state to the
-- node's own tables with the same functions the API uses. A change that
-- fails on one node fails everywhere.
--
-- Without Citus, or before webhook_cluster_enable(), the table stays empty
-- and nothing here runs.
-- =============================================================================

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
