//! The request body and header names: the wire contract in one place.
//!
//! The body is `{"type": …, "timestamp": <RFC 3339>, "data": …}`. It is built
//! by concatenation around `data`'s JSON text as stored by PostgreSQL, so
//! that the bytes are identical on every retry (the signature covers them) and
//! the worker never re-parses a payload it only forwards.
//!
//! Must not: do I/O or read the clock.

/// Header carrying the stable message id (the same on every retry and replay).
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the unix seconds of this attempt.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying one or more `v1,<base64>` signatures.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The `webhook-id` of an event: `msg_` + its 16-hex namespace (the one
/// its writer's session drew, or its incarnation's for an event written
/// before 0.3.0) + its id as 16 hex digits, or, for an event enqueued by
/// pg_webhook 0.1 (no namespace), its number as it was first sent. The SQL
/// function `webhook._message_id` makes the same string for people's
/// queries; a `#[pg_test]` checks that the claim's parts make the same.
pub fn message_id(namespace: Option<&str>, event_id: i64) -> String {
    match namespace {
        Some(ns) => format!("msg_{ns}{:016x}", event_id as u64),
        None => event_id.to_string(),
    }
}

/// The body's `timestamp`: `unix_micros` (the event's creation time, µs since
/// the Unix epoch) in RFC 3339, UTC, with microseconds, e.g.
/// `2026-01-02T03:04:05.000006Z`. `None` beyond the years chrono represents.
pub fn timestamp(unix_micros: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(unix_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
}

/// Builds the body. `data_json` must already be valid JSON (it comes from
/// the `json` column `webhook.events.payload`); `timestamp_rfc3339` is the
/// event's creation time.
pub fn body(event_type: &str, timestamp_rfc3339: &str, data_json: &str) -> String {
    let mut out = String::with_capacity(data_json.len() + event_type.len() + 64);
    out.push_str("{\"type\":");
    out.push_str(&serde_json::Value::from(event_type).to_string());
    out.push_str(",\"timestamp\":");
    out.push_str(&serde_json::Value::from(timestamp_rfc3339).to_string());
    out.push_str(",\"data\":");
    out.push_str(data_json);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_have_their_namespace_and_hex_id() {
        assert_eq!(
            message_id(Some("0123456789abcdef"), 255),
            "msg_0123456789abcdef00000000000000ff"
        );
        assert_eq!(message_id(None, 42), "42");
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        // 2026-01-02T03:04:05.000006Z
        assert_eq!(
            timestamp(1_767_323_045_000_006).as_deref(),
            Some("2026-01-02T03:04:05.000006Z")
        );
        assert_eq!(timestamp(0).as_deref(), Some("1970-01-01T00:00:00.000000Z"));
    }

    #[test]
    fn body_is_valid_json_with_the_three_fields() {
        let b = body(
            "order.\"created\"",
            "2026-01-02T03:04:05.000006Z",
            r#"{"a": [1, 2]}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["type"], "order.\"created\"");
        assert_eq!(v["timestamp"], "2026-01-02T03:04:05.000006Z");
        assert_eq!(v["data"]["a"][1], 2);
    }
}
