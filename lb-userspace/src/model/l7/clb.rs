//! CLB http/https Service ports → L7 listeners on the Service's VIP, each with one
//! catch-all route to the Service port (CLB `cert-id`, `tls-cipher-policy`, sticky
//! sessions, forwarded headers, `forward-port`, ACL), over the backends the L4 listeners
//! would take (endpoints or `backend-type: ecs` nodes; `externalTrafficPolicy: Local`).
use std::net::{IpAddr, SocketAddr};

use super::{
    Endpoint, ForwardedHeaders, L7Listener, L7Protocol, ListenerAcl, Lookup, Route, TlsSettings, Upstream, convert,
    route,
};
use crate::annotations::clb::Scheduler;
use crate::annotations::clb::{self, ClbConfig, ListenerProtocol};
use crate::model::{AclBinding, ObjectError, ObjectRef, Protocol, backends::PortBackends, health};

/// The http/https listeners of a CLB Service: one catch-all route to the Service port.
pub fn clb_listeners(
    source: &ObjectRef,
    cfg: &ClbConfig,
    vip: IpAddr,
    acl: Option<&AclBinding>,
    lookup: &Lookup<'_>,
    backends: &PortBackends<'_>,
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
                Err(reason) => errors.push(err(cfg.key("cert-id"), reason)),
            },
            None => errors.push(err(
                cfg.key("cert-id"),
                "an https listener needs a certificate: name a kubernetes.io/tls Secret of the Service's namespace"
                    .into(),
            )),
        }
        for ext in &cfg.tls.domain_extensions {
            match lookup.certificate(&source.namespace, ext.cert_id.as_str(), vec![ext.domain.clone()]) {
                Ok(c) => certificates.push(c),
                Err(reason) => errors.push(err(cfg.key("domain-extensions"), reason)),
            }
        }
        Some(TlsSettings { policy: convert::tls_policy(cfg.tls.cipher_policy), certificates })
    } else {
        None
    };
    for l in cfg.listeners.iter().filter(|l| l.protocol.is_l7()) {
        let protocol = if l.protocol == ListenerProtocol::Https { L7Protocol::Https } else { L7Protocol::Http };
        let backend = route::BackendSettings {
            sticky: match &cfg.http.sticky_session {
                clb::StickySession::Off => None,
                clb::StickySession::Insert { cookie_timeout_s } => {
                    Some(route::StickySession::Insert { timeout_s: *cookie_timeout_s })
                }
                clb::StickySession::Server { cookie } => {
                    Some(route::StickySession::Server { cookie: cookie.as_str().to_owned() })
                }
            },
            scheduler: match cfg.scheduler {
                Scheduler::Sch => route::Scheduler::Sch,
                Scheduler::Tch => route::Scheduler::Tch,
                _ => route::Scheduler::Wrr,
            },
            // `connection-drain` is for TCP and UDP listeners only (the reference; the parser
            // refuses it on a Service with none): the proxy's drain timeout applies here.
            ..route::BackendSettings::default()
        };
        let rule = route::Rule::catch_all(source.clone(), backend);
        // The Service port's backends (endpoints, or nodes with backend-type ecs), as the L4
        // listeners take them: this node's only, or the nodes hosting one, under Local.
        let mut endpoints: Vec<Endpoint> = match backends.for_port(l.port, Protocol::Tcp, vip) {
            Ok(b) => {
                b.into_iter().map(|b| Endpoint { addr: SocketAddr::new(b.addr, b.port), weight: b.weight }).collect()
            }
            Err((field, reason)) => {
                errors.push(err(field, reason));
                continue;
            }
        };
        if cfg.scheduler == Scheduler::Rr {
            // Round robin ignores weights (a weight-0 endpoint still gets nothing).
            for e in &mut endpoints {
                e.weight = e.weight.min(1) * 100;
            }
        }
        let upstream = Upstream {
            name: format!("{}/{}:{}", source.namespace, source.name, l.port),
            weight: 100,
            endpoints,
            health_check: health::from_clb_listener(&cfg.health_check, l.protocol),
        };
        let redirect_https_port = cfg.forward_ports.iter().find(|f| f.http_port == l.port).map(|f| f.https_port);
        out.push(L7Listener {
            sources: vec![source.clone()],
            addr: Some(vip),
            port: l.port,
            protocol,
            tls: if protocol == L7Protocol::Https { tls.clone() } else { None },
            // `http2-enabled` is an HTTPS listener's (ALPN); plain ones always take h2c.
            http2: protocol != L7Protocol::Https || cfg.tls.http2,
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
