//! CLB annotations on Services (`service.beta.kubernetes.io/alibaba-cloud-loadbalancer-*`,
//! legacy `alicloud-loadbalancer-*`, and `service.beta.kubernetes.io/backend-type`) parsed into
//! a typed, validated [`ClbConfig`].
//!
//! The reference is `shared/reference/clb-service-annotations.txt`: every range, allowed value
//! and default there is checked here, one function per annotation family. Annotations that
//! only make sense for a cloud instance (billing, size, zones, tags, instance reuse...) are
//! validated too and then reported in [`ClbParse::not_applicable`]. Values are
//! case-sensitive, as in the reference; surrounding whitespace is ignored.
//!
//! Annotations that only apply to some listener kinds (`idle-timeout` to http/https,
//! `persistence-timeout` to tcp...) are errors on a Service that has no listener of those
//! kinds, and so are the HTTP health check fields when no listener gets an HTTP check: an
//! annotation that cannot take effect is reported, never silently dropped.
mod backends;
mod cloud;
mod health;
mod http;
mod keys;
mod l4;
mod listeners;
mod service;
mod values;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;

use serde::Serialize;

pub use crate::annotations::values::TlsPolicy;
pub use backends::{BackendOptions, BackendType, NodeLabel};
pub use health::{HealthCheck, HealthCheckDomain, HealthCheckType, HttpCheck, HttpCodeClass, HttpMethod, Probe};
pub use http::{HttpOptions, StickySession};
pub use keys::{CLB_PREFIX, LEGACY_PREFIX, PREFIX};
pub use l4::{ConnectionDrain, L4Options};
pub use listeners::{DomainExtension, ForwardPort, Listener, ListenerProtocol, TlsOptions};
pub use service::{Acl, AclType, IpVersion};
pub use values::{CookieName, Protocol, ResourceId, Scheduler};

use super::{AnnotationError, NotApplicable, parser::Parser};

/// One port of the Service (`spec.ports[]`): what `protocol-port`, `forward-port` and the
/// listener-specific annotations refer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePortInfo {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

/// The result of [`parse`]: the configuration (spec defaults where an annotation is absent
/// or invalid), every rejected annotation, and every accepted annotation that has no effect
/// on a node balancer. The Service must be rejected when `errors` is not empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClbParse {
    pub config: ClbConfig,
    pub errors: Vec<AnnotationError>,
    pub not_applicable: Vec<NotApplicable>,
}

/// What the CLB annotations of one Service ask for, typed and validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClbConfig {
    /// One listener per Service port, in `spec.ports` order; `protocol-port` turns TCP ports
    /// into http/https listeners.
    pub listeners: Vec<Listener>,
    /// `forward-port`: http listeners that redirect to an https listener.
    pub forward_ports: Vec<ForwardPort>,
    /// `hostname`: reported in the Service's status instead of the VIP.
    pub hostname: Option<String>,
    /// `ip-version` (default ipv4).
    pub ip_version: IpVersion,
    /// `scheduler` (default rr).
    pub scheduler: Scheduler,
    /// `acl-status`, `acl-id`, `acl-type`.
    pub acl: Acl,
    /// Options of tcp/udp listeners.
    pub l4: L4Options,
    /// Options of http/https listeners.
    pub http: HttpOptions,
    /// Options of https listeners.
    pub tls: TlsOptions,
    /// The `health-check-*`, `healthy-threshold`, `unhealthy-threshold` family.
    pub health_check: HealthCheck,
    /// Which endpoints become backends.
    pub backends: BackendOptions,
    /// How the Service spelled its keys, for what is found wrong after parsing.
    #[serde(skip)]
    pub written: Spelling,
}

impl ClbConfig {
    /// The full key of `alibaba-cloud-loadbalancer-<suffix>` as the Service wrote it, or
    /// its canonical spelling when absent.
    pub fn key(&self, suffix: &str) -> String {
        let canonical = format!("{PREFIX}{CLB_PREFIX}{suffix}");
        self.written.0.get(&canonical).cloned().unwrap_or(canonical)
    }
}

/// Canonical key → the key as written (either prefix). Not configuration: two configurations
/// that differ only in how their keys were spelled are equal.
#[derive(Debug, Clone, Default)]
pub struct Spelling(BTreeMap<String, String>);

impl PartialEq for Spelling {
    fn eq(&self, _: &Spelling) -> bool {
        true
    }
}

impl Eq for Spelling {}

