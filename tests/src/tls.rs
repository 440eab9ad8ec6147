//! A throw-away certificate authority for loopback TLS servers.
//!
//! [`TestCa`] makes a fresh self-signed CA (ECDSA P-256, via `rcgen`) and issues server certificates
//! from it. Clients trust [`TestCa::ca_pem`] as an extra root (reqwest: `tls_certs_merge` or
//! `tls_certs_only`); nothing is installed process-wide. The rustls configurations built here use
//! `rustls::crypto::aws_lc_rs::default_provider()` explicitly and never install a global provider.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::FakeError;

/// Names every fake's server certificate covers: the fakes listen on `127.0.0.1` and advertise
/// `https://localhost:PORT` URLs.
pub const LOCAL_NAMES: &[&str] = &["localhost", "127.0.0.1"];

/// ALPN for an HTTP/2-only server (APNs speaks nothing else).
pub const ALPN_H2: &[&[u8]] = &[b"h2"];

/// ALPN for a server speaking HTTP/2 and HTTP/1.1 (FCM and Google's token endpoint).
pub const ALPN_H2_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];

/// A fresh test certificate authority.
///
/// Its private key lives only in memory and is dropped with it.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Creates a new CA with a random P-256 key.
    ///
    /// # Errors
    /// [`FakeError::Certificate`] if key generation or signing fails.
    pub fn new() -> Result<Self, FakeError> {
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, "Tether test CA");
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let issuer = CertifiedIssuer::self_signed(params, key)?;
        Ok(Self { issuer })
    }

    /// The CA certificate, PEM encoded: what a client adds to its trusted roots.
    #[must_use]
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA certificate, DER encoded.
    #[must_use]
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a fresh server certificate for `names` (DNS names or IP literals, e.g.
    /// [`LOCAL_NAMES`]) and returns a rustls server configuration presenting it, offering the
    /// given ALPN protocols (e.g. [`ALPN_H2`] or [`ALPN_H2_HTTP1`]). TLS 1.2 and 1.3 with the
    /// aws-lc-rs provider; no client authentication.
    ///
    /// # Errors
    /// [`FakeError::Certificate`] for a name rcgen rejects, [`FakeError::Tls`] if rustls rejects
    /// the key or protocol set.
    pub fn server_config(
        &self,
        names: &[&str],
        alpn: &[&[u8]],
    ) -> Result<Arc<ServerConfig>, FakeError> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().copied().unwrap_or("localhost"),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;

        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
