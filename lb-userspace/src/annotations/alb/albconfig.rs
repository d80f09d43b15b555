//! The AlbConfig CRD (`alibabacloud.com/v1`): `spec.listeners` (port, protocol, TLS
//! policy, timeouts, HTTP/2, gzip) and `spec.config` (the ALB instance: cloud-only fields,
//! checked and reported: never required, and a value the cloud would refuse is a notice, not
//! an error), plus the `remote-clusters` annotation.
use serde::Serialize;
use serde_json::{Map, Value};

use super::super::{AnnotationError, NotApplicable};
use super::limits::{IDLE_TIMEOUT, REQUEST_TIMEOUT};
use super::listeners::{ListenProtocol, protocol};
use super::multicluster::remote_clusters;
use super::tls::{TlsPolicy, security_policy};
use super::values::{boolean, choice, dns_name, json_number, kind, quote};
use super::{FAMILIES, Key, PREFIX};

pub const API_VERSION: &str = "alibabacloud.com/v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressType {
    Internet,
    Intranet,
}

/// One listener of the ALB instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlbListener {
    pub port: u16,
    pub protocol: ListenProtocol,
    pub description: Option<String>,
    /// TLS listeners: the system policy (`None`: ALB's default `tls_cipher_policy_1_0`, or a
    /// custom cloud policy, reported as not applicable).
    pub security_policy: Option<TlsPolicy>,
    /// HTTPS: HTTP/2 offered in ALPN (default true).
    pub http2: bool,
    pub request_timeout_s: u32,
    pub idle_timeout_s: u32,
    pub gzip: bool,
}

/// An AlbConfig: its listeners (what a node balancer uses) and the instance settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AlbConfig {
    pub name: String,
    /// `spec.config.name`: the ALB instance name.
    pub instance_name: Option<String>,
    pub address_type: AddressType,
    /// vSwitch IDs of `spec.config.zoneMappings` (cloud-only: never required here).
    pub zone_mappings: Vec<String>,
    pub listeners: Vec<AlbListener>,
    /// `alb.ingress.kubernetes.io/remote-clusters`.
    pub remote_clusters: Vec<String>,
    pub not_applicable: Vec<NotApplicable>,
}

struct P {
    errors: Vec<AnnotationError>,
    na: Vec<NotApplicable>,
}

impl P {
    fn err(&mut self, at: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(AnnotationError::new(at, reason));
    }
    fn na(&mut self, at: impl Into<String>, reason: &str) {
        self.na.push(NotApplicable { annotation: at.into(), reason: reason.into() });
    }
    fn string(&mut self, v: &Value, at: &str) -> Option<String> {
        match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::String(_) => {
                self.err(at, "is empty");
                None
            }
            other => {
                self.err(at, format!("must be a string, not {}", kind(other)));
                None
            }
        }
    }
    fn choice<T: Copy>(&mut self, v: &Value, at: &str, opts: &[(&str, T)]) -> Option<T> {
        let s = self.string(v, at)?;
        choice(&s, opts).map_err(|e| self.err(at, e)).ok()
    }
    fn boolean(&mut self, v: &Value, at: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            Value::String(s) => self.check(boolean(s), at),
            other => {
                self.err(at, format!("must be true or false, not {}", kind(other)));
                None
            }
        }
    }
    /// Runs `f` over cloud-only fields: what it finds wrong becomes a notice (the cloud would
    /// refuse the value; a node balancer ignores the field), never an error.
    fn cloud<T>(&mut self, f: impl FnOnce(&mut P) -> T) -> T {
        let start = self.errors.len();
        let out = f(self);
        for e in self.errors.drain(start..).collect::<Vec<_>>() {
            let reason = format!("ignored (cloud-only): {}; Alibaba Cloud would refuse this value", e.reason);
            self.na.push(NotApplicable { annotation: e.annotation, reason });
        }
        out
    }
    fn check<T>(&mut self, r: Result<T, String>, at: &str) -> Option<T> {
        r.map_err(|e| self.err(at, e)).ok()
    }
}

