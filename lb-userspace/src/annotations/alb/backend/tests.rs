//! Tests of `backend.rs`.
use super::super::testutil::parse;
use super::super::testutil::*;
use super::*;

fn settings(ann: &[(&str, &str)]) -> (BackendSettings, Vec<String>) {
    let owned: Vec<(String, &str)> = ann.iter().map(|(s, v)| (k(s), *v)).collect();
    let pairs: Vec<(&str, &str)> = owned.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    let p = parse(&pairs, SIMPLE);
    let errs = p.errors.iter().map(|e| format!("{}: {}", e.annotation.trim_start_matches(PREFIX), e.reason)).collect();
    (p.rules[0].backend.clone(), errs)
}

#[test]
fn defaults() {
    let (b, e) = settings(&[]);
    assert!(e.is_empty());
    assert_eq!(b, BackendSettings::default());
    let (b, e) = settings(&[("healthcheck-enabled", "true")]);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(
        b.health_check,
        Some(HealthCheck {
            protocol: HealthCheckProtocol::Http,
            path: "/".into(),
            http_version: HttpVersion::Http11,
            method: HealthCheckMethod::Head,
            codes: HealthCheckCodes::Http(vec![2]),
            timeout_s: 5,
            interval_s: 2,
            healthy_threshold: 3,
            unhealthy_threshold: 3,
            port: 0,
        })
    );
    let (b, _) = settings(&[("sticky-session", "true")]);
    assert_eq!(b.sticky, Some(StickySession::Insert { timeout_s: 1000 }));
    let (b, _) = settings(&[("slow-start-enabled", "true"), ("connection-drain-enabled", "true")]);
    assert_eq!((b.slow_start_s, b.drain_timeout_s), (Some(30), Some(300)));
}

#[test]
fn number_ranges_each_end_and_one_past() {
    let hc = ("healthcheck-enabled", "true");
    type Row<'a> = (&'a str, u32, u32, Option<(&'a str, &'a str)>);
    let table: &[Row] = &[
        ("healthcheck-timeout-seconds", 1, 300, Some(hc)),
        ("healthcheck-interval-seconds", 1, 50, Some(hc)),
        ("healthy-threshold-count", 2, 10, Some(hc)),
        ("unhealthy-threshold-count", 2, 10, Some(hc)),
        ("healthcheck-connect-port", 0, 65535, Some(hc)),
        ("cookie-timeout", 1, 86400, Some(("sticky-session", "true"))),
        ("slow-start-duration", 30, 900, Some(("slow-start-enabled", "true"))),
        ("connection-drain-timeout", 0, 900, Some(("connection-drain-enabled", "true"))),
    ];
    for (key, min, max, gate) in table {
        for n in [*min, *max] {
            let (b, e) = settings(&[gate.unwrap(), (key, &n.to_string())]);
            assert!(e.is_empty(), "{key}={n}: {e:?}");
            let got = match *key {
                "healthcheck-timeout-seconds" => b.health_check.unwrap().timeout_s,
                "healthcheck-interval-seconds" => b.health_check.unwrap().interval_s,
                "healthy-threshold-count" => b.health_check.unwrap().healthy_threshold,
                "unhealthy-threshold-count" => b.health_check.unwrap().unhealthy_threshold,
                "healthcheck-connect-port" => u32::from(b.health_check.unwrap().port),
                "cookie-timeout" => match b.sticky.unwrap() {
                    StickySession::Insert { timeout_s } => timeout_s,
                    s => panic!("{s:?}"),
                },
                "slow-start-duration" => b.slow_start_s.unwrap(),
                _ => b.drain_timeout_s.unwrap(),
            };
            assert_eq!(got, n, "{key}");
        }
        let mut outside = vec![max + 1];
        if *min > 0 {
            outside.push(min - 1);
        }
        for n in outside {
            let (_, e) = settings(&[gate.unwrap(), (key, &n.to_string())]);
            assert_eq!(e, vec![format!("{key}: {n} is outside {min}..={max}")]);
        }
        let (_, e) = settings(&[gate.unwrap(), (key, "1.5")]);
        assert_eq!(e, vec![format!("{key}: \"1.5\" is not a whole number in {min}..={max}")]);
    }
}

/// A setting whose switch is off ("takes effect only when ... is true"): a note, and the
/// Ingress serves without it, as the ALB controller ignores it; switched off or not written.
#[test]
fn gated_settings_without_their_switch_are_notes() {
    for (key, val, gate) in [
        ("healthcheck-path", "/x", "healthcheck-enabled"),
        ("healthy-threshold-count", "3", "healthcheck-enabled"),
        ("sticky-session-type", "Insert", "sticky-session"),
        ("cookie-timeout", "10", "sticky-session"),
        ("slow-start-duration", "100", "slow-start-enabled"),
        ("connection-drain-timeout", "199", "connection-drain-enabled"),
    ] {
        let (kg, kk) = (k(gate), k(key));
        for (written, reason) in [
            (None, format!("has no effect unless {PREFIX}{gate} is \"true\" (it is off by default)")),
            (Some("false"), format!("has no effect while {PREFIX}{gate} is \"false\"")),
        ] {
            let mut ann = vec![(kk.as_str(), val)];
            ann.extend(written.map(|w| (kg.as_str(), w)));
            let p = parse(&ann, SIMPLE);
            assert!(p.errors.is_empty(), "{key}: {:?}", p.errors);
            let note = p.not_applicable.iter().find(|n| n.annotation == kk).expect("a note");
            assert_eq!(note.reason, reason);
        }
    }
}

