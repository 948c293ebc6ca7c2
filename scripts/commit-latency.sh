#!/usr/bin/env bash
# The disk's share of commit-to-receipt latency: the commit latency of a
# plain single-row INSERT (no pg_webhook) at the latency scenario's rates
# (100/s and 1,000/s, 4 clients, 10 s each), on a throwaway cluster with
# the benchmark's settings. Prints p50, p99 and max per rate.
#
#   bash scripts/commit-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
work=$(mktemp -d /tmp/pg_webhook-commit.XXXXXX)
port=$(bash scripts/cluster.sh free-port)
trap 'bash "$ROOT/scripts/cluster.sh" stop "$work" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
bash scripts/cluster.sh start "$work" "$port" \
    "shared_buffers = 1GB" "effective_cache_size = 4GB" "work_mem = 16MB" \
    "maintenance_work_mem = 256MB" "wal_buffers = 16MB" "max_wal_size = 8GB" "min_wal_size = 1GB" \
    "checkpoint_timeout = 15min" "checkpoint_completion_target = 0.9" "random_page_cost = 1.1" \
    "synchronous_commit = on" "fsync = on" >/dev/null
psql -q -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c "create table commit_latency (id bigserial primary key, payload text)"
echo "insert into commit_latency (payload) values (repeat('x', 200));" >"$work/insert.sql"
chmod -R a+rwX "$work"
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
for rate in 100 1000; do
    (cd "$work" && as_owner "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c 4 -j 2 -R "$rate" -T 10 \
        -f "$work/insert.sql" --log --log-prefix="$work/rate$rate" postgres >/dev/null 2>&1)
    # Field 3 of pgbench's per-transaction log: its duration in µs.
    cat "$work"/rate"$rate".* | awk '{print $3 / 1000}' | sort -n |
        awk -v r="$rate" '{a[NR] = $1} END {printf "plain INSERT commit at %d/s: %d transactions, p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", r, NR, a[int(NR * 0.5)], a[int(NR * 0.99)], a[NR]}'
done
