//! Golden tests: every example table and example YAML of `shared/reference/alb-*.txt`,
//! parsed and checked against the typed result and the matching/rewrite functions.
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use lb_userspace::annotations::alb::*;

use crate::support::{errs, matches, parse as parse_ann, rewrite, select, selects};

fn yaml(text: &str) -> IngressParse {
    let ing: Ingress = serde_yaml_ng::from_str(text).expect("Ingress YAML");
    parse_ingress(&ing)
}

fn ok(text: &str) -> IngressParse {
    let p = yaml(text);
    assert!(p.is_ok(), "{:?}", p.errors);
    p
}

/// Rules for `paths` (in this order) of one pathType, no host.
fn rules_for(path_type: &str, paths: &[&str]) -> Vec<Rule> {
    let items: String = paths
        .iter()
        .map(|p| format!("    - {{path: '{p}', pathType: {path_type}, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"))
        .collect();
    let p = parse_ann(&[], &format!("rules:\n- http:\n    paths:\n{items}"));
    assert!(p.is_ok(), "{:?}", p.errors);
    let mut r = p.rules;
    sort_rules(&mut r);
    r
}

// ---- "Path matching reference" ----

#[test]
fn golden_simple_paths() {
    let table: &[(&str, &str, &[&str], bool)] = &[
        ("Prefix", "/", &["/", "/foo", "/foo/bar", "/anything/at/all"], true),
        ("Prefix", "/foo", &["/foo", "/foo/"], true),
        ("Prefix", "/foo/", &["/foo", "/foo/"], true),
        ("Prefix", "/aaa", &["/ccc"], false),
        ("Exact", "/foo", &["/foo"], true),
        ("ImplementationSpecific", "/foo", &["/foo"], true),
        ("Exact", "/foo", &["/bar", "/foo/"], false),
        ("ImplementationSpecific", "/foo", &["/bar", "/foo/"], false),
        ("Exact", "/foo/", &["/foo"], false),
        ("ImplementationSpecific", "/foo/", &["/foo"], false),
    ];
    for (ty, rule, requests, want) in table {
        let rules = rules_for(ty, &[rule]);
        for req in *requests {
            assert_eq!(matches(&rules[0], "any.host", req).is_some(), *want, "{ty} {rule} vs {req}");
        }
    }
}

#[test]
fn golden_hierarchical_paths() {
    let table: &[(&str, &str, bool)] = &[
        ("/aaa/bb", "/aaa/bbb", false),
        ("/aaa/bbb", "/aaa/bbb", true),
        ("/aaa/bbb/", "/aaa/bbb", true),
        ("/aaa/bbb", "/aaa/bbb/", true),
        ("/aaa/bbb", "/aaa/bbb/ccc", true),
    ];
    for (rule, req, want) in table {
        let rules = rules_for("Prefix", &[rule]);
        assert_eq!(matches(&rules[0], "h", req).is_some(), *want, "{rule} vs {req}");
    }
}

#[test]
fn golden_multiple_rule_paths() {
    // (rule paths in order, request, the rule path that wins or None)
    let table: &[(&[&str], &str, Option<&str>)] = &[
        (&["/", "/aaa"], "/aaa/ccc", Some("/")),
        (&["/aaa", "/"], "/aaa/ccc", Some("/aaa")),
        (&["/aaa", "/"], "/ccc", Some("/")),
        (&["/aaa", "/bbb"], "/ccc", None),
    ];
    for (paths, req, want) in table {
        let rules = rules_for("Prefix", paths);
        let got = select(&rules, "h", req).map(|(r, _)| r.path.path.as_str());
        assert_eq!(got, *want, "{paths:?} vs {req}");
    }
}

// ---- "Regex flags" and "Matching behavior" ----

