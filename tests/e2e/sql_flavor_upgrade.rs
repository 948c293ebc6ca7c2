//! The SQL flavor upgrades in place, by the step `bash
//! scripts/sql-flavor-step.sh` builds from the extension's step and the SQL
//! flavor's own (sql/plain/upgrade/), to exactly the schema of a fresh
//! install, keeping every row.
//!
//! 0.3.0 is the SQL flavor's first release, so no real step exists yet (the
//! first is 0.3.0 → 0.4.0, from the install frozen at 0.3.0's release).
//! Until then the step is rehearsed (tests/rehearsal/build.sh): a next
//! release made from the current sources with the kinds of change a
//! release brings (a table, a column, a function of the install changed,
//! a C function added, one replaced and one dropped and made again, with
//! their SQL counterparts, a change of the SQL flavor's own), each written
//! as a release writes it; the generator must turn them into a script that
//! takes the current install there.

use crate::upgrade::{assert_same_catalog, catalog};
use pg_webhook_tests::{attempt_due_once, repo_path, TestDb};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use tokio_postgres::Client;

/// The rehearsed next release's version (tests/rehearsal/build.sh).
const NEXT: &str = concat!(env!("CARGO_PKG_VERSION"), "-rehearsal");

/// A directory of its own under the temporary one, removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    /// A new, empty one.
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "pgwh-sql-step-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A new one holding copies of sql/install and sql/plain, in `sql/`.
    fn with_sources() -> Self {
        let work = Self::new();
        let sources = work.sources();
        std::fs::create_dir_all(&sources).unwrap();
        copy_tree(&repo_path("sql/install"), &sources);
        copy_tree(&repo_path("sql/plain"), &sources);
        work
    }

    fn sources(&self) -> PathBuf {
        self.0.join("sql")
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies a directory tree (cp -r; the tests run where the scripts do).
fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(status.success(), "cp -r {from:?} {to:?}");
}

/// Runs one of the repository's bash scripts with `args` and `envs`; its
/// exit status and what it printed (the caller judges them).
fn bash(script: &str, args: &[&OsStr], envs: &[(&str, &OsStr)]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg(repo_path(script))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("bash {script}: {e}"))
}

/// The rows a step must keep.
async fn rows(c: &Client) -> Vec<String> {
    pg_webhook_tests::column(
        c,
        "select format('endpoint %s %s %s', id, url, is_active) from webhook.endpoints
         union all select format('secret %s %s', endpoint_id, md5(secret)) from webhook.endpoint_secrets
         union all select format('event %s %s %s', id, event_type, payload) from webhook.events
         union all select format('delivery %s %s %s %s %s', id, event_id, endpoint_id, status, attempt_count)
                   from webhook.deliveries
         union all select format('attempt %s %s %s', id, delivery_id, status_code) from webhook.attempts
         order by 1",
        &[],
    )
    .await
}

