//! `conditions.<service>`: custom forwarding conditions on the rules whose backend is that
//! Service: Host, Path (`~` / `~*` regex flags), Header, QueryString, Method, Cookie and
//! SourceIp. Conditions are ANDed; the values of one condition are ORed. A Host or Path
//! condition replaces the rule's own host or path match.
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Map, Value};

use super::paths::{HostMatch, Settings, host_match};
use super::values::{Pattern, choice, field, header_name, json_str, json_strings, kind, quote, unknown_fields};
use super::{Cx, PREFIX};

/// A path value of a Path condition: exact (no flag) or a regex (`~`, `~*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathValue {
    Exact(String),
    Regex(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Host(Vec<HostMatch>),
    Path(Vec<PathValue>),
    /// Header name (case-insensitive) and the values it may have.
    Header {
        name: String,
        values: Vec<String>,
    },
    /// Query parameters `(key, value)`; any one present matches.
    QueryString(Vec<(String, String)>),
    /// Upper-case method names.
    Method(Vec<String>),
    /// Cookies `(name, value)`; any one present matches.
    Cookie(Vec<(String, String)>),
    SourceIp(Vec<IpNet>),
}

const TYPES: [(&str, Kind); 7] = [
    ("Host", Kind::Host),
    ("Path", Kind::Path),
    ("Header", Kind::Header),
    ("QueryString", Kind::QueryString),
    ("Method", Kind::Method),
    ("Cookie", Kind::Cookie),
    ("SourceIp", Kind::SourceIp),
];

#[derive(Clone, Copy)]
enum Kind {
    Host,
    Path,
    Header,
    QueryString,
    Method,
    Cookie,
    SourceIp,
}

const METHODS: [(&str, ()); 7] =
    [("GET", ()), ("POST", ()), ("PUT", ()), ("DELETE", ()), ("PATCH", ()), ("HEAD", ()), ("OPTIONS", ())];

fn config<'a>(obj: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a Map<String, Value>, String> {
    match field(obj, name) {
        Some(Value::Object(m)) => Ok(m),
        Some(other) => Err(format!("{at}.{name} must be an object, not {}", kind(other))),
        None => Err(format!("{at}.{name} is missing")),
    }
}

