-- =============================================================================
-- pg_webhook: retention and maintenance — rotating the log's slots,
-- purging old ones whole, and the periodic chores (private).
--
-- See 03_log.sql for the slots. A generation lasts retention / 7; a slot is
-- purged once its generation ended more than the retention ago, so rows are
-- kept between the retention and 8/7 of it. Purging a slot copies forward
-- (into the current slot) every group that must stay — an event still
-- awaiting its fan-out, an event with an open delivery, an event with a
-- delivery that finished within the retention — with all its deliveries
-- and attempts, then TRUNCATEs the slot's three partitions: no dead rows,
-- no VACUUM debt, and producers never wait (they only write the current slot).
-- =============================================================================

-- API: Private
-- Starts a new generation when the current one is older than retention / 7
-- and the slot it will write into has been purged. Returns true if it did.
create function webhook._rotate(
    p_now timestamptz -- the time to act at (tests and benchmarks simulate time)
) returns boolean
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_gen bigint;
    v_started timestamptz;
begin
    select g.gen, g.started_at into v_gen, v_started
    from webhook.generations g order by g.gen desc limit 1 for update;
    if v_started > p_now - webhook._retention_s() * interval '1 second' / (webhook._slots() - 1) then
        return false;
    end if;
    if exists (select from webhook.generations g
               where g.gen = v_gen + 1 - webhook._slots() and g.purged_at is null) then
        return false; -- the slot is not free yet
    end if;
    insert into webhook.generations (gen, started_at) values (v_gen + 1, p_now);
    perform webhook._forget_slot();
    return true;
end
$$;

-- API: Private
-- Purges the slot of generation p_gen (see the file's header); returns the
-- number of events removed. Gives up with lock_not_available when the
-- slot's tables stay busy for half a second (a claim, an analyst's query):
-- the next run tries again. Producers are never waited for: they only
-- write the current slot.
create function webhook._purge_slot(
    p_gen bigint,        -- the generation whose slot to purge
    p_now timestamptz    -- the time to act at
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_slot integer := p_gen % webhook._slots();
    v_cur smallint := webhook._current_slot();
    v_cutoff timestamptz := p_now - webhook._retention_s() * interval '1 second';
    st webhook.fanout_state;
    v_total bigint;
    v_kept bigint;
    v_lock_timeout text := current_setting('lock_timeout');
begin
    if v_cur = v_slot then
        raise exception 'pg_webhook: refusing to purge the current slot %', v_slot using errcode = '55000';
    end if;
    -- Counted before locking: nobody adds events to a slot this old.
    select count(*) into v_total from webhook.events e where e.slot = v_slot;
    perform set_config('lock_timeout', '500ms', true);
    execute format('lock table webhook.%I, webhook.%I, webhook.%I in access exclusive mode',
                   'events_' || v_slot, 'deliveries_' || v_slot, 'attempts_' || v_slot);
    perform set_config('lock_timeout', v_lock_timeout, true);
    select * into st from webhook.fanout_state;

    create temporary table pg_webhook_keep (txid bigint, id bigint, primary key (txid, id)) on commit drop;
    insert into pg_webhook_keep
    select d.event_txid, d.event_id from webhook.deliveries_open d where d.event_slot = v_slot
    union
    select e.txid, e.id from webhook.events e
    where e.slot = v_slot
      and (st is null or (e.txid >= st.prev_xmin and not webhook._visible(e.txid, st.prev_xmin, st.prev_xmax, st.prev_xip)))
    union
    select d.event_txid, d.event_id from webhook.deliveries d
    where d.slot = v_slot and d.finalized_at > v_cutoff;

    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, source_table, idempotency_key,
                                created_at, id_namespace, endpoint_id, ordering_key)
    select e.id, v_cur, e.txid, e.event_type, e.payload, e.payload_bytes, e.source_table, e.idempotency_key,
           e.created_at, e.id_namespace, e.endpoint_id, e.ordering_key
    from webhook.events e join pg_webhook_keep k on k.txid = e.txid and k.id = e.id
    where e.slot = v_slot;
    get diagnostics v_kept = row_count;
    insert into webhook.attempts (id, slot, delivery_id, endpoint_id, attempt_number, started_at, duration_ms,
                                  status_code, response_excerpt, error, worker_id, lease_held)
    select a.id, v_cur, a.delivery_id, a.endpoint_id, a.attempt_number, a.started_at, a.duration_ms, a.status_code,
           a.response_excerpt, a.error, a.worker_id, a.lease_held
    from webhook.attempts a
    where a.slot = v_slot
      and a.delivery_id in (select d.id from webhook.deliveries d
                            join pg_webhook_keep k on k.txid = d.event_txid and k.id = d.event_id
                            where d.slot = v_slot or d.slot is null);
    insert into webhook.deliveries (id, slot, event_id, event_txid, event_slot, endpoint_id, status, attempt_count,
                                    next_attempt_at, last_attempt_at, last_status_code, last_error, replay_of,
                                    created_at, finalized_at, event_namespace, ordering_key)
    select d.id, v_cur, d.event_id, d.event_txid, v_cur, d.endpoint_id, d.status, d.attempt_count,
           d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error, d.replay_of,
           d.created_at, d.finalized_at, d.event_namespace, d.ordering_key
    from webhook.deliveries d join pg_webhook_keep k on k.txid = d.event_txid and k.id = d.event_id
    where d.slot = v_slot;
    update webhook.deliveries_open d set event_slot = v_cur where d.event_slot = v_slot;

    drop table pg_webhook_keep;
    execute format('truncate webhook.%I, webhook.%I, webhook.%I',
                   'events_' || v_slot, 'deliveries_' || v_slot, 'attempts_' || v_slot);
    update webhook.generations g set purged_at = p_now where g.gen = p_gen;
    return v_total - v_kept;
