-- =============================================================================
-- pg_webhook, SQL flavor: transaction ids, snapshots, the current log slot,
-- webhook-id namespaces, the wake-up and the histogram sums, as the
-- extension's library provides them (extension/src/vxid.rs, slots.rs,
-- namespace.rs, wake.rs, histogram.rs), on core PostgreSQL functions.
-- Same names and results; where they differ, it is said here and in the
-- README's table of differences.
-- =============================================================================

-- API: Private
-- This cluster's system identifier, from pg_control_system(), which
-- PostgreSQL lets everyone execute; where a service took that away from
-- the installing role, 42501 saying what to grant.
create function webhook._system_identifier() returns bigint
language plpgsql stable strict
set search_path = pg_catalog, pg_temp
as $$
begin
    return (select c.system_identifier from pg_control_system() c);
exception when insufficient_privilege then
    raise exception 'pg_webhook: % may not execute pg_control_system(), which the SQL flavor reads to tell a restored copy of the database from its original', current_user
        using errcode = '42501',
              hint = format('As a superuser: grant execute on function pg_catalog.pg_control_system() to %I', current_user);
end
$$;

-- Without it every captured row would fail: refuse the install instead.
do $$ begin perform webhook._system_identifier(); end $$;

-- API: Private
-- The incarnation of the cluster and database this session runs in (see
-- webhook._vxid and webhook.incarnations), registering it when new. The
-- cluster is told by pg_control_system().system_identifier, read about
-- once per session: the number found is kept in the session setting
-- webhook.incarnation and trusted only while it is still the newest
-- incarnation registered, so a session that sets it by hand can at most
-- make this function look again. (Settings are transactional: a number
-- registered by a transaction that rolls back is forgotten with it.)
create function webhook._incarnation() returns integer
language plpgsql volatile strict
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_newest integer := (select max(i.n) from webhook.incarnations i);
    v_system bigint;
    v_database oid := (select d.oid from pg_catalog.pg_database d where d.datname = current_database());
    v_n integer;
begin
    if current_setting('webhook.incarnation', true) = v_newest::text then
        return v_newest;
    end if;
    v_system := webhook._system_identifier();
    select i.n into v_n from webhook.incarnations i
    where i.system_identifier = v_system and i.database_oid = v_database;
    if not found then
        v_n := webhook._register_incarnation(v_system, v_database);
        v_newest := v_n;
    end if;
    if v_n = v_newest then
        perform set_config('webhook.incarnation', v_n::text, false);
    end if;
    return v_n;
end
$$;

-- API: Private
-- A 64-bit transaction id (xid8) in the virtual id space of this session's
-- incarnation: incarnation × 2^48 + id.
create function webhook._virtualize(p_xid xid8, p_incarnation integer) returns bigint
language plpgsql immutable strict parallel safe
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_xid bigint := p_xid::text::bigint;
begin
    if v_xid >= 281474976710656 then -- 2^48
        raise exception 'pg_webhook: transaction ids have outgrown pg_webhook''s 48-bit space' using errcode = 'XX000';
    end if;
    return (p_incarnation::bigint << 48) | v_xid;
end
$$;

-- API: Private
-- This transaction's id in pg_webhook's virtual id space (assigns one, as
-- pg_current_xact_id() does).
create function webhook._vxid() returns bigint
language sql volatile strict
set search_path = pg_catalog, webhook, pg_temp
return webhook._virtualize(pg_current_xact_id(), webhook._incarnation());

-- API: Private
-- The latest snapshot, {xmin, xmax, xip...}, in the virtual id space, with
-- this transaction (when it has an id) among the running ones, as another
-- session sees it. pg_current_snapshot() is the statement's snapshot: the
-- latest in READ COMMITTED, the transaction's first in REPEATABLE READ and
-- SERIALIZABLE, where "committed by now" cannot be read; so those refuse
-- (0A000) rather than place a subscription change at the wrong point. The
-- extension reads the latest snapshot at any isolation level.
create function webhook._vsnapshot() returns bigint[]
language plpgsql volatile strict
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_n integer;
    v_snapshot pg_snapshot;
    v_own xid8 := pg_current_xact_id_if_assigned();
