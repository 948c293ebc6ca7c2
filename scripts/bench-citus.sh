#!/usr/bin/env bash
# pg_webhook on a Citus cluster, measured by hand where Citus is installed
# for Debian's PostgreSQL 15 (citus.so; Citus is in no registry this project
# installs from: build it from its source, see docs/production.md).
#
#   bash scripts/bench-citus.sh [SECONDS per capture run, default 15] [EVENTS to drain, default 20000]
#
# On loopback, all on this machine: a coordinator and two worker nodes
# (durable: fsync and synchronous_commit on), an nginx sink answering 200.
#   capture: pgbench INSERTs of one row into a distributed table through the
#            coordinator, the table watched and an identical one not, at 2
#            and 16 clients (the ratio is the figure: rates move between
#            machines);
#   drain:   EVENTS events captured across the nodes while no worker runs,
#            then one worker per node until every delivery has succeeded;
#            the same on one plain PostgreSQL with one worker.
# Prints the figures and writes results/citus-<date>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SECONDS_PER_RUN=${1:-15}
EVENTS=${2:-20000}
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
export PG_BIN=/usr/lib/postgresql/15/bin
if [ ! -f "$($PG_CONFIG --pkglibdir)/citus.so" ]; then
    echo "bench-citus: citus.so is not installed for $($PG_CONFIG --version); see docs/production.md" >&2
    exit 2
fi
bash scripts/setup.sh nginx-light postgresql-contrib >/dev/null
echo "== building (release)"
cargo pgrx install --release -p pg_webhook --pg-config "$PG_CONFIG" >/dev/null
cargo build --release --quiet -p pg-webhook-worker
WORKER=$ROOT/target/release/pg-webhook-worker

work=$(mktemp -d /tmp/pg_webhook-citus.XXXXXX)
chmod 755 "$work"
free_port() { bash scripts/cluster.sh free-port; }
names=(coordinator node1 node2 single)
declare -A port
for n in "${names[@]}"; do port[$n]=$(free_port); done
sink_port=$(free_port)
cleanup() {
    pkill -f "$WORKER" 2>/dev/null || true
    bash "$ROOT/scripts/sink.sh" stop "$work"
    for n in "${names[@]}"; do bash scripts/cluster.sh stop "$work/$n" || true; done
    rm -rf "$work"
}
trap cleanup EXIT

settings=("shared_buffers = 1GB" "max_wal_size = 8GB" "checkpoint_timeout = 15min" "synchronous_commit = on"
          "fsync = on" "max_prepared_transactions = 200" "wal_level = logical")
for n in coordinator node1 node2; do
    bash scripts/cluster.sh start "$work/$n" "${port[$n]}" "${settings[@]}" \
        "shared_preload_libraries = 'citus'" "citus.enable_statistics_collection = off"
