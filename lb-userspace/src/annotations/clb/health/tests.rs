//! Tests of the health check family: ranges, defaults, which listener gets which probe,
//! and the rules between the switches and the HTTP-only fields.
use super::super::testutil::{assert_one_error, assert_one_note, check_range, errors_of, run, tcp, udp};
use super::*;

const HTTP_TCP: [(&str, &str); 2] = [("health-check-type", "http"), ("health-check-uri", "/healthz")];

#[test]
fn defaults_when_absent() {
    let p = run(&[], &[tcp(80)]);
    let hc = &p.config.health_check;
    assert_eq!(*hc, HealthCheck::default());
    assert!(hc.switch && !hc.flag);
    assert_eq!(hc.check_type, HealthCheckType::Tcp);
    assert_eq!((hc.connect_timeout_s, hc.healthy_threshold, hc.unhealthy_threshold, hc.interval_s), (5, 3, 3, 2));
    assert_eq!(hc.http.codes, vec![HttpCodeClass::Http2xx]);
    assert_eq!(hc.http.method, HttpMethod::Head);
    assert_eq!(hc.http.domain, HealthCheckDomain::BackendIp);
    assert_eq!(hc.http.uri, None);
}

#[test]
fn connect_timeout_range() {
    check_range("health-check-connect-timeout", 1, 300, &[], &[tcp(80)], |c| c.health_check.connect_timeout_s.into());
}

#[test]
fn http_timeout_range() {
    check_range("health-check-timeout", 1, 300, &HTTP_TCP, &[tcp(80)], |c| c.health_check.http.timeout_s.into());
}

#[test]
fn healthy_threshold_range() {
    check_range("healthy-threshold", 2, 10, &[], &[tcp(80)], |c| c.health_check.healthy_threshold.into());
}

#[test]
fn unhealthy_threshold_range() {
    check_range("unhealthy-threshold", 2, 10, &[], &[udp(53)], |c| c.health_check.unhealthy_threshold.into());
}

#[test]
fn interval_range() {
    check_range("health-check-interval", 1, 50, &[], &[tcp(80)], |c| c.health_check.interval_s.into());
}

#[test]
fn switch_and_flag_values() {
    assert!(!run(&[("health-check-switch", "off")], &[tcp(80)]).config.health_check.switch);
    assert!(run(&[("health-check-switch", "on")], &[udp(53)]).config.health_check.switch);
    let p = run(&[("health-check-flag", "on"), ("protocol-port", "http:80")], &[tcp(80)]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p.config.health_check.flag);
    assert_one_error(
        &[("health-check-switch", "no")],
        &[tcp(80)],
        "health-check-switch",
        "\"no\" is not one of on, off",
    );
    assert_one_error(
        &[("health-check-type", "udp")],
        &[tcp(80)],
        "health-check-type",
        "\"udp\" is not one of tcp, http",
    );
}

#[test]
fn which_listener_gets_which_probe() {
    use ListenerProtocol::*;
    let hc = HealthCheck::default();
    assert_eq!([Tcp, Udp, Http, Https].map(|l| hc.probe(l)), [Some(Probe::Tcp), Some(Probe::Udp), None, None]);
    let hc = HealthCheck { check_type: HealthCheckType::Http, flag: true, ..HealthCheck::default() };
    assert_eq!(
        [Tcp, Udp, Http, Https].map(|l| hc.probe(l)),
        [Some(Probe::Http), Some(Probe::Udp), Some(Probe::Http), Some(Probe::Http)]
    );
    let hc = HealthCheck { switch: false, flag: true, ..HealthCheck::default() };
    assert_eq!([Tcp, Udp, Http, Https].map(|l| hc.probe(l)), [None, None, Some(Probe::Tcp), Some(Probe::Tcp)]);
}

#[test]
fn the_interval_wins_over_a_shorter_timeout() {
    let hc = HealthCheck { connect_timeout_s: 3, interval_s: 10, ..HealthCheck::default() };
    assert_eq!(hc.timeout_s(ListenerProtocol::Tcp), 10);
    assert_eq!(hc.timeout_s(ListenerProtocol::Udp), 10);
    let hc = HealthCheck { connect_timeout_s: 30, interval_s: 10, ..HealthCheck::default() };
    assert_eq!(hc.timeout_s(ListenerProtocol::Tcp), 30);
    let mut hc = HealthCheck { interval_s: 4, ..HealthCheck::default() };
    hc.http.timeout_s = 2;
    assert_eq!(hc.timeout_s(ListenerProtocol::Http), 4);
}

