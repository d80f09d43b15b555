//! `listen-ports`: the AlbConfig listeners (protocol and port) an Ingress's rules attach to.
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::values::{json_number, kind, quote};
use super::{Cx, Key};

/// A listener protocol of ALB: HTTP and HTTPS over TCP, QUIC (HTTP/3) over UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenProtocol {
    Http,
    Https,
    Quic,
}

impl ListenProtocol {
    pub const ALL: [(&'static str, ListenProtocol); 3] =
        [("HTTP", ListenProtocol::Http), ("HTTPS", ListenProtocol::Https), ("QUIC", ListenProtocol::Quic)];

    pub fn name(self) -> &'static str {
        match self {
            ListenProtocol::Http => "HTTP",
            ListenProtocol::Https => "HTTPS",
            ListenProtocol::Quic => "QUIC",
        }
    }

    /// Whether the listener terminates TLS (HTTPS, and QUIC which always does).
    pub fn is_tls(self) -> bool {
        self != ListenProtocol::Http
    }

    fn udp(self) -> bool {
        self == ListenProtocol::Quic
    }
}

/// One listener: protocol and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ListenPort {
    pub protocol: ListenProtocol,
    pub port: u16,
}

impl fmt::Display for ListenPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.protocol.name(), self.port)
    }
}

/// A protocol name as written in `listen-ports` or an AlbConfig (`HTTP`, `HTTPS`, `QUIC`).
pub fn protocol(v: &str) -> Result<ListenProtocol, String> {
    super::values::choice(v, &ListenProtocol::ALL)
}

/// `[{"HTTP": 80},{"HTTPS": 443}]`: a non-empty JSON array of one-member objects; each
/// (port, transport) at most once (QUIC is UDP, so QUIC and HTTPS may share a port).
pub fn parse_listen_ports(v: &str) -> Result<Vec<ListenPort>, String> {
    let json: Value = serde_json::from_str(v)
        .map_err(|e| format!("{} is not JSON like [{{\"HTTP\": 80}},{{\"HTTPS\": 443}}]: {e}", quote(v)))?;
    let Value::Array(items) = json else {
        return Err(format!("must be a JSON array like [{{\"HTTP\": 80}}], not {}", kind(&json)));
    };
    if items.is_empty() {
        return Err("lists no port".into());
    }
    let mut out: Vec<ListenPort> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Value::Object(obj) = item else {
            return Err(format!("item {i} must be an object like {{\"HTTP\": 80}}, not {}", kind(item)));
        };
        if obj.len() != 1 {
            return Err(format!("item {i} must have exactly one member (protocol: port), not {}", obj.len()));
        }
        let (name, port) = obj.iter().next().expect("one member");
        let protocol = protocol(name).map_err(|e| format!("item {i}: protocol {e}"))?;
        let port = json_number(port, 1, 65535, &format!("item {i}: {name} port"))? as u16;
        let lp = ListenPort { protocol, port };
        if let Some(dup) = out.iter().find(|o| o.port == port && o.protocol.udp() == protocol.udp()) {
            return Err(format!("port {port} is listed twice ({dup} and {lp})"));
        }
        out.push(lp);
    }
    Ok(out)
}

/// The listeners of an Ingress: `listen-ports`, else HTTP 80 (and HTTPS 443 when the
/// Ingress has `spec.tls`).
pub(super) fn parse(cx: &mut Cx, has_tls: bool) -> Vec<ListenPort> {
    if let Some(l) = cx.value(Key::ListenPorts, parse_listen_ports) {
        return l;
    }
    let mut l = vec![ListenPort { protocol: ListenProtocol::Http, port: 80 }];
    if has_tls {
        l.push(ListenPort { protocol: ListenProtocol::Https, port: 443 });
    }
    l
}

#[cfg(test)]
mod tests {
    use super::super::testutil::parse;
    use super::super::testutil::*;
    use super::*;

    const HTTP: ListenProtocol = ListenProtocol::Http;
    const HTTPS: ListenProtocol = ListenProtocol::Https;
    const QUIC: ListenProtocol = ListenProtocol::Quic;

    fn lp(protocol: ListenProtocol, port: u16) -> ListenPort {
        ListenPort { protocol, port }
    }

    #[test]
    fn listen_ports_valid_values() {
        let table: &[(&str, Vec<ListenPort>)] = &[
            (r#"[{"HTTP": 80},{"HTTPS": 443}]"#, vec![lp(HTTP, 80), lp(HTTPS, 443)]),
            ("[{\"HTTP\": 8001}]\n", vec![lp(HTTP, 8001)]),
            (r#"[{"HTTP": 1}]"#, vec![lp(HTTP, 1)]),
            (r#"[{"HTTPS": 65535}]"#, vec![lp(HTTPS, 65535)]),
            (r#"[{"HTTPS": 443},{"QUIC": 443}]"#, vec![lp(HTTPS, 443), lp(QUIC, 443)]),
            (r#"[{"HTTP": "8080"}]"#, vec![lp(HTTP, 8080)]),
        ];
        for (v, want) in table {
            assert_eq!(parse_listen_ports(v.trim()).as_ref(), Ok(want), "{v}");
        }
    }

    #[test]
    fn listen_ports_invalid_values() {
        let table: &[(&str, &str)] = &[
            (r#"[{"HTTP": 0}]"#, "item 0: HTTP port: 0 is outside 1..=65535"),
            (r#"[{"HTTP": 65536}]"#, "item 0: HTTP port: 65536 is outside 1..=65535"),
            (
                r#"[{"http": 80}]"#,
                "item 0: protocol \"http\" is not one of HTTP, HTTPS, QUIC (values are case-sensitive: HTTP)",
            ),
            (r#"[{"TCP": 80}]"#, "item 0: protocol \"TCP\" is not one of HTTP, HTTPS, QUIC"),
            (r#"[{"HTTP": 80, "HTTPS": 443}]"#, "item 0 must have exactly one member (protocol: port), not 2"),
            (r#"[{"HTTP": 80},{"HTTPS": 80}]"#, "port 80 is listed twice (HTTP:80 and HTTPS:80)"),
            ("[]", "lists no port"),
            (r#"{"HTTP": 80}"#, "must be a JSON array like [{\"HTTP\": 80}], not an object"),
            ("[80]", "item 0 must be an object like {\"HTTP\": 80}, not a number"),
            (r#"[{"HTTP": true}]"#, "item 0: HTTP port must be a whole number, not a boolean"),
        ];
        for (v, want) in table {
            assert_eq!(parse_listen_ports(v), Err((*want).to_owned()), "{v}");
        }
        assert!(parse_listen_ports("HTTP:80").unwrap_err().starts_with("\"HTTP:80\" is not JSON like"));
    }

    #[test]
    fn listen_ports_defaults() {
        assert_eq!(parse(&[], SIMPLE).listeners, vec![lp(HTTP, 80)]);
        let tls = format!("tls:\n- hosts: [demo.alb.ingress.top]\n  secretName: demo\n{SIMPLE}");
        assert_eq!(parse(&[], &tls).listeners, vec![lp(HTTP, 80), lp(HTTPS, 443)]);
        let p = parse(&[("alb.ingress.kubernetes.io/listen-ports", r#"[{"HTTP": 0}]"#)], SIMPLE);
        assert_eq!(errs(&p), vec!["alb.ingress.kubernetes.io/listen-ports: item 0: HTTP port: 0 is outside 1..=65535"]);
    }
}
