//! Rules parsed from ALB annotations, matched as the proxy matches them: hosts, default
//! backends, conditions, canary precedence, `ssl-redirect`.
use lb_userspace::annotations::alb::*;
use lb_userspace::l7::matching::{Request, condition_holds, cors_allows, redirects_to_https};

use crate::support::*;

#[test]
fn hosts_and_backends() {
    let spec = "rules:\n- host: '*.example.com'\n  http:\n    paths:\n    - path: /\n      pathType: Prefix\n      backend: {service: {name: svc, port: {name: http}}}\n";
    let p = parse(&[], spec);
    assert!(p.is_ok(), "{:?}", p.errors);
    let r = &p.rules[0];
    assert_eq!(r.host, Some(HostMatch::Wildcard("example.com".into())));
    assert_eq!(r.service, ServiceRef { name: "svc".into(), port: ServicePort::Name("http".into()) });
    assert!(matches(r, "a.example.com:8080", "/x").is_some());
    assert!(matches(r, "A.Example.COM.", "/x").is_some());
    assert!(matches(r, "a.b.example.com", "/x").is_none());
    assert!(matches(r, "example.com", "/x").is_none());
    let bad = spec.replace("'*.example.com'", "bad_host");
    assert_eq!(
        errs(&parse(&[], &bad)),
        vec![
            "spec.rules[0].host: \"bad_host\" is not a DNS name (label \"bad_host\" is not 1..=63 letters, digits or inner hyphens)"
        ]
    );
    let res = spec.replace("{service: {name: svc, port: {name: http}}}", "{resource: {kind: Bucket, name: b}}");
    assert_eq!(
        errs(&parse(&[], &res)),
        vec!["spec.rules[0].http.paths[0].backend: only Service backends are supported (not resource backends)"]
    );
}

#[test]
fn default_backend_goes_last() {
    let spec = format!("defaultBackend: {{service: {{name: fallback, port: {{number: 8080}}}}}}\n{SIMPLE}");
    let p = parse(&[], &spec);
    assert!(p.is_ok(), "{:?}", p.errors);
    let mut rules = p.rules.clone();
    rules.reverse();
    sort_rules(&mut rules);
    assert_eq!(rules[0].service.name, "tea-svc");
    assert!(rules[1].default_backend);
    assert_eq!(select(&rules, "demo.alb.ingress.top", "/tea/x").unwrap().0.service.name, "tea-svc");
    assert_eq!(select(&rules, "other.host", "/anything").unwrap().0.service.name, "fallback");
}

#[test]
fn matches_request_checks_every_condition() {
    let cond = r#"[{"type": "Header", "headerConfig": {"key": "stage", "values": ["gray"]}}, {"type": "Method", "methodConfig": {"values": ["GET"]}}]"#;
    let p = parse(&[(&k("conditions.tea-svc"), cond)], SIMPLE);
    let r = &p.rules[0];
    let h = [("Stage", "gray")];
    let req = Request {
        host: "demo.alb.ingress.top",
        path: "/tea",
        method: "GET",
        headers: &h,
        query: "",
        source: "10.0.0.1".parse().unwrap(),
    };
    assert!(matches_request(r, &req).is_some());
    assert!(matches_request(r, &Request { method: "POST", ..req }).is_none());
    assert!(matches_request(r, &Request { headers: &[], ..req }).is_none());
    assert!(select_request(&p.rules, &Request { path: "/coffee", ..req }).is_none());
}

#[test]
fn host_and_path_conditions_replace_the_rules_own() {
    let cond = r#"[{"type": "Host", "hostConfig": {"values": ["~test.example.com"]}}, {"type": "Path", "pathConfig": {"values": ["/only"]}}]"#;
    let p = parse(&[(&k("conditions.tea-svc"), cond)], SIMPLE);
    assert!(p.is_ok(), "{:?}", p.errors);
    let r = &p.rules[0];
    assert!(matches(r, "test.EXAMPLE.com", "/only").is_some());
    assert!(matches(r, "demo.alb.ingress.top", "/only").is_none());
    assert!(matches(r, "test.example.com", "/tea").is_none());
}

