#!/usr/bin/env bash
# A rehearsal of the next release, for the SQL flavor's upgrade step while
# there is no real one (0.3.0 is its first release; the first step is
# 0.3.0 → 0.4.0). Makes the next release's sources from the current ones
# with the kinds of change a release brings, each written as a release
# writes it: in the sources (install.sql appended to
# sql/install/17_grants.sql, plain.sql to sql/plain/40_capture.sql) and as
# the hunks of the two steps (extension-step.sql, plain-step.sql); then
# builds its install and the SQL flavor's step to it
# (scripts/sql-flavor.sh, scripts/sql-flavor-step.sh).
#
#   bash tests/rehearsal/build.sh DIR   # prints the next install's path, then the step's
#
# The next release's version is the current one with -rehearsal. Used by
# tests/e2e/sql_flavor_upgrade.rs and tests/pg-tle.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
dir=${1:?usage: build.sh DIR}
case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
current=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)
next="$current-rehearsal"
rm -rf "$dir/sql" "$dir/out"
mkdir -p "$dir/sql"
cp -r "$root/sql/install" "$root/sql/plain" "$dir/sql/"
{ echo; cat "$here/install.sql"; } >>"$dir/sql/install/17_grants.sql"
{ echo; cat "$here/plain.sql"; } >>"$dir/sql/plain/40_capture.sql"
mkdir -p "$dir/sql/plain/upgrade"
cp "$here/plain-step.sql" "$dir/sql/plain/upgrade/pg_webhook--$current--$next.sql"
cp "$here/extension-step.sql" "$dir/sql/pg_webhook--$current--$next.sql"
export PG_WEBHOOK_SQL_SOURCES="$dir/sql" PG_WEBHOOK_SQL_VERSION="$next" PG_WEBHOOK_SQL_OUT="$dir/out"
bash "$root/scripts/sql-flavor.sh"
step=$(bash "$root/scripts/sql-flavor-step.sh")
[ -n "$step" ] || { echo "build.sh: no step from $current to $next" >&2; exit 1; }
echo "$step"
