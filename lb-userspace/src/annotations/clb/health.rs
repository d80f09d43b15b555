//! The health check family: `health-check-switch` (tcp/udp listeners), `health-check-flag`
//! (http/https listeners), `health-check-type`, timeouts, interval, thresholds, and the HTTP
//! check's URI, status codes, domain and method.
use serde::Serialize;

use super::{
    Cx, Listener,
    keys::Key,
    listeners::{
        ListenerProtocol::{self, Http, Https, Tcp, Udp},
        applies_to,
    },
    values::{choice, list, number, on_off, quote},
};

/// `health-check-type` (default tcp): how tcp and http/https listeners check backends.
/// udp listeners always use a UDP probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    #[default]
    Tcp,
    Http,
}

/// One `health-check-httpcode` class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum HttpCodeClass {
    #[serde(rename = "http_2xx")]
    Http2xx,
    #[serde(rename = "http_3xx")]
    Http3xx,
    #[serde(rename = "http_4xx")]
    Http4xx,
    #[serde(rename = "http_5xx")]
    Http5xx,
}

impl HttpCodeClass {
    /// Whether `status` is in this class.
    pub fn contains(self, status: u16) -> bool {
        let class = match self {
            HttpCodeClass::Http2xx => 2,
            HttpCodeClass::Http3xx => 3,
            HttpCodeClass::Http4xx => 4,
            HttpCodeClass::Http5xx => 5,
        };
        status / 100 == class
    }
}

/// `health-check-method` (head unless set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpMethod {
    #[default]
    Head,
    Get,
}

/// `health-check-domain`: the Host of HTTP checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckDomain {
    /// `$_ip` (and the behaviour when unset): the backend's own address.
    #[default]
    BackendIp,
    /// 1..=80 letters, digits, periods and hyphens.
    Name(String),
}

/// The HTTP check's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpCheck {
    /// `health-check-uri`: required when a listener gets an HTTP check.
    pub uri: Option<String>,
    /// `health-check-httpcode` (default http_2xx): healthy status classes.
    pub codes: Vec<HttpCodeClass>,
    pub domain: HealthCheckDomain,
    /// `health-check-timeout`: 1..=300 s (5 unless set).
    pub timeout_s: u16,
    pub method: HttpMethod,
}

/// The health check family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// `health-check-switch` (default on): checks of tcp and udp listeners.
    pub switch: bool,
    /// `health-check-flag` (default off): checks of http and https listeners.
    pub flag: bool,
    pub check_type: HealthCheckType,
    /// `health-check-connect-timeout`: 1..=300 s, default 5 (TCP and UDP checks).
    pub connect_timeout_s: u16,
    /// `healthy-threshold`: 2..=10, default 3.
    pub healthy_threshold: u8,
    /// `unhealthy-threshold`: 2..=10, default 3.
    pub unhealthy_threshold: u8,
    /// `health-check-interval`: 1..=50 s, default 2.
    pub interval_s: u8,
    pub http: HttpCheck,
}

impl Default for HealthCheck {
    fn default() -> HealthCheck {
        HealthCheck {
            switch: true,
            flag: false,
            check_type: HealthCheckType::Tcp,
            connect_timeout_s: 5,
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            interval_s: 2,
            http: HttpCheck {
                uri: None,
                codes: vec![HttpCodeClass::Http2xx],
                domain: HealthCheckDomain::BackendIp,
                timeout_s: 5,
                method: HttpMethod::Head,
            },
        }
    }
}

/// The check a listener's backends get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Tcp,
    Udp,
    Http,
}

impl HealthCheck {
    /// The check of a listener of kind `listener`, `None` when its checks are off.
    pub fn probe(&self, listener: ListenerProtocol) -> Option<Probe> {
        let by_type = match self.check_type {
            HealthCheckType::Tcp => Probe::Tcp,
            HealthCheckType::Http => Probe::Http,
        };
        match listener {
            Udp => self.switch.then_some(Probe::Udp),
            Tcp => self.switch.then_some(by_type),
            Http | Https => self.flag.then_some(by_type),
        }
    }

    /// How long the check of a `listener` waits for an answer: its timeout, or the interval
    /// when that is longer ("if this value is less than the check interval, the interval takes
    /// effect"). As CLB's listeners: a tcp/udp listener's check (an HTTP one too) waits
    /// `health-check-connect-timeout`, an http/https listener's `health-check-timeout`.
    pub fn timeout_s(&self, listener: ListenerProtocol) -> u16 {
        let t = match listener {
            Http | Https => self.http.timeout_s,
            Tcp | Udp => self.connect_timeout_s,
        };
        t.max(self.interval_s.into())
    }
}

/// The fields of HTTP checks only (`health-check-timeout` is the http/https listeners' timeout,
/// whatever their check).
const HTTP_ONLY: [Key; 4] =
    [Key::HealthCheckUri, Key::HealthCheckHttpCode, Key::HealthCheckDomain, Key::HealthCheckMethod];
/// What decides which listeners get which check.
const SWITCHES: [Key; 4] = [Key::HealthCheckSwitch, Key::HealthCheckFlag, Key::HealthCheckType, Key::ProtocolPort];

