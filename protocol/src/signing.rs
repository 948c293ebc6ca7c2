//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>).
//!
//! A signature is `v1,<base64(HMAC-SHA256(key, "{msg_id}.{timestamp}.{body}"))>`,
//! where `key` is the base64-decoded part of a `whsec_…` secret. Several
//! signatures are separated by spaces (used during secret rotation).
//!
//! Must not: read the clock, log, or print a secret (`Secret`'s `Debug` is
//! redacted and it has no `Display`).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The prefix of an encoded secret, as Svix and the Standard Webhooks
/// libraries print and accept it.
pub const SECRET_PREFIX: &str = "whsec_";
/// The version tag of the only signature scheme we emit.
pub const SIGNATURE_VERSION: &str = "v1";
/// Smallest key we accept, in bytes (the spec recommends 24 to 64).
pub const MIN_SECRET_BYTES: usize = 24;
/// Largest key we accept, in bytes.
pub const MAX_SECRET_BYTES: usize = 64;

/// Why a secret string was refused. Never carries the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The part after `whsec_` is not standard base64.
    #[error("the signing secret is not valid base64 after the \"whsec_\" prefix")]
    NotBase64,
    /// The decoded key is shorter or longer than the spec allows.
    #[error("the signing secret decodes to {len} bytes; between {MIN_SECRET_BYTES} and {MAX_SECRET_BYTES} are required")]
    BadLength {
        /// decoded length in bytes
        len: usize,
    },
}

/// An HMAC key. Its `Debug` output is redacted so that it can sit inside
/// structs that get logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// Parses `whsec_<base64>`; like the reference libraries, the prefix is
    /// optional.
    pub fn parse(encoded: &str) -> Result<Self, SecretError> {
        let b64 = encoded.strip_prefix(SECRET_PREFIX).unwrap_or(encoded);
        let key = B64.decode(b64.trim()).map_err(|_| SecretError::NotBase64)?;
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::BadLength { len: key.len() });
        }
        Ok(Self(key))
    }

    /// Wraps raw key bytes (for example fresh random bytes).
    pub fn from_bytes(key: &[u8]) -> Result<Self, SecretError> {
        if !(MIN_SECRET_BYTES..=MAX_SECRET_BYTES).contains(&key.len()) {
            return Err(SecretError::BadLength { len: key.len() });
        }
        Ok(Self(key.to_vec()))
    }

    /// The `whsec_<base64>` form handed to the subscriber. Deliberately a
    /// method and not `Display`, so that a secret never lands in a log by
    /// accident of formatting.
    pub fn expose_encoded(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.0))
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0)
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

/// One signature: `v1,<base64>`.
pub fn sign(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
    format!("{SIGNATURE_VERSION},{}", B64.encode(tag))
}

/// The `webhook-signature` header value: one signature per secret, separated
/// by a space, in the order given (current secret first).
pub fn signature_header<'a>(
    secrets: impl IntoIterator<Item = &'a Secret>,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .into_iter()
        .map(|s| sign(s, msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// True when any `v1,` signature in `header` (space separated) matches.
/// Unknown versions are skipped, as the spec asks. The comparison is constant
/// time. The timestamp's freshness is the caller's business: this crate does
/// not read the clock.
pub fn verify(secret: &Secret, msg_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let expected = secret.mac(msg_id, timestamp, body).finalize().into_bytes();
    header.split_ascii_whitespace().any(|part| {
        let Some((version, sig)) = part.split_once(',') else {
            return false;
        };
        if version != SIGNATURE_VERSION {
            return false;
        }
        match B64.decode(sig) {
            Ok(given) => given.len() == expected.len() && bool::from(given.ct_eq(&expected)),
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector published with the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const EXPECTED: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn known_answer_vector() {
        let secret = Secret::parse(SECRET).unwrap();
        assert_eq!(sign(&secret, MSG_ID, TS, BODY), EXPECTED);
        assert!(verify(&secret, MSG_ID, TS, BODY, EXPECTED));
    }

    #[test]
    fn prefix_is_optional() {
        let a = Secret::parse(SECRET).unwrap();
        let b = Secret::parse(SECRET.trim_start_matches("whsec_")).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn verify_rejects_tampering() {
        let secret = Secret::parse(SECRET).unwrap();
        assert!(!verify(&secret, MSG_ID, TS + 1, BODY, EXPECTED));
        assert!(!verify(&secret, "msg_other", TS, BODY, EXPECTED));
        assert!(!verify(&secret, MSG_ID, TS, br#"{"test": 1}"#, EXPECTED));
        assert!(!verify(
            &secret,
            MSG_ID,
            TS,
            BODY,
            "v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        ));
        assert!(!verify(&secret, MSG_ID, TS, BODY, "v1,not base64"));
        assert!(!verify(&secret, MSG_ID, TS, BODY, ""));
    }

    #[test]
    fn several_signatures_any_matches() {
        let old = Secret::parse(SECRET).unwrap();
        let new = Secret::from_bytes(&[7u8; 32]).unwrap();
        let header = signature_header([&new, &old], MSG_ID, TS, BODY);
        let parts: Vec<_> = header.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1], EXPECTED);
        assert!(verify(&old, MSG_ID, TS, BODY, &header));
        assert!(verify(&new, MSG_ID, TS, BODY, &header));
        let stranger = Secret::from_bytes(&[9u8; 32]).unwrap();
        assert!(!verify(&stranger, MSG_ID, TS, BODY, &header));
    }

    #[test]
    fn debug_redacts_secret() {
        let secret = Secret::parse(SECRET).unwrap();
        let shown = format!("{secret:?}");
        assert_eq!(shown, "Secret(<redacted>)");
        assert!(!shown.contains("MfKQ"));
    }

    #[test]
    fn rejects_bad_secrets() {
        assert_eq!(Secret::parse("whsec_***"), Err(SecretError::NotBase64));
        assert_eq!(
            Secret::parse("whsec_AAAA"),
            Err(SecretError::BadLength { len: 3 })
        );
        let round = Secret::from_bytes(&[1u8; 24]).unwrap();
        assert_eq!(Secret::parse(&round.expose_encoded()).unwrap(), round);
    }
}
