//! Annotation keys: every key the CLB reference knows, the two spellings of its prefix,
//! conflicts between them, and unknown keys (with the closest known one as a suggestion).
use std::collections::{BTreeMap, BTreeSet};

use super::AnnotationError;
use crate::annotations::keys::{edit_distance, keys};
use crate::annotations::parser::{AnnotationKey, Parser, Written};

/// The namespace of every CLB annotation key.
pub const PREFIX: &str = "service.beta.kubernetes.io/";
/// What follows [`PREFIX`] in the current spelling.
pub const CLB_PREFIX: &str = "alibaba-cloud-loadbalancer-";
/// What follows [`PREFIX`] in the legacy spelling, equivalent to [`CLB_PREFIX`].
pub const LEGACY_PREFIX: &str = "alicloud-loadbalancer-";
/// The one key of the reference outside the `alibaba-cloud-loadbalancer-` family.
const BACKEND_TYPE: &str = "backend-type";

keys! {
    // Listeners.
    ProtocolPort => "protocol-port",
    ForwardPort => "forward-port",
    CertId => "cert-id",
    DomainExtensions => "domain-extensions",
    TlsCipherPolicy => "tls-cipher-policy",
    Http2Enabled => "http2-enabled",
    Hostname => "hostname",
    IpVersion => "ip-version",
    Scheduler => "scheduler",
    // ACL.
    AclStatus => "acl-status",
    AclId => "acl-id",
    AclType => "acl-type",
    // TCP/UDP listeners.
    PersistenceTimeout => "persistence-timeout",
    EstablishedTimeout => "established-timeout",
    ConnectionDrain => "connection-drain",
    ConnectionDrainTimeout => "connection-drain-timeout",
    ProxyProtocol => "proxy-protocol",
    // HTTP/HTTPS listeners.
    StickySession => "sticky-session",
    StickySessionType => "sticky-session-type",
    CookieTimeout => "cookie-timeout",
    Cookie => "cookie",
    XForwardedForProto => "xforwardedfor-proto",
    XForwardedForSlbPort => "xforwardedfor-slbport",
    XForwardedForClientSrcPort => "xforwardedfor-clientsrcport",
    IdleTimeout => "idle-timeout",
    RequestTimeout => "request-timeout",
    // Health checks.
    HealthCheckSwitch => "health-check-switch",
    HealthCheckFlag => "health-check-flag",
    HealthCheckType => "health-check-type",
    HealthCheckConnectTimeout => "health-check-connect-timeout",
    HealthCheckTimeout => "health-check-timeout",
    HealthyThreshold => "healthy-threshold",
    UnhealthyThreshold => "unhealthy-threshold",
    HealthCheckInterval => "health-check-interval",
    HealthCheckUri => "health-check-uri",
    HealthCheckHttpCode => "health-check-httpcode",
    HealthCheckDomain => "health-check-domain",
    HealthCheckMethod => "health-check-method",
    // Backends.
    BackendLabel => "backend-label",
    RemoveUnscheduledBackend => "remove-unscheduled-backend",
    BackendType => "backend-type",
    // Cloud instance only (not applicable on a node balancer).
    AddressType => "address-type",
    VswitchId => "vswitch-id",
    InstanceChargeType => "instance-charge-type",
    Spec => "spec",
    ChargeType => "charge-type",
    Bandwidth => "bandwidth",
    Id => "id",
    ForceOverrideListeners => "force-override-listeners",
    MasterZoneId => "master-zoneid",
    SlaveZoneId => "slave-zoneid",
    Ip => "ip",
    AdditionalResourceTags => "additional-resource-tags",
    Name => "name",
    ResourceGroupId => "resource-group-id",
    DeleteProtection => "delete-protection",
    ModificationProtection => "modification-protection",
    PreserveLbOnDelete => "preserve-lb-on-delete",
    VgroupPort => "vgroup-port",
    Weight => "weight",
    IgnoreWeightUpdate => "ignore-weight-update",
}

