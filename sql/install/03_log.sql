-- =============================================================================
-- pg_webhook: the event log — events, deliveries, attempts — and the state
-- of its fan-out and retention (schema webhook).
--
-- Why partitions by "slot": every finished delivery, its attempts and its
-- event are kept for pg_webhook.retention and then removed without bulk
-- DELETE (which would leave the tables full of dead rows). The log is cut
-- into 8 slots used in turn, one generation at a time (webhook.generations):
-- writers always write into the current slot, and a slot whose generation
-- ended more than the retention ago is emptied with TRUNCATE, after what
-- must stay (open deliveries, their events) has been copied forward; then
-- it is reused. PgQ rotates its event tables the same way. TRUNCATE of a
-- partition locks that partition only, so producers, who only ever write
-- into the current slot, never wait for a purge.
--
-- An event, its finished deliveries and their attempts always share a slot
-- (a "group"); a delivery still open lives in webhook.deliveries_open and
-- remembers its event's slot in event_slot.
-- =============================================================================

-- API: Private
-- Number of slots. Rows live between the retention and retention × 8/7.
-- (Like every small SQL function here, a SQL-standard body: parsed, every
-- name resolved, once when created, so that no caller's search_path is
-- ever consulted, and still inlined into the queries that call it.
-- OPERATOR(pg_catalog.x) has one precedence whatever x is, hence the
-- parentheses in such bodies.)
create function webhook._slots() returns integer
language sql immutable parallel safe
return 8;

-- API: Private
create table webhook.generations (
    gen        bigint primary key,
    started_at timestamptz not null,
    purged_at  timestamptz,
    constraint generations_nonnegative check (gen >= 0)
);
comment on table webhook.generations is
    'Generations of the log: the highest is current and writes into slot gen % 8; a generation ends when the next starts, and its slot is purged (purged_at) once it ended more than pg_webhook.retention ago.';
-- Generation 0 starts with the extension. It is not dumped (see the grants
-- file): a restore starts its own generation 0 and takes the others from the dump.
insert into webhook.generations (gen, started_at) values (0, now());

-- API: Private
-- One row per (cluster, database) this data has lived in. A dump restored
-- elsewhere, or into another database, continues under a new incarnation:
-- its transaction ids start over at the new cluster's counter, so every
-- transaction id pg_webhook stores is prefixed with its incarnation (see
-- webhook._vxid) and ids of a newer incarnation sort after all older ones.
-- The namespace makes webhook-id unique across incarnations.
create table webhook.incarnations (
    n                 integer primary key,
    system_identifier bigint not null,
    database_oid      oid not null,
    namespace         text not null,
    registered_at     timestamptz not null default now(),
    unique (system_identifier, database_oid),
    constraint incarnations_range check (n between 1 and 32767),
    constraint incarnations_namespace_hex check (namespace ~ '^[0-9a-f]{16}$')
);
comment on table webhook.incarnations is
    'The clusters and databases this data has lived in (a restore from a dump adds one). Registered on first use; see webhook._vxid.';

-- -----------------------------------------------------------------------------
-- webhook-ids
-- -----------------------------------------------------------------------------

-- API: Private
-- The incarnation a virtual transaction id belongs to (its top 16 bits:
-- see webhook.events.txid); 0 for an event of pg_webhook 0.1, whose ids
-- had none. The one place that knows where the incarnation sits.
create function webhook._incarnation_of(
    p_txid bigint -- a virtual transaction id
) returns integer
language sql immutable parallel safe
return (p_txid operator(pg_catalog.>>) 48)::integer;

