//! Health-check specifications: how a listener's or an upstream's backends are probed,
//! built from the CLB `health-check-*` and ALB `healthcheck-*` annotations. The probes
//! themselves run in `crate::health`.
use std::time::Duration;

use serde::Serialize;

use super::{Protocol, ProxyProtocol};

/// How a listener's backends are checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HealthCheck {
    pub probe: ProbeKind,
    /// The port probed; 0: the backend's own port.
    pub port: u16,
    /// The backend expects a PROXY protocol header: HTTP probes start with a LOCAL one
    /// (v2 `LOCAL` command, v1 `PROXY UNKNOWN`), as the spec provides for health checks.
    pub proxy_protocol: ProxyProtocol,
    /// Printed as `interval_s`, whole seconds.
    #[serde(rename = "interval_s", serialize_with = "seconds")]
    pub interval: Duration,
    /// Printed as `timeout_s`, whole seconds.
    #[serde(rename = "timeout_s", serialize_with = "seconds")]
    pub timeout: Duration,
    pub healthy_threshold: u8,
    pub unhealthy_threshold: u8,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Tcp,
    Udp,
    Http(HttpCheck),
    Grpc(GrpcCheck),
}

/// An HTTP(S) check: the request it sends and the answers that count as healthy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct HttpCheck {
    pub uri: String,
    /// `Host:` header; the backend's address when `None`.
    pub host: Option<String>,
    /// Healthy status classes: 2 for 2xx, ...
    pub classes: Vec<u8>,
    pub get: bool,
    /// Over TLS (the backend's certificate is not verified, as on ALB).
    pub tls: bool,
    /// `HTTP/1.1` requests (with `Connection: close`); `HTTP/1.0` otherwise.
    pub http11: bool,
}

/// The gRPC health method: `grpc.health.v1.Health/Check` over h2c.
pub const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// A gRPC check over HTTP/2 without TLS (h2c, as the proxy speaks to gRPC backends): the
/// method at `path` is called with a `HealthCheckRequest` naming `service`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct GrpcCheck {
    /// The method called, [`GRPC_HEALTH_CHECK`] unless the annotation names another.
    pub path: String,
    /// `HealthCheckRequest.service`: `""` asks for the server as a whole.
    pub service: String,
    /// Healthy `grpc-status` codes, inclusive ranges; an OK answer of
    /// [`GRPC_HEALTH_CHECK`] must also say `SERVING`.
    pub codes: Vec<(u8, u8)>,
    /// `POST` (gRPC's own method); `GET` when the annotation asks for it.
    pub post: bool,
}

impl GrpcCheck {
    /// The method and service a `healthcheck-path` names: `/` (the default) and
    /// [`GRPC_HEALTH_CHECK`] ask for the whole server; `/<service>` (one segment) checks
    /// that service through [`GRPC_HEALTH_CHECK`]; any other path is the method called.
    pub fn target(path: &str) -> (String, String) {
        let rest = path.trim_start_matches('/');
        if path == GRPC_HEALTH_CHECK || rest.is_empty() {
            (GRPC_HEALTH_CHECK.to_owned(), String::new())
        } else if !rest.contains('/') {
            (GRPC_HEALTH_CHECK.to_owned(), rest.to_owned())
        } else {
            (path.to_owned(), String::new())
        }
    }
}

/// The check CLB annotations ask for on a listener of `protocol`.
pub fn from_clb(h: &crate::annotations::clb::HealthCheck, protocol: Protocol) -> Option<HealthCheck> {
    use crate::annotations::clb::ListenerProtocol;
    from_clb_listener(
        h,
        match protocol {
            Protocol::Tcp => ListenerProtocol::Tcp,
            Protocol::Udp => ListenerProtocol::Udp,
        },
    )
}