pub(super) fn health_check(cx: &mut Cx, listeners: &[Listener]) -> HealthCheck {
    let d = HealthCheck::default();
    applies_to(cx, Key::HealthCheckSwitch, listeners, &[Tcp, Udp]);
    applies_to(cx, Key::HealthCheckType, listeners, &[Tcp, Http, Https]);
    let hc = HealthCheck {
        switch: cx.value(Key::HealthCheckSwitch, on_off).unwrap_or(d.switch),
        flag: cx.value(Key::HealthCheckFlag, on_off).unwrap_or(d.flag),
        check_type: cx
            .value(Key::HealthCheckType, |v| {
                choice(v, &[("tcp", HealthCheckType::Tcp), ("http", HealthCheckType::Http)])
            })
            .unwrap_or_default(),
        connect_timeout_s: cx
            .value(Key::HealthCheckConnectTimeout, |v| number(v, 1, 300))
            .map_or(d.connect_timeout_s, |n| n as u16),
        healthy_threshold: cx
            .value(Key::HealthyThreshold, |v| number(v, 2, 10))
            .map_or(d.healthy_threshold, |n| n as u8),
        unhealthy_threshold: cx
            .value(Key::UnhealthyThreshold, |v| number(v, 2, 10))
            .map_or(d.unhealthy_threshold, |n| n as u8),
        interval_s: cx.value(Key::HealthCheckInterval, |v| number(v, 1, 50)).map_or(d.interval_s, |n| n as u8),
        http: HttpCheck {
            uri: cx.value(Key::HealthCheckUri, uri),
            codes: cx.value(Key::HealthCheckHttpCode, http_codes).unwrap_or(d.http.codes),
            domain: cx.value(Key::HealthCheckDomain, domain).unwrap_or_default(),
            timeout_s: cx.value(Key::HealthCheckTimeout, |v| number(v, 1, 300)).map_or(d.http.timeout_s, |n| n as u16),
            method: cx
                .value(Key::HealthCheckMethod, |v| choice(v, &[("head", HttpMethod::Head), ("get", HttpMethod::Get)]))
                .unwrap_or_default(),
        },
    };
    cross_rules(cx, listeners, &hc);
    hc
}

/// What is required, and what has no effect (a note, as the CLB controller ignores it: the
/// reference's tables list the health check annotations together, whichever apply).
fn cross_rules(cx: &mut Cx, listeners: &[Listener], hc: &HealthCheck) {
    if cx.has(Key::HealthCheckFlag) && !hc.flag && !listeners.iter().any(|l| l.protocol.is_l7()) {
        let reason = format!(
            "has no effect: the checks of tcp listeners are always on (\"cannot be changed\"; \
             health-check-switch turns them off), and {}",
            super::listeners::describe(listeners)
        );
        cx.cross_note(Key::HealthCheckFlag, &[Key::ProtocolPort], reason);
    }
    let checked: Vec<(ListenerProtocol, Probe)> =
        listeners.iter().filter_map(|l| Some((l.protocol, hc.probe(l.protocol)?))).collect();
    let http = checked.iter().any(|(_, p)| *p == Probe::Http);
    if http && !cx.has(Key::HealthCheckUri) {
        cx.cross(Key::HealthCheckType, &SWITCHES, "http requires health-check-uri");
    }
    let none = "no listener of this Service gets one (tcp/udp listeners are checked unless \
                health-check-switch is off, http/https listeners only with health-check-flag on)";
    if !http {
        let reason = if hc.check_type == HealthCheckType::Tcp {
            "has no effect: it applies only to HTTP health checks, and health-check-type is not http".to_owned()
        } else {
            format!("has no effect: it applies only to HTTP health checks, and {none}")
        };
        for key in HTTP_ONLY {
            cx.cross_note(key, &SWITCHES, reason.clone());
        }
    }
    let (l4, l7) = checked.iter().fold((false, false), |(l4, l7), (l, _)| (l4 || !l.is_l7(), l7 || l.is_l7()));
    if !l7 {
        cx.cross_note(
            Key::HealthCheckTimeout,
            &SWITCHES,
            "has no effect: it is the timeout of the checks of http/https listeners (tcp/udp listeners \
             wait health-check-connect-timeout), and none of this Service's is checked (health-check-flag on \
             checks them)",
        );
    }
    if !l4 {
        cx.cross_note(
            Key::HealthCheckConnectTimeout,
            &SWITCHES,
            "has no effect: it is the timeout of the checks of tcp/udp listeners (http/https listeners wait \
             health-check-timeout), and none of this Service's is checked (they are unless health-check-switch is \
             off)",
        );
    }
    if checked.is_empty() {
        for key in [Key::HealthyThreshold, Key::UnhealthyThreshold, Key::HealthCheckInterval] {
            cx.cross_note(key, &SWITCHES, format!("has no effect: it applies only to health checks, and {none}"));
        }
    }
}

/// An absolute path of printable ASCII without spaces.
fn uri(v: &str) -> Result<String, String> {
    if !v.starts_with('/') {
        return Err(format!("{} does not start with /", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("{} contains {c:?}; a URI is printable ASCII without spaces", quote(v)));
    }
    Ok(v.to_owned())
}

fn http_codes(v: &str) -> Result<Vec<HttpCodeClass>, String> {
    let mut out = Vec::new();
    for item in list(v)? {
        let class = choice(
            item,
            &[
                ("http_2xx", HttpCodeClass::Http2xx),
                ("http_3xx", HttpCodeClass::Http3xx),
                ("http_4xx", HttpCodeClass::Http4xx),
                ("http_5xx", HttpCodeClass::Http5xx),
            ],
        )?;
        if out.contains(&class) {
            return Err(format!("{item} is listed twice"));
        }
        out.push(class);
    }
    Ok(out)
}

fn domain(v: &str) -> Result<HealthCheckDomain, String> {
    if v == "$_ip" {
        return Ok(HealthCheckDomain::BackendIp);
    }
    let ok = (1..=80).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !ok {
        return Err(format!("{} is neither $_ip nor 1..=80 letters, digits, periods and hyphens", quote(v)));
    }
    Ok(HealthCheckDomain::Name(v.to_owned()))
}

#[cfg(test)]
mod tests;
