//! Keeping a request's secrets out of what is recorded. A receiver's answer
//! goes into `webhook.attempts.response_excerpt`, which readers may read;
//! a receiver that echoes the request (a debugging endpoint, a hostile one)
//! would put the endpoint's header values (often an `authorization` token),
//! its credentials and the request's signatures there. So before an
//! excerpt is recorded, every such value in it is replaced by
//! `[redacted]`, including one cut off at the excerpt's end.
//!
//! Values shorter than [`MIN_SECRET_BYTES`] are left alone: they are not
//! secrets worth the name (`x-tenant: acme`), and replacing every
//! occurrence of them would garble the excerpt.
//!
//! Must not: log or return a secret.

use base64::Engine as _;

/// Shortest value treated as a secret, in bytes.
pub(crate) const MIN_SECRET_BYTES: usize = 6;
/// What a secret is replaced with.
pub(crate) const MARK: &str = "[redacted]";

/// The secret values of one request.
#[derive(Default)]
pub(crate) struct Secrets(Vec<String>);

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.0.len())
    }
}

impl Secrets {
    /// The values of a request with `headers` (the endpoint's own, its auth
    /// header among them) and `signature` (the `webhook-signature` value):
    /// each value whole, each of its space-separated words (a bearer
    /// token, one `v1,…` signature), the base64 part of a signature, and
    /// what a `Basic` credential decodes to (`user:password`, and the password).
    pub(crate) fn of_request<'a>(
        headers: impl IntoIterator<Item = &'a str>,
        signature: &'a str,
    ) -> Self {
        let mut values: Vec<String> = Vec::new();
        let mut add = |v: &str| {
            if v.len() >= MIN_SECRET_BYTES && !values.iter().any(|x| x == v) {
                values.push(v.to_owned());
            }
        };
        for value in headers.into_iter().chain(std::iter::once(signature)) {
            add(value);
            for word in value.split(' ') {
                add(word);
                if let Some((_, b64)) = word.split_once(',') {
                    add(b64); // v1,<base64>
                }
                if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(word) {
                    if let Ok(text) = String::from_utf8(decoded) {
                        if let Some((_, password)) = text.split_once(':') {
                            add(&text);
                            add(password);
                        }
                    }
                }
            }
        }
        // Longest first: a value that contains another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Self(values)
    }

    /// `text` with every secret replaced by [`MARK`], and a secret's
    /// beginning at its very end (an excerpt cut short) too; then cut back
    /// to `max` bytes on a character boundary, since a mark may be longer
    /// than what it replaced.
    pub(crate) fn apply(&self, text: String, max: usize) -> String {
        let mut text = text;
        for secret in &self.0 {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), MARK);
            }
        }
        'tail: for secret in &self.0 {
            for len in (MIN_SECRET_BYTES..secret.len()).rev() {
                if secret.is_char_boundary(len) && text.ends_with(&secret[..len]) {
                    let cut = text.len() - len;
                    text.truncate(cut);
                    text.push_str(MARK);
                    break 'tail;
                }
            }
        }
        crate::text::truncate_at_char_boundary(&mut text, max);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_headers_credentials_and_signatures_are_redacted() {
        let basic = base64::engine::general_purpose::STANDARD.encode("alice:s3cret-pw");
        let auth = format!("Basic {basic}");
        let s = Secrets::of_request(
            ["Bearer t0ken-t0ken", auth.as_str(), "acme"],
            "v1,c2lnbmF0dXJlMQ== v1,c2lnbmF0dXJlMg==",
        );
        let echoed = format!(
            "authorization: Bearer t0ken-t0ken\ngot t0ken-t0ken, {basic}, alice:s3cret-pw, s3cret-pw\n\
             x-tenant: acme\nsig c2lnbmF0dXJlMg=="
        );
        let out = s.apply(echoed, 10_000);
        for secret in ["t0ken-t0ken", &basic, "s3cret-pw", "c2lnbmF0dXJlMg=="] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("x-tenant: acme"), "short values stay: {out}");
        assert!(out.contains("[redacted]"));
    }

    #[test]
    fn a_secret_cut_off_at_the_end_is_redacted_too() {
        let s = Secrets::of_request(["Bearer abcdefghijkl"], "");
        let out = s.apply("token: abcdefgh".to_owned(), 10_000);
        assert_eq!(out, "token: [redacted]");
        // Under the minimum length, a coincidence: left alone.
        assert_eq!(s.apply("x abc".to_owned(), 10_000), "x abc");
    }

    #[test]
    fn the_result_stays_within_the_bound() {
        let s = Secrets::of_request(["secret"], "");
        let out = s.apply("secret secret".to_owned(), 13);
        assert!(out.len() <= 13, "{out}");
        assert!(!out.contains("secret"), "{out}");
    }

    #[test]
    fn debug_shows_no_value() {
        let s = Secrets::of_request(["Bearer t0ken-t0ken"], "");
        assert!(!format!("{s:?}").contains("t0ken"));
    }
}
