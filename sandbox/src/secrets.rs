//! The sandbox's generated secrets: created once, kept in 0600 files under `<state>/secrets`,
//! and never printed. Values are wrapped in [`Redacted`] so Debug output cannot leak them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use rand::RngCore as _;

/// A secret string whose Debug and Display show only `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Redacted(String);

impl Redacted {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::fmt::Display for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// What the sandbox generates once and keeps.
#[derive(Debug, Clone)]
pub struct Generated {
    pub binance_api_key: Redacted,
    pub binance_api_secret: Redacted,
    /// 32 bytes as 64 hex characters.
    pub encryption_master_key: Redacted,
    /// `whsec_<base64>`: the seeded merchant's signing secret, shared with the merchant sink.
    pub merchant_webhook_secret: Redacted,
    /// The API server's administrator token (user `sandbox-admin` in `system:masters`), written
    /// into the kubeconfig and used by the daemon's controllers and kubelet.
    pub api_admin_token: Redacted,
}

const FILES: [&str; 5] = [
    "binance-api-key",
    "binance-api-secret",
    "encryption-master-key",
    "merchant-webhook-secret",
    "api-admin-token",
];

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

impl Generated {
    fn fresh() -> Self {
        Self {
            binance_api_key: Redacted::new(hex::encode(random_bytes::<24>())),
            binance_api_secret: Redacted::new(hex::encode(random_bytes::<32>())),
            encryption_master_key: Redacted::new(hex::encode(random_bytes::<32>())),
            merchant_webhook_secret: Redacted::new(format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode(random_bytes::<24>())
            )),
            api_admin_token: Redacted::new(hex::encode(random_bytes::<32>())),
        }
    }

    fn values(&self) -> [&Redacted; 5] {
        [
            &self.binance_api_key,
            &self.binance_api_secret,
            &self.encryption_master_key,
            &self.merchant_webhook_secret,
            &self.api_admin_token,
        ]
    }

    /// Reads the secrets from `dir`, generating and writing (0600) any that are missing.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create `{}`", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict `{}` to its owner", dir.display()))?;
        let fresh = Self::fresh();
        let mut loaded = Vec::with_capacity(FILES.len());
        for (name, candidate) in FILES.iter().zip(fresh.values()) {
            let path = dir.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => {
                    loaded.push(Redacted::new(text.trim().to_owned()))
                }
                _ => {
                    write_private(&path, candidate.expose())?;
                    loaded.push(candidate.clone());
                }
            }
        }
        let mut values = loaded.into_iter();
        let mut next = || {
            values
                .next()
                .unwrap_or_else(|| Redacted::new(String::new()))
        };
        Ok(Self {
            binance_api_key: next(),
            binance_api_secret: next(),
            encryption_master_key: next(),
            merchant_webhook_secret: next(),
            api_admin_token: next(),
        })
    }

    /// Reads existing secrets; an error names the missing file.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let read = |name: &str| -> anyhow::Result<Redacted> {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "cannot read `{}`: run `psctl-sandbox up` to generate it",
                    path.display()
                )
            })?;
            Ok(Redacted::new(text.trim().to_owned()))
        };
        Ok(Self {
            binance_api_key: read(FILES[0])?,
            binance_api_secret: read(FILES[1])?,
            encryption_master_key: read(FILES[2])?,
            merchant_webhook_secret: read(FILES[3])?,
            api_admin_token: read(FILES[4])?,
        })
    }

    /// The runtime Secret's data (`problemsolver-secrets`).
    pub fn runtime_secret(&self, database_url: &str) -> BTreeMap<String, Redacted> {
        BTreeMap::from([
            (
                "DATABASE_URL".to_owned(),
                Redacted::new(database_url.to_owned()),
            ),
            ("BINANCE_API_KEY".to_owned(), self.binance_api_key.clone()),
            (
                "BINANCE_API_SECRET".to_owned(),
                self.binance_api_secret.clone(),
            ),
            // The deploy runbook's name for the key wrapping merchants' signing secrets, and its
            // older name with the same key, so a rollback to a build that reads only the older
            // name still starts.
            (
                "WEBHOOK_SECRET".to_owned(),
                self.encryption_master_key.clone(),
            ),
            (
                "ENCRYPTION_MASTER_KEY".to_owned(),
                self.encryption_master_key.clone(),
            ),
        ])
    }
}

