#!/usr/bin/env bash
# Self-test of the example receivers: installs their dependencies when needed,
# starts each one on a free port and sends it requests signed with the
# official standardwebhooks library (Python), checking the status code and
# the JSON line the receiver prints. Exits non-zero if anything fails.
#
#   bash examples/check.sh
set -euo pipefail
cd "$(dirname "$0")"

PY=python/.venv/bin/python
SECRET='whsec_kCo2TCdjX7v3mVv/JkSjb2V9YbeIVEUW'
OTHER_SECRET='whsec_7OcNc8gkjBPNacwnxoHX/f87ihOp6lMRc9MNGfeFTd0=' # the other side of a rotation

for tool in python3 node npm curl; do
    command -v "$tool" >/dev/null || { echo "check.sh: $tool is required" >&2; exit 1; }
done

# --- Dependencies (skipped when already installed) ---
# The venv remembers the requirements it was built from, so a changed pin reinstalls.
if ! cmp -s python/requirements.txt python/.venv/installed-requirements.txt 2>/dev/null; then
    python3 -m venv python/.venv || {
        echo "check.sh: 'python3 -m venv' failed; on Debian/Ubuntu: apt-get install python3-venv" >&2
        exit 1
    }
    "$PY" -m pip install --quiet --disable-pip-version-check -r python/requirements.txt
    cp python/requirements.txt python/.venv/installed-requirements.txt
fi
# npm ls fails when node_modules is missing or does not match package.json.
(cd node && npm ls --depth=0 >/dev/null 2>&1) || (cd node && npm ci --no-audit --no-fund --loglevel=error)

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok    $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }

# sign SECRET ID TIMESTAMP BODY -> "v1,<base64>", computed by the official library.
sign() {
    "$PY" -c '
import sys
from datetime import datetime, timezone
from standardwebhooks import Webhook
secret, msg_id, ts, body = sys.argv[1:]
print(Webhook(secret).sign(msg_id, datetime.fromtimestamp(int(ts), tz=timezone.utc), body))
' "$@"
}

# start NAME COMMAND... : runs a receiver with stdout to $TMP/NAME.log and
# waits for its "listening on 127.0.0.1:PORT" line; sets PORT, PID and LOG.
start() {
    local name=$1
    shift
    LOG="$TMP/$name.log"
    : >"$LOG" # exists before the background job opens it, for the sed below
    "$@" >"$LOG" 2>"$LOG.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        PORT=$(sed -n '1s/^listening on 127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$LOG")
        [ -n "$PORT" ] && return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "check.sh: $name did not start:" >&2
    cat "$LOG" "$LOG.err" >&2
    exit 1
}

# post ID TIMESTAMP SIGNATURE BODY -> prints the HTTP status code.
post() {
    curl -sS -o "$TMP/response" -w '%{http_code}' -X POST \
        -H 'content-type: application/json' -H "webhook-id: $1" \
        -H "webhook-timestamp: $2" -H "webhook-signature: $3" \
        --data-binary "$4" "http://127.0.0.1:$PORT/webhooks"
}

# expect NAME WHAT STATUS WANT_STATUS WANT_LINE: the status, and the receiver's
# last stdout line exactly (it is written before the response is sent).
expect() {
    local name=$1 what=$2 status=$3 want_status=$4 want_line=$5 line
    line=$(tail -n 1 "$LOG")
    if [ "$status" = "$want_status" ] && [ "$line" = "$want_line" ]; then
        ok "$name: $what"
    else
        fail "$name: $what: want $want_status and $want_line; got $status ($(head -c 200 "$TMP/response")) and $line"
    fi
}

# stop NAME: SIGTERM, then the receiver must exit 0 within 5 s.
stop() {
    local name=$1 rc=0
    kill -TERM "$PID"
    for _ in $(seq 50); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
        fail "$name: still running 5 s after SIGTERM"
        return
    fi
    wait "$PID" || rc=$?
    if [ "$rc" = 0 ]; then ok "$name: exits 0 on SIGTERM"; else fail "$name: exit code $rc after SIGTERM"; fi
}