done
bash scripts/cluster.sh start "$work/single" "${port[single]}" "${settings[@]}"
psql_on() { psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${port[$1]}" -U postgres -d postgres "${@:2}"; }
start_worker() { # node log-name: a worker on that node, in the background
    PG_WEBHOOK_ALLOW_PRIVATE_TARGETS=true "$WORKER" \
        --database-url "host=127.0.0.1 port=${port[$1]} user=postgres dbname=postgres" >"$work/$2-$1.log" 2>&1 &
}

bash scripts/sink.sh start "$work" "$sink_port"

for n in coordinator node1 node2; do
    psql_on "$n" -c "create extension citus" -c "alter database postgres set pg_webhook.allow_private_targets = on"
done
psql_on single -c "alter database postgres set pg_webhook.allow_private_targets = on"
psql_on coordinator -c "select citus_set_coordinator_host('127.0.0.1', ${port[coordinator]})" \
    -c "select citus_add_node('127.0.0.1', ${port[node1]})" -c "select citus_add_node('127.0.0.1', ${port[node2]})" >/dev/null
schema="create extension pg_webhook;
create table orders (id bigint, total int);
create table plain_orders (id bigint, total int);"
psql_on coordinator -c "$schema" -c "select webhook_cluster_enable()" \
    -c "select create_distributed_table('orders', 'id')" -c "select create_distributed_table('plain_orders', 'id')" \
    -c "select webhook_watch('orders')" \
    -c "select webhook_subscribe('http://127.0.0.1:$sink_port/hook')" >/dev/null
psql_on single -c "$schema" -c "select webhook_watch('orders')" \
    -c "select webhook_subscribe('http://127.0.0.1:$sink_port/hook')" >/dev/null

tps() { # table clients
    echo "\set id random(1, 1000000000)
insert into $1 values (:id, 1);" >"$work/insert.sql"
    "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "${port[coordinator]}" -U postgres -c "$2" -j 2 -T "$SECONDS_PER_RUN" \
        -f "$work/insert.sql" postgres 2>/dev/null | awk '/^tps/ {print int($3)}'
}
report=()
say() { echo "$1"; report+=("$1"); }
say "# pg_webhook on Citus: $(date -u +%Y-%m-%d), commit $(git rev-parse --short HEAD), $(nproc) cores"
say ""
say "Coordinator and two worker nodes on one machine (PostgreSQL $($PG_CONFIG --version | awk '{print $2}'), Citus $(psql_on coordinator -Atc "select extversion from pg_extension where extname = 'citus'")); \`bash scripts/bench-citus.sh $SECONDS_PER_RUN $EVENTS\`."
say ""
# Drain first: events captured with no worker running, then the workers start.
drain() { # name of a target: citus or single
    local nodes
    if [ "$1" = citus ]; then nodes=(node1 node2); else nodes=(single); fi
    local target=coordinator
    [ "$1" = single ] && target=single
    psql_on "$target" -c "insert into orders select g, 1 from generate_series(1, $EVENTS) g" >/dev/null
    local start end done_count
    start=$(date +%s.%N)
    for n in "${nodes[@]}"; do start_worker "$n" drain; done
    while :; do
        done_count=0
        for n in "${nodes[@]}"; do
            done_count=$((done_count + $(psql_on "$n" -Atc "select count(*) from webhook.deliveries where status = 'succeeded'")))
        done
        [ "$done_count" -ge "$EVENTS" ] && break
        sleep 0.2
    done
    end=$(date +%s.%N)
    pkill -f "$WORKER" || true
    awk -v s="$start" -v e="$end" -v n="$EVENTS" 'BEGIN { printf "%d", n / (e - s) }'
}
single=$(drain single)
citus=$(drain citus)
say ""
say "| drain of $EVENTS events | deliveries/s |"
say "|---|---:|"
say "| one plain PostgreSQL, one worker | $single |"
say "| Citus, one worker on each of 2 nodes | $citus |"
say "| ratio | $(awk -v a="$citus" -v b="$single" 'BEGIN { printf "%.2f", a / b }') |"

# Wake-up at COMMIT PREPARED: transactions that each write one row on each
# node (two-phase commit), one worker per node already idle; from the
# commit (the coordinator's clock, after COMMIT returned) to the attempt's
# start on the node (same machine, same clock). The poll alone would take
# up to the 1 s poll interval.
for n in node1 node2; do start_worker "$n" wake; done
pick() { # node: 20 ids from 1,000,000 on whose shard that node holds
    psql_on coordinator -Atc "select g from generate_series(1000000, 1001000) g
        where (select p.nodeport from pg_dist_shard_placement p
               where p.shardid = get_shard_id_for_distribution_column('orders', g)) = ${port[$1]}
        order by g limit 20"
}
mapfile -t on1 < <(pick node1)
mapfile -t on2 < <(pick node2)
sleep 2 # the workers connect, drain what the capture runs left (nothing: they ran after) and go idle
: >"$work/commits"
for i in $(seq 0 19); do
    t=$(psql_on coordinator -Atc "begin; insert into orders values (${on1[$i]}, 0), (${on2[$i]}, 0); commit;
        select extract(epoch from clock_timestamp())")
    echo "${on1[$i]} $t" >>"$work/commits"
    echo "${on2[$i]} $t" >>"$work/commits"
    sleep 0.6 # apart, past the 200 ms a worker keeps polling after work: each finds them idle
done
: >"$work/sends"
for n in node1 node2; do
    until [ "$(psql_on "$n" -Atc "select count(*) from webhook.events e join webhook.deliveries d
                  on d.event_slot = e.slot and d.event_txid = e.txid and d.event_id = e.id
                  where d.status = 'succeeded' and (e.payload->'new'->>'id')::bigint >= 1000000")" = 20 ]; do
        sleep 0.1
    done
    psql_on "$n" -Atc "select (e.payload->'new'->>'id'), extract(epoch from min(a.started_at))
        from webhook.attempts a join webhook.deliveries d on d.id = a.delivery_id and d.endpoint_id = a.endpoint_id
        join webhook.events e on e.slot = d.event_slot and e.txid = d.event_txid and e.id = d.event_id
        where (e.payload->'new'->>'id')::bigint >= 1000000 group by 1" -F ' ' >>"$work/sends"
done
pkill -f "$WORKER" || true
median_ms=$(awk 'NR == FNR { c[$1] = $2; next } ($1 in c) { print ($2 - c[$1]) * 1000 }' "$work/commits" "$work/sends" \
    | sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "none"; else printf "%.1f (%d events, max %.1f)", v[int((NR + 1) / 2)], NR, v[NR] }')
say ""
say "| commit (two-phase, both nodes) to the send on each node | ms, median |"
say "|---|---:|"
say "| 20 transactions, one row on each node | $median_ms |"
say ""
# Capture after the drain: the events it makes are never sent (no worker runs).
say "| capture through the coordinator | not watched (tx/s) | watched (tx/s) | share |"
say "|---|---:|---:|---:|"
for clients in 2 16; do
    plain=$(tps plain_orders "$clients")
    watched=$(tps orders "$clients")
    say "| $clients clients | $plain | $watched | $(awk -v a="$watched" -v b="$plain" 'BEGIN { printf "%.2f", a / b }') |"
done

mkdir -p results
printf '%s\n' "${report[@]}" >"results/citus-$(date -u +%Y%m%d).md"
echo "(written to results/citus-$(date -u +%Y%m%d).md)"
