//! Backend server group settings: `backend-protocol`, `backend-scheduler` (wrr/wlc/sch/uch
//! and `backend-scheduler-uch-value`), `backend-keepalive`, `enable-ipv6`, health checks,
//! session stickiness, slow start, connection drain, and `cross-zone-enabled` (cloud-only).
use serde::Serialize;

use super::listeners::ListenPort;
use super::values::{boolean, choice, list, number, quote};
use super::{Ctx, PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BackendProtocol {
    Http,
    Https,
    Grpc,
}

/// The load-balancing algorithm of the server group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
pub enum HealthCheckProtocol {
    Http,
    Https,
    Tcp,
    Grpc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HttpVersion {
    Http10,
    Http11,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HealthCheckMethod {
    Head,
    Get,
    Post,
}

/// The status codes that count as healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

/// A cookie name: 1..=200 printable ASCII characters without `,`, `;`, spaces, not `$...`.
pub fn cookie_name(v: &str) -> Result<String, String> {
    let len = v.chars().count();
    if !(1..=200).contains(&len) {
        return Err(format!("a cookie name has 1..=200 characters, not {len}"));
    }
    if v.starts_with('$') {
        return Err(format!("{} starts with $", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_graphic() || *c == ',' || *c == ';') {
        return Err(format!(
            "{} contains {c:?}; a cookie name is printable ASCII without ',', ';' or spaces",
            quote(v)
        ));
    }
    Ok(v.to_owned())
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

fn health_check(ctx: &mut Ctx) -> Option<HealthCheck> {
    let enabled = ctx.bool_or("healthcheck-enabled", false);
    const GATED: [&str; 11] = [
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
    ];
    if !enabled {
        for k in GATED {
            ctx.gated(k, "healthcheck-enabled", false);
        }
        return None;
    }
    use HealthCheckProtocol as P;
    let protocol = ctx
        .parse("healthcheck-protocol", |v| {
            choice(v, &[("HTTP", P::Http), ("HTTPS", P::Https), ("TCP", P::Tcp), ("GRPC", P::Grpc)])
        })
        .unwrap_or(P::Http);
    let path = ctx.parse("healthcheck-path", health_path).unwrap_or_else(|| "/".to_owned());
    let http_version = ctx
        .parse("healthcheck-httpversion", |v| {
            choice(v, &[("HTTP1.0", HttpVersion::Http10), ("HTTP1.1", HttpVersion::Http11)])
        })
        .unwrap_or(HttpVersion::Http11);
    let methods: &[(&str, HealthCheckMethod)] = if protocol == P::Grpc {
        &[("GET", HealthCheckMethod::Get), ("POST", HealthCheckMethod::Post)]
    } else {
        &[("HEAD", HealthCheckMethod::Head), ("GET", HealthCheckMethod::Get)]
    };
    let method = ctx.parse("healthcheck-method", |v| choice(v, methods)).unwrap_or(if protocol == P::Grpc {
        HealthCheckMethod::Post
    } else {
        HealthCheckMethod::Head
    });
    let codes = match protocol {
        P::Tcp => HealthCheckCodes::None,
        P::Grpc => {
            if ctx.has("healthcheck-httpcode") {
                ctx.err(
                    "healthcheck-httpcode",
                    "takes HTTP status classes; a GRPC health check uses healthcheck-code (gRPC codes 0..=99)",
                );
            }
            ctx.parse("healthcheck-code", grpc_codes).unwrap_or(HealthCheckCodes::Grpc(vec![(0, 0)]))
        }
        P::Http | P::Https => {
            let code = ctx.parse("healthcheck-code", http_codes);
            let httpcode = ctx.parse("healthcheck-httpcode", http_codes);
            if let (Some(a), Some(b)) = (&code, &httpcode)
                && a != b
            {
                ctx.err("healthcheck-httpcode", format!("disagrees with {PREFIX}healthcheck-code; write one of them"));
            }
            code.or(httpcode).unwrap_or(HealthCheckCodes::Http(vec![2]))
        }
    };
    if protocol == P::Tcp {
        for k in [
            "healthcheck-path",
            "healthcheck-httpversion",
            "healthcheck-method",
            "healthcheck-code",
            "healthcheck-httpcode",
        ] {
            if ctx.has(k) {
                ctx.err(k, "has no effect with healthcheck-protocol TCP");
            }
        }
    } else if protocol == P::Grpc && ctx.has("healthcheck-httpversion") {
        ctx.err("healthcheck-httpversion", "has no effect with healthcheck-protocol GRPC (gRPC is HTTP/2)");
    }
    let timeout_s = ctx.num_or("healthcheck-timeout-seconds", 1, 300, 5);
    let interval_s = ctx.num_or("healthcheck-interval-seconds", 1, 50, 2);
    let healthy_threshold = ctx.num_or("healthy-threshold-count", 2, 10, 3);
    let unhealthy_threshold = ctx.num_or("unhealthy-threshold-count", 2, 10, 3);
    let port = ctx.num_or("healthcheck-connect-port", 0, 65535, 0) as u16;
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

fn sticky(ctx: &mut Ctx) -> Option<StickySession> {
    let on = ctx.bool_or("sticky-session", false);
    if !on {
        for k in ["sticky-session-type", "cookie-timeout", "cookie"] {
            ctx.gated(k, "sticky-session", false);
        }
        return None;
    }
    let server =
        ctx.parse("sticky-session-type", |v| choice(v, &[("Insert", false), ("Server", true)])).unwrap_or(false);
    if server {
        if ctx.has("cookie-timeout") {
            ctx.err("cookie-timeout", "applies only when sticky-session-type is Insert");
        }
        match ctx.get("cookie") {
            None | Some("") => {
                ctx.err("sticky-session-type", format!("Server needs a cookie name in {PREFIX}cookie"));
                None
            }
            Some(_) => ctx.parse("cookie", cookie_name).map(|cookie| StickySession::Server { cookie }),
        }
    } else {
        // The reference's own example writes `cookie` with Insert: it is validated and has
        // no effect (Insert uses the balancer's SERVERID cookie).
        ctx.parse("cookie", |v| if v.is_empty() { Ok(String::new()) } else { cookie_name(v) });
        Some(StickySession::Insert { timeout_s: ctx.num_or("cookie-timeout", 1, 86400, 1000) })
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

fn scheduler(ctx: &mut Ctx) -> Scheduler {
    #[derive(Clone, Copy, PartialEq)]
    enum S {
        Wrr,
        Wlc,
        Sch,
        Uch,
    }
    let s = ctx.parse("backend-scheduler", |v| {
        choice(v, &[("wrr", S::Wrr), ("wlc", S::Wlc), ("sch", S::Sch), ("uch", S::Uch)])
    });
    let param = ctx.parse("backend-scheduler-uch-value", uch_parameter);
    match s {
        Some(S::Uch) => match param {
            Some(parameter) => return Scheduler::Uch { parameter },
            None if !ctx.has("backend-scheduler-uch-value") => ctx.err(
                "backend-scheduler",
                format!("uch needs the URL parameter in {PREFIX}backend-scheduler-uch-value"),
            ),
            None => {}
        },
        _ if ctx.has("backend-scheduler-uch-value") => {
            ctx.err("backend-scheduler-uch-value", "applies only when backend-scheduler is uch")
        }
        _ => {}
    }
    match s {
        Some(S::Wlc) => Scheduler::Wlc,
        Some(S::Sch) => Scheduler::Sch,
        _ => Scheduler::Wrr,
    }
}

pub(super) fn parse(ctx: &mut Ctx, listeners: &[ListenPort]) -> BackendSettings {
    let protocol = ctx
        .parse("backend-protocol", |v| {
            choice(
                v,
                &[("http", BackendProtocol::Http), ("https", BackendProtocol::Https), ("grpc", BackendProtocol::Grpc)],
            )
        })
        .unwrap_or(BackendProtocol::Http);
    if protocol == BackendProtocol::Grpc && !listeners.iter().any(|l| l.protocol.is_tls()) {
        ctx.err("backend-protocol", "grpc needs TLS: list an HTTPS listener in listen-ports (or add spec.tls)");
    }
    let scheduler = scheduler(ctx);
    let keepalive = ctx.bool_or("backend-keepalive", false);
    let ipv6 = ctx.bool_or("enable-ipv6", false);
    let health_check = health_check(ctx);
    let sticky = sticky(ctx);
    let slow = ctx.bool_or("slow-start-enabled", false);
    ctx.gated("slow-start-duration", "slow-start-enabled", slow);
    let slow_start_s = slow.then(|| ctx.num_or("slow-start-duration", 30, 900, 30));
    let drain = ctx.bool_or("connection-drain-enabled", false);
    ctx.gated("connection-drain-timeout", "connection-drain-enabled", drain);
    let drain_timeout_s = drain.then(|| ctx.num_or("connection-drain-timeout", 0, 900, 300));
    if ctx.parse("cross-zone-enabled", boolean).is_some() {
        ctx.na(
            "cross-zone-enabled",
            "availability zones are an ALB concept; a node balancer sends to every ready endpoint",
        );
    }
    BackendSettings { protocol, scheduler, keepalive, ipv6, health_check, sticky, slow_start_s, drain_timeout_s }
}

#[cfg(test)]
mod tests;
