#!/usr/bin/env bash
# Installs everything pg_webhook needs to build, test and run on Debian
# bookworm: PostgreSQL 15 (server and headers), libclang (for pgrx bindings),
# sudo (cargo pgrx test runs PostgreSQL as the `postgres` user when we are
# root), cargo-pgrx =0.18.0, and pgrx's registration of the system PostgreSQL.
# Idempotent: each step is skipped when already done.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=0.18.0
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

missing=()
for pkg in postgresql-15 postgresql-server-dev-15 libclang-dev sudo "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    # Our clusters are throwaway ones; Debian's default "main" cluster is not wanted.
    if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
        $SUDO mkdir -p /etc/postgresql-common
        echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
    fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
    echo "setup: installing cargo-pgrx $PGRX_VERSION (takes a few minutes)"
    cargo install cargo-pgrx --version "=$PGRX_VERSION" --locked --quiet
fi

if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    echo "setup: registering $PG_CONFIG with pgrx"
    cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi
