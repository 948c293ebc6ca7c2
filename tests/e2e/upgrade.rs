//! Upgrading from the released 0.1.0 (its frozen install script, in
//! tests/fixtures, run against the current library) gives exactly the schema
//! of a fresh install, keeps every row, and delivers what was pending.

use pg_webhook_tests::{Receiver, RunningWorker, TestDb};
use tokio_postgres::Client;

/// Everything pg_webhook defines in a database, as comparable text: tables,
/// partitions and their options, columns, constraints, indexes, triggers,
/// functions (definitions, privileges, comments), views, types, sequences,
/// privileges, and what pg_dump keeps.
async fn catalog(c: &Client) -> Vec<String> {
    let sql = r#"
    with ext as (select oid from pg_extension where extname = 'pg_webhook'),
    rels as (select c.* from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = 'webhook')
    select 'rel ' || r.oid::regclass || ' kind=' || r.relkind::text || ' opts=' || coalesce(r.reloptions::text, '')
           || ' acl=' || coalesce(r.relacl::text, '') || ' bound=' || coalesce(pg_get_expr(r.relpartbound, r.oid), '')
           || ' comment=' || coalesce(obj_description(r.oid, 'pg_class'), '')
    from rels r
    union all
    select 'col ' || r.oid::regclass || ' #' || a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
           || ' notnull=' || a.attnotnull || ' identity=' || a.attidentity::text
           || ' default=' || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
           || ' comment=' || coalesce(col_description(r.oid, a.attnum), '')
    from rels r join pg_attribute a on a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped
    left join pg_attrdef d on d.adrelid = r.oid and d.adnum = a.attnum
    union all
    select 'con ' || con.conrelid::regclass || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid)
    from pg_constraint con join rels r on r.oid = con.conrelid
    union all
    select 'idx ' || pg_get_indexdef(i.indexrelid)
    from pg_index i join rels r on r.oid = i.indrelid
    union all
    select 'trg ' || pg_get_triggerdef(t.oid) || ' enabled=' || t.tgenabled::text
    from pg_trigger t join rels r on r.oid = t.tgrelid where not t.tgisinternal
    union all
    select 'fn ' || p.oid::regprocedure || ' acl=' || coalesce(p.proacl::text, '')
           || ' comment=' || coalesce(obj_description(p.oid, 'pg_proc'), '') || E'\n' || pg_get_functiondef(p.oid)
    from pg_proc p join pg_depend d on d.objid = p.oid and d.classid = 'pg_proc'::regclass and d.deptype = 'e'
    where d.refobjid = (select oid from ext) and p.prokind <> 'a'
    union all
    select 'view ' || r.oid::regclass || E'\n' || pg_get_viewdef(r.oid) from rels r where r.relkind = 'v'
    union all
    select 'type ' || t.oid::regtype || ' ' || coalesce((select string_agg(e.enumlabel, ',' order by e.enumsortorder)
                                                          from pg_enum e where e.enumtypid = t.oid), '')
           || ' comment=' || coalesce(obj_description(t.oid, 'pg_type'), '')
    from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where n.nspname = 'webhook' and t.typtype = 'e'
    union all
    select 'seq ' || s.seqrelid::regclass || ' ' || s.seqtypid::regtype || ' ' || s.seqstart || ' ' || s.seqincrement
           || ' ' || s.seqmax || ' ' || s.seqmin || ' ' || s.seqcache || ' ' || s.seqcycle
    from pg_sequence s join rels r on r.oid = s.seqrelid
    union all
    select 'dump ' || cfg.tbl::regclass || ' ' || cfg.cond
    from pg_extension e, unnest(e.extconfig, e.extcondition) as cfg(tbl, cond)
    where e.extname = 'pg_webhook'
    union all
    select 'schema acl=' || coalesce(n.nspacl::text, '') || ' comment=' || coalesce(obj_description(n.oid, 'pg_namespace'), '')
    from pg_namespace n where n.nspname = 'webhook'
    union all
    select 'member ' || pg_describe_object(d.classid, d.objid, d.objsubid)
    from pg_depend d where d.refobjid = (select oid from ext) and d.deptype = 'e'
    "#;
    let mut rows: Vec<String> = c
        .query(sql, &[])
        .await
        .expect("catalog query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort();
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_from_0_1_0_matches_a_fresh_install_and_keeps_the_data() {
    let old = TestDb::empty().await;
    let receiver = Receiver::start().await;
    let c = old.client().await;
    c.batch_execute("create extension pg_webhook version '0.1.0'")
        .await
        .expect("the frozen 0.1.0 script installs (tests/run.sh copies it into PostgreSQL's extension directory)");
    // 0.1.0 data, made with the 0.1.0 API: endpoints (one removed), a
    // watched table, events with their deliveries, one of them delivered
    // (claimed and recorded through 0.1.0's functions).
    let url = receiver.url("/");
    c.batch_execute(&format!(
        "select webhook_subscribe('{url}', name => 'live');
         select webhook_subscribe('{url}', name => 'gone');
         create table orders (id int primary key, note text);
         select webhook_watch('orders', event_prefix => 'order');
         insert into orders values (1, 'first');
         select webhook_publish('order.noted', '{{\"n\": 1}}', 'key-1');
         select webhook_unsubscribe(2);"
    ))
    .await
    .unwrap();
    let claimed = c
        .query_one(
            "select delivery_id, lease_token from webhook._claim_deliveries('w01', 1, '1 minute')",
            &[],
        )
        .await
        .unwrap();
    let (delivery, token): (i64, i64) = (claimed.get(0), claimed.get(1));
    c.execute(
        "select webhook._record_attempts('w01', array[$1::bigint], array[$2::bigint], array[1], array[now()],
                array[3.5::float8], array[200], array['ok'], array[null]::text[], array['succeeded'], array[null]::bigint[])",
        &[&delivery, &token],
    )
    .await
    .unwrap();
    let rows_before: Vec<(i64, String)> = c
        .query(
            "select id, status::text from webhook.deliveries order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    c.batch_execute("alter extension pg_webhook update")
        .await
        .expect("0.1.0 → 0.2.0 update");
    let c = old.client().await; // a session that loaded nothing of 0.1.0
    let version: String = c
        .query_one(
            "select extversion from pg_extension where extname = 'pg_webhook'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, env!("CARGO_PKG_VERSION"));

    let fresh = TestDb::new().await;
    let upgraded_catalog = catalog(&c).await;
    let fresh_catalog = catalog(&fresh.client().await).await;
    let only_upgraded: Vec<_> = upgraded_catalog
        .iter()
        .filter(|r| !fresh_catalog.contains(r))
        .collect();
    let only_fresh: Vec<_> = fresh_catalog
        .iter()
        .filter(|r| !upgraded_catalog.contains(r))
        .collect();
    assert!(
        only_upgraded.is_empty() && only_fresh.is_empty(),
        "the upgraded schema differs from a fresh install:\nonly after upgrade: {only_upgraded:#?}\nonly in a fresh install: {only_fresh:#?}"
    );

    let rows_after: Vec<(i64, String)> = c
        .query(
            "select id, status::text from webhook.deliveries order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows_after, rows_before,
        "every delivery kept, with its state"
    );
    old.assert_invariants(&c).await;

    // The watched table keeps capturing, and a worker delivers what was
    // pending (with the webhook-id it had under 0.1.0: the event's number)
    // and what comes after (a namespaced one).
    c.batch_execute("insert into orders values (2, 'after')")
        .await
        .unwrap();
    let mut worker = RunningWorker::start(old.worker_config());
    let got = receiver.wait_for(2).await;
    old.wait_deliveries(&c, "succeeded", 3, &mut worker.events)
        .await;
    worker.stop().await;
    old.assert_invariants(&c).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 2);
    assert!(
        ids[0] == "2" || ids[0] == "1",
        "a 0.1.0 event keeps its id: {ids:?}"
    );
    assert!(ids[1].starts_with("msg_"), "{ids:?}");
    let key: i64 = c
        .query_one(
            "select webhook_publish('order.noted', '{\"n\": 1}', 'key-1')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, 2, "idempotency keys carry over");
}
