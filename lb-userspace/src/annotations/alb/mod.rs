//! ALB annotations on Ingresses (`alb.ingress.kubernetes.io/*`), AlbConfig and IngressClass.
//!
//! [`parse_ingress`] turns one Ingress into typed L7 routing configuration: its listen
//! ports, one [`Rule`] per host/path (with conditions, actions, canary, rewrite and the
//! backend settings of the Ingress), every annotation error, and the annotations that are
//! accepted but have no effect on a node balancer. [`parse_albconfig`] and
//! [`parse_ingress_class`] read the two objects that say which listeners exist;
//! [`check_against_albconfig`] and [`order_conflicts`] are the checks across objects;
//! [`sort_rules`] is ALB's rule order. Serving the rules is the route model's and the
//! proxy's. Reference: `shared/reference/alb-*.txt`.
use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use super::{AnnotationError, NotApplicable};

mod actions;
mod albconfig;
mod backend;
mod canary;
mod conditions;
mod cors;
mod ingressclass;
mod limits;
mod listeners;
mod multicluster;
mod paths;
mod routing;
mod tls;
mod values;

#[cfg(test)]
mod testutil;

pub use actions::{
    Action, Filter, FixedResponse, GroupSticky, HeaderValueType, InsertHeader, Redirect, ServicePort, ServiceRef,
    WeightedService,
};
pub use albconfig::{AddressType, AlbConfig, AlbListener, parse_albconfig, parse_albconfig_yaml};
pub use backend::{
    BackendProtocol, BackendSettings, HealthCheck, HealthCheckCodes, HealthCheckMethod, HealthCheckProtocol,
    HttpVersion, Scheduler, StickySession,
};
pub use canary::Canary;
pub use conditions::{Condition, PathValue};
pub use cors::Cors;
pub use ingressclass::{ALB_CONTROLLER, AlbIngressClass, class_of, parse_ingress_class};
pub use listeners::{ListenPort, ListenProtocol};
pub use multicluster::ClusterWeight;
pub use paths::{HostMatch, PathMatch, PathType, RulePath};
pub use routing::{Rule, sort_rules};
pub use tls::{TlsHosts, TlsPolicy};
pub use values::Pattern;

/// Every ALB annotation key starts with this.
pub const PREFIX: &str = "alb.ingress.kubernetes.io/";

/// The fixed key suffixes an Ingress may carry (every annotation of the references).
pub const INGRESS_KEYS: &[&str] = &[
    "healthcheck-enabled",
    "healthcheck-path",
    "healthcheck-protocol",
    "healthcheck-httpversion",
    "healthcheck-method",
    "healthcheck-code",
    "healthcheck-httpcode",
    "healthcheck-timeout-seconds",
    "healthcheck-interval-seconds",
    "healthy-threshold-count",
    "unhealthy-threshold-count",
    "healthcheck-connect-port",
    "ssl-redirect",
    "backend-protocol",
    "use-regex",
    "rewrite-target",
    "listen-ports",
    "order",
    "canary",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-cookie",
    "canary-weight",
    "sticky-session",
    "sticky-session-type",
    "cookie-timeout",
    "cookie",
    "backend-scheduler",
    "backend-scheduler-uch-value",
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
    "backend-keepalive",
    "enable-ipv6",
    "traffic-limit-qps",
    "slow-start-enabled",
    "slow-start-duration",
    "connection-drain-enabled",
    "connection-drain-timeout",
    "cross-zone-enabled",
];

/// Key families: the suffix is followed by a Service name or a cluster ID.
pub const INGRESS_FAMILIES: &[&str] = &["actions.", "conditions.", "cluster-weight."];

/// Keys of the references that belong on another object than an Ingress.
const ALBCONFIG_KEYS: &[&str] = &["remote-clusters"];

/// Everything one Ingress says, typed and validated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IngressParse {
    pub namespace: String,
    pub name: String,
    /// `spec.ingressClassName` (the caller keeps the Ingresses of ALB classes).
    pub class_name: Option<String>,
    /// `order` (1..=1000, default 10) and whether it was written.
    pub order: u32,
    pub order_explicit: bool,
    /// One rule per host/path, in the order of the Ingress; [`sort_rules`] orders them.
    pub rules: Vec<Rule>,
    /// `listen-ports`, or the default (HTTP 80, plus HTTPS 443 when `spec.tls` is set).
    pub listeners: Vec<ListenPort>,
    /// Whether `listen-ports` was written (else `listeners` is the default).
    pub listen_ports_explicit: bool,
    pub tls: Vec<TlsHosts>,
    /// `cluster-weight.<id>` (multi-cluster gateways; validated, not applicable).
    pub cluster_weights: Vec<ClusterWeight>,
    pub errors: Vec<AnnotationError>,
    pub not_applicable: Vec<NotApplicable>,
}