-- API: Private
-- The webhook-id rule, in one place. An event's webhook-id namespace, as a
-- number: the one its writer's session drew (webhook.events.id_namespace);
-- for an event written before 0.3.0, its incarnation's
-- (p_incarnation_namespace, which the caller joins from
-- webhook.incarnations: a function holding the subquery could not be
-- inlined; 0 if that row is gone); null for an event of pg_webhook 0.1,
-- whose webhook-id is its number. Worked out once per delivery, when the
-- delivery is made, and kept in it (webhook.deliveries.event_namespace), so
-- that the log's message_id is a function of the delivery's own columns,
-- which an index can hold. SQL-standard bodies: inlined wherever they run
-- per row (the fan-out, the claim, webhook.delivery_log), and every name in
-- them is bound when the extension script runs, never through a caller's
-- search_path.
create function webhook._event_namespace(
    p_txid bigint,                  -- webhook.events.txid
    p_namespace bigint,             -- webhook.events.id_namespace
    p_incarnation_namespace text    -- webhook.incarnations.namespace of the event's incarnation
) returns bigint
language sql immutable parallel safe
return case when p_namespace is not null then p_namespace
            when webhook._incarnation_of(p_txid) operator(pg_catalog.>) 0
                 then coalesce(('x' operator(pg_catalog.||) p_incarnation_namespace)::bit(64)::bigint, 0)
       end;

-- API: Private
-- A namespace as it is written in a webhook-id: 16 hex digits.
create function webhook._namespace_hex(
    p_namespace bigint -- see webhook._event_namespace
) returns text
language sql immutable parallel safe
return pg_catalog.lpad(pg_catalog.to_hex(p_namespace), 16, '0');

-- API: Private
-- A webhook-id from an event id and its namespace (webhook._event_namespace):
-- 'msg_' + the namespace + the event id, 16 hex digits each; the event's
-- number for an event of pg_webhook 0.1 (no namespace). Immutable: the
-- finished deliveries' message_id index holds it.
create function webhook._webhook_id(
    p_id bigint,        -- webhook.events.id
    p_namespace bigint  -- its namespace (webhook.deliveries.event_namespace)
) returns text
language sql immutable parallel safe
return coalesce('msg_' operator(pg_catalog.||) webhook._namespace_hex(p_namespace)
                    operator(pg_catalog.||) pg_catalog.lpad(pg_catalog.to_hex(p_id), 16, '0'),
                p_id::text);

-- API: Private
-- The webhook-id of an event: 'msg_' + a namespace + its id, 16 hex digits
-- each; unique across databases, clusters, re-created extensions, restores
-- and physical copies that diverged, and the same on every retry and
-- replay. The namespace is the one its writer's session drew at random
-- (webhook.events.id_namespace). Events written before 0.3.0 have none and
-- keep the id they were first sent with: their incarnation's namespace
-- (0.2.0), or their number (pg_webhook 0.1, txid 0). The rule itself is
-- webhook._event_namespace's and webhook._webhook_id's; this looks the
-- incarnation up.
create function webhook._message_id(
    p_txid bigint,      -- webhook.events.txid
    p_id bigint,        -- webhook.events.id
    p_namespace bigint  -- webhook.events.id_namespace
) returns text
language sql stable parallel safe
return webhook._webhook_id(p_id, webhook._event_namespace(p_txid, p_namespace,
    (select i.namespace from webhook.incarnations i
     where i.n operator(pg_catalog.=) webhook._incarnation_of(p_txid))));

-- API: Public
-- The event id inside a webhook-id (what a receiver saw in the header), so
-- that everything about it is an index lookup:
--   select * from webhook.delivery_log
--   where event_id = webhook.message_event_id('msg_…') and message_id = 'msg_…';
-- (the second condition checks the namespace). Null for anything that is
-- not a webhook-id this extension makes.
create function webhook.message_event_id(
    p_message_id text -- a webhook-id: 'msg_' + 32 hex digits, or a 0.1.0 decimal id
) returns bigint
language sql immutable strict parallel safe
return case
    when p_message_id operator(pg_catalog.~) '^msg_[0-9a-f]{16}[0-7][0-9a-f]{15}$'
        then ('x' operator(pg_catalog.||) pg_catalog.substr(p_message_id, 21, 16))::bit(64)::bigint
    when p_message_id operator(pg_catalog.~) '^[0-9]{1,18}$' then p_message_id::bigint