/// `[{"key": k, "value": v}, ...]`, keys and values without spaces, `&`, `=`, `;`, `#`.
fn pairs(cfg: &Map<String, Value>, at: &str) -> Result<Vec<(String, String)>, String> {
    let at = format!("{at}.values");
    let Some(Value::Array(items)) = field(cfg, "values") else {
        return Err(format!("{at} must be an array of {{\"key\": ..., \"value\": ...}}"));
    };
    if items.is_empty() {
        return Err(format!("{at} is empty"));
    }
    let mut out = Vec::new();
    for (i, it) in items.iter().enumerate() {
        let Value::Object(o) = it else { return Err(format!("{at}[{i}] must be an object, not {}", kind(it))) };
        let k = json_str(o, "key", &format!("{at}[{i}]"))?;
        let v = json_str(o, "value", &format!("{at}[{i}]"))?;
        for (what, s) in [("key", k), ("value", v)] {
            if s.is_empty() || s.len() > 100 {
                return Err(format!("{at}[{i}].{what} must have 1..=100 characters"));
            }
            if let Some(c) = s.chars().find(|c| !c.is_ascii_graphic() || matches!(c, '&' | '=' | ';' | '#')) {
                return Err(format!("{at}[{i}].{what} {} contains {c:?}", quote(s)));
            }
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

fn path_value(v: &str, regex_on: bool) -> Result<PathValue, String> {
    match Pattern::flagged(v) {
        Some(_) if !regex_on => Err(format!("regex path {} needs {PREFIX}use-regex", quote(v))),
        Some(p) => p.map(PathValue::Regex),
        None if v.starts_with('/') => Ok(PathValue::Exact(v.to_owned())),
        None => Err(format!("path {} must start with / (or ~ / ~* for a regex)", quote(v))),
    }
}

fn one(obj: &Value, i: usize, settings: &Settings) -> Result<Condition, String> {
    let at = format!("condition {i}");
    let Value::Object(obj) = obj else { return Err(format!("{at} must be an object, not {}", kind(obj))) };
    let ty = json_str(obj, "type", &at)?;
    let kind = choice(ty, &TYPES).map_err(|e| format!("{at}: type {e}"))?;
    let cfg_name = match kind {
        Kind::Host => "hostConfig",
        Kind::Path => "pathConfig",
        Kind::Header => "headerConfig",
        Kind::QueryString => "queryStringConfig",
        Kind::Method => "methodConfig",
        Kind::Cookie => "cookieConfig",
        Kind::SourceIp => "sourceIpConfig",
    };
    let extra = unknown_fields(obj, &["type", cfg_name]);
    if let Some(f) = extra.first() {
        return Err(format!("{at} ({ty}): unknown field {f:?} (expected type and {cfg_name})"));
    }
    let cfg = config(obj, cfg_name, &at)?;
    let cat = format!("{at}.{cfg_name}");
    let vals = || json_strings(field(cfg, "values"), &format!("{cat}.values"));
    Ok(match kind {
        Kind::Host => Condition::Host(
            vals()?
                .iter()
                .map(|v| host_match(v, true).map_err(|e| format!("{cat}.values: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        Kind::Path => Condition::Path(
            vals()?
                .iter()
                .map(|v| path_value(v, settings.regex_on()).map_err(|e| format!("{cat}.values: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        Kind::Header => {
            let name = header_name(json_str(cfg, "key", &cat)?, 40).map_err(|e| format!("{cat}.key: {e}"))?;
            let values = vals()?;
            if let Some(v) = values.iter().find(|v| v.len() > 128 || v.chars().any(char::is_control)) {
                return Err(format!(
                    "{cat}.values: {} must be 1..=128 characters without control characters",
                    quote(v)
                ));
            }
            Condition::Header { name, values }
        }
        Kind::QueryString => Condition::QueryString(pairs(cfg, &cat)?),
        Kind::Cookie => Condition::Cookie(pairs(cfg, &cat)?),
        Kind::Method => Condition::Method(
            vals()?
                .into_iter()
                .map(|m| choice(&m, &METHODS).map(|_| m).map_err(|e| format!("{cat}.values: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        Kind::SourceIp => Condition::SourceIp(
            vals()?
                .iter()
                .map(|v| {
                    v.parse::<IpNet>()
                        .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                        .map(|n| n.trunc())
                        .map_err(|_| format!("{cat}.values: {} is not an IP address or CIDR block", quote(v)))
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// One `conditions.<service>` value: a non-empty JSON array of conditions.
pub fn parse_conditions(v: &str, settings: &Settings) -> Result<Vec<Condition>, String> {
    let json: Value = serde_json::from_str(v).map_err(|e| format!("is not JSON: {e}"))?;
    let Value::Array(items) = json else {
        return Err(format!("must be a JSON array of conditions, not {}", kind(&json)));
    };
    if items.is_empty() {
        return Err("lists no condition".into());
    }
    items.iter().enumerate().map(|(i, c)| one(c, i, settings)).collect()
}

pub(super) fn parse_all(cx: &mut Cx, settings: &Settings) -> BTreeMap<String, Vec<Condition>> {
    let mut out = BTreeMap::new();
    for (svc, v) in cx.family("conditions.") {
        if svc.is_empty() {
            continue;
        }
        let key = format!("conditions.{svc}");
        match parse_conditions(&v, settings) {
            Ok(c) => {
                out.insert(svc, c);
            }
            Err(e) => cx.field_error(format!("{PREFIX}{key}"), e),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn on() -> Settings {
        Settings { use_regex: true, ..Settings::default() }
    }

    #[test]
    fn json_field_names_are_case_insensitive() {
        let c =
            parse_conditions(r#"[{"Type": "Header", "HeaderConfig": {"Key": "k", "Values": ["v"]}}]"#, &on()).unwrap();
        assert_eq!(c, vec![Condition::Header { name: "k".into(), values: vec!["v".into()] }]);
    }

    #[test]
    fn invalid_conditions() {
        let table: &[(&str, &str)] = &[
            ("{}", "must be a JSON array of conditions, not an object"),
            ("[]", "lists no condition"),
            (
                r#"[{"type": "header", "headerConfig": {}}]"#,
                "condition 0: type \"header\" is not one of Host, Path, Header, QueryString, Method, Cookie, SourceIp (values are case-sensitive: Header)",
            ),
            (r#"[{"type": "Header"}]"#, "condition 0.headerConfig is missing"),
            (
                r#"[{"type": "Header", "headerConfig": {"key": "k", "values": []}}]"#,
                "condition 0.headerConfig.values is empty",
            ),
            (
                r#"[{"type": "Header", "headerConfig": {"key": "k v", "values": ["x"]}}]"#,
                "condition 0.headerConfig.key: header name \"k v\" contains ' '; use letters, digits, '-' and '_'",
            ),
            (
                r#"[{"type": "Header", "headerConfig": {"key": "k", "values": ["x"]}, "pathConfig": {}}]"#,
                "condition 0 (Header): unknown field \"pathConfig\" (expected type and headerConfig)",
            ),
            (
                r#"[{"type": "Method", "methodConfig": {"values": ["get"]}}]"#,
                "condition 0.methodConfig.values: \"get\" is not one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS (values are case-sensitive: GET)",
            ),
            (
                r#"[{"type": "SourceIp", "sourceIpConfig": {"values": ["10.0.0.0/33"]}}]"#,
                "condition 0.sourceIpConfig.values: \"10.0.0.0/33\" is not an IP address or CIDR block",
            ),
            (
                r#"[{"type": "Path", "pathConfig": {"values": ["~*/a("]}}]"#,
                "condition 0.pathConfig.values: \"/a(\" is not a valid regular expression: regex parse error:\n    /a(\n      ^\nerror: unclosed group",
            ),
            (
                r#"[{"type": "Path", "pathConfig": {"values": ["api"]}}]"#,
                "condition 0.pathConfig.values: path \"api\" must start with / (or ~ / ~* for a regex)",
            ),
            (
                r#"[{"type": "Host", "hostConfig": {"values": ["a_b.com"]}}]"#,
                "condition 0.hostConfig.values: \"a_b.com\" is not a DNS name (label \"a_b\" is not 1..=63 letters, digits or inner hyphens)",
            ),
            (
                r#"[{"type": "Cookie", "cookieConfig": {"values": [{"key": "a=b", "value": "c"}]}}]"#,
                "condition 0.cookieConfig.values[0].key \"a=b\" contains '='",
            ),
            (
                r#"[{"type": "QueryString", "queryStringConfig": {"values": [{"key": "a"}]}}]"#,
                "condition 0.queryStringConfig.values[0].value is missing",
            ),
        ];
        for (v, want) in table {
            assert_eq!(parse_conditions(v, &on()), Err((*want).to_owned()), "{v}");
        }
        assert!(parse_conditions("[", &on()).unwrap_err().starts_with("is not JSON: "));
    }

    #[test]
    fn regex_path_values_need_use_regex() {
        let v = r#"[{"type": "Path", "pathConfig": {"values": ["~/api"]}}]"#;
        assert_eq!(
            parse_conditions(v, &Settings::default()),
            Err(format!("condition 0.pathConfig.values: regex path \"~/api\" needs {PREFIX}use-regex"))
        );
        let ann = [(k("conditions.tea-svc"), v)];
        let pairs: Vec<(&str, &str)> = ann.iter().map(|(a, b)| (a.as_str(), *b)).collect();
        assert_eq!(parse(&pairs, SIMPLE).errors.len(), 1);
    }

    #[test]
    fn conditions_need_a_backend_with_that_service() {
        let v = r#"[{"type": "Header", "headerConfig": {"key": "stage", "values": ["gray"]}}]"#;
        let p = parse(&[(&k("conditions.tea-svc"), v)], SIMPLE);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!(p.rules[0].conditions.len(), 1);
        let p = parse(&[(&k("conditions.coffee-svc"), v)], SIMPLE);
        assert_eq!(
            errs(&p),
            vec![format!("{}: no backend in spec.rules is the Service coffee-svc", k("conditions.coffee-svc"))]
        );
    }
}
