//! `actions.<service>`: custom forwarding actions of the rules whose backend is that
//! Service: ForwardGroup (weighted Services and `ServerGroupID`s, which the model maps to
//! the Service that names them with `lb.dev/server-group-id`), Redirect,
//! FixedResponse (terminal, at most one) and InsertHeader, RemoveHeader, TrafficMirror.
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::paths::Settings;
use super::values::{
    choice, dns_name, field, header_name, json_bool, json_int, json_number, json_str, kind, quote, unknown_fields,
};
use super::{Cx, PREFIX};

/// A Service port: number or name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(untagged)]
pub enum ServicePort {
    Number(u16),
    Name(String),
}

/// The port name that hands a rule's backend over to `actions.<service>`.
pub const USE_ANNOTATION: &str = "use-annotation";

/// A Service of the Ingress's namespace and one of its ports.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceRef {
    pub name: String,
    pub port: ServicePort,
}

/// A `ServerGroupID` of a ForwardGroup with its weight: the model forwards its share to the
/// Service of the Ingress's namespace that carries `lb.dev/server-group-id` with this ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedServerGroup {
    pub id: String,
    /// 0..=100, relative to the other groups.
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedService {
    pub service: ServiceRef,
    /// 0..=100, relative to the other Services of the group.
    pub weight: u32,
}

/// Stickiness across the Services of a ForwardGroup (`ServerGroupStickySession`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GroupSticky {
    pub timeout_s: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// `None` keeps the request's value (`${protocol}`, `${host}`, ...).
    pub protocol: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    pub query: Option<String>,
    /// 301, 302, 303, 307 or 308.
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FixedResponse {
    /// 2xx, 4xx or 5xx.
    pub code: u16,
    pub content_type: String,
    pub content: String,
}

/// What a rule does with a request it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Spread over Services by weight (a plain backend is one Service of weight 100).
    Forward {
        groups: Vec<WeightedService>,
        /// `ServerGroupID` groups, resolved to Services by the model.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        server_groups: Vec<WeightedServerGroup>,
        sticky: Option<GroupSticky>,
    },
    Redirect(Redirect),
    FixedResponse(FixedResponse),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderValueType {
    /// The value as written.
    UserDefined,
    /// The value of another request header, named by the value.
    ReferenceHeader,
    /// A value the balancer knows: ClientSrcPort, ClientSrcIp, Protocol, SLBId, SLBPort.
    SystemDefined,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InsertHeader {
    pub key: String,
    pub value: String,
    pub value_type: HeaderValueType,
}

/// Non-terminal actions, applied before the terminal one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    InsertHeader(InsertHeader),
    RemoveHeader(String),
    /// Copies of the requests go to these Services; their answers are dropped.
    TrafficMirror(Vec<ServiceRef>),
}

/// One `actions.<service>` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct ActionSet {
    pub terminal: Option<Action>,
    pub filters: Vec<Filter>,
}

/// ServerGroupIDs of traffic mirrors met while parsing (cloud server groups, reported as not
/// applicable).
#[derive(Default)]
struct Found {
    cloud_groups: Vec<String>,
}

const TYPES: [(&str, u8); 6] = [
    ("ForwardGroup", 0),
    ("Redirect", 1),
    ("FixedResponse", 2),
    ("InsertHeader", 3),
    ("RemoveHeader", 4),
    ("TrafficMirror", 5),
];
/// A ForwardGroup has at most five server groups (ALB's limit).
pub const MAX_SERVER_GROUPS: usize = 5;
const CONTENT_TYPES: [(&str, ()); 5] =
    [("text/plain", ()), ("text/css", ()), ("text/html", ()), ("application/javascript", ()), ("application/json", ())];
const SYSTEM_VALUES: [(&str, ()); 5] =
    [("ClientSrcPort", ()), ("ClientSrcIp", ()), ("Protocol", ()), ("SLBId", ()), ("SLBPort", ())];

fn object<'a>(obj: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a Map<String, Value>, String> {
    match field(obj, name) {
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(format!("{at}.{name} must be an object, not {}", kind(other))),
        None => Err(format!("{at}.{name} is missing")),
    }
}

fn check_fields(obj: &Map<String, Value>, known: &[&str], at: &str) -> Result<(), String> {
    match unknown_fields(obj, known).first() {
        Some(f) => Err(format!("{at}: unknown field {f:?} (known: {})", known.join(", "))),
        None => Ok(()),
    }
}

