-- =============================================================================
-- pg_webhook: enqueueing events, and the transaction ids and snapshots that
-- order them (private).
--
-- The capture trigger (Rust, extension/src/trigger.rs) and webhook_publish
-- write one event row and nothing else; deliveries are created later, in
-- batches, by webhook._fan_out. What makes that possible is that each event
-- carries its transaction id and each subscription change the snapshot of
-- its commit (see webhook.subscriptions), so the fan-out can tell at any
-- later time which endpoints an event was committed for.
-- =============================================================================

-- API: Private
-- Registers the (cluster, database) this session runs in as a new
-- incarnation (see webhook.incarnations). Called by webhook._incarnation()
-- when it finds none; serialised by the lock so that concurrent first
-- writers agree on one number.
create function webhook._register_incarnation(
    p_system_identifier bigint, -- pg_control_system().system_identifier
    p_database_oid oid          -- the current database
) returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_n integer;
begin
    lock table webhook.incarnations in share row exclusive mode;
    select i.n into v_n from webhook.incarnations i
    where i.system_identifier = p_system_identifier and i.database_oid = p_database_oid;
    if found then
        return v_n;
    end if;
    select coalesce(max(i.n), 0) + 1 into v_n from webhook.incarnations i;
    insert into webhook.incarnations (n, system_identifier, database_oid, namespace)
    values (v_n, p_system_identifier, p_database_oid,
            left(md5(gen_random_uuid()::text || clock_timestamp()::text), 16));
    return v_n;
end
$$;

-- API: Private
-- True when transaction p_txid is visible in the snapshot (xmin, xmax, xip):
-- it had committed (or aborted: an aborted one left no rows) when the
-- snapshot was taken. The same rule as pg_visible_in_snapshot, on
-- pg_webhook's virtual ids; a SQL function so that it is inlined.
create function webhook._visible(
    p_txid bigint,
    p_xmin bigint,
    p_xmax bigint,
    p_xip bigint[]
) returns boolean
language sql immutable parallel safe
return p_txid operator(pg_catalog.<) p_xmin
    or (p_txid operator(pg_catalog.<) p_xmax and not p_txid operator(pg_catalog.=) any (p_xip));

-- API: Private
-- The enqueue path of webhook_publish and of pg_webhook's own events
-- (webhook.test, webhook.endpoint.disabled); runs as the extension owner.
create function webhook._enqueue(
    p_event_type text,      -- validated event type
    p_data jsonb,           -- the body's "data"
    p_idempotency_key text, -- null, or a key that makes a repeat a no-op
    p_ordering_key text     -- null, or the event's key (see 15_ordering.sql)
) returns bigint
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_event_id bigint;
    v_payload json := p_data::json;
    v_bytes integer := octet_length(v_payload::text);
begin
    perform webhook._check_payload_size(v_bytes);
    v_event_id := nextval('webhook.events_id_seq');
    if p_idempotency_key is not null then
        -- ON CONFLICT waits for a concurrent transaction holding the same key,
        -- so two racing publishers still end with one event: the second one
        -- finds the first one's row once it commits.
        insert into webhook.idempotency_keys (idempotency_key, event_id)
        values (p_idempotency_key, v_event_id)
        on conflict (idempotency_key) do nothing;
        if not found then
            select k.event_id into v_event_id from webhook.idempotency_keys k where k.idempotency_key = p_idempotency_key;
            return v_event_id;
        end if;
    end if;
    insert into webhook.events (id, slot, txid, event_type, payload, payload_bytes, idempotency_key, id_namespace,
                                ordering_key)
    values (v_event_id, webhook._current_slot(), webhook._vxid(), p_event_type, v_payload, v_bytes, p_idempotency_key,
            webhook._id_namespace(), p_ordering_key);
    insert into webhook.published_types (event_type) values (p_event_type) on conflict do nothing;
    perform webhook._wake();
    return v_event_id;
end
$$;

-- -----------------------------------------------------------------------------
-- subscription periods
-- -----------------------------------------------------------------------------

-- API: Private
-- Opens a subscription period for an endpoint, from this transaction's
-- commit, with its filter's function (or the filter's error).
create function webhook._open_subscription(
    p_endpoint_id bigint,   -- the endpoint
    p_event_types text[],   -- validated patterns
    p_filter text           -- a SQL condition on the event, or null
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint;
begin
    insert into webhook.subscriptions (endpoint_id, event_types, from_txid, filter)
    values (p_endpoint_id, p_event_types, webhook._vxid(), p_filter)
    returning id into v_id;
    if p_filter is not null then
        perform webhook._define_filter(v_id, p_filter);
        perform webhook._write_filter_match();
    end if;
end
$$;

-- API: Private
-- Closes an endpoint's open subscription period at this transaction's commit.
create function webhook._close_subscription(
    p_endpoint_id bigint -- the endpoint
) returns void
language sql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
    update webhook.subscriptions s
    set until_txid = webhook._vxid(), ended_at = now()
    where s.endpoint_id = p_endpoint_id and s.until_txid is null
$$;

-- API: Private
-- Fills in the snapshots of subscription periods opened or closed by this
-- transaction, as it commits: a deferred constraint trigger runs in the
-- commit, and webhook._vsnapshot() reads the latest snapshot whatever the
-- isolation level. An event committing at that very instant may fall on
-- either side; any other is placed exactly. Rows restored by pg_restore
-- already have their snapshots and are left alone. SECURITY DEFINER: it
-- runs at commit, outside the API function that made the change.
create function webhook._subscription_commit()
returns trigger
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_snap bigint[];
begin
    if new.from_xmin is not null and (new.until_txid is null or new.until_xmin is not null) then
        return null;
    end if;
    v_snap := webhook._vsnapshot();
    update webhook.subscriptions s
    set from_xmin = coalesce(s.from_xmin, v_snap[1]),
        from_xmax = coalesce(s.from_xmax, v_snap[2]),
        from_xip = coalesce(s.from_xip, v_snap[3:]),
        until_xmin = case when s.until_txid is null then null else coalesce(s.until_xmin, v_snap[1]) end,
        until_xmax = case when s.until_txid is null then null else coalesce(s.until_xmax, v_snap[2]) end,
        until_xip = case when s.until_txid is null then null else coalesce(s.until_xip, v_snap[3:]) end
    where s.id = new.id;
    return null;
end
$$;

create constraint trigger subscriptions_commit_snapshot
    after insert or update on webhook.subscriptions
    deferrable initially deferred
    for each row execute function webhook._subscription_commit();
-- Also under session_replication_role = replica: a period without its
-- snapshot could not be placed.
alter table webhook.subscriptions enable always trigger subscriptions_commit_snapshot;