const INSTANCE: &str = "the ALB instance is cloud-only; a node balancer serves on the node's own addresses";

fn config(p: &mut P, cfg: &Map<String, Value>) -> (Option<String>, AddressType, Vec<String>) {
    let mut name = None;
    let mut address_type = AddressType::Internet;
    let mut zones = Vec::new();
    for (k, v) in cfg {
        let at = format!("spec.config.{k}");
        match k.as_str() {
            "name" => {
                name = p.string(v, &at);
                p.na(&at, INSTANCE);
            }
            "id" => {
                p.string(v, &at);
                p.na(&at, "reusing an existing ALB instance is cloud-only");
            }
            "addressType" => {
                address_type = p
                    .choice(v, &at, &[("Internet", AddressType::Internet), ("Intranet", AddressType::Intranet)])
                    .unwrap_or(address_type);
                p.na(
                    &at,
                    "Internet/Intranet addressing (EIPs) is cloud-only; a node balancer serves on the node's addresses",
                );
            }
            "addressAllocatedMode" => {
                p.choice(v, &at, &[("Fixed", ()), ("Dynamic", ())]);
                p.na(&at, INSTANCE);
            }
            "addressIpVersion" => {
                p.choice(v, &at, &[("IPv4", ()), ("DualStack", ())]);
                p.na(&at, "the node's own address families apply");
            }
            "edition" => {
                p.choice(v, &at, &[("Basic", ()), ("Standard", ()), ("StandardWithWaf", ())]);
                p.na(&at, "ALB editions (and their WAF) are cloud products");
            }
            "forceOverride" | "deletionProtectionEnabled" => {
                p.boolean(v, &at);
                p.na(&at, INSTANCE);
            }
            "resourceGroupId" => {
                p.string(v, &at);
                p.na(&at, "resource groups are a cloud account concept");
            }
            "billingConfig" | "accessLogConfig" | "tags" => {
                let want_array = k == "tags";
                if v.is_array() != want_array || (!want_array && !v.is_object()) {
                    p.err(
                        &at,
                        format!("must be {}, not {}", if want_array { "an array" } else { "an object" }, kind(v)),
                    );
                }
                p.na(
                    &at,
                    match k.as_str() {
                        "billingConfig" => "billing is cloud-only",
                        "accessLogConfig" => {
                            "Simple Log Service projects are cloud-only; lb logs through its own logger"
                        }
                        _ => "cloud resource tags are cloud-only",
                    },
                );
            }
            "zoneMappings" => {
                match v {
                    Value::Array(items) if !items.is_empty() => {
                        for (i, z) in items.iter().enumerate() {
                            let zat = format!("{at}[{i}]");
                            let Value::Object(z) = z else {
                                p.err(&zat, format!("must be an object with vSwitchId, not {}", kind(z)));
                                continue;
                            };
                            match z.get("vSwitchId") {
                                Some(id) => zones.extend(p.string(id, &format!("{zat}.vSwitchId"))),
                                None => p.err(format!("{zat}.vSwitchId"), "is missing"),
                            }
                            for f in z
                                .keys()
                                .filter(|f| !["vSwitchId", "allocationId", "intranetAddress"].contains(&f.as_str()))
                            {
                                p.err(
                                    format!("{zat}.{f}"),
                                    "unknown field (known: vSwitchId, allocationId, intranetAddress)",
                                );
                            }
                        }
                    }
                    _ => p.err(&at, "must be a non-empty array of {vSwitchId: ...}"),
                }
                p.na(&at, "vSwitches and zones are cloud-only; a node balancer runs on every node");
            }
            _ => p.err(&at, "unknown field"),
        }
    }
    (name, address_type, zones)
}

