//! L7 listeners: what the proxy serves on each (address, port): TLS certificates and
//! policy, timeouts, forwarded headers, and the routes ([`route::Rule`] with its upstreams
//! resolved to ready endpoints). Built from ALB Ingresses ([`build_alb`]) and CLB http/https
//! Service ports ([`clb_listeners`]).
mod alb;
mod clb;
pub mod convert;
mod fleet;
mod lookup;
mod ownership;
pub mod route;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use super::{AclMode, ObjectRef, health::HealthCheck};

pub use alb::build_alb;
pub use clb::clb_listeners;
pub use lookup::Lookup;

/// A TLS security policy: the protocol versions and cipher suites a listener offers
/// (ALB `securityPolicyId`, CLB `tls-cipher-policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsPolicy {
    /// `tls_cipher_policy_1_0`: TLS 1.0 and later.
    #[serde(rename = "tls_cipher_policy_1_0")]
    Tls10,
    /// `tls_cipher_policy_1_1`: TLS 1.1 and later.
    #[serde(rename = "tls_cipher_policy_1_1")]
    Tls11,
    /// `tls_cipher_policy_1_2`: TLS 1.2 and later.
    #[serde(rename = "tls_cipher_policy_1_2")]
    Tls12,
    /// `tls_cipher_policy_1_2_strict`: TLS 1.2, forward-secret (ECDHE) ciphers only.
    #[serde(rename = "tls_cipher_policy_1_2_strict")]
    Tls12Strict,
    /// `tls_cipher_policy_1_2_strict_with_1_3`: as above, plus TLS 1.3.
    #[serde(rename = "tls_cipher_policy_1_2_strict_with_1_3")]
    Tls12StrictWith13,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L7Protocol {
    Http,
    Https,
}

/// One L7 listener of the node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerAcl {
    pub acl: String,
    pub mode: AclMode,
    pub entries: Vec<ipnet::IpNet>,
}

/// Headers added to every forwarded request besides `X-Forwarded-For` (always appended).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardedHeaders {
    /// `X-Forwarded-Proto`.
    pub proto: bool,
    /// `X-Forwarded-Port`: the listener port (CLB `xforwardedfor-slbport`).
    pub listener_port: bool,
    /// `X-Forwarded-Client-Srcport`: the client's source port (CLB `xforwardedfor-clientsrcport`).
    pub client_port: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub rule: route::Rule,
    /// One per Service of the rule's forward action, resolved to endpoints.
    pub upstreams: Vec<Upstream>,
    /// `TrafficMirror` targets.
    pub mirrors: Vec<Upstream>,
}

/// A Service port of a route and its ready endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// `namespace/name:port`.
    pub name: String,
    /// Relative weight among the Services of the rule (0..=100).
    pub weight: u32,
    pub endpoints: Vec<Endpoint>,
    /// Active health checks of the endpoints (unhealthy ones get no requests). Run by the
    /// agent, which leaves unhealthy endpoints out of what it sends the L7 proxy process:
    /// not part of that message.
    #[serde(skip_deserializing)]
    pub health_check: Option<HealthCheck>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    pub policy: TlsPolicy,
    pub certificates: Vec<Certificate>,
}

/// A certificate and key from a `kubernetes.io/tls` Secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// Routes in the order they are tried: ALB `order`, then namespace, Ingress name, rule and
/// path position; default backends last.
pub fn sort_routes(routes: &mut [Route]) {
    routes.sort_by(|a, b| {
        let key = |r: &route::Rule| {
            (r.default_backend, r.order, r.source.namespace.clone(), r.source.name.clone(), r.rule_index, r.path_index)
        };
        key(&a.rule).cmp(&key(&b.rule))
    });
}