impl AnnotationKey for Key {
    /// The full key in the current spelling.
    fn full(self) -> String {
        match self {
            Key::BackendType => format!("{PREFIX}{BACKEND_TYPE}"),
            _ => format!("{PREFIX}{CLB_PREFIX}{}", self.suffix()),
        }
    }
}

impl Key {
    fn from_clb_suffix(suffix: &str) -> Option<Key> {
        Key::from_suffix(suffix).filter(|k| *k != Key::BackendType)
    }
}

/// A parser over the CLB annotations of `annotations`: unknown keys and conflicting
/// spellings are errors; the keys of conflicting spellings are failed (present, but with no
/// usable value).
pub fn parser(annotations: &BTreeMap<String, String>) -> Parser<Key> {
    let mut errors = Vec::new();
    let mut current: BTreeMap<Key, Written> = BTreeMap::new();
    let mut legacy: BTreeMap<Key, Written> = BTreeMap::new();
    for (key, value) in annotations {
        let Some(rest) = key.strip_prefix(PREFIX) else { continue };
        let entry = Written { key: key.clone(), value: value.trim().to_owned() };
        if rest == BACKEND_TYPE {
            current.insert(Key::BackendType, entry);
        } else if let Some(suffix) = rest.strip_prefix(CLB_PREFIX) {
            match Key::from_clb_suffix(suffix) {
                Some(k) => {
                    current.insert(k, entry);
                }
                None => errors.push(unknown(key, rest)),
            }
        } else if let Some(suffix) = rest.strip_prefix(LEGACY_PREFIX) {
            match Key::from_clb_suffix(suffix) {
                Some(k) => {
                    legacy.insert(k, entry);
                }
                None => errors.push(unknown(key, rest)),
            }
        } else if rest.starts_with("alibaba-cloud-")
            || rest.starts_with("alicloud-")
            || (rest.len() < 40 && edit_distance(rest, BACKEND_TYPE) <= 2)
        {
            errors.push(unknown(key, rest));
        }
    }
    let mut failed = BTreeSet::new();
    for (k, old) in legacy {
        match current.get(&k) {
            None => {
                current.insert(k, old);
            }
            Some(new) if new.value == old.value => {}
            Some(new) => {
                errors.push(AnnotationError::new(
                    new.key.clone(),
                    format!("{:?} conflicts with {:?} set by the legacy spelling {}", new.value, old.value, old.key),
                ));
                failed.insert(k);
            }
        }
    }
    Parser::new(current, errors, failed)
}

/// The error for a key in the CLB namespace that the reference does not know.
fn unknown(key: &str, rest: &str) -> AnnotationError {
    let reason = match suggestion(rest) {
        Some(s) => format!("unknown annotation; did you mean {PREFIX}{s}?"),
        None => "unknown annotation (not in the CLB annotation reference)".to_owned(),
    };
    AnnotationError::new(key, reason)
}