fn listener(p: &mut P, i: usize, v: &Value) -> Option<AlbListener> {
    let at = format!("spec.listeners[{i}]");
    let Value::Object(l) = v else {
        p.err(&at, format!("must be an object with port and protocol, not {}", kind(v)));
        return None;
    };
    let port = match l.get("port") {
        Some(v) => {
            let r = json_number(v, 1, 65535, "port");
            p.check(r.map_err(|e| e.trim_start_matches("port: ").to_owned()), &format!("{at}.port"))
        }
        None => {
            p.err(format!("{at}.port"), "is missing");
            None
        }
    };
    let proto = match l.get("protocol") {
        Some(Value::String(s)) => p.check(protocol(s), &format!("{at}.protocol")),
        Some(other) => {
            p.err(format!("{at}.protocol"), format!("must be a string, not {}", kind(other)));
            None
        }
        None => {
            p.err(format!("{at}.protocol"), "is missing (HTTP, HTTPS or QUIC)");
            None
        }
    };
    let mut out = AlbListener {
        port: port.unwrap_or(0) as u16,
        protocol: proto.unwrap_or(ListenProtocol::Http),
        description: None,
        security_policy: None,
        http2: true,
        request_timeout_s: REQUEST_TIMEOUT.2,
        idle_timeout_s: IDLE_TIMEOUT.2,
        gzip: true,
    };
    for (k, v) in l {
        let fat = format!("{at}.{k}");
        let cloud_only = matches!(k.as_str(), "certificates" | "caEnabled" | "caCertificates");
        let tls_only = cloud_only || matches!(k.as_str(), "securityPolicyId" | "http2Enabled");
        if tls_only && proto == Some(ListenProtocol::Http) {
            if cloud_only {
                p.na(&fat, "ignored (cloud-only): applies only to HTTPS and QUIC listeners");
            } else {
                p.err(&fat, "applies only to HTTPS and QUIC listeners");
            }
            continue;
        }
        match k.as_str() {
            "port" | "protocol" => {}
            "description" => out.description = p.string(v, &fat),
            "securityPolicyId" => {
                if let Some(s) = p.string(v, &fat) {
                    match security_policy(&s) {
                        Ok(Some(pol)) => {
                            if pol.allows_old_tls() {
                                p.na(&fat, TlsPolicy::NO_OLD_TLS);
                            }
                            out.security_policy = Some(pol);
                        }
                        Ok(None) => p.na(&fat, "custom TLS policies live in the cloud account; the default policy (tls_cipher_policy_1_0) applies"),
                        Err(e) => p.err(&fat, e),
                    }
                }
            }
            "http2Enabled" | "gzipEnabled" => {
                if let Some(b) = p.boolean(v, &fat) {
                    if k == "http2Enabled" { out.http2 = b } else { out.gzip = b }
                }
            }
            "requestTimeout" => {
                let r = json_number(v, REQUEST_TIMEOUT.0, REQUEST_TIMEOUT.1, k);
                out.request_timeout_s = p
                    .check(r.map_err(|e| e.trim_start_matches("requestTimeout: ").to_owned()), &fat)
                    .unwrap_or(out.request_timeout_s);
            }
            "idleTimeout" => {
                let r = json_number(v, IDLE_TIMEOUT.0, IDLE_TIMEOUT.1, k);
                out.idle_timeout_s = p
                    .check(r.map_err(|e| e.trim_start_matches("idleTimeout: ").to_owned()), &fat)
                    .unwrap_or(out.idle_timeout_s);
            }
            "certificates" | "caCertificates" => {
                if !v.is_array() {
                    p.cloud(|p| p.err(&fat, format!("must be an array, not {}", kind(v))));
                }
                p.na(&fat, "certificate IDs of Alibaba Cloud Certificate Management are cloud-only; certificates come from the Secrets in the Ingresses' spec.tls");
            }
            "caEnabled" => {
                p.cloud(|p| p.boolean(v, &fat));
                p.na(&fat, "mutual TLS with CA certificates of the cloud account is cloud-only");
            }
            "aclConfig" => p.na(&fat, "ALB ACLs are cloud objects; use lb's AccessControlList objects"),
            "logConfig" => p.na(&fat, "Simple Log Service access logs are cloud-only"),
            _ => p.err(&fat, "unknown field"),
        }
    }
    (port.is_some() && proto.is_some()).then_some(out)
}

