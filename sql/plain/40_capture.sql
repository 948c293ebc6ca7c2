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
-- role granted to no one but the installing role, that may do one thing, call
-- webhook._store_captured, which is SECURITY DEFINER owned by the
-- installing role and builds, checks and stores the event. Attaching the
-- trigger takes EXECUTE on webhook._capture, which only webhook_admin has.
-- What this leaves open, and the library does not: a cast to json on a
-- watched column's type, or a function in a virtual generated column's
-- expression (PostgreSQL 18), runs as webhook_capture and could store
-- events of its choosing (never of pg_webhook's own webhook.* types) —
-- only whoever owns such a type or function and such a table could set
-- that up.
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
    v_qualified text := quote_ident(p_schema) || '.' || quote_ident(p_table);
    v_xid bigint := pg_current_xact_id()::text::bigint;
    v_columns text[] := p_columns;
    v_level integer := 0; -- 0: the rows; 1: their keys only; 2: neither
    v_data text;
    v_max integer;
    v_incarnation integer;
    v_slot smallint;
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
    -- The event's data; a row over max_payload_bytes (never under 1024, its
    -- least) is sent with its primary key only (when the watch sends all of
    -- it), then bare, "truncated": true, and the writer's transaction goes on.
    loop
        v_data := format('{"table":%s,"schema":%s,"op":"%s","new":%s,"old":%s%s}',
                         to_json(p_table), to_json(p_schema), p_op,
                         case when v_level = 2 then 'null'
                              when v_columns is null then coalesce(p_new, 'null')
                              else coalesce(webhook._project(p_new, v_columns), 'null') end,
                         case when v_level = 2 then 'null'
                              when v_columns is null then coalesce(p_old, 'null')
                              else coalesce(webhook._project(p_old, v_columns), 'null') end,
                         case when v_level > 0 then ',"truncated":true' else '' end);
        exit when octet_length(v_data) <= 1024 or v_level = 2;
        v_max := coalesce(v_max, (select st.value::integer from webhook.settings st where st.name = 'max_payload_bytes'),
                          webhook._setting_default('max_payload_bytes')::integer);
        exit when octet_length(v_data) <= v_max;
        if v_level = 0 then
            raise warning 'pg_webhook: the % event of % exceeds pg_webhook.max_payload_bytes (%); sent with its key columns only ("truncated": true)',
                p_op, v_qualified, v_max;
            v_columns := coalesce((select array_agg(a.attname::text order by k.i)
                                   from pg_index x
                                   cross join lateral unnest(x.indkey[0:x.indnkeyatts - 1]) with ordinality k(attnum, i)
                                   join pg_attribute a on a.attrelid = x.indrelid and a.attnum = k.attnum
                                   where x.indrelid = p_relid and x.indisprimary), '{}');
            if p_columns is not null and not v_columns <@ p_columns then
                v_columns := '{}';
            end if;
        end if;
        v_level := v_level + 1;
    end loop;
    -- What webhook._current_slot(), _vxid(), _id_namespace() and _wake()
    -- do, written out: this runs for every captured row, and each call of
    -- a function with a SET clause costs a settings save and restore.
    select case when current_setting('webhook.incarnation', true) = i.n::text then i.n end,
           coalesce((select (max(g.gen) % webhook._slots())::smallint from webhook.generations g), 0)
    into v_incarnation, v_slot
    from (select max(i.n) as n from webhook.incarnations i) i;
    if v_incarnation is null then
        v_incarnation := webhook._incarnation();
    end if;
    if v_xid >= 281474976710656 then -- 2^48
        raise exception 'pg_webhook: transaction ids have outgrown pg_webhook''s 48-bit space' using errcode = 'XX000';
    end if;
    insert into webhook.events (slot, txid, event_type, payload, payload_bytes, source_table, id_namespace)
    values (v_slot, (v_incarnation::bigint << 48) | v_xid,
            p_prefix || case p_op when 'INSERT' then '.created' when 'UPDATE' then '.updated' else '.deleted' end,
            v_data::json, octet_length(v_data), v_qualified,
            ('x' || encode(substr(uuid_send(gen_random_uuid()), 1, 8), 'hex'))::bit(64)::bigint);
    if current_setting('webhook.woke', true) is distinct from v_xid::text then
        perform webhook._wake();
    end if;
end
$$;

-- API: Private
-- A row's JSON object with only the listed keys, in its order, each
-- value's text as it was (json_each of json, not jsonb, keeps it); null
-- for no row. PL/pgSQL, for its plans (a SQL function called from PL/pgSQL
-- is planned again in every transaction), and without a SET clause (called
-- per row): every name in it is pg_catalog's.
create function webhook._project(p_row text, p_columns text[]) returns text
language plpgsql immutable parallel safe
as $$
begin
    if p_row is null then
        return null;
    end if;
    return '{' operator(pg_catalog.||)
           coalesce((select pg_catalog.string_agg(pg_catalog.to_json(e.key)::pg_catalog.text
                                                  operator(pg_catalog.||) ':'
                                                  operator(pg_catalog.||) e.value::pg_catalog.text,
                                                  ',' order by e.n)
                     from pg_catalog.json_each(p_row::pg_catalog.json) with ordinality e(key, value, n)
                     where e.key operator(pg_catalog.=) any (p_columns)), '')
           operator(pg_catalog.||) '}';
end
$$;

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
    v_new text;
    v_old text;
    v_remake text;
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
    -- PostgreSQL 18's virtual generated columns: a trigger sees them null,
    -- where a SELECT (and the library's capture, extension/src/generated.rs)
    -- shows their values. For a table that has any, the row is made again:
    -- its columns in order, each virtual one computed by its generation
    -- expression (deparsed under this function's pinned search_path, so
    -- every name outside pg_catalog comes qualified; cast to its column's
    -- type) on the row's own columns. A statement planned per row, for such
    -- tables only; the others pay one catalog probe per row, on 18 only.
    if current_setting('server_version_num')::integer >= 180000
       and exists (select from pg_attribute a
                   where a.attrelid = tg_relid and a.attgenerated = 'v' and not a.attisdropped) then
        select format('select row_to_json(r)::text from (select %s from (select ($1).*) s) r',
                      string_agg(case when a.attgenerated = 'v'
                                      then format('(%s)::%s as %I', pg_get_expr(d.adbin, d.adrelid),
                                                  format_type(a.atttypid, a.atttypmod), a.attname)
                                      else format('s.%I', a.attname) end,
                                 ', ' order by a.attnum))
        into v_remake
        from pg_attribute a
        left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attrelid = tg_relid and a.attnum > 0 and not a.attisdropped;
        if tg_op <> 'DELETE' then
            execute v_remake into v_new using new;
        end if;
        if tg_op <> 'INSERT' then
            execute v_remake into v_old using old;
        end if;
    else
        v_new := case when tg_op <> 'DELETE' then row_to_json(new)::text end;
        v_old := case when tg_op <> 'INSERT' then row_to_json(old)::text end;
    end if;
    perform webhook._store_captured(tg_relid, v_schema, v_table, tg_argv[v_first], tg_op, v_new, v_old, v_columns);
    return null;
end
$$;
comment on function webhook._capture() is
    'Row-change capture trigger installed by webhook_watch; arguments: the event prefix, then the columns to send (all when none), then ''@key'' and the key columns for ordered endpoints when the watch names them (read by the fan-out, not here); on a Citus distributed table, ''@table'', its schema and its name first.';
