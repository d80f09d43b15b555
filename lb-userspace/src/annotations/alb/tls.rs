//! TLS: the Ingress's `spec.tls` (hosts and the Secret that holds their certificate) and
//! the AlbConfig listener's `securityPolicyId` (ALB's system TLS policies).
use k8s_openapi::api::networking::v1::IngressSpec;
use serde::Serialize;

use super::Cx;
use super::values::dns_name;
pub use crate::annotations::values::TlsPolicy;

/// One `spec.tls` item: the hosts it covers and the Secret with their certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsHosts {
    pub hosts: Vec<String>,
    /// `None`: ALB would discover a certificate in Alibaba Cloud's certificate service;
    /// a node balancer has no certificate then (reported as not applicable).
    pub secret_name: Option<String>,
}

impl TlsHosts {
    /// Whether `host` (lower case, no port) is covered, exactly or by a `*.` wildcard.
    pub fn covers(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| match h.strip_prefix("*.") {
            Some(suffix) => host.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
            None => h == host,
        })
    }
}

/// A `securityPolicyId`: a system policy, or a custom policy ID (`tls-...`), which lives in
/// the cloud account (`Ok(None)`: not applicable).
pub fn security_policy(v: &str) -> Result<Option<TlsPolicy>, String> {
    if let Some((_, p)) = TlsPolicy::ALL.iter().find(|(n, _)| *n == v) {
        return Ok(Some(*p));
    }
    if v.starts_with("tls-") && v.len() > 4 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Ok(None);
    }
    let names: Vec<&str> = TlsPolicy::ALL.iter().map(|(n, _)| *n).collect();
    Err(format!("{v:?} is neither one of {} nor a custom policy ID (tls-...)", names.join(", ")))
}

/// `spec.tls`: every host a DNS name (a leading `*.` allowed).
pub(super) fn parse_ingress_tls(spec: Option<&IngressSpec>, cx: &mut Cx) -> Vec<TlsHosts> {
    let mut out = Vec::new();
    for (i, t) in spec.and_then(|s| s.tls.as_ref()).into_iter().flatten().enumerate() {
        let mut hosts = Vec::new();
        for (j, h) in t.hosts.iter().flatten().enumerate() {
            match dns_name(h, true) {
                Ok(h) => hosts.push(h),
                Err(e) => cx.field_error(format!("spec.tls[{i}].hosts[{j}]"), e),
            }
        }
        // Without a Secret named, the model finds one by host (`Lookup::discover_certificate`).
        let secret_name = t.secret_name.clone().filter(|s| !s.is_empty());
        out.push(TlsHosts { hosts, secret_name });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn tls_hosts_and_secrets() {
        let spec = format!(
            "tls:\n- hosts: [demo.alb.ingress.top, '*.example.com']\n  secretName: demo-tls\n- hosts: [ssl.alb.ingress.top]\n{SIMPLE}"
        );
        let p = parse(&[], &spec);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!(
            p.tls,
            vec![
                TlsHosts {
                    hosts: vec!["demo.alb.ingress.top".into(), "*.example.com".into()],
                    secret_name: Some("demo-tls".into())
                },
                TlsHosts { hosts: vec!["ssl.alb.ingress.top".into()], secret_name: None },
            ]
        );
        // No secretName: the model finds a Secret by host, nothing to note here.
        assert!(p.not_applicable.is_empty(), "{:?}", p.not_applicable);
        assert!(
            p.tls[0].covers("a.example.com") && !p.tls[0].covers("a.b.example.com") && !p.tls[0].covers("example.com")
        );
        assert!(p.tls[0].covers("demo.alb.ingress.top") && !p.tls[1].covers("demo.alb.ingress.top"));
    }

    #[test]
    fn tls_host_must_be_a_dns_name() {
        let spec = format!("tls:\n- hosts: [bad_host.com]\n  secretName: s\n{SIMPLE}");
        let p = parse(&[], &spec);
        assert_eq!(
            errs(&p),
            vec![
                "spec.tls[0].hosts[0]: \"bad_host.com\" is not a DNS name (label \"bad_host\" is not 1..=63 letters, digits or inner hyphens)"
            ]
        );
    }

    #[test]
    fn security_policies() {
        assert_eq!(security_policy("tls_cipher_policy_1_0"), Ok(Some(TlsPolicy::Tls10)));
        assert_eq!(
            security_policy("tls_cipher_policy_1_2_strict_with_1_3").map(|p| p.map(|p| (p.min_version(), p.strict()))),
            Ok(Some(((1, 2), true)))
        );
        assert_eq!(security_policy("tls-bp1abc"), Ok(None));
        assert!(security_policy("tls-").is_err());
        assert!(security_policy("TLS_CIPHER_POLICY_1_0").is_err());
    }
}