/// As CLB's listeners: a tcp listener's check waits the connect timeout, an HTTP check too
/// (the reference's table for tcp listeners lists it with `health-check-type: http`); an
/// http/https listener's check waits `health-check-timeout`.
#[test]
fn each_listener_waits_its_own_timeout() {
    let mut hc = HealthCheck {
        check_type: HealthCheckType::Http,
        connect_timeout_s: 8,
        interval_s: 1,
        ..HealthCheck::default()
    };
    hc.http.timeout_s = 20;
    assert_eq!(hc.timeout_s(ListenerProtocol::Tcp), 8);
    assert_eq!(hc.timeout_s(ListenerProtocol::Https), 20);
    let p = run(&[HTTP_TCP[0], HTTP_TCP[1], ("health-check-connect-timeout", "8")], &[tcp(80)]);
    assert!(p.errors.is_empty() && p.not_applicable.is_empty(), "{:?} {:?}", p.errors, p.not_applicable);
    assert_one_note(
        &[HTTP_TCP[0], HTTP_TCP[1], ("health-check-timeout", "8")],
        &[tcp(80)],
        "health-check-timeout",
        "has no effect: it is the timeout of the checks of http/https listeners (tcp/udp listeners wait \
         health-check-connect-timeout), and none of this Service's is checked (health-check-flag on checks them)",
    );
}

#[test]
fn http_check_fields() {
    let p = run(
        &[
            HTTP_TCP[0],
            ("health-check-uri", "/test/index.html?x=1"),
            ("health-check-httpcode", "http_2xx,http_3xx"),
            ("health-check-domain", "www.example.com"),
            ("health-check-method", "get"),
        ],
        &[tcp(80)],
    );
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let h = &p.config.health_check.http;
    assert_eq!(h.uri.as_deref(), Some("/test/index.html?x=1"));
    assert_eq!(h.codes, vec![HttpCodeClass::Http2xx, HttpCodeClass::Http3xx]);
    assert_eq!(h.domain, HealthCheckDomain::Name("www.example.com".into()));
    assert_eq!(h.method, HttpMethod::Get);
    let p =
        run(&[HTTP_TCP[0], HTTP_TCP[1], ("health-check-domain", "$_ip"), ("health-check-method", "head")], &[tcp(80)]);
    assert_eq!(p.config.health_check.http.domain, HealthCheckDomain::BackendIp);
    assert_eq!(p.config.health_check.http.method, HttpMethod::Head);
}

#[test]
fn http_check_invalid_values() {
    let eighty = "a".repeat(80);
    assert!(errors_of(&[HTTP_TCP[0], HTTP_TCP[1], ("health-check-domain", &eighty)], &[tcp(80)]).is_empty());
    let cases: Vec<(&str, String, &str)> = vec![
        ("health-check-uri", "healthz".into(), "\"healthz\" does not start with /"),
        ("health-check-uri", "/a b".into(), "\"/a b\" contains ' '; a URI is printable ASCII without spaces"),
        (
            "health-check-httpcode",
            "http_200".into(),
            "\"http_200\" is not one of http_2xx, http_3xx, http_4xx, http_5xx",
        ),
        ("health-check-httpcode", "http_2xx,http_2xx".into(), "http_2xx is listed twice"),
        ("health-check-httpcode", "http_2xx,".into(), "\"http_2xx,\" has an empty item"),
        (
            "health-check-domain",
            "a_b.com".into(),
            "\"a_b.com\" is neither $_ip nor 1..=80 letters, digits, periods and hyphens",
        ),
        ("health-check-domain", "a".repeat(81), ""),
        ("health-check-method", "GET".into(), "\"GET\" is not one of head, get (values are case-sensitive: get)"),
        ("health-check-method", "post".into(), "\"post\" is not one of head, get"),
    ];
    for (key, value, reason) in &cases {
        let mut pairs = vec![HTTP_TCP[0]];
        if *key != "health-check-uri" {
            pairs.push(HTTP_TCP[1]);
        }
        pairs.push((key, value));
        let errs = errors_of(&pairs, &[tcp(80)]);
        assert_eq!(errs.len(), 1, "{key}={value}: {errs:?}");
        assert!(errs[0].annotation.ends_with(key));
        if !reason.is_empty() {
            assert_eq!(errs[0].reason, *reason);
        }
    }
}

