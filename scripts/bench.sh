#!/usr/bin/env bash
# The pg_webhook benchmark: one command, from a fresh clone.
#
#   bash scripts/bench.sh [pg-webhook-bench flags, e.g. --runs 5 or --only drain,latency]
#
# Starts everything it needs on loopback (a throwaway PostgreSQL 15 cluster
# tuned like a small production box, durable: fsync and synchronous_commit on;
# an nginx sink answering 200), builds release binaries, runs the scenarios,
# stops everything, prints the table and writes results/latest.{json,md,svg}
# plus a dated JSON file.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# PG_MAJOR: the PostgreSQL major to measure (default 15; see scripts/postgres.sh).
PG_MAJOR=${PG_MAJOR:-15}
PG_CONFIG=${PG_CONFIG:-$(bash scripts/postgres.sh pg_config "$PG_MAJOR")}
PG_BIN=$(dirname "$PG_CONFIG")
export PG_BIN

PG_MAJORS=$PG_MAJOR bash scripts/setup.sh nginx-light postgresql-contrib
echo "== building (release)"
cargo pgrx install --release -p pg_webhook --pg-config "$PG_CONFIG" >/dev/null
cargo build --release --quiet -p pg-webhook-worker -p pg_webhook_bench
sql_script=$ROOT/$(bash scripts/package.sh --sql)   # the flavors scenario's SQL flavor

work=$(mktemp -d /tmp/pg_webhook-bench.XXXXXX)
free_port() { bash "$ROOT/scripts/cluster.sh" free-port; }
pg_port=$(free_port)
sink_port=$(free_port)
cleanup() {
    bash "$ROOT/scripts/sink.sh" stop "$work"
    bash "$ROOT/scripts/cluster.sh" stop "$work" || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== PostgreSQL on 127.0.0.1:$pg_port"
bash scripts/cluster.sh start "$work" "$pg_port" \
    "shared_buffers = 1GB" "effective_cache_size = 4GB" "work_mem = 16MB" \
    "maintenance_work_mem = 256MB" "wal_buffers = 16MB" "max_wal_size = 8GB" "min_wal_size = 1GB" \
    "checkpoint_timeout = 15min" "checkpoint_completion_target = 0.9" "random_page_cost = 1.1" \
    "synchronous_commit = on" "fsync = on" \
    "autovacuum_naptime = 10s" "autovacuum_vacuum_scale_factor = 0.05" "autovacuum_vacuum_cost_limit = 2000"

echo "== nginx sink on 127.0.0.1:$sink_port"
bash scripts/sink.sh start "$work" "$sink_port"

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD 2>/dev/null || commit="$commit-dirty"
./target/release/pg-webhook-bench \
    --dsn "host=127.0.0.1 port=$pg_port user=postgres dbname=postgres" \
    --sink "http://127.0.0.1:$sink_port/webhooks" \
    --worker-bin "$ROOT/target/release/pg-webhook-worker" --pgbench "$PG_BIN/pgbench" --sql-script "$sql_script" \
    --out "$ROOT/results" --commit "$commit" --command "bash scripts/bench.sh $*" "$@"