/// Installs `from_install` (the SQL flavor's install of a release), uses
/// it, runs `step`, and fails unless the database is then at `to_version`,
/// with every row kept, capturing, and exactly the schema that
/// `to_install` makes in an empty database; a second run of the step, and
/// a run where pg_webhook is not installed, must be refused with 55000
/// and change nothing. Returns the upgraded database, and the fresh one's
/// catalog, for the caller's own checks.
async fn assert_upgrades_in_place(
    from_install: &str,
    step: &str,
    to_install: &str,
    to_version: &str,
) -> (TestDb, Vec<String>) {
    assert!(
        !step.contains("MODULE_PATHNAME") && !step.contains("@extschema@"),
        "{step}"
    );
    // The release installed and in use: an endpoint, a watched table,
    // events pending with a failed attempt behind them.
    let db = TestDb::empty().await;
    let c = db.client().await;
    c.batch_execute(from_install)
        .await
        .expect("the release's install");
    c.batch_execute(
        "grant webhook_admin to current_user;
         update webhook.settings set value = 'on' where name = 'allow_private_targets';",
    )
    .await
    .unwrap();
    let c = db.client().await;
    c.batch_execute(
        "select webhook_subscribe('http://127.0.0.1:9/hook', name => 'kept');
         create table orders (id int primary key, note text);
         select webhook_watch('orders', event_prefix => 'order');
         insert into orders values (1, 'before');
         select webhook_publish('order.noted', '{\"n\": 1}');",
    )
    .await
    .unwrap();
    assert!(
        attempt_due_once(&c, "w01").await > 0,
        "deliveries made and attempted"
    );
    let before = rows(&c).await;

    c.batch_execute(step).await.expect("the step");
    let c = db.client().await; // a session that planned nothing before
    let version = |c: Client| async move {
        c.query_one("select webhook._sql_flavor_version()", &[])
            .await
            .unwrap()
            .get::<_, String>(0)
    };
    assert_eq!(version(db.client().await).await, to_version);
    assert_eq!(rows(&c).await, before, "every row kept");
    c.batch_execute("insert into orders values (2, 'after')")
        .await
        .unwrap();
    let captured: i64 = c
        .query_one(
            "select count(*) from webhook.events where event_type = 'order.created'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(captured, 2, "capture goes on");

    // The step refuses a database without the SQL flavor, and one at
    // another version (here, the one it has just upgraded).
    let fresh = TestDb::empty().await;
    for (target, what) in [(&fresh, "without pg_webhook"), (&db, "upgraded")] {
        let refused = target
            .client()
            .await
            .batch_execute(step)
            .await
            .expect_err(what);
        let e = refused.as_db_error().expect("a database error");
        assert_eq!(e.code().code(), "55000", "{what}: {e:?}");
    }
    assert_eq!(
        version(db.client().await).await,
        to_version,
        "a refused step changes nothing"
    );
    let schemas: Vec<String> = pg_webhook_tests::column(
        &fresh.client().await,
        "select nspname::text from pg_namespace where nspname = 'webhook'",
        &[],
    )
    .await;
    assert!(schemas.is_empty(), "a refused step leaves nothing behind");

    // Exactly the schema of the release installed afresh.
    let f = fresh.client().await;
    f.batch_execute(to_install)
        .await
        .expect("the install of the release upgraded to");
    f.batch_execute("grant webhook_admin to current_user")
        .await
        .unwrap();
    assert_same_catalog(&c, &f).await;
    let installed = catalog(&f).await;
    fresh.finish().await;
    (db, installed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_only_a_rehearsed_next_release_upgrades_the_sql_flavor_in_place_to_a_fresh_install() {
    // The next release's install, and the step to it.
    let work = WorkDir::new();
    let built = bash("tests/rehearsal/build.sh", &[work.0.as_os_str()], &[]);
    assert!(
        built.status.success(),
        "tests/rehearsal/build.sh: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let paths = String::from_utf8(built.stdout).unwrap();
    let [next_install, step] = [0, 1].map(|i| {
        let path = paths.lines().nth(i).expect("two paths");
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
    });
    let current_install = std::fs::read_to_string(pg_webhook_tests::sql_script()).unwrap();
    let (db, installed) =
        assert_upgrades_in_place(&current_install, &step, &next_install, NEXT).await;
    assert!(
        installed
            .iter()
            .any(|r| r.starts_with("rel webhook.rehearsal ")),
        "the rehearsal's table is compared"
    );
    let next: i32 = db
        .client()
        .await
        .query_one("select webhook._rehearsal_next()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 42, "the new function and its SQL counterpart");
    db.finish().await;
}

/// The real step of this release, from the install of the previous one
/// as it was released (tests/fixtures/sql-flavor/), when the previous
/// release had the SQL flavor; 0.3.0, its first, has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_only_the_release_upgrades_the_sql_flavor_of_the_previous_one_in_place() {
    let built = bash("scripts/sql-flavor-step.sh", &[], &[]);
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let path = String::from_utf8(built.stdout).unwrap();
    let Some(name) = Path::new(path.trim()).file_name() else {
        assert_eq!(
            env!("CARGO_PKG_VERSION"),
            "0.3.0",
            "only the SQL flavor's first release has no step"
        );
        return;
    };
    let name = name.to_str().unwrap();
    let previous = &name["pg_webhook--".len()..name.rfind("--").unwrap()];
    let frozen = format!("tests/fixtures/sql-flavor/pg_webhook--{previous}.sql");
    let from_install = std::fs::read_to_string(repo_path(&frozen))
        .unwrap_or_else(|e| panic!("{frozen} (frozen at {previous}'s release): {e}"));
    let step = std::fs::read_to_string(repo_path(path.trim())).unwrap();
    let to_install = std::fs::read_to_string(pg_webhook_tests::sql_script()).unwrap();
    let (db, _) =
        assert_upgrades_in_place(&from_install, &step, &to_install, env!("CARGO_PKG_VERSION"))
            .await;
    db.finish().await;
}

/// What the step's generator keeps, replaces, refuses or skips: a step
/// from a release before the SQL flavor's first (0.3.0) makes none; one
/// that cannot run without the library (a top-level ALTER EXTENSION, the
/// library named outside a C function's statement, a C function without
/// a counterpart) or cannot be read fails the build, saying why.
#[test]
fn the_sql_flavor_has_a_step_from_a_release_that_had_it_and_never_with_the_library_in_it() {
    let work = WorkDir::with_sources();
    let sources = work.sources();
    let out = work.0.join("out");
    let current = env!("CARGO_PKG_VERSION");
    let step = |from: &str, text: &str| {
        let path = sources.join(format!("pg_webhook--{from}--{NEXT}.sql"));
        std::fs::write(&path, text).unwrap();
        let run = bash(
            "scripts/sql-flavor-step.sh",
            &[],
            &[
                ("PG_WEBHOOK_SQL_SOURCES", sources.as_os_str()),
                ("PG_WEBHOOK_SQL_VERSION", NEXT.as_ref()),
                ("PG_WEBHOOK_SQL_OUT", out.as_os_str()),
            ],
        );
        std::fs::remove_file(&path).unwrap();
        run
    };
    let before = step(
        "0.2.0",
        "alter table webhook.endpoints add column x text;\n",
    );
    assert!(
        before.status.success() && before.stdout.is_empty(),
        "no step from 0.2.0: {before:?}"
    );
    // Kept: what is not the library's, statement by statement (a dollar
    // quote holding what would be refused at the top level, a comment
    // naming the library); a hand-written C function (`language c`) made
    // its SQL counterpart where it stood; the config dump made conditional.
    let kept = step(
        current,
        "alter table webhook.endpoints add column x text;
         -- not MODULE_PATHNAME: a comment
         do $$ begin
         alter extension pg_webhook drop function webhook._forget_slot(); -- in a body: its business
         end $$;
         create or replace function webhook._forget_slot() returns void
             language c strict as '$libdir/pg_webhook', 'forget_slot_wrapper';
         grant execute on function webhook._forget_slot() to webhook_worker;
         select pg_catalog.pg_extension_config_dump('webhook.endpoints',
                                                    '');
        ",
    );
    assert!(kept.status.success(), "{kept:?}");
    let path = String::from_utf8(kept.stdout).unwrap();
    let kept = std::fs::read_to_string(path.trim()).unwrap();
    for expected in [
        "this database has %",
        "alter table webhook.endpoints add column x text;",
        "-- not MODULE_PATHNAME: a comment",
        "alter extension pg_webhook drop function webhook._forget_slot(); -- in a body",
        "-- (the C function webhook._forget_slot: its SQL counterpart, from sql/plain/)",
        "create or replace function webhook._forget_slot() returns void\nlanguage sql volatile strict\nbegin atomic\n    select;\nend;",
        "grant execute on function webhook._forget_slot() to webhook_worker;",
        "then perform pg_catalog.pg_extension_config_dump('webhook.endpoints',",
        "revoke all on all functions in schema webhook from public;",
        &format!("return '{NEXT}';"),
    ] {
        assert!(kept.contains(expected), "{expected:?} in:\n{kept}");
    }
    assert!(
        !kept.contains("$libdir") && !kept.contains("language c "),
        "{kept}"
    );

    for (text, why) in [
        (
            "alter extension pg_webhook add function webhook._rehearsal_base();\n",
            "ALTER EXTENSION",
        ),
        (
            "select 'MODULE_PATHNAME';\n",
            "the library named outside a C function's create statement",
        ),
        (
            "CREATE FUNCTION webhook.\"_nowhere\"() RETURNS int LANGUAGE c AS 'MODULE_PATHNAME', 'nowhere_wrapper';\n",
            "the C function webhook._nowhere has no SQL counterpart in sql/plain/",
        ),
        (
            "select 1; select $$ never ended;\n",
            "the dollar quote $$ never ends",
        ),
    ] {
        let refused = step(current, text);
        assert!(!refused.status.success(), "{text}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains(why),
            "{text}: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
}