#[test]
fn precedence_header_cookie_weight() {
    let c = Canary {
        header: Some(("location".into(), "hz".into())),
        header_pattern: None,
        cookie: Some("demo".into()),
        weight: Some(30),
        weight_total: 100,
    };
    let h = |v: Option<&'static str>| move |n: &str| if n == "location" { v } else { None };
    let ck = |v: Option<&'static str>| move |n: &str| if n == "demo" { v } else { None };
    // Header wins over a cookie that says never.
    assert!(selects(&c, h(Some("hz")), ck(Some("never")), 99));
    // Wrong header value falls through to the cookie.
    assert!(selects(&c, h(Some("sh")), ck(Some("always")), 99));
    assert!(!selects(&c, h(None), ck(Some("never")), 0));
    // Other cookie values fall through to the weight.
    assert!(selects(&c, h(None), ck(Some("maybe")), 29));
    assert!(!selects(&c, h(None), ck(None), 30));
    let w0 = Canary { header: None, header_pattern: None, cookie: None, weight: Some(0), weight_total: 100 };
    assert!(!selects(&w0, h(None), ck(None), 0));
    let w100 = Canary { header: None, header_pattern: None, cookie: None, weight: Some(100), weight_total: 100 };
    assert!(selects(&w100, h(None), ck(None), 99));
}

#[test]
fn every_type_parses() {
    let v = r#"[
        {"type": "Host", "hostConfig": {"values": ["anno.example.com", "*.example.org", "~test.example.com"]}},
        {"type": "Path", "pathConfig": {"values": ["~*^/pathvalue1", "/pathvalue2"]}},
        {"type": "Header", "headerConfig": {"key": "stage", "values": ["gray"]}},
        {"type": "QueryString", "queryStringConfig": {"values": [{"key": "type", "value": "test"}]}},
        {"type": "Method", "methodConfig": {"values": ["GET", "HEAD"]}},
        {"type": "Cookie", "cookieConfig": {"values": [{"key": "user", "value": "tom"}]}},
        {"type": "SourceIp", "sourceIpConfig": {"values": ["192.168.0.0/16", "10.1.1.1"]}}
    ]"#;
    let p = parse(&[(&k("use-regex"), "true"), (&k("conditions.tea-svc"), v)], SIMPLE);
    assert!(p.is_ok(), "{:?}", p.errors);
    let c = p.rules[0].conditions.clone();
    let served = served(&p.rules[0]).conditions;
    assert_eq!(c.len(), 7);
    assert_eq!(c[2], Condition::Header { name: "stage".into(), values: vec!["gray".into()] });
    assert_eq!(c[6], Condition::SourceIp(vec!["192.168.0.0/16".parse().unwrap(), "10.1.1.1/32".parse().unwrap()]));
    let Condition::Path(p) = &c[1] else { panic!() };
    assert_eq!(p[1], PathValue::Exact("/pathvalue2".into()));
    assert!(matches!(&p[0], PathValue::Regex(r) if !r.case_insensitive && r.source == "^/pathvalue1"));

    let headers = [("Stage", "gray"), ("Cookie", "a=b; user=tom")];
    let req = Request {
        host: "anno.example.com",
        path: "/x",
        method: "GET",
        headers: &headers,
        query: "a=1&type=test",
        source: "192.168.3.4".parse().unwrap(),
    };
    assert!(served.iter().all(|c| condition_holds(c, &req)));
    let other = Request {
        method: "POST",
        query: "type=prod",
        source: "172.16.0.1".parse().unwrap(),
        headers: &[("stage", "blue")],
        ..req
    };
    for c in &served[2..] {
        assert!(!condition_holds(c, &other), "{c:?}");
    }
}

#[test]
fn ssl_redirect_applies_to_http_80_only() {
    let tls = format!("tls:\n- hosts: [demo.alb.ingress.top]\n  secretName: s\n{SIMPLE}");
    let p = parse(&[(&k("ssl-redirect"), "true")], &tls);
    assert!(p.is_ok(), "{:?}", p.errors);
    let r = served(&p.rules[0]);
    assert!(redirects_to_https(&r, 80, false) && !redirects_to_https(&r, 443, true));
}

#[test]
fn cors_origins_as_listed_or_one_wildcard_label() {
    let cors = |origins: &str| {
        let p = parse(&[(&k("enable-cors"), "true"), (&k("cors-allow-origin"), origins)], SIMPLE);
        assert!(p.is_ok(), "{:?}", p.errors);
        served(&p.rules[0]).cors.expect("CORS on")
    };
    let c = cors("https://example.com:4443,http://aliyundoc.com");
    assert!(cors_allows(&c, "https://example.com:4443") && !cors_allows(&c, "https://example.com"));
    let c = cors("https://*.example.com");
    assert!(
        cors_allows(&c, "https://a.example.com")
            && !cors_allows(&c, "http://a.example.com")
            && !cors_allows(&c, "https://example.com")
    );
}
