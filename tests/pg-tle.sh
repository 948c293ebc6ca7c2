#!/usr/bin/env bash
# pg_webhook's SQL flavor as a pg_tle extension (AWS's pg_tle, which RDS,
# Aurora and Supabase offer), installed and updated in place. pg_tle is in
# no package registry CI can reach, so this is run by hand with its source
# (https://github.com/aws/pg_tle), not by tests/run.sh:
#
#   bash tests/pg-tle.sh PG_TLE_SOURCE_DIR [MAJOR]    # default 17
#
# Builds pg_tle (needs flex, bison and libkrb5-dev) into a copy of the
# major's server without pg_webhook's files, starts a cluster preloading
# it, and, as a role with CREATEROLE, pgtle_admin and CREATE on the
# databases but no superuser:
#   1. installs the current SQL flavor (`bash scripts/package.sh --sql`)
#      with pgtle.install_extension and CREATE EXTENSION, and uses it (an
#      endpoint, a watched table, events fanned out and claimed);
#   2. updates it to the rehearsed next release (tests/rehearsal/build.sh)
#      with pgtle.install_update_path and ALTER EXTENSION … UPDATE;
#   3. checks the version, every row kept, the new objects members of the
#      extension and kept in dumps, and the catalog (tests/catalog.sql)
#      equal to the next release installed afresh the same way;
#   4. runs the worker (PG_WEBHOOK_WORKER_BIN, default a debug build) as a
#      webhook_worker member: it must say `SQL (pg_tle extension)` and
#      deliver what was pending and what is captured after, each verified
#      by `pg-webhook-worker listen`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
source_dir=$(cd "${1:?usage: tests/pg-tle.sh PG_TLE_SOURCE_DIR [MAJOR]}" && pwd)
major=${2:-17}
current=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
next="$current-rehearsal"
work=$(mktemp -d /tmp/pg_webhook-pg-tle.XXXXXX)
chmod 755 "$work"
cleanup() {
    PG_BIN="$work/pg/bin" bash scripts/cluster.sh stop "$work/cluster" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

bin=$(bash scripts/postgres.sh bin "$([ "$major" = 15 ] && echo 15-pypi || echo "$major")")
cp -a "$(dirname "$bin")" "$work/pg"
find "$work/pg" -name 'pg_webhook*' -delete
cp -a "$source_dir" "$work/pg_tle"
make -C "$work/pg_tle" -s PG_CONFIG="$work/pg/bin/pg_config" clean >/dev/null
make -C "$work/pg_tle" -s -j2 PG_CONFIG="$work/pg/bin/pg_config" install >/dev/null
export PG_BIN="$work/pg/bin"
port=$(bash scripts/cluster.sh free-port)
bash scripts/cluster.sh start "$work/cluster" "$port" "shared_preload_libraries = 'pg_tle'" >/dev/null

install_script=$ROOT/$(bash scripts/package.sh --sql)
if [ -z "${PG_WEBHOOK_WORKER_BIN:-}" ]; then
    cargo build -q -p pg-webhook-worker
    PG_WEBHOOK_WORKER_BIN=$ROOT/target/debug/pg-webhook-worker
fi
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    cleanup
}
trap stop_all EXIT
built=$(bash tests/rehearsal/build.sh "$work/rehearsal")
next_install=$(sed -n 1p <<<"$built") step=$(sed -n 2p <<<"$built")

psql_as() { # role database [psql arguments…]
    local role=$1 db=$2
    shift 2
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U "$role" -d "$db" "$@"
}
# Calls a pgtle function with a script's whole text (too long for an
# argument) as its BODY: $1 the role, $2 the database, $3 the call, $4 the script.
pgtle_call() {
    { printf '%s$pg_webhook_script$' "${3%%BODY*}"; cat "$4"; printf '$pg_webhook_script$%s;\n' "${3##*BODY}"; } \
        >"$work/call.sql"
    psql_as "$1" "$2" -f "$work/call.sql" >/dev/null
}
psql_as postgres postgres -c "create role pgwh_tle_installer login createrole"
rx_port=$(bash scripts/cluster.sh free-port)
for db in upgraded fresh; do
    psql_as postgres postgres -c "create database $db"
    psql_as postgres "$db" -c "create extension pg_tle"
    psql_as postgres postgres -c "grant create on database $db to pgwh_tle_installer"
    psql_as postgres "$db" -c "alter schema public owner to pgwh_tle_installer"
done
psql_as postgres postgres -c "grant pgtle_admin to pgwh_tle_installer"
sql() { psql_as pgwh_tle_installer "$@"; }

echo "== $current as a pg_tle extension, in use" >&2
pgtle_call pgwh_tle_installer upgraded \
    "select pgtle.install_extension('pg_webhook', '$current', 'Signed, retried, logged webhooks', BODY, schema => 'public')" \
    "$install_script"
sql upgraded -c "create extension pg_webhook" \
    -c "update webhook.settings set value = 'on' where name = 'allow_private_targets'"
