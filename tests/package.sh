#!/usr/bin/env bash
# The release packages of one PostgreSQL major (default 15), installed the
# way a user installs them and used the demo's way:
#
#   bash tests/package.sh [MAJOR]
#
# Each is installed into a root of its own holding only that major's server
# in the Debian/PGDG layout, with nothing of pg_webhook in it: for 15 a copy
# of Debian's own (/usr/lib/postgresql/15, /usr/share/postgresql/15); for
# 16-18, which Debian bookworm lacks, PyPI's build moved into the same
# paths (its programs find share/ next to bin/, so that is a link to
# usr/share/postgresql/<MAJOR>). The tarball is extracted over one root;
# the two Debian packages are installed into another by dpkg (--root, a
# dpkg database of its own). Then, with only what was installed: a
# throwaway cluster, CREATE EXTENSION, `pg-webhook-worker listen` as the
# receiver, a watched table and a publish, the worker, and the deliveries
# checked verified by the receiver and succeeded in the log.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
major=${1:-15}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

list=$(mktemp)
bash scripts/package.sh --deb "$major" >"$list"
mapfile -t built <"$list"
rm -f "$list"
tarball=${built[0]} ext_deb=${built[1]} worker_deb=${built[2]}

roots=() pids=() works=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for i in "${!works[@]}"; do
        PG_BIN="${roots[$i]}/usr/lib/postgresql/$major/bin" bash "$ROOT/scripts/cluster.sh" stop "${works[$i]}" || true
    done
    rm -rf "${roots[@]}" "${works[@]}"
}
trap cleanup EXIT

# A new root (in $root) with the major's server in the PGDG layout and no
# pg_webhook.
server_root() {
    root=$(mktemp -d /tmp/pg_webhook-root.XXXXXX)
    roots+=("$root")
    chmod 755 "$root"
    mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql"
    if [ "$major" = 15 ]; then
        cp -a /usr/lib/postgresql/15 "$root/usr/lib/postgresql/"
        cp -a /usr/share/postgresql/15 "$root/usr/share/postgresql/"
    else
        local prefix
        prefix=$(dirname "$(bash scripts/postgres.sh bin "$major")")
        cp -a "$prefix" "$root/usr/lib/postgresql/$major"
        mv "$root/usr/lib/postgresql/$major/share" "$root/usr/share/postgresql/$major"
        ln -s "../../../share/postgresql/$major" "$root/usr/lib/postgresql/$major/share"
    fi
    rm -f "$root/usr/lib/postgresql/$major/lib/pg_webhook.so" "$root/usr/share/postgresql/$major/extension/"pg_webhook*
    [ "$("$root/usr/lib/postgresql/$major/bin/pg_config" --pkglibdir)" -ef "$root/usr/lib/postgresql/$major/lib" ]
    [ "$("$root/usr/lib/postgresql/$major/bin/pg_config" --sharedir)" -ef "$root/usr/share/postgresql/$major" ]
}

# The demo's path with what `root` holds.
demo() {
    local root=$1 what=$2 bin="$1/usr/lib/postgresql/$major/bin" work pg_port rx_port secret
    for f in usr/bin/pg-webhook-worker usr/lib/postgresql/$major/lib/pg_webhook.so \
             usr/share/postgresql/$major/extension/pg_webhook.control \
             usr/share/postgresql/$major/extension/pg_webhook--0.1.0--0.2.0.sql \
             usr/share/postgresql/$major/extension/pg_webhook--0.2.0--0.3.0.sql \
             usr/lib/systemd/system/pg-webhook-worker.service etc/pg-webhook-worker/worker.env.example \
             usr/share/doc/pg-webhook/production.md; do
        [ -e "$root/$f" ] || { echo "$what lacks $f" >&2; exit 1; }
    done
    work=$(mktemp -d /tmp/pg_webhook-package.XXXXXX)
    works+=("$work")
    pg_port=$(bash scripts/cluster.sh free-port)
    rx_port=$(bash scripts/cluster.sh free-port)
    PG_BIN="$bin" bash scripts/cluster.sh start "$work" "$pg_port"
    local url="postgres://postgres@127.0.0.1:$pg_port/postgres"
    sql() { "$bin/psql" "$url" -X -q -v ON_ERROR_STOP=1 "$@"; }
    sql -c "alter database postgres set pg_webhook.allow_private_targets = on"
    secret=$(sql -At -c "create extension pg_webhook" -c "select webhook._generate_secret()")
    "$root/usr/bin/pg-webhook-worker" listen --secret "$secret" --port "$rx_port" >"$work/received.log" &
    pids+=($!)
    for _ in $(seq 1 100); do grep -q "listening on" "$work/received.log" && break; sleep 0.1; done
    sql >/dev/null <<SQL
select * from webhook_subscribe('http://127.0.0.1:$rx_port/webhooks', secret => '$secret');
create table orders (id int primary key, item text);
select webhook_watch('orders', event_prefix => 'order');
insert into orders values (1, 'book'), (2, 'pen');
select webhook_publish('invoice.paid', '{"invoice": "inv_1"}');
SQL
    DATABASE_URL=$url PG_WEBHOOK_ALLOW_PRIVATE_TARGETS=true RUST_LOG=warn \
        "$root/usr/bin/pg-webhook-worker" 2>"$work/worker.log" &
    pids+=($!)
    local done=0
    for _ in $(seq 1 200); do
        done=$(sql -At -c "select count(*) from webhook.deliveries where status = 'succeeded'")
        [ "$done" = 3 ] && break
        sleep 0.1
    done
    [ "$done" = 3 ] || { echo "$what: deliveries not done ($done of 3); worker log:" >&2; cat "$work/worker.log" >&2; exit 1; }
    for _ in $(seq 1 50); do [ "$(grep -c '^✔' "$work/received.log")" -ge 3 ] && break; sleep 0.1; done
    local verified
    verified=$(grep -c '^✔' "$work/received.log" || true)
    [ "$verified" = 3 ] || { echo "$what: the receiver verified $verified of 3:" >&2; cat "$work/received.log" >&2; exit 1; }
    echo "== $what installs and delivers on PostgreSQL $major: 3 deliveries verified by pg-webhook-worker listen"
}

echo "== installing $tarball"
server_root
tar -xzf "$tarball" -C "$root"
demo "$root" "the tarball"

echo "== installing $(basename "$ext_deb") and $(basename "$worker_deb") with dpkg"
server_root
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
# --force-depends: the server in this root is not a dpkg package (dpkg
# says so for each dependency: shown only if the install fails).
dpkg --root="$root" --force-depends --force-not-root --log=/dev/null -i "$ext_deb" "$worker_deb" \
    >"$root/dpkg.out" 2>&1 || { cat "$root/dpkg.out" >&2; exit 1; }
dpkg --root="$root" -s "postgresql-$major-pg-webhook" | grep -q "^Version: $version-1$"
demo "$root" "the Debian packages"