/// The check CLB annotations ask for on a listener speaking `lp` (http/https included).
pub fn from_clb_listener(
    h: &crate::annotations::clb::HealthCheck,
    lp: crate::annotations::clb::ListenerProtocol,
) -> Option<HealthCheck> {
    use crate::annotations::clb::{HealthCheckDomain, HttpCodeClass, HttpMethod, Probe};
    let p = h.probe(lp)?;
    let probe = match p {
        Probe::Tcp => ProbeKind::Tcp,
        Probe::Udp => ProbeKind::Udp,
        Probe::Http => ProbeKind::Http(HttpCheck {
            uri: h.http.uri.clone().unwrap_or_else(|| "/".into()),
            host: match &h.http.domain {
                HealthCheckDomain::BackendIp => None,
                HealthCheckDomain::Name(n) => Some(n.clone()),
            },
            classes: h
                .http
                .codes
                .iter()
                .map(|c| match c {
                    HttpCodeClass::Http2xx => 2,
                    HttpCodeClass::Http3xx => 3,
                    HttpCodeClass::Http4xx => 4,
                    HttpCodeClass::Http5xx => 5,
                })
                .collect(),
            get: h.http.method == HttpMethod::Get,
            tls: false,
            // CLB has no version annotation: HTTP/1.1 when `health-check-domain` names a
            // host (a virtual host to ask), HTTP/1.0 with the backend's address otherwise.
            http11: matches!(h.http.domain, HealthCheckDomain::Name(_)),
        }),
    };
    Some(HealthCheck {
        port: 0,
        proxy_protocol: ProxyProtocol::Off,
        interval: Duration::from_secs(h.interval_s.max(1) as u64),
        timeout: Duration::from_secs(h.timeout_s(lp).max(1) as u64),
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
        probe,
    })
}

/// The check of an ALB Ingress's `healthcheck-*` annotations: HTTP/HTTPS in the
/// `healthcheck-httpversion` asked for, gRPC health over h2c, or a TCP connect.
pub fn from_alb(h: &crate::annotations::alb::HealthCheck) -> HealthCheck {
    use crate::annotations::alb::{HealthCheckCodes, HealthCheckMethod, HealthCheckProtocol, HttpVersion};
    let classes = match &h.codes {
        HealthCheckCodes::Http(c) => c.clone(),
        _ => vec![2],
    };
    let http = |tls| {
        ProbeKind::Http(HttpCheck {
            uri: h.path.clone(),
            host: None,
            classes: classes.clone(),
            get: h.method == HealthCheckMethod::Get,
            tls,
            http11: h.http_version == HttpVersion::Http11,
        })
    };
    let probe = match h.protocol {
        HealthCheckProtocol::Http => http(false),
        HealthCheckProtocol::Https => http(true),
        HealthCheckProtocol::Tcp => ProbeKind::Tcp,
        HealthCheckProtocol::Grpc => {
            let (path, service) = GrpcCheck::target(&h.path);
            let codes = match &h.codes {
                HealthCheckCodes::Grpc(c) => c.clone(),
                _ => vec![(0, 0)],
            };
            ProbeKind::Grpc(GrpcCheck { path, service, codes, post: h.method != HealthCheckMethod::Get })
        }
    };
    HealthCheck {
        probe,
        port: h.port,
        proxy_protocol: ProxyProtocol::Off,
        interval: Duration::from_secs(u64::from(h.interval_s.max(1))),
        timeout: Duration::from_secs(u64::from(h.timeout_s.max(1))),
        healthy_threshold: h.healthy_threshold.clamp(1, 255) as u8,
        unhealthy_threshold: h.unhealthy_threshold.clamp(1, 255) as u8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_whole_seconds() {
        let h = HealthCheck {
            probe: ProbeKind::Tcp,
            port: 0,
            proxy_protocol: ProxyProtocol::Off,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
            healthy_threshold: 3,
            unhealthy_threshold: 3,
        };
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!((v["interval_s"].as_u64(), v["timeout_s"].as_u64()), (Some(2), Some(5)), "{v}");
        assert!(v.get("interval").is_none());
    }

    #[test]
    fn grpc_paths_name_the_method_or_the_service() {
        let whole = (GRPC_HEALTH_CHECK.to_owned(), String::new());
        assert_eq!(GrpcCheck::target("/"), whole);
        assert_eq!(GrpcCheck::target(GRPC_HEALTH_CHECK), whole);
        assert_eq!(GrpcCheck::target("/shop.Cart"), (GRPC_HEALTH_CHECK.to_owned(), "shop.Cart".to_owned()));
        assert_eq!(GrpcCheck::target("/shop.Cart/Ping"), ("/shop.Cart/Ping".to_owned(), String::new()));
    }
}
