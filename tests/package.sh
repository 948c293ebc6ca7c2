#!/usr/bin/env bash
# The release tarball, installed into a clean prefix and used the demo's way.
#
# The prefix is a copy of Debian's PostgreSQL 15 (its programs find share/
# and lib/ relative to themselves) with nothing of pg_webhook in it; the
# tarball is extracted over it. Then, with only what the tarball installed:
# a throwaway cluster, CREATE EXTENSION, `pg-webhook-worker listen` as the
# receiver, a watched table and a publish, the worker, and the deliveries
# checked verified by the receiver and succeeded in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

tarball=$(bash scripts/package.sh)
echo "== installing $tarball into a clean prefix"
prefix=$(mktemp -d /tmp/pg_webhook-prefix.XXXXXX)
chmod 755 "$prefix"
work=$(mktemp -d /tmp/pg_webhook-package.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PG_BIN="$prefix/usr/lib/postgresql/15/bin" bash "$ROOT/scripts/cluster.sh" stop "$work" || true
    rm -rf "$prefix" "$work"
}
trap cleanup EXIT
mkdir -p "$prefix/usr/lib/postgresql" "$prefix/usr/share/postgresql"
cp -a /usr/lib/postgresql/15 "$prefix/usr/lib/postgresql/"
cp -a /usr/share/postgresql/15 "$prefix/usr/share/postgresql/"
rm -f "$prefix"/usr/lib/postgresql/15/lib/pg_webhook.so "$prefix"/usr/share/postgresql/15/extension/pg_webhook*
tar -xzf "$tarball" -C "$prefix"
for f in usr/bin/pg-webhook-worker usr/lib/postgresql/15/lib/pg_webhook.so \
         usr/share/postgresql/15/extension/pg_webhook.control \
         usr/share/postgresql/15/extension/pg_webhook--0.1.0--0.2.0.sql \
         usr/share/postgresql/15/extension/pg_webhook--0.2.0--0.3.0.sql \
         usr/lib/systemd/system/pg-webhook-worker.service etc/pg-webhook-worker/worker.env.example \
         usr/share/doc/pg-webhook/production.md; do
    [ -e "$prefix/$f" ] || { echo "the tarball lacks $f" >&2; exit 1; }
done
[ "$("$prefix/usr/lib/postgresql/15/bin/pg_config" --sharedir)" = "$prefix/usr/share/postgresql/15" ]

echo "== the demo's path, with the installed files only"
pg_port=$(bash scripts/cluster.sh free-port)
rx_port=$(bash scripts/cluster.sh free-port)
PG_BIN="$prefix/usr/lib/postgresql/15/bin" bash scripts/cluster.sh start "$work" "$pg_port"
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
sql() { "$prefix/usr/lib/postgresql/15/bin/psql" "$DATABASE_URL" -X -q -v ON_ERROR_STOP=1 "$@"; }
sql -c "alter database postgres set pg_webhook.allow_private_targets = on"
secret=$(sql -At -c "create extension pg_webhook" -c "select webhook._generate_secret()")
"$prefix/usr/bin/pg-webhook-worker" listen --secret "$secret" --port "$rx_port" >"$work/received.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q "listening on" "$work/received.log" && break; sleep 0.1; done
sql <<SQL
select * from webhook_subscribe('http://127.0.0.1:$rx_port/webhooks', secret => '$secret');
create table orders (id int primary key, item text);
select webhook_watch('orders', event_prefix => 'order');
insert into orders values (1, 'book'), (2, 'pen');
select webhook_publish('invoice.paid', '{"invoice": "inv_1"}');
SQL
PG_WEBHOOK_ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn "$prefix/usr/bin/pg-webhook-worker" 2>"$work/worker.log" &
pids+=($!)
done=0
for _ in $(seq 1 200); do
    done=$(sql -At -c "select count(*) from webhook.deliveries where status = 'succeeded'")
    [ "$done" = 3 ] && break
    sleep 0.1
done
[ "$done" = 3 ] || { echo "deliveries not done ($done of 3); worker log:" >&2; cat "$work/worker.log" >&2; exit 1; }
for _ in $(seq 1 50); do [ "$(grep -c '^✔' "$work/received.log")" -ge 3 ] && break; sleep 0.1; done
verified=$(grep -c '^✔' "$work/received.log" || true)
[ "$verified" = 3 ] || { echo "the receiver verified $verified of 3:" >&2; cat "$work/received.log" >&2; exit 1; }
echo "== the tarball installs and delivers: 3 deliveries verified by pg-webhook-worker listen"
