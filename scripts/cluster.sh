#!/usr/bin/env bash
# Throwaway PostgreSQL cluster on loopback, for tests, the demo and benchmarks
# (PG_BIN: the directory of its programs; default Debian's PostgreSQL 15).
#
#   scripts/cluster.sh start DIR PORT [extra postgresql.conf lines...]
#   scripts/cluster.sh init DIR PORT [...]   (the same, not started)
#   scripts/cluster.sh stop DIR
#   scripts/cluster.sh free-port     (prints a free TCP port on 127.0.0.1)
#
# PostgreSQL refuses to run as root, so as root the cluster belongs to the
# `postgres` OS user. It listens on 127.0.0.1:PORT and on a socket in DIR/sock,
# with trust authentication (loopback only), and logs to DIR/log.
set -euo pipefail

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:?usage: cluster.sh init|start|stop DIR [PORT] | free-port}
if [ "$cmd" = free-port ]; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    exit 0
fi
dir=${2:?usage: cluster.sh start|stop DIR [PORT]}

case "$cmd" in
init|start)
    port=${3:?usage: cluster.sh init|start DIR PORT}
    shift 3
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    # INITDB_OPTIONS: more initdb flags (e.g. --data-checksums).
    # shellcheck disable=SC2086
    as_owner "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync ${INITDB_OPTIONS:-} >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    as_owner mkdir -p "$dir/sock"
    {
        echo "listen_addresses = '127.0.0.1'"
        echo "port = $port"
        echo "unix_socket_directories = '$dir/sock'"
        echo "max_connections = 200"
        for line in "$@"; do echo "$line"; done
    } | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    # init: initialised and configured, not started (a pg_upgrade target).
    if [ "$cmd" = start ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >/dev/null \
            || { cat "$dir/log" >&2; exit 1; }
    fi
    ;;
stop)
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    fi
    ;;
*)
    echo "usage: cluster.sh init|start|stop DIR [PORT]" >&2
    exit 2
    ;;
esac
