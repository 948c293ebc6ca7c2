-- =============================================================================
-- pg_webhook: public API, events — publish, watch tables, send a test
-- event, replay, purge (schema of the extension, webhook_ prefix).
--
-- webhook_publish is granted to webhook_publisher, the rest to
-- webhook_admin; see 15_grants.sql. Event types starting with "webhook."
-- are pg_webhook's own (webhook.test, webhook.endpoint.disabled).
-- =============================================================================

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
-- What Citus made of a table: 'distributed' (sharded across the nodes),
-- 'reference' (a copy on every node), 'local' (a Citus local table), or
-- null for a plain table or without Citus. Citus's catalog exists only
-- with Citus, hence the dynamic statement.
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

-- API: Private
-- The schema and name of table p_tbl, or the error that says why its rows
-- cannot be events (webhook_watch, webhook_backfill): not a table,
-- pg_webhook's own, a system catalog.
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
-- Raises unless p_columns names at least one column of table p_tbl and
-- only columns it has: 22023 for an empty list or a null in it, 42703 for
-- an unknown column (webhook_watch's columns and key_columns).
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
-- SECURITY INVOKER on purpose: attaching a trigger is the table owner's
-- decision, so PostgreSQL's own checks apply (TRIGGER on the table) along
-- with EXECUTE on webhook._capture, which only webhook_admin has. The same
-- holds for "when": it is the caller's SQL, run as the caller, and becomes
-- the trigger's own WHEN condition, which PostgreSQL checks at queue time:
-- a row that does not match queues no trigger call and writes no event.
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

-- API: Public
create function webhook_unwatch(
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
comment on function webhook_unwatch(regclass) is 'Removes the row-change trigger; false if the table was not watched.';

-- -----------------------------------------------------------------------------
-- test events and replays: deliveries created directly, for one endpoint
-- -----------------------------------------------------------------------------

-- API: Private
-- A new open delivery of an existing event to an endpoint, in the state the
-- endpoint is in (pending, or paused while it is held); for an ordered
-- endpoint, in its key's place (15_ordering.sql): a replay goes before the
-- later events of its key that are still waiting.
create function webhook._deliver_again(
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

-- API: Public
create function webhook_send_test(
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

-- API: Private
-- The event p_event_id, or 42704.
create function webhook._logged_event(
    p_event_id bigint -- the event to find
) returns webhook.events
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v webhook.events;
begin
    if p_event_id is null then
        raise exception 'event_id must not be null' using errcode = '22004';
    end if;
    select * into v from webhook.events e where e.id = p_event_id;
    if not found then
        raise exception 'event % does not exist', coalesce(p_event_id::text, 'NULL')
            using errcode = '42704', hint = 'It may have been purged: events are kept for pg_webhook.retention.';
    end if;
    return v;
end
$$;

-- API: Public
create function webhook_replay(
    event_id bigint,                -- the logged event
    endpoint_id bigint default null -- one endpoint it went to; all of them when null
) returns integer
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_event webhook.events := webhook._logged_event($1);
    v_endpoint_id bigint := $2;
    v_count integer := 0;
    v_target record;
begin
    if v_endpoint_id is not null then
        perform webhook._live_endpoint(v_endpoint_id);
        -- The endpoint must have been subscribed to it when it was committed:
        -- it then has a delivery of it (or will, when the fan-out catches up).
        if not exists (select from webhook.deliveries d
                       where d.event_slot = v_event.slot and d.event_txid = v_event.txid and d.event_id = v_event.id
                         and d.endpoint_id = v_endpoint_id)
           and not exists (select from webhook.subscriptions s
                           where s.endpoint_id = v_endpoint_id
                             and (v_event.txid = s.from_txid or not webhook._visible(v_event.txid, s.from_xmin, s.from_xmax, s.from_xip))
                             and (s.until_txid is null or (v_event.txid <> s.until_txid
                                  and webhook._visible(v_event.txid, s.until_xmin, s.until_xmax, s.until_xip)))
                             and webhook._matches(s.event_types, v_event.event_type)) then
            raise exception 'endpoint % was not subscribed to event % when it was committed', v_endpoint_id, v_event.id
                using errcode = '22023', hint = 'Replay it to an endpoint it was delivered to (see webhook.delivery_log).';
        end if;
    end if;
    for v_target in
        select distinct on (d.endpoint_id) d.endpoint_id, d.id
        from webhook.deliveries d
        join webhook.endpoints e on e.id = d.endpoint_id and e.deleted_at is null
        where d.event_slot = v_event.slot and d.event_txid = v_event.txid and d.event_id = v_event.id
          and (v_endpoint_id is null or d.endpoint_id = v_endpoint_id)
        order by d.endpoint_id, d.id desc
    loop
        perform webhook._deliver_again(v_event, v_target.endpoint_id, v_target.id);
        v_count := v_count + 1;
    end loop;
    if v_count = 0 and v_endpoint_id is not null then
        perform webhook._deliver_again(v_event, v_endpoint_id, null);
        v_count := 1;
    end if;
    return v_count;
end
$$;
comment on function webhook_replay(bigint, bigint) is
    'Delivers a logged event again, with the same webhook-id, to one endpoint it was for or to every live endpoint it went to; returns the number of new deliveries. The original deliveries and their attempts are left as they are.';

-- API: Public
create function webhook_replay_failed(
    endpoint_id bigint, -- the endpoint
    since timestamptz   -- deliveries that gave up at or after this time
) returns integer
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_endpoint_id bigint := $1;
    v_since timestamptz := $2;
    v_count integer := 0;
    v_failed record;
    v_event webhook.events;
begin
    perform webhook._live_endpoint(v_endpoint_id);
    if v_since is null then
        raise exception 'since must be a time' using errcode = '22004';
    end if;
    for v_failed in
        select d.id, d.event_slot, d.event_txid, d.event_id
        from webhook.deliveries d
        where d.endpoint_id = v_endpoint_id and d.status = 'failed' and d.finalized_at >= v_since
          -- not when a replay of it is already waiting
          and not exists (select from webhook.deliveries_open o
                          where o.endpoint_id = v_endpoint_id and o.event_id = d.event_id and o.event_txid = d.event_txid)
        order by d.finalized_at
    loop
        select * into v_event from webhook.events e
        where e.slot = v_failed.event_slot and e.txid = v_failed.event_txid and e.id = v_failed.event_id;
        perform webhook._deliver_again(v_event, v_endpoint_id, v_failed.id);
        v_count := v_count + 1;
    end loop;
    return v_count;
end
$$;
comment on function webhook_replay_failed(bigint, timestamptz) is
    'Delivers again every delivery to an endpoint that gave up (failed) since the given time; returns how many.';

-- API: Public
create function webhook_purge()
returns bigint
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    return webhook._purge(now());
end
$$;
comment on function webhook_purge() is
    'Removes now what is past pg_webhook.retention (whole log slots; what is still pending, and its event, is kept) and returns the number of events removed. The worker runs it on its maintenance schedule.';