/// A Service name: a DNS-1035 label.
pub fn service_name(v: &str) -> Result<String, String> {
    let ok = (1..=63).contains(&v.len())
        && v.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && !v.ends_with('-');
    if ok { Ok(v.to_owned()) } else { Err(format!("{} is not a Service name (a DNS-1035 label)", quote(v))) }
}

/// A port: a number 1..=65535 (or a string of digits), or a port name.
fn service_port(v: &Value, at: &str) -> Result<ServicePort, String> {
    match v {
        Value::String(s) if !s.bytes().all(|b| b.is_ascii_digit()) => {
            let ok = (1..=15).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && s.bytes().any(|b| b.is_ascii_lowercase());
            if ok {
                Ok(ServicePort::Name(s.clone()))
            } else {
                Err(format!("{at}: {} is not a port number or name", quote(s)))
            }
        }
        _ => json_number(v, 1, 65535, at).map(|n| ServicePort::Number(n as u16)),
    }
}

/// What a server group tuple names: a `ServerGroupID` or a `ServiceName` + `ServicePort`.
enum Target {
    Service(ServiceRef),
    ServerGroup(String),
}

/// A server group tuple: `ServerGroupID` (winning over a Service named beside it) or
/// `ServiceName` + `ServicePort`.
fn group_target(g: &Map<String, Value>, at: &str) -> Result<Target, String> {
    // "When you attach a server group by using both ServerGroupID and
    // ServiceName+ServicePort, the system prioritizes ServerGroupID."
    if let Some(id) = field(g, "ServerGroupID") {
        let Value::String(id) = id else {
            return Err(format!("{at}.ServerGroupID must be a string, not {}", kind(id)));
        };
        if !id.starts_with("sgp-") || id.len() < 5 || id.chars().any(|c| c.is_whitespace() || c == ',') {
            return Err(format!("{at}.ServerGroupID {} is not a server group ID (sgp-...)", quote(id)));
        }
        return Ok(Target::ServerGroup(id.clone()));
    }
    let name = service_name(json_str(g, "ServiceName", at)?).map_err(|e| format!("{at}.ServiceName: {e}"))?;
    let port = field(g, "ServicePort").ok_or_else(|| format!("{at}.ServicePort is missing"))?;
    let port = service_port(port, &format!("{at}.ServicePort"))?;
    Ok(Target::Service(ServiceRef { name, port }))
}

fn forward_group(obj: &Map<String, Value>, at: &str) -> Result<Action, String> {
    let cfg = object(obj, "ForwardConfig", at)?;
    let at = format!("{at}.ForwardConfig");
    check_fields(cfg, &["ServerGroups", "ServerGroupStickySession"], &at)?;
    let Some(Value::Array(groups)) = field(cfg, "ServerGroups") else {
        return Err(format!("{at}.ServerGroups must be an array of server groups"));
    };
    if groups.is_empty() {
        return Err(format!("{at}.ServerGroups is empty"));
    }
    if groups.len() > MAX_SERVER_GROUPS {
        return Err(format!("{at}.ServerGroups has {} server groups; at most {MAX_SERVER_GROUPS}", groups.len()));
    }
    let mut out: Vec<WeightedService> = Vec::new();
    let mut server_groups: Vec<WeightedServerGroup> = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let gat = format!("{at}.ServerGroups[{i}]");
        let Value::Object(g) = g else { return Err(format!("{gat} must be an object, not {}", kind(g))) };
        check_fields(g, &["ServiceName", "ServicePort", "Weight", "ServerGroupID"], &gat)?;
        let weight = field(g, "Weight").ok_or_else(|| format!("{gat}.Weight is missing"))?;
        let weight = json_int(weight, 0, 100, &format!("{gat}.Weight"))?;
        match group_target(g, &gat)? {
            Target::Service(service) => {
                if out.iter().any(|w| w.service == service) {
                    return Err(format!("{gat}: Service {}:{} is listed twice", service.name, port_str(&service.port)));
                }
                out.push(WeightedService { service, weight });
            }
            Target::ServerGroup(id) => {
                if server_groups.iter().any(|g| g.id == id) {
                    return Err(format!("{gat}: ServerGroupID {id} is listed twice"));
                }
                server_groups.push(WeightedServerGroup { id, weight });
            }
        }
    }
    if out.iter().map(|w| w.weight).chain(server_groups.iter().map(|g| g.weight)).all(|w| w == 0) {
        return Err(format!("{at}.ServerGroups: every group has weight 0; at least one needs a weight above 0"));
    }
    let sticky = match field(cfg, "ServerGroupStickySession") {
        None => None,
        Some(Value::Object(s)) => {
            let sat = format!("{at}.ServerGroupStickySession");
            check_fields(s, &["Enabled", "Timeout"], &sat)?;
            let on = match field(s, "Enabled") {
                Some(v) => json_bool(v, &format!("{sat}.Enabled"))?,
                None => false,
            };
            let timeout =
                field(s, "Timeout").map(|v| json_number(v, 1, 86400, &format!("{sat}.Timeout"))).transpose()?;
            if !on && timeout.is_some() {
                return Err(format!("{sat}.Timeout has no effect unless Enabled is true"));
            }
            on.then(|| GroupSticky { timeout_s: timeout.unwrap_or(1000) })
        }
        Some(other) => return Err(format!("{at}.ServerGroupStickySession must be an object, not {}", kind(other))),
    };
    Ok(Action::Forward { groups: out, server_groups, sticky })
}

