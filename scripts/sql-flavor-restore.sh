#!/usr/bin/env bash
# Restores a pg_dump (custom or directory format) of a database that holds
# pg_webhook's SQL flavor, as a role that is no superuser: a managed
# service's administrator, the role that installed the SQL flavor.
#
#   bash scripts/sql-flavor-restore.sh DUMP TARGET [PG_RESTORE OPTIONS...]
#
# TARGET is the database to restore into (a name or a connection string,
# reached as the restoring role). Why not a plain `pg_restore`: the dump
# gives functions of the schema webhook to webhook_capture, webhook_filter
# and a backfill's asking role, and a role that is no superuser may only
# give a function to a role with CREATE on its schema, which pg_webhook
# grants those roles for the one ALTER and takes back (code running as
# them could otherwise put a function where pg_webhook's calls would find
# it): the dump holds no such grant. So this restores the schema webhook
# first, grants CREATE on it to those functions' owners, restores the rest
# with `--exit-on-error`, and takes the right back, whatever happened.
# The roles must exist in the target's cluster (pg_dump never carries
# roles; `pg_dumpall --roles-only`, or the SQL flavor installed into any
# database of it, makes them), and the restoring role must be a member of
# each with SET and INHERIT (to give them the functions, then comment and
# grant as their owner), as the installer is of webhook_capture and
# webhook_filter, and of an asking role it makes backfills for.
# PG_BIN names the directory of pg_restore and psql (default: the PATH's).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 DUMP TARGET [PG_RESTORE OPTIONS...]" >&2
    exit 2
fi
dump=$1 target=$2
shift 2
bin=${PG_BIN:+$PG_BIN/}
toc=$(mktemp)
granted=()

# Runs SQL (stdin) in TARGET with :"role" / :'role' set to $1.
sql() {
    "${bin}psql" -X -q -At -v ON_ERROR_STOP=1 -d "$target" -v role="$1"
}
finish() {
    local role
    for role in "${granted[@]}"; do
        sql "$role" <<<'revoke create on schema webhook from :"role"' || true
    done
    rm -f "$toc" "$toc.schema" "$toc.rest"
}
trap finish EXIT

"${bin}pg_restore" -l "$dump" >"$toc"
schema='^[0-9]+; [0-9]+ [0-9]+ SCHEMA - webhook '
if ! grep -E "$schema" "$toc" >"$toc.schema"; then
    echo "$dump holds no schema webhook: restore it with pg_restore" >&2
    exit 1
fi
grep -vE "$schema" "$toc" >"$toc.rest"
"${bin}pg_restore" --exit-on-error -L "$toc.schema" -d "$target" "$@" "$dump"

# The owners of the schema's functions (the last word of their lines)
# that may not create in it yet; has_schema_privilege fails on a missing
# role.
owners=$(sed -nE 's/^[0-9]+; [0-9]+ [0-9]+ FUNCTION webhook .* ([^ ]+)$/\1/p' "$toc" | sort -u)
for role in $(sql "$owners" <<'SQL'
select r from pg_catalog.unnest(pg_catalog.string_to_array(:'role', E'\n')) r
where r operator(pg_catalog.<>) '' and not pg_catalog.has_schema_privilege(r, 'webhook', 'CREATE');
SQL
); do
    sql "$role" <<<'grant create on schema webhook to :"role"'
    granted+=("$role")
done
"${bin}pg_restore" --exit-on-error -L "$toc.rest" -d "$target" "$@" "$dump"