/// A note on `key` (short name) when `ann` is parsed, and no error.
fn noted(ann: &[(&str, &str)], key: &str) -> String {
    let owned: Vec<(String, &str)> = ann.iter().map(|(s, v)| (k(s), *v)).collect();
    let pairs: Vec<(&str, &str)> = owned.iter().map(|(s, v)| (s.as_str(), *v)).collect();
    let p = parse(&pairs, SIMPLE);
    assert!(p.errors.is_empty(), "{ann:?}: {:?}", p.errors);
    p.not_applicable.iter().find(|n| n.annotation == k(key)).expect("a note").reason.clone()
}

#[test]
fn health_check_enums_and_codes() {
    let on = ("healthcheck-enabled", "true");
    let (b, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-code", "0-5,12")]);
    assert!(e.is_empty(), "{e:?}");
    let h = b.health_check.unwrap();
    assert_eq!((h.method, &h.codes), (HealthCheckMethod::Post, &HealthCheckCodes::Grpc(vec![(0, 5), (12, 12)])));
    assert!(h.codes.accepts(3) && !h.codes.accepts(6) && h.codes.accepts(12));
    let (b, _) = settings(&[on, ("healthcheck-protocol", "GRPC")]);
    assert_eq!(b.health_check.unwrap().codes, HealthCheckCodes::Grpc(vec![(0, 0)]));
    let (b, e) = settings(&[
        on,
        ("healthcheck-httpcode", "http_2xx,http_3xx"),
        ("healthcheck-method", "GET"),
        ("healthcheck-httpversion", "HTTP1.0"),
    ]);
    assert!(e.is_empty(), "{e:?}");
    let h = b.health_check.unwrap();
    assert_eq!((h.method, h.http_version), (HealthCheckMethod::Get, HttpVersion::Http10));
    assert!(h.codes.accepts(204) && h.codes.accepts(302) && !h.codes.accepts(404));
    for (key, val, want) in [
        ("healthcheck-protocol", "UDP", "healthcheck-protocol: \"UDP\" is not one of HTTP, HTTPS, TCP, GRPC"),
        (
            "healthcheck-protocol",
            "http",
            "healthcheck-protocol: \"http\" is not one of HTTP, HTTPS, TCP, GRPC (values are case-sensitive: HTTP)",
        ),
        ("healthcheck-httpversion", "HTTP2", "healthcheck-httpversion: \"HTTP2\" is not one of HTTP1.0, HTTP1.1"),
        ("healthcheck-method", "POST", "healthcheck-method: \"POST\" is not one of HEAD, GET"),
        (
            "healthcheck-httpcode",
            "http_6xx",
            "healthcheck-httpcode: \"http_6xx\" is not one of http_2xx, http_3xx, http_4xx, http_5xx",
        ),
        ("healthcheck-code", "http_2xx,http_2xx", "healthcheck-code: http_2xx is listed twice"),
        ("healthcheck-path", "health", "healthcheck-path: \"health\" must start with / and have at most 80 characters"),
        ("healthcheck-path", "/a b", "healthcheck-path: \"/a b\" contains ' '; use printable ASCII without spaces"),
        ("healthcheck-enabled", "yes", "healthcheck-enabled: \"yes\" is not one of true, false"),
    ] {
        let (_, e) = settings(&[on, (key, val)]);
        assert_eq!(e, vec![want.to_owned()], "{key}={val}");
    }
    let (_, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-code", "0-100")]);
    assert_eq!(e, vec!["healthcheck-code: 100 is outside 0..=99"]);
    let (_, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-code", "5-1")]);
    assert_eq!(e, vec!["healthcheck-code: range 5-1 runs backwards"]);
    let (_, e) = settings(&[on, ("healthcheck-protocol", "GRPC"), ("healthcheck-httpcode", "http_2xx")]);
    assert_eq!(e.len(), 1);
    let (_, e) = settings(&[on, ("healthcheck-protocol", "TCP"), ("healthcheck-path", "/")]);
    assert_eq!(e, vec!["healthcheck-path: has no effect with healthcheck-protocol TCP"]);
    let (_, e) = settings(&[on, ("healthcheck-code", "http_2xx"), ("healthcheck-httpcode", "http_3xx")]);
    assert_eq!(e, vec![format!("healthcheck-httpcode: disagrees with {PREFIX}healthcheck-code; write one of them")]);
    let (_, e) = settings(&[on, ("healthcheck-path", &format!("/{}", "a".repeat(79)))]);
    assert!(e.is_empty());
    let (_, e) = settings(&[on, ("healthcheck-path", &format!("/{}", "a".repeat(80)))]);
    assert_eq!(e.len(), 1);
}

#[test]
fn sticky_session_types() {
    let on = ("sticky-session", "true");
    let (b, e) = settings(&[on, ("sticky-session-type", "Server"), ("cookie", "test")]);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(b.sticky, Some(StickySession::Server { cookie: "test".into() }));
    let (_, e) = settings(&[on, ("sticky-session-type", "Server")]);
    assert_eq!(e, vec![format!("sticky-session-type: Server needs a cookie name in {PREFIX}cookie")]);
    let (_, e) = settings(&[on, ("sticky-session-type", "Server"), ("cookie", "")]);
    assert_eq!(e, vec![format!("sticky-session-type: Server needs a cookie name in {PREFIX}cookie")]);
    let (_, e) = settings(&[on, ("sticky-session-type", "Server"), ("cookie", "a;b")]);
    assert_eq!(e, vec!["cookie: \"a;b\" contains ';'; a cookie name is printable ASCII without ',', ';' or spaces"]);
    let server = [on, ("sticky-session-type", "Server"), ("cookie", "c"), ("cookie-timeout", "10")];
    assert_eq!(noted(&server, "cookie-timeout"), "has no effect: it applies only when sticky-session-type is Insert");
    assert_eq!(settings(&server).0.sticky, Some(StickySession::Server { cookie: "c".into() }));
    // Insert with a cookie name (the reference's example): valid, Insert wins.
    let (b, e) = settings(&[on, ("sticky-session-type", "Insert"), ("cookie-timeout", "1800"), ("cookie", "test")]);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(b.sticky, Some(StickySession::Insert { timeout_s: 1800 }));
    let (_, e) = settings(&[on, ("cookie", "a b")]);
    assert_eq!(e.len(), 1);
    let (_, e) = settings(&[on, ("sticky-session-type", "insert")]);
    assert_eq!(
        e,
        vec!["sticky-session-type: \"insert\" is not one of Insert, Server (values are case-sensitive: Insert)"]
    );
}

#[test]
fn schedulers() {
    for (v, want) in [("wrr", Scheduler::Wrr), ("wlc", Scheduler::Wlc), ("sch", Scheduler::Sch)] {
        let (b, e) = settings(&[("backend-scheduler", v)]);
        assert!(e.is_empty());
        assert_eq!(b.scheduler, want);
    }
    let (b, e) = settings(&[("backend-scheduler", "uch"), ("backend-scheduler-uch-value", "test")]);
    assert!(e.is_empty());
    assert_eq!(b.scheduler, Scheduler::Uch { parameter: "test".into() });
    let (_, e) = settings(&[("backend-scheduler", "uch")]);
    assert_eq!(
        e,
        vec![format!("backend-scheduler: uch needs the URL parameter in {PREFIX}backend-scheduler-uch-value")]
    );
    let wrr = [("backend-scheduler", "wrr"), ("backend-scheduler-uch-value", "x")];
    assert_eq!(
        noted(&wrr, "backend-scheduler-uch-value"),
        "has no effect: it applies only when backend-scheduler is uch"
    );
    assert_eq!(settings(&wrr).0.scheduler, Scheduler::Wrr);
    let (_, e) = settings(&[("backend-scheduler", "uch"), ("backend-scheduler-uch-value", "a=b")]);
    assert_eq!(e, vec!["backend-scheduler-uch-value: \"a=b\" contains '=', which cannot be in a URL parameter name"]);
    let (_, e) = settings(&[("backend-scheduler", "rr")]);
    assert_eq!(e, vec!["backend-scheduler: \"rr\" is not one of wrr, wlc, sch, uch"]);
}

#[test]
fn protocol_keepalive_ipv6_cross_zone() {
    let (b, e) = settings(&[("backend-protocol", "https"), ("backend-keepalive", "true"), ("enable-ipv6", "true")]);
    assert!(e.is_empty());
    assert_eq!((b.protocol, b.keepalive, b.ipv6), (BackendProtocol::Https, true, true));
    let (_, e) = settings(&[("backend-protocol", "grpc")]);
    assert_eq!(e, vec!["backend-protocol: grpc needs TLS: list an HTTPS listener in listen-ports (or add spec.tls)"]);
    let (b, e) = settings(&[("backend-protocol", "grpc"), ("listen-ports", r#"[{"HTTPS": 443}]"#)]);
    assert!(e.is_empty(), "{e:?}");
    assert_eq!(b.protocol, BackendProtocol::Grpc);
    let (_, e) = settings(&[("backend-protocol", "GRPC")]);
    assert_eq!(e, vec!["backend-protocol: \"GRPC\" is not one of http, https, grpc (values are case-sensitive: grpc)"]);
    let p = parse(&[(&k("cross-zone-enabled"), "false")], SIMPLE);
    assert!(p.is_ok());
    assert_eq!(p.not_applicable.len(), 1);
    assert_eq!(p.not_applicable[0].annotation, k("cross-zone-enabled"));
    let p = parse(&[(&k("cross-zone-enabled"), "no")], SIMPLE);
    assert_eq!(errs(&p), vec![format!("{}: \"no\" is not one of true, false", k("cross-zone-enabled"))]);
    assert!(p.not_applicable.is_empty());
}
