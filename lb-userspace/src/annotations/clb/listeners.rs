//! Listener families: `protocol-port` (which Service ports are http/https listeners),
//! `forward-port` (http → https redirects) and the https ones: `cert-id`,
//! `domain-extensions`, `tls-cipher-policy`, `http2-enabled`.
use std::collections::BTreeMap;

use serde::Serialize;

use super::values::Protocol;
use super::{
    Cx, ResourceId, ServicePortInfo,
    keys::Key,
    values::{choice, dns_name, list, number, on_off, quote, resource_id},
};
use crate::annotations::values::TlsPolicy;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    Tcp,
    Udp,
    Http,
    Https,
}

impl ListenerProtocol {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerProtocol::Tcp => "tcp",
            ListenerProtocol::Udp => "udp",
            ListenerProtocol::Http => "http",
            ListenerProtocol::Https => "https",
        }
    }

    /// The transport protocol the listener's port is opened with.
    pub fn transport(self) -> Protocol {
        match self {
            ListenerProtocol::Udp => Protocol::Udp,
            _ => Protocol::Tcp,
        }
    }

    pub fn is_l7(self) -> bool {
        matches!(self, ListenerProtocol::Http | ListenerProtocol::Https)
    }
}

/// A listener on the Service's VIP: one per Service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    /// The Service port's name.
    pub name: Option<String>,
    pub port: u16,
    pub protocol: ListenerProtocol,
}

/// `forward-port`: requests to the http listener `http_port` are redirected to the https
/// listener `https_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ForwardPort {
    pub http_port: u16,
    pub https_port: u16,
}

/// One `domain-extensions` entry: the certificate served for `domain` (SNI).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DomainExtension {
    /// A DNS name; the first label may be `*`.
    pub domain: String,
    pub cert_id: ResourceId,
}

/// Options of https listeners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsOptions {
    /// `cert-id`: the default certificate; required when there is an https listener.
    pub cert_id: Option<ResourceId>,
    /// `domain-extensions`, in the order written.
    pub domain_extensions: Vec<DomainExtension>,
    pub cipher_policy: TlsPolicy,
    /// `http2-enabled` (default on).
    pub http2: bool,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions { cert_id: None, domain_extensions: Vec::new(), cipher_policy: TlsPolicy::Tls10, http2: true }
    }
}

use ListenerProtocol::{Http, Https, Tcp, Udp};

/// `this Service's listeners are tcp:80, udp:53`, for messages.
pub fn describe(listeners: &[Listener]) -> String {
    if listeners.is_empty() {
        return "this Service has no ports".into();
    }
    let all: Vec<String> = listeners.iter().map(|l| format!("{}:{}", l.protocol.as_str(), l.port)).collect();
    format!("this Service's listeners are {}", all.join(", "))
}

/// The Service's listeners: every port, with `protocol-port` applied.
pub(super) fn listeners(cx: &mut Cx, ports: &[ServicePortInfo]) -> Vec<Listener> {
    let declared = cx.value(Key::ProtocolPort, |v| protocol_ports(v, ports)).unwrap_or_default();
    ports
        .iter()
        .map(|p| Listener {
            name: p.name.clone(),
            port: p.port,
            protocol: declared.get(&(p.port, p.protocol)).copied().unwrap_or(match p.protocol {
                Protocol::Tcp => Tcp,
                Protocol::Udp => Udp,
            }),
        })
        .collect()
}

/// `https:443,http:80`: each item names a Service port and what its listener speaks.
fn protocol_ports(
    v: &str,
    ports: &[super::ServicePortInfo],
) -> Result<BTreeMap<(u16, Protocol), ListenerProtocol>, String> {
    let mut out = BTreeMap::new();
    for item in list(v)? {
        let (proto, port) =
            item.split_once(':').ok_or_else(|| format!("{} is not protocol:port (e.g. https:443)", quote(item)))?;
        let proto = choice(proto, &[("http", Http), ("https", Https), ("tcp", Tcp), ("udp", Udp)])
            .map_err(|e| format!("in {}: {e}", quote(item)))?;
        let port = number(port, 1, 65535).map_err(|e| format!("in {}: port {e}", quote(item)))? as u16;
        let transport = proto.transport();
        if !ports.iter().any(|p| p.port == port && p.protocol == transport) {
            let have: Vec<String> =
                ports.iter().map(|p| format!("{} {}", transport_name(p.protocol), p.port)).collect();
            return Err(format!(
                "{item}: the Service has no {} port {port} (its ports: {})",
                transport_name(transport),
                if have.is_empty() { "none".into() } else { have.join(", ") }
            ));
        }
        if out.insert((port, transport), proto).is_some() {
            return Err(format!("port {port} is listed twice"));
        }
    }
    Ok(out)
}

