-- =============================================================================
-- pg_webhook: backfill — a table's existing rows sent as <prefix>.read
-- events (webhook_backfill), without a replication slot.
--
-- A backfill walks its table by primary key, one batch at a time, inside
-- the worker's claim (webhook._claim_deliveries calls
-- webhook._backfill_step): SQL keeps its state, the worker only drives it.
-- A batch writes its events (and, for a backfill to one endpoint, their
-- deliveries) and moves the backfill's cursor (last_key) in one
-- transaction: a worker that stops or dies leaves the cursor where the last
-- committed batch ended, and the next claim, by any worker, goes on from
-- there. The backfill itself never sends a row twice.
--
-- Rights: the rows are read by a function made for the backfill, owned by
-- the role that asked for it and SECURITY DEFINER, so that its grants,
-- column rights and row-level security decide what is read, never the
-- extension owner's. The step calls it through a second function, owned by
-- webhook_filter (the role with no rights, see 13_filters.sql): the
-- requester owns its reader and could make it SECURITY INVOKER, and it then
-- runs as webhook_filter and reads nothing, not as the extension owner. The
-- "where" condition is the requester's SQL, in the reader's body: it runs
-- as the requester, its names resolved through the reader's pinned
-- search_path (pg_catalog, webhook, pg_temp), never a caller's.
--
-- Backpressure: a batch (half of webhook._backfill_window(), so 1,000 rows)
-- is read only while the endpoint has room for it under the window (2,000
-- open deliveries); for a backfill to every subscribed endpoint, each of
-- them that is not paused or disabled, and only once the previous batch is
-- fanned out. A backfill never queues more than a window ahead of live
-- events: the endpoint's live deliveries wait behind at most that many,
-- other endpoints keep their fair share of the worker, and a failing or
-- rate-limited endpoint (or a paused one, for a backfill to it alone)
-- holds its backfill back instead of piling the table up in the queue.
-- =============================================================================

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
-- Citus '@table' prefix: the event prefix, then the columns sent, then,
-- after a '@key' mark, the key columns it was given; null when the table
-- is not watched.
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

-- API: Private
-- A watch's event prefix and the columns it sends (webhook._trigger_args
-- up to '@key'); null when the table is not watched.
create function webhook._watch_args(
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
-- The key columns a watch was given (webhook_watch(…, key_columns)), or
-- null: not watched, or keyed by its primary key.
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

-- API: Private
-- The number of open deliveries endpoint p_endpoint_id holds, counted up
-- to p_most (three index probes: pending, paused and waiting ones).
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
                                   limit p_most) q)
          -- And an ordered endpoint's waiting ones (the only open status
          -- after paused; see webhook.delivery_status for why not by name).
          + (select count(*) from (select from webhook.deliveries_open d
                                   where d.endpoint_id = p_endpoint_id and d.ordering_key is not null
                                     and d.status > 'paused'
                                   limit p_most) w))::integer
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

-- API: Public
-- Sends the rows of a table that exist now as <prefix>.read events. The
-- function makes the backfill's reader (webhook._make_backfill_reader),
-- which checks its SQL and the requester's rights, then returns; the
-- worker does the rest.
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
comment on function webhook_backfill(regclass, bigint, text) is
    'Sends the rows of a table as <prefix>.read events (data {table, schema, op: "read", new, old: null}), in primary key order and batches, to one endpoint or to every endpoint subscribed; read with the rights of the role that asks. Returns the backfill''s id: its progress is its row in webhook.backfills.';

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

-- API: Public
-- The counts read the log (events are kept for pg_webhook.retention): a
-- view to pick filters with, not to poll. Here rather than in
-- 11_views.sql: it lists the backfills' types too, so it comes after
-- their table.
create view webhook.event_types as
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
