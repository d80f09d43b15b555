//! L7 listeners: ALB Ingresses (on their AlbConfig listeners / `listen-ports`) and CLB
//! http/https Service ports → what the L7 proxy serves, with every Service resolved to its
//! ready endpoints and every TLS Secret to PEM.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::api::core::v1::{Secret, Service};
use serde::Serialize;

use super::{Build, Notice, ObjectError, ObjectRef, service::SliceIndex};
use crate::annotations::alb::{
    self, Action, AlbIngressClass, AlbListener, BackendSettings, Filter, IngressParse, ListenProtocol, PathMatch,
    PathType, Rule, RulePath, ServicePort, ServiceRef, StickySession, TlsPolicy, WeightedService,
};
use crate::annotations::clb::{self, ClbConfig, ListenerProtocol, TlsCipherPolicy};
use crate::manifests::ObjectSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum L7Protocol {
    Http,
    Https,
}

/// One L7 listener of the node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct L7Listener {
    /// The objects whose routes it serves.
    pub sources: Vec<ObjectRef>,
    /// `None`: every address of the node (ALB, like a host-network ingress controller);
    /// `Some`: the Service's VIP (CLB).
    pub addr: Option<IpAddr>,
    pub port: u16,
    pub protocol: L7Protocol,
    /// Certificates, the first one the default (HTTPS only).
    pub tls: Option<TlsSettings>,
    /// HTTP/2: offered in ALPN on HTTPS; prior-knowledge h2c is always accepted on HTTP.
    pub http2: bool,
    /// A request not answered within this many seconds gets a 504.
    pub request_timeout_s: u32,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout_s: u32,
    /// Text-like answers are gzip-compressed for clients that accept it (ALB `gzipEnabled`,
    /// on by default; CLB http/https listeners compress as CLB does by default).
    pub gzip: bool,
    pub headers: ForwardedHeaders,
    /// CLB `forward-port`: every request is redirected to HTTPS on this port.
    pub redirect_https_port: Option<u16>,
    /// CLB `acl-*`: who may connect (checked when a connection is accepted).
    pub acl: Option<ListenerAcl>,
    /// Canary rules, tried first (a canary rule that matches and selects the request wins).
    pub canaries: Vec<Route>,
    /// The other rules, in ALB order.
    pub routes: Vec<Route>,
}

/// An ACL bound to an L7 listener, with its prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListenerAcl {
    pub acl: String,
    pub mode: super::AclMode,
    pub entries: Vec<ipnet::IpNet>,
}

impl ListenerAcl {
    /// Whether `client` may connect (an empty whitelist lets everyone in, as CLB does).
    pub fn allows(&self, client: IpAddr) -> bool {
        let listed = self.entries.iter().any(|n| n.contains(&client));
        match self.mode {
            super::AclMode::White => listed || self.entries.is_empty(),
            super::AclMode::Black => !listed,
        }
    }
}

/// Headers added to every forwarded request besides `X-Forwarded-For` (always appended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ForwardedHeaders {
    /// `X-Forwarded-Proto`.
    pub proto: bool,
    /// `X-Forwarded-Port`: the listener port (CLB `xforwardedfor-slbport`).
    pub listener_port: bool,
    /// `X-Forwarded-Client-Srcport`: the client's source port (CLB `xforwardedfor-clientsrcport`).
    pub client_port: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub rule: Rule,
    /// One per Service of the rule's forward action, resolved to endpoints.
    pub upstreams: Vec<Upstream>,
    /// `TrafficMirror` targets.
    pub mirrors: Vec<Upstream>,
}

/// A Service port of a route and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Upstream {
    /// `namespace/name:port`.
    pub name: String,
    /// Relative weight among the Services of the rule (0..=100).
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
    /// Active health checks of the endpoints (unhealthy ones get no requests).
    pub health_check: Option<crate::health::HealthCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsSettings {
    pub policy: TlsPolicy,
    pub certificates: Vec<Certificate>,
}

/// A certificate and key from a `kubernetes.io/tls` Secret.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Certificate {
    pub secret: ObjectRef,
    /// Server names it is chosen for (exact or `*.` wildcard); empty: default only.
    pub hosts: Vec<String>,
    #[serde(skip)]
    pub cert_pem: Vec<u8>,
    #[serde(skip)]
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate").field("secret", &self.secret).field("hosts", &self.hosts).finish()
    }
}