fn port_str(p: &ServicePort) -> String {
    match p {
        ServicePort::Number(n) => n.to_string(),
        ServicePort::Name(n) => n.clone(),
    }
}

/// A redirect field: absent or its `${name}` placeholder keeps the request's value.
fn keep_or<'a>(cfg: &'a Map<String, Value>, name: &str, at: &str) -> Result<Option<&'a Value>, String> {
    match field(cfg, name) {
        None => Ok(None),
        Some(Value::String(s)) if *s == format!("${{{name}}}") => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(format!("{at}.{name} is empty (leave it out, or ${{{name}}}, to keep the request's)"))
        }
        Some(v) => Ok(Some(v)),
    }
}

fn redirect(obj: &Map<String, Value>, at: &str) -> Result<Action, String> {
    let cfg = object(obj, "redirectConfig", at)?;
    let at = format!("{at}.redirectConfig");
    check_fields(cfg, &["host", "httpCode", "path", "port", "protocol", "query"], &at)?;
    let code = match field(cfg, "httpCode") {
        Some(v) => json_number(v, 0, 999, &format!("{at}.httpCode"))?,
        None => return Err(format!("{at}.httpCode is missing (301, 302, 303, 307 or 308)")),
    };
    if ![301, 302, 303, 307, 308].contains(&code) {
        return Err(format!("{at}.httpCode {code} is not one of 301, 302, 303, 307, 308"));
    }
    let s = |v: &Value, name: &str| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{at}.{name} must be a string, not {}", kind(other))),
    };
    let protocol = keep_or(cfg, "protocol", &at)?
        .map(|v| {
            s(v, "protocol").and_then(|p| {
                choice(&p, &[("HTTP", ()), ("HTTPS", ())]).map(|_| p).map_err(|e| format!("{at}.protocol: {e}"))
            })
        })
        .transpose()?;
    let host = keep_or(cfg, "host", &at)?
        .map(|v| s(v, "host").and_then(|h| dns_name(&h, false).map_err(|e| format!("{at}.host: {e}"))))
        .transpose()?;
    let port = keep_or(cfg, "port", &at)?
        .map(|v| json_number(v, 1, 65535, &format!("{at}.port")).map(|p| p as u16))
        .transpose()?;
    let path = keep_or(cfg, "path", &at)?
        .map(|v| {
            s(v, "path").and_then(|p| {
                if p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
                {
                    Ok(p)
                } else {
                    Err(format!("{at}.path {} must start with / and have no spaces, ? or #", quote(&p)))
                }
            })
        })
        .transpose()?;
    let query = keep_or(cfg, "query", &at)?
        .map(|v| {
            s(v, "query").and_then(|q| {
                if q.len() <= 128 && !q.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#') {
                    Ok(q)
                } else {
                    Err(format!("{at}.query {} must have at most 128 characters, no spaces or #", quote(&q)))
                }
            })
        })
        .transpose()?;
    if protocol.is_none() && host.is_none() && port.is_none() && path.is_none() && query.is_none() {
        return Err(format!("{at} redirects to the same URL (every field keeps the request's value)"));
    }
    Ok(Action::Redirect(Redirect { protocol, host, port, path, query, code: code as u16 }))
}

