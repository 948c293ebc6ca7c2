#!/usr/bin/env bash
# The pg_webhook demo, from a fresh clone: installs what is missing, builds,
# installs the extension into the local PostgreSQL 15, starts a throwaway
# cluster, a receiver that verifies signatures and the worker; subscribes,
# watches a table, writes rows (one transaction rolled back), then prints what
# the receiver got and the delivery log. Cleans up after itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

bash scripts/setup.sh
echo "== building (release)"
cargo pgrx install --release -p pg_webhook --pg-config "$PG_CONFIG" >/dev/null
cargo build --release --quiet -p pg-webhook-worker

work=$(mktemp -d /tmp/pg_webhook-demo.XXXXXX)
free_port() { bash "$ROOT/scripts/cluster.sh" free-port; }
pg_port=$(free_port)
rx_port=$(free_port)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash "$ROOT/scripts/cluster.sh" stop "$work" || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "== starting PostgreSQL on 127.0.0.1:$pg_port"
bash scripts/cluster.sh start "$work" "$pg_port"
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
sql() { psql "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

echo "== creating the extension and subscribing the receiver (127.0.0.1:$rx_port)"
# The receiver is on loopback, which is refused by default (SSRF guard).
sql -c "alter database postgres set pg_webhook.allow_private_targets = on"
secret=$(sql -At -c "create extension pg_webhook" \
    -c "select signing_secret from webhook_subscribe('http://127.0.0.1:$rx_port/webhooks', array['order.*', 'invoice.*'], name => 'demo-receiver')")

# The receiver is the worker's own development receiver (`pg-webhook-worker
# listen`): it verifies each signature, timestamp and webhook-id.
./target/release/pg-webhook-worker listen --secret "$secret" --port "$rx_port" >"$work/received.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$work/received.log" && break; sleep 0.1; done
PG_WEBHOOK_ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn ./target/release/pg-webhook-worker 2>"$work/worker.log" &
pids+=($!)

echo "== writing rows"
sql <<'SQL'
create table orders (id int primary key, item text not null, qty int not null);
select webhook_watch('orders', event_prefix => 'order');
begin;
  insert into orders values (1, 'book', 1), (2, 'pen', 3);
commit;
update orders set qty = 2 where id = 1;
begin;
  insert into orders values (3, 'never sent', 1);   -- rolled back: no webhook
rollback;
select webhook_publish('invoice.paid', '{"invoice": "inv_42", "amount": 1999}');
SQL

echo "== waiting for the deliveries"
# Four events (two inserts, an update, a publish): the worker fans each out
# to the receiver and delivers it.
for _ in $(seq 1 100); do
    done=$(sql -At -c "select count(*) from webhook.deliveries where status = 'succeeded'")
    [ "$done" = 4 ] && break
    sleep 0.1
done
[ "$done" = 4 ] || { echo "deliveries still pending; worker log:"; cat "$work/worker.log"; exit 1; }
for _ in $(seq 1 50); do [ "$(grep -c '^✔' "$work/received.log")" -ge 4 ] && break; sleep 0.1; done
verified=$(grep -c '^✔' "$work/received.log" || true)
[ "$verified" = 4 ] || { echo "the receiver verified $verified of 4:"; cat "$work/received.log"; exit 1; }

echo
echo "== what the receiver got"
cat "$work/received.log"
echo
echo "== the delivery log (select … from webhook.delivery_log)"
sql -c "select delivery_id, message_id, event_type, endpoint_name, status, attempt_number, status_code,
               round(duration_ms::numeric, 1) as ms, started_at
        from webhook.delivery_log order by delivery_id, attempt_number"
echo "== done; cleaning up"
