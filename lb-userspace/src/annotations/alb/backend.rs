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
mod tests {
    use super::super::testutil::parse;
    use super::super::testutil::*;
    use super::*;

    fn settings(ann: &[(&str, &str)]) -> (BackendSettings, Vec<String>) {
        let owned: Vec<(String, &str)> = ann.iter().map(|(s, v)| (k(s), *v)).collect();
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(s, v)| (s.as_str(), *v)).collect();
        let p = parse(&pairs, SIMPLE);
        let errs =
            p.errors.iter().map(|e| format!("{}: {}", e.annotation.trim_start_matches(PREFIX), e.reason)).collect();
        (p.rules[0].backend.clone(), errs)
    }

    #[test]
    fn defaults() {
        let (b, e) = settings(&[]);
        assert!(e.is_empty());
        assert_eq!(b, BackendSettings::default());
        let (b, e) = settings(&[("healthcheck-enabled", "true")]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            b.health_check,
            Some(HealthCheck {
                protocol: HealthCheckProtocol::Http,
                path: "/".into(),
                http_version: HttpVersion::Http11,
                method: HealthCheckMethod::Head,
                codes: HealthCheckCodes::Http(vec![2]),
                timeout_s: 5,
                interval_s: 2,
                healthy_threshold: 3,
                unhealthy_threshold: 3,
                port: 0,
            })
        );
        let (b, _) = settings(&[("sticky-session", "true")]);
        assert_eq!(b.sticky, Some(StickySession::Insert { timeout_s: 1000 }));
        let (b, _) = settings(&[("slow-start-enabled", "true"), ("connection-drain-enabled", "true")]);
        assert_eq!((b.slow_start_s, b.drain_timeout_s), (Some(30), Some(300)));
    }

    #[test]
    fn number_ranges_each_end_and_one_past() {
        let hc = ("healthcheck-enabled", "true");
        type Row<'a> = (&'a str, u32, u32, Option<(&'a str, &'a str)>);
        let table: &[Row] = &[
            ("healthcheck-timeout-seconds", 1, 300, Some(hc)),
            ("healthcheck-interval-seconds", 1, 50, Some(hc)),
            ("healthy-threshold-count", 2, 10, Some(hc)),
            ("unhealthy-threshold-count", 2, 10, Some(hc)),
            ("healthcheck-connect-port", 0, 65535, Some(hc)),
            ("cookie-timeout", 1, 86400, Some(("sticky-session", "true"))),
            ("slow-start-duration", 30, 900, Some(("slow-start-enabled", "true"))),
            ("connection-drain-timeout", 0, 900, Some(("connection-drain-enabled", "true"))),
        ];
        for (key, min, max, gate) in table {
            for n in [*min, *max] {
                let (b, e) = settings(&[gate.unwrap(), (key, &n.to_string())]);
                assert!(e.is_empty(), "{key}={n}: {e:?}");
                let got = match *key {
                    "healthcheck-timeout-seconds" => b.health_check.unwrap().timeout_s,
                    "healthcheck-interval-seconds" => b.health_check.unwrap().interval_s,
                    "healthy-threshold-count" => b.health_check.unwrap().healthy_threshold,
                    "unhealthy-threshold-count" => b.health_check.unwrap().unhealthy_threshold,
                    "healthcheck-connect-port" => u32::from(b.health_check.unwrap().port),
                    "cookie-timeout" => match b.sticky.unwrap() {
                        StickySession::Insert { timeout_s } => timeout_s,
                        s => panic!("{s:?}"),
                    },
                    "slow-start-duration" => b.slow_start_s.unwrap(),
                    _ => b.drain_timeout_s.unwrap(),
                };
                assert_eq!(got, n, "{key}");
            }
            let mut outside = vec![max + 1];
            if *min > 0 {
                outside.push(min - 1);
            }
            for n in outside {
                let (_, e) = settings(&[gate.unwrap(), (key, &n.to_string())]);
                assert_eq!(e, vec![format!("{key}: {n} is outside {min}..={max}")]);
            }
            let (_, e) = settings(&[gate.unwrap(), (key, "1.5")]);
            assert_eq!(e, vec![format!("{key}: \"1.5\" is not a whole number in {min}..={max}")]);
        }
    }

    #[test]
    fn gated_settings_need_their_switch() {
        for (key, val, gate) in [
            ("healthcheck-path", "/x", "healthcheck-enabled"),
            ("healthy-threshold-count", "3", "healthcheck-enabled"),
            ("sticky-session-type", "Insert", "sticky-session"),
            ("cookie-timeout", "10", "sticky-session"),
            ("slow-start-duration", "100", "slow-start-enabled"),
            ("connection-drain-timeout", "199", "connection-drain-enabled"),
        ] {
            let (_, e) = settings(&[(key, val)]);
            assert_eq!(e, vec![format!("{key}: has no effect unless {PREFIX}{gate} is \"true\"")]);
            let (_, e) = settings(&[(gate, "false"), (key, val)]);
            assert_eq!(e.len(), 1, "{key}");
        }
    }

    #[test]
    fn health_check_enums_and_codes() {
        let on = ("healthcheck-enabled", "true");
        let (b, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-code", "0-5,12")]);
        assert!(e.is_empty(), "{e:?}");
        let h = b.health_check.unwrap();
        assert_eq!((h.method, &h.codes), (HealthCheckMethod::Post, &HealthCheckCodes::Grpc(vec![(0, 5), (12, 12)])));
        assert!(h.codes.accepts(3) && !h.codes.accepts(6) && h.codes.accepts(12));
        let (b, _) = settings(&[on, ("healthcheck-protocol", "GRPC")]);
        assert_eq!(b.health_check.unwrap().codes, HealthCheckCodes::Grpc(vec![(0, 0)]));
        let (b, e) = settings(&[
            on,
            ("healthcheck-httpcode", "http_2xx,http_3xx"),
            ("healthcheck-method", "GET"),
            ("healthcheck-httpversion", "HTTP1.0"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        let h = b.health_check.unwrap();
        assert_eq!((h.method, h.http_version), (HealthCheckMethod::Get, HttpVersion::Http10));
        assert!(h.codes.accepts(204) && h.codes.accepts(302) && !h.codes.accepts(404));
        for (key, val, want) in [
            ("healthcheck-protocol", "UDP", "healthcheck-protocol: \"UDP\" is not one of HTTP, HTTPS, TCP, GRPC"),
            (
                "healthcheck-protocol",
                "http",
                "healthcheck-protocol: \"http\" is not one of HTTP, HTTPS, TCP, GRPC (values are case-sensitive: HTTP)",
            ),
            ("healthcheck-httpversion", "HTTP2", "healthcheck-httpversion: \"HTTP2\" is not one of HTTP1.0, HTTP1.1"),
            ("healthcheck-method", "POST", "healthcheck-method: \"POST\" is not one of HEAD, GET"),
            (
                "healthcheck-httpcode",
                "http_6xx",
                "healthcheck-httpcode: \"http_6xx\" is not one of http_2xx, http_3xx, http_4xx, http_5xx",
            ),
            ("healthcheck-code", "http_2xx,http_2xx", "healthcheck-code: http_2xx is listed twice"),
            (
                "healthcheck-path",
                "health",
                "healthcheck-path: \"health\" must start with / and have at most 80 characters",
            ),
            ("healthcheck-path", "/a b", "healthcheck-path: \"/a b\" contains ' '; use printable ASCII without spaces"),
            ("healthcheck-enabled", "yes", "healthcheck-enabled: \"yes\" is not one of true, false"),
        ] {
            let (_, e) = settings(&[on, (key, val)]);
            assert_eq!(e, vec![want.to_owned()], "{key}={val}");
        }
        let (_, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-code", "0-100")]);
        assert_eq!(e, vec!["healthcheck-code: 100 is outside 0..=99"]);
        let (_, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-code", "5-1")]);
        assert_eq!(e, vec!["healthcheck-code: range 5-1 runs backwards"]);
        let (_, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-httpcode", "http_2xx")]);
        assert_eq!(e.len(), 1);
        let (_, e) = settings(&[on, ("healthcheck-protocol", "TCP"), ("healthcheck-path", "/")]);
        assert_eq!(e, vec!["healthcheck-path: has no effect with healthcheck-protocol TCP"]);
        let (_, e) = settings(&[on, ("healthcheck-code", "http_2xx"), ("healthcheck-httpcode", "http_3xx")]);
        assert_eq!(
            e,
            vec![format!("healthcheck-httpcode: disagrees with {PREFIX}healthcheck-code; write one of them")]
        );
        let (_, e) = settings(&[on, ("healthcheck-path", &format!("/{}", "a".repeat(79)))]);
        assert!(e.is_empty());
        let (_, e) = settings(&[on, ("healthcheck-path", &format!("/{}", "a".repeat(80)))]);
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn sticky_session_types() {
        let on = ("sticky-session", "true");
        let (b, e) = settings(&[on, ("sticky-session-type", "Server"), ("cookie", "test")]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(b.sticky, Some(StickySession::Server { cookie: "test".into() }));
        let (_, e) = settings(&[on, ("sticky-session-type", "Server")]);
        assert_eq!(e, vec![format!("sticky-session-type: Server needs a cookie name in {PREFIX}cookie")]);
        let (_, e) = settings(&[on, ("sticky-session-type", "Server"), ("cookie", "")]);
        assert_eq!(e, vec![format!("sticky-session-type: Server needs a cookie name in {PREFIX}cookie")]);
        let (_, e) = settings(&[on, ("sticky-session-type", "Server"), ("cookie", "a;b")]);
        assert_eq!(
            e,
            vec!["cookie: \"a;b\" contains ';'; a cookie name is printable ASCII without ',', ';' or spaces"]
        );
        let (_, e) = settings(&[on, ("sticky-session-type", "Server"), ("cookie", "c"), ("cookie-timeout", "10")]);
        assert_eq!(e, vec!["cookie-timeout: applies only when sticky-session-type is Insert"]);
        // Insert with a cookie name (the reference's example): valid, Insert wins.
        let (b, e) = settings(&[on, ("sticky-session-type", "Insert"), ("cookie-timeout", "1800"), ("cookie", "test")]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(b.sticky, Some(StickySession::Insert { timeout_s: 1800 }));
        let (_, e) = settings(&[on, ("cookie", "a b")]);
        assert_eq!(e.len(), 1);
        let (_, e) = settings(&[on, ("sticky-session-type", "insert")]);
        assert_eq!(
            e,
            vec!["sticky-session-type: \"insert\" is not one of Insert, Server (values are case-sensitive: Insert)"]
        );
    }

    #[test]
    fn schedulers() {
        for (v, want) in [("wrr", Scheduler::Wrr), ("wlc", Scheduler::Wlc), ("sch", Scheduler::Sch)] {
            let (b, e) = settings(&[("backend-scheduler", v)]);
            assert!(e.is_empty());
            assert_eq!(b.scheduler, want);
        }
        let (b, e) = settings(&[("backend-scheduler", "uch"), ("backend-scheduler-uch-value", "test")]);
        assert!(e.is_empty());
        assert_eq!(b.scheduler, Scheduler::Uch { parameter: "test".into() });
        let (_, e) = settings(&[("backend-scheduler", "uch")]);
        assert_eq!(
            e,
            vec![format!("backend-scheduler: uch needs the URL parameter in {PREFIX}backend-scheduler-uch-value")]
        );
        let (_, e) = settings(&[("backend-scheduler", "wrr"), ("backend-scheduler-uch-value", "x")]);
        assert_eq!(e, vec!["backend-scheduler-uch-value: applies only when backend-scheduler is uch"]);
        let (_, e) = settings(&[("backend-scheduler", "uch"), ("backend-scheduler-uch-value", "a=b")]);
        assert_eq!(
            e,
            vec!["backend-scheduler-uch-value: \"a=b\" contains '=', which cannot be in a URL parameter name"]
        );
        let (_, e) = settings(&[("backend-scheduler", "rr")]);
        assert_eq!(e, vec!["backend-scheduler: \"rr\" is not one of wrr, wlc, sch, uch"]);
    }

    #[test]
    fn protocol_keepalive_ipv6_cross_zone() {
        let (b, e) = settings(&[("backend-protocol", "https"), ("backend-keepalive", "true"), ("enable-ipv6", "true")]);
        assert!(e.is_empty());
        assert_eq!((b.protocol, b.keepalive, b.ipv6), (BackendProtocol::Https, true, true));
        let (_, e) = settings(&[("backend-protocol", "grpc")]);
        assert_eq!(
            e,
            vec!["backend-protocol: grpc needs TLS: list an HTTPS listener in listen-ports (or add spec.tls)"]
        );
        let (b, e) = settings(&[("backend-protocol", "grpc"), ("listen-ports", r#"[{"HTTPS": 443}]"#)]);
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(b.protocol, BackendProtocol::Grpc);
        let (_, e) = settings(&[("backend-protocol", "GRPC")]);
        assert_eq!(
            e,
            vec!["backend-protocol: \"GRPC\" is not one of http, https, grpc (values are case-sensitive: grpc)"]
        );
        let p = parse(&[(&k("cross-zone-enabled"), "false")], SIMPLE);
        assert!(p.is_ok());
        assert_eq!(p.not_applicable.len(), 1);
        assert_eq!(p.not_applicable[0].annotation, k("cross-zone-enabled"));
        let p = parse(&[(&k("cross-zone-enabled"), "no")], SIMPLE);
        assert_eq!(errs(&p), vec![format!("{}: \"no\" is not one of true, false", k("cross-zone-enabled"))]);
        assert!(p.not_applicable.is_empty());
    }
}
