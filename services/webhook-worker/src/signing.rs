//! Standard Webhooks signing: the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.
//!
//! The signature is `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! base64-decoded part of the merchant's `whsec_…` secret. Nothing here logs or formats a key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Standard Webhooks puts before the base64 key material.
const SECRET_PREFIX: &str = "whsec_";

/// Why a merchant secret cannot be used for signing. Never carries the secret itself.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningKeyError {
    #[error("the webhook secret is empty; store a `whsec_<base64>` secret for the merchant")]
    Empty,
    #[error(
        "the webhook secret is not valid base64 after the `whsec_` prefix; store a `whsec_<base64>` secret for the merchant"
    )]
    NotBase64,
}

/// A decoded signing key. Debug redacts the bytes.
#[derive(Clone)]
pub struct SigningKey {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Decodes a `whsec_<base64>` secret. A secret without the prefix is decoded as base64 too,
    /// as the reference libraries do.
    pub fn from_whsec(secret: &str) -> Result<Self, SigningKeyError> {
        let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
        if encoded.is_empty() {
            return Err(SigningKeyError::Empty);
        }
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|_| SigningKeyError::NotBase64)?;
        if bytes.is_empty() {
            return Err(SigningKeyError::Empty);
        }
        Ok(Self { bytes })
    }

    /// The `v1,<base64>` signature of one message.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        // HMAC accepts keys of any length, so this cannot fail.
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.bytes) else {
            unreachable!("HMAC-SHA256 takes keys of any length")
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The `webhook-id` of a queue row: stable across retries because it derives from the row id.
pub fn message_id(row_id: Uuid) -> String {
    format!("msg_{}", row_id.simple())
}

/// The three headers of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
}

/// Signs `body` for the row `row_id` at `timestamp` (unix seconds).
pub fn sign_delivery(key: &SigningKey, row_id: Uuid, timestamp: i64, body: &[u8]) -> SignedHeaders {
    let id = message_id(row_id);
    let signature = key.sign(&id, timestamp, body);
    SignedHeaders {
        id,
        timestamp,
        signature,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification's reference test-suite.
        let key = SigningKey::from_whsec("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn message_id_is_stable_and_prefixed() {
        let id = Uuid::parse_str("6f1c1c2e-7f53-4a47-9a1b-1f1f7f3c0a01").unwrap();
        assert_eq!(message_id(id), "msg_6f1c1c2e7f534a479a1b1f1f7f3c0a01");
        assert_eq!(message_id(id), message_id(id));
    }

    #[test]
    fn signature_changes_with_every_signed_part() {
        let key = SigningKey::from_whsec("whsec_c2VjcmV0LWtleS1ieXRlcw==").unwrap();
        let base = key.sign("msg_1", 100, b"{}");
        assert_ne!(base, key.sign("msg_2", 100, b"{}"));
        assert_ne!(base, key.sign("msg_1", 101, b"{}"));
        assert_ne!(base, key.sign("msg_1", 100, b"{ }"));
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        assert_eq!(
            SigningKey::from_whsec("whsec_").unwrap_err(),
            SigningKeyError::Empty
        );
        let err = SigningKey::from_whsec("whsec_not base64!!").unwrap_err();
        assert_eq!(err, SigningKeyError::NotBase64);
        assert!(!err.to_string().contains("not base64!!"));
        let key = SigningKey::from_whsec("whsec_c2VjcmV0").unwrap();
        assert_eq!(format!("{key:?}"), "SigningKey(<redacted>)");
    }
}
