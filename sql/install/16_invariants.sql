-- =============================================================================
-- pg_webhook: invariants that span rows or tables (private).
--
-- What one row must satisfy is a CHECK constraint (03_log.sql). What
-- relates rows of several tables is listed here; the test suites assert
-- that the list is empty after every scenario.
-- =============================================================================

-- API: Private
-- Objects that break an invariant, with the name of the invariant. Empty in
-- a healthy database.
create function webhook._invariant_violations()
returns table (object_id bigint, invariant text)
language sql stable
set search_path = pg_catalog, webhook, pg_temp
as $$
    select d.id, 'a delivery has its event in its event''s slot'
    from webhook.deliveries d
    where not exists (select from webhook.events e
                      where e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id)
    union all
    select d.id, 'a delivery carries its event''s webhook-id namespace'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    left join webhook.incarnations i on i.n = webhook._incarnation_of(e.txid)
    where webhook._event_namespace(e.txid, e.id_namespace, i.namespace) is distinct from d.event_namespace
    union all
    select d.id, 'a paused or disabled endpoint has no pending delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'pending' and (e.paused_at is not null or e.disabled_at is not null)
    union all
    select d.id, 'a sending endpoint has no paused delivery'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.paused_at is null and e.disabled_at is null
    union all
    select d.id, 'a removed endpoint holds nothing'
    from webhook.deliveries_open d
    join webhook.endpoints e on e.id = d.endpoint_id
    where d.status = 'paused' and e.deleted_at is not null
    union all
    -- Ordered endpoints (15_ordering.sql). 'waiting' is the only open
    -- status after 'paused' (see webhook.delivery_status for why not by name).
    select d.id, 'a waiting delivery has a key'
    from webhook.deliveries_open d
    where d.status > 'paused' and d.ordering_key is null
    union all
    select d.id, 'a waiting delivery''s key has a head or is blocked'
    from webhook.deliveries_open d
    where d.status > 'paused'
      and not exists (select from webhook.deliveries_open h
                      where h.endpoint_id = d.endpoint_id and h.ordering_key = d.ordering_key and h.status <= 'paused')
      and not exists (select from webhook.key_blocks b
                      where b.endpoint_id = d.endpoint_id and b.ordering_key = d.ordering_key)
    union all
    select h.id, 'a head never sent comes before the rest of its key'
    from webhook.deliveries_open h
    where h.ordering_key is not null and h.status <= 'paused' and h.attempt_count = 0
      and exists (select from webhook.deliveries_open d
                  where d.endpoint_id = h.endpoint_id and d.ordering_key = h.ordering_key and d.status > 'paused'
                    and (d.event_id, d.id) < (h.event_id, h.id))
    union all
    select b.endpoint_id, 'a blocked key is an ordered endpoint''s, without a head'
    from webhook.key_blocks b
    join webhook.endpoints e on e.id = b.endpoint_id
    where not e.ordered
       or exists (select from webhook.deliveries_open h
                  where h.endpoint_id = b.endpoint_id and h.ordering_key = b.ordering_key and h.status <= 'paused')
    union all
    select s.id, 'a committed subscription period has its snapshots'
    from webhook.subscriptions s
    where s.from_xmin is null or (s.until_txid is not null and s.until_xmin is null)
    union all
    select e.id, 'a live endpoint has one open subscription period and a secret'
    from webhook.endpoints e
    where e.deleted_at is null
      and ((select count(*) from webhook.subscriptions s where s.endpoint_id = e.id and s.until_txid is null) <> 1
           or not exists (select from webhook.endpoint_secrets k where k.endpoint_id = e.id))
    union all
    select d.id, 'an event for one endpoint is delivered to it alone'
    from webhook.deliveries d
    join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
    where e.endpoint_id is not null and e.endpoint_id <> d.endpoint_id
    union all
    select b.id, 'a running backfill has its two functions, a finished one none'
    from webhook.backfills b
    cross join webhook._backfill_functions(b.id) f
    where (b.status = 'running') <> (to_regprocedure(format('webhook.%I(jsonb, integer)', f.entry)) is not null)
       or (b.status = 'running') <> (to_regprocedure(format('webhook.%I(jsonb, integer)', f.reader)) is not null)
    union all
    select c, 'a Citus node has each endpoint as the coordinator last published it'
    from webhook._cluster_stale() c
    union all
    select g.gen, 'only the current generation''s slot is written by new events'
    from webhook.generations g
    where g.purged_at is not null
      and exists (select from webhook.events e where e.slot = g.gen % webhook._slots())
      and not exists (select from webhook.generations n where n.gen > g.gen and n.gen % webhook._slots() = g.gen % webhook._slots())
$$;