end;
comment on function webhook.message_event_id(text) is
    'The event id inside a webhook-id (the header receivers see); null if it is not one. See webhook.delivery_log.';

-- -----------------------------------------------------------------------------
-- events
-- -----------------------------------------------------------------------------

-- API: Private
create sequence webhook.events_id_seq;

-- API: Public
create table webhook.events (
    id              bigint not null default nextval('webhook.events_id_seq'),
    slot            smallint not null,
    txid            bigint not null,
    event_type      text not null,
    payload         json not null,
    -- octet_length(payload), noted when written: the claim bounds a batch
    -- by bytes with it, without reading (detoasting) the payloads it leaves.
    payload_bytes   integer not null,
    source_table    text,
    idempotency_key text,
    created_at      timestamptz not null default now(),
    -- Last: 0.3.0 added them to 0.2.0's table (ALTER TABLE appends).
    id_namespace    bigint,
    endpoint_id     bigint,
    ordering_key    text
) partition by list (slot);
alter sequence webhook.events_id_seq owned by webhook.events.id;
-- The only B-tree: the fan-out reads events by transaction (PgQ's ev_txid
-- index), the claim finds one by (txid, id). One index per captured row is
-- what the writer pays. Lookups by id alone use the BRIN index: ids grow
-- with the table, so it is as selective as it is cheap to keep.
create index events_txid_id on webhook.events (txid, id);
create index events_id_brin on webhook.events using brin (id);

comment on table webhook.events is
    'One row per event, written in the producer''s transaction (and nothing else). The request body is {"type": event_type, "timestamp": created_at, "data": payload}; webhook-id is webhook._message_id(txid, id, id_namespace).';
comment on column webhook.events.slot is 'The log slot (partition) it lives in; see webhook.generations.';
comment on column webhook.events.txid is
    'The producing transaction, in pg_webhook''s virtual id space (incarnation × 2^48 + xid8). The fan-out delivers events by transaction commit order.';
comment on column webhook.events.payload is
    'The body''s "data". For row events: {"table", "schema", "op", "new", "old"}.';
comment on column webhook.events.payload_bytes is 'Size of payload in bytes (JSON text).';
comment on column webhook.events.source_table is 'Schema-qualified source table for row events; null for webhook_publish.';
comment on column webhook.events.idempotency_key is
    'Optional key given to webhook_publish; a repeated key returns the first event''s id and enqueues nothing.';
comment on column webhook.events.endpoint_id is
    'The one endpoint the event is for (a backfill to one endpoint), whose delivery is made with it; null: every endpoint subscribed to its type, through the fan-out.';
comment on column webhook.events.ordering_key is
    'The key given to webhook_publish(…, ordering_key): an ordered endpoint receives the events of one key in the order of their ids. Null for row events (their key is their table and primary key, see webhook._row_key) and for unkeyed custom events.';
comment on column webhook.events.id_namespace is
    'The webhook-id namespace of the session that wrote it (random per session): its webhook-id is msg_ + this + its id, in 16 hex digits each, so ids never repeat, even between two copies of a database that diverged (a base backup, PITR, a promoted standby). Null for events written before 0.3.0 (see webhook._message_id).';

-- -----------------------------------------------------------------------------
-- deliveries
-- -----------------------------------------------------------------------------

-- API: Public
-- The order matters: the open states come first, so "open" is
-- `status < 'succeeded'`. (waiting came with 0.3.0; an upgrade adds it
-- after paused, and a value added in a transaction cannot be used before
-- it commits, so no index, constraint, view or SQL-standard function
-- names it: PL/pgSQL bodies only, which are parsed when they run.)
create type webhook.delivery_status as enum ('pending', 'paused', 'waiting', 'succeeded', 'failed', 'cancelled');
comment on type webhook.delivery_status is
    'pending (to send or being sent), paused (its endpoint is paused or disabled), waiting (an ordered endpoint''s delivery behind an earlier one of its key), then the final states: succeeded, failed (gave up after the retry policy), cancelled (its endpoint was removed while holding it).';