/// Parses an AlbConfig object (as JSON, e.g. from YAML). Errors name the field.
pub fn parse_albconfig(value: &Value) -> Result<AlbConfig, Vec<AnnotationError>> {
    let mut p = P { errors: Vec::new(), na: Vec::new() };
    let Value::Object(obj) = value else {
        return Err(vec![AnnotationError::new("AlbConfig", format!("must be an object, not {}", kind(value)))]);
    };
    match obj.get("apiVersion") {
        Some(Value::String(s)) if s == API_VERSION => {}
        other => p.err(
            "apiVersion",
            format!("must be {API_VERSION}, not {}", other.map(|v| v.to_string()).unwrap_or_else(|| "missing".into())),
        ),
    }
    match obj.get("kind") {
        Some(Value::String(s)) if s == "AlbConfig" => {}
        other => p.err(
            "kind",
            format!("must be AlbConfig, not {}", other.map(|v| v.to_string()).unwrap_or_else(|| "missing".into())),
        ),
    }
    let meta = obj.get("metadata").and_then(Value::as_object);
    let name = match meta.and_then(|m| m.get("name")) {
        Some(Value::String(n)) => match dns_name(n, false) {
            Ok(_) => n.clone(),
            Err(e) => {
                p.err("metadata.name", e);
                n.clone()
            }
        },
        _ => {
            p.err("metadata.name", "is missing");
            String::new()
        }
    };
    let mut clusters = Vec::new();
    for (k, v) in meta.and_then(|m| m.get("annotations")).and_then(Value::as_object).into_iter().flatten() {
        let Some(suffix) = k.strip_prefix(PREFIX) else { continue };
        let v = v.as_str().unwrap_or_default().trim();
        if suffix == "remote-clusters" {
            match remote_clusters(v) {
                Ok(c) => clusters = c,
                Err(e) => p.err(k, e),
            }
        } else if Key::from_suffix(suffix).is_some() || FAMILIES.iter().any(|f| suffix.starts_with(f)) {
            p.err(k, "is an Ingress annotation, not an AlbConfig one");
        } else {
            p.err(k, "unknown annotation");
        }
    }
    let spec = obj.get("spec");
    let spec = match spec {
        Some(Value::Object(s)) => Some(s),
        Some(other) => {
            p.err("spec", format!("must be an object, not {}", kind(other)));
            None
        }
        None => {
            p.err("spec", "is missing");
            None
        }
    };
    let (mut instance_name, mut address_type, mut zones) = (None, AddressType::Internet, Vec::new());
    let mut listeners: Vec<AlbListener> = Vec::new();
    if let Some(spec) = spec {
        for k in spec.keys().filter(|k| !["config", "listeners"].contains(&k.as_str())) {
            p.err(format!("spec.{k}"), "unknown field (known: config, listeners)");
        }
        match spec.get("config") {
            // The ALB instance: cloud-only, never required, never an error.
            Some(Value::Object(cfg)) => (instance_name, address_type, zones) = p.cloud(|p| config(p, cfg)),
            Some(other) => p.cloud(|p| p.err("spec.config", format!("must be an object, not {}", kind(other)))),
            None => {}
        }
        match spec.get("listeners") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, l) in items.iter().enumerate() {
                    if let Some(l) = listener(&mut p, i, l) {
                        let udp = |x: ListenProtocol| x == ListenProtocol::Quic;
                        if listeners.iter().any(|o| o.port == l.port && udp(o.protocol) == udp(l.protocol)) {
                            p.err(format!("spec.listeners[{i}]"), format!("port {} is listed twice", l.port));
                        } else {
                            listeners.push(l);
                        }
                    }
                }
            }
            Some(other) => p.err("spec.listeners", format!("must be an array, not {}", kind(other))),
        }
    }
    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    Ok(AlbConfig {
        name,
        instance_name,
        address_type,
        zone_mappings: zones,
        listeners,
        remote_clusters: clusters,
        not_applicable: p.na,
    })
}

