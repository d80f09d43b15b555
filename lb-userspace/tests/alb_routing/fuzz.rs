//! Property tests: no value of any known key (nor any unknown key) makes the parser panic,
//! every error names a key that was written or a field of the spec, parsing is
//! deterministic; the AlbConfig parser survives arbitrary JSON.
use proptest::prelude::*;

use lb_userspace::annotations::alb::*;

use crate::support::{SIMPLE, ingress, matches, rewrite};

/// Every key: the fixed ones and a member of each family.
fn known_key() -> impl Strategy<Value = String> {
    let mut keys: Vec<String> = Key::ALL.iter().map(|k| format!("{PREFIX}{}", k.suffix())).collect();
    keys.extend(
        ["actions.tea-svc", "conditions.tea-svc", "cluster-weight.c1", "cluster-weight.c2", "remote-clusters"]
            .iter()
            .map(|k| format!("{PREFIX}{k}")),
    );
    prop::sample::select(keys)
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_:=,./$~*^(){}\\[\\]\" -]{0,40}",
        "(true|false|[0-9]{1,7}|wrr|uch|grpc|Insert|Server|HTTP|https?://[a-z.]{1,10}(:[0-9]{1,5})?)",
        r#"\[\{"(HTTP|HTTPS|QUIC|TCP)": [0-9]{1,6}\}(,\{"HTTPS": [0-9]{1,5}\})?\]"#,
        r#"\[\{"type": "(ForwardGroup|Redirect|FixedResponse|InsertHeader|Header|Path|Method|SourceIp)", "[a-zA-Z]{0,20}": \{"[a-zA-Z]{0,12}": [0-9a-z"\[\]{}:, ]{0,30}\}\}\]"#,
        r#"\[\{"type": "ForwardGroup", "ForwardConfig": \{"ServerGroups": \[\{"ServiceName": "[a-z-]{0,8}", "ServicePort": [0-9]{1,6}, "Weight": -?[0-9]{1,4}\}\]\}\}\]"#,
        r#"/[a-z(|$).*/]{0,12}\$\{[0-9]\}[a-z?=]{0,6}"#,
    ]
}

fn spec() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(SIMPLE.to_owned()),
        ("[/a-z(|$).*\\[\\]^%]{0,12}", prop::sample::select(vec!["Exact", "Prefix", "ImplementationSpecific"]), prop::sample::select(vec!["number: 80", "name: use-annotation", "name: http"]))
            .prop_map(|(p, t, port)| format!("tls:\n- hosts: [a.example.com]\nrules:\n- host: a.example.com\n  http:\n    paths:\n    - path: '{p}'\n      pathType: {t}\n      backend: {{service: {{name: tea-svc, port: {{{port}}}}}}}\n")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn no_value_panics_and_errors_name_written_keys(
        ann in prop::collection::vec((prop_oneof![4 => known_key(), 1 => "\\PC{0,30}".prop_map(|s| format!("{PREFIX}{s}"))], value()), 0..8),
        spec in spec(),
    ) {
        let pairs: Vec<(&str, &str)> = ann.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let ing = ingress(&pairs, &spec);
        let a = parse_ingress(&ing);
        let b = parse_ingress(&ing);
        prop_assert_eq!(&a, &b);
        for e in &a.errors {
            let written = ann.iter().any(|(k, _)| *k == e.annotation) || e.annotation.starts_with("spec.") || e.annotation == format!("{PREFIX}cluster-weight.*");
            prop_assert!(written, "error names an unwritten key: {e}");
            prop_assert!(!e.reason.is_empty());
        }
        // Every rule's own functions are total too.
        for r in &a.rules {
            if let Some(c) = matches(r, "a.example.com", "/a/b") {
                let _ = rewrite(r, "/a/b", &c);
            }
        }
    }

    #[test]
    fn each_known_key_alone_never_panics(key in known_key(), v in value()) {
        let ing = ingress(&[(key.as_str(), v.as_str())], SIMPLE);
        let p = parse_ingress(&ing);
        for e in &p.errors {
            prop_assert!(e.annotation == key || e.annotation.starts_with("spec.") || e.annotation.ends_with("cluster-weight.*"), "{e}");
        }
    }

    #[test]
    fn albconfig_never_panics(
        port in prop_oneof![any::<i64>().prop_map(serde_json::Value::from), "\\PC{0,6}".prop_map(serde_json::Value::from)],
        proto in "\\PC{0,6}|HTTP|HTTPS|QUIC",
        extra in prop::collection::btree_map("[a-zA-Z]{1,20}", "\\PC{0,10}", 0..3),
        zone in prop::option::of("\\PC{0,10}"),
    ) {
        let mut l = serde_json::json!({"port": port, "protocol": proto});
        for (k, v) in &extra {
            l[k] = serde_json::Value::from(v.clone());
        }
        let mut cfg = serde_json::json!({});
        if let Some(z) = zone {
            cfg["zoneMappings"] = serde_json::json!([{"vSwitchId": z}]);
        }
        let v = serde_json::json!({"apiVersion": "alibabacloud.com/v1", "kind": "AlbConfig", "metadata": {"name": "alb"}, "spec": {"config": cfg, "listeners": [l]}});
        let _ = parse_albconfig(&v);
    }
}

/// Every known key with each of a fixed set of hostile values: no panic, and every error
/// names that key (or a spec field).
#[test]
fn every_known_key_with_hostile_values() {
    let mut keys: Vec<String> = Key::ALL.iter().map(|k| format!("{PREFIX}{}", k.suffix())).collect();
    keys.extend(["actions.tea-svc", "conditions.tea-svc", "cluster-weight.c1"].iter().map(|k| format!("{PREFIX}{k}")));
    let values = [
        "",
        " ",
        "true",
        "false",
        "0",
        "-1",
        "1001",
        "4294967296",
        "99999999999999999999999999",
        "1.5",
        "\u{0}",
        "é",
        "~",
        "~*(",
        "${4}",
        "/${1}${2}${3}",
        "[]",
        "{}",
        "[{}]",
        "[null]",
        "[{\"HTTP\": 80}]",
        "[{\"type\": \"ForwardGroup\"}]",
        "[{\"type\": \"Path\", \"pathConfig\": {\"values\": [\"~*(\"]}}]",
        "[{\"type\": \"Redirect\", \"redirectConfig\": {\"httpCode\": 1e99}}]",
        "null",
        "\"\"",
        "[[[[[[]]]]]]",
        "a,,b",
        ",",
        "http://",
        "https://*.",
        "uch",
        "Server",
    ];
    for key in &keys {
        for v in values {
            for spec in [
                SIMPLE,
                "rules:\n- http:\n    paths:\n    - {path: '/a(.*)', pathType: Prefix, backend: {service: {name: tea-svc, port: {name: use-annotation}}}}\n",
            ] {
                let p = parse_ingress(&ingress(&[(key.as_str(), v)], spec));
                for e in &p.errors {
                    assert!(
                        e.annotation == *key
                            || e.annotation.starts_with("spec.")
                            || e.annotation.ends_with("cluster-weight.*"),
                        "{key}={v:?}: {e}"
                    );
                }
            }
        }
    }
}
