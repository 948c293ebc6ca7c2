//! Every SQL statement the worker runs, in one place, so that a test can
//! prepare each of them against a real database and catch drift between the
//! worker and the extension's SQL.
//!
//! Every function and operator they use is qualified with `pg_catalog`
//! (`operator(pg_catalog.=)`): the worker's session searches `public`, and
//! in a database where anyone may create objects there (any database made
//! before PostgreSQL 15), a planted `public.unnest(integer[])` or
//! `public.||(text, integer)` would be a better match than the built-in
//! and run with the worker's rights, which read every signing secret.
//! (tests/e2e/planted.rs plants them.) `operator(…)` has one precedence
//! whatever the operator, hence the parentheses.
//!
//! They are sent as unnamed statements with their parameter types
//! (tokio-postgres' `query_typed`: parse, bind and execute in one round
//! trip), never as named prepared statements: behind a transaction-mode
//! pooler (pgbouncer) consecutive transactions may run on different server
//! connections, where a statement prepared on another one does not exist.
//! The parse and plan of these one-call statements is all it costs (see
//! BENCHMARKS.md); the SQL they call keeps its plans per server session.

use tokio_postgres::types::Type;

/// What is installed (compatibility check at start-up and on /readyz): the
/// extension's version when there is an extension (the C library's, or the
/// SQL flavor made a pg_tle extension), the language of the capture trigger
/// (`c` for the library, `plpgsql` for the SQL flavor), and whether the
/// SQL flavor's script left its version function (no extension then). No
/// row from the catalog: nulls.
pub const INSTALLED: &str = "select (select e.extversion from pg_catalog.pg_extension e \
     where e.extname operator(pg_catalog.=) 'pg_webhook'), \
     (select l.lanname::text from pg_catalog.pg_proc p join pg_catalog.pg_language l \
     on l.oid operator(pg_catalog.=) p.prolang \
     where p.oid operator(pg_catalog.=) pg_catalog.to_regprocedure('webhook._capture()')), \
     pg_catalog.to_regprocedure('webhook._sql_flavor_version()') is not null";

/// The SQL flavor's version, when its script installed it (see [`INSTALLED`];
/// not in [`ALL`]: the function exists in that flavor only).
pub const SQL_FLAVOR_VERSION: &str = "select webhook._sql_flavor_version()";

/// Fans out what was committed since the last call, then claims and leases
/// due deliveries fairly across endpoints: $1 worker id, $2 limit, $3 lease
/// margin in ms, $4 the worker's concurrency (shared among endpoints), $5/$6 this worker's
/// deliveries in flight per endpoint, $7 most events to fan out first, $8 most
/// payload bytes to claim.
/// It returns a row per endpoint of the claimed deliveries (`row_kind`
/// 'endpoint': its settings), then a row per delivery ('delivery').
/// `queue::claims_from_rows` finds each column by its name, once per claim.
pub const CLAIM: &str = "select row_kind, delivery_id, lease_token, attempt_number, event_id, message_namespace, event_type, \
     event_created_at, payload, endpoint_id, url, headers, timeout_ms, secrets, max_attempts, initial_delay_ms, \
     max_delay_ms, backoff_multiplier, ordered \
     from webhook._claim_deliveries($1::text, $2::integer, $3::bigint operator(pg_catalog.*) interval '1 millisecond', \
     $4::integer, $5::bigint[], $6::integer[], $7::integer, $8::bigint)";
/// Parameter types of [`CLAIM`].
pub const CLAIM_TYPES: &[Type] = &[
    Type::TEXT,
    Type::INT4,
    Type::INT8,
    Type::INT4,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::INT4,
    Type::INT8,
];

/// Records a batch of attempts (see `webhook._record_attempts`).
pub const RECORD: &str = "select webhook._record_attempts($1::text, $2::bigint[], $3::bigint[], $4::bigint[], \
     $5::integer[], $6::timestamptz[], $7::double precision[], $8::integer[], $9::text[], $10::text[], $11::text[], \
     $12::bigint[])";
/// Parameter types of [`RECORD`].
pub const RECORD_TYPES: &[Type] = &[
    Type::TEXT,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT8_ARRAY,
    Type::INT4_ARRAY,
    Type::TIMESTAMPTZ_ARRAY,
    Type::FLOAT8_ARRAY,
    Type::INT4_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::TEXT_ARRAY,
    Type::INT8_ARRAY,
];

