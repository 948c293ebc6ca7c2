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

/// Builds the body. `data_json` must already be valid JSON (it comes from a
/// `jsonb` column); `timestamp_rfc3339` is the event's creation time.
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
