//! TLS: the certificate the server presents and the acceptor for HTTPS connections. Clients
//! built on client-go (kubectl, the Helm engine) send credentials only over TLS, as they would
//! to a real API server, so the server answers HTTPS; a connection whose first byte is not a TLS
//! handshake is served as plain HTTP on the same port (kube-rs clients inside the sandbox).

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The `kubernetes` Service's cluster IP (the first of the service range).
pub const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

/// The server's certificate, its private key and the CA that signed it, all PEM. The CA goes
/// into kubeconfigs (`certificate-authority-data`).
#[derive(Clone)]
pub struct TlsIdentity {
    /// The CA certificate clients trust.
    pub ca_pem: String,
    /// The serving certificate (for `127.0.0.1`, `localhost`, the `kubernetes` Service's names and
    /// IP, and the addresses given to [`TlsIdentity::generate_for`]).
    pub cert_pem: String,
    /// The serving certificate's private key: a secret.
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsIdentity")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the certificates failed.
    #[error("cannot generate the API server's certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The PEM given does not hold a usable certificate and key.
    #[error("the API server's certificate or key is unusable: {0}")]
    Unusable(String),
}

impl TlsIdentity {
    /// A fresh CA (`psctl-sandbox-ca`) and a serving certificate it signed for `127.0.0.1`,
    /// `localhost` and the in-cluster names of the `kubernetes` Service.
    pub fn generate() -> Result<Self, TlsError> {
        Self::generate_for(&[])
    }

    /// [`Self::generate`], the certificate also valid for `addresses`: where pods reach the
    /// server (kube-apiserver puts its advertise address and the `kubernetes` Service's IP in
    /// its serving certificate for the same reason).
    pub fn generate_for(addresses: &[std::net::IpAddr]) -> Result<Self, TlsError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "psctl-sandbox-ca");
        ca_params.distinguished_name = ca_name;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let key = KeyPair::generate()?;
        let mut names = vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
            KUBERNETES_SERVICE_IP.to_owned(),
        ];
        names.extend(addresses.iter().map(ToString::to_string));
        names.dedup();
        let mut params = CertificateParams::new(names)?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "kube-apiserver");
        params.distinguished_name = name;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The acceptor for HTTPS connections (ALPN h2 and http/1.1).
    pub fn acceptor(&self) -> Result<TlsAcceptor, TlsError> {
        let unusable = |what: &str, error: &dyn std::fmt::Display| {
            TlsError::Unusable(format!("{what}: {error}"))
        };
        let certs = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| unusable("certificate", &error))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|error| unusable("key", &error))?;
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|error| unusable("protocol versions", &error))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|error| unusable("certificate and key", &error))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_identity_makes_an_acceptor_and_hides_its_key() {
        let identity = TlsIdentity::generate().expect("generated");
        assert!(identity.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_ne!(identity.ca_pem, identity.cert_pem);
        identity.acceptor().expect("usable");
        assert!(!format!("{identity:?}").contains(&identity.key_pem));
    }
}
