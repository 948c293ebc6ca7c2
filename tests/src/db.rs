//! A database per test (with the extension, dropped by `finish`), and a
//! connection that LISTENs for notifications.

use crate::{admin_dsn, connect, within, WAIT};
use pg_webhook_worker::{Config, WorkerEvent};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::{Client, NoTls};

/// A fresh database with the extension installed, for one test.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Connection string to it.
    pub dsn: String,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// Creates the database and installs pg_webhook in this run's flavor
    /// (see flavor.rs), and allows private targets (the receivers live on
    /// 127.0.0.1).
    pub async fn new() -> Self {
        let db = Self::empty().await;
        crate::install(&db.dsn).await;
        db
    }

    /// A database without pg_webhook (a restore target, an upgrade test).
    /// With the SQL flavor, its connection string logs in as the installing
    /// role (see flavor.rs), as the tests act as a managed service's administrator.
    pub async fn empty() -> Self {
        let admin = admin_dsn();
        let name = format!(
            "pgwh_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        let client = connect(&admin).await;
        client
            .batch_execute(&format!("create database {name}"))
            .await
            .expect("create database");
        client
            .batch_execute(&format!(
                "alter database {name} set pg_webhook.allow_private_targets = on"
            ))
            .await
            .expect("alter database");
        let dsn = format!("{admin} dbname={name}");
        let dsn = crate::flavor::prepare(&client, &name, &dsn).await;
        Self { name, dsn }
    }

    /// A new connection to this database.
    pub async fn client(&self) -> Client {
        connect(&self.dsn).await
    }

    /// A new connection to this database as the cluster's superuser (the
    /// same as [`Self::client`] with the extension; with the SQL flavor,
    /// for what a managed service's administrator may not do).
    pub async fn superuser_client(&self) -> Client {
        connect(&format!("{} dbname={}", admin_dsn(), self.name)).await
    }

    /// Worker settings for tests: private targets allowed, short timers;
    /// with the SQL flavor, logged in as a member of webhook_worker.
    pub fn worker_config(&self) -> Config {
        let dsn = match crate::flavor() {
            crate::Flavor::Extension => self.dsn.clone(),
            crate::Flavor::Sql => format!("{} user={}", self.dsn, crate::WORKER_LOGIN),
        };
        let mut c = Config::for_database(&dsn).expect("valid test DSN");
        c.allow_private_targets = true;
        c.poll_interval = Duration::from_millis(500);
        c.lease_margin = Duration::from_millis(500);
        c.drain_timeout = Duration::from_secs(10);
        c
    }

    /// Subscribes `url`; returns (endpoint id, signing secret).
    pub async fn subscribe(
        &self,
        client: &Client,
        url: &str,
        patterns: &[&str],
        retry_policy: Option<&str>,
    ) -> (i64, String) {
        let policy: Option<serde_json::Value> =
            retry_policy.map(|p| serde_json::from_str(p).expect("policy JSON"));
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        let row = client
            .query_one(
                "select endpoint_id, signing_secret from webhook_subscribe($1, $2, retry_policy => $3)",
                &[&url, &patterns, &policy],
            )
            .await
            .expect("webhook_subscribe");
        (row.get(0), row.get(1))
    }

    /// A login role of this test's own (`<database>_<suffix>`: roles are
    /// cluster-wide), member of `member_of` (none when empty), created by
    /// `admin`; returns its name and a connection to this database as it.
    pub async fn login(
        &self,
        admin: &Client,
        suffix: &str,
        member_of: &[&str],
    ) -> (String, Client) {
        let name = format!("{}_{suffix}", self.name);
        let roles = if member_of.is_empty() {
            String::new()
        } else {
            format!(" in role {}", member_of.join(", "))
        };
        admin
            .batch_execute(&format!("create role {name} login{roles}"))
            .await
            .expect("create a login role");
        let client = connect(&format!("{} user={name}", self.dsn)).await;
        (name, client)
    }

    /// A fresh database holding what this one holds, through the real tools:
    /// a custom-format `pg_dump` restored by `pg_restore --exit-on-error`
    /// (which creates the extension itself) as the superuser, or, with the
    /// SQL flavor, by `scripts/sql-flavor-restore.sh` as the role that
    /// installed it (no superuser).
    pub async fn dump_and_restore(&self) -> TestDb {
        let dump = std::env::temp_dir().join(format!("{}.dump", self.name));
        let path = dump.to_str().expect("a UTF-8 temporary path");
        crate::pg_tool("pg_dump", &["-Fc", "-f", path, "-d", &self.dsn]).await;
        let restored = TestDb::empty().await;
        match crate::flavor() {
            crate::Flavor::Extension => {
                crate::pg_tool(
                    "pg_restore",
                    &["--exit-on-error", "-d", &restored.dsn, path],
                )
                .await
            }
            crate::Flavor::Sql => {
                crate::pg_script("sql-flavor-restore.sh", &[path, &restored.dsn]).await;
                // Every function of pg_webhook with its owner, rights and
                // comment, as in the original; and the right the script
                // lent for the restore taken back.
                const FUNCTIONS: &str = "select p.oid::regprocedure::text, p.proowner::regrole::text,
                        coalesce(p.proacl::text, ''), coalesce(obj_description(p.oid, 'pg_proc'), '')
                    from pg_proc p where p.pronamespace = 'webhook'::regnamespace order by 1";
                let rows = |rows: Vec<tokio_postgres::Row>| -> Vec<[String; 4]> {
                    rows.iter()
                        .map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)])
                        .collect()
                };
                let (before, after) = (self.client().await, restored.client().await);
                let original = rows(before.query(FUNCTIONS, &[]).await.unwrap());
                let copy = rows(after.query(FUNCTIONS, &[]).await.unwrap());
                let lost: Vec<_> = original.iter().filter(|f| !copy.contains(f)).collect();
                let changed: Vec<_> = copy.iter().filter(|f| !original.contains(f)).collect();
                assert!(
                    lost.is_empty() && changed.is_empty(),
                    "pg_webhook's functions, restored: {changed:#?}\ninstead of {lost:#?}"
                );
                let lent: Vec<String> = crate::column(
                    &after,
                    "select p.proowner::regrole::text from pg_proc p
                     where p.pronamespace = 'webhook'::regnamespace and p.proowner <> current_user::regrole
                       and has_schema_privilege(p.proowner, 'webhook', 'CREATE')",
                    &[],
                )
                .await;
                assert!(
                    lent.is_empty(),
                    "CREATE on the schema webhook stayed: {lent:?}"
                );
            }
        }
        std::fs::remove_file(&dump).ok();
        restored
    }

    /// Ends a scenario: fails the test if anything breaks an invariant that
    /// spans rows (see [`Self::assert_invariants`]), then drops the
    /// database (its connections too). Every end-to-end test ends with it,
    /// once its workers are stopped.
    pub async fn finish(self) {
        let client = self.client().await;
        self.assert_invariants(&client).await;
        drop(client);
        connect(&admin_dsn())
            .await
            .batch_execute(&format!("drop database {} with (force)", self.name))
            .await
            .expect("drop the test database");
    }

    /// Fails the test if anything breaks an invariant that spans rows
    /// (`webhook._invariant_violations()`; each row's own are CHECKs).
    pub async fn assert_invariants(&self, client: &Client) {
        let rows = client
            .query(
                "select object_id, invariant from webhook._invariant_violations()",
                &[],
            )
            .await
            .expect("invariant check");
        let broken: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert!(broken.is_empty(), "invariants broken: {broken:?}");
    }

    /// What the deliveries look like (for failure messages).
    pub async fn describe_deliveries(&self, client: &Client) -> String {
        match client
            .query(
                "select d.endpoint_id, d.status::text, count(*), min(d.last_error)
                 from webhook.deliveries d group by 1, 2 order by 1, 2",
                &[],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    format!(
                        "endpoint {} {}: {} (last error {:?})",
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i64>(2),
                        r.get::<_, Option<String>>(3)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("(cannot read them: {e})"),
        }
    }

    /// The webhook-id of the event with this id.
    pub async fn message_id(&self, client: &Client, event_id: i64) -> String {
        client
            .query_one(
                "select webhook._message_id(e.txid, e.id, e.id_namespace) from webhook.events e where e.id = $1",
                &[&event_id],
            )
            .await
            .expect("the event exists")
            .get(0)
    }

    /// Waits until exactly `n` deliveries have `status` (see [`Self::wait_for`]).
    pub async fn wait_deliveries(
        &self,
        client: &Client,
        status: &str,
        n: i64,
        events: &mut mpsc::UnboundedReceiver<WorkerEvent>,
    ) {
        let sql =
            format!("select count(*) = {n} from webhook.deliveries where status = '{status}'");
        self.wait_for(client, &sql, Some(events)).await;
    }

    /// Waits until `sql` (a query returning one boolean) is true, re-checking
    /// whenever the worker reports progress and at least every 100 ms (other
    /// processes' progress sends no events). Panics at the deadline.
    pub async fn wait_for(
        &self,
        client: &Client,
        sql: &str,
        events: Option<&mut mpsc::UnboundedReceiver<WorkerEvent>>,
    ) {
        let deadline = Instant::now() + WAIT;
        let mut events = events;
        loop {
            let ok: bool = client
                .query_one(sql, &[])
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .get(0);
            if ok {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "timed out after {WAIT:?} waiting for: {sql}\ndeliveries now: {}",
                    self.describe_deliveries(client).await
                );
            }
            let tick = left.min(Duration::from_millis(100));
            match events.as_deref_mut() {
                Some(rx) => {
                    let _ = tokio::time::timeout(tick, rx.recv()).await;
                }
                None => tokio::time::sleep(tick).await,
            }
        }
    }
}