/// Default `request-timeout` and `idle-timeout` of ALB listeners without an AlbConfig.
const ALB_REQUEST_TIMEOUT_S: u32 = 60;
const ALB_IDLE_TIMEOUT_S: u32 = 15;

/// The key of an L7 listener in the model: `*:80/http`, `198.18.0.10:443/https`.
pub fn listener_key(addr: Option<IpAddr>, port: u16, protocol: L7Protocol) -> String {
    let p = match protocol {
        L7Protocol::Http => "http",
        L7Protocol::Https => "https",
    };
    match addr {
        None => format!("*:{port}/{p}"),
        Some(IpAddr::V4(a)) => format!("{a}:{port}/{p}"),
        Some(IpAddr::V6(a)) => format!("[{a}]:{port}/{p}"),
    }
}

/// What the L7 builder looks things up in.
pub struct Lookup<'a> {
    pub services: BTreeMap<(String, String), &'a Service>,
    pub secrets: BTreeMap<(String, String), &'a Secret>,
    pub slices: &'a SliceIndex<'a>,
    pub classes: Vec<AlbIngressClass>,
    /// Prefixes of the validated ACLs, by name.
    pub acls: BTreeMap<String, Vec<ipnet::IpNet>>,
}

impl<'a> Lookup<'a> {
    pub fn new(objects: &'a ObjectSet, slices: &'a SliceIndex<'a>) -> Lookup<'a> {
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (m.namespace.clone().unwrap_or_else(|| "default".into()), m.name.clone().unwrap_or_default())
        };
        Lookup {
            services: objects.services.iter().map(|s| (key(&s.metadata), s)).collect(),
            secrets: objects.secrets.iter().map(|s| (key(&s.metadata), s)).collect(),
            slices,
            classes: objects
                .ingress_classes
                .iter()
                .filter_map(|c| alb::parse_ingress_class(c).ok().flatten())
                .collect(),
            acls: BTreeMap::new(),
        }
    }

    /// A TLS Secret's certificate, or why it cannot be used.
    pub fn certificate(&self, namespace: &str, name: &str, hosts: Vec<String>) -> Result<Certificate, String> {
        let secret = self
            .secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .ok_or_else(|| format!("TLS Secret {namespace}/{name} not found"))?;
        let data = secret.data.as_ref();
        let get = |k: &str| data.and_then(|d| d.get(k)).map(|b| b.0.clone()).filter(|b| !b.is_empty());
        let cert_pem = get("tls.crt").ok_or_else(|| format!("Secret {namespace}/{name} has no tls.crt"))?;
        let key_pem = get("tls.key").ok_or_else(|| format!("Secret {namespace}/{name} has no tls.key"))?;
        crate::l7::tls::check_pem(&cert_pem, &key_pem).map_err(|e| format!("Secret {namespace}/{name}: {e}"))?;
        Ok(Certificate {
            secret: ObjectRef { kind: "Secret".into(), namespace: namespace.into(), name: name.into() },
            hosts,
            cert_pem,
            key_pem,
        })
    }

    /// The ready endpoints of a Service port (the port by number or name), in the families asked.
    pub fn endpoints(&self, namespace: &str, svc: &ServiceRef, ipv6: bool) -> Result<Vec<Endpoint>, String> {
        let service = self
            .services
            .get(&(namespace.to_owned(), svc.name.clone()))
            .ok_or_else(|| format!("Service {namespace}/{} not found", svc.name))?;
        let ports = service.spec.as_ref().and_then(|s| s.ports.as_ref()).cloned().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| match &svc.port {
                ServicePort::Number(n) => p.port == i32::from(*n),
                ServicePort::Name(n) => p.name.as_deref() == Some(n.as_str()),
            })
            .ok_or_else(|| format!("Service {namespace}/{} has no port {}", svc.name, port_text(&svc.port)))?;
        let slices = self.slices.get(&(namespace.to_owned(), svc.name.clone())).map(Vec::as_slice).unwrap_or(&[]);
        let port_name = port.name.clone().unwrap_or_default();
        let mut out = Vec::new();
        let mut families = vec![IpAddr::from([0, 0, 0, 0])];
        if ipv6 {
            families.push(IpAddr::from([0u16; 8]));
        }
        for family in families {
            let backends = super::service::backends(slices, &port_name, super::Protocol::Tcp, family, None)?;
            out.extend(
                backends.into_iter().map(|b| Endpoint { addr: SocketAddr::new(b.addr, b.port), weight: b.weight }),
            );
        }
        Ok(out)
    }
}

