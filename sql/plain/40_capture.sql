-- =============================================================================
-- pg_webhook, SQL flavor: the row-change capture trigger, webhook._capture
-- (the library's is extension/src/trigger.rs and payload.rs).
--
-- Same arguments, same checks and errors, same event: its type
-- <prefix>.created/updated/deleted, its data {"table", "schema", "op",
-- "new", "old"} with the rows as row_to_json makes them (projected to the
-- watch's columns, keeping each value's text), "truncated": true with the
-- key columns only for a row over max_payload_bytes, one event row, one
-- wake-up per transaction.
--
-- Split by privilege, as the library's: converting a row to JSON may call a
-- cast to json defined by whoever owns a column's type, which must never
-- run with the installing role's rights. The library converts as the
-- writer, then stores as the extension owner. PL/pgSQL cannot switch back
-- and forth, and a writer (any role) cannot call anything in the schema
-- webhook; so the trigger is SECURITY DEFINER owned by webhook_capture, a
-- role granted to no one that may do one thing, call
-- webhook._store_captured, which is SECURITY DEFINER owned by the
-- installing role and builds, checks and stores the event. Attaching the
-- trigger takes EXECUTE on webhook._capture, which only webhook_admin has.
-- What this leaves open, and the library does not: a cast to json on a
-- watched column's type runs as webhook_capture and could store events of
-- its choosing (never of pg_webhook's own webhook.* types) — only whoever
-- owns such a type and such a table could set that up.
-- =============================================================================

-- API: Private
-- Builds a row event's data and stores it (called by webhook._capture
-- only): p_new/p_old are row_to_json's text of the rows (null when
-- absent), p_columns the watch's columns (null: all).
create function webhook._store_captured(
    p_relid oid,         -- the table the trigger fired on (for its primary key)
    p_schema text,       -- the watched table's schema and name, as receivers see them
    p_table text,
    p_prefix text,       -- the event prefix
    p_op text,           -- INSERT, UPDATE or DELETE
    p_new text,
    p_old text,
    p_columns text[]
) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_max integer;
    v_data text;
    v_keys text[];
    v_qualified text := quote_ident(p_schema) || '.' || quote_ident(p_table);
    v_xid bigint := pg_current_xact_id()::text::bigint;
    v_incarnation integer;
begin
    if octet_length(p_prefix) > 240 or p_prefix !~ '^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$' then
        raise exception 'webhook._capture: invalid event prefix %; install the trigger with webhook_watch()',
            to_json(p_prefix) using errcode = '22023';
    end if;
    if p_prefix = 'webhook' or starts_with(p_prefix, 'webhook.') then
        raise exception 'webhook._capture: the event prefix "webhook" is reserved for pg_webhook''s own events; install the trigger with webhook_watch() and another prefix'
            using errcode = '22023';
    end if;
    if p_op not in ('INSERT', 'UPDATE', 'DELETE') then
        raise exception 'webhook._capture does not capture %', p_op using errcode = '39P01';
    end if;
    v_data := webhook._row_event(p_table, p_schema, p_op, p_new, p_old, p_columns);
    v_max := coalesce((select st.value::integer from webhook.settings st where st.name = 'max_payload_bytes'), 1048576);
    if octet_length(v_data) > v_max then
        -- Too large to send: the writer's transaction goes on, and the event
        -- carries the primary key (if the watch sends all of it) and says so.
        v_keys := coalesce((select array_agg(a.attname::text order by k.i)
                            from pg_index x
                            cross join lateral unnest(x.indkey[0:x.indnkeyatts - 1]) with ordinality k(attnum, i)
                            join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
                            where x.indrelid = p_relid and x.indisprimary), '{}');
        if p_columns is not null and not v_keys <@ p_columns then
            v_keys := '{}';
        end if;
        v_data := webhook._row_event(p_table, p_schema, p_op, p_new, p_old, v_keys);
        if octet_length(v_data) + 17 > v_max then
            v_data := webhook._row_event(p_table, p_schema, p_op, null, null, null);
        end if;
        v_data := left(v_data, -1) || ',"truncated":true}';
        raise warning 'pg_webhook: the % event of % exceeds pg_webhook.max_payload_bytes (%); sent with its key columns only ("truncated": true)',
            p_op, v_qualified, v_max;
    end if;
    -- What webhook._current_slot(), _vxid(), _id_namespace() and _wake()
    -- do, written out: this runs for every captured row, and each call of
    -- a function with a SET clause costs a settings save and restore.
    v_incarnation := (select max(i.n) from webhook.incarnations i);
    if v_incarnation is null or current_setting('webhook.incarnation', true) is distinct from v_incarnation::text then
        v_incarnation := webhook._incarnation();
    end if;
    if v_xid >= 281474976710656 then -- 2^48
        raise exception 'pg_webhook: transaction ids have outgrown pg_webhook''s 48-bit space' using errcode = 'XX000';
    end if;
    insert into webhook.events (slot, txid, event_type, payload, payload_bytes, source_table, id_namespace)
    values (coalesce((select (max(g.gen) % webhook._slots())::smallint from webhook.generations g), 0),
            (v_incarnation::bigint << 48) | v_xid,
            p_prefix || case p_op when 'INSERT' then '.created' when 'UPDATE' then '.updated' else '.deleted' end,
            v_data::json, octet_length(v_data), v_qualified,
            ('x' || encode(substr(uuid_send(gen_random_uuid()), 1, 8), 'hex'))::bit(64)::bigint);
    if current_setting('webhook.woke', true) is distinct from v_xid::text then
        perform webhook._wake();
    end if;
