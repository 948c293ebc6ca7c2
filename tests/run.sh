#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine:
#   1. set-up (apt packages, cargo-pgrx, the PostgreSQL majors, pgrx init)
#      when missing;
#   2. unit tests (protocol, worker: no database);
#   then for each PostgreSQL major in PG_MAJORS (default: every supported
#   one, 15 16 17 18; PG_MAJORS=17 for a quicker local run):
#   3. #[pg_test]s inside PostgreSQL (cargo pgrx test);
#   4. end-to-end tests: a throwaway cluster on 127.0.0.1, the extension
#      installed from this tree, the real worker, real HTTP receivers, the
#      upgrade chain;
#   5. the release tarball and the Debian packages, each installed into a
#      root holding only that major's server, then used the demo's way;
#   then 6. the end-to-end tests again against the SQL flavor (no library,
#   no superuser: tests/sql-flavor.sh), on 17 (or the last major tested);
#   and last, 7. across majors: a database in use on 15 moved to 17 and 18
#   with pg_upgrade, and dumped into 18 (tests/majors).
# Runs from the workspace root, where cargo-pgrx finds ./sql/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PG_MAJORS=${PG_MAJORS:-$(bash scripts/postgres.sh majors)}
export PG_MAJORS

# Each layer's time, printed as it ends and summed up at the end.
timings=()
layer_start=$SECONDS
layer() {
    local now=$SECONDS
    if [ -n "${layer_name:-}" ]; then
        timings+=("$(printf '%-62s %4d s' "$layer_name" $((now - layer_start)))")
        echo "-- $layer_name: $((now - layer_start)) s"
    fi
    layer_name=$1
    layer_start=$now
    [ -n "$1" ] && echo "== $1"
    return 0
}

layer "set-up (packages, cargo-pgrx)"
bash scripts/setup.sh pgbouncer chromium curl openssl

layer "example receivers (Python and Node, official Standard Webhooks packages)"
# Sets up their dependencies (a venv, npm ci) and checks them on their own;
# the end-to-end tests then drive real deliveries through them.
bash examples/check.sh

layer "unit tests"
cargo test --quiet

cargo build --quiet -p pg-webhook-worker
export PG_WEBHOOK_WORKER_BIN="$ROOT/target/debug/pg-webhook-worker"
# The SQL flavor's script: the extension's end-to-end tests compare it with
# the extension and move a database from it to the extension.
PG_WEBHOOK_SQL_SCRIPT="$ROOT/$(bash scripts/package.sh --sql)"
export PG_WEBHOOK_SQL_SCRIPT
work=""
cleanup() {
    if [ -n "$work" ]; then
        PG_BIN="$pg_bin" bash "$ROOT/scripts/cluster.sh" stop "$work" || true
        rm -rf "$work"
    fi
}
trap cleanup EXIT

for major in $PG_MAJORS; do
    pg_config=$(bash scripts/postgres.sh pg_config "$major")
    pg_bin=$(dirname "$pg_config")
    export PG_BIN=$pg_bin

    layer "PostgreSQL $major: #[pg_test] (inside PostgreSQL)"
    if [ "$(id -u)" = 0 ]; then
        pgrx_dir=$(mktemp -d /tmp/pg_webhook-pgrx-test.XXXXXX)
        chown postgres "$pgrx_dir"
        CARGO_PGRX_TEST_RUNAS=postgres CARGO_PGRX_TEST_PGDATA="$pgrx_dir/data" \
            cargo pgrx test -p pg_webhook "pg$major"
        rm -rf "$pgrx_dir"
    else
        cargo pgrx test -p pg_webhook "pg$major"
    fi

    layer "PostgreSQL $major: end-to-end"
    # The pg_test build installed a library with test functions; install the
    # real one, and the frozen install scripts of the released versions
    # beside it for the upgrade tests.
    cargo pgrx install -p pg_webhook --pg-config "$pg_config" >/dev/null
    ext_dir="$("$pg_config" --sharedir)/extension"
    if [ -w "$ext_dir" ]; then
        cp tests/fixtures/pg_webhook--*.sql "$ext_dir/"
    else
        sudo cp tests/fixtures/pg_webhook--*.sql "$ext_dir/"
    fi
    work=$(mktemp -d /tmp/pg_webhook-e2e.XXXXXX)
    port=$(bash scripts/cluster.sh free-port)
    bash scripts/cluster.sh start "$work" "$port" "fsync = off" "max_prepared_transactions = 10"
    PG_WEBHOOK_TEST_DSN="host=127.0.0.1 port=$port user=postgres dbname=postgres" \
        cargo test -p pg_webhook_tests -- --skip sql_only
    cleanup
    work=""

    # Packaged from the dev profile's build (cached by the tests above): the
    # same files, laid out and installed the same way, without the release
    # builds' four minutes (which keeps a fresh machine's CI under 25
    # minutes). `bash tests/package.sh <major>` alone tests the release build.
    layer "PostgreSQL $major: the tarball and Debian packages (dev build), installed and used"
    PG_WEBHOOK_PACKAGE_PROFILE=debug bash tests/package.sh "$major"
done

# The SQL flavor: the same end-to-end suite, on a copy of one major's
# server without pg_webhook's files, installed by a role that is no
# superuser (tests/sql-flavor.sh).
sql_major=17
[[ " $PG_MAJORS " == *" 17 "* ]] || sql_major=${PG_MAJORS##* }
layer "PostgreSQL $sql_major: end-to-end, SQL flavor (no library, no superuser)"
bash tests/sql-flavor.sh "$sql_major"

# pg_upgrade from 15 to 17 and to 18, and a dump of 15 restored into 18,
# when those majors were tested above (their extension is installed).
upgrade_majors="" upgrade_to=""
for major in 17 18; do
    if [[ " $PG_MAJORS " == *" $major "* ]]; then
        upgrade_majors+=" $major"
        upgrade_to+=" $(bash scripts/postgres.sh bin "$major")"
    fi
done
if [[ " $PG_MAJORS " == *" 15 "* ]] && [ -n "$upgrade_to" ]; then
    layer "across majors: 15 pg_upgraded to$upgrade_majors, dumped and restored"
    # PyPI's 15 (Debian's 15.20 cannot be pg_upgraded to PyPI's 18), with
    # the extension built above for Debian's 15: one major, one ABI.
    from=$(bash scripts/postgres.sh bin 15-pypi)
    debian_15=$(bash scripts/postgres.sh pg_config 15)
    cp "$("$debian_15" --pkglibdir)/pg_webhook.so" "$("$from/pg_config" --pkglibdir)/"
    cp "$("$debian_15" --sharedir)"/extension/pg_webhook* "$("$from/pg_config" --sharedir)/extension/"
    PG_WEBHOOK_UPGRADE_FROM=$from PG_WEBHOOK_UPGRADE_TO=$upgrade_to \
        cargo test -p pg_webhook_tests --test majors
fi

layer ""
printf '%s\n' "${timings[@]}"
echo "== all tests passed in $SECONDS s"