fn port_text(p: &ServicePort) -> String {
    match p {
        ServicePort::Number(n) => n.to_string(),
        ServicePort::Name(n) => n.clone(),
    }
}

/// Routes of one rule with its Services resolved; missing Services become notices (the
/// rule then answers 503, as a controller whose Service is not there yet does).
fn route(rule: &Rule, lookup: &Lookup<'_>, notices: &mut Vec<Notice>, source: &ObjectRef) -> Route {
    let mut resolve = |svc: &ServiceRef, weight: u32| {
        let endpoints = lookup.endpoints(&rule.namespace, svc, rule.backend.ipv6).unwrap_or_else(|reason| {
            notices.push(Notice {
                object: source.clone(),
                field: "spec.rules".into(),
                note: format!("{reason}: requests answer 503"),
            });
            Vec::new()
        });
        Upstream {
            name: format!("{}/{}:{}", rule.namespace, svc.name, port_text(&svc.port)),
            weight,
            endpoints,
            health_check: rule.backend.health_check.as_ref().map(crate::health::from_alb),
        }
    };
    let upstreams = match &rule.action {
        Action::Forward { groups, .. } => groups.iter().map(|g| resolve(&g.service, g.weight)).collect(),
        _ => Vec::new(),
    };
    let mirrors = rule
        .filters
        .iter()
        .filter_map(|f| if let Filter::TrafficMirror(s) = f { Some(s) } else { None })
        .flatten()
        .map(|s| resolve(s, 100))
        .collect();
    Route { rule: rule.clone(), upstreams, mirrors }
}