end
$$;

-- API: Private
-- A row's JSON object with only the listed keys (all when p_columns is
-- null), in its order, each value's text as it was.
create function webhook._project(p_row text, p_columns text[]) returns text
language sql immutable parallel safe
set search_path = pg_catalog, webhook, pg_temp
return case when p_row is null or p_columns is null then p_row
            else '{' || coalesce((select string_agg(to_json(e.key)::text || ':' || e.value::text, ',' order by e.n)
                                  from json_each(p_row::json) with ordinality e(key, value, n)
                                  where e.key = any (p_columns)), '') || '}' end;

-- API: Private
-- {"table":…,"schema":…,"op":…,"new":…,"old":…} around the rows' JSON
-- (null when absent), each projected to p_columns when given: the keys of
-- the row that are listed, in the row's order, each value's text kept.
create function webhook._row_event(p_table text, p_schema text, p_op text, p_new text, p_old text, p_columns text[])
returns text
language sql immutable parallel safe
set search_path = pg_catalog, webhook, pg_temp
return '{"table":' || to_json(p_table)::text || ',"schema":' || to_json(p_schema)::text || ',"op":"' || p_op
       || '","new":' || coalesce(webhook._project(p_new, p_columns), 'null')
       || ',"old":' || coalesce(webhook._project(p_old, p_columns), 'null') || '}';

-- API: Private
create function webhook._capture() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_first integer := 0;
    v_schema text;
    v_table text;
    v_columns text[];
    v_key_at integer;
    v_parent oid;
    v_root oid;
begin
    if current_setting('pg_webhook.capture_enabled', true) = 'off'
       and pg_has_role(session_user, 'webhook_admin', 'member') then
        return null;
    end if;
    if tg_level <> 'ROW' or tg_when <> 'AFTER' then
        raise exception 'webhook._capture must be an AFTER … FOR EACH ROW trigger; install it with webhook_watch()'
            using errcode = '39P01';
    end if;
    -- A watch on a Citus distributed table names the table receivers see.
    if tg_nargs >= 3 and tg_argv[0] = '@table' then
        v_schema := tg_argv[1];
        v_table := tg_argv[2];
        v_first := 3;
    end if;
    if tg_nargs <= v_first then
        raise exception 'webhook._capture needs the event prefix as its argument; install it with webhook_watch()'
            using errcode = '39P01';
    end if;
    -- The columns sent: after the prefix, up to '@key' (the key columns for
    -- ordered endpoints follow, the fan-out's business); none: all.
    if tg_nargs > v_first + 1 then
        v_columns := tg_argv[v_first + 1:tg_nargs - 1];
        v_key_at := array_position(v_columns, '@key');
        if v_key_at is not null then
            v_columns := v_columns[1:v_key_at - 1];
        end if;
        if cardinality(v_columns) = 0 then
            v_columns := null;
        end if;
    end if;
    if v_table is null then
        -- The watched table: this one, or for a partition the partitioned
        -- table the watch was made on (its trigger is a clone).
        select t.tgparentid into v_parent from pg_trigger t where t.tgrelid = tg_relid and t.tgname = tg_name;
        if v_parent is null or v_parent = 0 then
            v_schema := tg_table_schema;
            v_table := tg_table_name;
        else
            with recursive up(trigger, parent, relid) as (
                select t.oid, t.tgparentid, t.tgrelid from pg_trigger t where t.oid = v_parent
                union all
                select t.oid, t.tgparentid, t.tgrelid from up join pg_trigger t on t.oid = up.parent
            )
            select up.relid into v_root from up where up.parent = 0;
            select n.nspname, c.relname into v_schema, v_table
            from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.oid = v_root;
            if v_table is null then
                raise exception 'webhook._capture: the watched table no longer exists' using errcode = '42P01';
            end if;
        end if;
    end if;
    perform webhook._store_captured(
        tg_relid, v_schema, v_table, tg_argv[v_first], tg_op,
        case when tg_op <> 'DELETE' then row_to_json(new)::text end,
        case when tg_op <> 'INSERT' then row_to_json(old)::text end,
        v_columns);
    return null;
end
$$;
comment on function webhook._capture() is
    'Row-change capture trigger installed by webhook_watch; arguments: the event prefix, then the columns to send (all when none), then ''@key'' and the key columns for ordered endpoints when the watch names them (read by the fan-out, not here); on a Citus distributed table, ''@table'', its schema and its name first.';
