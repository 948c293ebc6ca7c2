-- =============================================================================
-- pg_webhook: ordered delivery per key (webhook_subscribe(…, ordered => true)).
--
-- An ordered endpoint's deliveries carry their event's key
-- (webhook.deliveries.ordering_key): a row event's table and primary key
-- (webhook._row_key), or the ordering_key given to webhook_publish. Of the
-- open deliveries of one (endpoint, key), one at most is pending or paused:
-- the key's head, which the claim takes as it takes any delivery; the
-- others are 'waiting', in event id order. When the head succeeds (or gives
-- up, with on_exhausted = 'skip'), the next one becomes the head; when it
-- gives up with on_exhausted = 'block', the key is blocked
-- (webhook.key_blocks) until webhook_unblock. A retried head stays the
-- head, so a failing event holds back its own key and nothing else.
--
-- Why event id order. The capture trigger runs after the row is written,
-- so with the row's lock held: two transactions that write one row take
-- their event ids in the order PostgreSQL serialized them, and the second
-- one's event is written after the first one committed. Transaction ids
-- do not have that order (a transaction may take its id, then wait for the
-- row). Two custom events with one ordering_key from transactions that
-- never took a common lock have no order but their ids'.
--
-- Why the fan-out's batches matter. The fan-out works through a snapshot
-- in chunks by transaction id, so the later of two serialized events may
-- be fanned out one chunk before the earlier one. Both are in the same
-- snapshot (the earlier transaction committed before the later one wrote
-- its event), so: while a batch is in progress the claim leaves alone the
-- ordered deliveries made in it, and a later chunk's earlier event takes
-- the place of a head that was never sent (webhook._settle_keys).
--
-- Who moves heads. Every change of a key's head happens under the
-- fan-out's lock (webhook._hold_fanout): the fan-out holds it, and the
-- recording of an ordered delivery's outcome, a replay and webhook_unblock
-- take it. So a head that finishes while the fan-out adds a delivery of
-- its key can never leave that delivery waiting behind no one.
-- =============================================================================

-- API: Public
create table webhook.key_blocks (
    endpoint_id  bigint not null references webhook.endpoints (id),
    ordering_key text not null,
    -- The delivery that gave up, and its event.
    delivery_id  bigint not null,
    event_id     bigint not null,
    blocked_at   timestamptz not null default now(),
    primary key (endpoint_id, ordering_key)
);
comment on table webhook.key_blocks is
    'The keys of ordered endpoints held back because a delivery gave up (on_exhausted = block): the rest of the key waits until webhook_unblock. See webhook.blocked_keys.';

-- API: Private
-- The columns that key the row events of a table given by its
-- schema-qualified name (webhook.events.source_table): its watch's
-- key_columns, else its primary key, in key order; '{}' without either or
-- once the table is gone.
create function webhook._key_columns(
    p_source_table text -- a row event's source table
) returns text[]
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select coalesce(webhook._watch_key_columns(to_regclass(p_source_table)),
                    (select array_agg(a.attname::text order by k.n)
                     from pg_index i
                     cross join lateral unnest(i.indkey) with ordinality as k(attnum, n)
                     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
                     where i.indrelid = to_regclass(p_source_table) and i.indisprimary),
                    '{}')
$$;

-- API: Private
-- A row event's key: its table and the values of its key columns, as
-- '<schema>.<table>:<JSON array>' (public.orders:[42]); from new, or from
-- old for a delete. A key column the watch does not send is null: every
-- row of the table then shares a key, which keeps the order (and gives up
-- the parallelism). A table without a primary key is one key.
create function webhook._row_key(
    p_source_table text,   -- the event's source table
    p_key_columns text[],  -- its key columns (webhook._key_columns)
    p_data jsonb           -- the event's data
) returns text
language sql immutable parallel safe
return p_source_table operator(pg_catalog.||) ':' operator(pg_catalog.||) coalesce((
    select pg_catalog.jsonb_agg(coalesce(r.v operator(pg_catalog.->) c.name, 'null'::jsonb) order by c.n)::text
    from (select case when pg_catalog.jsonb_typeof(p_data operator(pg_catalog.->) 'new'::text)
                           operator(pg_catalog.=) 'object'
                      then p_data operator(pg_catalog.->) 'new'::text
                      else p_data operator(pg_catalog.->) 'old'::text end) as r(v)
    cross join pg_catalog.unnest(p_key_columns) with ordinality as c(name, n)), '[]');

