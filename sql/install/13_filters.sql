-- =============================================================================
-- pg_webhook: subscription filters — a SQL condition on the event, per
-- subscription period, applied by the fan-out (off the writer's path).
--
-- A filter is an admin's SQL, and the fan-out runs as the extension owner,
-- so a filter never runs as the extension owner. Each one is a function of
-- its own, webhook._filter_<subscription id>(data jsonb, event_type text),
-- SECURITY DEFINER and owned by webhook_filter: a role with no right at all
-- (NOLOGIN, granted nothing, member of nothing). A filter reads the event
-- it is handed and what PUBLIC may read, nothing else, whoever wrote it.
-- Its text, refused if it holds a ";", becomes the RETURN expression of
-- that function's CREATE FUNCTION: one statement, whose last clause it is,
-- so it can be nothing but that expression (parsed as the function is
-- made, then run once, as webhook_filter, on an empty event to check its
-- rights). A SQL-standard body: names are bound then, once, not through
-- any caller's search_path; and an event's data is only ever the
-- function's argument.
--
-- The fan-out calls them through one dispatcher, webhook._filter_match,
-- rewritten from subscription ids alone whenever a filter is defined.
-- The filter functions belong to the extension, and the subscriptions'
-- filter column is where filters live: pg_dump keeps that column, not the
-- functions, and the fan-out makes what is missing again (it finds the
-- dispatcher not knowing every filter) before it fans out.
-- =============================================================================

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
    if exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') then
        execute format('alter extension pg_webhook drop function webhook.%I(jsonb, text)', v_name);
    end if;
    execute format('drop function webhook.%I(jsonb, text)', v_name);
    perform webhook._citus_ddl_propagation(false, v_propagation);
end
$$;
comment on function webhook_filter_preview(text, text[], integer) is
    'A dry run of a filter: for each of the last logged events (of the given types), whether the filter matches it, or the error it raises on it (an event a filter raises an error on is not delivered). Changes nothing.';
