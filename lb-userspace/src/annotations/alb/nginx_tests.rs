//! The ingress-nginx keys the ALB controller reads (canary, ssl-redirect), their precedence
//! over the ALB spelling, and the validation rules of issue #18 (QPS range, wildcard paths,
//! typed ForwardGroup weights, canary with custom conditions).
use super::testutil::*;
use super::*;

fn n(suffix: &str) -> String {
    format!("nginx.ingress.kubernetes.io/{suffix}")
}

fn with(pairs: &[(String, &str)], spec: &str) -> IngressParse {
    let refs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    parse(&refs, spec)
}

#[test]
fn an_nginx_canary_by_header_is_read() {
    let p = with(
        &[(n("canary"), "true"), (n("canary-by-header"), "X-Canary"), (n("canary-by-header-value"), "on")],
        SIMPLE,
    );
    assert!(p.is_ok(), "{:?}", errs(&p));
    let c = p.rules[0].canary.clone().unwrap();
    assert_eq!(c.header, Some(("X-Canary".into(), "on".into())));
    assert_eq!((c.weight, c.weight_total), (None, 100));
}

#[test]
fn nginx_wins_over_alb_with_a_notice_for_the_key_not_read() {
    let p = with(
        &[
            (n("canary"), "true"),
            (k("canary"), "true"),
            (n("canary-weight"), "30"),
            (k("canary-weight"), "70"),
            (n("ssl-redirect"), "false"),
            (k("ssl-redirect"), "true"),
        ],
        SIMPLE,
    );
    assert!(p.is_ok(), "{:?}", errs(&p));
    assert_eq!(p.rules[0].canary.as_ref().unwrap().weight, Some(30));
    assert!(!p.rules[0].ssl_redirect);
    for key in ["canary", "canary-weight", "ssl-redirect"] {
        let note = p.not_applicable.iter().find(|x| x.annotation == k(key)).expect(key);
        assert_eq!(note.reason, format!("not read: {} is, as the ALB controller does", n(key)));
    }
    // The two spellings mix key by key, as the controller looks each key up on its own.
    let p = with(&[(n("canary"), "true"), (k("canary-by-cookie"), "demo")], SIMPLE);
    assert_eq!(p.rules[0].canary.as_ref().unwrap().cookie.as_deref(), Some("demo"));
}

#[test]
fn nginx_keys_get_the_same_validation_naming_the_key_as_written() {
    let reasons = |pairs: &[(String, &str)]| -> Vec<String> { errs(&with(pairs, SIMPLE)) };
    assert_eq!(
        reasons(&[(n("canary"), "true"), (n("canary-weight"), "101")]),
        vec![format!("{}: 101 is outside 0..=100", n("canary-weight"))]
    );
    assert_eq!(
        reasons(&[(n("canary-by-header"), "X-Canary"), (n("canary-by-header-value"), "on")]),
        vec![
            format!("{}: needs {}: \"true\" (this Ingress is not a canary)", n("canary-by-header"), k("canary")),
            format!("{}: needs {}: \"true\" (this Ingress is not a canary)", n("canary-by-header-value"), k("canary")),
        ]
    );
    assert_eq!(
        reasons(&[(n("canary"), "true"), (n("canary-by-header"), "X-Canary")]),
        vec![format!(
            "{}: must be configured together with {} or {}",
            n("canary-by-header"),
            k("canary-by-header-value"),
            n("canary-by-header-pattern")
        )]
    );
    assert_eq!(
        reasons(&[(n("canary"), "maybe")]),
        vec![format!("{}: \"maybe\" is not one of true, false", n("canary"))]
    );
    assert_eq!(
        reasons(&[(n("ssl-redirect"), "yes")]),
        vec![format!("{}: \"yes\" is not one of true, false", n("ssl-redirect"))]
    );
}

