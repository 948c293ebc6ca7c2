//! Event-type patterns of an endpoint's subscription: `*` (every event),
//! `order.*` (every type starting with `order.`), or an exact type. Validated
//! by SQL at subscription; matched here, per captured row, by the extension.
//!
//! Must not: allocate (it runs once per row and endpoint).

/// True when `event_type` is selected by `pattern`.
pub fn matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" || pattern == event_type {
        return true;
    }
    match pattern.strip_suffix('*') {
        // "order.*" keeps its dot: "order." must prefix the type, so that
        // "orders.created" does not match "order.*".
        Some(prefix) if prefix.ends_with('.') => event_type.starts_with(prefix),
        _ => false,
    }
}

/// True when any pattern selects `event_type`.
pub fn any_matches<'a>(patterns: impl IntoIterator<Item = &'a str>, event_type: &str) -> bool {
    patterns.into_iter().any(|p| matches(p, event_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_exact_and_prefix() {
        assert!(matches("*", "anything.at.all"));
        assert!(matches("order.created", "order.created"));
        assert!(!matches("order.created", "order.updated"));
        assert!(matches("order.*", "order.created"));
        assert!(matches("order.*", "order.shipped.late"));
        assert!(!matches("order.*", "orders.created"));
        assert!(!matches("order.*", "order"));
        assert!(
            !matches("order*", "order.created"),
            "only whole segments are wildcards"
        );
        assert!(any_matches(["invoice.*", "order.*"], "order.created"));
        assert!(!any_matches([], "order.created"));
    }
}