fn fixed_response(obj: &Map<String, Value>, at: &str) -> Result<Action, String> {
    let cfg = object(obj, "fixedResponseConfig", at)?;
    let at = format!("{at}.fixedResponseConfig");
    check_fields(cfg, &["content", "contentType", "httpCode"], &at)?;
    let code = match field(cfg, "httpCode") {
        Some(v) => json_number(v, 200, 599, &format!("{at}.httpCode"))?,
        None => return Err(format!("{at}.httpCode is missing (2xx, 4xx or 5xx)")),
    };
    if code / 100 == 3 {
        return Err(format!("{at}.httpCode {code} is not 2xx, 4xx or 5xx (use a Redirect action for 3xx)"));
    }
    let content_type = match field(cfg, "contentType") {
        None => "text/plain".to_owned(),
        Some(_) => {
            let t = json_str(cfg, "contentType", &at)?;
            choice(t, &CONTENT_TYPES).map_err(|e| format!("{at}.contentType: {e}"))?;
            t.to_owned()
        }
    };
    let content = match field(cfg, "content") {
        None => String::new(),
        Some(_) => json_str(cfg, "content", &at)?.to_owned(),
    };
    if content.len() > 1024 {
        return Err(format!("{at}.content has {} bytes; at most 1024", content.len()));
    }
    Ok(Action::FixedResponse(FixedResponse { code: code as u16, content_type, content }))
}

fn insert_header(obj: &Map<String, Value>, at: &str) -> Result<Filter, String> {
    let cfg = object(obj, "insertHeaderConfig", at)?;
    let at = format!("{at}.insertHeaderConfig");
    check_fields(cfg, &["key", "value", "valueType"], &at)?;
    let key = header_name(json_str(cfg, "key", &at)?, 40).map_err(|e| format!("{at}.key: {e}"))?;
    let value_type = match field(cfg, "valueType") {
        None => HeaderValueType::UserDefined,
        Some(_) => choice(
            json_str(cfg, "valueType", &at)?,
            &[
                ("UserDefined", HeaderValueType::UserDefined),
                ("ReferenceHeader", HeaderValueType::ReferenceHeader),
                ("SystemDefined", HeaderValueType::SystemDefined),
            ],
        )
        .map_err(|e| format!("{at}.valueType: {e}"))?,
    };
    let value = json_str(cfg, "value", &at)?.to_owned();
    match value_type {
        HeaderValueType::UserDefined => {
            if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
                return Err(format!("{at}.value must be 1..=128 characters without control characters"));
            }
        }
        HeaderValueType::ReferenceHeader => {
            header_name(&value, 40).map_err(|e| format!("{at}.value: {e}"))?;
        }
        HeaderValueType::SystemDefined => {
            choice(&value, &SYSTEM_VALUES).map_err(|e| format!("{at}.value: {e}"))?;
        }
    }
    Ok(Filter::InsertHeader(InsertHeader { key, value, value_type }))
}

fn remove_header(obj: &Map<String, Value>, at: &str) -> Result<Filter, String> {
    let cfg = object(obj, "removeHeaderConfig", at)?;
    let at = format!("{at}.removeHeaderConfig");
    check_fields(cfg, &["key"], &at)?;
    let key = header_name(json_str(cfg, "key", &at)?, 40).map_err(|e| format!("{at}.key: {e}"))?;
    Ok(Filter::RemoveHeader(key))
}

fn traffic_mirror(obj: &Map<String, Value>, at: &str, found: &mut Found) -> Result<Filter, String> {
    let cfg = object(obj, "trafficMirrorConfig", at)?;
    let at = format!("{at}.trafficMirrorConfig");
    check_fields(cfg, &["targetType", "mirrorGroupConfig"], &at)?;
    let t = json_str(cfg, "targetType", &at)?;
    choice(t, &[("ForwardGroupMirror", ())]).map_err(|e| format!("{at}.targetType: {e}"))?;
    let mg = object(cfg, "mirrorGroupConfig", &at)?;
    let at = format!("{at}.mirrorGroupConfig");
    check_fields(mg, &["serverGroupTuples"], &at)?;
    let Some(Value::Array(tuples)) = field(mg, "serverGroupTuples") else {
        return Err(format!("{at}.serverGroupTuples must be an array of server groups"));
    };
    if tuples.is_empty() {
        return Err(format!("{at}.serverGroupTuples is empty"));
    }
    let mut out = Vec::new();
    for (i, t) in tuples.iter().enumerate() {
        let tat = format!("{at}.serverGroupTuples[{i}]");
        let Value::Object(t) = t else { return Err(format!("{tat} must be an object, not {}", kind(t))) };
        check_fields(t, &["serviceName", "servicePort", "serverGroupID", "weight"], &tat)?;
        match group_target(t, &tat)? {
            Target::Service(s) => out.push(s),
            Target::ServerGroup(id) => found.cloud_groups.push(id),
        }
    }
    if out.is_empty() {
        return Err(format!(
            "{at}.serverGroupTuples has only serverGroupIDs (cloud server groups); a node balancer needs a serviceName + servicePort"
        ));
    }
    Ok(Filter::TrafficMirror(out))
}

