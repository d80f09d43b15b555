//! Test helpers: Ingresses built from annotation pairs and a YAML `spec`, parsed.
use k8s_openapi::api::networking::v1::Ingress;

use super::{IngressParse, parse_ingress};

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

/// Parses with one annotation and returns its errors' reasons.
pub fn reasons_with(suffix: &str, value: &str, extra: &[(&str, &str)], spec: &str) -> Vec<String> {
    let key = k(suffix);
    let mut ann: Vec<(&str, &str)> = vec![(key.as_str(), value)];
    ann.extend_from_slice(extra);
    parse(&ann, spec)
        .errors
        .into_iter()
        .map(|e| format!("{}: {}", e.annotation.trim_start_matches("alb.ingress.kubernetes.io/"), e.reason))
        .collect()
}