#[test]
fn header_pattern_and_weight_total() {
    let p = with(
        &[(n("canary"), "true"), (n("canary-by-header"), "X-Region"), (n("canary-by-header-pattern"), "^(hz|sh)$")],
        SIMPLE,
    );
    assert!(p.is_ok(), "{:?}", errs(&p));
    let c = p.rules[0].canary.clone().unwrap();
    let (name, pat) = c.header_pattern.unwrap();
    assert_eq!(name, "X-Region");
    assert!(pat.regex.is_match("hz") && !pat.regex.is_match("bj"));
    // An exact value wins; the pattern is then ignored with a notice.
    let p = with(
        &[
            (n("canary"), "true"),
            (n("canary-by-header"), "X-Region"),
            (n("canary-by-header-value"), "hz"),
            (n("canary-by-header-pattern"), "sh"),
        ],
        SIMPLE,
    );
    let c = p.rules[0].canary.clone().unwrap();
    assert_eq!((c.header.unwrap().1.as_str(), c.header_pattern.is_none()), ("hz", true));
    assert!(p.not_applicable.iter().any(|x| x.annotation == n("canary-by-header-pattern")));
    // weight out of weight-total.
    let p = with(&[(n("canary"), "true"), (n("canary-weight"), "250"), (n("canary-weight-total"), "1000")], SIMPLE);
    let c = p.rules[0].canary.clone().unwrap();
    assert_eq!((c.weight, c.weight_total), (Some(250), 1000));
    let bad: &[(&[(String, &str)], String)] = &[
        (
            &[(n("canary"), "true"), (n("canary-weight"), "50"), (n("canary-weight-total"), "40")],
            format!("{}: 50 is outside 0..=40", n("canary-weight")),
        ),
        (
            &[(n("canary"), "true"), (n("canary-weight"), "0"), (n("canary-weight-total"), "0")],
            format!("{}: 0 is outside 1..=2147483647", n("canary-weight-total")),
        ),
        (
            &[(n("canary"), "true"), (n("canary-by-cookie"), "c"), (n("canary-weight-total"), "10")],
            format!("{}: has no effect without {}", n("canary-weight-total"), k("canary-weight")),
        ),
        (
            &[(n("canary"), "true"), (n("canary-by-header"), "X-A"), (n("canary-by-header-pattern"), "a(")],
            format!("{}: \"a(\" is not a valid regular expression", n("canary-by-header-pattern")),
        ),
        (
            &[(n("canary"), "true"), (n("canary-by-header-pattern"), "a")],
            format!("{}: needs {} (the header name)", n("canary-by-header-pattern"), k("canary-by-header")),
        ),
        (
            &[(k("canary"), "true"), (k("canary-weight-total"), "10"), (k("canary-weight"), "1")],
            format!(
                "{}: unknown annotation; the ALB controller reads only {}",
                k("canary-weight-total"),
                n("canary-weight-total")
            ),
        ),
    ];
    for (pairs, want) in bad {
        let e = errs(&with(pairs, SIMPLE));
        assert!(e.len() == 1 && e[0].starts_with(want.as_str()), "{pairs:?}: {e:?}, want {want}");
    }
}

#[test]
fn canary_with_custom_conditions_is_rejected() {
    let cond = r#"[{"type": "Header", "headerConfig": {"key": "a", "values": ["b"]}}]"#;
    for canary in [k("canary"), n("canary")] {
        let p = with(&[(canary.clone(), "true"), (k("canary-weight"), "10"), (k("conditions.tea-svc"), cond)], SIMPLE);
        assert_eq!(
            errs(&p),
            vec![format!(
                "{}: cannot be combined with {canary}: \"true\" (a canary rule takes no custom conditions; put them on the main Ingress)",
                k("conditions.tea-svc")
            )]
        );
    }
    // Without canary the same conditions are fine.
    assert!(with(&[(k("conditions.tea-svc"), cond)], SIMPLE).is_ok());
}

#[test]
fn wildcards_in_exact_and_prefix_paths_are_rejected() {
    for (path_type, path) in [("Exact", "/tea/*"), ("Prefix", "/*/tea"), ("Prefix", "/tea*")] {
        let spec = SIMPLE.replace("path: /tea", &format!("path: {path}")).replace("Prefix", path_type);
        let p = parse(&[], &spec);
        assert_eq!(
            errs(&p),
            vec![format!(
                "spec.rules[0].http.paths[0].path: \"{path}\" contains '*': pathType {path_type} takes no wildcard (it matches the path literally); for a pattern use alb.ingress.kubernetes.io/use-regex with pathType Prefix"
            )]
        );
    }
    // A regex Prefix path may use `*` as a regex.
    let spec = SIMPLE.replace("path: /tea", "path: /tea/.*");
    assert!(parse(&[(&k("use-regex"), "true")], &spec).is_ok());
}

#[test]
fn forward_group_weight_must_be_a_json_number() {
    let spec = SIMPLE.replace("port: {number: 80}", "port: {name: use-annotation}");
    let action = |w: &str| {
        format!(
            r#"[{{"type": "ForwardGroup", "ForwardConfig": {{"ServerGroups": [{{"ServiceName": "tea-svc", "ServicePort": 80, "Weight": {w}}}]}}}}]"#
        )
    };
    assert!(parse(&[(&k("actions.tea-svc"), &action("100"))], &spec).is_ok());
    let e = errs(&parse(&[(&k("actions.tea-svc"), &action("\"100\""))], &spec));
    let want = format!(
        "{}: action 0.ForwardConfig.ServerGroups[0].Weight must be a number, not a string",
        k("actions.tea-svc")
    );
    assert_eq!(e.first(), Some(&want), "{e:?}");
}

#[test]
fn traffic_limit_qps_is_1_to_100000() {
    assert!(parse(&[(&k("traffic-limit-qps"), "100000")], SIMPLE).is_ok());
    assert_eq!(
        errs(&parse(&[(&k("traffic-limit-qps"), "100001")], SIMPLE)),
        vec![format!("{}: 100001 is outside 1..=100000", k("traffic-limit-qps"))]
    );
}
