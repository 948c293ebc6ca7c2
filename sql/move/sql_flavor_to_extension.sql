-- =============================================================================
-- pg_webhook: moves a database from the SQL flavor to the extension, in
-- place (leaving a managed service: the database dumped and restored on a
-- server of one's own, then this). Endpoints, secrets, subscriptions,
-- watches, the log, pending deliveries and ids are kept; the settings that
-- differ from the defaults become ALTER DATABASE … SET pg_webhook.x.
--
-- Run as a superuser, with the extension's files installed on the server
-- (its version equal to the SQL flavor's) and the workers stopped:
--   psql -v ON_ERROR_STOP=1 --single-transaction -f sql/move/sql_flavor_to_extension.sql
--
-- How: the SQL flavor's schema is set aside, the extension created, every
-- row copied into its tables (the same tables: both come from
-- sql/install/), the sequences set, the capture triggers pointed at the
-- extension's function, and the SQL flavor dropped. Filters' and
-- backfills' functions are made again by the fan-out and the backfill
-- steps, as after a restore. Rights granted by hand on pg_webhook's
-- objects (beyond what its roles get) are not carried over.
--
-- Every operator is pg_catalog's (operator(pg_catalog.=)): a superuser
-- runs this in a database where others may have made objects of their own.
-- =============================================================================

do $$
begin
    if pg_catalog.to_regprocedure('webhook._sql_flavor_version()') is null then
        raise exception 'this database has no SQL flavor of pg_webhook to move' using errcode = '55000';
    end if;
    if exists (select from pg_catalog.pg_extension e where e.extname operator(pg_catalog.=) 'pg_webhook') then
        raise exception 'pg_webhook is already an extension here' using errcode = '55000';
    end if;
    if webhook._sql_flavor_version() operator(pg_catalog.<>)
       (select v.default_version from pg_catalog.pg_available_extensions v where v.name operator(pg_catalog.=) 'pg_webhook') then
        raise exception 'the SQL flavor here is %, the extension installed on this server is %',
            webhook._sql_flavor_version(),
            coalesce((select v.default_version from pg_catalog.pg_available_extensions v
                      where v.name operator(pg_catalog.=) 'pg_webhook'), 'missing')
            using errcode = '55000',
                  hint = 'Install the extension of the same version (or upgrade the SQL flavor first).';
    end if;
end
$$;

alter schema webhook rename to webhook_sql_flavor;

-- Nothing of the user's may depend on what goes: a view or a function
-- over pg_webhook's tables would be dropped with them.
do $$
declare
    v_dependents text;
begin
    select pg_catalog.string_agg(distinct pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid), ', ')
    into v_dependents
    from pg_catalog.pg_depend d
    left join pg_catalog.pg_rewrite r on d.classid operator(pg_catalog.=) 'pg_catalog.pg_rewrite'::regclass and r.oid operator(pg_catalog.=) d.objid
    left join pg_catalog.pg_class rc on rc.oid operator(pg_catalog.=) r.ev_class
    left join pg_catalog.pg_proc p on d.classid operator(pg_catalog.=) 'pg_catalog.pg_proc'::regclass and p.oid operator(pg_catalog.=) d.objid
    where d.refobjid operator(pg_catalog.=) any (array(
              select c.oid from pg_catalog.pg_class c
              where c.relnamespace operator(pg_catalog.=) 'webhook_sql_flavor'::regnamespace
              union all
              select p2.oid from pg_catalog.pg_proc p2
              where p2.pronamespace operator(pg_catalog.=) 'webhook_sql_flavor'::regnamespace))
      and (rc.relnamespace is not null and rc.relnamespace operator(pg_catalog.<>) 'webhook_sql_flavor'::regnamespace
           or p.pronamespace is not null and p.pronamespace operator(pg_catalog.<>) 'webhook_sql_flavor'::regnamespace
              and not (p.pronamespace operator(pg_catalog.=) 'public'::regnamespace and p.proname operator(pg_catalog.~~) 'webhook\_%'));
    if v_dependents is not null then
        raise exception 'these depend on pg_webhook''s SQL flavor and would be dropped with it: %', v_dependents
            using errcode = '2BP01', hint = 'Drop them first, and make them again after the move.';
    end if;
end
$$;

-- The SQL flavor's public functions (the extension makes its own).
do $$
declare
    v_fn record;
begin
    for v_fn in
        select p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid) as args from pg_catalog.pg_proc p
        where p.pronamespace operator(pg_catalog.=) 'public'::regnamespace and p.proname operator(pg_catalog.~~) 'webhook\_%'
          and p.proowner operator(pg_catalog.=) (select n.nspowner from pg_catalog.pg_namespace n where n.nspname operator(pg_catalog.=) 'webhook_sql_flavor')
    loop
        execute pg_catalog.format('drop function public.%I(%s)', v_fn.proname, v_fn.args);
    end loop;