/// ALB listeners for the accepted Ingresses, plus CLB http/https listeners already put in
/// `out.model.l7` by the Service builder. An Ingress that asks for a port another Ingress
/// already serves with another protocol is rejected.
pub fn build_alb(lookup: &Lookup<'_>, out: &mut Build) {
    let mut rejected = Vec::new();
    let ingresses: Vec<(String, IngressParse)> =
        out.model.ingresses.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for (key, p) in ingresses {
        let source = ObjectRef { kind: "Ingress".into(), namespace: p.namespace.clone(), name: p.name.clone() };
        let class = alb::class_of(p.class_name.as_deref(), &lookup.classes);
        let albconfig = class.and_then(|c| out.model.alb_configs.get(&c.albconfig)).cloned();
        // Protocol clash with a listener of another Ingress or a CLB Service.
        let clash = p.listeners.iter().find_map(|l| {
            let proto = match l.protocol {
                ListenProtocol::Http => L7Protocol::Http,
                ListenProtocol::Https => L7Protocol::Https,
                ListenProtocol::Quic => return None,
            };
            let other = if proto == L7Protocol::Http { L7Protocol::Https } else { L7Protocol::Http };
            out.model.l7.get(&listener_key(None, l.port, other)).map(|o| (l.port, o.sources.first().cloned()))
        });
        if let Some((port, owner)) = clash {
            let owner = owner.map(|o| o.to_string()).unwrap_or_default();
            out.errors.push(ObjectError {
                object: source,
                field: format!("{}listen-ports", alb::PREFIX),
                reason: format!("port {port} is already served with another protocol for {owner}"),
            });
            rejected.push(key);
            continue;
        }
        for l in &p.listeners {
            let protocol = match l.protocol {
                ListenProtocol::Http => L7Protocol::Http,
                ListenProtocol::Https => L7Protocol::Https,
                ListenProtocol::Quic => {
                    out.notices.push(Notice {
                        object: source.clone(),
                        field: format!("{}listen-ports", alb::PREFIX),
                        note: format!("QUIC:{} is not served (no HTTP/3 on this balancer)", l.port),
                    });
                    continue;
                }
            };
            let cfg: Option<AlbListener> =
                albconfig.as_ref().and_then(|c| c.listeners.iter().find(|a| a.port == l.port).cloned());
            let entry = out.model.l7.entry(listener_key(None, l.port, protocol)).or_insert_with(|| L7Listener {
                sources: Vec::new(),
                addr: None,
                port: l.port,
                protocol,
                tls: (protocol == L7Protocol::Https).then(|| TlsSettings {
                    policy: cfg.as_ref().and_then(|c| c.security_policy).unwrap_or(TlsPolicy::Tls10),
                    certificates: Vec::new(),
                }),
                http2: cfg.as_ref().is_none_or(|c| c.http2),
                request_timeout_s: cfg.as_ref().map_or(ALB_REQUEST_TIMEOUT_S, |c| c.request_timeout_s),
                idle_timeout_s: cfg.as_ref().map_or(ALB_IDLE_TIMEOUT_S, |c| c.idle_timeout_s),
                gzip: cfg.as_ref().is_none_or(|c| c.gzip),
                headers: ForwardedHeaders { proto: true, listener_port: true, client_port: false },
                redirect_https_port: None,
                acl: None,
                canaries: Vec::new(),
                routes: Vec::new(),
            });
            entry.sources.push(source.clone());
            let mut notices = Vec::new();
            for rule in &p.rules {
                let r = route(rule, lookup, &mut notices, &source);
                if rule.canary.is_some() { entry.canaries.push(r) } else { entry.routes.push(r) }
            }
            if let Some(tls) = entry.tls.as_mut() {
                for t in &p.tls {
                    let Some(secret) = &t.secret_name else { continue };
                    match lookup.certificate(&p.namespace, secret, t.hosts.clone()) {
                        Ok(c) => tls.certificates.push(c),
                        Err(reason) => notices.push(Notice {
                            object: source.clone(),
                            field: "spec.tls".into(),
                            note: format!("{reason}: its hosts get the listener's default certificate"),
                        }),
                    }
                }
            }
            // One notice per missing thing, even when the Ingress is on several listeners.
            for n in notices {
                if !out.notices.contains(&n) {
                    out.notices.push(n);
                }
            }
        }
    }
    for key in rejected {
        out.model.ingresses.remove(&key);
    }
    for l in out.model.l7.values_mut() {
        sort_routes(&mut l.routes);
        sort_routes(&mut l.canaries);
    }
}

pub fn sort_routes(routes: &mut [Route]) {
    routes.sort_by(|a, b| {
        let key =
            |r: &Rule| (r.default_backend, r.order, r.namespace.clone(), r.ingress.clone(), r.rule_index, r.path_index);
        key(&a.rule).cmp(&key(&b.rule))
    });
}

