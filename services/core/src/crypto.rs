//! AES-256-GCM encryption of merchant webhook signing secrets (`whsec_...`) under the key in
//! `WEBHOOK_SECRET` (the deploy runbook's name; `ENCRYPTION_MASTER_KEY` is accepted as an older
//! alias), with a fresh 96-bit nonce per row, and the helper that creates a merchant with its
//! secret encrypted (used by tests, sandbox seeding and psctl's smoke test).
//!
//! Precedence: `WEBHOOK_SECRET` when set; else `ENCRYPTION_MASTER_KEY`; both set must decode to
//! the same 32 bytes (hex and base64 spellings of one key are the same key), otherwise the worker
//! refuses to start rather than guess which key the stored rows were encrypted under.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::{ConfigError, Secret};

/// Name of the environment variable holding the key (the deploy runbook's Secret key).
pub const MASTER_KEY_ENV: &str = "WEBHOOK_SECRET";
/// The older name of [`MASTER_KEY_ENV`], still accepted.
pub const MASTER_KEY_ALIAS_ENV: &str = "ENCRYPTION_MASTER_KEY";

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error(
        "webhook secret could not be decrypted: wrong `WEBHOOK_SECRET` (or `ENCRYPTION_MASTER_KEY`) or corrupted row"
    )]
    Decrypt,
    #[error("webhook secret could not be encrypted")]
    Encrypt,
    #[error("stored nonce has {0} bytes, expected 12")]
    NonceLength(usize),
    #[error("decrypted webhook secret is not UTF-8")]
    NotUtf8,
    #[error("database error while storing the merchant: {0}")]
    Database(#[from] sqlx::Error),
}

/// The 32-byte master key; Debug is redacted and the bytes are never exposed.
#[derive(Clone)]
pub struct MasterKey(Secret<[u8; 32]>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// Parses 64 hex characters or base64 (standard or URL-safe, padded or not) of 32 bytes.
    /// `name` is the variable the value came from, for the error message.
    pub fn parse(name: &str, raw: &str) -> Result<Self, ConfigError> {
        let text = raw.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| ConfigError::invalid_secret(name, "not valid hex"))?
        } else {
            decode_base64(text).ok_or_else(|| {
                ConfigError::invalid_secret(name, "expected 32 bytes as 64 hex characters or base64 (e.g. `openssl rand -hex 32`)")
            })?
        };
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            ConfigError::invalid_secret(
                name,
                format!(
                    "decodes to {} bytes, expected 32 (`openssl rand -hex 32`)",
                    bytes.len()
                ),
            )
        })?;
        Ok(MasterKey(Secret::new(key)))
    }

    /// Reads `WEBHOOK_SECRET`, or its alias `ENCRYPTION_MASTER_KEY` (see the module's precedence).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_values(
            crate::config::env_secret_optional(MASTER_KEY_ENV)?.as_ref(),
            crate::config::env_secret_optional(MASTER_KEY_ALIAS_ENV)?.as_ref(),
        )
    }

    /// The key from the values of `WEBHOOK_SECRET` and `ENCRYPTION_MASTER_KEY` (either may be
    /// unset): the first wins; both set must be the same key.
    pub fn from_values(
        primary: Option<&Secret<String>>,
        alias: Option<&Secret<String>>,
    ) -> Result<Self, ConfigError> {
        match (primary, alias) {
            (None, None) => Err(ConfigError::Missing {
                name: MASTER_KEY_ENV.to_owned(),
                hint: format!(
                    "set `{MASTER_KEY_ENV}` (or its older name `{MASTER_KEY_ALIAS_ENV}`) to a 32-byte key, \
                     e.g. `openssl rand -hex 32`; in Kubernetes it comes from the `problemsolver-secrets` Secret"
                ),
            }),
            (Some(primary), None) => Self::parse(MASTER_KEY_ENV, primary.expose()),
            (None, Some(alias)) => Self::parse(MASTER_KEY_ALIAS_ENV, alias.expose()),
            (Some(primary), Some(alias)) => {
                let key = Self::parse(MASTER_KEY_ENV, primary.expose())?;
                let other = Self::parse(MASTER_KEY_ALIAS_ENV, alias.expose())?;
                if key.0.expose() == other.0.expose() {
                    Ok(key)
                } else {
                    Err(ConfigError::Conflict {
                        first: MASTER_KEY_ENV.to_owned(),
                        second: MASTER_KEY_ALIAS_ENV.to_owned(),
                        hint: "both name the key wrapping merchants' signing secrets; keep only \
                               `WEBHOOK_SECRET` with the key the stored rows were encrypted under"
                            .to_owned(),
                    })
                }
            }
        }
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(self.0.expose().into())
    }

    /// Encrypts with a fresh random nonce; returns `(ciphertext, nonce)` for the two columns.
    pub fn encrypt(&self, plaintext: &str) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        let nonce_bytes: [u8; 12] = rand::random();
        let ciphertext = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext.as_bytes())
            .map_err(|_| CryptoError::Encrypt)?;
        Ok((ciphertext, nonce_bytes.to_vec()))
    }

    /// Decrypts a row's `(ciphertext, nonce)`.
    pub fn decrypt(&self, ciphertext: &[u8], nonce: &[u8]) -> Result<Secret<String>, CryptoError> {
        if nonce.len() != 12 {
            return Err(CryptoError::NonceLength(nonce.len()));
        }
        let plaintext = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Decrypt)?;
        String::from_utf8(plaintext)
            .map(Secret::new)
            .map_err(|_| CryptoError::NotUtf8)
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(text).ok())
}

