-- =============================================================================
-- pg_webhook: the fan-out — one delivery per (event, endpoint subscribed to
-- it), created in batches by the worker, off the writer's path (private).
--
-- Batches are PgQ's: the fan-out takes a snapshot (cur) and handles every
-- event of the transactions that committed between the previous snapshot
-- (prev) and this one, that is, visible in cur and not in prev. A
-- transaction that was still running at prev is in prev's xip list and is
-- picked up once it commits, however late: nothing is skipped. A batch is
-- worked through in chunks of whole transactions, so the events of one
-- transaction are never half fanned out; webhook.fanout_state records how
-- far it got, in the same transaction as the deliveries it created, and is
-- locked while a worker fans out, so no event is ever fanned out twice.
-- =============================================================================

-- API: Private
-- Waits for a fan-out in progress to commit, and keeps new ones out until
-- this transaction ends. Endpoint state changes that move an endpoint's
-- open deliveries (pause, resume, disable, unsubscribe) take it first, so a
-- concurrent fan-out cannot add deliveries in the state the change is
-- leaving behind.
create function webhook._hold_fanout()
returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform from webhook.fanout_state for update;
end
$$;

-- API: Private
-- True when the fan-out has something to do: a chunk it started and has
-- not finished (cur_xmax set), or an event of a transaction that was
-- running or not yet begun at its last snapshot (prev). Both the fan-out
-- (to return before taking a snapshot) and the worker's next-due time (to
-- claim at once) ask it; an event a statement cannot see yet is found by a
-- later call. PL/pgSQL rather than SQL: it keeps the plans of its two
-- probes for the session, where a SQL function holding subqueries would
-- be planned again at every call.
create function webhook._fanout_pending(
    st webhook.fanout_state -- the fan-out's position
) returns boolean
language plpgsql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    return st.cur_xmax is not null
        or exists (select from webhook.events e where e.txid >= st.prev_xmax)
        or exists (select from webhook.events e where e.txid = any (st.prev_xip));
end
$$;