-- API: Private
create sequence webhook.deliveries_id_seq;

-- API: Public
create table webhook.deliveries (
    id               bigint not null default nextval('webhook.deliveries_id_seq'),
    slot             smallint,
    event_id         bigint not null,
    event_txid       bigint not null,
    event_slot       smallint not null,
    endpoint_id      bigint not null,
    status           webhook.delivery_status not null default 'pending',
    attempt_count    integer not null default 0,
    next_attempt_at  timestamptz not null default now(),
    lease_token      bigint,
    lease_until      timestamptz,
    leased_by        text,
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    replay_of        bigint,
    created_at       timestamptz not null default now(),
    finalized_at     timestamptz,
    -- Last: added by the 0.3.0 upgrade.
    event_namespace  bigint,
    ordering_key     text,
    -- No foreign keys: deliveries are written only by pg_webhook's own
    -- functions, in batches, for events and endpoints they have just read;
    -- endpoints are never deleted (soft delete).
    constraint deliveries_attempt_count check (attempt_count >= 0),
    constraint deliveries_lease_complete check ((lease_token is null) = (lease_until is null))
) partition by list (slot);
alter sequence webhook.deliveries_id_seq owned by webhook.deliveries.id;

-- The open deliveries (slot null): the worker's queue. Small and hot: a
-- claim is a HOT update of lease columns, a finished delivery is moved out
-- to its event's slot. Half of each page is kept free (fillfactor 50) so
-- that every row on it can be claimed once in place: a claim updates a
-- batch of neighbouring rows in one transaction, before any old version
-- can be pruned, and with 80 only 3 claims in 10 were HOT during a drain
-- (the others wrote new index entries; 83 in 100 at 50, and 12 % fewer
-- instructions per delivery, measured with callgrind).
create table webhook.deliveries_open partition of webhook.deliveries for values in (null)
    with (fillfactor = 50);
alter table webhook.deliveries_open add constraint deliveries_open_state
    check (status < 'succeeded' and finalized_at is null);
create unique index deliveries_open_id on webhook.deliveries_open (id);
-- Due deliveries per endpoint, oldest first: the claim walks endpoints with
-- work and takes each one's share from here. Partial: paused ones never
-- slow it down.
create index deliveries_open_due on webhook.deliveries_open (endpoint_id, next_attempt_at) where status = 'pending';
create index deliveries_open_paused on webhook.deliveries_open (endpoint_id) where status = 'paused';
-- An ordered endpoint's deliveries by key in event order (15_ordering.sql):
-- the next one of a key is the first entry. Partial: the deliveries of
-- endpoints that are not ordered (no key) never enter it.
create index deliveries_open_key on webhook.deliveries_open (endpoint_id, ordering_key, event_id, id)
    where ordering_key is not null;
-- At most one delivery of a key is pending or paused (its head); the
-- others wait (status waiting, which this predicate cannot name: see the type).
create unique index deliveries_open_head on webhook.deliveries_open (endpoint_id, ordering_key)
    where ordering_key is not null and status <= 'paused';

comment on table webhook.deliveries is
    'One row per (event, endpoint), created by the fan-out. Open ones (pending, paused) are in the partition deliveries_open; a finished one (succeeded, failed, cancelled) is kept with its event for pg_webhook.retention.';
comment on column webhook.deliveries.slot is 'Null while open; then the log slot of its event (the partition it lives in).';
comment on column webhook.deliveries.event_slot is 'The log slot of its event.';
comment on column webhook.deliveries.event_txid is 'Its event''s webhook.events.txid (with event_id, the event''s key).';
comment on column webhook.deliveries.status is
    'pending (to send or being sent), paused (endpoint paused or disabled), succeeded, failed (gave up after the retry policy), cancelled (endpoint removed while holding it).';
comment on column webhook.deliveries.next_attempt_at is
    'When the delivery is next due (first attempt or retry).';