/// Parse the CLB annotations among `annotations` for a Service with `ports`. Keys outside
/// the CLB namespace (other controllers' annotations) are not looked at.
pub fn parse(annotations: &BTreeMap<String, String>, ports: &[ServicePortInfo]) -> ClbParse {
    let mut cx = keys::parser(annotations);
    let listeners = listeners::listeners(&mut cx, ports);
    let config = ClbConfig {
        forward_ports: listeners::forward_ports(&mut cx, &listeners),
        tls: listeners::tls(&mut cx, &listeners),
        hostname: service::hostname(&mut cx),
        ip_version: service::ip_version(&mut cx),
        scheduler: service::scheduler(&mut cx),
        acl: service::acl(&mut cx),
        l4: l4::options(&mut cx, &listeners),
        http: http::options(&mut cx, &listeners),
        health_check: health::health_check(&mut cx, &listeners),
        backends: backends::options(&mut cx),
        listeners,
        written: Spelling(cx.written_keys()),
    };
    cloud::not_applicable(&mut cx, ports);
    ClbParse { config, errors: cx.errors, not_applicable: cx.not_applicable }
}

/// The parser context of the CLB family functions.
pub(crate) type Cx = Parser<keys::Key>;

#[cfg(test)]
mod tests {
    use super::testutil::{full, run, tcp, udp};
    use super::*;

    #[test]
    fn defaults_match_the_reference() {
        let p = run(&[], &[tcp(80), udp(53)]);
        assert!(p.errors.is_empty() && p.not_applicable.is_empty());
        let c = &p.config;
        assert_eq!(c.scheduler, Scheduler::Rr);
        assert_eq!(c.ip_version, IpVersion::Ipv4);
        assert_eq!(c.acl, Acl::Off);
        assert_eq!(c.hostname, None);
        assert!(c.forward_ports.is_empty());
        assert_eq!((c.l4.persistence_timeout_s, c.l4.established_timeout_s), (0, None));
        assert_eq!((c.l4.connection_drain, c.l4.proxy_protocol), (ConnectionDrain::Off, false));
        assert_eq!((c.http.idle_timeout_s, c.http.request_timeout_s), (15, 60));
        assert_eq!(c.http.sticky_session, StickySession::Off);
        assert!(!c.http.x_forwarded_proto && !c.http.x_forwarded_slb_port && !c.http.x_forwarded_client_src_port);
        assert_eq!((c.tls.cipher_policy, c.tls.http2, c.tls.cert_id.is_none()), (TlsPolicy::Tls10, true, true));
        let hc = &c.health_check;
        assert_eq!((hc.switch, hc.flag, hc.check_type), (true, false, HealthCheckType::Tcp));
        assert_eq!((hc.connect_timeout_s, hc.healthy_threshold, hc.unhealthy_threshold, hc.interval_s), (5, 3, 3, 2));
        assert_eq!((hc.http.codes.as_slice(), hc.http.method), ([HttpCodeClass::Http2xx].as_slice(), HttpMethod::Head));
        assert_eq!(c.backends, BackendOptions::default());
        assert_eq!(
            c.listeners,
            [
                Listener { name: None, port: 80, protocol: ListenerProtocol::Tcp },
                Listener { name: None, port: 53, protocol: ListenerProtocol::Udp },
            ]
        );
    }

    #[test]
    fn one_typo_gives_one_error() {
        // protocol-port is wrong: what depends on its listeners is not reported as well.
        let p = run(
            &[
                ("protocol-port", "htps:443"),
                ("cert-id", "c-1"),
                ("idle-timeout", "30"),
                ("forward-port", "80:443"),
                ("tls-cipher-policy", "tls_cipher_policy_1_2"),
            ],
            &[tcp(443), tcp(80)],
        );
        assert_eq!(p.errors.len(), 1, "{:?}", p.errors);
        assert_eq!(p.errors[0].annotation, full("protocol-port"));
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let p = run(
            &[("scheduler", "lc"), ("persistence-timeout", "4000"), ("acl-status", "on"), ("bandwidth", "x")],
            &[tcp(80)],
        );
        let got: Vec<String> = p.errors.iter().map(ToString::to_string).collect();
        let p = |s: &str| format!("{PREFIX}{CLB_PREFIX}{s}");
        assert_eq!(
            got,
            [
                format!("{}: \"lc\" is not one of rr, wrr, sch, tch", p("scheduler")),
                format!("{}: on requires acl-id", p("acl-status")),
                format!("{}: on requires acl-type (white or black)", p("acl-status")),
                format!("{}: 4000 is outside 0..=3600", p("persistence-timeout")),
            ]
        );
    }

