# Sourced by scripts/sql-flavor.sh and scripts/sql-flavor-step.sh: where
# the SQL flavor's scripts are built from and into, and for which version.
# PG_WEBHOOK_SQL_SOURCES (default sql), PG_WEBHOOK_SQL_VERSION (default
# Cargo.toml's) and PG_WEBHOOK_SQL_OUT (default target/package) build from
# other sources (tests/rehearsal/build.sh, a rehearsal of a next release);
# relative paths are the caller's. Leaves the shell in the repository's
# root, with $sources, $out_dir (made) and $version set.
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
sources=${PG_WEBHOOK_SQL_SOURCES:+$(absolute "$PG_WEBHOOK_SQL_SOURCES")}
out_dir=${PG_WEBHOOK_SQL_OUT:+$(absolute "$PG_WEBHOOK_SQL_OUT")}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
sources=${sources:-sql}
out_dir=${out_dir:-target/package}
version=${PG_WEBHOOK_SQL_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
mkdir -p "$out_dir"