/// One `actions.<service>` value: a non-empty JSON array of actions, at most one of them
/// terminal (ForwardGroup, Redirect, FixedResponse). Also returns the cloud server group
/// IDs its traffic mirrors name.
pub fn parse_actions(v: &str) -> Result<(ActionSet, Vec<String>), String> {
    let json: Value = serde_json::from_str(v).map_err(|e| format!("is not JSON: {e}"))?;
    let Value::Array(items) = json else { return Err(format!("must be a JSON array of actions, not {}", kind(&json))) };
    if items.is_empty() {
        return Err("lists no action".into());
    }
    let mut set = ActionSet::default();
    let mut found = Found::default();
    for (i, item) in items.iter().enumerate() {
        let at = format!("action {i}");
        let Value::Object(obj) = item else { return Err(format!("{at} must be an object, not {}", kind(item))) };
        let ty = json_str(obj, "type", &at)?;
        let t = choice(ty, &TYPES).map_err(|e| format!("{at}: type {e}"))?;
        let cfg = [
            "ForwardConfig",
            "redirectConfig",
            "fixedResponseConfig",
            "insertHeaderConfig",
            "removeHeaderConfig",
            "trafficMirrorConfig",
        ][usize::from(t)];
        if let Some(f) = unknown_fields(obj, &["type", cfg]).first() {
            return Err(format!("{at} ({ty}): unknown field {f:?} (expected type and {cfg})"));
        }
        let terminal = match t {
            0 => Some(forward_group(obj, &at)?),
            1 => Some(redirect(obj, &at)?),
            2 => Some(fixed_response(obj, &at)?),
            3 => {
                set.filters.push(insert_header(obj, &at)?);
                None
            }
            4 => {
                set.filters.push(remove_header(obj, &at)?);
                None
            }
            _ => {
                set.filters.push(traffic_mirror(obj, &at, &mut found)?);
                None
            }
        };
        if let Some(a) = terminal {
            if set.terminal.is_some() {
                return Err(format!("{at} ({ty}): only one of ForwardGroup, Redirect, FixedResponse per rule"));
            }
            set.terminal = Some(a);
        }
    }
    Ok((set, found.cloud_groups))
}

pub(super) fn parse_all(cx: &mut Cx, settings: &Settings) -> BTreeMap<String, ActionSet> {
    let mut out = BTreeMap::new();
    for (svc, v) in cx.family("actions.") {
        if svc.is_empty() {
            continue;
        }
        let key = format!("actions.{svc}");
        match parse_actions(&v) {
            Ok((set, cloud)) => {
                for id in cloud {
                    cx.note(format!("{PREFIX}{key}"), format!("TrafficMirror serverGroupID {id} is an ALB server group (ECS, other VPCs, IDC): not mirrored to; the Service tuples are"));
                }
                let bad = match (&set.terminal, set.filters.iter().any(|f| matches!(f, Filter::TrafficMirror(_)))) {
                    (Some(Action::Redirect(_)), _) => Some("Redirect"),
                    (Some(Action::FixedResponse(_)), _) => Some("FixedResponse"),
                    (_, true) => Some("TrafficMirror"),
                    _ => None,
                };
                if let (true, Some(b)) = (settings.ssl_redirect, bad) {
                    cx.field_error(format!("{PREFIX}{key}"), format!("{b} cannot be combined with {PREFIX}ssl-redirect (it works only alongside InsertHeader/RemoveHeader actions and CORS)"));
                }
                out.insert(svc, set);
            }
            Err(e) => cx.field_error(format!("{PREFIX}{key}"), e),
        }
    }
    out
}

#[cfg(test)]
mod tests;
