//! `kubernetes.io/tls` Secrets: the certificate chain (`tls.crt`) and key (`tls.key`) a
//! listener serves, checked to be PEM that parses and a key that matches the certificate.
use k8s_openapi::api::core::v1::Secret;
use rustls::{crypto::ring, sign::CertifiedKey};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};

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

/// For each of `hosts`, whether the leaf certificate of PEM chain `cert_pem` (decoded once)
/// is valid for it (a DNS name, or a `*.` wildcard: then the certificate must cover any name
/// one label under it, which only a wildcard certificate of that domain does). Validity
/// dates and issuers are not checked: the client does that.
pub fn covers(cert_pem: &[u8], hosts: &[&str]) -> Vec<bool> {
    let Some(Ok(leaf)) = CertificateDer::pem_slice_iter(cert_pem).next() else { return vec![false; hosts.len()] };
    let Ok(cert) = webpki::EndEntityCert::try_from(&leaf) else { return vec![false; hosts.len()] };
    let valid_for = |host: &str| {
        // A label no certificate names by chance (a wildcard stands for any one label).
        let name = match host.strip_prefix("*.") {
            Some(domain) => format!("lb-certificate-probe-7f3a.{domain}"),
            None => host.to_owned(),
        };
        ServerName::try_from(name.as_str()).is_ok_and(|n| cert.verify_is_valid_for_subject_name(&n).is_ok())
    };
    hosts.iter().map(|h| valid_for(h)).collect()
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
