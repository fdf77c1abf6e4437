//! Mutual TLS for QUIC: node certificates issued by a cluster CA, and a dev
//! helper that generates them.
//!
//! A node's identity is the first DNS name (subject alternative name) of its
//! certificate, which must equal its node id. Both sides present a
//! certificate; each verifies the other's chain against the cluster CA, and
//! the protocol handshake then refuses a `Hello` whose node id differs from
//! the certificate's.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What a node needs for mutual TLS: its certificate chain and key, and the
/// cluster CA it trusts.
pub struct Tls {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) roots: Arc<RootCertStore>,
    identity: String,
}

impl Clone for Tls {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            roots: self.roots.clone(),
            identity: self.identity.clone(),
        }
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// A certificate or key that could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// PEM data did not parse.
    #[error("bad PEM in {what}: {reason}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The parser's message.
        reason: String,
    },
    /// The certificate carries no DNS name to serve as the node id.
    #[error("the certificate names no node (no DNS subject alternative name)")]
    NoIdentity,
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// Generating dev certificates failed.
    #[error("generating certificates: {0}")]
    Generate(String),
}

impl Tls {
    /// From PEM text: the node's certificate (chain), its private key, and the
    /// cluster CA certificate.
    pub fn from_pem(cert_pem: &str, key_pem: &str, ca_pem: &str) -> Result<Self, TlsError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::Pem { what: "certificate", reason: e.to_string() })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::Pem { what: "private key", reason: e.to_string() })?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            let ca = ca.map_err(|e| TlsError::Pem { what: "CA certificate", reason: e.to_string() })?;
            roots.add(ca).map_err(|e| TlsError::Config(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Pem { what: "CA certificate", reason: "no certificate found".into() });
        }
        let leaf = chain.first().ok_or(TlsError::Pem { what: "certificate", reason: "no certificate found".into() })?;
        let identity = identity_of(leaf).ok_or(TlsError::NoIdentity)?;
        Ok(Self { chain, key, roots: Arc::new(roots), identity })
    }

    /// From PEM files, as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
        ca: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| TlsError::Read { path: p.display().to_string(), source })
        };
        Self::from_pem(&read(cert.as_ref())?, &read(key.as_ref())?, &read(ca.as_ref())?)
    }

    /// The node id this certificate names.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// The node id a certificate names: its first DNS subject alternative name.
pub(crate) fn identity_of(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    // A wildcard names no single node.
    cert.valid_dns_names().next().filter(|name| !name.contains('*')).map(str::to_owned)
}

/// **Development only.** A throw-away cluster CA that issues node
/// certificates, for examples, tests and local demos. Its key lives in
/// memory and is lost with it; production clusters use a real CA and
/// [`Tls::from_pem_files`].
pub struct DevCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    cert_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa(development only)")
    }
}

impl DevCa {
    /// A new CA for `cluster`.
    pub fn generate(cluster: &str) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let params = Self::params(cluster)?;
        let cert = params.self_signed(&key).map_err(gen_err)?;
        Ok(Self { params, key, cert_pem: cert.pem() })
    }

    /// The CA of `cluster` saved earlier with [`ca_pem`](Self::ca_pem) and
    /// [`key_pem`](Self::key_pem), so that several processes on one machine
    /// can issue certificates from one development CA.
    pub fn from_pem(cluster: &str, ca_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let key = rcgen::KeyPair::from_pem(key_pem).map_err(gen_err)?;
        Ok(Self { params: Self::params(cluster)?, key, cert_pem: ca_pem.to_owned() })
    }

    fn params(cluster: &str) -> Result<rcgen::CertificateParams, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("footlight dev CA for {cluster}"));
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        Ok(params)
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA's private key, PEM. **Development only**: whoever holds it can
    /// issue certificates the cluster trusts.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate and key for node `node`, PEM.
    pub fn issue_pem(&self, node: &str) -> Result<(String, String), TlsError> {
        let key = rcgen::KeyPair::generate().map_err(gen_err)?;
        let mut params = rcgen::CertificateParams::new(vec![node.to_owned()]).map_err(gen_err)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, node);
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).map_err(gen_err)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// A ready [`Tls`] for node `node`.
    pub fn issue(&self, node: &str) -> Result<Tls, TlsError> {
        let (cert, key) = self.issue_pem(node)?;
        Tls::from_pem(&cert, &key, &self.ca_pem())
    }
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}
