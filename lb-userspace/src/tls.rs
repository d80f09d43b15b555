//! TLS of the runtime: listener certificates from PEM, the certificate chosen by SNI (exact
//! name, then `*.` wildcard, then the default), ALPN, the `tls_cipher_policy_*` mapping to
//! rustls protocol versions and cipher suites (see docs/l7.md), and the client config of
//! HTTPS backends and health checks.
use std::{collections::BTreeMap, sync::Arc};

use rustls::{
    SupportedCipherSuite, SupportedProtocolVersion,
    crypto::{CryptoProvider, ring},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::model::l7::{TlsPolicy, TlsSettings};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.crt holds no PEM certificate")]
    NoCertificate,
    #[error("tls.crt: {0}")]
    Certificate(String),
    #[error("tls.key: {0}")]
    Key(String),
    #[error("tls.key does not match the certificate of tls.crt")]
    Mismatch,
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Key(e.to_string()))?;
    let provider = ring::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch,
        other => TlsError::Key(other.to_string()),
    })?;
    Ok(ck)
}

/// Picks a certificate by SNI.
#[derive(Debug)]
pub struct SniResolver {
    exact: BTreeMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` → stored as `example.com`.
    wildcard: BTreeMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub fn new(settings: &TlsSettings) -> Result<SniResolver, TlsError> {
        let mut r = SniResolver { exact: BTreeMap::new(), wildcard: BTreeMap::new(), default: None };
        for c in &settings.certificates {
            let key = Arc::new(certified_key(&c.cert_pem, &c.key_pem)?);
            if r.default.is_none() {
                r.default = Some(key.clone());
            }
            for h in &c.hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix("*.") {
                    Some(suffix) => r.wildcard.entry(suffix.to_owned()).or_insert_with(|| key.clone()),
                    None => r.exact.entry(h).or_insert_with(|| key.clone()),
                };
            }
        }
        Ok(r)
    }

    pub fn pick(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = server_name.map(str::to_ascii_lowercase) {
            if let Some(k) = self.exact.get(&name) {
                return Some(k.clone());
            }
            if let Some((_, rest)) = name.split_once('.')
                && let Some(k) = self.wildcard.get(rest)
            {
                return Some(k.clone());
            }
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// Protocol versions and cipher suites of a policy, as ALB's policy table lists them, within
/// what rustls implements (TLS 1.2 and 1.3, AEAD suites with ECDHE only): TLS 1.0/1.1, CBC
/// and static-RSA suites are not offered (RFC 8996). TLS 1.2 suites: ECDHE-ECDSA/RSA with
/// AES-128/256-GCM, the GCM suites every ALB policy lists (none lists ChaCha20 for TLS 1.2).
/// TLS 1.3 suites: AES-128/256-GCM and ChaCha20-Poly1305, as `..._with_1_3` lists them (its
/// CCM suites are not in rustls). Versions: ALB's table gives TLS 1.3 only to
/// `..._1_2_strict_with_1_3`; lb also offers it with the policies named for a lowest version
/// (`1_0`, the default, `1_1`, `1_2`), which have no `_with_1_3` variant and forbid nothing
/// TLS 1.3 brings. Only `..._1_2_strict`, whose sibling exists to add 1.3, is TLS 1.2 alone.
pub fn policy(p: TlsPolicy) -> (Vec<&'static SupportedProtocolVersion>, Vec<SupportedCipherSuite>) {
    use rustls::crypto::ring::cipher_suite as cs;
    let tls13 = [cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256];
    let tls12 = [
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ];
    match p {
        TlsPolicy::Tls12Strict => (vec![&rustls::version::TLS12], tls12.to_vec()),
        TlsPolicy::Tls10 | TlsPolicy::Tls11 | TlsPolicy::Tls12 | TlsPolicy::Tls12StrictWith13 => {
            (vec![&rustls::version::TLS13, &rustls::version::TLS12], [&tls13[..], &tls12[..]].concat())
        }
    }
}

/// The rustls server configuration of a listener.
pub fn server_config(settings: &TlsSettings, http2: bool) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (versions, suites) = policy(settings.policy);
    let provider = CryptoProvider { cipher_suites: suites, ..ring::default_provider() };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(settings)?));
    cfg.alpn_protocols = if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(cfg))
}

/// Client configuration for HTTPS and gRPC-over-TLS backends. Like ALB and CLB, the proxy
/// does not verify backend certificates (in-cluster backends use self-signed ones).
pub fn backend_client_config() -> rustls::ClientConfig {
    let provider = Arc::new(ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth()
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
