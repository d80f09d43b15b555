//! Tables of `alb-ingress-advanced-annotations.txt` as rows (`rows:`), each row an Ingress
//! built from its columns and the requests of the row sent to its rules as served.
//!
//! - Path rows (`pathType`, `paths`, `requests`): one rule per path, in this order, all of
//!   `pathType`, no host, backend `svc:80`. Output per request path (any host): the path of
//!   the rule that takes it, in ALB order, or null.
//! - Regex rows (`object` Host or Path, `rule`, `request`): `use-regex: "true"` and
//!   `conditions.svc` with one condition of that type whose single value is `rule`, on a
//!   rule Prefix `/x` to `svc:80`; the request is `request` as the host (path `/x`) or the
//!   path (any host). Output: whether the rule takes it.
//!
//! A row's output also has `errors` when its Ingress does not parse cleanly.
use k8s_openapi::api::networking::v1::Ingress;
use lb_userspace::annotations::alb::{IngressParse, PREFIX, parse_ingress};
use lb_userspace::l7::matching;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::alb::ordered;

/// Any host, for rules without one.
const ANY_HOST: &str = "any.host";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Row {
    Paths(PathRow),
    Regex(RegexRow),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PathRow {
    path_type: String,
    paths: Vec<String>,
    requests: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexRow {
    object: String,
    rule: String,
    request: String,
}

/// The output of a table: one entry per row.
pub fn table(doc: &Value) -> Value {
    let t: Table = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("table: {e}"));
    t.rows
        .iter()
        .map(|row| match row {
            Row::Paths(r) => path_row(r),
            Row::Regex(r) => regex_row(r),
        })
        .collect()
}

/// An Ingress `default/test` with `annotations` (an object) and `spec`, parsed.
fn parse(annotations: Value, spec: Value) -> IngressParse {
    let ing: Ingress = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "test", "namespace": "default", "annotations": annotations},
        "spec": spec,
    }))
    .expect("an Ingress");
    parse_ingress(&ing)
}

/// `spec.rules` of one rule without host, `paths` (path, pathType) to `svc:80`.
fn spec(paths: &[(&str, &str)]) -> Value {
    let paths: Vec<Value> = paths
        .iter()
        .map(|(path, ty)| {
            json!({"path": path, "pathType": ty, "backend": {"service": {"name": "svc", "port": {"number": 80}}}})
        })
        .collect();
    json!({"rules": [{"http": {"paths": paths}}]})
}

/// `out` with the parse errors, when there are any.
fn with_errors(mut out: Value, p: &IngressParse) -> Value {
    if !p.errors.is_empty() {
        out["errors"] = json!(p.errors);
    }
    out
}

fn path_row(r: &PathRow) -> Value {
    let paths: Vec<(&str, &str)> = r.paths.iter().map(|p| (p.as_str(), r.path_type.as_str())).collect();
    let p = parse(json!({}), spec(&paths));
    let (_, served) = ordered(std::slice::from_ref(&p));
    let requests: Vec<Value> = r
        .requests
        .iter()
        .map(|path| {
            let rule = matching::select(&served, ANY_HOST, path).map(|(rule, _)| rule.path.path.clone());
            json!({"path": path, "rule": rule})
        })
        .collect();
    with_errors(json!({"pathType": r.path_type, "paths": r.paths, "requests": requests}), &p)
}

fn regex_row(r: &RegexRow) -> Value {
    let config = if r.object == "Host" { "hostConfig" } else { "pathConfig" };
    let condition = json!([{"type": r.object, config: {"values": [r.rule]}}]).to_string();
    let annotations = json!({
        format!("{PREFIX}use-regex"): "true",
        format!("{PREFIX}conditions.svc"): condition,
    });
    let p = parse(annotations, spec(&[("/x", "Prefix")]));
    let (_, served) = ordered(std::slice::from_ref(&p));
    let (host, path) = if r.object == "Host" { (r.request.as_str(), "/x") } else { (ANY_HOST, r.request.as_str()) };
    let matches = served.first().is_some_and(|rule| matching::matches(rule, host, path).is_some());
    with_errors(json!({"object": r.object, "rule": r.rule, "request": r.request, "matches": matches}), &p)
}
