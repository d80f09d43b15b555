//! Backend server group settings: `backend-protocol`, `backend-scheduler` (wrr/wlc/sch/uch
//! and `backend-scheduler-uch-value`), `backend-keepalive`, `enable-ipv6`, health checks,
//! session stickiness, slow start, connection drain, and `cross-zone-enabled` (cloud-only).
use serde::Serialize;

use super::listeners::ListenPort;
use super::values::{boolean, choice, cookie_name, list, number, quote};
use super::{Cx, Key, PREFIX, gated};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendProtocol {
    Http,
    Https,
    Grpc,
}

/// The load-balancing algorithm of the server group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scheduler {
    /// Weighted round robin (default).
    Wrr,
    /// Weighted least connections.
    Wlc,
    /// Source IP consistent hash.
    Sch,
    /// URL parameter consistent hash on the named query parameter.
    Uch { parameter: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckProtocol {
    Http,
    Https,
    Tcp,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    #[serde(rename = "http_1_0")]
    Http10,
    #[serde(rename = "http_1_1")]
    Http11,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckMethod {
    Head,
    Get,
    Post,
}

/// The status codes that count as healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckCodes {
    /// HTTP/HTTPS: classes of status codes, `2` for `http_2xx` and so on.
    Http(Vec<u8>),
    /// gRPC: inclusive ranges of gRPC status codes (0..=99).
    Grpc(Vec<(u8, u8)>),
    /// TCP checks have no status code.
    None,
}

impl HealthCheckCodes {
    /// Whether a response code counts as healthy.
    pub fn accepts(&self, code: u16) -> bool {
        match self {
            HealthCheckCodes::Http(classes) => classes.iter().any(|c| u16::from(*c) == code / 100),
            HealthCheckCodes::Grpc(ranges) => {
                ranges.iter().any(|(a, b)| (u16::from(*a)..=u16::from(*b)).contains(&code))
            }
            HealthCheckCodes::None => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    pub protocol: HealthCheckProtocol,
    /// Request path (HTTP/HTTPS/gRPC), default `/`.
    pub path: String,
    pub http_version: HttpVersion,
    pub method: HealthCheckMethod,
    pub codes: HealthCheckCodes,
    pub timeout_s: u32,
    pub interval_s: u32,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// 0: the backend's own port.
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StickySession {
    /// The balancer inserts a `SERVERID` cookie that lives `timeout_s` seconds.
    Insert { timeout_s: u32 },
    /// The balancer rewrites the backend's own cookie `cookie`.
    Server { cookie: String },
}

/// The backend settings of an Ingress, applied to every rule of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendSettings {
    pub protocol: BackendProtocol,
    pub scheduler: Scheduler,
    pub keepalive: bool,
    /// IPv6 endpoints are used too (`enable-ipv6`).
    pub ipv6: bool,
    /// `None` when health checks are off (the default).
    pub health_check: Option<HealthCheck>,
    pub sticky: Option<StickySession>,
    /// Slow start ramp in seconds, when enabled.
    pub slow_start_s: Option<u32>,
    /// Connection drain timeout in seconds, when enabled.
    pub drain_timeout_s: Option<u32>,
}

impl Default for BackendSettings {
    fn default() -> BackendSettings {
        BackendSettings {
            protocol: BackendProtocol::Http,
            scheduler: Scheduler::Wrr,
            keepalive: false,
            ipv6: false,
            health_check: None,
            sticky: None,
            slow_start_s: None,
            drain_timeout_s: None,
        }
    }
}

fn http_codes(v: &str) -> Result<HealthCheckCodes, String> {
    let opts = [("http_2xx", 2u8), ("http_3xx", 3), ("http_4xx", 4), ("http_5xx", 5)];
    let mut out = Vec::new();
    for item in list(v)? {
        let c = choice(item, &opts)?;
        if out.contains(&c) {
            return Err(format!("{item} is listed twice"));
        }
        out.push(c);
    }
    Ok(HealthCheckCodes::Http(out))
}

fn grpc_codes(v: &str) -> Result<HealthCheckCodes, String> {
    let mut out = Vec::new();
    for item in list(v)? {
        let (a, b) = match item.split_once('-') {
            Some((a, b)) => (number(a.trim(), 0, 99)?, number(b.trim(), 0, 99)?),
            None => {
                let n = number(item, 0, 99)?;
                (n, n)
            }
        };
        if a > b {
            return Err(format!("range {item} runs backwards"));
        }
        out.push((a as u8, b as u8));
    }
    Ok(HealthCheckCodes::Grpc(out))
}

fn health_path(v: &str) -> Result<String, String> {
    if !v.starts_with('/') || v.len() > 80 {
        return Err(format!("{} must start with / and have at most 80 characters", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("{} contains {c:?}; use printable ASCII without spaces", quote(v)));
    }
    Ok(v.to_owned())
}

fn health_check(cx: &mut Cx) -> Option<HealthCheck> {
    let enabled = cx.value_or(Key::HealthcheckEnabled, false, boolean);
    const GATED: [Key; 11] = [
        Key::HealthcheckPath,
        Key::HealthcheckProtocol,
        Key::HealthcheckHttpversion,
        Key::HealthcheckMethod,
        Key::HealthcheckCode,
        Key::HealthcheckHttpcode,
        Key::HealthcheckTimeoutSeconds,
        Key::HealthcheckIntervalSeconds,
        Key::HealthyThresholdCount,
        Key::UnhealthyThresholdCount,
        Key::HealthcheckConnectPort,
    ];
    if !enabled {
        for k in GATED {
            gated(cx, k, Key::HealthcheckEnabled, false);
        }
        return None;
    }
    use HealthCheckProtocol as P;
    let protocol = cx
        .value(Key::HealthcheckProtocol, |v| {
            choice(v, &[("HTTP", P::Http), ("HTTPS", P::Https), ("TCP", P::Tcp), ("GRPC", P::Grpc)])
        })
        .unwrap_or(P::Http);
    let path = cx.value(Key::HealthcheckPath, health_path).unwrap_or_else(|| "/".to_owned());
    let http_version = cx
        .value(Key::HealthcheckHttpversion, |v| {
            choice(v, &[("HTTP1.0", HttpVersion::Http10), ("HTTP1.1", HttpVersion::Http11)])
        })
        .unwrap_or(HttpVersion::Http11);
    let methods: &[(&str, HealthCheckMethod)] = if protocol == P::Grpc {
        &[("GET", HealthCheckMethod::Get), ("POST", HealthCheckMethod::Post)]
    } else {
        &[("HEAD", HealthCheckMethod::Head), ("GET", HealthCheckMethod::Get)]
    };
    let method = cx.value(Key::HealthcheckMethod, |v| choice(v, methods)).unwrap_or(if protocol == P::Grpc {
        HealthCheckMethod::Post
    } else {
        HealthCheckMethod::Head
    });
    let codes = match protocol {
        P::Tcp => HealthCheckCodes::None,
        P::Grpc => {
            if cx.has(Key::HealthcheckHttpcode) {
                cx.error(
                    Key::HealthcheckHttpcode,
                    "takes HTTP status classes; a GRPC health check uses healthcheck-code (gRPC codes 0..=99)",
                );
            }
            cx.value(Key::HealthcheckCode, grpc_codes).unwrap_or(HealthCheckCodes::Grpc(vec![(0, 0)]))
        }
        P::Http | P::Https => {
            let code = cx.value(Key::HealthcheckCode, http_codes);
            let httpcode = cx.value(Key::HealthcheckHttpcode, http_codes);
            if let (Some(a), Some(b)) = (&code, &httpcode)
                && a != b
            {
                cx.error(
                    Key::HealthcheckHttpcode,
                    format!("disagrees with {PREFIX}healthcheck-code; write one of them"),
                );
            }
            code.or(httpcode).unwrap_or(HealthCheckCodes::Http(vec![2]))
        }
    };
    if protocol == P::Tcp {
        for k in [
            Key::HealthcheckPath,
            Key::HealthcheckHttpversion,
            Key::HealthcheckMethod,
            Key::HealthcheckCode,
            Key::HealthcheckHttpcode,
        ] {
            if cx.has(k) {
                cx.error(k, "has no effect with healthcheck-protocol TCP");
            }
        }
    } else if protocol == P::Grpc && cx.has(Key::HealthcheckHttpversion) {
        cx.error(Key::HealthcheckHttpversion, "has no effect with healthcheck-protocol GRPC (gRPC is HTTP/2)");
    }
    let timeout_s = cx.value_or(Key::HealthcheckTimeoutSeconds, 5, |v| number(v, 1, 300));
    let interval_s = cx.value_or(Key::HealthcheckIntervalSeconds, 2, |v| number(v, 1, 50));
    let healthy_threshold = cx.value_or(Key::HealthyThresholdCount, 3, |v| number(v, 2, 10));
    let unhealthy_threshold = cx.value_or(Key::UnhealthyThresholdCount, 3, |v| number(v, 2, 10));
    let port = cx.value_or(Key::HealthcheckConnectPort, 0, |v| number(v, 0, 65535)) as u16;
    Some(HealthCheck {
        protocol,
        path,
        http_version,
        method,
        codes,
        timeout_s,
        interval_s,
        healthy_threshold,
        unhealthy_threshold,
        port,
    })
}

fn sticky(cx: &mut Cx) -> Option<StickySession> {
    let on = cx.value_or(Key::StickySession, false, boolean);
    if !on {
        for k in [Key::StickySessionType, Key::CookieTimeout, Key::Cookie] {
            gated(cx, k, Key::StickySession, false);
        }
        return None;
    }
    let server =
        cx.value(Key::StickySessionType, |v| choice(v, &[("Insert", false), ("Server", true)])).unwrap_or(false);
    if server {
        if cx.has(Key::CookieTimeout) {
            cx.not_applicable(Key::CookieTimeout, "has no effect: it applies only when sticky-session-type is Insert");
        }
        match cx.get(Key::Cookie) {
            None | Some("") => {
                cx.error(Key::StickySessionType, format!("Server needs a cookie name in {PREFIX}cookie"));
                None
            }
            Some(_) => cx.value(Key::Cookie, cookie_name).map(|cookie| StickySession::Server { cookie }),
        }
    } else {
        // The reference's own example writes `cookie` with Insert: it is validated and has
        // no effect (Insert uses the balancer's SERVERID cookie).
        cx.value(Key::Cookie, |v| if v.is_empty() { Ok(String::new()) } else { cookie_name(v) });
        Some(StickySession::Insert { timeout_s: cx.value_or(Key::CookieTimeout, 1000, |v| number(v, 1, 86400)) })
    }
}

fn uch_parameter(v: &str) -> Result<String, String> {
    if v.is_empty() || v.len() > 100 {
        return Err(format!("{} must be a URL parameter name of 1..=100 characters", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '&' | '=' | '?' | '#')) {
        return Err(format!("{} contains {c:?}, which cannot be in a URL parameter name", quote(v)));
    }
    Ok(v.to_owned())
}

fn scheduler(cx: &mut Cx) -> Scheduler {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Wrr,
        Wlc,
        Sch,
        Uch,
    }
    let s = cx.value(Key::BackendScheduler, |v| {
        choice(v, &[("wrr", S::Wrr), ("wlc", S::Wlc), ("sch", S::Sch), ("uch", S::Uch)])
    });
    let param = cx.value(Key::BackendSchedulerUchValue, uch_parameter);
    match s {
        Some(S::Uch) => match param {
            Some(parameter) => return Scheduler::Uch { parameter },
            None if !cx.has(Key::BackendSchedulerUchValue) => cx.error(
                Key::BackendScheduler,
                format!("uch needs the URL parameter in {PREFIX}backend-scheduler-uch-value"),
            ),
            None => {}
        },
        _ if cx.has(Key::BackendSchedulerUchValue) => cx.not_applicable(
            Key::BackendSchedulerUchValue,
            "has no effect: it applies only when backend-scheduler is uch",
        ),
        _ => {}
    }
    match s {
        Some(S::Wlc) => Scheduler::Wlc,
        Some(S::Sch) => Scheduler::Sch,
        _ => Scheduler::Wrr,
    }
}

pub(super) fn parse(cx: &mut Cx, listeners: &[ListenPort]) -> BackendSettings {
    let protocol = cx
        .value(Key::BackendProtocol, |v| {
            choice(
                v,
                &[("http", BackendProtocol::Http), ("https", BackendProtocol::Https), ("grpc", BackendProtocol::Grpc)],
            )
        })
        .unwrap_or(BackendProtocol::Http);
    if protocol == BackendProtocol::Grpc && !listeners.iter().any(|l| l.protocol.is_tls()) {
        cx.error(Key::BackendProtocol, "grpc needs TLS: list an HTTPS listener in listen-ports (or add spec.tls)");
    }
    let scheduler = scheduler(cx);
    let keepalive = cx.value_or(Key::BackendKeepalive, false, boolean);
    let ipv6 = cx.value_or(Key::EnableIpv6, false, boolean);
    let health_check = health_check(cx);
    let sticky = sticky(cx);
    let slow = cx.value_or(Key::SlowStartEnabled, false, boolean);
    gated(cx, Key::SlowStartDuration, Key::SlowStartEnabled, slow);
    let slow_start_s = slow.then(|| cx.value_or(Key::SlowStartDuration, 30, |v| number(v, 30, 900)));
    let drain = cx.value_or(Key::ConnectionDrainEnabled, false, boolean);
    gated(cx, Key::ConnectionDrainTimeout, Key::ConnectionDrainEnabled, drain);
    let drain_timeout_s = drain.then(|| cx.value_or(Key::ConnectionDrainTimeout, 300, |v| number(v, 0, 900)));
    if cx.value(Key::CrossZoneEnabled, boolean).is_some() {
        cx.not_applicable(
            Key::CrossZoneEnabled,
            "availability zones are an ALB concept; a node balancer sends to every ready endpoint",
        );
    }
    BackendSettings { protocol, scheduler, keepalive, ipv6, health_check, sticky, slow_start_s, drain_timeout_s }
}

#[cfg(test)]
mod tests;
