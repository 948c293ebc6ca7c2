-- =============================================================================
-- pg_webhook 0.1.0 → 0.2.0
--
-- 0.2.0 rebuilds the event log (events, deliveries and attempts partitioned
-- into log slots; deliveries created by the worker's fan-out instead of the
-- writer; subscriptions kept with the commit snapshots that bound them),
-- adds roles and the operations API, and marks every table for pg_dump.
-- So this script:
--   1. moves the 0.1.0 tables and type aside (renamed _v01_*) and drops the
--      0.1.0 functions and view, keeping webhook._capture (the triggers of
--      watched tables point at it);
--   2. runs the 0.2.0 install script, verbatim (generated from the install
--      sources by scripts/gen-upgrade.sh; do not edit that part by hand);
--   3. moves the data across and drops the 0.1.0 tables.
-- Objects of your own that depend on the 0.1.0 ones (a view on
-- webhook.delivery_log, say) make step 1 fail, with PostgreSQL naming them:
-- drop them first and recreate them after the update. Application sessions
-- that loaded the 0.1.0 library must reconnect after the update.
-- =============================================================================

-- 0.2.0: the 0.1.0 tables, their indexes, sequences and status type move
-- aside; their rows move into the new tables at the end.
drop view webhook.delivery_log;
alter table webhook.attempts rename to _v01_attempts;
alter table webhook.deliveries rename to _v01_deliveries;
alter table webhook.idempotency_keys rename to _v01_idempotency_keys;
alter table webhook.events rename to _v01_events;
alter table webhook.endpoint_secrets rename to _v01_endpoint_secrets;
alter table webhook.endpoints rename to _v01_endpoints;
alter type webhook.delivery_status rename to _v01_delivery_status;
alter index webhook.attempts_pkey rename to _v01_attempts_pkey;
alter index webhook.attempts_delivery rename to _v01_attempts_delivery;
alter index webhook.deliveries_pkey rename to _v01_deliveries_pkey;
alter index webhook.deliveries_due rename to _v01_deliveries_due;
alter index webhook.deliveries_paused_by_endpoint rename to _v01_deliveries_paused_by_endpoint;
alter index webhook.idempotency_keys_pkey rename to _v01_idempotency_keys_pkey;
alter index webhook.events_pkey rename to _v01_events_pkey;
alter index webhook.endpoint_secrets_pkey rename to _v01_endpoint_secrets_pkey;
alter index webhook.endpoints_pkey rename to _v01_endpoints_pkey;
alter index webhook.endpoints_live_name rename to _v01_endpoints_live_name;
alter sequence webhook.attempts_id_seq rename to _v01_attempts_id_seq;
alter sequence webhook.deliveries_id_seq rename to _v01_deliveries_id_seq;
alter sequence webhook.events_id_seq rename to _v01_events_id_seq;
alter sequence webhook.endpoints_id_seq rename to _v01_endpoints_id_seq;
alter table webhook._v01_endpoint_secrets
    rename constraint endpoint_secrets_endpoint_id_fkey to _v01_endpoint_secrets_endpoint_id_fkey;
-- 0.2.0: the schema is granted to four roles; 0.1.0 granted it to two.
-- Granted afresh, in 0.2.0's order, so that it reads as on a fresh install.
revoke all on schema webhook from webhook_worker, webhook_reader;

-- 0.2.0: every 0.1.0 function is replaced (most change signature); the
-- capture trigger function stays, and is redefined in place below.
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
          and p.oid <> 'webhook._capture()'::regprocedure
    loop
        execute format('drop function %s', v_fn);
    end loop;
end
$$;