/// Claims every due delivery as worker `worker_id` (through the installed
/// version's `webhook._claim_deliveries`, which fans out first) and records
/// one failed attempt of each (a 503, to retry at once): deliveries left
/// pending with an attempt behind them, as a worker stopped mid-retry
/// leaves them. Works on every released schema (0.2.0's claim has no
/// row_kind column). Returns how many.
pub async fn attempt_due_once(client: &Client, worker_id: &str) -> usize {
    let claimed = client
        .query(
            "select delivery_id, lease_token, endpoint_id, attempt_number
             from webhook._claim_deliveries($1, 100, '1 minute', 100, '{}', '{}', 1000, 1000000)
             where delivery_id is not null",
            &[&worker_id],
        )
        .await
        .expect("claim");
    for row in &claimed {
        let (delivery, token, endpoint, attempt): (i64, i64, i64, i32) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        client
            .execute(
                "select webhook._record_attempts($1, array[$2::bigint], array[$3::bigint], array[$4::bigint],
                        array[$5::integer], array[now()], array[2.0::float8], array[503], array['busy'],
                        array[null]::text[], array['retry'], array[0::bigint])",
                &[&worker_id, &delivery, &token, &endpoint, &attempt],
            )
            .await
            .expect("record a failed attempt");
    }
    claimed.len()
}

