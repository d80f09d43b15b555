//! Ingresses built from annotation pairs and a YAML `spec`, parsed; and the request-time
//! functions of `l7::matching` applied to parsed rules (through the route model, as the
//! proxy serves them).
use k8s_openapi::api::networking::v1::Ingress;

use lb_userspace::annotations::alb::{self, IngressParse, parse_ingress};
use lb_userspace::l7::matching::{self, Captures, Request};
use lb_userspace::model::{
    ObjectRef,
    l7::{convert, route},
};

/// One host, one Prefix path to `tea-svc:80`.
pub const SIMPLE: &str = r#"
rules:
- host: demo.alb.ingress.top
  http:
    paths:
    - path: /tea
      pathType: Prefix
      backend: {service: {name: tea-svc, port: {number: 80}}}
"#;

/// An Ingress `default/test` with `annotations` and the YAML `spec`.
pub fn ingress(annotations: &[(&str, &str)], spec: &str) -> Ingress {
    let spec: serde_json::Value = serde_yaml_ng::from_str(spec).expect("spec YAML");
    let ann: serde_json::Map<String, serde_json::Value> =
        annotations.iter().map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v))).collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "test", "namespace": "default", "annotations": ann},
        "spec": spec,
    }))
    .expect("Ingress")
}

pub fn parse(annotations: &[(&str, &str)], spec: &str) -> IngressParse {
    parse_ingress(&ingress(annotations, spec))
}

/// The errors as `key: reason` lines.
pub fn errs(p: &IngressParse) -> Vec<String> {
    p.errors.iter().map(ToString::to_string).collect()
}

/// The annotation key with the ALB prefix.
pub fn k(suffix: &str) -> String {
    format!("alb.ingress.kubernetes.io/{suffix}")
}

/// The rule as the proxy serves it.
pub fn served(r: &alb::Rule) -> route::Rule {
    let source = ObjectRef { kind: "Ingress".into(), namespace: r.namespace.clone(), name: r.ingress.clone() };
    convert::rule(r, &source)
}

pub fn matches(r: &alb::Rule, host: &str, path: &str) -> Option<Captures> {
    matching::matches(&served(r), host, path)
}

pub fn matches_request(r: &alb::Rule, req: &Request<'_>) -> Option<Captures> {
    matching::matches_request(&served(r), req)
}

pub fn select<'a>(rules: &'a [alb::Rule], host: &str, path: &str) -> Option<(&'a alb::Rule, Captures)> {
    rules.iter().find_map(|r| matches(r, host, path).map(|c| (r, c)))
}

pub fn select_request<'a>(rules: &'a [alb::Rule], req: &Request<'_>) -> Option<(&'a alb::Rule, Captures)> {
    rules.iter().find_map(|r| matches_request(r, req).map(|c| (r, c)))
}

pub fn rewrite(r: &alb::Rule, path: &str, c: &Captures) -> String {
    matching::rewrite(&served(r), path, c)
}

/// Whether the canary takes a request (see `matching::canary_selects`).
pub fn selects<'a>(
    c: &alb::Canary,
    header: impl Fn(&str) -> Option<&'a str>,
    cookie: impl Fn(&str) -> Option<&'a str>,
    roll: u32,
) -> bool {
    let c = route::Canary {
        header: c.header.clone(),
        header_pattern: c.header_pattern.as_ref().map(|(n, p)| {
            (
                n.clone(),
                route::Pattern {
                    source: p.source.clone(),
                    case_insensitive: p.case_insensitive,
                    regex: p.regex.clone(),
                },
            )
        }),
        cookie: c.cookie.clone(),
        weight: c.weight,
        weight_total: c.weight_total,
    };
    matching::canary_selects(&c, header, cookie, roll)
}
