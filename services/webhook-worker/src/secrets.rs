//! Merchant signing secrets at rest: decrypts `merchants.webhook_secret_ciphertext` with the
//! AES-256-GCM master key (`ENCRYPTION_MASTER_KEY`, see problemsolver-core) into a signing key.

use problemsolver_core::crypto::MasterKey;

use crate::signing::SigningKey;
use crate::worker::SecretOpener;

/// The production [`SecretOpener`]. Errors name the cause, never the secret.
#[derive(Debug, Clone)]
pub struct MasterKeyOpener(pub MasterKey);

impl SecretOpener for MasterKeyOpener {
    fn open(&self, ciphertext: &[u8], nonce: &[u8]) -> Result<SigningKey, String> {
        let secret = self
            .0
            .decrypt(ciphertext, nonce)
            .map_err(|error| error.to_string())?;
        SigningKey::from_whsec(secret.expose()).map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn opens_what_core_encrypted_and_refuses_a_wrong_key() {
        let key = MasterKey::parse("K", KEY).unwrap();
        let (ciphertext, nonce) = key.encrypt("whsec_c2VjcmV0").unwrap();
        let opened = MasterKeyOpener(key).open(&ciphertext, &nonce).unwrap();
        let expected = SigningKey::from_whsec("whsec_c2VjcmV0").unwrap();
        assert_eq!(
            opened.sign("msg_1", 1, b"{}"),
            expected.sign("msg_1", 1, b"{}")
        );

        let other = MasterKey::parse("K", &KEY.replace("00", "ff")).unwrap();
        let error = MasterKeyOpener(other)
            .open(&ciphertext, &nonce)
            .unwrap_err();
        assert!(error.contains("could not be decrypted"), "{error}");
    }
}