-- API: Private
-- One chunk of webhook._fan_out: the deliveries of the events of the
-- transactions in p_xip and of those from p_lo to p_hi (not running at
-- st's snapshot), for every endpoint subscribed to each when it committed
-- and passing its period's filter. Returns the chunk's events, the
-- deliveries made, and the endpoints whose filter raised an error (with
-- p_safe; without, the error is raised) and on how many. Called by
-- webhook._fan_out alone, whose settings (a generic plan, no sequential
-- scan) it runs under.
create function webhook._fan_out_chunk(
    st webhook.fanout_state, -- the fan-out's position and snapshot (cur)
    p_xip bigint[],          -- transactions running at prev, committed since
    p_lo bigint,             -- and those from p_lo ...
    p_hi bigint,             -- ... to p_hi
    p_filtered boolean,      -- whether a filter may apply (the events' data is read then)
    p_ordered boolean,       -- whether an endpoint is ordered (row events' data is read then for their keys)
    p_safe boolean,          -- catch each filter's error (and count it), rather than raise it
    out o_events bigint,
    out o_created bigint,
    out o_refused bigint[],
    out o_refusals bigint
)
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_endpoints bigint[];
    v_keys text[];
begin
    with chunk as (
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace, e.endpoint_id, e.ordering_key, e.source_table,
               case when p_filtered or (p_ordered and e.source_table is not null) then e.payload::jsonb end as data
        from webhook.events e
        where e.txid = any (p_xip)
        union all
        select e.id, e.slot, e.txid, e.event_type, e.id_namespace, e.endpoint_id, e.ordering_key, e.source_table,
               case when p_filtered or (p_ordered and e.source_table is not null) then e.payload::jsonb end as data
        from webhook.events e
        where e.txid >= p_lo and e.txid <= p_hi and not e.txid = any (st.cur_xip)
    ), key_columns as materialized (
        -- Each watched table's key, looked up once per chunk.
        select t.source_table, webhook._key_columns(t.source_table) as columns
        from (select distinct c.source_table from chunk c where p_ordered and c.source_table is not null) t
    ), targets as (
        select c.id, c.slot, c.txid, ep.id as endpoint_id,
               webhook._event_namespace(c.txid, c.id_namespace, i.namespace) as event_namespace,
               (ep.paused_at is not null or ep.disabled_at is not null) as held,
               ep.deleted_at is not null as deleted,
               -- The period's filter: false leaves the event out, null is
               -- the filter's error on it.
               case when s.filter is null then true
                    else webhook._filter_match(s.id, c.data, c.event_type, p_safe)
               end as matched,
               -- An ordered endpoint's deliveries carry their event's key.
               case when ep.ordered then
                   coalesce(c.ordering_key,
                            case when c.source_table is not null
                                 then webhook._row_key(c.source_table,
                                                       (select k.columns from key_columns k
                                                        where k.source_table = c.source_table),
                                                       c.data) end)
               end as ordering_key
        from chunk c
        join webhook.subscriptions s
          on (s.until_xmax is null or s.until_xmax > st.prev_xmin)
         and (c.txid = s.from_txid or not webhook._visible(c.txid, s.from_xmin, s.from_xmax, s.from_xip))
         and (s.until_txid is null
              or (c.txid <> s.until_txid and webhook._visible(c.txid, s.until_xmin, s.until_xmax, s.until_xip)))
         and webhook._matches(s.event_types, c.event_type)
        join webhook.endpoints ep on ep.id = s.endpoint_id
        -- Only events written before 0.3.0 need their incarnation's namespace.
        left join webhook.incarnations i on c.id_namespace is null and i.n = webhook._incarnation_of(c.txid)
        -- webhook_send_test and a backfill to one endpoint create their
        -- delivery themselves, for that endpoint.
        where c.event_type <> 'webhook.test' and c.endpoint_id is null
          -- An operator event does not go to the endpoint it is about; only
          -- pg_webhook's own events have their data read for it.
          and (c.event_type not like 'webhook.%'
               or ep.id is distinct from (select (o.payload ->> 'endpoint_id')::bigint
                                          from webhook.events o
                                          where o.slot = c.slot and o.txid = c.txid and o.id = c.id))
    ), opened as (
        -- A keyed delivery waits; its key's head is chosen below.
        insert into webhook.deliveries_open (event_id, event_txid, event_slot, endpoint_id, status, event_namespace,
                                             ordering_key)
        select t.id, t.txid, t.slot, t.endpoint_id,
               case when t.ordering_key is not null then 'waiting'
                    when t.held then 'paused' else 'pending' end::webhook.delivery_status,
               t.event_namespace, t.ordering_key
        from targets t
        where t.matched and not (t.held and t.deleted)
        -- In the events' order: the claim takes an endpoint's deliveries by
        -- due time, and those made together are due together, so their
        -- order in the index (the order they were made) is the order they go
        -- out in.
        order by t.txid, t.id
        returning endpoint_id, ordering_key
    ), cancelled as (
        -- An endpoint removed while paused or disabled can never send what it held.
        insert into webhook.deliveries (slot, event_id, event_txid, event_slot, endpoint_id, status, finalized_at,
                                        event_namespace)
        select t.slot, t.id, t.txid, t.slot, t.endpoint_id, 'cancelled', now(), t.event_namespace
        from targets t
        where t.matched and t.held and t.deleted
        returning 1
    )
    select (select count(*) from chunk), (select count(*) from opened) + (select count(*) from cancelled),
           (select array_agg(distinct t.endpoint_id order by t.endpoint_id) from targets t where t.matched is null),
           (select count(*) from targets t where t.matched is null),
           (select array_agg(o.endpoint_id) from opened o where o.ordering_key is not null),
           (select array_agg(o.ordering_key) from opened o where o.ordering_key is not null)
    into o_events, o_created, o_refused, o_refusals, v_endpoints, v_keys;
    if v_keys is not null then
        perform webhook._settle_keys(v_endpoints, v_keys);
    end if;
end
$$;

-- API: Private
create function webhook._fan_out(
    p_max_events integer -- chunk size in events (whole transactions: a chunk may be larger)
) returns integer
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
-- One generic plan per session, as for the claim: planning the chunk's
-- statement across the partitions at every call cost more than running
-- it (a fan-out of one event: 1.3-2.5 ms with custom plans, 0.75 ms
-- generic; a 100,000-event transaction: the same 6.5 s either way), and
-- under load that planning sat in every claim, in front of the commit to
-- receipt latency. Sequential scans off, so that the generic plan reaches
-- the chunk's events by the (txid, id) index whatever the bounds.
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set jit = off
as $$
declare
    st webhook.fanout_state;
    v_snap bigint[];
    v_resumed boolean;
    v_xip bigint[];
    v_lo bigint;
    v_hi bigint;
    v_more boolean;
    v_events bigint;
    v_created bigint;
    v_refused bigint[];
    v_refusals bigint;
    v_filtered boolean;
    v_ordered boolean;
begin
    select * into st from webhook.fanout_state for update skip locked;
    if not found then
        if exists (select from webhook.fanout_state) then
            return 0; -- another worker is fanning out
        end if;
        -- First run: nothing is fanned out yet, every event is after "prev".
        insert into webhook.fanout_state (prev_xmin, prev_xmax, prev_xip) values (1, 1, '{}')
        on conflict do nothing;
        select * into st from webhook.fanout_state for update skip locked;
        if not found then
            return 0;
        end if;
    end if;
    v_resumed := st.cur_xmax is not null;
    -- Nothing committed since prev (the usual case while a backlog drains):
    -- return before taking a snapshot and planning the chunk's statement,
    -- which costs more than everything else here together. An event this
    -- statement cannot see yet is found by a later call.
    if not webhook._fanout_pending(st) then
        return 0;
    end if;
    -- Subscription filters (see 13_filters.sql) that may apply to this
    -- chunk: then every one has its function and dispatcher branch (a
    -- restore keeps the filters, not their functions), and the chunk's
    -- events their data.
    v_filtered := exists (select from webhook.subscriptions s
                          where s.filter is not null and (s.until_xmax is null or s.until_xmax > st.prev_xmin));
    if v_filtered then
        perform webhook._refresh_filter_match();
    end if;
    -- Ordered endpoints (15_ordering.sql): row events' keys are read from their data.
    v_ordered := exists (select from webhook.subscriptions s join webhook.endpoints e on e.id = s.endpoint_id
                         where e.ordered and (s.until_xmax is null or s.until_xmax > st.prev_xmin));
    if not v_resumed then
        v_snap := webhook._vsnapshot();
        st.cur_xmin := v_snap[1];
        st.cur_xmax := v_snap[2];
        st.cur_xip := v_snap[3:];
        st.done_txid := 0;
    end if;

    -- Transactions running at prev that have committed since (visible in cur).
    v_xip := array(select x from unnest(st.prev_xip) x
                   where x > st.done_txid and webhook._visible(x, st.cur_xmin, st.cur_xmax, st.cur_xip)
                   order by x);
    -- Then those that started after prev, in txid order: this chunk ends
    -- with the transaction of its p_max_events-th event.
    v_lo := greatest(st.prev_xmax, st.done_txid + 1);
    select e.txid into v_hi
    from webhook.events e
    where e.txid >= v_lo and e.txid < st.cur_xmax and not e.txid = any (st.cur_xip)
    order by e.txid, e.id
    offset greatest(p_max_events - 1, 0) limit 1;
    v_more := found;
    if not v_more then
        v_hi := st.cur_xmax - 1;
    end if;

    -- Filters run without catching their errors (a subtransaction per call
    -- costs several times a filter); a chunk where one raised an error is
    -- made again, each error then caught alone. Without filters, no
    -- subtransaction at all.
    if not v_filtered then
        select * into v_events, v_created, v_refused, v_refusals
        from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, false, v_ordered, false);
    else
        begin
            select * into v_events, v_created, v_refused, v_refusals
            from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, true, v_ordered, false);
        exception when others then
            -- A filter's error (any other error comes again, and is raised).
            select * into v_events, v_created, v_refused, v_refusals
            from webhook._fan_out_chunk(st, v_xip, v_lo, v_hi, true, v_ordered, true);
        end;
    end if;
    if v_refusals > 0 then
        -- The worker logs it; webhook_filter_preview() tells which events and why.
        raise warning 'the filters of endpoints % raised an error on % deliveries, which were not made',
            array_to_string(v_refused, ', '), v_refusals
            using hint = 'See which events and why with webhook_filter_preview(''<the filter>''), then fix the filter '
                         'with webhook_update(<endpoint>, filter => …) and resend them with webhook_replay().';
    end if;

    if v_more then
        update webhook.fanout_state
        set cur_xmin = st.cur_xmin, cur_xmax = st.cur_xmax, cur_xip = st.cur_xip, done_txid = v_hi, updated_at = now();
    elsif v_events > 0 or v_resumed then
        update webhook.fanout_state
        set prev_xmin = st.cur_xmin, prev_xmax = st.cur_xmax, prev_xip = st.cur_xip,
            cur_xmin = null, cur_xmax = null, cur_xip = null, done_txid = 0, updated_at = now();
    end if;
    -- Else nothing was committed since prev: keep prev (no write at all), so
    -- that an idle worker's fan-out is one read.
    return v_created;
end
$$;
comment on function webhook._fan_out(integer) is
    'Creates the deliveries of the next chunk of committed events (whole transactions, in commit-snapshot order); returns how many. Called by webhook._claim_deliveries.';
