//! `kubernetes.io/tls` Secrets: the certificate chain (`tls.crt`) and key (`tls.key`) a
//! listener serves, checked to be PEM that parses and a key that matches the certificate.
use k8s_openapi::api::core::v1::Secret;
use rustls::{crypto::ring, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

/// A Secret's certificate chain and key, as PEM, known to be usable.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsPair {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The checked PEM pair of `secret` (named `namespace/name` in errors).
pub fn tls_pair(secret: &Secret, namespace: &str, name: &str) -> Result<TlsPair, String> {
    let data = secret.data.as_ref();
    let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.clone()).filter(|b| !b.is_empty());
    let cert_pem = get("tls.crt").ok_or_else(|| format!("Secret {namespace}/{name} has no tls.crt"))?;
    let key_pem = get("tls.key").ok_or_else(|| format!("Secret {namespace}/{name} has no tls.key"))?;
    check_pem(&cert_pem, &key_pem).map_err(|e| format!("Secret {namespace}/{name}: {e}"))?;
    Ok(TlsPair { cert_pem, key_pem })
}

/// Whether a certificate chain and key parse and belong together.
fn check_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<(), String> {
    let chain =
        CertificateDer::pem_slice_iter(cert_pem).collect::<Result<Vec<_>, _>>().map_err(|e| format!("tls.crt: {e}"))?;
    if chain.is_empty() {
        return Err("tls.crt holds no PEM certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("tls.key: {e}"))?;
    CertifiedKey::from_der(chain, key, &ring::default_provider()).map(|_| ()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => "tls.key does not match the certificate of tls.crt".into(),
        other => format!("tls.key: {other}"),
    })
}
