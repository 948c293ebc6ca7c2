//! Small text helpers several layers need, defined once.

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary (a byte limit that never splits a UTF-8 character,
/// which PostgreSQL would refuse).
pub fn cut_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text` cut in place to at most `max` bytes (see [`cut_at_char_boundary`]).
pub fn truncate_at_char_boundary(text: &mut String, max: usize) {
    let end = cut_at_char_boundary(text, max).len();
    text.truncate(end);
}

/// "outer: inner: innermost": an error and its causes on one line, each
/// said once (a cause whose text its outer error already holds is skipped).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_never_split_a_character() {
        assert_eq!(cut_at_char_boundary("héllo", 2), "h");
        assert_eq!(cut_at_char_boundary("héllo", 3), "hé");
        assert_eq!(cut_at_char_boundary("abc", 10), "abc");
        let mut s = String::from("€€");
        truncate_at_char_boundary(&mut s, 4);
        assert_eq!(s, "€");
    }

    #[test]
    fn error_chains_say_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "connect failed: refused",
            Some(Box::new(E(
                "refused",
                Some(Box::new(E("os error 111", None))),
            ))),
        );
        assert_eq!(error_chain(&e), "connect failed: refused: os error 111");
    }
}