end
$$;

-- API: Private
-- Rotates if due, then purges every slot whose generation ended more than
-- the retention (plus a second: backends cache the current slot that long)
-- ago. Also forgets idempotency keys older than the retention. Returns the
-- number of events removed; slots still busy are left for the next run
-- (a warning says so).
create function webhook._purge(
    p_now timestamptz -- the time to act at
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_gen bigint;
    v_removed bigint := 0;
    v_cutoff timestamptz := p_now - webhook._retention_s() * interval '1 second';
begin
    perform webhook._rotate(p_now);
    -- A generation whose slot was since taken by a newer one has nothing left.
    update webhook.generations g set purged_at = p_now
    where g.purged_at is null
      and exists (select from webhook.generations n
                  where n.gen > g.gen and n.gen % webhook._slots() = g.gen % webhook._slots());
    for v_gen in
        select g.gen
        from webhook.generations g
        join webhook.generations n on n.gen = g.gen + 1
        where g.purged_at is null and n.started_at <= v_cutoff - interval '1 second'
        order by g.gen
    loop
        begin
            v_removed := v_removed + webhook._purge_slot(v_gen, p_now);
        exception when lock_not_available then
            raise warning 'pg_webhook: slot % is busy; it will be purged at the next run', v_gen % webhook._slots();
        end;
    end loop;
    delete from webhook.idempotency_keys k where k.created_at < v_cutoff;
    return v_removed;
end
$$;

-- API: Private
-- The periodic maintenance at a given time: retention, auto-disable of
-- endpoints failing for pg_webhook.disable_after, old counters, the
-- secrets of removed endpoints that have nothing left to send, and the
-- functions of filters the fan-out is done with (13_filters.sql). One caller
-- at a time: a second one returns null at once. Returns what it did, for
-- the worker's log. Granted to no one: a time in the future would purge
-- the log and disable endpoints early, so the worker gets
-- webhook._maintenance(), which acts now; tests and benchmarks simulate
-- time through this one, as the owner.
create function webhook._maintenance_at(
    p_now timestamptz -- the time to act at
) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_removed bigint;
    v_disabled integer := 0;
    v_id bigint;
    v_since timestamptz;
    v_secrets integer;
    v_stats integer;
    v_hours integer;
    v_filters integer;
begin
    -- Transaction-scoped: released at commit. The key is 'pg_webho' as
    -- eight ASCII bytes, unlikely to collide with an application's keys.
    if not pg_try_advisory_xact_lock(8099547421255821423) then
        return null;
    end if;
    v_removed := webhook._purge(p_now);
    for v_id, v_since in
        select a.endpoint_id, a.failing_since
        from webhook.endpoint_activity a
        join webhook.endpoints e on e.id = a.endpoint_id and e.disabled_at is null and e.deleted_at is null
        where a.failing_since <= p_now - webhook._disable_after_s() * interval '1 second'
    loop
        if webhook._disable_endpoint(v_id, 'no successful delivery since ' || v_since) then
            v_disabled := v_disabled + 1;
        end if;
    end loop;
    -- Counters: per minute for the last hour's figures (two hours kept),
    -- per hour as long as the log. Both tables are small (one row per
    -- endpoint and minute or hour), so a DELETE leaves little to vacuum.
    delete from webhook.endpoint_stats s where s.minute < p_now - interval '2 hours';
    get diagnostics v_stats = row_count;
    delete from webhook.endpoint_stats_hourly s
    where s.hour < p_now - webhook._retention_s() * interval '1 second' - interval '1 hour';
    get diagnostics v_hours = row_count;
    v_stats := v_stats + v_hours;
    -- A removed endpoint's secret goes once the fan-out has passed its
    -- removal (every event committed before it has its deliveries) and
    -- none of them is left to send.
    delete from webhook.endpoint_secrets s
    using webhook.endpoints e, webhook.subscriptions sub, webhook.fanout_state f
    where e.id = s.endpoint_id and e.deleted_at is not null
      and sub.endpoint_id = e.id and sub.until_txid is not null
      and not exists (select from webhook.subscriptions o where o.endpoint_id = e.id and o.until_txid is null)
      and webhook._visible(sub.until_txid, f.prev_xmin, f.prev_xmax, f.prev_xip)
      and f.cur_xmax is null
      and not exists (select from webhook.deliveries_open d where d.endpoint_id = e.id);
    get diagnostics v_secrets = row_count;
    v_filters := webhook._prune_filters();
    return jsonb_build_object('events_purged', v_removed, 'endpoints_disabled', v_disabled,
                              'stats_rows_dropped', v_stats, 'secrets_dropped', v_secrets,
                              'filters_dropped', v_filters);
end
$$;

-- API: Private
-- The worker's periodic maintenance (--maintenance-schedule), now.
create function webhook._maintenance()
returns jsonb
language sql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
    select webhook._maintenance_at(now())
$$;