#[test]
fn golden_regex_flags() {
    let cond = |ty: &str, v: &str| {
        let cfg = if ty == "Host" { "hostConfig" } else { "pathConfig" };
        format!(r#"[{{"type": "{ty}", "{cfg}": {{"values": ["{v}"]}}}}]"#)
    };
    // (object, rule, request, match)
    let table: &[(&str, &str, &str, bool)] = &[
        ("Host", "~test.example.com", "test.EXAMPLE.com", true),
        ("Path", "~/api", "/API", true),
        ("Path", "~*/api", "/Api", false),
        ("Path", "~*/api", "/api", true),
        ("Path", "/pathvalue2", "/pathvalue2", true),
        ("Path", "/pathvalue2", "/pathvalue2/x", false),
        // "contains" by default; ^ anchors.
        ("Path", "~*/api", "/v1/api/x", true),
        ("Path", "~*^/api", "/v1/api/x", false),
        ("Path", "~*^/api", "/api/x", true),
    ];
    for (obj, rule, req, want) in table {
        let c = cond(obj, rule);
        let p = parse_ann(
            &[(&crate::support::k("use-regex"), "true"), (&crate::support::k("conditions.svc"), &c)],
            "rules:\n- http:\n    paths:\n    - {path: /x, pathType: Prefix, backend: {service: {name: svc, port: {number: 80}}}}\n",
        );
        assert!(p.is_ok(), "{:?}", p.errors);
        let (host, path) = if *obj == "Host" { (*req, "/x") } else { ("h", *req) };
        assert_eq!(matches(&p.rules[0], host, path).is_some(), *want, "{obj} {rule} vs {req}");
    }
}

const USE_REGEX_1: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
    alb.ingress.kubernetes.io/use-regex: "true"
    alb.ingress.kubernetes.io/conditions.demo-svc: |
      [{
        "type": "Path",
        "pathConfig": {
          "values": [
            "~*/pathvalue1",
            "/pathvalue2"
          ]
        }
      }]
  name: ingress-example
spec:
  ingressClassName: alb
  rules:
  - http:
      paths:
      - path: /test-path-for-alb
        pathType: Prefix
        backend:
          service:
            name: demo-svc
            port:
              number: 88
"#;

#[test]
fn golden_use_regex_examples() {
    let p = ok(USE_REGEX_1);
    let r = &p.rules[0];
    assert_eq!(r.service, ServiceRef { name: "demo-svc".into(), port: ServicePort::Number(88) });
    assert!(matches!(r.path.matcher, PathMatch::Regex(_)));
    assert_eq!(r.conditions.len(), 1);
    assert!(matches(r, "h", "/pathvalue2").is_some());
    assert!(matches(r, "h", "/a/pathvalue1/b").is_some());
    assert!(matches(r, "h", "/PATHVALUE1").is_none());
    assert!(matches(r, "h", "/pathvalue2/b").is_none());
    let p = ok(&USE_REGEX_1.replace("~*/pathvalue1", "~*^/pathvalue1"));
    assert!(matches(&p.rules[0], "h", "/pathvalue1/b").is_some());
    assert!(matches(&p.rules[0], "h", "/a/pathvalue1").is_none());
}

// ---- "Configure rewrite" examples ----

fn rewrite_ingress(target: &str, paths: &[&str]) -> String {
    let items: String = paths
        .iter()
        .map(|p| format!("      - path: {p}\n        pathType: Prefix\n        backend:\n          service:\n            name: rewrite-svc\n            port:\n              number: 9080\n"))
        .collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: rewrite-ingress\n  annotations:\n    alb.ingress.kubernetes.io/use-regex: \"true\"\n    alb.ingress.kubernetes.io/rewrite-target: {target}\nspec:\n  ingressClassName: alb\n  rules:\n  - host: demo.alb.ingress.top\n    http:\n      paths:\n{items}"
    )
}

fn check_rewrites(p: &IngressParse, table: &[(&str, Option<&str>)]) {
    for (path, want) in table {
        let got = select(&p.rules, "demo.alb.ingress.top", path).map(|(r, c)| rewrite(r, &c));
        assert_eq!(got.as_deref(), *want, "{path}");
    }
}

#[test]
fn golden_rewrite_example_1_strip_prefix() {
    let p = ok(&rewrite_ingress("/${2}", &["/something(/|$)(.*)"]));
    assert_eq!(p.rules[0].rewrite.as_deref(), Some("/${2}"));
    check_rewrites(
        &p,
        &[
            ("/something", Some("/")),
            ("/something/", Some("/")),
            ("/something/new", Some("/new")),
            ("/something-new/item", None),
        ],
    );
}

