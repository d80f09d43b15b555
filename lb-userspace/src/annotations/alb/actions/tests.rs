//! Tests of `actions.rs`.
use super::super::testutil::*;
use super::*;

fn svc(name: &str, port: u16, weight: u32) -> WeightedService {
    WeightedService { service: ServiceRef { name: name.into(), port: ServicePort::Number(port) }, weight }
}

#[test]
fn forward_group_reference_example() {
    let v = r#"[{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [
        {"ServiceName": "tea-svc", "Weight": 80, "ServicePort": 80},
        {"ServiceName": "coffee-svc", "Weight": 20, "ServicePort": 80}]}}]"#;
    let (set, cloud) = parse_actions(v).unwrap();
    assert!(cloud.is_empty() && set.filters.is_empty());
    assert_eq!(
        set.terminal,
        Some(Action::Forward {
            groups: vec![svc("tea-svc", 80, 80), svc("coffee-svc", 80, 20)],
            server_groups: vec![],
            sticky: None
        })
    );
}

#[test]
fn server_group_ids_keep_their_weights_and_win_over_service_names() {
    let v = r#"[{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [
        {"ServiceName": "tea-svc", "Weight": 30, "ServicePort": 80},
        {"ServerGroupID": "sgp-71aexb9y93ypo*****", "Weight": 30},
        {"ServerGroupID": "sgp-both", "ServiceName": "coffee-svc", "ServicePort": 80, "Weight": 40}]}}]"#;
    let (set, cloud) = parse_actions(v).unwrap();
    assert!(cloud.is_empty(), "forward groups resolve their IDs in the model: {cloud:?}");
    let sg = |id: &str, weight| WeightedServerGroup { id: id.into(), weight };
    assert_eq!(
        set.terminal,
        Some(Action::Forward {
            groups: vec![svc("tea-svc", 80, 30)],
            server_groups: vec![sg("sgp-71aexb9y93ypo*****", 30), sg("sgp-both", 40)],
            sticky: None
        })
    );
    let only =
        r#"[{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [{"ServerGroupID": "sgp-1", "Weight": 100}]}}]"#;
    assert!(parse_actions(only).is_ok(), "a group of server groups only: the model maps them");
    let twice = r#"[{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [{"ServerGroupID": "sgp-1", "Weight": 1}, {"ServerGroupID": "sgp-1", "Weight": 2}]}}]"#;
    assert_eq!(
        parse_actions(twice).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups[1]: ServerGroupID sgp-1 is listed twice"
    );
    let zero =
        r#"[{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [{"ServerGroupID": "sgp-1", "Weight": 0}]}}]"#;
    assert!(parse_actions(zero).unwrap_err().contains("every group has weight 0"));
}

