//! The `lb run --kubernetes` flags of the status writer (`--publish-service`,
//! `--publish-status-address`) and of the Secrets cached (`--secret-namespace`,
//! `--secret-label-selector`), flattened into `lb run`'s arguments. Each has an environment
//! variable for the ConfigMap, where an empty value is no value.
use super::{KubeOptions, SecretScope};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeFlags {
    /// With --kubernetes: ALB Ingress status takes the addresses of this Service
    /// (its status.loadBalancer.ingress and spec.externalIPs), as ingress-nginx's flag of the
    /// same name. Without it or --publish-status-address: the writing node's addresses.
    #[arg(long, env = "LB_PUBLISH_SERVICE", value_name = "NAMESPACE/NAME")]
    pub publish_service: Option<String>,
    /// With --kubernetes: ALB Ingress status holds these addresses (IPs or DNS names, comma
    /// separated); takes precedence over --publish-service.
    #[arg(long, env = "LB_PUBLISH_STATUS_ADDRESS", value_name = "ADDR", value_delimiter = ',')]
    pub publish_status_address: Vec<String>,
    /// With --kubernetes: list and cache TLS Secrets only in these namespaces (repeatable or
    /// comma separated; RBAC can then be a Role per namespace). Default: every namespace.
    #[arg(long = "secret-namespace", env = "LB_SECRET_NAMESPACES", value_name = "NAMESPACE", value_delimiter = ',')]
    pub secret_namespaces: Vec<String>,
    /// With --kubernetes: list and cache only the TLS Secrets matching this label selector
    /// (e.g. lb.dev/tls=true). Default: every TLS Secret.
    #[arg(long, env = "LB_SECRET_LABEL_SELECTOR", value_name = "SELECTOR")]
    pub secret_label_selector: Option<String>,
}

/// A flag's value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FlagError {
    #[error("--publish-service {0:?}: not NAMESPACE/NAME")]
    PublishService(String),
    #[error("--publish-status-address {0:?}: not an IP address or a lower-case DNS name")]
    Address(String),
}

impl KubeFlags {
    /// Whether any of these flags has a value (they need --kubernetes).
    pub fn is_set(&self) -> bool {
        let f = self.clone().cleaned();
        f.publish_service.is_some()
            || !f.publish_status_address.is_empty()
            || !f.secret_namespaces.is_empty()
            || f.secret_label_selector.is_some()
    }

    /// Set them on `opts`.
    pub fn apply(self, opts: &mut KubeOptions) -> Result<(), FlagError> {
        let f = self.cleaned();
        opts.publish_service = match f.publish_service {
            None => None,
            Some(s) => match s.split_once('/') {
                Some((ns, name)) if dns_label(ns) && dns_name(name) && !name.contains('.') => {
                    Some((ns.into(), name.into()))
                }
                _ => return Err(FlagError::PublishService(s)),
            },
        };
        for a in &f.publish_status_address {
            if a.parse::<std::net::IpAddr>().is_err() && !dns_name(a) {
                return Err(FlagError::Address(a.clone()));
            }
        }
        opts.publish_status_addresses = f.publish_status_address;
        opts.secrets = SecretScope { namespaces: f.secret_namespaces, label_selector: f.secret_label_selector };
        Ok(())
    }

    /// Without empty values and surrounding blanks (a ConfigMap key left empty).
    fn cleaned(self) -> KubeFlags {
        let list = |v: Vec<String>| -> Vec<String> {
            v.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
        };
        let one = |v: Option<String>| v.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        KubeFlags {
            publish_service: one(self.publish_service),
            publish_status_address: list(self.publish_status_address),
            secret_namespaces: list(self.secret_namespaces),
            secret_label_selector: one(self.secret_label_selector),
        }
    }
}

fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn dns_name(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(f: KubeFlags) -> Result<KubeOptions, FlagError> {
        let mut o = KubeOptions::default();
        f.apply(&mut o).map(|()| o)
    }

    #[test]
    fn values_and_errors() {
        let o = apply(KubeFlags {
            publish_service: Some("lb-system/front".into()),
            publish_status_address: vec!["198.51.100.7".into(), " lb.example.com".into(), String::new()],
            secret_namespaces: vec!["shop".into(), " demo ".into()],
            secret_label_selector: Some("lb.dev/tls=true".into()),
        })
        .unwrap();
        assert_eq!(o.publish_service, Some(("lb-system".into(), "front".into())));
        assert_eq!(o.publish_status_addresses, ["198.51.100.7", "lb.example.com"]);
        assert_eq!(o.secrets.namespaces, ["shop", "demo"]);
        assert_eq!(o.secrets.label_selector.as_deref(), Some("lb.dev/tls=true"));

        let e = apply(KubeFlags { publish_service: Some("front".into()), ..Default::default() }).unwrap_err();
        assert_eq!(e.to_string(), "--publish-service \"front\": not NAMESPACE/NAME");
        let e = apply(KubeFlags { publish_status_address: vec!["Not A Name".into()], ..Default::default() });
        assert!(e.unwrap_err().to_string().contains("not an IP address"));

        // Empty ConfigMap values are no values.
        let empty = KubeFlags {
            publish_service: Some(String::new()),
            publish_status_address: vec![String::new()],
            secret_namespaces: vec![String::new()],
            secret_label_selector: Some(" ".into()),
        };
        assert!(!empty.is_set());
        let o = apply(empty).unwrap();
        assert_eq!(o.publish_service, None);
        assert_eq!(o.secrets, SecretScope::default());
    }
}
