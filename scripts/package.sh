#!/usr/bin/env bash
# Builds the release packages for one PostgreSQL major (default 15):
#
#   bash scripts/package.sh [MAJOR]         # the tarball; prints its path
#   bash scripts/package.sh --deb [MAJOR]   # and the two Debian packages; prints the three paths
#   bash scripts/package.sh --sql           # the SQL flavor's install script (any major); prints its path
#                                           # (and its upgrade from the previous release beside it, if any)
#
# The tarball (target/package/pg_webhook-<version>-pg<MAJOR>-linux-<arch>.tar.gz)
# holds, under one root so that `tar -xzf … -C /` installs it: the
# extension in the Debian/PGDG layout (usr/lib/postgresql/<MAJOR>/lib,
# usr/share/postgresql/<MAJOR>/extension, upgrade scripts included), the
# worker binary, its systemd unit and environment file, and the
# documentation. The Debian packages follow the PostgreSQL community's
# naming: postgresql-<MAJOR>-pg-webhook (the library and SQL, for that
# major) and pg-webhook-worker (the worker, its unit, environment file and
# documentation; the same for every major), built with dpkg-deb.
#
# PG_WEBHOOK_PACKAGE_PROFILE=debug builds both in the dev profile instead
# (quick, from the test build's cache: tests/run.sh uses it); a release is
# always built in the release profile.
#
# The extension is built against the major's own pg_config
# (scripts/postgres.sh: Debian's for 15, PyPI's builds for 16-18), then
# laid out in the PGDG paths whatever that pg_config's own layout is.
set -euo pipefail
cd "$(dirname "$0")/.."

deb=false
if [ "${1:-}" = --deb ]; then deb=true; shift; fi
if [ "${1:-}" = --sql ]; then
    # The SQL flavor: one script, no library, no build (scripts/sql-flavor.sh);
    # and the step from its previous release (scripts/sql-flavor-step.sh),
    # named on stderr.
    step=$(bash scripts/sql-flavor-step.sh)
    [ -z "$step" ] || echo "package.sh: the SQL flavor's upgrade: $step" >&2
    exec bash scripts/sql-flavor.sh
fi
major=${1:-15}
PG_MAJORS=$major bash scripts/setup.sh >&2
pg_config=$(bash scripts/postgres.sh pg_config "$major")
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(uname -m)
name="pg_webhook-$version-pg$major-linux-$arch"
root="target/package/$name"
rm -rf "$root" "$root.pgrx" && mkdir -p "$root"
profile=${PG_WEBHOOK_PACKAGE_PROFILE:-release}
case "$profile" in
release) pgrx_profile=() worker_flags=(--release) ;;
debug) pgrx_profile=(--debug) worker_flags=() ;;
*) echo "package.sh: PG_WEBHOOK_PACKAGE_PROFILE is release or debug, not $profile" >&2; exit 2 ;;
esac

echo "== building the extension for PostgreSQL $major ($profile)" >&2
cargo pgrx package "${pgrx_profile[@]}" -p pg_webhook --pg-config "$pg_config" --out-dir "$root.pgrx" >&2
lib="$root/usr/lib/postgresql/$major/lib"
ext="$root/usr/share/postgresql/$major/extension"
mkdir -p "$lib" "$ext"
find "$root.pgrx" -name 'pg_webhook.so' -exec install -m 755 {} "$lib/" \;
find "$root.pgrx" -path '*/extension/pg_webhook*' -exec install -m 644 {} "$ext/" \;
rm -rf "$root.pgrx"
[ -f "$lib/pg_webhook.so" ] && [ -f "$ext/pg_webhook.control" ] \
    || { echo "package.sh: cargo pgrx package made no library or control file" >&2; exit 1; }

echo "== building the worker ($profile)" >&2
cargo build "${worker_flags[@]}" --quiet -p pg-webhook-worker
install -D -m 755 "target/$profile/pg-webhook-worker" "$root/usr/bin/pg-webhook-worker"
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
$deb || exit 0

# The same files, split in two packages.
deb_arch=$(dpkg --print-architecture)
debs="target/package/deb-pg$major"
rm -rf "$debs" && mkdir -p "$debs"
control() { # package, depends, description, long description
    cat <<EOF
Package: $1
Version: $version-1
Architecture: $deb_arch
Maintainer: pg_webhook developers <pg_webhook@localhost>
Section: database
Priority: optional
Depends: $2
Description: $3
 $4
EOF
}
ext_pkg="postgresql-$major-pg-webhook"
mkdir -p "$debs/$ext_pkg"
cp -a "$root/usr" "$debs/$ext_pkg/"
rm -rf "$debs/$ext_pkg/usr/bin" "$debs/$ext_pkg/usr/lib/systemd" "$debs/$ext_pkg/usr/share/doc/pg-webhook"
find "$debs/$ext_pkg" -type d -empty -delete
mkdir -p "$debs/$ext_pkg/DEBIAN"
control "$ext_pkg" "postgresql-$major" \
    "signed, retried, logged webhooks from PostgreSQL $major (extension)" \
    "The pg_webhook extension: endpoints, capture trigger, delivery log. The worker is in pg-webhook-worker." \
    >"$debs/$ext_pkg/DEBIAN/control"

mkdir -p "$debs/pg-webhook-worker/DEBIAN"
cp -a "$root/usr" "$root/etc" "$debs/pg-webhook-worker/"
rm -rf "$debs/pg-webhook-worker/usr/lib/postgresql" "$debs/pg-webhook-worker/usr/share/postgresql"
echo "/etc/pg-webhook-worker/worker.env.example" >"$debs/pg-webhook-worker/DEBIAN/conffiles"
control pg-webhook-worker "libc6" \
    "signed, retried, logged webhooks from PostgreSQL (worker)" \
    "pg-webhook-worker delivers the webhooks the pg_webhook extension records, with its systemd unit." \
    >"$debs/pg-webhook-worker/DEBIAN/control"

for pkg in "$ext_pkg" pg-webhook-worker; do
    dpkg-deb --root-owner-group --build "$debs/$pkg" "target/package/${pkg}_${version}-1_$deb_arch.deb" >&2
    echo "target/package/${pkg}_${version}-1_$deb_arch.deb"
done
rm -rf "$debs"