#[test]
fn http_checks_need_a_uri() {
    assert_one_error(
        &[("health-check-type", "http")],
        &[tcp(80)],
        "health-check-type",
        "http requires health-check-uri",
    );
    // With the tcp listener's checks off, no listener gets the HTTP check: no URI needed.
    assert!(errors_of(&[("health-check-type", "http"), ("health-check-switch", "off")], &[tcp(80)]).is_empty());
}

#[test]
fn http_only_fields_need_an_http_check() {
    for (key, value) in [
        ("health-check-uri", "/x"),
        ("health-check-httpcode", "http_2xx"),
        ("health-check-domain", "$_ip"),
        ("health-check-timeout", "10"),
        ("health-check-method", "get"),
    ] {
        if key == "health-check-timeout" {
            continue; // each_listener_waits_its_own_timeout
        }
        assert_one_note(
            &[(key, value)],
            &[tcp(80)],
            key,
            "has no effect: it applies only to HTTP health checks, and health-check-type is not http",
        );
        assert_one_note(
            &[("health-check-type", "http"), ("health-check-switch", "off"), (key, value)],
            &[tcp(80)],
            key,
            "has no effect: it applies only to HTTP health checks, and no listener of this Service gets one \
             (tcp/udp listeners are checked unless health-check-switch is off, http/https listeners only with \
             health-check-flag on)",
        );
    }
    // An http listener gets the HTTP check only with health-check-flag on.
    let http = [("protocol-port", "http:80"), ("health-check-type", "http"), ("health-check-uri", "/")];
    let p = run(&http, &[tcp(80)]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(p.not_applicable.iter().any(|n| n.annotation.ends_with("health-check-uri")), "{:?}", p.not_applicable);
    let p = run(&[http[0], http[1], http[2], ("health-check-flag", "on")], &[tcp(80)]);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.config.health_check.probe(ListenerProtocol::Http), Some(Probe::Http));
}

#[test]
fn switch_flag_and_type_apply_to_their_listeners() {
    assert_one_note(
        &[("health-check-switch", "off"), ("protocol-port", "http:80")],
        &[tcp(80)],
        "health-check-switch",
        "has no effect: it applies only to tcp/udp listeners, and this Service's listeners are http:80",
    );
    assert_one_note(
        &[("health-check-type", "tcp")],
        &[udp(53)],
        "health-check-type",
        "has no effect: it applies only to tcp/http/https listeners, and this Service's listeners are udp:53",
    );
    assert_one_note(
        &[("health-check-flag", "off")],
        &[tcp(80)],
        "health-check-flag",
        "has no effect: the checks of tcp listeners are always on (\"cannot be changed\"; health-check-switch \
         turns them off), and this Service's listeners are tcp:80",
    );
    // "on" is what tcp listeners always have.
    assert!(errors_of(&[("health-check-flag", "on")], &[tcp(80)]).is_empty());
}

#[test]
fn timing_fields_need_a_checked_listener() {
    assert_one_note(
        &[("health-check-switch", "off"), ("health-check-interval", "5")],
        &[tcp(80)],
        "health-check-interval",
        "has no effect: it applies only to health checks, and no listener of this Service gets one (tcp/udp \
         listeners are checked unless health-check-switch is off, http/https listeners only with \
         health-check-flag on)",
    );
    let http_only = [("protocol-port", "http:80"), ("health-check-flag", "on"), HTTP_TCP[0], HTTP_TCP[1]];
    assert_one_note(
        &[http_only[0], http_only[1], http_only[2], http_only[3], ("health-check-connect-timeout", "5")],
        &[tcp(80)],
        "health-check-connect-timeout",
        "has no effect: it is the timeout of the checks of tcp/udp listeners (http/https listeners wait \
         health-check-timeout), and none of this Service's is checked (they are unless health-check-switch is off)",
    );
    // The tcp listener's HTTP check waits the connect timeout.
    assert!(
        errors_of(&[HTTP_TCP[0], HTTP_TCP[1], ("health-check-connect-timeout", "5")], &[tcp(80), udp(53)]).is_empty()
    );
}

#[test]
fn http_code_classes_contain_their_statuses() {
    assert!(HttpCodeClass::Http2xx.contains(204));
    assert!(!HttpCodeClass::Http2xx.contains(301));
    assert!(HttpCodeClass::Http5xx.contains(503));
    assert!(!HttpCodeClass::Http4xx.contains(40));
}
