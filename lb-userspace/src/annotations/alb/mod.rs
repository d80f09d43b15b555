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
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;

use super::parser::Parser;
use super::{AnnotationError, NotApplicable};

mod actions;
mod albconfig;
mod backend;
mod canary;
mod conditions;
mod cors;
mod ingressclass;
mod keys;
mod limits;
mod listeners;
mod multicluster;
mod paths;
mod routing;
mod tls;
mod values;

#[cfg(test)]
mod nginx_tests;
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
pub use keys::{FAMILIES, Key};
pub use listeners::{ListenPort, ListenProtocol};
pub use multicluster::{ClusterWeight, cluster_id};
pub use paths::{HostMatch, PathMatch, PathType, RulePath};
pub use routing::{Rule, sort_rules};
pub use tls::{TlsHosts, TlsPolicy};
pub use values::Pattern;

/// Every ALB annotation key starts with this.
pub const PREFIX: &str = "alb.ingress.kubernetes.io/";

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

/// The parser context of the ALB family functions.
pub(crate) type Cx = Parser<Key>;

/// `key` has an effect only when `gate` is `"true"` (the reference: "takes effect only
/// when ... is true"): otherwise a note, and the Ingress serves without it, as the ALB
/// controller ignores it (a template that writes every setting and flips the switch).
pub(crate) fn gated(cx: &mut Cx, key: Key, gate: Key, gate_on: bool) {
    if gate_on || !cx.has(key) {
        return;
    }
    let gate_name = cx.name(gate);
    if cx.get(gate) == Some("false") {
        cx.not_applicable(key, format!("has no effect while {gate_name} is \"false\""));
    } else {
        cx.not_applicable(key, format!("has no effect unless {gate_name} is \"true\" (it is off by default)"));
    }
}

/// Parses one Ingress: every `alb.ingress.kubernetes.io/` annotation and the rules.
pub fn parse_ingress(ingress: &Ingress) -> IngressParse {
    let meta = &ingress.metadata;
    let mut cx = keys::parser(meta.annotations.iter().flatten());

    let spec = ingress.spec.as_ref();
    let tls = tls::parse_ingress_tls(spec, &mut cx);
    let listeners = listeners::parse(&mut cx, !tls.is_empty());
    let order = cx.value_or(Key::Order, 10, |v| values::number(v, 1, 1000));
    let backend = backend::parse(&mut cx, &listeners);
    let cors = cors::parse(&mut cx);
    let qps_limit = limits::parse(&mut cx);
    let canary = canary::parse(&mut cx);
    let cluster_weights = multicluster::parse_weights(&mut cx);
    let settings = paths::parse_settings(&mut cx, &listeners);
    let actions = actions::parse_all(&mut cx, &settings);
    let conditions = conditions::parse_all(&mut cx, &settings);
    if canary.is_some() || cx.get(Key::Canary) == Some("true") {
        // As the ALB controller: a canary rule carries only its header/cookie/weight match.
        let canary_key = cx.name(Key::Canary);
        for svc in conditions.keys() {
            cx.field_error(
                format!("{PREFIX}conditions.{svc}"),
                format!("cannot be combined with {canary_key}: \"true\" (a canary rule takes no custom conditions; put them on the main Ingress)"),
            );
        }
    }

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
    let rules = routing::build_rules(spec, &shared, &actions, &conditions, &mut cx);

    IngressParse {
        namespace: shared.namespace,
        name: shared.ingress,
        class_name: spec.and_then(|s| s.ingress_class_name.clone()),
        order,
        order_explicit: cx.has(Key::Order),
        rules,
        listen_ports_explicit: cx.has(Key::ListenPorts),
        listeners,
        tls,
        cluster_weights,
        errors: cx.errors,
        not_applicable: cx.not_applicable,
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
/// same `order` and share a listen port. The newer of the two (by `age`, lowest oldest) is
/// in error, the older keeps its rules: a new Ingress cannot take down one that serves.
/// Returns `(namespace/name, error)` for each Ingress in error.
pub fn order_conflicts<A: Ord>(
    parses: &[IngressParse],
    age: impl Fn(&IngressParse) -> A,
) -> Vec<(String, AnnotationError)> {
    let mut out = Vec::new();
    for (i, a) in parses.iter().enumerate() {
        for (j, b) in parses.iter().enumerate() {
            if i == j || !a.order_explicit || !b.order_explicit || a.order != b.order || age(b) > age(a) {
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
        // An ingress-nginx key the ALB controller does not read: a notice, not silence.
        assert!(p.not_applicable.iter().any(|n| n.annotation == "nginx.ingress.kubernetes.io/rewrite-target"
            && n.reason == "not read by the ALB controller (an ingress-nginx annotation)"));
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
        let by_name = |p: &IngressParse| p.name.clone();
        let errs = order_conflicts(&[a.clone(), b.clone(), c, d], by_name);
        assert_eq!(errs.len(), 1, "only the newer is in error: {errs:?}");
        assert_eq!(errs[0].0, "default/b");
        assert_eq!(
            errs[0].1.reason,
            "order 2 is also used by Ingress default/a on listener HTTP:80; orders must be unique within a listener"
        );
        let errs = order_conflicts(&[a.clone(), b.clone()], |p| std::cmp::Reverse(p.name.clone()));
        assert_eq!(errs.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["default/a"]);
        b.order = 3;
        assert!(order_conflicts(&[a, b], by_name).is_empty());
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
}