impl IngressParse {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// The ALB annotations of one object with their trimmed values, and what parsing found.
pub(crate) struct Ctx {
    ann: BTreeMap<String, String>,
    pub errors: Vec<AnnotationError>,
    pub not_applicable: Vec<NotApplicable>,
}

impl Ctx {
    /// The `alb.ingress.kubernetes.io/` annotations of `all`, keyed by suffix.
    pub fn new<'a>(all: impl IntoIterator<Item = (&'a String, &'a String)>) -> Ctx {
        let ann = all
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|s| (s.to_owned(), v.trim().to_owned())))
            .collect();
        Ctx { ann, errors: Vec::new(), not_applicable: Vec::new() }
    }

    pub fn get(&self, suffix: &str) -> Option<&str> {
        self.ann.get(suffix).map(String::as_str)
    }

    pub fn has(&self, suffix: &str) -> bool {
        self.ann.contains_key(suffix)
    }

    /// The `(name, value)` pairs of a family (`actions.` → service names).
    pub fn family(&self, family: &str) -> Vec<(String, String)> {
        self.ann.iter().filter_map(|(k, v)| k.strip_prefix(family).map(|n| (n.to_owned(), v.clone()))).collect()
    }

    pub fn err(&mut self, suffix: &str, reason: impl Into<String>) {
        self.errors.push(AnnotationError::new(format!("{PREFIX}{suffix}"), reason));
    }

    /// An error about a field of the object rather than an annotation.
    pub fn field_err(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(AnnotationError::new(field, reason));
    }

    pub fn na(&mut self, suffix: &str, reason: impl Into<String>) {
        self.not_applicable.push(NotApplicable { annotation: format!("{PREFIX}{suffix}"), reason: reason.into() });
    }

    /// The parsed value of `suffix`; `None` when absent or invalid (the error is recorded).
    pub fn parse<T>(&mut self, suffix: &str, f: impl FnOnce(&str) -> Result<T, String>) -> Option<T> {
        let v = self.get(suffix)?.to_owned();
        match f(&v) {
            Ok(t) => Some(t),
            Err(e) => {
                self.err(suffix, e);
                None
            }
        }
    }

    pub fn bool_or(&mut self, suffix: &str, default: bool) -> bool {
        self.parse(suffix, values::boolean).unwrap_or(default)
    }

    pub fn num_or(&mut self, suffix: &str, min: u32, max: u32, default: u32) -> u32 {
        self.parse(suffix, |v| values::number(v, min, max)).unwrap_or(default)
    }

    /// `suffix` has an effect only when `gate` is `"true"`: an error when it is written
    /// while the gate is off.
    pub fn gated(&mut self, suffix: &str, gate: &str, gate_on: bool) {
        if !gate_on && self.has(suffix) {
            self.err(suffix, format!("has no effect unless {PREFIX}{gate} is \"true\""));
        }
    }

    /// Unknown keys, family keys without a name, keys of other objects.
    fn check_keys(&mut self, known: &[&str], families: &[&str], elsewhere: &[(&str, &str)]) {
        let keys: Vec<String> = self.ann.keys().cloned().collect();
        for k in keys {
            if known.contains(&k.as_str()) {
                continue;
            }
            if let Some(f) = families.iter().find(|f| k.starts_with(**f)) {
                if k.len() == f.len() {
                    self.err(&k, format!("needs a name after {f:?}"));
                }
                continue;
            }
            if let Some((_, obj)) = elsewhere.iter().find(|(e, _)| *e == k) {
                self.err(&k, format!("belongs on the {obj}, not here"));
                continue;
            }
            let reason = match nearest(&k, known) {
                Some(s) => format!("unknown annotation; did you mean {PREFIX}{s}?"),
                None => "unknown annotation".to_owned(),
            };
            self.err(&k, reason);
        }
    }
}

/// The known suffix within three edits of `k`, if any.
fn nearest<'a>(k: &str, known: &[&'a str]) -> Option<&'a str> {
    known.iter().map(|s| (edit_distance(k, s), *s)).filter(|(d, _)| *d <= 3).min().map(|(_, s)| s)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Parses one Ingress: every `alb.ingress.kubernetes.io/` annotation and the rules.
