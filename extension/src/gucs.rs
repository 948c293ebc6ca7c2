//! The `pg_webhook.*` settings. Read only through the accessors below.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Default for `pg_webhook.max_payload_bytes`: 1 MiB, in line with what
/// hosted webhook services accept per message.
pub(crate) const DEFAULT_MAX_PAYLOAD_BYTES: i32 = 1024 * 1024;

static ALLOW_PRIVATE_TARGETS: GucSetting<bool> = GucSetting::<bool>::new(false);
static CAPTURE_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static MAX_PAYLOAD_BYTES: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_MAX_PAYLOAD_BYTES);
static NOTIFY_MIN_INTERVAL_MS: GucSetting<i32> =
    GucSetting::<i32>::new(DEFAULT_NOTIFY_MIN_INTERVAL_MS);
static RETENTION_S: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_RETENTION_S);
static DISABLE_AFTER_S: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_DISABLE_AFTER_S);
static FAILING_AFTER: GucSetting<i32> = GucSetting::<i32>::new(DEFAULT_FAILING_AFTER);

/// Default for `pg_webhook.retention`: 30 days, as Svix keeps message
/// history; finished deliveries, their attempts and events are removed
/// between the retention and 8/7 of it (see `sql/install/08_retention.sql`).
pub(crate) const DEFAULT_RETENTION_S: i32 = 30 * 24 * 3600;
/// Default for `pg_webhook.disable_after`: 5 days without a success, as Svix.
pub(crate) const DEFAULT_DISABLE_AFTER_S: i32 = 5 * 24 * 3600;
/// Default for `pg_webhook.failing_after`: 5 failed attempts in a row, as
/// Svix reports failing endpoints after a handful, well before disabling.
pub(crate) const DEFAULT_FAILING_AFTER: i32 = 5;

/// Default for `pg_webhook.notify_min_interval`: 50 ms, measured as enough to
/// take NOTIFY's commit lock out of the way of 16 concurrent writers, while a
/// lingering worker adds at most a few ms to the skipped commits' latency.
pub(crate) const DEFAULT_NOTIFY_MIN_INTERVAL_MS: i32 = 50;

/// Registers the settings; called once per backend from `_PG_init`.
pub(crate) fn init() {
    GucRegistry::define_bool_guc(
        c"pg_webhook.allow_private_targets",
        c"Allow endpoints on loopback, private and link-local addresses.",
        c"Off by default so that a subscription cannot reach internal services. Only a superuser may turn it on.",
        &ALLOW_PRIVATE_TARGETS,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"pg_webhook.capture_enabled",
        c"Whether watched tables enqueue events.",
        c"Turn off in a session to write to watched tables without producing events (bulk loads, backfills).",
        &CAPTURE_ENABLED,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_webhook.notify_min_interval",
        c"Shortest time between two wake-up notifications from one session.",
        c"A transaction that enqueued events notifies the workers at commit unless its session notified less than this ago (the workers are still looking at the queue then). 0 notifies at every such commit.",
        &NOTIFY_MIN_INTERVAL_MS,
        0,
        10_000,
        GucContext::Suset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"pg_webhook.retention",
        c"How long finished deliveries, their attempts and their events are kept.",
        c"They are removed whole (log slots truncated) between this and 8/7 of it; what is still pending is never removed. At least a minute.",
        &RETENTION_S,
        60,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_webhook.disable_after",
        c"How long an endpoint may fail without a single success before it is disabled.",
        c"Its deliveries then wait until webhook_resume. A 410 Gone answer disables it at once.",
        &DISABLE_AFTER_S,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"pg_webhook.failing_after",
        c"How many failed attempts in a row make an endpoint failing.",
        c"Then a webhook.endpoint.failing event goes out (to the other endpoints subscribed to it), once per run of failures; its first success after that sends webhook.endpoint.recovered.",
        &FAILING_AFTER,
        1,
        i32::MAX,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"pg_webhook.max_payload_bytes",
        c"Largest event data accepted, in bytes of JSON text.",
        c"A larger webhook_publish fails with SQLSTATE 54000; a larger captured row still commits, its event carrying the key columns and \"truncated\": true. Default 1 MiB.",
        &MAX_PAYLOAD_BYTES,
        1024,
        64 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// `pg_webhook.allow_private_targets` (default off).
pub(crate) fn allow_private_targets() -> bool {
    ALLOW_PRIVATE_TARGETS.get()
}

/// `pg_webhook.capture_enabled` (default on).
pub(crate) fn capture_enabled() -> bool {
    CAPTURE_ENABLED.get()
}

/// `pg_webhook.max_payload_bytes` (default 1 MiB).
pub(crate) fn max_payload_bytes() -> i32 {
    MAX_PAYLOAD_BYTES.get()
}

/// `pg_webhook.notify_min_interval`, in ms (default 50).
pub(crate) fn notify_min_interval_ms() -> i32 {
    NOTIFY_MIN_INTERVAL_MS.get()
}

/// `pg_webhook.retention`, in seconds (default 30 days).
pub(crate) fn retention_s() -> i32 {
    RETENTION_S.get()
}

/// `pg_webhook.disable_after`, in seconds (default 5 days).
pub(crate) fn disable_after_s() -> i32 {
    DISABLE_AFTER_S.get()
}

/// `pg_webhook.failing_after`, failed attempts in a row (default 5).
pub(crate) fn failing_after() -> i32 {
    FAILING_AFTER.get()
}