begin
    if current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'pg_webhook (SQL flavor): this must run at isolation level read committed, not %',
            current_setting('transaction_isolation')
            using errcode = '0A000',
                  hint = 'Subscribe, update or unsubscribe endpoints in a READ COMMITTED transaction (the default).';
    end if;
    v_n := webhook._incarnation();
    v_snapshot := pg_current_snapshot();
    return array[webhook._virtualize(pg_snapshot_xmin(v_snapshot), v_n),
                 webhook._virtualize(pg_snapshot_xmax(v_snapshot), v_n)]
           || array(select webhook._virtualize(x, v_n)
                    from (select pg_snapshot_xip(v_snapshot) x
                          union all
                          select v_own where v_own operator(pg_catalog.<) pg_snapshot_xmax(v_snapshot)) r
                    order by 1);
end
$$;

-- API: Private
-- The log slot events are written into now (see webhook.generations). Read
-- every time, where the library keeps it a second: one index probe.
create function webhook._current_slot() returns smallint
language sql volatile strict
set search_path = pg_catalog, webhook, pg_temp
return coalesce((select (max(g.gen) % webhook._slots())::smallint from webhook.generations g), 0::smallint);

-- API: Private
-- Forgets the current slot after a rotation: nothing to forget here, as
-- webhook._current_slot() keeps nothing.
create function webhook._forget_slot() returns void
language sql volatile strict
begin atomic
    select;
end;

-- API: Private
-- A webhook-id namespace (see webhook.events.id_namespace): 64 bits, of
-- which 60 random (the first half of a random UUID), drawn per event where
-- the library draws one per session; both are only ever compared whole.
create function webhook._id_namespace() returns bigint
language sql volatile strict
set search_path = pg_catalog, webhook, pg_temp
return ('x' || encode(substr(uuid_send(gen_random_uuid()), 1, 8), 'hex'))::bit(64)::bigint;

-- API: Private
-- Asks for a wake-up of the workers at commit: a NOTIFY on
-- pg_webhook_wake, once per transaction (PostgreSQL delivers it only if the
-- transaction commits), and not when this session notified less than
-- notify_min_interval ago (webhook.settings; the workers are still looking
-- at the queue then). The library decides at commit; here it is decided at
-- the first event of the transaction, so a transaction longer than the
-- worker's linger whose notification was skipped waits for the worker's
-- poll. NOTIFY forbids PREPARE TRANSACTION: a session that prepares
-- transactions sets webhook.notify = off and relies on the poll.
create function webhook._wake() returns void
language plpgsql volatile strict
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_xact text := pg_current_xact_id()::text;
    v_last text;
begin
    if current_setting('webhook.woke', true) = v_xact or current_setting('webhook.notify', true) = 'off' then
        return;
    end if;
    perform set_config('webhook.woke', v_xact, false);
    v_last := current_setting('webhook.notified_at', true);
    if v_last is not null and v_last <> ''
       and clock_timestamp() < v_last::timestamptz
                               + coalesce((select st.value::integer from webhook.settings st
                                           where st.name = 'notify_min_interval'),
                                          webhook._setting_default('notify_min_interval')::integer)
                                 * interval '1 millisecond' then
        return;
    end if;
    perform pg_notify('pg_webhook_wake', '');
    perform set_config('webhook.notified_at', clock_timestamp()::text, false);
end
$$;

-- API: Private
-- Element-wise sum of two latency histograms (a missing element counts 0,
-- the longer one sets the length), capped at the integer maximum.
create function webhook._hist_add(a integer[], b integer[]) returns integer[]
language sql immutable parallel safe
set search_path = pg_catalog, webhook, pg_temp
return array(select least(coalesce(x, 0)::bigint + coalesce(y, 0), 2147483647)::integer
             from unnest(coalesce(a, '{}'), coalesce(b, '{}')) with ordinality u(x, y, i) order by i);

-- API: Private
-- The state function of webhook._hist_sum: element-wise, in bigint.
create function webhook._hist_acc(state bigint[], value integer[]) returns bigint[]
language sql immutable parallel safe
set search_path = pg_catalog, webhook, pg_temp
return array(select coalesce(x, 0) + coalesce(y, 0)
             from unnest(coalesce(state, '{}'), coalesce(value, '{}')) with ordinality u(x, y, i) order by i);