/// The API server's TLS identity (CA, serving certificate, key), kept in `dir` as
/// `api-ca.crt`, `api-tls.crt` and `api-tls.key` (0600), with the extra addresses the
/// certificate is valid for in `api-tls.addresses` (where pods reach the server). With `create`,
/// a missing identity, or one made for other addresses, is generated and written; without, the
/// stored one is used as it is and a missing file is an error naming it.
pub fn api_tls(
    dir: &Path,
    create: bool,
    addresses: &[std::net::IpAddr],
) -> anyhow::Result<psctl_sandbox_apiserver::tls::TlsIdentity> {
    let names = ["api-ca.crt", "api-tls.crt", "api-tls.key"];
    let read = |name: &str| std::fs::read_to_string(dir.join(name));
    let wanted: String = addresses
        .iter()
        .map(|address| format!("{address}\n"))
        .collect();
    if let (Ok(ca_pem), Ok(cert_pem), Ok(key_pem)) =
        (read(names[0]), read(names[1]), read(names[2]))
        && (!create || read("api-tls.addresses").is_ok_and(|recorded| recorded == wanted))
    {
        return Ok(psctl_sandbox_apiserver::tls::TlsIdentity {
            ca_pem,
            cert_pem,
            key_pem,
        });
    }
    if !create {
        anyhow::bail!(
            "cannot read the API server's certificate in `{}` ({}): run `psctl-sandbox up` to generate it",
            dir.display(),
            names.join(", ")
        );
    }
    let identity = psctl_sandbox_apiserver::tls::TlsIdentity::generate_for(addresses)?;
    for (name, contents) in
        names
            .iter()
            .zip([&identity.ca_pem, &identity.cert_pem, &identity.key_pem])
    {
        write_private(&dir.join(name), contents)?;
    }
    write_private(&dir.join("api-tls.addresses"), &wanted)?;
    Ok(identity)
}

/// Writes `contents` to `path` readable by the owner only (created 0600, never wider).
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("cannot write `{}`", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move `{}` into place", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_created_private_and_kept_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let first = Generated::load_or_create(dir.path()).unwrap();
        let second = Generated::load_or_create(dir.path()).unwrap();
        assert_eq!(first.encryption_master_key, second.encryption_master_key);
        assert_eq!(first.encryption_master_key.expose().len(), 64);
        assert!(first.merchant_webhook_secret.expose().starts_with("whsec_"));
        for name in FILES {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let loaded = Generated::load(dir.path()).unwrap();
        assert_eq!(loaded.binance_api_secret, first.binance_api_secret);
    }

    #[test]
    fn debug_output_never_shows_a_value() {
        let generated = Generated::fresh();
        let debug = format!("{generated:?}");
        assert!(!debug.contains(generated.encryption_master_key.expose()));
        assert!(debug.contains("[redacted]"));
        let data = generated.runtime_secret("postgres://u@h/db");
        assert!(!format!("{data:?}").contains("postgres://"));
    }

    #[test]
    fn api_tls_is_generated_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let gateway = [std::net::IpAddr::from([172, 18, 0, 1])];
        assert!(api_tls(dir.path(), false, &gateway).is_err());
        let first = api_tls(dir.path(), true, &gateway).unwrap();
        let second = api_tls(dir.path(), false, &gateway).unwrap();
        assert_eq!(
            api_tls(dir.path(), true, &gateway).unwrap().ca_pem,
            first.ca_pem
        );
        // Another gateway: a certificate valid for it, under a new CA.
        let moved = api_tls(dir.path(), true, &[std::net::IpAddr::from([172, 19, 0, 1])]).unwrap();
        assert_ne!(moved.ca_pem, first.ca_pem);
        // Without `create`, the stored identity is used whatever it was made for.
        assert_eq!(
            api_tls(dir.path(), false, &gateway).unwrap().ca_pem,
            moved.ca_pem
        );
        assert_eq!(first.ca_pem, second.ca_pem);
        let mode = std::fs::metadata(dir.path().join("api-tls.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = Generated::load(dir.path()).unwrap_err().to_string();
        assert!(error.contains("binance-api-key"), "{error}");
    }
}
