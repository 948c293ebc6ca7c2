-- =============================================================================
-- pg_webhook: public API (schema of the extension, webhook_ prefix)
--
-- The names and signatures here are the product's contract (PRODUCT.md).
-- Errors carry specific SQLSTATEs: 22023 invalid_parameter_value for bad
-- input, 42704 undefined_object for an unknown endpoint, 42501 for a private
-- destination, 54000 program_limit_exceeded for an oversized payload.
-- =============================================================================

-- API: Public
create function webhook_subscribe(
    url text,                           -- http(s) URL of the receiver
    event_types text[] default '{*}',   -- patterns: '*', 'order.*', 'order.created'
    name text default null,             -- unique label; 'endpoint-<id>' when null
    secret text default null,           -- whsec_…; generated when null
    headers jsonb default '{}',         -- extra request headers
    retry_policy jsonb default null,    -- null for the default (about 24 hours)
    timeout interval default '10 seconds' -- per request
) returns table (endpoint_id bigint, name text, signing_secret text)
language sql volatile
set search_path = pg_catalog, webhook
as $$
    select s.o_endpoint_id, s.o_name, s.o_signing_secret
    from webhook._subscribe($1, $2, $3, $4, $5, $6, $7) as s
$$;
comment on function webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval) is
    'Registers an endpoint and returns its id, name and signing secret (shown here and on rotation only).';

-- API: Public
create function webhook_unsubscribe(
    endpoint_id bigint -- the endpoint to remove
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook
as $$
declare
    v_deleted_at timestamptz;
begin
    select e.deleted_at into v_deleted_at from webhook.endpoints e where e.id = $1 for update;
    if not found then
        perform webhook._live_endpoint($1); -- raises 42704
    end if;
    if v_deleted_at is not null then
        return false;
    end if;
    update webhook.endpoints e
    set is_active = false, deleted_at = now(), updated_at = now()
    where e.id = $1;
    -- Undelivered work for a removed endpoint is cancelled, not lost silently:
    -- it stays visible with status 'cancelled'.
    update webhook.deliveries d
    set status = 'cancelled', finalized_at = now(), lease_token = null, lease_until = null, leased_by = null
    where d.endpoint_id = $1 and d.status = 'pending';
    update webhook.deliveries d
    set status = 'cancelled', finalized_at = now()
    where d.endpoint_id = $1 and d.status = 'paused';
    delete from webhook.endpoint_secrets s where s.endpoint_id = $1;
    return true;
end
$$;
comment on function webhook_unsubscribe(bigint) is
    'Removes an endpoint: no new deliveries, pending ones cancelled, history kept. False if it was already removed.';

-- API: Public
create function webhook_publish(
    event_type text,                 -- e.g. 'order.shipped'
    data jsonb,                      -- the body's "data"
    idempotency_key text default null -- a repeated key is a no-op returning the first id
) returns bigint
language plpgsql volatile
-- Producers need no privilege on the webhook tables, only EXECUTE on this.
security definer
set search_path = pg_catalog, webhook
as $$
begin
    if data is null then
        raise exception 'webhook_publish needs a data value'
            using errcode = '22004', hint = 'Pass ''null''::jsonb for an event without data.';
    end if;
    if idempotency_key is not null and (length(idempotency_key) = 0 or length(idempotency_key) > 255) then
        raise exception 'idempotency_key must be 1 to 255 characters' using errcode = '22023';
    end if;
    return webhook._enqueue(webhook._check_event_type(event_type), data, idempotency_key);
end
$$;
comment on function webhook_publish(text, jsonb, text) is
    'Enqueues a custom event in the caller''s transaction and returns its id; sent after commit, never after rollback.';

-- API: Public
create function webhook_watch(
    tbl regclass,                                    -- the table to capture
    operations text[] default '{insert,update,delete}', -- any of insert, update, delete
    event_prefix text default null                   -- event types <prefix>.created/.updated/.deleted; the table name when null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook
as $$
declare
    v_relkind "char";
    v_schema name;
    v_relname name;
    v_ops text[];
    v_events text;
    v_prefix text;
begin
    select c.relkind, n.nspname, c.relname into v_relkind, v_schema, v_relname
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where c.oid = tbl;
    if v_relkind not in ('r', 'p') then
        raise exception '% is not a table', tbl using errcode = '42809';
    end if;
    if v_schema = 'webhook' then
        raise exception 'the tables of pg_webhook itself cannot be watched' using errcode = '22023';
    end if;
    if v_schema in ('pg_catalog', 'information_schema') or v_schema like 'pg\_toast%' then
        raise exception 'system catalogs cannot be watched' using errcode = '22023';
    end if;
    select array_agg(distinct lower(op) order by lower(op)) into v_ops from unnest(operations) as op;
    if v_ops is null or not v_ops <@ array['delete', 'insert', 'update'] or array_position(v_ops, null) is not null then
        raise exception 'operations must be a non-empty subset of {insert,update,delete}, not %', coalesce(operations::text, 'NULL')
            using errcode = '22023';
    end if;
    v_prefix := coalesce(event_prefix, v_relname);
    if v_prefix !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' or length(v_prefix) > 240 then
        raise exception 'invalid event prefix: %', quote_literal(v_prefix)
            using errcode = '22023',
                  hint = 'Pass event_prefix => ''order'' (dot-separated words of letters, digits, "_" or "-").';
    end if;
    -- Keywords only (validated above), never user text, go into the DDL.
    v_events := array_to_string(array(
        select case op when 'insert' then 'insert' when 'update' then 'update' when 'delete' then 'delete' end
        from unnest(v_ops) as op), ' or ');
    if exists (select 1 from pg_trigger t where t.tgrelid = tbl and t.tgname = 'webhook_capture') then
        execute format('drop trigger %I on %s', 'webhook_capture', tbl);
    end if;
    execute format('create trigger %I after %s on %s for each row execute function webhook._capture(%L)',
                   'webhook_capture', v_events, tbl, v_prefix);
end
$$;
comment on function webhook_watch(regclass, text[], text) is
    'Installs the row-change trigger on a table: events <prefix>.created, .updated, .deleted with data {table, schema, op, new, old}. Calling it again replaces the previous settings.';

-- API: Public
create function webhook_unwatch(
    tbl regclass -- the table to stop capturing
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook
as $$
begin
    if not exists (select 1 from pg_trigger t where t.tgrelid = tbl and t.tgname = 'webhook_capture') then
        return false;
    end if;
    execute format('drop trigger %I on %s', 'webhook_capture', tbl);
    return true;
end
$$;
comment on function webhook_unwatch(regclass) is 'Removes the row-change trigger; false if the table was not watched.';
