#!/usr/bin/env bash
# The end-to-end suite (tests/e2e) against the cluster in
# PG_WEBHOOK_TEST_DSN, skipping the tests whose names hold SKIP (the other
# flavor's: extension_only / sql_only).
#
#   bash tests/e2e.sh SKIP [TEST FILTERS...]
#
# Without filters, the tests that measure a rate on the wall clock
# (ratelimits::, requests started per 10 s) run last and alone. They
# measure the worker's pace, and two tests at once on a 2-core machine can
# starve a worker or a claim's backend for a second, which bunches a
# second's worth of requests (454 in a 10 s window at 40/s, in CI, where
# 440 is allowed). Alone, nothing but their own workers competes.
set -euo pipefail
cd "$(dirname "$0")/.."
skip=$1
shift
if [ $# -gt 0 ]; then
    exec cargo test -p pg_webhook_tests --test e2e -- --skip "$skip" "$@"
fi
cargo test -p pg_webhook_tests -- --skip "$skip" --skip ratelimits::
cargo test -p pg_webhook_tests --test e2e -- --skip "$skip" ratelimits::