#[test]
fn forward_group_weights_and_limits() {
    let group = |w: &str| format!(r#"{{"ServiceName": "s{w}", "ServicePort": 80, "Weight": {w}}}"#);
    let fg = |gs: Vec<String>| {
        format!(r#"[{{"type": "ForwardGroup", "ForwardConfig": {{"ServerGroups": [{}]}}}}]"#, gs.join(","))
    };
    assert!(parse_actions(&fg(vec![group("0"), group("100")])).is_ok());
    assert_eq!(
        parse_actions(&fg(vec![group("101")])).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups[0].Weight: 101 is outside 0..=100"
    );
    assert_eq!(
        parse_actions(&fg(vec![group("-1")])).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups[0].Weight: -1 is outside 0..=100"
    );
    assert_eq!(
        parse_actions(&fg(vec![group("0")])).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups: every group has weight 0; at least one needs a weight above 0"
    );
    let five: Vec<String> = (1..=5).map(|i| group(&i.to_string())).collect();
    assert!(parse_actions(&fg(five.clone())).is_ok());
    let mut six = five;
    six.push(group("6"));
    assert_eq!(
        parse_actions(&fg(six)).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups has 6 server groups; at most 5"
    );
    assert_eq!(parse_actions(&fg(vec![])).unwrap_err(), "action 0.ForwardConfig.ServerGroups is empty");
    assert_eq!(
        parse_actions(&fg(vec![group("1"), group("1")])).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups[1]: Service s1:80 is listed twice"
    );
    assert_eq!(
        parse_actions(&fg(vec![r#"{"ServiceName": "s", "ServicePort": 80}"#.into()])).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups[0].Weight is missing"
    );
    assert_eq!(
        parse_actions(&fg(vec![r#"{"ServiceName": "S_1", "ServicePort": 80, "Weight": 1}"#.into()])).unwrap_err(),
        "action 0.ForwardConfig.ServerGroups[0].ServiceName: \"S_1\" is not a Service name (a DNS-1035 label)"
    );
    let named = fg(vec![r#"{"ServiceName": "s", "ServicePort": "http", "Weight": 1}"#.into()]);
    assert!(
        matches!(parse_actions(&named).unwrap().0.terminal, Some(Action::Forward { ref groups, .. }) if groups[0].service.port == ServicePort::Name("http".into()))
    );
    let sticky = r#"[{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [{"ServiceName": "s", "ServicePort": 80, "Weight": 1}], "ServerGroupStickySession": {"Enabled": true, "Timeout": 86400}}}]"#;
    assert!(matches!(
        parse_actions(sticky).unwrap().0.terminal,
        Some(Action::Forward { sticky: Some(GroupSticky { timeout_s: 86400 }), .. })
    ));
    let bad = sticky.replace("86400", "86401");
    assert!(parse_actions(&bad).unwrap_err().ends_with("ServerGroupStickySession.Timeout: 86401 is outside 1..=86400"));
}

#[test]
fn redirects() {
    let r = |cfg: &str| parse_actions(&format!(r#"[{{"type": "Redirect", "redirectConfig": {cfg}}}]"#));
    let (set, _) = r(r#"{"host": "${host}", "httpCode": "301", "path": "/new", "port": "443", "protocol": "HTTPS", "query": "${query}"}"#).unwrap();
    assert_eq!(
        set.terminal,
        Some(Action::Redirect(Redirect {
            protocol: Some("HTTPS".into()),
            host: None,
            port: Some(443),
            path: Some("/new".into()),
            query: None,
            code: 301
        }))
    );
    assert_eq!(
        r(r#"{"httpCode": "302", "host": "${host}"}"#).unwrap_err(),
        "action 0.redirectConfig redirects to the same URL (every field keeps the request's value)"
    );
    assert_eq!(
        r(r#"{"httpCode": "300", "path": "/x"}"#).unwrap_err(),
        "action 0.redirectConfig.httpCode 300 is not one of 301, 302, 303, 307, 308"
    );
    assert_eq!(
        r(r#"{"path": "/x"}"#).unwrap_err(),
        "action 0.redirectConfig.httpCode is missing (301, 302, 303, 307 or 308)"
    );
    assert_eq!(
        r(r#"{"httpCode": 308, "protocol": "FTP"}"#).unwrap_err(),
        "action 0.redirectConfig.protocol: \"FTP\" is not one of HTTP, HTTPS"
    );
    assert_eq!(
        r(r#"{"httpCode": 308, "port": 0}"#).unwrap_err(),
        "action 0.redirectConfig.port: 0 is outside 1..=65535"
    );
    assert_eq!(
        r(r#"{"httpCode": 308, "path": "x"}"#).unwrap_err(),
        "action 0.redirectConfig.path \"x\" must start with / and have no spaces, ? or #"
    );
    assert_eq!(
        r(r#"{"httpCode": 308, "status": 1}"#).unwrap_err(),
        "action 0.redirectConfig: unknown field \"status\" (known: host, httpCode, path, port, protocol, query)"
    );
}

#[test]
fn fixed_responses() {
    let f = |cfg: &str| parse_actions(&format!(r#"[{{"type": "FixedResponse", "fixedResponseConfig": {cfg}}}]"#));
    let (set, _) = f(r#"{"content": "503 error text", "contentType": "text/plain", "httpCode": "503"}"#).unwrap();
    assert_eq!(
        set.terminal,
        Some(Action::FixedResponse(FixedResponse {
            code: 503,
            content_type: "text/plain".into(),
            content: "503 error text".into()
        }))
    );
    for (code, ok) in [("200", true), ("599", true), ("199", false), ("600", false), ("302", false)] {
        assert_eq!(f(&format!(r#"{{"httpCode": "{code}"}}"#)).is_ok(), ok, "{code}");
    }
    assert_eq!(
        f(r#"{"httpCode": "404", "contentType": "image/png"}"#).unwrap_err(),
        "action 0.fixedResponseConfig.contentType: \"image/png\" is not one of text/plain, text/css, text/html, application/javascript, application/json"
    );
    let big = "x".repeat(1025);
    assert_eq!(
        f(&format!(r#"{{"httpCode": "404", "content": "{big}"}}"#)).unwrap_err(),
        "action 0.fixedResponseConfig.content has 1025 bytes; at most 1024"
    );
    assert!(f(&format!(r#"{{"httpCode": "404", "content": "{}"}}"#, "x".repeat(1024))).is_ok());
}

#[test]
fn header_actions_and_mirror() {
    let v = r#"[
        {"type": "InsertHeader", "insertHeaderConfig": {"key": "source", "value": "alibaba", "valueType": "UserDefined"}},
        {"type": "InsertHeader", "insertHeaderConfig": {"key": "client-ip", "value": "ClientSrcIp", "valueType": "SystemDefined"}},
        {"type": "RemoveHeader", "removeHeaderConfig": {"key": "x-debug"}},
        {"type": "TrafficMirror", "trafficMirrorConfig": {"targetType": "ForwardGroupMirror", "mirrorGroupConfig": {"serverGroupTuples": [{"serviceName": "mirror-svc", "servicePort": 80}]}}}
    ]"#;
    let (set, _) = parse_actions(v).unwrap();
    assert_eq!(set.terminal, None);
    assert_eq!(set.filters.len(), 4);
    assert_eq!(set.filters[2], Filter::RemoveHeader("x-debug".into()));
    assert_eq!(
        set.filters[3],
        Filter::TrafficMirror(vec![ServiceRef { name: "mirror-svc".into(), port: ServicePort::Number(80) }])
    );
    let bad = r#"[{"type": "InsertHeader", "insertHeaderConfig": {"key": "k", "value": "NodeName", "valueType": "SystemDefined"}}]"#;
    assert_eq!(
        parse_actions(bad).unwrap_err(),
        "action 0.insertHeaderConfig.value: \"NodeName\" is not one of ClientSrcPort, ClientSrcIp, Protocol, SLBId, SLBPort"
    );
    let two = r#"[{"type": "FixedResponse", "fixedResponseConfig": {"httpCode": "503"}}, {"type": "Redirect", "redirectConfig": {"httpCode": "301", "path": "/x"}}]"#;
    assert_eq!(
        parse_actions(two).unwrap_err(),
        "action 1 (Redirect): only one of ForwardGroup, Redirect, FixedResponse per rule"
    );
    assert_eq!(
        parse_actions(r#"[{"type": "Forward"}]"#).unwrap_err(),
        "action 0: type \"Forward\" is not one of ForwardGroup, Redirect, FixedResponse, InsertHeader, RemoveHeader, TrafficMirror"
    );
    assert_eq!(parse_actions("[]").unwrap_err(), "lists no action");
}

#[test]
fn actions_need_use_annotation_and_a_matching_backend() {
    let fg = r#"[{"type": "ForwardGroup", "ForwardConfig": {"ServerGroups": [{"ServiceName": "tea-svc", "Weight": 100, "ServicePort": 80}]}}]"#;
    let use_ann = "rules:\n- http:\n    paths:\n    - path: /path\n      pathType: Prefix\n      backend: {service: {name: forward, port: {name: use-annotation}}}\n";
    let p = parse(&[(&k("actions.forward"), fg)], use_ann);
    assert!(p.is_ok(), "{:?}", p.errors);
    assert_eq!(
        p.rules[0].action,
        Action::Forward { groups: vec![svc("tea-svc", 80, 100)], server_groups: vec![], sticky: None }
    );
    let p = parse(&[], use_ann);
    assert_eq!(
        errs(&p),
        vec![format!(
            "spec.rules[0].http.paths[0].backend: port use-annotation needs {PREFIX}actions.forward with a ForwardGroup, Redirect or FixedResponse action"
        )]
    );
    // An action written but rejected: its own error only (not a second one saying it is missing).
    let p = parse(&[(&k("actions.forward"), "[{\"type\": \"Nope\"}]")], use_ann);
    assert_eq!(errs(&p).len(), 1, "{:?}", errs(&p));
    assert!(errs(&p)[0].starts_with(&k("actions.forward")), "{:?}", errs(&p));
    let p = parse(&[(&k("actions.tea-svc"), fg)], SIMPLE);
    assert_eq!(
        errs(&p),
        vec![format!(
            "{}: ForwardGroup needs the rule's backend port to be name: use-annotation (spec.rules[0].http.paths[0])",
            k("actions.tea-svc")
        )]
    );
    let p = parse(&[(&k("actions.other"), fg)], SIMPLE);
    assert_eq!(errs(&p), vec![format!("{}: no backend in spec.rules is the Service other", k("actions.other"))]);
    // A filter alone keeps forwarding to the rule's own Service.
    let ins = r#"[{"type": "RemoveHeader", "removeHeaderConfig": {"key": "x-debug"}}]"#;
    let p = parse(&[(&k("actions.tea-svc"), ins)], SIMPLE);
    assert!(p.is_ok(), "{:?}", p.errors);
    assert_eq!(
        p.rules[0].action,
        Action::Forward { groups: vec![svc("tea-svc", 80, 100)], server_groups: vec![], sticky: None }
    );
    assert_eq!(p.rules[0].filters, vec![Filter::RemoveHeader("x-debug".into())]);
}