    /// Every key of the reference but `bandwidth` (Internet-facing only, while `ip` needs
    /// intranet) and `cookie` (sticky-session-type server, while `cookie-timeout` needs
    /// insert), with values that satisfy every rule at once.
    const EVERYTHING: [(&str, &str); 59] = [
        ("protocol-port", "https:443,http:80"),
        ("forward-port", "80:443"),
        ("cert-id", "c-1"),
        ("domain-extensions", "a.example.com:c-2"),
        ("tls-cipher-policy", "tls_cipher_policy_1_2"),
        ("http2-enabled", "off"),
        ("hostname", "www.example.com"),
        ("ip-version", "ipv4"),
        ("scheduler", "wrr"),
        ("acl-status", "on"),
        ("acl-id", "acl-1"),
        ("acl-type", "white"),
        ("persistence-timeout", "60"),
        ("established-timeout", "60"),
        ("connection-drain", "on"),
        ("connection-drain-timeout", "30"),
        ("proxy-protocol", "on"),
        ("sticky-session", "on"),
        ("sticky-session-type", "insert"),
        ("cookie-timeout", "60"),
        ("xforwardedfor-proto", "on"),
        ("xforwardedfor-slbport", "on"),
        ("xforwardedfor-clientsrcport", "on"),
        ("idle-timeout", "30"),
        ("request-timeout", "30"),
        ("health-check-switch", "on"),
        ("health-check-flag", "on"),
        ("health-check-type", "http"),
        ("health-check-connect-timeout", "4"),
        ("health-check-timeout", "6"),
        ("healthy-threshold", "2"),
        ("unhealthy-threshold", "10"),
        ("health-check-interval", "1"),
        ("health-check-uri", "/healthz"),
        ("health-check-httpcode", "http_2xx,http_3xx"),
        ("health-check-domain", "$_ip"),
        ("health-check-method", "get"),
        ("backend-label", "pool=edge"),
        ("remove-unscheduled-backend", "on"),
        ("backend-type", "ecs"),
        ("address-type", "intranet"),
        ("vswitch-id", "vsw-1"),
        ("instance-charge-type", "PayBySpec"),
        ("spec", "slb.s2.medium"),
        ("charge-type", "paybytraffic"),
        ("id", "lb-1"),
        ("force-override-listeners", "true"),
        ("master-zoneid", "cn-hangzhou-k"),
        ("slave-zoneid", "cn-hangzhou-j"),
        ("ip", "192.168.0.10"),
        ("additional-resource-tags", "k=v"),
        ("name", "svc-1"),
        ("resource-group-id", "rg-1"),
        ("delete-protection", "off"),
        ("modification-protection", "NonProtection"),
        ("preserve-lb-on-delete", "true"),
        ("vgroup-port", "rsp-1:80"),
        ("weight", "50"),
        ("ignore-weight-update", "on"),
    ];

    #[test]
    fn every_key_in_both_spellings() {
        let ports = [tcp(443), tcp(80), tcp(22), udp(53)];
        let pairs = EVERYTHING;
        let current = run(&pairs, &ports);
        assert!(current.errors.is_empty(), "{:#?}", current.errors);
        assert_eq!(current.not_applicable.len(), 19);
        let legacy: Vec<(String, &str)> = pairs
            .iter()
            .map(|(k, v)| match *k {
                "backend-type" => (full(k), *v),
                _ => (format!("{PREFIX}{LEGACY_PREFIX}{k}"), *v),
            })
            .collect();
        let legacy_pairs: Vec<(&str, &str)> = legacy.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let old = run(&legacy_pairs, &ports);
        assert!(old.errors.is_empty(), "{:#?}", old.errors);
        assert_eq!(old.config, current.config);
        let reasons = |p: &ClbParse| p.not_applicable.iter().map(|n| n.reason.clone()).collect::<Vec<_>>();
        assert_eq!(reasons(&old), reasons(&current));
        assert!(old.not_applicable.iter().all(|n| n.annotation.contains(LEGACY_PREFIX)));
        // Every key of the reference is in this set.
        for k in keys::Key::ALL {
            let left_out = matches!(k, keys::Key::Bandwidth | keys::Key::Cookie);
            assert!(left_out || EVERYTHING.iter().any(|(s, _)| *s == k.suffix()), "{k:?}");
        }
        // A few values, read back.
        let c = &current.config;
        assert_eq!(c.health_check.timeout_s(ListenerProtocol::Http), 6);
        assert_eq!(c.health_check.probe(ListenerProtocol::Udp), Some(Probe::Udp));
        assert_eq!(c.l4.connection_drain, ConnectionDrain::On { timeout_s: 30 });
        assert_eq!(c.http.sticky_session, StickySession::Insert { cookie_timeout_s: 60 });
    }

    #[test]
    fn config_serializes_for_lb_check_json() {
        let p = run(
            &[
                ("protocol-port", "https:443"),
                ("cert-id", "c-1"),
                ("scheduler", "wrr"),
                ("acl-status", "on"),
                ("acl-id", "a-1"),
                ("acl-type", "black"),
            ],
            &[tcp(443)],
        );
        let json = serde_json::to_value(&p.config).unwrap();
        assert_eq!(json["listeners"][0]["protocol"], "https");
        assert_eq!(json["scheduler"], "wrr");
        assert_eq!(json["acl"]["on"]["kind"], "black");
        assert_eq!(json["tls"]["cipher_policy"], "tls_cipher_policy_1_0");
        assert_eq!(json["tls"]["cert_id"], "c-1");
        assert_eq!(json["health_check"]["http"]["codes"][0], "http_2xx");
    }
}
