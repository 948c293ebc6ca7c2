#!/usr/bin/env python3
"""A minimal pg_webhook receiver: verifies Standard Webhooks signatures with the
official `standardwebhooks` package, rejects stale timestamps, and deduplicates
on webhook-id.

    python receiver.py --port 8000 --secret whsec_...   (or WEBHOOK_SECRET=whsec_...)

Prints one JSON line per request to stdout: accepted, duplicate or rejected.
"""

import argparse
import json
import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import standardwebhooks
from standardwebhooks import WebhookVerificationError

MAX_BODY_BYTES = 10 * 1024 * 1024  # pg_webhook.max_payload_bytes is 1 MiB by default
SEEN_IDS_LIMIT = 10_000


class ToleranceWebhook(standardwebhooks.Webhook):
    """The official verifier with a configurable timestamp tolerance.

    standardwebhooks 1.1.0 hard-codes a 5-minute window and has no option for
    it, so the timestamp check is ours: it replaces the library's private
    (name-mangled) `__verify_timestamp`. The signature check stays the
    library's. The version is pinned in requirements.txt; main() fails loudly if
    an upgrade renames the hook instead of silently ignoring the tolerance.
    """

    def __init__(self, secret, tolerance_seconds):
        super().__init__(secret)
        self.tolerance_seconds = tolerance_seconds

    def _Webhook__verify_timestamp(self, header):
        if not re.fullmatch(r"[0-9]{1,15}", header):
            raise WebhookVerificationError("Invalid webhook-timestamp header")
        timestamp = int(header)
        now = int(time.time())
        if now - timestamp > self.tolerance_seconds:
            raise WebhookVerificationError("Message timestamp too old")
        if timestamp - now > self.tolerance_seconds:
            raise WebhookVerificationError("Message timestamp too new")
        # The library signs `id.timestamp.body` with the value returned here.
        return datetime.fromtimestamp(timestamp, tz=timezone.utc)


class SeenIds:
    """The webhook-ids already processed, oldest evicted first.

    Senders retry with the same webhook-id, so a repeat means "already done".
    In memory only, so a restart forgets: a real receiver records the id in
    the same transaction as its side effects (e.g. a unique column).
    """

    def __init__(self, limit):
        self._ids = OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, webhook_id):
        """Records the id; False if it was already there."""
        with self._lock:
            if webhook_id in self._ids:
                return False
            self._ids[webhook_id] = None
            if len(self._ids) > self._limit:
                self._ids.popitem(last=False)
            return True


_print_lock = threading.Lock()


def log(**fields):
    # One write per line under a lock, so lines from concurrent requests never interleave.
    line = json.dumps(fields, separators=(",", ":")) + "\n"
    with _print_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: pg_webhook reuses connections
    webhook = None  # set in main()
    seen = SeenIds(SEEN_IDS_LIMIT)

    def do_POST(self):
        webhook_id = self.headers.get("webhook-id")
        try:
            length = int(self.headers.get("content-length", ""))
        except ValueError:
            length = -1
        if length < 0:  # http.server cannot read chunked bodies; pg_webhook always sends a length
            return self.reject(webhook_id, "Content-Length required", status=411)
        if length > MAX_BODY_BYTES:
            return self.reject(webhook_id, "Body too large", status=413)
        body = self.rfile.read(length)  # the raw bytes: the signature covers exactly these

        try:
            # Raises on missing headers, a bad timestamp or no matching
            # signature. During a secret rotation the header holds two
            # signatures; any one that matches our secret is enough.
            self.webhook.verify(body, dict(self.headers), json_parse=False)
        except WebhookVerificationError as e:
            return self.reject(webhook_id, str(e))
        except ValueError:  # non-UTF-8 body, or a malformed signature entry
            return self.reject(webhook_id, "Malformed webhook-signature header or body")

        try:
            event = json.loads(body)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return self.reject(webhook_id, "Body is not a JSON object")

        # Only after verification: an unsigned request must not be able to
        # mark an id as seen, nor learn which ids were.
        if not self.seen.add(webhook_id):
            log(event="duplicate", webhook_id=webhook_id)
            return self.answer(200, "ok")

        # Process the event here (event["type"], event["data"]). Answer 2xx
        # quickly: pg_webhook retries anything else, and on timeouts.
        log(event="accepted", webhook_id=webhook_id, type=event.get("type"))
        self.answer(200, "ok")

    def __getattr__(self, name):
        # Every other method (do_GET, do_PUT, ...) is a 405; http.server would say 501.
        if name.startswith("do_"):
            return self.not_allowed
        raise AttributeError(name)

    def not_allowed(self):
        self.close_connection = True  # any request body was not read
        self.answer(405, "Method not allowed", Allow="POST")

    def reject(self, webhook_id, reason, status=400):
        log(event="rejected", webhook_id=webhook_id, reason=reason)
        if status != 400:
            self.close_connection = True  # the body may be unread
        self.answer(status, reason)

    def answer(self, status, text, **headers):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):
        pass  # stdout carries only the JSON lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="0 picks a free port")
    parser.add_argument("--secret", default=os.environ.get("WEBHOOK_SECRET"),
                        help="whsec_... (default: $WEBHOOK_SECRET, which keeps it out of `ps`)")
    parser.add_argument("--tolerance-seconds", type=int, default=300,
                        help="largest accepted clock difference (default 300)")
    args = parser.parse_args()
    if not args.secret:
        parser.error("--secret or WEBHOOK_SECRET is required")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be an integer from 0 to 65535")
    if args.tolerance_seconds < 0:
        parser.error("--tolerance-seconds must be >= 0")
    if not hasattr(standardwebhooks.Webhook, "_Webhook__verify_timestamp"):
        sys.exit("standardwebhooks changed: update the timestamp override in ToleranceWebhook")
    try:
        Handler.webhook = ToleranceWebhook(args.secret, args.tolerance_seconds)
    except Exception as e:
        parser.error(f"invalid secret: {e}")

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    # shutdown() waits for serve_forever() to return, so it must run on
    # another thread than the one the signal interrupts.
    stop = lambda *_: threading.Thread(target=server.shutdown).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