check_receiver() {
    local name=$1
    shift
    local now id body sig status
    start "$name" "$@" --port 0 --secret "$SECRET"

    now=$(date +%s)
    id="msg_${name}_$now"
    body='{"type":"order.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":1}}'
    sig=$(sign "$SECRET" "$id" "$now" "$body")
    status=$(post "$id" "$now" "$sig" "$body")
    expect "$name" "(a) valid signature accepted" "$status" 200 \
        "{\"event\":\"accepted\",\"webhook_id\":\"$id\",\"type\":\"order.created\"}"
    [ "$(cat "$TMP/response")" = ok ] || fail "$name: (a) response body is not 'ok'"

    status=$(post "$id" "$now" "$sig" "$body")
    expect "$name" "(b) same webhook-id is a duplicate" "$status" 200 \
        "{\"event\":\"duplicate\",\"webhook_id\":\"$id\"}"

    status=$(post "$id" "$now" "$sig" '{"type":"order.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":2}}')
    expect "$name" "(c) tampered body rejected" "$status" 400 \
        "{\"event\":\"rejected\",\"webhook_id\":\"$id\",\"reason\":\"No matching signature found\"}"

    now=$(date +%s)
    sig=$(sign "$SECRET" msg_stale $((now - 600)) "$body")
    status=$(post msg_stale $((now - 600)) "$sig" "$body")
    expect "$name" "(d) timestamp 10 minutes old rejected" "$status" 400 \
        '{"event":"rejected","webhook_id":"msg_stale","reason":"Message timestamp too old"}'

    sig=$(sign "$SECRET" msg_future $((now + 600)) "$body")
    status=$(post msg_future $((now + 600)) "$sig" "$body")
    expect "$name" "timestamp 10 minutes ahead rejected" "$status" 400 \
        '{"event":"rejected","webhook_id":"msg_future","reason":"Message timestamp too new"}'

    # A rotation: the sender signs with both secrets; only the second is ours.
    # A plain decimal webhook-id, as older pg_webhook events have.
    now=$(date +%s)
    body='{"type":"order.updated","timestamp":"2026-01-01T00:00:00Z","data":{"id":3}}'
    sig="$(sign "$OTHER_SECRET" 42 "$now" "$body") $(sign "$SECRET" 42 "$now" "$body")"
    status=$(post 42 "$now" "$sig" "$body")
    expect "$name" "(e) rotation: second of two signatures matches" "$status" 200 \
        '{"event":"accepted","webhook_id":"42","type":"order.updated"}'

    status=$(curl -sS -o "$TMP/response" -w '%{http_code}' "http://127.0.0.1:$PORT/webhooks")
    if [ "$status" = 405 ]; then ok "$name: GET answers 405"; else fail "$name: GET answered $status"; fi
    stop "$name"

    # --tolerance-seconds really changes the window, both ways; the secret
    # comes from WEBHOOK_SECRET this time.
    start "$name-900" env WEBHOOK_SECRET="$SECRET" "$@" --port 0 --tolerance-seconds 900
    now=$(date +%s)
    sig=$(sign "$SECRET" msg_old600 $((now - 600)) "$body")
    status=$(post msg_old600 $((now - 600)) "$sig" "$body")
    expect "$name" "--tolerance-seconds 900 accepts 10 minutes old" "$status" 200 \
        '{"event":"accepted","webhook_id":"msg_old600","type":"order.updated"}'
    sig=$(sign "$SECRET" msg_old1000 $((now - 1000)) "$body")
    status=$(post msg_old1000 $((now - 1000)) "$sig" "$body")
    expect "$name" "--tolerance-seconds 900 rejects 1000 s old" "$status" 400 \
        '{"event":"rejected","webhook_id":"msg_old1000","reason":"Message timestamp too old"}'
    stop "$name-900"

    start "$name-60" "$@" --port 0 --secret "$SECRET" --tolerance-seconds 60
    now=$(date +%s)
    sig=$(sign "$SECRET" msg_old120 $((now - 120)) "$body")
    status=$(post msg_old120 $((now - 120)) "$sig" "$body")
    expect "$name" "--tolerance-seconds 60 rejects 2 minutes old" "$status" 400 \
        '{"event":"rejected","webhook_id":"msg_old120","reason":"Message timestamp too old"}'
    stop "$name-60"
}

check_receiver python "$PY" python/receiver.py
check_receiver node node node/receiver.js

echo "check: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
