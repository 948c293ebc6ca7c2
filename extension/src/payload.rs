//! The `data` of a row event, built as JSON text: `{"table", "schema",
//! "op", "new", "old"}` around the rows PostgreSQL's `row_to_json` made.
//!
//! Built here, once, rather than with `json_build_object` in the capture
//! statement: that statement runs for every captured row, and every
//! expression in it is compiled again at each execution (measured: a
//! statement that assembled the object and optionally projected columns
//! cost the writer more than the insert itself). Here it is a few string
//! copies.
//!
//! Must not: touch the database; everything is a pure function of its input.

/// `{"table": …, "schema": …, "op": …, "new": …, "old": …}`; `new` and
/// `old` are JSON texts (null when absent), projected to `columns` when given.
pub(crate) fn row_event(
    table: &str,
    schema: &str,
    op: &str,
    new: Option<&str>,
    old: Option<&str>,
    columns: Option<&[impl AsRef<str>]>,
) -> String {
    let len = |json: Option<&str>| json.map_or(4, str::len);
    let mut out = String::with_capacity(64 + table.len() + schema.len() + len(new) + len(old));
    let push_row = |out: &mut String, json: Option<&str>| match (json, columns) {
        (None, _) => out.push_str("null"),
        (Some(j), None) => out.push_str(j),
        (Some(j), Some(cols)) => out.push_str(&project(j, cols)),
    };
    out.push_str("{\"table\":");
    push_string(&mut out, table);
    out.push_str(",\"schema\":");
    push_string(&mut out, schema);
    out.push_str(",\"op\":");
    push_string(&mut out, op);
    out.push_str(",\"new\":");
    push_row(&mut out, new);
    out.push_str(",\"old\":");
    push_row(&mut out, old);
    out.push('}');
    out
}

/// The event of a row too large for `pg_webhook.max_payload_bytes`: the
/// same shape, `new` and `old` cut down to the key columns (`keys`, the
/// primary key; `{}` when the table has none), and `"truncated": true`, so
/// that the receiver knows to read the row itself. Capture never fails the
/// writer's transaction for the size of a row. When the watch sends only
/// some `columns`, the key is sent only if every key column is among them
/// (else `{}`): a truncated event never carries what the watch left out.
pub(crate) fn truncated_event(
    table: &str,
    schema: &str,
    op: &str,
    new: Option<&str>,
    old: Option<&str>,
    keys: &[String],
    columns: Option<&[&str]>,
) -> String {
    let chosen = |k: &String| columns.is_none_or(|cols| cols.contains(&k.as_str()));
    let keys: &[String] = if keys.iter().all(chosen) { keys } else { &[] };
    let mut event = row_event(table, schema, op, new, old, Some(keys));
    event.pop(); // the closing brace
    event.push_str(",\"truncated\":true}");
    event
}

/// Appends `s` as a JSON string literal. Names without a character JSON
/// must escape (quote, backslash, control characters) are copied as they
/// are, which is nearly every table and schema name.
fn push_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a str always serializes"));
    }
}

/// The object `row` (JSON text of an object, as `row_to_json` makes it)
/// with only the keys in `columns`, in the row's order, each value's text
/// as PostgreSQL wrote it (`9.50` stays `9.50`, a jsonb column keeps its
/// spacing): the same bytes as the SQL flavor's projection and a
/// backfill's `row_to_json` of the chosen columns, so that a row's events
/// and ordering keys do not depend on how they were made.
pub(crate) fn project(row: &str, columns: &[impl AsRef<str>]) -> String {
    match serde_json::from_str::<Entries<'_>>(row) {
        Ok(Entries(entries)) => {
            let mut out = String::with_capacity(row.len());
            out.push('{');
            for (key, value) in entries
                .iter()
                .filter(|(k, _)| columns.iter().any(|c| c.as_ref() == k.as_ref()))
            {
                if out.len() > 1 {
                    out.push(',');
                }
                push_string(&mut out, key);
                out.push(':');
                out.push_str(value.get());
            }
            out.push('}');
            out
        }
        // row_to_json always makes an object; were it not one, send nothing
        // rather than columns the watch excluded.
        Err(_) => "null".to_owned(),
    }
}

/// A JSON object's entries in their order, each value's text borrowed as
/// it is (serde_json's map would re-serialise numbers and nested values).
struct Entries<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> serde::Deserialize<'de> for Entries<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Entries<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_event_keeps_the_keys_and_says_so() {
        let e = truncated_event(
            "docs",
            "public",
            "UPDATE",
            Some(r#"{"id":7,"body":"xxxx"}"#),
            Some(r#"{"id":7,"body":"yy"}"#),
            &["id".to_owned()],
            None,
        );
        assert_eq!(
            e,
            r#"{"table":"docs","schema":"public","op":"UPDATE","new":{"id":7},"old":{"id":7},"truncated":true}"#
        );
    }

    #[test]
    fn a_truncated_event_sends_no_key_the_watch_left_out() {
        let keys = ["email".to_owned()];
        let row = Some(r#"{"email":"a@b","bio":"xxxx"}"#);
        let e = truncated_event(
            "users",
            "public",
            "INSERT",
            row,
            None,
            &keys,
            Some(&["bio"]),
        );
        assert_eq!(
            e,
            r#"{"table":"users","schema":"public","op":"INSERT","new":{},"old":null,"truncated":true}"#
        );
        let e = truncated_event(
            "users",
            "public",
            "INSERT",
            row,
            None,
            &keys,
            Some(&["bio", "email"]),
        );
        assert!(e.contains(r#""new":{"email":"a@b"}"#), "{e}");
    }

    #[test]
    fn wraps_rows_and_escapes_names() {
        let e = row_event(
            "or\"ders",
            "public",
            "UPDATE",
            Some(r#"{"id":1}"#),
            None,
            None::<&[&str]>,
        );
        assert_eq!(
            e,
            r#"{"table":"or\"ders","schema":"public","op":"UPDATE","new":{"id":1},"old":null}"#
        );
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["table"], "or\"ders");
    }

    #[test]
    fn names_needing_escapes_are_escaped() {
        let e = row_event("a\\b\tc", "s", "INSERT", None, None, None::<&[&str]>);
        let v: serde_json::Value = serde_json::from_str(&e).unwrap();
        assert_eq!(v["table"], "a\\b\tc");
        assert_eq!(v["new"], serde_json::Value::Null);
    }

    #[test]
    fn projection_keeps_listed_columns_in_row_order() {
        let cols = vec!["email".to_owned(), "id".to_owned()];
        assert_eq!(
            project(r#"{"id":1,"password":"x","email":"a@b"}"#, &cols),
            r#"{"id":1,"email":"a@b"}"#
        );
    }

    #[test]
    fn projection_keeps_each_values_text() {
        let cols = ["price", "doc", "big", "name"];
        assert_eq!(
            project(
                r#"{"price":9.50,"skip":1,"doc":{"a": [1, 2.0]},"big":100000000000000000000,"name":"\u00e9\"x"}"#,
                &cols
            ),
            r#"{"price":9.50,"doc":{"a": [1, 2.0]},"big":100000000000000000000,"name":"\u00e9\"x"}"#
        );
        assert_eq!(project("[1]", &cols), "null");
    }
}
