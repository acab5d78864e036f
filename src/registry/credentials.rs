//! Registry credentials as Docker keeps them: `$DOCKER_CONFIG/config.json` (else
//! `~/.docker/config.json`), its `auths`, `credsStore` and `credHelpers`, read through the
//! `docker_credential` crate. The same file `docker login` writes and `docker push` reads, so
//! psctl checks a registry as the identity that pushes to it.
//!
//! A credential never leaves this module except inside [`Credentials`], whose `Debug` redacts
//! it, and as the `oci_client` auth value handed to the client.

use std::path::PathBuf;

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;
use secrecy::{ExposeSecret as _, SecretString};

/// How psctl authenticates to one registry host.
#[derive(Clone)]
pub enum Credentials {
    /// No credential is configured for the host: anonymous requests (and anonymous tokens).
    Anonymous,
    /// A user name and password (or access token), sent as Basic auth or exchanged at the
    /// registry's token service, whichever the registry's challenge asks for.
    Basic {
        username: String,
        password: SecretString,
        /// Where it was found, for messages: the config file, or the credential helper.
        source: String,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anonymous => write!(f, "Anonymous"),
            Self::Basic { source, .. } => write!(f, "Basic(<redacted> from {source})"),
        }
    }
}

impl Credentials {
    /// What the client sends.
    pub fn auth(&self) -> RegistryAuth {
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic {
                username, password, ..
            } => RegistryAuth::Basic(username.clone(), password.expose_secret().to_owned()),
        }
    }

    /// The secret part, for the output redactor.
    pub fn secret(&self) -> Option<&str> {
        match self {
            Self::Anonymous => None,
            Self::Basic { password, .. } => Some(password.expose_secret()),
        }
    }

    /// `anonymously` or `with the credentials of <source>`: safe to print.
    pub fn describe(&self) -> String {
        match self {
            Self::Anonymous => "anonymously".to_owned(),
            Self::Basic { source, .. } => format!("with the credentials of {source}"),
        }
    }
}

/// Why no credential could be read: the docker configuration is broken or its helper failed.
/// Carries no credential and no helper output beyond its last stderr line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CredentialError(pub String);

/// The directory Docker reads `config.json` from: `$DOCKER_CONFIG`, else `~/.docker`.
pub fn config_dir() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker")))
}

/// The key Docker files a host's credential under: Docker Hub's is its legacy index URL.
pub fn server_key(host: &str) -> &str {
    match host {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "https://index.docker.io/v1/",
        other => other,
    }
}

/// The credential Docker would use for `host` (`127.0.0.1:5000`, `ghcr.io`, an ECR host...).
/// No `config.json`, or no entry for the host, is anonymous access. Blocking: it may run a
/// credential helper.
pub fn lookup(host: &str) -> Result<Credentials, CredentialError> {
    let Some(dir) = config_dir() else {
        return Ok(Credentials::Anonymous);
    };
    let path = dir.join("config.json");
    if !path.is_file() {
        return Ok(Credentials::Anonymous);
    }
    let text = std::fs::read(&path)
        .map_err(|e| CredentialError(format!("cannot read {}: {e}", path.display())))?;
    let key = server_key(host);
    from_answer(
        docker_credential::get_credential_from_reader(text.as_slice(), key),
        &path.display().to_string(),
        helper_name(&text, key),
    )
}

/// The helper `config.json` names for `key` (`credHelpers`, else `credsStore`), for messages.
fn helper_name(config: &[u8], key: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(config).ok()?;
    value["credHelpers"][key]
        .as_str()
        .or_else(|| value["credsStore"].as_str())
        .filter(|name| !name.is_empty())
        .map(|name| format!("docker-credential-{name}"))
}