comment on column webhook.deliveries.lease_token is
    'Set by a claim; an attempt is recorded against the delivery only while the token still matches.';
comment on column webhook.deliveries.lease_until is
    'End of the current claim''s lease. A worker that dies leaves a delivery that simply becomes claimable again at this time.';
comment on column webhook.deliveries.event_namespace is
    'Its event''s webhook-id namespace (webhook._event_namespace), kept with the delivery so that message_id (webhook._webhook_id(event_id, event_namespace)) is indexed; null for an event of pg_webhook 0.1.';
comment on column webhook.deliveries.ordering_key is
    'For an ordered endpoint, its event''s key (webhook_publish''s ordering_key, or a row event''s table and primary key): one delivery of a key at a time, in event order. Null for an endpoint that is not ordered and for unkeyed events.';
comment on column webhook.deliveries.replay_of is 'For a replay (webhook_replay), the delivery it repeats; null otherwise.';

-- -----------------------------------------------------------------------------
-- attempts
-- -----------------------------------------------------------------------------

-- API: Private
create sequence webhook.attempts_id_seq;

-- API: Public
create table webhook.attempts (
    id               bigint not null default nextval('webhook.attempts_id_seq'),
    slot             smallint not null,
    -- No foreign key: attempts are written only by webhook._record_attempts.
    delivery_id      bigint not null,
    -- The delivery's endpoint, copied so that "this endpoint's failures of
    -- the last day" is one index range and not a join through deliveries.
    endpoint_id      bigint not null,
    attempt_number   integer not null,
    started_at       timestamptz not null,
    duration_ms      double precision not null,
    status_code      integer,
    response_excerpt text,
    error            text,
    worker_id        text not null,
    -- Last: 0.3.0 added it to 0.2.0's table (ALTER TABLE appends).
    lease_held       boolean,
    constraint attempts_status_code_http check (status_code between 100 and 599),
    constraint attempts_has_outcome check (status_code is not null or error is not null),
    constraint attempts_duration_nonnegative check (duration_ms >= 0),
    constraint attempts_excerpt_bounded check (octet_length(response_excerpt) <= 65536)
) partition by list (slot);
alter sequence webhook.attempts_id_seq owned by webhook.attempts.id;
create index attempts_delivery on webhook.attempts (delivery_id);
-- Attempts by time: "the latest 50" (webhook.delivery_log ordered by
-- started_at, each slot's partition read backwards and merged), the status
-- page, analysts' "last hour". A B-tree, not BRIN: only a B-tree gives the
-- order, and rows arrive in time order, so its inserts stay on the
-- rightmost page.
create index attempts_started on webhook.attempts (started_at);
-- One endpoint's failed attempts over a period ("what went wrong with
-- endpoint 7 since yesterday"). Partial: a failure is the exception, so the
-- recorder pays for this index rarely. A query uses it when it asks for
-- failures with the same words:
--   (status_code is null or status_code not between 200 and 299)
create index attempts_failed on webhook.attempts (endpoint_id, started_at)
    where status_code is null or status_code not between 200 and 299;

comment on table webhook.attempts is 'One row per HTTP attempt, written by the worker after the request ended.';
comment on column webhook.attempts.endpoint_id is 'The endpoint of its delivery.';
comment on column webhook.attempts.slot is 'The log slot of its delivery''s event (the partition it lives in).';
comment on column webhook.attempts.status_code is 'HTTP status, null when no response arrived (see error).';
comment on column webhook.attempts.response_excerpt is 'The first bytes of the response body (bounded by the worker).';
comment on column webhook.attempts.worker_id is 'The worker that made the attempt.';
comment on column webhook.attempts.lease_held is
    'True when the worker still held the delivery''s lease as it recorded the attempt (its outcome moved the delivery); false when it did not (the lease had expired and passed on, or was never its own): the attempt changed nothing. Null for attempts recorded before 0.3.0.';

-- The slots: one partition of each log table per slot. Finished deliveries
-- are indexed for the lookups people and the retention make: by id, by
-- event, by finishing time (BRIN: rows arrive in that order), for
-- webhook_replay_failed failed ones by endpoint, for delivery_log the few
-- never moved by an attempt, and by webhook-id (message_id: a receiver's
-- question). A hash index: only equality is asked of it, and it holds a
-- 4-byte hash, not the 36-character id. The open deliveries have no such
-- index: they are few, and every one added to it would cost the queue.
do $$
declare
    s integer;
begin
    for s in 0 .. webhook._slots() - 1 loop
        execute format('create table webhook.%I partition of webhook.events for values in (%s)', 'events_' || s, s);
        execute format('create table webhook.%I partition of webhook.deliveries for values in (%s)', 'deliveries_' || s, s);
        execute format('alter table webhook.%I add constraint %I check (status >= ''succeeded'' and finalized_at is not null and lease_token is null and slot = event_slot)',
                       'deliveries_' || s, 'deliveries_' || s || '_finished');
        execute format('create unique index %I on webhook.%I (id)', 'deliveries_' || s || '_id', 'deliveries_' || s);
        execute format('create index %I on webhook.%I (event_id)', 'deliveries_' || s || '_event', 'deliveries_' || s);
        execute format('create index %I on webhook.%I using brin (finalized_at)', 'deliveries_' || s || '_finalized', 'deliveries_' || s);
        execute format('create index %I on webhook.%I (endpoint_id, finalized_at) where status = ''failed''',
                       'deliveries_' || s || '_failed', 'deliveries_' || s);
        -- Finished without an attempt that moved them (cancelled before
        -- being sent): the rows webhook.delivery_log shows with no attempt.
        execute format('create index %I on webhook.%I (id) where last_attempt_at is null',
                       'deliveries_' || s || '_unattempted', 'deliveries_' || s);
        execute format('create index %I on webhook.%I using hash (webhook._webhook_id(event_id, event_namespace))',
                       'deliveries_' || s || '_message', 'deliveries_' || s);
        execute format('create table webhook.%I partition of webhook.attempts for values in (%s)', 'attempts_' || s, s);
    end loop;
end
$$;

-- -----------------------------------------------------------------------------
-- the fan-out's position, idempotency keys, published types
-- -----------------------------------------------------------------------------

-- API: Private
-- Where the fan-out is (PgQ's batches): every event of a transaction visible
-- in the prev_* snapshot has its deliveries. A batch in progress runs up to
-- the cur_* snapshot; done_txid is how far into it (by transaction) it got.
-- One row, created by the first fan-out (so that a restore brings its own).
create table webhook.fanout_state (
    singleton  boolean primary key default true,
    prev_xmin  bigint not null,
    prev_xmax  bigint not null,
    prev_xip   bigint[] not null,
    cur_xmin   bigint,
    cur_xmax   bigint,
    cur_xip    bigint[],
    done_txid  bigint not null default 0,
    updated_at timestamptz not null default now(),
    constraint fanout_state_one_row check (singleton),
    constraint fanout_state_batch_complete check ((cur_xmin is null) = (cur_xmax is null) and (cur_xmin is null) = (cur_xip is null))
);
comment on table webhook.fanout_state is
    'The fan-out''s position: events of transactions visible in prev_* have their deliveries; cur_* and done_txid describe a batch in progress.';

-- API: Private
-- Uniqueness of idempotency keys lives here rather than in an index on
-- webhook.events: every captured row inserts into events, and only
-- webhook_publish with a key ever touches this table.
create table webhook.idempotency_keys (
    idempotency_key text primary key,
    event_id        bigint not null,
    created_at      timestamptz not null default now()
);
comment on table webhook.idempotency_keys is
    'Idempotency keys of webhook_publish and the event each one produced; forgotten after pg_webhook.retention.';

-- API: Private
create table webhook.published_types (
    event_type         text primary key,
    first_published_at timestamptz not null default now()
);
comment on table webhook.published_types is 'Every event type ever passed to webhook_publish (see webhook.event_types).';
