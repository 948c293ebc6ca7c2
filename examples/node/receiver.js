#!/usr/bin/env node
// A minimal pg_webhook receiver: verifies Standard Webhooks signatures with the
// official `standardwebhooks` package, rejects stale timestamps, and
// deduplicates on webhook-id.
//
//   node receiver.js --port 8000 --secret whsec_...   (or WEBHOOK_SECRET=whsec_...)
//
// Prints one JSON line per request to stdout: accepted, duplicate or rejected.
"use strict";

const http = require("node:http");
const { parseArgs } = require("node:util");
const { Webhook, WebhookVerificationError } = require("standardwebhooks");

const MAX_BODY_BYTES = 10 * 1024 * 1024; // pg_webhook.max_payload_bytes is 1 MiB by default
const SEEN_IDS_LIMIT = 10_000;

// The official verifier with a configurable timestamp tolerance.
// standardwebhooks 1.1.1 hard-codes a 5-minute window and has no option for
// it, so the timestamp check is ours: it replaces the library's
// verifyTimestamp (private in its TypeScript types, a plain method at run
// time). The signature check stays the library's. The version is pinned in
// package.json; main() fails loudly if an upgrade drops the hook.
class ToleranceWebhook extends Webhook {
  constructor(secret, toleranceSeconds) {
    super(secret);
    this.toleranceSeconds = toleranceSeconds;
  }

  verifyTimestamp(header) {
    if (!/^[0-9]{1,15}$/.test(header)) {
      throw new WebhookVerificationError("Invalid webhook-timestamp header");
    }
    const timestamp = Number(header);
    const now = Math.floor(Date.now() / 1000);
    if (now - timestamp > this.toleranceSeconds) {
      throw new WebhookVerificationError("Message timestamp too old");
    }
    if (timestamp - now > this.toleranceSeconds) {
      throw new WebhookVerificationError("Message timestamp too new");
    }
    return new Date(timestamp * 1000); // the library signs `id.timestamp.body` with this
  }
}

// The webhook-ids already processed, oldest evicted first (a Map keeps
// insertion order). Senders retry with the same webhook-id, so a repeat means
// "already done". In memory only, so a restart forgets: a real receiver
// records the id in the same transaction as its side effects.
const seen = new Map();
function firstTime(webhookId) {
  if (seen.has(webhookId)) return false;
  seen.set(webhookId, true);
  if (seen.size > SEEN_IDS_LIMIT) seen.delete(seen.keys().next().value);
  return true;
}

// One write per line. Node has no flush: the line is handed to the OS at once
// (queued in memory if a pipe is full) and written before the process exits.
function log(fields) {
  process.stdout.write(JSON.stringify(fields) + "\n");
}

function answer(res, status, text, headers = {}) {
  res.writeHead(status, {
    "content-type": "text/plain; charset=utf-8",
    "content-length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

function reject(res, webhookId, reason, status = 400) {
  log({ event: "rejected", webhook_id: webhookId, reason });
  answer(res, status, reason);
}

function handle(webhook, req, res, body) {
  const webhookId = req.headers["webhook-id"] ?? null;
  try {
    // Throws on missing headers, a bad timestamp or no matching signature.
    // During a secret rotation the header holds two signatures; any one that
    // matches our secret is enough. `body` is the raw bytes that were signed.
    webhook.verify(body, req.headers, { jsonParse: false });
  } catch (e) {
    const reason = e instanceof WebhookVerificationError ? e.message : "Malformed request";
    return reject(res, webhookId, reason);
  }

  let event;
  try {
    event = JSON.parse(body.toString("utf8"));
  } catch {
    event = null;
  }
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    return reject(res, webhookId, "Body is not a JSON object");
  }

  // Only after verification: an unsigned request must not be able to mark an
  // id as seen, nor learn which ids were.
  if (!firstTime(webhookId)) {
    log({ event: "duplicate", webhook_id: webhookId });
    return answer(res, 200, "ok");
  }

  // Process the event here (event.type, event.data). Answer 2xx quickly:
  // pg_webhook retries anything else, and on timeouts.
  log({ event: "accepted", webhook_id: webhookId, type: event.type ?? null });
  answer(res, 200, "ok");
}

function usage(message) {
  console.error(`${message}\nusage: node receiver.js --port PORT [--secret SECRET] [--tolerance-seconds N]`);
  console.error("The secret defaults to $WEBHOOK_SECRET, which keeps it out of `ps`.");
  process.exit(2);
}

function main() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        port: { type: "string" },
        secret: { type: "string", default: process.env.WEBHOOK_SECRET },
        "tolerance-seconds": { type: "string", default: "300" },
      },
    }));
  } catch (e) {
    usage(e.message);
  }
  const integer = (text) => (/^[0-9]+$/.test(text ?? "") ? Number(text) : NaN);
  const port = integer(values.port); // 0 picks a free port
  const tolerance = integer(values["tolerance-seconds"]);
  if (!(port <= 65535)) usage("--port is required: an integer from 0 to 65535");
  if (Number.isNaN(tolerance)) usage("--tolerance-seconds must be an integer >= 0");
  if (!values.secret) usage("--secret or WEBHOOK_SECRET is required");
  if (typeof Webhook.prototype.verifyTimestamp !== "function") {
    throw new Error("standardwebhooks changed: update the timestamp override in ToleranceWebhook");
  }
  let webhook;
  try {
    webhook = new ToleranceWebhook(values.secret, tolerance);
  } catch (e) {
    usage(`invalid secret: ${e.message}`);
  }

  const server = http.createServer((req, res) => {
    if (req.method !== "POST") {
      return answer(res, 405, "Method not allowed", { allow: "POST" });
    }
    // Buffer the raw bytes: the signature covers exactly these. Past the limit
    // the rest is read and dropped, so memory stays bounded.
    const chunks = [];
    let size = 0;
    req.on("data", (chunk) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => {
      if (size > MAX_BODY_BYTES) {
        return reject(res, req.headers["webhook-id"] ?? null, "Body too large", 413);
      }
      handle(webhook, req, res, Buffer.concat(chunks));
    });
  });

  // Stop accepting, let requests in flight finish, and exit 0 once nothing is
  // left; connections that are still busy after 5 s are cut.
  const shutdown = () => {
    server.close();
    server.closeIdleConnections(); // idle keep-alive sockets would hold the exit
    setTimeout(() => server.closeAllConnections(), 5000).unref();
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);

  server.listen(port, "127.0.0.1", () => {
    process.stdout.write(`listening on 127.0.0.1:${server.address().port}\n`);
  });
}

main();
