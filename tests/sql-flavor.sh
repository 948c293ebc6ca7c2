#!/usr/bin/env bash
# The end-to-end suite against the SQL flavor (sql/plain/, README "Installing
# on a managed service"), as on a managed service: one PostgreSQL major
# (default 17), copied to a root of its own without pg_webhook's library or
# extension files; the script built by `bash scripts/package.sh --sql` and
# run by a role with CREATEROLE and CREATE on each test database, not a
# superuser; the worker logged in as a member of webhook_worker (see
# tests/src/flavor.rs). Tests named extension_only_… are skipped.
#
#   bash tests/sql-flavor.sh [MAJOR [TEST FILTERS...]]
#
# Run by tests/run.sh; needs the worker built (PG_WEBHOOK_WORKER_BIN) and
# the examples set up, as the extension's end-to-end run does.
set -euo pipefail
cd "$(dirname "$0")/.."
major=${1:-17}
shift || true
script=$(bash scripts/package.sh --sql)
bin=$(bash scripts/postgres.sh bin "$([ "$major" = 15 ] && echo 15-pypi || echo "$major")")
root=$(mktemp -d /tmp/pg_webhook-sql-flavor.XXXXXX)
work="$root/cluster"
cleanup() {
    PG_BIN="$root/pg/bin" bash scripts/cluster.sh stop "$work" >/dev/null 2>&1 || true
    rm -rf "$root"
}
trap cleanup EXIT
cp -a "$(dirname "$bin")" "$root/pg"
find "$root/pg" -name 'pg_webhook*' -delete
chmod 755 "$root"
export PG_BIN="$root/pg/bin"
port=$(bash scripts/cluster.sh free-port)
bash scripts/cluster.sh start "$work" "$port" "fsync = off" "max_prepared_transactions = 10"
PG_WEBHOOK_TEST_FLAVOR=sql PG_WEBHOOK_SQL_SCRIPT="$PWD/$script" \
    PG_WEBHOOK_TEST_DSN="host=127.0.0.1 port=$port user=postgres dbname=postgres" \
    cargo test -p pg_webhook_tests --test e2e -- --skip extension_only "$@"
