//! The flavor under test (`PG_WEBHOOK_TEST_FLAVOR`): `extension` (the
//! default: `create extension pg_webhook` with its library) or `sql` (the
//! SQL flavor's script, run as a role that is no superuser, in a cluster
//! without the library: tests/run.sh). Tests that make sense for one
//! flavor only say so by name (`extension_only_…`, `sql_only_…`), and
//! tests/run.sh skips the other's.

use crate::{admin_dsn, connect, repo_path};
use tokio_postgres::Client;

/// How the tests install pg_webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `create extension pg_webhook`, as the superuser of the test cluster.
    Extension,
    /// The SQL flavor's script, as [`INSTALLER`].
    Sql,
}

/// The role that installs the SQL flavor: a managed service's
/// administrator, with CREATEROLE, CREATE on each test database, the
/// schema public of each, pg_signal_backend, and nothing else.
pub const INSTALLER: &str = "pgwh_installer";

/// The login the worker uses with the SQL flavor: a member of webhook_worker.
pub const WORKER_LOGIN: &str = "pgwh_worker";

/// The flavor of this run.
pub fn flavor() -> Flavor {
    match std::env::var("PG_WEBHOOK_TEST_FLAVOR").as_deref() {
        Err(_) | Ok("extension") => Flavor::Extension,
        Ok("sql") => Flavor::Sql,
        Ok(other) => panic!("PG_WEBHOOK_TEST_FLAVOR is extension or sql, not {other:?}"),
    }
}

/// The SQL flavor's install script (`bash scripts/package.sh --sql` builds
/// it), or `PG_WEBHOOK_SQL_SCRIPT`.
pub fn sql_script() -> std::path::PathBuf {
    std::env::var("PG_WEBHOOK_SQL_SCRIPT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            repo_path(&format!(
                "target/package/pg_webhook--{}.sql",
                env!("CARGO_PKG_VERSION")
            ))
        })
}

/// Creates a role unless it exists (test databases share the cluster, and
/// run in parallel).
async fn ensure_role(admin: &Client, name: &str, options: &str) {
    admin
        .batch_execute(&format!(
            "do $$ begin create role {name} {options}; \
             exception when duplicate_object or unique_violation then null; end $$"
        ))
        .await
        .unwrap_or_else(|e| panic!("create role {name}: {e}"));
}

/// Makes the fresh database `name` (reached by `dsn`, as the cluster's
/// superuser through `admin`) ready for this run's flavor; returns the
/// connection string the tests use: the superuser's with the extension,
/// [`INSTALLER`]'s with the SQL flavor, given CREATE on the database.
pub async fn prepare(admin: &Client, name: &str, dsn: &str) -> String {
    match flavor() {
        Flavor::Extension => dsn.to_owned(),
        Flavor::Sql => {
            let library: bool = admin
                .query_one(
                    "select exists (select from pg_available_extensions where name = 'pg_webhook')",
                    &[],
                )
                .await
                .expect("pg_available_extensions")
                .get(0);
            assert!(
                !library,
                "the SQL flavor is tested in a cluster without pg_webhook's library (tests/sql-flavor.sh)"
            );
            ensure_role(admin, INSTALLER, "login createrole").await;
            admin
                .batch_execute(&format!("grant create on database {name} to {INSTALLER}"))
                .await
                .expect("grant create on the database");
            // And what a managed service's administrator has besides: the
            // schema public (it usually owns the database, hence public;
            // owning it, rather than holding rights on it with grant
            // option, lets a dump restore as it: a GRANT to itself fails),
            // and pg_signal_backend.
            connect(dsn)
                .await
                .batch_execute(&format!(
                    "alter schema public owner to {INSTALLER}; \
                     grant pg_signal_backend to {INSTALLER}"
                ))
                .await
                .expect("give the schema public");
            format!("{dsn} user={INSTALLER}")
        }
    }
}

/// Installs pg_webhook in this run's flavor into the database `dsn`
/// reaches (made by [`prepare`]), private targets allowed (the receivers
/// live on 127.0.0.1).
pub async fn install(dsn: &str) {
    // One simple query: one implicit transaction, all or nothing, as
    // `psql --single-transaction -f` runs the SQL flavor's script.
    let client = connect(dsn).await;
    install_over(&client).await;
    if flavor() == Flavor::Sql {
        // The README's next step: the administrator takes webhook_admin.
        client
            .batch_execute("grant webhook_admin to current_user")
            .await
            .expect("after the install");
        ensure_role(
            &connect(&admin_dsn()).await,
            WORKER_LOGIN,
            "login in role webhook_worker",
        )
        .await;
    }
}

/// Installs pg_webhook in this run's flavor over `client`'s connection, as
/// whoever it is logged in as (tests with clusters of their own, whose
/// subject is not who installs: a crash, TLS, a base backup), private
/// targets allowed for new sessions and this one.
pub async fn install_over(client: &Client) {
    let sql = match flavor() {
        Flavor::Extension => "create extension pg_webhook; \
             do $$ begin execute format('alter database %I set pg_webhook.allow_private_targets = on', \
             current_database()); end $$; \
             set pg_webhook.allow_private_targets = on;"
            .to_owned(),
        Flavor::Sql => format!(
            "{}; update webhook.settings set value = 'on' where name = 'allow_private_targets';",
            read_sql_script()
        ),
    };
    client
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("installing pg_webhook ({:?}): {e:?}", flavor()));
}

/// Runs the SQL flavor's script over `client`'s connection, whatever this
/// run's flavor (the extension's run compares the two and moves one to the
/// other, in its cluster where both can be).
pub async fn install_sql_flavor(client: &Client) {
    client
        .batch_execute(&read_sql_script())
        .await
        .unwrap_or_else(|e| panic!("the SQL flavor's script: {e:?}"));
}

/// The SQL flavor's script.
fn read_sql_script() -> String {
    std::fs::read_to_string(sql_script()).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `bash scripts/package.sh --sql`",
            sql_script().display()
        )
    })
}

/// Sets one of pg_webhook's settings for new sessions of this database:
/// `pg_webhook.<name>` for the database with the extension, the row of
/// webhook.settings with the SQL flavor. Integers in the settings' own
/// units (seconds, ms, bytes, counts).
pub async fn set_setting(client: &Client, database: &str, name: &str, value: i64) {
    let sql = match flavor() {
        Flavor::Extension => format!("alter database {database} set pg_webhook.{name} = {value}"),
        Flavor::Sql => {
            format!("update webhook.settings set value = '{value}' where name = '{name}'")
        }
    };
    client
        .batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Lets pg_webhook's owner make functions of `role` (a backfill's reader
/// is the asking role's): with the SQL flavor, `grant <role> to` the
/// installer (with SET on PostgreSQL 16 and later), as the README tells a
/// DBA; nothing with the extension, whose owner is a superuser.
pub async fn let_owner_take(client: &Client, role: &str) {
    if flavor() == Flavor::Extension {
        return;
    }
    client
        .batch_execute(&format!(
            "do $$ begin execute format('grant {role} to {INSTALLER}%s', \
                 case when current_setting('server_version_num')::int >= 160000 then ' with set true' else '' end); end $$"
        ))
        .await
        .expect("grant the role to the installer");
}