/// Reads `docker_credential`'s answer. Pure.
pub fn from_answer(
    answer: Result<DockerCredential, CredentialRetrievalError>,
    config: &str,
    helper: Option<String>,
) -> Result<Credentials, CredentialError> {
    let source = helper.clone().unwrap_or_else(|| config.to_owned());
    match answer {
        Ok(DockerCredential::UsernamePassword(username, password)) => Ok(Credentials::Basic {
            username,
            password: SecretString::from(password),
            source,
        }),
        // An identity token is an OAuth2 refresh token for the registry's token service, a
        // grant the client does not speak: without it psctl reads anonymously, and a registry
        // that needs it answers 401, which every caller already handles.
        Ok(DockerCredential::IdentityToken(_)) => {
            tracing::warn!(
                "{source} holds an identity token (refresh token) for this registry; psctl uses user name and password only and reads anonymously"
            );
            Ok(Credentials::Anonymous)
        }
        Err(CredentialRetrievalError::NoCredentialConfigured) => Ok(Credentials::Anonymous),
        // A store (`credsStore`) serves every host; one it has nothing for answers so.
        Err(CredentialRetrievalError::HelperFailure { stdout, stderr, .. })
            if stdout.contains("credentials not found")
                || stderr.contains("credentials not found") =>
        {
            Ok(Credentials::Anonymous)
        }
        Err(CredentialRetrievalError::HelperFailure { helper, stderr, .. }) => {
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            let last: String = last.chars().take(200).collect();
            Err(CredentialError(format!(
                "credential helper `{helper}` failed: {last}"
            )))
        }
        Err(CredentialRetrievalError::HelperCommunicationError) => Err(CredentialError(format!(
            "cannot run the credential helper `{}` that {config} names",
            helper.unwrap_or_else(|| "docker-credential-*".to_owned())
        ))),
        Err(other) => Err(CredentialError(format!("{config}: {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_credentials_are_filed_under_the_legacy_index() {
        assert_eq!(server_key("docker.io"), "https://index.docker.io/v1/");
        assert_eq!(
            server_key("registry-1.docker.io"),
            "https://index.docker.io/v1/"
        );
        assert_eq!(server_key("ghcr.io"), "ghcr.io");
        assert_eq!(server_key("127.0.0.1:5000"), "127.0.0.1:5000");
    }

    #[test]
    fn a_config_entry_is_basic_auth_and_nothing_prints_the_password() {
        let config = br#"{"auths":{"127.0.0.1:5000":{"auth":"cHNjdGw6aHVudGVyMi1zZWNyZXQ="}}}"#;
        let answer = docker_credential::get_credential_from_reader(&config[..], "127.0.0.1:5000");
        let credentials = from_answer(answer, "/c/config.json", None).unwrap();
        assert_eq!(
            credentials.auth(),
            RegistryAuth::Basic("psctl".into(), "hunter2-secret".into())
        );
        assert_eq!(credentials.secret(), Some("hunter2-secret"));
        for shown in [
            format!("{credentials:?}"),
            format!("{:?}", credentials.auth()),
            credentials.describe(),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(
            credentials.describe(),
            "with the credentials of /c/config.json"
        );
        let other = docker_credential::get_credential_from_reader(&config[..], "ghcr.io");
        assert!(matches!(
            from_answer(other, "/c/config.json", None).unwrap(),
            Credentials::Anonymous
        ));
    }

    #[test]
    fn a_store_without_an_entry_is_anonymous_and_a_broken_helper_an_error() {
        let not_found = Err(CredentialRetrievalError::HelperFailure {
            helper: "docker-credential-pass".into(),
            stdout: "credentials not found in native keychain\n".into(),
            stderr: String::new(),
        });
        assert!(matches!(
            from_answer(not_found, "c", Some("docker-credential-pass".into())).unwrap(),
            Credentials::Anonymous
        ));
        let broken = Err(CredentialRetrievalError::HelperFailure {
            helper: "docker-credential-pass".into(),
            stdout: r#"{"Secret":"leaked-value"}"#.into(),
            stderr: "gpg: decryption failed\n".into(),
        });
        let error = from_answer(broken, "c", None).unwrap_err().to_string();
        assert_eq!(
            error,
            "credential helper `docker-credential-pass` failed: gpg: decryption failed"
        );
        let missing = Err(CredentialRetrievalError::HelperCommunicationError);
        let error = from_answer(missing, "c", Some("docker-credential-ecr-login".into()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("docker-credential-ecr-login"), "{error}");
        let token = Ok(DockerCredential::IdentityToken("refresh".into()));
        assert!(matches!(
            from_answer(token, "c", None).unwrap(),
            Credentials::Anonymous
        ));
    }

    #[test]
    fn the_helper_named_for_a_host_wins_over_the_store() {
        let config = br#"{"credsStore":"desktop","credHelpers":{"1.dkr.ecr.eu-west-1.amazonaws.com":"ecr-login"}}"#;
        assert_eq!(
            helper_name(config, "1.dkr.ecr.eu-west-1.amazonaws.com").as_deref(),
            Some("docker-credential-ecr-login")
        );
        assert_eq!(
            helper_name(config, "ghcr.io").as_deref(),
            Some("docker-credential-desktop")
        );
        assert_eq!(helper_name(b"{}", "ghcr.io"), None);
    }
}