/// The http/https listeners of a CLB Service: one catch-all route to the Service port.
pub fn clb_listeners(
    source: &ObjectRef,
    cfg: &ClbConfig,
    vip: IpAddr,
    acl: Option<&super::AclBinding>,
    lookup: &Lookup<'_>,
) -> Result<Vec<L7Listener>, Vec<ObjectError>> {
    let acl = acl.map(|b| ListenerAcl {
        acl: b.acl.clone(),
        mode: b.mode,
        entries: lookup.acls.get(&b.acl).cloned().unwrap_or_default(),
    });
    let err = |field: String, reason: String| ObjectError { object: source.clone(), field, reason };
    let mut errors = Vec::new();
    let mut out = Vec::new();
    let tls = if cfg.listeners.iter().any(|l| l.protocol == ListenerProtocol::Https) {
        let mut certificates = Vec::new();
        match &cfg.tls.cert_id {
            Some(id) => match lookup.certificate(&source.namespace, id.as_str(), Vec::new()) {
                Ok(c) => certificates.push(c),
                Err(reason) => errors.push(err(format!("{}cert-id", clb::CLB_PREFIX), reason)),
            },
            None => errors.push(err(
                format!("{}cert-id", clb::CLB_PREFIX),
                "an https listener needs a certificate: name a kubernetes.io/tls Secret of the Service's namespace"
                    .into(),
            )),
        }
        for ext in &cfg.tls.domain_extensions {
            match lookup.certificate(&source.namespace, ext.cert_id.as_str(), vec![ext.domain.clone()]) {
                Ok(c) => certificates.push(c),
                Err(reason) => errors.push(err(format!("{}domain-extensions", clb::CLB_PREFIX), reason)),
            }
        }
        Some(TlsSettings { policy: tls_policy(cfg.tls.cipher_policy), certificates })
    } else {
        None
    };
    for l in cfg.listeners.iter().filter(|l| l.protocol.is_l7()) {
        let protocol = if l.protocol == ListenerProtocol::Https { L7Protocol::Https } else { L7Protocol::Http };
        let service = ServiceRef { name: source.name.clone(), port: ServicePort::Number(l.port) };
        let mut backend = BackendSettings { ipv6: vip.is_ipv6(), ..BackendSettings::default() };
        backend.sticky = match &cfg.http.sticky_session {
            clb::StickySession::Off => None,
            clb::StickySession::Insert { cookie_timeout_s } => {
                Some(StickySession::Insert { timeout_s: *cookie_timeout_s })
            }
            clb::StickySession::Server { cookie } => Some(StickySession::Server { cookie: cookie.as_str().to_owned() }),
        };
        backend.scheduler = match cfg.scheduler {
            super::Scheduler::Sch | super::Scheduler::Tch => alb::Scheduler::Sch,
            _ => alb::Scheduler::Wrr,
        };
        let rule = Rule {
            namespace: source.namespace.clone(),
            ingress: source.name.clone(),
            rule_index: 0,
            path_index: 0,
            default_backend: true,
            order: 10,
            host: None,
            path: RulePath { path_type: PathType::Prefix, path: "/".into(), matcher: PathMatch::Prefix("/".into()) },
            service: service.clone(),
            conditions: Vec::new(),
            action: Action::Forward { groups: vec![WeightedService { service, weight: 100 }], sticky: None },
            filters: Vec::new(),
            rewrite: None,
            ssl_redirect: false,
            canary: None,
            backend,
            cors: None,
            qps_limit: None,
        };
        let mut endpoints = match lookup.endpoints(&source.namespace, &rule.service, vip.is_ipv6()) {
            Ok(e) => e,
            Err(reason) => {
                errors.push(err("spec.ports".into(), reason));
                continue;
            }
        };
        endpoints.retain(|e| e.addr.is_ipv4() == vip.is_ipv4());
        if cfg.scheduler == super::Scheduler::Rr {
            // Round robin ignores weights (a weight-0 endpoint still gets nothing).
            for e in &mut endpoints {
                e.weight = e.weight.min(1) * 100;
            }
        }
        let upstream = Upstream {
            name: format!("{}/{}:{}", source.namespace, source.name, l.port),
            weight: 100,
            endpoints,
            health_check: crate::health::from_clb_listener(&cfg.health_check, l.protocol),
        };
        let redirect_https_port = cfg.forward_ports.iter().find(|f| f.http_port == l.port).map(|f| f.https_port);
        out.push(L7Listener {
            sources: vec![source.clone()],
            addr: Some(vip),
            port: l.port,
            protocol,
            tls: if protocol == L7Protocol::Https { tls.clone() } else { None },
            http2: cfg.tls.http2,
            request_timeout_s: u32::from(cfg.http.request_timeout_s),
            idle_timeout_s: u32::from(cfg.http.idle_timeout_s),
            gzip: true,
            headers: ForwardedHeaders {
                proto: cfg.http.x_forwarded_proto,
                listener_port: cfg.http.x_forwarded_slb_port,
                client_port: cfg.http.x_forwarded_client_src_port,
            },
            redirect_https_port,
            acl: acl.clone(),
            canaries: Vec::new(),
            routes: vec![Route { rule, upstreams: vec![upstream], mirrors: Vec::new() }],
        });
    }
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

fn tls_policy(p: TlsCipherPolicy) -> TlsPolicy {
    match p {
        TlsCipherPolicy::Tls10 => TlsPolicy::Tls10,
        TlsCipherPolicy::Tls11 => TlsPolicy::Tls11,
        TlsCipherPolicy::Tls12 => TlsPolicy::Tls12,
        TlsCipherPolicy::Tls12Strict => TlsPolicy::Tls12Strict,
        TlsCipherPolicy::Tls12StrictWith13 => TlsPolicy::Tls12StrictWith13,
    }
}