/// Milliseconds until a delivery this worker may claim is due (null: none
/// pending): $1 the worker's concurrency, $2/$3 its deliveries in flight
/// per endpoint (as for the claim).
pub const NEXT_DUE: &str = "select webhook._next_due_ms($1::integer, $2::bigint[], $3::integer[])";
/// Parameter types of [`NEXT_DUE`].
pub const NEXT_DUE_TYPES: &[Type] = &[Type::INT4, Type::INT8_ARRAY, Type::INT4_ARRAY];

/// The extension's `pg_webhook.notify_min_interval`, in ms: how long a
/// session may stay silent after notifying (the worker lingers longer).
pub const NOTIFY_MIN_INTERVAL: &str = "select webhook._notify_min_interval_ms()";

/// The periodic maintenance (retention, auto-disable); null when another
/// worker is running it.
pub const MAINTENANCE: &str = "select webhook._maintenance()::text";

/// Age of the oldest event or delivery that waits, in seconds (the
/// queue_lag_seconds metric).
pub const QUEUE_LAG: &str = "select webhook._queue_lag_seconds()";

/// The status page's endpoints (what `webhook.endpoint_health` says), live ones.
pub const STATUS_ENDPOINTS: &str = "select endpoint_id, name, url, state, disabled_reason, attempts_1h, \
     success_rate_1h::float8, p50_ms_1h, p95_ms_1h, attempts_24h, success_rate_24h::float8, \
     last_success_at, last_failure_at, last_failure_status, last_failure_error, consecutive_failures, \
     pending, waiting, extract(epoch from oldest_open_age)::float8 \
     from webhook.endpoint_health where state operator(pg_catalog.<>) 'removed' order by endpoint_id";

/// The status page's recent failures: attempts of the last hour that did
/// not succeed, newest first. (`between` cannot name its operators; those
/// of integers are exact matches, which pg_catalog, searched first, always
/// provides; and these are the words of the failures' partial index.)
pub const STATUS_FAILURES: &str = "select started_at, endpoint_id, endpoint_name, event_type, message_id, \
     status_code, coalesce(error, 'HTTP ' operator(pg_catalog.||) status_code::text) \
     from webhook.delivery_log \
     where started_at operator(pg_catalog.>) (pg_catalog.now() operator(pg_catalog.-) interval '1 hour') \
       and (status_code is null or status_code not between 200 and 299) \
     order by started_at desc limit 20";

/// The status page's chart: attempts, successes and latency percentiles
/// (bounds of their histogram bucket) per minute over the last hour, all
/// endpoints together.
pub const STATUS_MINUTES: &str = "with m as ( \
       select s.minute, pg_catalog.sum(s.attempts)::int8 as attempts, pg_catalog.sum(s.successes)::int8 as successes \
       from webhook.endpoint_stats s \
       where s.minute operator(pg_catalog.>) (pg_catalog.now() operator(pg_catalog.-) interval '1 hour') group by s.minute), \
     h as ( \
       select s.minute, u.i, pg_catalog.sum(u.n)::int8 as n \
       from webhook.endpoint_stats s cross join lateral pg_catalog.unnest(s.latency_hist) with ordinality as u(n, i) \
       where s.minute operator(pg_catalog.>) (pg_catalog.now() operator(pg_catalog.-) interval '1 hour') \
       group by s.minute, u.i) \
     select m.minute, m.attempts, m.successes, \
       webhook._hist_percentile((select pg_catalog.array_agg(h.n order by h.i) from h \
                                 where h.minute operator(pg_catalog.=) m.minute), 0.5), \
       webhook._hist_percentile((select pg_catalog.array_agg(h.n order by h.i) from h \
                                 where h.minute operator(pg_catalog.=) m.minute), 0.95) \
     from m order by m.minute";

/// On a Citus node: how many endpoints the coordinator published that this
/// node lacks or has otherwise (0 elsewhere).
pub const CLUSTER_BEHIND: &str = "select webhook._cluster_behind()";

/// Opens a write's own transaction, at READ COMMITTED whatever the
/// session's default (see isolation.rs).
pub const BEGIN_READ_COMMITTED: &str = "start transaction isolation level read committed";
/// Ends it (as a rollback when its statement failed).
pub const COMMIT: &str = "commit";

/// The wake-up channel that the extension notifies at commit.
pub const LISTEN: &str = "listen pg_webhook_wake";

/// All statements that take part in `prepare` (for the drift test).
pub const ALL: &[&str] = &[
    INSTALLED,
    CLUSTER_BEHIND,
    CLAIM,
    RECORD,
    NEXT_DUE,
    NOTIFY_MIN_INTERVAL,
    MAINTENANCE,
    QUEUE_LAG,
    STATUS_ENDPOINTS,
    STATUS_FAILURES,
    STATUS_MINUTES,
];
