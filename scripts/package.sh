#!/usr/bin/env bash
# Builds the release tarball: the extension for PostgreSQL 15 as `cargo pgrx
# package` lays it out (usr/lib/postgresql/15/lib, usr/share/postgresql/15/
# extension, with the upgrade scripts), the worker binary, its systemd unit
# and environment file, and the documentation, all under one root so that
# `tar -xzf … -C /` installs it.
#
#   bash scripts/package.sh     # prints the tarball's path (target/package/)
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bash scripts/setup.sh >&2
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(uname -m)
name="pg_webhook-$version-pg15-linux-$arch"
root="target/package/$name"
rm -rf "$root" && mkdir -p "$root"

echo "== building the extension (release)" >&2
cargo pgrx package -p pg_webhook --pg-config "$PG_CONFIG" --out-dir "$root" >&2
echo "== building the worker (release)" >&2
cargo build --release --quiet -p pg-webhook-worker
install -D -m 755 target/release/pg-webhook-worker "$root/usr/bin/pg-webhook-worker"
install -D -m 644 packaging/pg-webhook-worker.service "$root/usr/lib/systemd/system/pg-webhook-worker.service"
install -D -m 644 packaging/worker.env.example "$root/etc/pg-webhook-worker/worker.env.example"
install -D -m 644 README.md "$root/usr/share/doc/pg-webhook/README.md"
install -D -m 644 docs/production.md "$root/usr/share/doc/pg-webhook/production.md"
install -D -m 644 BENCHMARKS.md "$root/usr/share/doc/pg-webhook/BENCHMARKS.md"
cp -r examples "$root/usr/share/doc/pg-webhook/examples"
rm -rf "$root/usr/share/doc/pg-webhook/examples/node/node_modules" "$root/usr/share/doc/pg-webhook/examples/python/.venv"

tarball="target/package/$name.tar.gz"
tar -C "$root" --owner=0 --group=0 -czf "$tarball" .
echo "$tarball"
