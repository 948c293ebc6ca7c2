#!/usr/bin/env bash
# Installs everything pg_webhook needs to build, test and run on Debian
# bookworm: PostgreSQL 15 (server and headers), libclang (for pgrx bindings),
# sudo (cargo pgrx test runs PostgreSQL as the `postgres` user when we are
# root), cargo-pgrx =0.18.0, the other majors named in PG_MAJORS (default
# 15 only; scripts/postgres.sh fetches 16-18) and pgrx's registration of
# each. Extra arguments are more Debian packages to install.
# Idempotent: each step is skipped when already done.
set -euo pipefail

PG_MAJORS=${PG_MAJORS:-15}
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

# pgrx builds against the majors registered in its config.toml; `cargo pgrx
# init` rewrites that file, so it is given every major, those registered
# before included.
config="${PGRX_HOME:-$HOME/.pgrx}/config.toml"
declare -A pg_configs=()
if [ -f "$config" ]; then
    while read -r key path; do pg_configs[$key]=$path; done \
        < <(sed -n 's/^\(pg[0-9]*\) = "\(.*\)"$/\1 \2/p' "$config")
fi
register=false
for major in $PG_MAJORS; do
    pg_config=$(bash "$(dirname "$0")/postgres.sh" pg_config "$major")
    if [ "${pg_configs[pg$major]:-}" != "$pg_config" ]; then
        pg_configs[pg$major]=$pg_config
        register=true
    fi
done
if $register; then
    args=()
    for key in "${!pg_configs[@]}"; do args+=("--$key" "${pg_configs[$key]}"); done
    echo "setup: registering PostgreSQL ${!pg_configs[*]} with pgrx"
    cargo pgrx init "${args[@]}" >/dev/null
fi