-- API: Private
-- The key of an event: the ordering_key it was published with, or a row
-- event's; null for an unkeyed custom event (sent as to an endpoint that
-- is not ordered).
create function webhook._event_key(
    p_event webhook.events -- the event
) returns text
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select coalesce(p_event.ordering_key,
                    case when p_event.source_table is not null
                         then webhook._row_key(p_event.source_table, webhook._key_columns(p_event.source_table),
                                               p_event.payload::jsonb) end)
$$;

-- API: Private
-- Gives each of the keys (p_endpoint_ids[i], p_keys[i]) its head: the
-- first waiting delivery becomes pending (paused while the endpoint is
-- held) when the key has none and is not blocked; and a head that was
-- never sent gives its place back to an earlier waiting event (the
-- fan-out found it in a later chunk; a replay). The caller holds the
-- fan-out's lock (see above).
create function webhook._settle_keys(
    p_endpoint_ids bigint[], -- the endpoints ...
    p_keys text[]            -- ... and keys touched
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_demote bigint[];
    v_promote bigint[];
begin
    select array_agg(h.head) filter (where h.head is not null), array_agg(w.first)
    into v_demote, v_promote
    from (select distinct x.e, x.k from unnest(p_endpoint_ids, p_keys) as x(e, k) where x.k is not null) k
    left join lateral (
        select d.id as head, d.event_id, d.attempt_count, d.lease_token
        from webhook.deliveries_open d
        where d.endpoint_id = k.e and d.ordering_key = k.k and d.status <= 'paused'
    ) h on true
    cross join lateral (
        select d.id as first, d.event_id
        from webhook.deliveries_open d
        where d.endpoint_id = k.e and d.ordering_key = k.k and d.status = 'waiting'
        order by d.event_id, d.id
        limit 1
    ) w
    where not exists (select from webhook.key_blocks b where b.endpoint_id = k.e and b.ordering_key = k.k)
      and (h.head is null
           or (h.attempt_count = 0 and h.lease_token is null and (w.event_id, w.first) < (h.event_id, h.head)));
    if v_promote is null then
        return;
    end if;
    -- Out first: a key has one head at a time (deliveries_open_head).
    update webhook.deliveries_open d set status = 'waiting' where d.id = any (v_demote);
    update webhook.deliveries_open d
    set status = case when ep.paused_at is null and ep.disabled_at is null then 'pending' else 'paused' end::webhook.delivery_status
    from webhook.endpoints ep
    where d.id = any (v_promote) and ep.id = d.endpoint_id;
end
$$;

-- API: Private
-- What the outcomes of an ordered endpoint's heads do to their keys
-- (webhook._record_attempts): one that gave up blocks its key when its
-- endpoint says so (on_exhausted = 'block'), and every other key goes on
-- with its next event.
create function webhook._heads_finished(
    p_delivery_ids bigint[], -- deliveries that left deliveries_open ...
    p_endpoint_ids bigint[], -- ... their endpoints ...
    p_keys text[],           -- ... keys ...
    p_event_ids bigint[],    -- ... events ...
    p_failed boolean[]       -- ... and whether they gave up
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform webhook._hold_fanout();
    insert into webhook.key_blocks (endpoint_id, ordering_key, delivery_id, event_id)
    select x.e, x.k, x.d, x.ev
    from unnest(p_delivery_ids, p_endpoint_ids, p_keys, p_event_ids, p_failed) as x(d, e, k, ev, failed)
    join webhook.endpoints ep on ep.id = x.e
    where x.failed and ep.on_exhausted = 'block' and ep.ordered
    on conflict do nothing;
    perform webhook._settle_keys(p_endpoint_ids, p_keys);
end
$$;

-- API: Private
-- Makes endpoint p_endpoint_id's open deliveries unordered (ordered was
-- turned off): every waiting delivery goes out as any other, and its
-- blocked keys are forgotten.
create function webhook._unorder_endpoint(
    p_endpoint_id bigint -- the endpoint
) returns void
language plpgsql volatile
set search_path = pg_catalog, webhook, pg_temp
as $$
begin
    perform webhook._hold_fanout();
    update webhook.deliveries_open d
    set ordering_key = null,
        status = case when d.status <> 'waiting' then d.status
                      when ep.paused_at is null and ep.disabled_at is null then 'pending'
                      else 'paused' end::webhook.delivery_status
    from webhook.endpoints ep
    where d.endpoint_id = p_endpoint_id and d.ordering_key is not null and ep.id = d.endpoint_id;
    delete from webhook.key_blocks b where b.endpoint_id = p_endpoint_id;
end
$$;

-- API: Public
-- Resumes blocked keys of an ordered endpoint: the event that gave up is
-- delivered again first (a replay of its delivery) and the rest of the
-- key follows; with skip => true, it is left as failed and the key goes
-- on with its next event.
create function webhook_unblock(
    endpoint_id bigint,          -- the ordered endpoint
    ordering_key text default null, -- one key (see webhook.blocked_keys); every blocked key of the endpoint when null
    skip boolean default false   -- true: leave the failed event, send the next one
) returns integer
language plpgsql volatile
security definer
set search_path = pg_catalog, webhook, pg_temp
as $$
declare
    v_id bigint := $1;
    v_key text := $2;
    v_skip boolean := $3;
    v_block webhook.key_blocks;
    v_event webhook.events;
    v_count integer := 0;
begin
    perform webhook._live_endpoint(v_id);
    if v_skip is null then
        raise exception 'skip must be true or false' using errcode = '22004';
    end if;
    perform webhook._hold_fanout();
    for v_block in
        delete from webhook.key_blocks b
        where b.endpoint_id = v_id and (v_key is null or b.ordering_key = v_key)
        returning *
    loop
        if not v_skip then
            select * into v_event from webhook.events e where e.id = v_block.event_id;
            if not found then
                raise exception 'the event that blocked key % (event %) was purged', quote_literal(v_block.ordering_key),
                    v_block.event_id
                    using errcode = '42704', hint = 'Pass skip => true to go on with the next event of the key.';
            end if;
            perform webhook._deliver_again(v_event, v_id, v_block.delivery_id);
        end if;
        perform webhook._settle_keys(array[v_id], array[v_block.ordering_key]);
        v_count := v_count + 1;
    end loop;
    if v_count > 0 then
        perform webhook._wake();
    end if;
    return v_count;
end
$$;
comment on function webhook_unblock(bigint, text, boolean) is
    'Resumes the blocked keys of an ordered endpoint (one key, or all when ordering_key is null): the event that gave up is sent again first, or with skip => true the next event goes. Returns the number of keys resumed.';

-- API: Public
-- The blocked keys, for people: what gave up, when, and how much waits
-- behind it. (status::text: see webhook.delivery_status.)
create view webhook.blocked_keys as
select b.endpoint_id,
       e.name as endpoint_name,
       b.ordering_key,
       b.delivery_id,
       b.event_id,
       b.blocked_at,
       d.last_status_code,
       d.last_error,
       (select count(*) from webhook.deliveries_open w
        where w.endpoint_id = b.endpoint_id and w.ordering_key = b.ordering_key
          and w.status::text = 'waiting') as waiting
from webhook.key_blocks b
join webhook.endpoints e on e.id = b.endpoint_id
left join webhook.deliveries d on d.id = b.delivery_id and d.endpoint_id = b.endpoint_id;
comment on view webhook.blocked_keys is
    'Keys of ordered endpoints held back by a delivery that gave up (on_exhausted = block), with its last error and how many deliveries wait behind it. webhook_unblock(endpoint_id, ordering_key) resumes one.';
