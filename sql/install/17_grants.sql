-- =============================================================================
-- pg_webhook: roles, privileges, and what pg_dump keeps.
--
-- Nothing is granted to PUBLIC. Four group roles a DBA grants to logins:
--   webhook_admin      manages endpoints and watches (and reads everything
--                      webhook_reader reads);
--   webhook_publisher  may call webhook_publish;
--   webhook_reader     reads the log and the views, never a secret or a
--                      header value;
--   webhook_worker     what pg-webhook-worker needs: claim, record, next
--                      due, maintenance, the views its status page shows.
-- And webhook_filter, granted to no one and given nothing: it owns the
-- subscription filters' functions, which run as it (see 13_filters.sql),
-- and the function through which the worker calls a backfill's reader
-- (see 14_backfill.sql).
-- Writers of a watched table need nothing: the capture trigger fires for
-- them because the table's owner attached it, and switches to the extension
-- owner for its insert only. Attaching it takes EXECUTE on webhook._capture,
-- which only webhook_admin has, so no one else can make a table of their
-- own emit events of their choosing. (Role names starting with "pg_" are
-- reserved by PostgreSQL, hence no "pg_webhook_" prefix.) Roles are
-- cluster-wide and outlive the extension, so they are created only when missing.
-- =============================================================================

-- API: Public
do $$
declare
    v_role text;
begin
    foreach v_role in array array['webhook_admin', 'webhook_publisher', 'webhook_reader', 'webhook_worker',
                                  'webhook_filter'] loop
        -- Two databases creating the extension at once race on these
        -- cluster-wide names; the loser's error only means the role exists.
        begin
            execute format('create role %I nologin', v_role);
        exception when duplicate_object or unique_violation then null;
        end;
    end loop;
end
$$;

-- Every function of the extension, wherever it lives, starts with no
-- grant: PostgreSQL grants EXECUTE to PUBLIC on new functions.
do $$
declare
    v_fn regprocedure;
begin
    for v_fn in
        select p.oid::regprocedure
        from pg_catalog.pg_depend d
        join pg_catalog.pg_proc p on p.oid = d.objid
        where d.classid = 'pg_catalog.pg_proc'::regclass
          and d.refclassid = 'pg_catalog.pg_extension'::regclass
          and d.refobjid = (select e.oid from pg_catalog.pg_extension e where e.extname = 'pg_webhook')
          and d.deptype = 'e'
    loop
        execute format('revoke all on function %s from public', v_fn);
    end loop;
end
$$;
revoke all on schema webhook from public;
revoke all on all tables in schema webhook from public;
revoke all on all sequences in schema webhook from public;
grant usage on schema webhook to webhook_admin, webhook_publisher, webhook_reader, webhook_worker;

-- Readers: the log and the views. Not endpoint_secrets, not the private
-- bookkeeping tables.
grant select on webhook.endpoints, webhook.subscriptions, webhook.events, webhook.deliveries, webhook.attempts,
    webhook.endpoint_activity, webhook.endpoint_stats, webhook.endpoint_stats_hourly, webhook.delivery_log,
    webhook.endpoint_health, webhook.event_types, webhook.backfills, webhook.key_blocks, webhook.blocked_keys
    to webhook_reader;
-- On a Citus coordinator, every node's log and health.
grant execute on function webhook.cluster_delivery_log(timestamptz), webhook.cluster_endpoint_health()
    to webhook_reader;
-- (And the functions the views call: a function runs with its caller's
-- EXECUTE right, in a view as anywhere, and is inlined only when it has it.)
grant execute on function webhook._hist_percentile(bigint[], double precision), webhook._latency_bound(integer),
    webhook._message_id(bigint, bigint, bigint), webhook.message_event_id(text), webhook._hist_sum(integer[]),
    webhook._webhook_id(bigint, bigint), webhook._namespace_hex(bigint),
    webhook._event_namespace(bigint, bigint, text), webhook._incarnation_of(bigint)
    to webhook_reader, webhook_worker;
grant webhook_reader to webhook_admin;
-- Admins manage endpoints: they may read the whole URLs (readers see them
-- without path and query, webhook.endpoints.url), never a secret.
grant select (endpoint_id, url) on webhook.endpoint_secrets to webhook_admin;