fn transport_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}

/// `forward-port`: `80:443[,8080:8443]`, from an http listener to an https listener.
pub(super) fn forward_ports(cx: &mut Cx, listeners: &[Listener]) -> Vec<ForwardPort> {
    // When protocol-port itself is invalid, its listeners are unknown: check syntax only.
    let check_listeners = !cx.failed(Key::ProtocolPort);
    cx.value(Key::ForwardPort, |v| {
        let mut out: Vec<ForwardPort> = Vec::new();
        for item in list(v)? {
            let (from, to) = item
                .split_once(':')
                .ok_or_else(|| format!("{} is not http-port:https-port (e.g. 80:443)", quote(item)))?;
            let from = number(from, 1, 65535).map_err(|e| format!("in {}: port {e}", quote(item)))? as u16;
            let to = number(to, 1, 65535).map_err(|e| format!("in {}: port {e}", quote(item)))? as u16;
            let speaks = |port: u16, proto: ListenerProtocol| {
                !check_listeners || listeners.iter().any(|l| l.port == port && l.protocol == proto)
            };
            if !speaks(from, Http) {
                return Err(format!("{from} is not an http listener in protocol-port (e.g. http:{from})"));
            }
            if !speaks(to, Https) {
                return Err(format!("{to} is not an https listener in protocol-port (e.g. https:{to})"));
            }
            if out.iter().any(|f| f.http_port == from) {
                return Err(format!("port {from} is forwarded twice"));
            }
            out.push(ForwardPort { http_port: from, https_port: to });
        }
        Ok(out)
    })
    .unwrap_or_default()
}

/// The https family: certificate, extension domains, cipher policy, HTTP/2.
pub(super) fn tls(cx: &mut Cx, listeners: &[Listener]) -> TlsOptions {
    let mut tls = TlsOptions { cert_id: cx.value(Key::CertId, resource_id), ..TlsOptions::default() };
    for key in [Key::CertId, Key::DomainExtensions, Key::TlsCipherPolicy, Key::Http2Enabled] {
        applies_to(cx, key, listeners, &[Https]);
    }
    if !cx.has(Key::CertId)
        && let Some(l) = listeners.iter().find(|l| l.protocol == Https)
    {
        cx.error(Key::ProtocolPort, format!("https:{} needs a certificate: set cert-id", l.port));
    }
    tls.domain_extensions = cx.value(Key::DomainExtensions, domain_extensions).unwrap_or_default();
    if let Some(p) = cx.value(Key::TlsCipherPolicy, |v| choice(v, &TlsPolicy::ALL)) {
        tls.cipher_policy = p;
        if p.allows_old_tls() {
            cx.not_applicable(Key::TlsCipherPolicy, TlsPolicy::NO_OLD_TLS);
        }
    }
    if let Some(on) = cx.value(Key::Http2Enabled, on_off) {
        tls.http2 = on;
    }
    tls
}

/// `example.com:cert-1,*.api.example.com:cert-2`.
fn domain_extensions(v: &str) -> Result<Vec<DomainExtension>, String> {
    let mut out: Vec<DomainExtension> = Vec::new();
    for item in list(v)? {
        let (domain, cert) = item.split_once(':').ok_or_else(|| format!("{} is not domain:cert-id", quote(item)))?;
        let domain = dns_name(domain, true)?;
        let cert_id = resource_id(cert).map_err(|e| format!("in {}: certificate {e}", quote(item)))?;
        if out.iter().any(|d| d.domain.eq_ignore_ascii_case(&domain)) {
            return Err(format!("{domain} is listed twice"));
        }
        out.push(DomainExtension { domain, cert_id });
    }
    Ok(out)
}