pub fn parse_ingress(ingress: &Ingress) -> IngressParse {
    let meta = &ingress.metadata;
    let mut ctx = Ctx::new(meta.annotations.iter().flatten());
    ctx.check_keys(
        INGRESS_KEYS,
        INGRESS_FAMILIES,
        &ALBCONFIG_KEYS.iter().map(|k| (*k, "AlbConfig")).collect::<Vec<_>>(),
    );

    let spec = ingress.spec.as_ref();
    let tls = tls::parse_ingress_tls(spec, &mut ctx);
    let listeners = listeners::parse(&mut ctx, !tls.is_empty());
    let order = ctx.num_or("order", 1, 1000, 10);
    let backend = backend::parse(&mut ctx, &listeners);
    let cors = cors::parse(&mut ctx);
    let qps_limit = limits::parse(&mut ctx);
    let canary = canary::parse(&mut ctx);
    let cluster_weights = multicluster::parse_weights(&mut ctx);
    let settings = paths::parse_settings(&mut ctx, &listeners);
    let actions = actions::parse_all(&mut ctx, &settings);
    let conditions = conditions::parse_all(&mut ctx, &settings);

    let shared = routing::Shared {
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        ingress: meta.name.clone().unwrap_or_default(),
        order,
        backend,
        cors,
        qps_limit,
        canary,
        settings,
    };
    let rules = routing::build_rules(spec, &shared, &actions, &conditions, &mut ctx);

    IngressParse {
        namespace: shared.namespace,
        name: shared.ingress,
        class_name: spec.and_then(|s| s.ingress_class_name.clone()),
        order,
        order_explicit: ctx.has("order"),
        rules,
        listen_ports_explicit: ctx.has("listen-ports"),
        listeners,
        tls,
        cluster_weights,
        errors: ctx.errors,
        not_applicable: ctx.not_applicable,
    }
}

/// The listeners an Ingress uses must exist in its AlbConfig ("ALB does not support
/// creating listeners through an Ingress"), and `ssl-redirect` needs an HTTPS listener on
/// port 443 there.
pub fn check_against_albconfig(parse: &IngressParse, config: &AlbConfig) -> Vec<AnnotationError> {
    let mut errors = Vec::new();
    for l in &parse.listeners {
        if !config.listeners.iter().any(|a| a.port == l.port && a.protocol == l.protocol) {
            errors.push(AnnotationError::new(
                format!("{PREFIX}listen-ports"),
                format!(
                    "{l}{} is not a listener of AlbConfig {:?}; create it in spec.listeners first",
                    if parse.listen_ports_explicit { "" } else { " (a default listen port)" },
                    config.name
                ),
            ));
        }
    }
    let redirect = parse.rules.iter().any(|r| r.ssl_redirect);
    let https_443 = config.listeners.iter().any(|a| a.port == 443 && a.protocol == ListenProtocol::Https);
    if redirect && !https_443 {
        errors.push(AnnotationError::new(
            format!("{PREFIX}ssl-redirect"),
            format!("AlbConfig {:?} has no HTTPS listener on port 443", config.name),
        ));
    }
    errors
}