-- Admins: endpoints, watches, backfills, replays, purge. Everything runs as
-- the extension owner except webhook_watch/unwatch, which attach triggers
-- with the caller's own rights on the table (and EXECUTE on the trigger
-- function), and a backfill's reading of the table, which its reader does
-- with the rights of the role that asked.
grant execute on function
    webhook_subscribe(text, text[], text, text, jsonb, jsonb, interval, jsonb, integer, text, integer, integer, boolean,
                      text),
    webhook_unsubscribe(bigint),
    webhook_update(bigint, text, text[], text, jsonb, jsonb, interval, boolean, jsonb, integer, text, integer, integer,
                   boolean, text),
    webhook_unblock(bigint, text, boolean),
    webhook_filter_preview(text, text[], integer),
    webhook_pause(bigint),
    webhook_resume(bigint),
    webhook_rotate_secret(bigint, interval),
    webhook_send_test(bigint),
    webhook_replay(bigint, bigint),
    webhook_replay_failed(bigint, timestamptz),
    webhook_purge(),
    webhook_watch(regclass, text[], text, text[], text, text[]),
    webhook_unwatch(regclass),
    webhook_backfill(regclass, bigint, text),
    webhook_backfill_cancel(bigint),
    webhook_backfill_resume(bigint),
    webhook._citus_table_kind(regclass),
    webhook._check_capturable(regclass),
    webhook._check_columns(regclass, text[], text, text),
    webhook._capture()
    to webhook_admin;

-- Publishers.
grant execute on function webhook_publish(text, jsonb, text, text) to webhook_publisher, webhook_admin;

-- The signature scheme: harmless (it takes the secret as input), for anyone with a role.
grant execute on function webhook_sign(text, text, bigint, text), webhook_verify(text, text, bigint, text, text)
    to webhook_admin, webhook_publisher, webhook_reader, webhook_worker;

-- The worker's whole contract. Nothing in the worker touches a table directly.
grant execute on function
    webhook._claim_deliveries(text, integer, interval, integer, bigint[], integer[], integer, bigint),
    webhook._record_attempts(text, bigint[], bigint[], bigint[], integer[], timestamptz[], double precision[],
                             integer[], text[], text[], text[], bigint[]),
    webhook._next_due_ms(integer, bigint[], integer[]),
    webhook._cluster_behind(),
    webhook._notify_min_interval_ms(),
    webhook._maintenance(),
    webhook._queue_lag_seconds()
    to webhook_worker;
grant select on webhook.endpoint_health, webhook.delivery_log, webhook.endpoint_stats to webhook_worker;

-- -----------------------------------------------------------------------------
-- pg_dump: every table and sequence holding data is dumped with the
-- database (extension members are otherwise left out), so a restore keeps
-- every endpoint, secret, event and delivery, and ids continue.
-- -----------------------------------------------------------------------------

-- Only inside CREATE EXTENSION (or pg_tle's): a database given pg_webhook by
-- the SQL flavor's script has no extension, and pg_dump keeps all of it.
do $$
declare
    v_table text;
begin
    if not exists (select from pg_catalog.pg_extension e where e.extname = 'pg_webhook') then
        return;
    end if;
    perform pg_catalog.pg_extension_config_dump('webhook.endpoints', '');
    perform pg_catalog.pg_extension_config_dump('webhook.endpoints_id_seq', '');
    perform pg_catalog.pg_extension_config_dump('webhook.endpoint_secrets', '');
    perform pg_catalog.pg_extension_config_dump('webhook.subscriptions', '');
    perform pg_catalog.pg_extension_config_dump('webhook.subscriptions_id_seq', '');
    perform pg_catalog.pg_extension_config_dump('webhook.endpoint_activity', '');
    perform pg_catalog.pg_extension_config_dump('webhook.endpoint_stats', '');
    perform pg_catalog.pg_extension_config_dump('webhook.endpoint_stats_hourly', '');
    perform pg_catalog.pg_extension_config_dump('webhook.incarnations', '');
    -- Generation 0 is the install script's own row: a restore has its own.
    perform pg_catalog.pg_extension_config_dump('webhook.generations', 'where gen > 0');
    perform pg_catalog.pg_extension_config_dump('webhook.fanout_state', '');
    perform pg_catalog.pg_extension_config_dump('webhook.idempotency_keys', '');
    perform pg_catalog.pg_extension_config_dump('webhook.published_types', '');
    perform pg_catalog.pg_extension_config_dump('webhook.backfills', '');
    perform pg_catalog.pg_extension_config_dump('webhook.backfills_id_seq', '');
    perform pg_catalog.pg_extension_config_dump('webhook.key_blocks', '');
    perform pg_catalog.pg_extension_config_dump('webhook.events_id_seq', '');
    perform pg_catalog.pg_extension_config_dump('webhook.deliveries_id_seq', '');
    perform pg_catalog.pg_extension_config_dump('webhook.attempts_id_seq', '');
    -- The log's data lives in its partitions.
    for v_table in
        select 'webhook.deliveries_open'
        union all
        select format('webhook.%I', t || s) from generate_series(0, webhook._slots() - 1) s,
               unnest(array['events_', 'deliveries_', 'attempts_']) t
    loop
        perform pg_catalog.pg_extension_config_dump(v_table::regclass, '');
    end loop;
end
$$;