#[test]
fn golden_rewrite_example_2_rearrange_segments() {
    let p = ok(&rewrite_ingress("/${2}?code=${3}", &["/items/(.*)/(.*)/(.*)"]));
    check_rewrites(
        &p,
        &[
            ("/items/electronics/computers/554", Some("/computers?code=554")),
            ("/items/produce/fruits/12", Some("/fruits?code=12")),
            ("/items/headphones/5", None),
            ("/drinks/41", None),
        ],
    );
}

#[test]
fn golden_rewrite_example_3_many_paths_to_one() {
    let p = ok(&rewrite_ingress("/app-c/${2}", &["/app-a(/|$)(.*)", "/app-b(/|$)(.*)"]));
    assert_eq!(p.rules.len(), 2);
    check_rewrites(
        &p,
        &[
            ("/app-a/item1", Some("/app-c/item1")),
            ("/app-a/item2", Some("/app-c/item2")),
            ("/app-a", Some("/app-c/")),
            ("/app-a/", Some("/app-c/")),
            ("/app-b/x", Some("/app-c/x")),
            ("/drinks/41", None),
        ],
    );
}

// ---- Every other example Ingress of alb-ingress-advanced-annotations.txt ----

/// An Ingress `name` with `annotations` (YAML lines under `annotations:`) and `spec`.
fn example(annotations: &str, spec: &str) -> String {
    let ann: String =
        annotations.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("    {}\n", l.trim())).collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: example\n  namespace: default\n  annotations:\n{ann}spec:\n  ingressClassName: alb\n{spec}"
    )
}

const TEA: &str = "  rules:\n  - host: demo.alb.ingress.top\n    http:\n      paths:\n      - path: /tea\n        pathType: ImplementationSpecific\n        backend:\n          service:\n            name: tea-svc\n            port:\n              number: 80\n";
const ROOT: &str = "  rules:\n  - host: demo.alb.ingress.top\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: cloud-nodeport\n            port:\n              number: 80\n";

#[test]
fn golden_ssl_redirect_example() {
    let spec = "  tls:\n  - hosts:\n    - ssl.alb.ingress.top\n  rules:\n  - host: ssl.alb.ingress.top\n    http:\n      paths:\n      - backend:\n          service:\n            name: demo-service-ssl\n            port:\n              number: 80\n        path: /\n        pathType: Prefix\n";
    let p = ok(&example("alb.ingress.kubernetes.io/ssl-redirect: \"true\"", spec));
    assert!(p.rules[0].ssl_redirect);
    assert_eq!(
        p.listeners,
        vec![
            ListenPort { protocol: ListenProtocol::Http, port: 80 },
            ListenPort { protocol: ListenProtocol::Https, port: 443 }
        ]
    );
    assert_eq!(p.tls, vec![TlsHosts { hosts: vec!["ssl.alb.ingress.top".into()], secret_name: None }]);
    assert_eq!(p.not_applicable.len(), 1, "certificate discovery: {:?}", p.not_applicable);
}

#[test]
fn golden_backend_protocol_grpc_example() {
    let spec = "  tls:\n  - hosts:\n    - demo.alb.ingress.top\n  rules:\n  - host: demo.alb.ingress.top\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: grpc-demo-svc\n            port:\n              number: 9080\n";
    let p = ok(&example("alb.ingress.kubernetes.io/backend-protocol: \"grpc\"", spec));
    assert_eq!(p.rules[0].backend.protocol, BackendProtocol::Grpc);
    let p = ok(&example("alb.ingress.kubernetes.io/backend-protocol: \"https\"", spec));
    assert_eq!(p.rules[0].backend.protocol, BackendProtocol::Https);
}