/// A note on `key` (when set) if none of `listeners` is one of `kinds`: it has no effect,
/// as the CLB controller ignores it (the listeners may change and the setting stay).
pub(super) fn applies_to(cx: &mut Cx, key: Key, listeners: &[Listener], kinds: &[ListenerProtocol]) {
    if !cx.has(key) || listeners.iter().any(|l| kinds.contains(&l.protocol)) {
        return;
    }
    let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let reason =
        format!("has no effect: it applies only to {} listeners, and {}", kinds.join("/"), describe(listeners));
    cx.cross_note(key, &[Key::ProtocolPort], reason);
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_one_error, assert_one_note, errors_of, run, tcp, udp};
    use super::*;

    fn protocols(p: &super::super::ClbParse) -> Vec<(u16, ListenerProtocol)> {
        p.config.listeners.iter().map(|l| (l.port, l.protocol)).collect()
    }

    #[test]
    fn protocol_port_declares_l7_listeners() {
        let ports = [tcp(443), tcp(80), tcp(22), udp(53)];
        let p = run(&[("protocol-port", "https:443, http:80"), ("cert-id", "c-1")], &ports);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(protocols(&p), vec![(443, Https), (80, Http), (22, Tcp), (53, Udp)]);
        // Without protocol-port every port is a tcp/udp listener.
        let p = run(&[], &ports);
        assert_eq!(protocols(&p), vec![(443, Tcp), (80, Tcp), (22, Tcp), (53, Udp)]);
        // tcp/udp items restate the default.
        let p = run(&[("protocol-port", "tcp:22,udp:53")], &ports);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(protocols(&p)[2..], [(22, Tcp), (53, Udp)]);
    }

    #[test]
    fn protocol_port_on_a_port_with_tcp_and_udp_applies_to_tcp() {
        let p = run(&[("protocol-port", "http:80")], &[tcp(80), udp(80)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(protocols(&p), vec![(80, Http), (80, Udp)]);
    }

    #[test]
    fn protocol_port_invalid_values() {
        let ports = [tcp(80), tcp(443), udp(53)];
        let cases: &[(&str, &str)] = &[
            ("https443", "\"https443\" is not protocol:port (e.g. https:443)"),
            ("htps:443", "in \"htps:443\": \"htps\" is not one of http, https, tcp, udp"),
            (
                "HTTP:80",
                "in \"HTTP:80\": \"HTTP\" is not one of http, https, tcp, udp (values are case-sensitive: http)",
            ),
            ("http:0", "in \"http:0\": port 0 is outside 1..=65535"),
            ("http:65536", "in \"http:65536\": port 65536 is outside 1..=65535"),
            ("http:eighty", "in \"http:eighty\": port \"eighty\" is not a whole number in 1..=65535"),
            ("http:8080", "http:8080: the Service has no TCP port 8080 (its ports: TCP 80, TCP 443, UDP 53)"),
            ("http:53", "http:53: the Service has no TCP port 53 (its ports: TCP 80, TCP 443, UDP 53)"),
            ("udp:80", "udp:80: the Service has no UDP port 80 (its ports: TCP 80, TCP 443, UDP 53)"),
            ("http:80,https:80", "port 80 is listed twice"),
            ("http:80,", "\"http:80,\" has an empty item"),
            ("", "is empty"),
        ];
        for (value, reason) in cases {
            assert_one_error(&[("protocol-port", value)], &ports, "protocol-port", reason);
        }
    }

    #[test]
    fn https_needs_a_certificate() {
        assert_one_error(
            &[("protocol-port", "https:443")],
            &[tcp(443)],
            "protocol-port",
            "https:443 needs a certificate: set cert-id",
        );
        let p = run(
            &[("protocol-port", "https:443"), ("cert-id", "1231579085529123_166f8204689_1714763408_709017")],
            &[tcp(443)],
        );
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(
            p.config.tls.cert_id.as_ref().map(ResourceId::as_str),
            Some("1231579085529123_166f8204689_1714763408_709017")
        );
        assert_one_error(
            &[("protocol-port", "https:443"), ("cert-id", "a b")],
            &[tcp(443)],
            "cert-id",
            "\"a b\" contains ' '; an ID is one word without spaces or commas",
        );
    }

    #[test]
    fn https_options_need_an_https_listener() {
        for key in ["cert-id", "domain-extensions", "tls-cipher-policy", "http2-enabled"] {
            let value = match key {
                "domain-extensions" => "a.example.com:c-2",
                "tls-cipher-policy" => "tls_cipher_policy_1_2",
                "http2-enabled" => "off",
                _ => "c-1",
            };
            assert_one_note(
                &[("protocol-port", "http:80"), (key, value)],
                &[tcp(80)],
                key,
                "has no effect: it applies only to https listeners, and this Service's listeners are http:80",
            );
        }
    }

    #[test]
    fn tls_cipher_policy_values_and_default() {
        let base = [("protocol-port", "https:443"), ("cert-id", "c-1")];
        assert_eq!(run(&base, &[tcp(443)]).config.tls.cipher_policy, TlsPolicy::Tls10);
        for (v, want) in [
            ("tls_cipher_policy_1_0", TlsPolicy::Tls10),
            ("tls_cipher_policy_1_1", TlsPolicy::Tls11),
            ("tls_cipher_policy_1_2", TlsPolicy::Tls12),
            ("tls_cipher_policy_1_2_strict", TlsPolicy::Tls12Strict),
            ("tls_cipher_policy_1_2_strict_with_1_3", TlsPolicy::Tls12StrictWith13),
        ] {
            let p = run(&[base[0], base[1], ("tls-cipher-policy", v)], &[tcp(443)]);
            assert!(p.errors.is_empty(), "{:?}", p.errors);
            assert_eq!(p.config.tls.cipher_policy, want);
            // TLS 1.0 and 1.1 are not offered: said on the policies that allow them.
            let noted = p.not_applicable.iter().any(|n| n.reason == TlsPolicy::NO_OLD_TLS);
            assert_eq!(noted, want.allows_old_tls(), "{v}: {:?}", p.not_applicable);
        }
        let errs = errors_of(&[base[0], base[1], ("tls-cipher-policy", "tls_cipher_policy_1_3")], &[tcp(443)]);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].reason.starts_with("\"tls_cipher_policy_1_3\" is not one of tls_cipher_policy_1_0,"));
    }

    #[test]
    fn http2_enabled_default_on() {
        let base = [("protocol-port", "https:443"), ("cert-id", "c-1")];
        assert!(run(&base, &[tcp(443)]).config.tls.http2);
        assert!(!run(&[base[0], base[1], ("http2-enabled", "off")], &[tcp(443)]).config.tls.http2);
        assert!(run(&[base[0], base[1], ("http2-enabled", "on")], &[tcp(443)]).config.tls.http2);
        assert_one_error(
            &[base[0], base[1], ("http2-enabled", "false")],
            &[tcp(443)],
            "http2-enabled",
            "\"false\" is not one of on, off",
        );
    }

    #[test]
    fn domain_extensions_map_domains_to_certificates() {
        let base = [("protocol-port", "https:443"), ("cert-id", "c-0")];
        let p = run(&[base[0], base[1], ("domain-extensions", "example.com:c-1, *.api.example.com:c-2")], &[tcp(443)]);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let got: Vec<(&str, &str)> =
            p.config.tls.domain_extensions.iter().map(|d| (d.domain.as_str(), d.cert_id.as_str())).collect();
        assert_eq!(got, vec![("example.com", "c-1"), ("*.api.example.com", "c-2")]);
        for (v, reason) in [
            ("example.com", "\"example.com\" is not domain:cert-id"),
            ("example.com:", "in \"example.com:\": certificate is empty"),
            (
                "ex_ample.com:c-1",
                "\"ex_ample.com\" is not a DNS name (label \"ex_ample\" is not 1..=63 letters, digits or inner hyphens)",
            ),
            ("a.com:c-1,A.com:c-2", "A.com is listed twice"),
        ] {
            assert_one_error(&[base[0], base[1], ("domain-extensions", v)], &[tcp(443)], "domain-extensions", reason);
        }
    }

    #[test]
    fn forward_port_redirects_http_to_https() {
        let ports = [tcp(443), tcp(80), tcp(8080), tcp(8443)];
        let base = [("protocol-port", "https:443,http:80,http:8080,https:8443"), ("cert-id", "c-1")];
        let p = run(&[base[0], base[1], ("forward-port", "80:443,8080:8443")], &ports);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        assert_eq!(
            p.config.forward_ports,
            vec![ForwardPort { http_port: 80, https_port: 443 }, ForwardPort { http_port: 8080, https_port: 8443 }]
        );
        assert!(run(&base, &ports).config.forward_ports.is_empty());
        for (v, reason) in [
            ("443:80", "443 is not an http listener in protocol-port (e.g. http:443)"),
            ("80:8080", "8080 is not an https listener in protocol-port (e.g. https:8080)"),
            ("80:22", "22 is not an https listener in protocol-port (e.g. https:22)"),
            ("80", "\"80\" is not http-port:https-port (e.g. 80:443)"),
            ("80:443,80:8443", "port 80 is forwarded twice"),
            ("80:0", "in \"80:0\": port 0 is outside 1..=65535"),
        ] {
            assert_one_error(&[base[0], base[1], ("forward-port", v)], &ports, "forward-port", reason);
        }
        // Without protocol-port there is no http listener to forward from.
        assert_one_error(
            &[("forward-port", "80:443")],
            &ports,
            "forward-port",
            "80 is not an http listener in protocol-port (e.g. http:80)",
        );
    }
}