/// The known key closest to `rest` (the key without [`PREFIX`]), when it is close enough
/// to be an obvious typo, in the spelling family `rest` uses.
fn suggestion(rest: &str) -> Option<String> {
    if rest.len() > 120 {
        return None;
    }
    let tail = rest.strip_prefix(CLB_PREFIX).or_else(|| rest.strip_prefix(LEGACY_PREFIX));
    if tail == Some(BACKEND_TYPE) || edit_distance(rest, BACKEND_TYPE) <= 2 {
        return Some(BACKEND_TYPE.to_owned());
    }
    let family = if rest.starts_with("alicloud") { LEGACY_PREFIX } else { CLB_PREFIX };
    let candidates = Key::ALL.iter().map(|k| match k {
        Key::BackendType => BACKEND_TYPE.to_owned(),
        _ => format!("{family}{}", k.suffix()),
    });
    let lower = rest.to_lowercase();
    let mut scored: Vec<(usize, String)> = candidates.map(|c| (edit_distance(&lower, &c), c)).collect();
    scored.sort();
    match scored.as_slice() {
        [(best, c), (second, _), ..] if *best <= 3 && best < second => Some(c.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{errors_of, full, run, tcp};
    use super::*;

    #[test]
    fn every_key_has_a_distinct_suffix() {
        let suffixes: BTreeSet<&str> = Key::ALL.iter().map(|k| k.suffix()).collect();
        assert_eq!(suffixes.len(), Key::ALL.len());
        // The reference's 60 alibaba-cloud-loadbalancer-* keys, and backend-type.
        assert_eq!(Key::ALL.len(), 61);
    }

    #[test]
    fn legacy_prefix_is_equivalent() {
        let legacy = format!("{PREFIX}{LEGACY_PREFIX}scheduler");
        let p = run(&[(&legacy, "wrr")], &[tcp(80)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.config.scheduler, super::super::Scheduler::Wrr);
        // An error names the key as written.
        let p = run(&[(&legacy, "WRR")], &[tcp(80)]);
        assert_eq!(p.errors[0].annotation, legacy);
    }

    #[test]
    fn both_spellings_with_the_same_value_are_fine() {
        let legacy = format!("{PREFIX}{LEGACY_PREFIX}persistence-timeout");
        let p = run(&[("persistence-timeout", "60"), (&legacy, "60")], &[tcp(80)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(p.config.l4.persistence_timeout_s, 60);
    }

    #[test]
    fn both_spellings_with_different_values_are_an_error_naming_both() {
        let legacy = format!("{PREFIX}{LEGACY_PREFIX}acl-status");
        let p = run(&[("acl-status", "on"), (&legacy, "off"), ("acl-id", "acl-1")], &[tcp(80)]);
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert_eq!(p.errors[0].annotation, full("acl-status"));
        assert!(p.errors[0].reason.contains(&legacy), "{}", p.errors[0].reason);
        assert!(p.errors[0].reason.contains("\"on\" conflicts with \"off\""));
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion_when_obvious() {
        let cases: &[(&str, Option<&str>)] = &[
            ("alibaba-cloud-loadbalancer-schedular", Some("alibaba-cloud-loadbalancer-scheduler")),
            ("alibaba-cloud-loadbalancer-Scheduler", Some("alibaba-cloud-loadbalancer-scheduler")),
            ("alicloud-loadbalancer-healthcheck-uri", Some("alicloud-loadbalancer-health-check-uri")),
            ("alibaba-cloud-loadbalncer-cert-id", Some("alibaba-cloud-loadbalancer-cert-id")),
            ("alibaba-cloud-loadbalancer-backend-type", Some("backend-type")),
            ("alibaba-cloud-loadbalancer-something-else", None),
            ("alibaba-cloud-zone-maps", None),
        ];
        for (rest, want) in cases {
            let key = format!("{PREFIX}{rest}");
            let errs = errors_of(&[(&key, "x")], &[tcp(80)]);
            assert_eq!(errs.len(), 1, "{rest}: {errs:?}");
            assert_eq!(errs[0].annotation, key);
            match want {
                Some(s) => {
                    assert_eq!(errs[0].reason, format!("unknown annotation; did you mean {PREFIX}{s}?"), "{rest}")
                }
                None => {
                    assert_eq!(errs[0].reason, "unknown annotation (not in the CLB annotation reference)")
                }
            }
        }
    }

    #[test]
    fn other_controllers_annotations_are_ignored() {
        let p = run(
            &[
                ("service.beta.kubernetes.io/aws-load-balancer-type", "nlb"),
                ("metallb.universe.tf/address-pool", "x"),
                ("service.beta.kubernetes.io/load-balancer-source-ranges", "x"),
            ],
            &[tcp(80)],
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert!(p.not_applicable.is_empty());
        // ...but a near miss of the one key outside the alibaba-cloud- family is a typo.
        let errs = errors_of(&[("service.beta.kubernetes.io/backend-typ", "eni")], &[tcp(80)]);
        assert_eq!(errs[0].reason, format!("unknown annotation; did you mean {PREFIX}backend-type?"));
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
