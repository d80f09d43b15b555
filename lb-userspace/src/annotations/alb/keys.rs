//! ALB annotation keys: every fixed key an Ingress may carry, the key families followed by a
//! name (`actions.<service>`, `conditions.<service>`, `cluster-weight.<cluster>`), keys that
//! belong on an AlbConfig, and unknown keys (with the closest known one as a hint). The
//! ingress-nginx keys the ALB controller reads (canary, ssl-redirect) are taken before the
//! ALB spelling of the same key; every other ingress-nginx key gets a notice.
use std::collections::{BTreeMap, BTreeSet};

use super::PREFIX;
use crate::annotations::AnnotationError;
use crate::annotations::keys::{edit_distance, keys};
use crate::annotations::parser::{AnnotationKey, Parser, Written};

keys! {
    HealthcheckEnabled => "healthcheck-enabled",
    HealthcheckPath => "healthcheck-path",
    HealthcheckProtocol => "healthcheck-protocol",
    HealthcheckHttpversion => "healthcheck-httpversion",
    HealthcheckMethod => "healthcheck-method",
    HealthcheckCode => "healthcheck-code",
    HealthcheckHttpcode => "healthcheck-httpcode",
    HealthcheckTimeoutSeconds => "healthcheck-timeout-seconds",
    HealthcheckIntervalSeconds => "healthcheck-interval-seconds",
    HealthyThresholdCount => "healthy-threshold-count",
    UnhealthyThresholdCount => "unhealthy-threshold-count",
    HealthcheckConnectPort => "healthcheck-connect-port",
    SslRedirect => "ssl-redirect",
    BackendProtocol => "backend-protocol",
    UseRegex => "use-regex",
    RewriteTarget => "rewrite-target",
    ListenPorts => "listen-ports",
    Order => "order",
    Canary => "canary",
    CanaryByHeader => "canary-by-header",
    CanaryByHeaderValue => "canary-by-header-value",
    CanaryByHeaderPattern => "canary-by-header-pattern",
    CanaryByCookie => "canary-by-cookie",
    CanaryWeight => "canary-weight",
    CanaryWeightTotal => "canary-weight-total",
    StickySession => "sticky-session",
    StickySessionType => "sticky-session-type",
    CookieTimeout => "cookie-timeout",
    Cookie => "cookie",
    BackendScheduler => "backend-scheduler",
    BackendSchedulerUchValue => "backend-scheduler-uch-value",
    EnableCors => "enable-cors",
    CorsAllowOrigin => "cors-allow-origin",
    CorsAllowMethods => "cors-allow-methods",
    CorsAllowHeaders => "cors-allow-headers",
    CorsExposeHeaders => "cors-expose-headers",
    CorsAllowCredentials => "cors-allow-credentials",
    CorsMaxAge => "cors-max-age",
    BackendKeepalive => "backend-keepalive",
    EnableIpv6 => "enable-ipv6",
    TrafficLimitQps => "traffic-limit-qps",
    SlowStartEnabled => "slow-start-enabled",
    SlowStartDuration => "slow-start-duration",
    ConnectionDrainEnabled => "connection-drain-enabled",
    ConnectionDrainTimeout => "connection-drain-timeout",
    CrossZoneEnabled => "cross-zone-enabled",
}

impl AnnotationKey for Key {
    fn full(self) -> String {
        format!("{PREFIX}{}", self.suffix())
    }
}

/// Key families: the suffix is followed by a Service name or a cluster ID.
pub const FAMILIES: &[&str] = &["actions.", "conditions.", "cluster-weight."];

/// ingress-nginx's annotation prefix.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// The ingress-nginx keys the ALB controller reads, before the `alb.ingress.kubernetes.io/`
/// key of the same suffix, with the same validation.
pub const NGINX_READ: &[Key] = &[
    Key::Canary,
    Key::CanaryByHeader,
    Key::CanaryByHeaderValue,
    Key::CanaryByHeaderPattern,
    Key::CanaryByCookie,
    Key::CanaryWeight,
    Key::CanaryWeightTotal,
    Key::SslRedirect,
];

/// Keys that exist only in their ingress-nginx spelling (ALB documents no such key).
const NGINX_ONLY: &[Key] = &[Key::CanaryByHeaderPattern, Key::CanaryWeightTotal];

/// Keys of the references that belong on another object than an Ingress.
const ALBCONFIG_KEYS: &[&str] = &["remote-clusters"];

/// A parser over the `alb.ingress.kubernetes.io/` annotations of an Ingress and the
/// ingress-nginx keys of [`NGINX_READ`] (which win over the ALB spelling, with a notice for
/// the key not read): the fixed keys by [`Key`], the family members by suffix; unknown keys,
/// family keys without a name and keys of other objects are errors. Other ingress-nginx keys
/// get a notice: the ALB controller does not read them.
pub fn parser<'a>(all: impl IntoIterator<Item = (&'a String, &'a String)>) -> Parser<Key> {
    let mut written = BTreeMap::new();
    let mut errors = Vec::new();
    let mut members = BTreeMap::new();
    let mut nginx = Vec::new();
    for (key, value) in all {
        if let Some(suffix) = key.strip_prefix(NGINX_PREFIX) {
            nginx.push((suffix, Written { key: key.clone(), value: value.trim().to_owned() }));
            continue;
        }
        let Some(suffix) = key.strip_prefix(PREFIX) else { continue };
        let w = Written { key: key.clone(), value: value.trim().to_owned() };
        if let Some(k) = Key::from_suffix(suffix).filter(|k| NGINX_ONLY.contains(k)) {
            errors.push(AnnotationError::new(
                key.clone(),
                format!("unknown annotation; the ALB controller reads only {NGINX_PREFIX}{}", k.suffix()),
            ));
        } else if let Some(k) = Key::from_suffix(suffix) {
            written.insert(k, w);
        } else if let Some(f) = FAMILIES.iter().find(|f| suffix.starts_with(**f)) {
            if suffix.len() == f.len() {
                errors.push(AnnotationError::new(key.clone(), format!("needs a name after {f:?}")));
            }
            members.insert(suffix.to_owned(), w);
        } else if ALBCONFIG_KEYS.contains(&suffix) {
            errors.push(AnnotationError::new(key.clone(), "belongs on the AlbConfig, not here"));
        } else {
            let reason = match nearest(suffix) {
                Some(s) => format!("unknown annotation; did you mean {PREFIX}{s}?"),
                None => "unknown annotation".to_owned(),
            };
            errors.push(AnnotationError::new(key.clone(), reason));
        }
    }
    let mut notes = Vec::new();
    for (suffix, w) in nginx {
        match Key::from_suffix(suffix).filter(|k| NGINX_READ.contains(k)) {
            Some(k) => {
                if let Some(alb) = written.insert(k, w.clone()) {
                    notes.push((alb.key, format!("not read: {} is, as the ALB controller does", w.key)));
                }
            }
            None => notes.push((w.key, "not read by the ALB controller (an ingress-nginx annotation)".to_owned())),
        }
    }
    let mut p = Parser::new(written, errors, BTreeSet::new()).with_members(members);
    for (key, reason) in notes {
        p.note(key, reason);
    }
    p
}

/// The known suffix within three edits of `k`, if any.
fn nearest(k: &str) -> Option<&'static str> {
    Key::ALL
        .iter()
        .map(|key| (edit_distance(k, key.suffix()), key.suffix()))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, s)| s)
}