#[test]
fn golden_listen_ports_example() {
    let spec = format!("  tls:\n  - hosts:\n    - demo.alb.ingress.top\n{TEA}");
    let p = ok(&example(r#"alb.ingress.kubernetes.io/listen-ports: '[{"HTTP": 80},{"HTTPS": 443}]'"#, &spec));
    assert_eq!(
        p.listeners,
        vec![
            ListenPort { protocol: ListenProtocol::Http, port: 80 },
            ListenPort { protocol: ListenProtocol::Https, port: 443 }
        ]
    );
    assert_eq!(p.rules[0].path.matcher, PathMatch::Exact("/tea".into()));
}

#[test]
fn golden_order_example() {
    let p = ok(&example("alb.ingress.kubernetes.io/order: \"2\"", TEA));
    assert_eq!((p.order, p.rules[0].order), (2, 2));
}

const HELLO: &str = "  rules:\n  - http:\n      paths:\n      - backend:\n          service:\n            name: demo-service-hello\n            port:\n              number: 80\n        path: /hello\n        pathType: ImplementationSpecific\n";

#[test]
fn golden_canary_examples() {
    let p = ok(&example(
        "alb.ingress.kubernetes.io/order: \"1\"\nalb.ingress.kubernetes.io/canary: \"true\"\nalb.ingress.kubernetes.io/canary-by-header: \"location\"\nalb.ingress.kubernetes.io/canary-by-header-value: \"hz\"",
        HELLO,
    ));
    let c = p.rules[0].canary.clone().unwrap();
    assert_eq!(c.header, Some(("location".into(), "hz".into())));
    assert!(selects(&c, |n| (n == "location").then_some("hz"), |_| None, 99));
    assert!(!selects(&c, |n| (n == "location").then_some("sh"), |_| None, 0));
    let p = ok(&example(
        "alb.ingress.kubernetes.io/order: \"2\"\nalb.ingress.kubernetes.io/canary: \"true\"\nalb.ingress.kubernetes.io/canary-by-cookie: \"demo\"",
        HELLO,
    ));
    let c = p.rules[0].canary.clone().unwrap();
    assert_eq!((c.cookie.as_deref(), p.order), (Some("demo"), 2));
    assert!(selects(&c, |_| None, |n| (n == "demo").then_some("always"), 99));
    assert!(!selects(&c, |_| None, |n| (n == "demo").then_some("never"), 0));
}

#[test]
fn golden_sticky_session_example() {
    let spec = "  rules:\n  - http:\n      paths:\n      - backend:\n          service:\n            name: tea-svc\n            port:\n              number: 80\n        path: /tea2\n        pathType: ImplementationSpecific\n      - backend:\n          service:\n            name: coffee-svc\n            port:\n              number: 80\n        path: /coffee2\n        pathType: ImplementationSpecific\n";
    let p = ok(&example(
        "alb.ingress.kubernetes.io/sticky-session: \"true\"\nalb.ingress.kubernetes.io/sticky-session-type: \"Insert\"\nalb.ingress.kubernetes.io/cookie-timeout: \"1800\"\nalb.ingress.kubernetes.io/cookie: \"test\"",
        spec,
    ));
    assert_eq!(p.rules.len(), 2);
    for r in &p.rules {
        assert_eq!(r.backend.sticky, Some(StickySession::Insert { timeout_s: 1800 }));
    }
}

#[test]
fn golden_scheduler_example() {
    let p = ok(&example(
        "alb.ingress.kubernetes.io/backend-scheduler: \"uch\"\nalb.ingress.kubernetes.io/backend-scheduler-uch-value: \"test\"",
        TEA,
    ));
    assert_eq!(p.rules[0].backend.scheduler, Scheduler::Uch { parameter: "test".into() });
}

#[test]
fn golden_cors_example() {
    let p = ok(&example(
        "alb.ingress.kubernetes.io/enable-cors: \"true\"\nalb.ingress.kubernetes.io/cors-allow-origin: \"https://example.com:4443, http://aliyundoc.com\"\nalb.ingress.kubernetes.io/cors-allow-methods: \"GET,POST\"\nalb.ingress.kubernetes.io/cors-allow-credentials: \"true\"\nalb.ingress.kubernetes.io/cors-max-age: \"600\"\nalb.ingress.kubernetes.io/cors-expose-headers: \"\"",
        ROOT,
    ));
    let c = p.rules[0].cors.clone().unwrap();
    assert_eq!(c.allow_origins, vec!["https://example.com:4443", "http://aliyundoc.com"]);
    assert_eq!(
        (c.allow_methods, c.allow_credentials, c.max_age_s, c.expose_headers),
        (vec!["GET".to_owned(), "POST".into()], true, 600, vec![])
    );
}

#[test]
fn golden_backend_examples() {
    let p = ok(&example("alb.ingress.kubernetes.io/backend-keepalive: \"true\"", ROOT));
    assert!(p.rules[0].backend.keepalive);
    let ipv6 = "  rules:\n  - host: demo.alb.ingress.top\n    http:\n      paths:\n      - path: /tea\n        pathType: Prefix\n        backend:\n          service:\n            name: tea-svc\n            port:\n              number: 80\n";
    let p = ok(&example("alb.ingress.kubernetes.io/enable-ipv6: \"true\"", ipv6));
    assert!(p.rules[0].backend.ipv6);
    let p = ok(&example(
        "alb.ingress.kubernetes.io/slow-start-enabled: \"true\"\nalb.ingress.kubernetes.io/slow-start-duration: \"100\"",
        ROOT,
    ));
    assert_eq!(p.rules[0].backend.slow_start_s, Some(100));
    let p = ok(&example(
        "alb.ingress.kubernetes.io/connection-drain-enabled: \"true\"\nalb.ingress.kubernetes.io/connection-drain-timeout: \"199\"",
        ROOT,
    ));
    assert_eq!(p.rules[0].backend.drain_timeout_s, Some(199));
    let p = ok(&example("alb.ingress.kubernetes.io/cross-zone-enabled: \"false\"", ROOT));
    assert_eq!(
        p.not_applicable.iter().map(|n| n.annotation.as_str()).collect::<Vec<_>>(),
        vec!["alb.ingress.kubernetes.io/cross-zone-enabled"]
    );
}

#[test]
fn golden_quick_reference_defaults() {
    // The "Annotation quick reference" defaults, with every switch on and nothing else.
    let p = ok(&example(
        "alb.ingress.kubernetes.io/healthcheck-enabled: \"true\"\nalb.ingress.kubernetes.io/sticky-session: \"true\"\nalb.ingress.kubernetes.io/enable-cors: \"true\"\nalb.ingress.kubernetes.io/slow-start-enabled: \"true\"\nalb.ingress.kubernetes.io/connection-drain-enabled: \"true\"",
        ROOT,
    ));
    let r = &p.rules[0];
    let h = r.backend.health_check.clone().unwrap();
    assert_eq!(
        (
            h.path.as_str(),
            h.protocol,
            h.http_version,
            h.method,
            h.codes,
            h.timeout_s,
            h.interval_s,
            h.healthy_threshold,
            h.unhealthy_threshold,
            h.port
        ),
        (
            "/",
            HealthCheckProtocol::Http,
            HttpVersion::Http11,
            HealthCheckMethod::Head,
            HealthCheckCodes::Http(vec![2]),
            5,
            2,
            3,
            3,
            0
        )
    );
    assert_eq!(r.backend.sticky, Some(StickySession::Insert { timeout_s: 1000 }));
    assert_eq!(r.backend.scheduler, Scheduler::Wrr);
    let c = r.cors.clone().unwrap();
    assert_eq!((c.allow_origins, c.allow_credentials, c.max_age_s), (vec!["*".to_owned()], true, 172800));
    assert_eq!((r.backend.slow_start_s, r.backend.drain_timeout_s, r.order), (Some(30), Some(300), 10));
}

// ---- alb-ingress-forward-actions.txt ----

fn forward_example(groups: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: tea-ingress\n  annotations:\n    alb.ingress.kubernetes.io/actions.forward: |\n      [{{\n          \"type\": \"ForwardGroup\",\n          \"ForwardConfig\": {{\n            \"ServerGroups\" : [{groups}]\n          }}\n      }}]\nspec:\n  ingressClassName: alb\n  rules:\n  - host: demo.domain.ingress.top\n    http:\n      paths:\n      - path: /path\n        pathType: Prefix\n        backend:\n          service:\n            name: forward\n            port:\n              name: use-annotation\n"
    )
}

fn ws(name: &str, weight: u32) -> WeightedService {
    WeightedService { service: ServiceRef { name: name.into(), port: ServicePort::Number(80) }, weight }
}

#[test]
fn golden_forward_scenario_1_multiple_services() {
    let p = ok(&forward_example(
        r#"{"ServiceName": "tea-svc", "Weight": 80, "ServicePort": 80}, {"ServiceName": "coffee-svc", "Weight": 20, "ServicePort": 80}"#,
    ));
    assert_eq!(
        p.rules[0].action,
        Action::Forward { groups: vec![ws("tea-svc", 80), ws("coffee-svc", 20)], sticky: None }
    );
    assert_eq!(p.rules[0].service.port, ServicePort::Name("use-annotation".into()));
    assert!(p.not_applicable.is_empty());
}

#[test]
fn golden_forward_scenarios_2_to_4_server_group_ids() {
    for (a, b) in
        [("sgp-71aexb9y93ypo*****", "sgp-slygpbvm2cydo*****"), ("sgp-ihydxb9y93ypo*****", "sgp-pd0ipbvm2cydo*****")]
    {
        let p = ok(&forward_example(&format!(
            r#"{{"ServiceName": "tea-svc", "Weight": 30, "ServicePort": 80}}, {{"ServiceName": "coffee-svc", "Weight": 20, "ServicePort": 80}}, {{"ServerGroupID": "{a}", "Weight": 30}}, {{"ServerGroupID": "{b}", "Weight": 20}}"#
        )));
        assert_eq!(
            p.rules[0].action,
            Action::Forward { groups: vec![ws("tea-svc", 30), ws("coffee-svc", 20)], sticky: None }
        );
        assert_eq!(p.not_applicable.len(), 2);
        assert!(p.not_applicable[0].reason.contains(a));
        assert_eq!(p.not_applicable[0].annotation, "alb.ingress.kubernetes.io/actions.forward");
    }
}

// ---- alb-multi-cluster-gateway.txt ----

const GATEWAY: &str = r#"
apiVersion: alibabacloud.com/v1
kind: AlbConfig
metadata:
  name: ackone-gateway-demo
  annotations:
    # Add associated clusters that are used to handle traffic to the ALB multi-cluster instance.
    alb.ingress.kubernetes.io/remote-clusters: ${cluster1},${cluster2}
spec:
  config:
    name: one-alb-demo
    addressType: Internet
    addressAllocatedMode: Fixed
    zoneMappings:
    - vSwitchId: ${vsw-id1}
    - vSwitchId: ${vsw-id2}
  listeners:
  - port: 8001
    protocol: HTTP
"#;

const GATEWAY_CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: alb\nspec:\n  controller: ingress.k8s.alibabacloud/alb\n  parameters:\n    apiGroup: alibabacloud.com\n    kind: AlbConfig\n    name: ackone-gateway-demo\n";

#[test]
fn golden_multi_cluster_gateway_albconfig_and_class() {
    // The placeholders are to be replaced, as the reference says; left in, the cluster IDs
    // are rejected.
    let e = parse_albconfig_yaml(GATEWAY).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].annotation, "alb.ingress.kubernetes.io/remote-clusters");
    let filled = GATEWAY
        .replace("${cluster1}", "c6a1")
        .replace("${cluster2}", "cdb2")
        .replace("${vsw-id1}", "vsw-1")
        .replace("${vsw-id2}", "vsw-2");
    let c = parse_albconfig_yaml(&filled).unwrap();
    assert_eq!(c.name, "ackone-gateway-demo");
    assert_eq!(c.instance_name.as_deref(), Some("one-alb-demo"));
    assert_eq!(c.address_type, AddressType::Internet);
    assert_eq!(c.zone_mappings, vec!["vsw-1", "vsw-2"]);
    assert_eq!(c.remote_clusters, vec!["c6a1", "cdb2"]);
    assert_eq!(c.listeners.len(), 1);
    assert_eq!((c.listeners[0].port, c.listeners[0].protocol), (8001, ListenProtocol::Http));
    let na: Vec<&str> = c.not_applicable.iter().map(|n| n.annotation.as_str()).collect();
    assert_eq!(
        na,
        vec![
            "alb.ingress.kubernetes.io/remote-clusters",
            "spec.config.addressAllocatedMode",
            "spec.config.addressType",
            "spec.config.name",
            "spec.config.zoneMappings"
        ]
    );

    let class: IngressClass = serde_yaml_ng::from_str(GATEWAY_CLASS).unwrap();
    let class = parse_ingress_class(&class).unwrap().unwrap();
    assert_eq!(class.albconfig, c.name);

    // Every Ingress example listens on 8001, which the gateway has.
    for ing in [MC_1, &MC_1.replace(MC_ANN, MC_2_ANN), &MC_1.replace(MC_ANN, MC_3_ANN), &MC_1.replace(MC_ANN, MC_4_ANN)]
    {
        let p = ok(ing);
        assert!(check_against_albconfig(&p, &c).is_empty());
    }
}

const MC_ANN: &str = "    alb.ingress.kubernetes.io/listen-ports: |\n     [{\"HTTP\": 8001}]\n";
const MC_1: &str = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  annotations:\n    alb.ingress.kubernetes.io/listen-ports: |\n     [{\"HTTP\": 8001}]\n  name: alb-ingress\n  namespace: demo\nspec:\n  ingressClassName: alb\n  rules:\n  - host: alb.ingress.alibaba.com\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service:\n            name: service1\n            port:\n              number: 80\n";
const MC_2_ANN: &str = "    alb.ingress.kubernetes.io/listen-ports: |\n     [{\"HTTP\": 8001}]\n    alb.ingress.kubernetes.io/cluster-weight.c6XXXXXXXXXXXXXXXXXXXXXXXXX: \"100\"\n";
const MC_3_ANN: &str = "    alb.ingress.kubernetes.io/listen-ports: |\n     [{\"HTTP\": 8001}]\n    alb.ingress.kubernetes.io/conditions.service1: |\n     [{\n       \"type\": \"Header\",\n       \"headerConfig\": {\n          \"key\":\"stage\",\n           \"values\": [\n              \"gray\"\n           ]\n       }\n      }]\n    alb.ingress.kubernetes.io/cluster-weight.c6XXXXXXXXXXXXXXXXXXXXXXXXX: \"100\"\n";
const MC_4_ANN: &str = "    alb.ingress.kubernetes.io/listen-ports: |\n     [{\"HTTP\": 8001}]\n    alb.ingress.kubernetes.io/cluster-weight.c6XXXXXXXXXXXXXXXXXXXXXXXXX: \"60\"\n    alb.ingress.kubernetes.io/cluster-weight.cdXXXXXXXXXXXXXXXXXXXXXXXXX: \"40\"\n";

#[test]
fn golden_multi_cluster_ingress_examples() {
    let p = ok(MC_1);
    assert_eq!(p.listeners, vec![ListenPort { protocol: ListenProtocol::Http, port: 8001 }]);
    assert!(p.cluster_weights.is_empty() && p.not_applicable.is_empty());
    let p = ok(&MC_1.replace(MC_ANN, MC_2_ANN));
    assert_eq!(
        p.cluster_weights,
        vec![ClusterWeight { cluster_id: "c6XXXXXXXXXXXXXXXXXXXXXXXXX".into(), weight: 100 }]
    );
    assert_eq!(p.not_applicable.len(), 1);
    let p = ok(&MC_1.replace(MC_ANN, MC_3_ANN));
    assert_eq!(p.rules[0].conditions, vec![Condition::Header { name: "stage".into(), values: vec!["gray".into()] }]);
    let p = ok(&MC_1.replace(MC_ANN, MC_4_ANN));
    assert_eq!(p.cluster_weights.iter().map(|w| w.weight).collect::<Vec<_>>(), vec![60, 40]);
    // "The sum of all cluster weights must equal 100."
    let p = yaml(&MC_1.replace(MC_ANN, &MC_4_ANN.replace("\"40\"", "\"30\"")));
    assert_eq!(
        errs(&p),
        vec![
            "alb.ingress.kubernetes.io/cluster-weight.*: the weights of c6XXXXXXXXXXXXXXXXXXXXXXXXX, cdXXXXXXXXXXXXXXXXXXXXXXXXX sum to 90; they must sum to 100"
        ]
    );
}