end
$$;

create extension pg_webhook schema public;

-- Every row, as pg_restore would: without triggers and foreign-key checks
-- (session_replication_role), into the tables emptied of the install's own.
set local session_replication_role = replica;
do $$
declare
    v_table name;
    v_columns text;
    v_values text;
    v_sequence record;
begin
    for v_table in
        select c.relname from pg_catalog.pg_class c
        where c.relnamespace operator(pg_catalog.=) 'webhook'::regnamespace and c.relkind operator(pg_catalog.=) any ('{r,p}'::"char"[]) and not c.relispartition
    loop
        execute pg_catalog.format('truncate webhook.%I cascade', v_table);
    end loop;
    for v_table in
        select c.relname from pg_catalog.pg_class c
        where c.relnamespace operator(pg_catalog.=) 'webhook_sql_flavor'::regnamespace and c.relkind operator(pg_catalog.=) any ('{r,p}'::"char"[]) and not c.relispartition
          and pg_catalog.to_regclass(pg_catalog.format('webhook.%I', c.relname)) is not null
    loop
        -- A column of one of pg_webhook's own types (an enum) goes through
        -- its text: the old schema's type is another type.
        select pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' order by a.attnum),
               pg_catalog.string_agg(case when a.atttypid operator(pg_catalog.=) o.atttypid
                                          then pg_catalog.quote_ident(a.attname)
                                          else pg_catalog.format('%I::text::%s', a.attname,
                                                                 pg_catalog.format_type(a.atttypid, a.atttypmod))
                                     end, ', ' order by a.attnum)
        into v_columns, v_values
        from pg_catalog.pg_attribute a
        join pg_catalog.pg_attribute o
          on o.attrelid operator(pg_catalog.=) pg_catalog.format('webhook_sql_flavor.%I', v_table)::regclass
         and o.attname operator(pg_catalog.=) a.attname and not o.attisdropped
        where a.attrelid operator(pg_catalog.=) pg_catalog.format('webhook.%I', v_table)::regclass
          and a.attnum operator(pg_catalog.>) 0
          and not a.attisdropped and a.attgenerated operator(pg_catalog.=) '';
        execute pg_catalog.format('insert into webhook.%I (%s) overriding system value select %s from webhook_sql_flavor.%I',
                                  v_table, v_columns, v_values, v_table);
    end loop;
    for v_sequence in
        select s.sequencename, s.last_value from pg_catalog.pg_sequences s
        where s.schemaname operator(pg_catalog.=) 'webhook_sql_flavor' and s.last_value is not null
          and pg_catalog.to_regclass(pg_catalog.format('webhook.%I', s.sequencename)) is not null
    loop
        perform pg_catalog.setval(pg_catalog.format('webhook.%I', v_sequence.sequencename)::regclass,
                                  v_sequence.last_value, true);
    end loop;
end
$$;
set local session_replication_role = origin;

-- The capture triggers: the same, on the extension's function (a clone on
-- a partition follows its parent's).
do $$
declare
    v_trigger record;
begin
    for v_trigger in
        select t.oid, t.tgname, t.tgrelid::regclass as tbl, t.tgenabled, pg_catalog.pg_get_triggerdef(t.oid) as def
        from pg_catalog.pg_trigger t
        where t.tgfoid operator(pg_catalog.=) 'webhook_sql_flavor._capture()'::regprocedure and t.tgparentid operator(pg_catalog.=) 0
    loop
        execute pg_catalog.format('drop trigger %I on %s', v_trigger.tgname, v_trigger.tbl);
        execute pg_catalog.replace(v_trigger.def, 'EXECUTE FUNCTION webhook_sql_flavor._capture(',
                                   'EXECUTE FUNCTION webhook._capture(');
        execute pg_catalog.format('alter table %s %s trigger %I', v_trigger.tbl,
                                  case when v_trigger.tgenabled operator(pg_catalog.=) 'D' then 'disable'
                                       when v_trigger.tgenabled operator(pg_catalog.=) 'A' then 'enable always'
                                       when v_trigger.tgenabled operator(pg_catalog.=) 'R' then 'enable replica'
                                       else 'enable' end,
                                  v_trigger.tgname);
    end loop;
end
$$;

-- The settings that differ from the defaults, as the extension's GUCs.
do $$
declare
    v_setting record;
begin
    for v_setting in
        select s.name, s.value from webhook_sql_flavor.settings s
        where s.value operator(pg_catalog.<>) webhook_sql_flavor._setting_default(s.name)
    loop
        execute pg_catalog.format('alter database %I set pg_webhook.%s = %L', pg_catalog.current_database(),
                                  v_setting.name, v_setting.value);
    end loop;
end
$$;

drop schema webhook_sql_flavor cascade;