/// Parses an AlbConfig from YAML text (one document).
pub fn parse_albconfig_yaml(text: &str) -> Result<AlbConfig, Vec<AnnotationError>> {
    let v: Value = serde_yaml_ng::from_str(text)
        .map_err(|e| vec![AnnotationError::new("AlbConfig", format!("{} is not YAML: {e}", quote(text)))])?;
    parse_albconfig(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(listeners: Value) -> Value {
        serde_json::json!({
            "apiVersion": "alibabacloud.com/v1", "kind": "AlbConfig", "metadata": {"name": "alb"},
            "spec": {"config": {"zoneMappings": [{"vSwitchId": "vsw-1"}]}, "listeners": listeners}
        })
    }

    fn errs(v: &Value) -> Vec<String> {
        parse_albconfig(v).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn listeners_with_defaults() {
        let c = parse_albconfig(&base(
            serde_json::json!([{"port": 80, "protocol": "HTTP"}, {"port": 443, "protocol": "HTTPS"}]),
        ))
        .unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(
            c.listeners[1],
            AlbListener {
                port: 443,
                protocol: ListenProtocol::Https,
                description: None,
                security_policy: None,
                http2: true,
                request_timeout_s: 60,
                idle_timeout_s: 15,
                gzip: true
            }
        );
        assert_eq!(c.address_type, AddressType::Internet);
        assert_eq!(c.zone_mappings, vec!["vsw-1"]);
        assert!(c.not_applicable.iter().any(|n| n.annotation == "spec.config.zoneMappings"));
    }

    #[test]
    fn listener_fields_and_ranges() {
        let c = parse_albconfig(&base(serde_json::json!([{
            "port": 443, "protocol": "HTTPS", "securityPolicyId": "tls_cipher_policy_1_2", "http2Enabled": false,
            "requestTimeout": 180, "idleTimeout": 1, "gzipEnabled": false, "description": "web",
            "certificates": [{"CertificateId": "756****-cn-hangzhou", "IsDefault": true}]
        }])))
        .unwrap();
        let l = &c.listeners[0];
        assert_eq!(
            (l.security_policy, l.http2, l.request_timeout_s, l.idle_timeout_s, l.gzip),
            (Some(TlsPolicy::Tls12), false, 180, 1, false)
        );
        assert!(c.not_applicable.iter().any(|n| n.annotation == "spec.listeners[0].certificates"));
        assert!(!c.not_applicable.iter().any(|n| n.reason == TlsPolicy::NO_OLD_TLS));
        // A policy that allows TLS 1.0 or 1.1 is served from TLS 1.2, and says so.
        let old = parse_albconfig(&base(serde_json::json!([
            {"port": 443, "protocol": "HTTPS", "securityPolicyId": "tls_cipher_policy_1_1"}
        ])))
        .unwrap();
        let note = old.not_applicable.iter().find(|n| n.reason == TlsPolicy::NO_OLD_TLS).expect("a notice");
        assert_eq!(note.annotation, "spec.listeners[0].securityPolicyId");
        let table: &[(Value, &str)] = &[
            (serde_json::json!({"port": 0, "protocol": "HTTP"}), "spec.listeners[0].port: 0 is outside 1..=65535"),
            (
                serde_json::json!({"port": 65536, "protocol": "HTTP"}),
                "spec.listeners[0].port: 65536 is outside 1..=65535",
            ),
            (serde_json::json!({"port": 80}), "spec.listeners[0].protocol: is missing (HTTP, HTTPS or QUIC)"),
            (serde_json::json!({"protocol": "HTTP"}), "spec.listeners[0].port: is missing"),
            (
                serde_json::json!({"port": 80, "protocol": "TCP"}),
                "spec.listeners[0].protocol: \"TCP\" is not one of HTTP, HTTPS, QUIC",
            ),
            (
                serde_json::json!({"port": 80, "protocol": "HTTP", "requestTimeout": 181}),
                "spec.listeners[0].requestTimeout: 181 is outside 1..=180",
            ),
            (
                serde_json::json!({"port": 80, "protocol": "HTTP", "requestTimeout": 0}),
                "spec.listeners[0].requestTimeout: 0 is outside 1..=180",
            ),
            (
                serde_json::json!({"port": 80, "protocol": "HTTP", "idleTimeout": 61}),
                "spec.listeners[0].idleTimeout: 61 is outside 1..=60",
            ),
            (
                serde_json::json!({"port": 80, "protocol": "HTTP", "securityPolicyId": "tls_cipher_policy_1_2"}),
                "spec.listeners[0].securityPolicyId: applies only to HTTPS and QUIC listeners",
            ),
            (
                serde_json::json!({"port": 443, "protocol": "HTTPS", "securityPolicyId": "tls13"}),
                "spec.listeners[0].securityPolicyId: \"tls13\" is neither one of tls_cipher_policy_1_0, tls_cipher_policy_1_1, tls_cipher_policy_1_2, tls_cipher_policy_1_2_strict, tls_cipher_policy_1_2_strict_with_1_3 nor a custom policy ID (tls-...)",
            ),
            (
                serde_json::json!({"port": 80, "protocol": "HTTP", "gzipEnabled": "yes"}),
                "spec.listeners[0].gzipEnabled: \"yes\" is not one of true, false",
            ),
            (serde_json::json!({"port": 80, "protocol": "HTTP", "frob": 1}), "spec.listeners[0].frob: unknown field"),
        ];
        for (l, want) in table {
            assert_eq!(errs(&base(serde_json::json!([l]))), vec![(*want).to_owned()], "{l}");
        }
        assert_eq!(
            errs(&base(serde_json::json!([{"port": 80, "protocol": "HTTP"}, {"port": 80, "protocol": "HTTPS"}]))),
            vec!["spec.listeners[1]: port 80 is listed twice"]
        );
        assert!(
            parse_albconfig(&base(
                serde_json::json!([{"port": 443, "protocol": "HTTPS"}, {"port": 443, "protocol": "QUIC"}])
            ))
            .is_ok()
        );
    }

    /// The notices on `field` of the AlbConfig `v`, which must parse.
    fn notes(v: &Value, field: &str) -> Vec<String> {
        let c = parse_albconfig(v).unwrap_or_else(|e| panic!("rejected: {e:?}"));
        c.not_applicable.iter().filter(|n| n.annotation == field).map(|n| n.reason.clone()).collect()
    }

    #[test]
    fn config_and_object_checks() {
        let mut v = base(serde_json::json!([]));
        // spec.config is cloud-only: never required, and a value the cloud would refuse is a
        // notice, not a rejection (issue #18: an AlbConfig without zoneMappings serves).
        v["spec"].as_object_mut().unwrap().remove("config");
        assert!(parse_albconfig(&v).unwrap().not_applicable.is_empty());
        v["spec"]["config"] = serde_json::json!({"addressType": "Public"});
        let ignored = |reason: &str| format!("ignored (cloud-only): {reason}; Alibaba Cloud would refuse this value");
        assert!(notes(&v, "spec.config.addressType").contains(&ignored("\"Public\" is not one of Internet, Intranet")));
        assert!(notes(&v, "spec.config.zoneMappings").is_empty(), "absent: nothing to say");
        v["spec"]["config"] = serde_json::json!({"zoneMappings": []});
        assert!(
            notes(&v, "spec.config.zoneMappings").contains(&ignored("must be a non-empty array of {vSwitchId: ...}"))
        );
        v["spec"]["config"] =
            serde_json::json!({"zoneMappings": [{"vSwitchId": "v"}], "edition": "Pro", "colour": "red"});
        assert_eq!(notes(&v, "spec.config.colour"), vec![ignored("unknown field")]);
        assert!(
            notes(&v, "spec.config.edition")
                .contains(&ignored("\"Pro\" is not one of Basic, Standard, StandardWithWaf"))
        );
        v["spec"]["config"] = serde_json::json!("instance");
        assert_eq!(notes(&v, "spec.config"), vec![ignored("must be an object, not a string")]);
        let mut http =
            base(serde_json::json!([{"port": 80, "protocol": "HTTP", "certificates": "x", "caEnabled": "maybe"}]));
        http["spec"].as_object_mut().unwrap().remove("config");
        assert!(notes(&http, "spec.listeners[0].certificates")[0].contains("applies only to HTTPS and QUIC listeners"));
        v["spec"]["config"] = serde_json::json!({"zoneMappings": [{"vSwitchId": "v"}]});
        v["kind"] = "Ingress".into();
        assert_eq!(errs(&v), vec!["kind: must be AlbConfig, not \"Ingress\""]);
        v["kind"] = "AlbConfig".into();
        v["metadata"]["annotations"] = serde_json::json!({"alb.ingress.kubernetes.io/order": "1"});
        assert_eq!(errs(&v), vec!["alb.ingress.kubernetes.io/order: is an Ingress annotation, not an AlbConfig one"]);
        v["metadata"]["annotations"] = serde_json::json!({"alb.ingress.kubernetes.io/remote-clusters": "c1,c2"});
        let c = parse_albconfig(&v).unwrap();
        assert_eq!(c.remote_clusters, vec!["c1", "c2"]);
        assert!(c.not_applicable.iter().all(|n| n.annotation != "alb.ingress.kubernetes.io/remote-clusters"));
        v["metadata"]["annotations"] = serde_json::json!({"alb.ingress.kubernetes.io/remote-clusters": ""});
        assert_eq!(errs(&v), vec!["alb.ingress.kubernetes.io/remote-clusters: is empty"]);
        assert!(parse_albconfig(&serde_json::json!([])).is_err());

        // Every cloud-only field: validated, then reported.
        let mut v = base(
            serde_json::json!([{"port": 443, "protocol": "HTTPS", "aclConfig": {"aclType": "White"}, "logConfig": {}, "caEnabled": false, "caCertificates": []}]),
        );
        v["spec"]["config"] = serde_json::json!({
            "zoneMappings": [{"vSwitchId": "vsw-1", "allocationId": "eip-1"}], "id": "alb-1", "forceOverride": false,
            "deletionProtectionEnabled": true, "resourceGroupId": "rg-1", "addressIpVersion": "DualStack",
            "edition": "StandardWithWaf", "billingConfig": {"payType": "PostPay"}, "accessLogConfig": {"logProject": "p", "logStore": "s"},
            "tags": [{"key": "k", "value": "v"}], "addressType": "Intranet"
        });
        let c = parse_albconfig(&v).unwrap();
        assert_eq!(c.address_type, AddressType::Intranet);
        let na: Vec<&str> = c.not_applicable.iter().map(|n| n.annotation.as_str()).collect();
        for f in [
            "id",
            "forceOverride",
            "deletionProtectionEnabled",
            "resourceGroupId",
            "addressIpVersion",
            "edition",
            "billingConfig",
            "accessLogConfig",
            "tags",
            "zoneMappings",
            "addressType",
        ] {
            assert!(na.contains(&format!("spec.config.{f}").as_str()), "{f}: {na:?}");
        }
        for f in ["aclConfig", "logConfig", "caEnabled", "caCertificates"] {
            assert!(na.contains(&format!("spec.listeners[0].{f}").as_str()), "{f}: {na:?}");
        }
        for (f, bad, want) in [
            (
                "addressIpVersion",
                serde_json::json!("IPv6"),
                "spec.config.addressIpVersion: \"IPv6\" is not one of IPv4, DualStack",
            ),
            ("forceOverride", serde_json::json!(1), "spec.config.forceOverride: must be true or false, not a number"),
            ("tags", serde_json::json!({}), "spec.config.tags: must be an array, not an object"),
            ("billingConfig", serde_json::json!([]), "spec.config.billingConfig: must be an object, not an array"),
        ] {
            let mut v = v.clone();
            v["spec"]["config"][f] = bad;
            let (field, reason) = want.split_once(": ").unwrap();
            let want = format!("ignored (cloud-only): {reason}; Alibaba Cloud would refuse this value");
            assert!(notes(&v, field).contains(&want), "{f}: {:?}", notes(&v, field));
        }
    }
}