/// A connection LISTENing on a channel; notifications' payloads arrive on `rx`.
pub struct Listener {
    /// Payloads, in the order they were notified.
    pub rx: mpsc::UnboundedReceiver<String>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    /// Connects and LISTENs on `channel` (a plain identifier).
    pub async fn start(dsn: &str, channel: &str) -> Self {
        use futures_util::future::poll_fn;
        let (client, mut connection) = tokio_postgres::connect(dsn, NoTls)
            .await
            .expect("listener connects");
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sql = format!("listen {channel}");
        let task = tokio::spawn(async move {
            let listen = client.batch_execute(&sql);
            tokio::pin!(listen);
            let mut ready = Some(ready_tx);
            loop {
                tokio::select! {
                    r = &mut listen, if ready.is_some() => {
                        r.expect("listen");
                        let _ = ready.take().map(|t| t.send(()));
                    }
                    msg = poll_fn(|cx| connection.poll_message(cx)) => match msg {
                        Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                            let _ = tx.send(n.payload().to_owned());
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        });
        ready_rx.await.expect("the listener is listening");
        Self { rx, task }
    }

    /// The next payload; panics at the wait deadline.
    pub async fn next(&mut self) -> String {
        within("a notification", self.rx.recv())
            .await
            .expect("the listener is running")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}