/// What a new merchant needs.
#[derive(Debug, Clone)]
pub struct NewMerchant {
    pub name: String,
    pub webhook_url: String,
    pub webhook_secret: Secret<String>,
}

/// Inserts a merchant with its webhook secret encrypted; returns the merchant id.
pub async fn create_merchant(
    pool: &PgPool,
    key: &MasterKey,
    merchant: &NewMerchant,
) -> Result<Uuid, CryptoError> {
    let (ciphertext, nonce) = key.encrypt(merchant.webhook_secret.expose())?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO merchants (name, webhook_url, webhook_secret_ciphertext, webhook_secret_nonce)
         VALUES ($1, $2, $3, $4) RETURNING id",
    )
    .bind(&merchant.name)
    .bind(&merchant.webhook_url)
    .bind(ciphertext)
    .bind(nonce)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// Reads and decrypts a merchant's webhook secret.
pub async fn merchant_secret(
    pool: &PgPool,
    key: &MasterKey,
    merchant_id: Uuid,
) -> Result<Secret<String>, CryptoError> {
    let (ciphertext, nonce): (Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT webhook_secret_ciphertext, webhook_secret_nonce FROM merchants WHERE id = $1",
    )
    .bind(merchant_id)
    .fetch_one(pool)
    .await?;
    key.decrypt(&ciphertext, &nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn round_trip_with_fresh_nonces() {
        let key = MasterKey::parse("K", HEX_KEY).unwrap();
        let (c1, n1) = key.encrypt("whsec_abc").unwrap();
        let (c2, n2) = key.encrypt("whsec_abc").unwrap();
        assert_ne!(n1, n2, "each row gets its own nonce");
        assert_ne!(c1, c2);
        assert_eq!(key.decrypt(&c1, &n1).unwrap().expose(), "whsec_abc");
        assert!(
            !c1.windows(9).any(|w| w == b"whsec_abc"),
            "ciphertext must not contain the plaintext"
        );
    }

    #[test]
    fn hex_and_base64_keys_are_the_same_key() {
        let bytes = hex::decode(HEX_KEY).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let from_hex = MasterKey::parse("K", HEX_KEY).unwrap();
        let from_b64 = MasterKey::parse("K", &b64).unwrap();
        let (c, n) = from_hex.encrypt("s").unwrap();
        assert_eq!(from_b64.decrypt(&c, &n).unwrap().expose(), "s");
    }

    #[test]
    fn wrong_key_or_tampering_fails() {
        let key = MasterKey::parse("K", HEX_KEY).unwrap();
        let other = MasterKey::parse("K", &"ab".repeat(32)).unwrap();
        let (mut c, n) = key.encrypt("whsec_x").unwrap();
        assert!(matches!(other.decrypt(&c, &n), Err(CryptoError::Decrypt)));
        c[0] ^= 1;
        assert!(matches!(key.decrypt(&c, &n), Err(CryptoError::Decrypt)));
        assert!(matches!(
            key.decrypt(&c, &n[..5]),
            Err(CryptoError::NonceLength(5))
        ));
    }

    #[test]
    fn webhook_secret_wins_and_the_alias_must_agree() {
        let secret = |text: &str| Secret::new(text.to_owned());
        let hex_key = secret(HEX_KEY);
        let b64_key = secret(
            &base64::engine::general_purpose::STANDARD.encode(hex::decode(HEX_KEY).unwrap()),
        );
        let other = secret(&"ab".repeat(32));
        let encrypted = MasterKey::parse("K", HEX_KEY)
            .unwrap()
            .encrypt("s")
            .unwrap();
        for (primary, alias) in [
            (Some(&hex_key), None),
            (None, Some(&hex_key)),
            (Some(&hex_key), Some(&b64_key)),
        ] {
            let key = MasterKey::from_values(primary, alias).unwrap();
            assert_eq!(
                key.decrypt(&encrypted.0, &encrypted.1).unwrap().expose(),
                "s"
            );
        }
        let conflict = MasterKey::from_values(Some(&hex_key), Some(&other))
            .unwrap_err()
            .to_string();
        assert!(
            conflict.contains("`WEBHOOK_SECRET`") && conflict.contains("`ENCRYPTION_MASTER_KEY`"),
            "{conflict}"
        );
        assert!(
            !conflict.contains(HEX_KEY) && !conflict.contains("abab"),
            "{conflict}"
        );
        let missing = MasterKey::from_values(None, None).unwrap_err().to_string();
        assert!(
            missing.contains("`WEBHOOK_SECRET`") && missing.contains("ENCRYPTION_MASTER_KEY"),
            "{missing}"
        );
        // A bad alias is named as the alias.
        let bad = MasterKey::from_values(None, Some(&secret("short")))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("`ENCRYPTION_MASTER_KEY`"), "{bad}");
    }

    #[test]
    fn bad_keys_are_clear_errors_without_the_value() {
        let error = MasterKey::parse("ENCRYPTION_MASTER_KEY", "c2hvcnQ=")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ENCRYPTION_MASTER_KEY") && error.contains("expected 32"),
            "{error}"
        );
        assert!(!error.contains("c2hvcnQ"), "{error}");
        let error = MasterKey::parse("ENCRYPTION_MASTER_KEY", "not a key!!")
            .unwrap_err()
            .to_string();
        assert!(!error.contains("not a key"), "{error}");
        assert_eq!(
            format!("{:?}", MasterKey::parse("K", HEX_KEY).unwrap()),
            "MasterKey([redacted])"
        );
    }
}