/// "Priorities must be unique within the same listener": two Ingresses that write the
/// same `order` and share a listen port. Returns `(namespace/name, error)` for each.
pub fn order_conflicts(parses: &[IngressParse]) -> Vec<(String, AnnotationError)> {
    let mut out = Vec::new();
    for (i, a) in parses.iter().enumerate() {
        for (j, b) in parses.iter().enumerate() {
            if i == j || !a.order_explicit || !b.order_explicit || a.order != b.order {
                continue;
            }
            if let Some(l) = a.listeners.iter().find(|l| b.listeners.contains(l)) {
                out.push((
                    format!("{}/{}", a.namespace, a.name),
                    AnnotationError::new(
                        format!("{PREFIX}order"),
                        format!(
                            "order {} is also used by Ingress {}/{} on listener {l}; orders must be unique within a listener",
                            a.order, b.namespace, b.name
                        ),
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn unknown_keys_are_errors_with_a_hint() {
        let p =
            parse(&[("alb.ingress.kubernetes.io/oder", "2"), ("alb.ingress.kubernetes.io/frobnicate", "x")], SIMPLE);
        assert_eq!(
            p.errors,
            vec![
                AnnotationError::new("alb.ingress.kubernetes.io/frobnicate", "unknown annotation"),
                AnnotationError::new(
                    "alb.ingress.kubernetes.io/oder",
                    "unknown annotation; did you mean alb.ingress.kubernetes.io/order?"
                ),
            ]
        );
    }

    #[test]
    fn other_prefixes_are_ignored_and_family_keys_need_a_name() {
        let p = parse(
            &[
                ("kubernetes.io/ingress.class", "alb"),
                ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
                ("alb.ingress.kubernetes.io/actions.", "[]"),
            ],
            SIMPLE,
        );
        assert_eq!(
            p.errors,
            vec![AnnotationError::new("alb.ingress.kubernetes.io/actions.", "needs a name after \"actions.\"")]
        );
    }

    #[test]
    fn remote_clusters_belongs_on_the_albconfig() {
        let p = parse(&[("alb.ingress.kubernetes.io/remote-clusters", "c1")], SIMPLE);
        assert_eq!(
            p.errors,
            vec![AnnotationError::new(
                "alb.ingress.kubernetes.io/remote-clusters",
                "belongs on the AlbConfig, not here"
            )]
        );
    }

    #[test]
    fn values_are_trimmed() {
        let p = parse(&[("alb.ingress.kubernetes.io/order", " 7\n")], SIMPLE);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!((p.order, p.order_explicit), (7, true));
    }

    #[test]
    fn order_range_and_default() {
        for (v, want) in [
            ("1", Ok(1)),
            ("1000", Ok(1000)),
            ("10", Ok(10)),
            ("0", Err("0 is outside 1..=1000")),
            ("1001", Err("1001 is outside 1..=1000")),
            ("x", Err("\"x\" is not a whole number in 1..=1000")),
            ("-1", Err("\"-1\" is not a whole number in 1..=1000")),
        ] {
            let p = parse(&[("alb.ingress.kubernetes.io/order", v)], SIMPLE);
            match want {
                Ok(n) => {
                    assert!(p.is_ok(), "{v}: {:?}", p.errors);
                    assert_eq!(p.order, n);
                    assert!(p.rules.iter().all(|r| r.order == n));
                }
                Err(e) => assert_eq!(p.errors, vec![AnnotationError::new("alb.ingress.kubernetes.io/order", e)], "{v}"),
            }
        }
        let p = parse(&[], SIMPLE);
        assert_eq!((p.order, p.order_explicit), (10, false));
    }

    #[test]
    fn order_conflicts_need_a_shared_listener_and_explicit_orders() {
        let mut a = parse(&[("alb.ingress.kubernetes.io/order", "2")], SIMPLE);
        a.name = "a".into();
        let mut b = parse(&[("alb.ingress.kubernetes.io/order", "2")], SIMPLE);
        b.name = "b".into();
        let c = parse(
            &[
                ("alb.ingress.kubernetes.io/order", "2"),
                ("alb.ingress.kubernetes.io/listen-ports", r#"[{"HTTP": 8080}]"#),
            ],
            SIMPLE,
        );
        let d = parse(&[], SIMPLE);
        let errs = order_conflicts(&[a.clone(), b.clone(), c, d]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(errs[0].0, "default/a");
        assert_eq!(
            errs[0].1.reason,
            "order 2 is also used by Ingress default/b on listener HTTP:80; orders must be unique within a listener"
        );
        b.order = 3;
        assert!(order_conflicts(&[a, b]).is_empty());
    }

    #[test]
    fn listeners_must_exist_in_the_albconfig() {
        let cfg = parse_albconfig(&serde_json::json!({
            "apiVersion": "alibabacloud.com/v1", "kind": "AlbConfig", "metadata": {"name": "alb"},
            "spec": {"config": {"zoneMappings": [{"vSwitchId": "vsw-1"}, {"vSwitchId": "vsw-2"}]},
                     "listeners": [{"port": 80, "protocol": "HTTP"}]}
        }))
        .unwrap();
        let ok = parse(&[], SIMPLE);
        assert!(check_against_albconfig(&ok, &cfg).is_empty());
        let tls = format!("tls:\n- hosts: [demo.alb.ingress.top]\n  secretName: s\n{SIMPLE}");
        assert_eq!(
            check_against_albconfig(&parse(&[], &tls), &cfg),
            vec![AnnotationError::new(
                "alb.ingress.kubernetes.io/listen-ports",
                "HTTPS:443 (a default listen port) is not a listener of AlbConfig \"alb\"; create it in spec.listeners first"
            )]
        );
        let p = parse(
            &[
                ("alb.ingress.kubernetes.io/listen-ports", r#"[{"HTTP": 80},{"HTTPS": 443}]"#),
                ("alb.ingress.kubernetes.io/ssl-redirect", "true"),
            ],
            SIMPLE,
        );
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!(
            check_against_albconfig(&p, &cfg),
            vec![
                AnnotationError::new(
                    "alb.ingress.kubernetes.io/listen-ports",
                    "HTTPS:443 is not a listener of AlbConfig \"alb\"; create it in spec.listeners first"
                ),
                AnnotationError::new(
                    "alb.ingress.kubernetes.io/ssl-redirect",
                    "AlbConfig \"alb\" has no HTTPS listener on port 443"
                ),
            ]
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("order", "order"), 0);
        assert_eq!(edit_distance("oder", "order"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