secret=$(sql upgraded -At -c "select webhook._generate_secret()")
# Claimed by a worker that then stopped: its lease (a second) runs out.
sql upgraded >/dev/null <<SQL
select webhook_subscribe('http://127.0.0.1:$rx_port/webhooks', name => 'kept', secret => '$secret');
create table orders (id int primary key, note text);
select webhook_watch('orders', event_prefix => 'order');
insert into orders values (1, 'before');
select webhook_publish('order.noted', '{"n": 1}');
select count(*) from webhook._claim_deliveries('w01', 100, '1 second', 100, '{}', '{}', 1000, 1000000);
SQL
rows="select format('endpoint %s %s', id, url) from webhook.endpoints
      union all select format('secret %s %s', endpoint_id, md5(secret)) from webhook.endpoint_secrets
      union all select format('event %s %s %s', id, event_type, payload) from webhook.events
      union all select format('delivery %s %s %s %s', id, event_id, endpoint_id, status) from webhook.deliveries
      order by 1"
before=$(sql upgraded -At -c "$rows")
grep -q '^delivery ' <<<"$before" || { echo "pg-tle.sh: no delivery made before the update" >&2; exit 1; }

echo "== updated to $next through pgtle.install_update_path" >&2
pgtle_call pgwh_tle_installer upgraded \
    "select pgtle.install_update_path('pg_webhook', '$current', '$next', BODY)" "$step"
sql upgraded -c "alter extension pg_webhook update to '$next'"
got=$(sql upgraded -At -c "select extversion || ' ' || webhook._sql_flavor_version() || ' ' || webhook._rehearsal_next()
                           from pg_extension where extname = 'pg_webhook'")
[ "$got" = "$next $next 42" ] || { echo "pg-tle.sh: after the update: $got" >&2; exit 1; }
[ "$(sql upgraded -At -c "$rows")" = "$before" ] || { echo "pg-tle.sh: rows changed by the update" >&2; exit 1; }
members=$(psql_as postgres upgraded -At -c "
    select count(*) from pg_depend d
    where d.refobjid = (select oid from pg_extension where extname = 'pg_webhook') and d.deptype = 'e'
      and d.objid in ('webhook.rehearsal'::regclass, 'webhook._rehearsal_base()'::regprocedure,
                      'webhook._rehearsal_next()'::regprocedure)")
dumped=$(psql_as postgres upgraded -At -c "
    select 'webhook.rehearsal'::regclass = any (extconfig) from pg_extension where extname = 'pg_webhook'")
[ "$members $dumped" = "3 t" ] || { echo "pg-tle.sh: new objects' membership: $members, dumped: $dumped" >&2; exit 1; }

echo "== $next installed afresh, compared" >&2
pgtle_call pgwh_tle_installer fresh \
    "select pgtle.install_extension('pg_webhook', '$next', 'Signed, retried, logged webhooks', BODY, schema => 'public')" \
    "$next_install"
sql fresh -c "create extension pg_webhook"
for db in upgraded fresh; do
    psql_as postgres "$db" -At --record-separator-zero -f tests/catalog.sql | sort -z >"$work/$db.catalog"
done
if ! cmp -s "$work/upgraded.catalog" "$work/fresh.catalog"; then
    diff <(tr '\0' '\n' <"$work/upgraded.catalog") <(tr '\0' '\n' <"$work/fresh.catalog") >&2 || true
    echo "pg-tle.sh: the updated catalog differs from a fresh install" >&2
    exit 1
fi
echo "== the worker, after the update" >&2
psql_as postgres postgres -c "create role pgwh_tle_worker login in role webhook_worker"
"$PG_WEBHOOK_WORKER_BIN" listen --secret "$secret" --port "$rx_port" >"$work/received.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$work/received.log" && break; sleep 0.1; done
sql upgraded -c "insert into orders values (2, 'after')"
DATABASE_URL="postgres://pgwh_tle_worker@127.0.0.1:$port/upgraded" PG_WEBHOOK_ALLOW_PRIVATE_TARGETS=true \
    RUST_LOG=info "$PG_WEBHOOK_WORKER_BIN" >"$work/worker.log" 2>&1 &
pids+=($!)
done=0
for _ in $(seq 1 300); do
    done=$(sql upgraded -At -c "select count(*) from webhook.deliveries where status = 'succeeded'")
    [ "$done" = 3 ] && break
    sleep 0.1
done
[ "$done" = 3 ] || { echo "pg-tle.sh: $done of 3 deliveries done; worker log:" >&2; cat "$work/worker.log" >&2; exit 1; }
grep -q 'SQL (pg_tle extension)' "$work/worker.log" \
    || { echo "pg-tle.sh: the worker did not say its flavor:" >&2; cat "$work/worker.log" >&2; exit 1; }
for _ in $(seq 1 50); do [ "$(grep -c '^✔' "$work/received.log")" -ge 3 ] && break; sleep 0.1; done
[ "$(grep -c '^✔' "$work/received.log")" = 3 ] \
    || { echo "pg-tle.sh: the receiver verified:" >&2; cat "$work/received.log" >&2; exit 1; }

echo "pg-tle.sh: pg_tle $(psql_as postgres upgraded -At -c "select extversion from pg_extension where extname = 'pg_tle'"), PostgreSQL $major: $current installed, updated to $next in place, same catalog as a fresh install ($(tr -cd '\0' <"$work/fresh.catalog" | wc -c) objects); the worker (SQL (pg_tle extension)) delivered 3 events, verified"
