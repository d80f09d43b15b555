//! Routing through real requests: the reference's path and rewrite tables, order, hosts,
//! 503s, conditions. (Actions and canary, balancing, listener features: their own modules.)
use std::time::Duration;

use super::support::*;

pub const NS: &str = "demo";

/// The reference's "simple paths" and "hierarchical paths" tables: each row is an Ingress
/// on its own host; the request reaches the rule's Service or gets 503.
#[tokio::test]
async fn golden_path_tables_through_requests() {
    let port = free_port();
    let hit = echo("hit", Duration::ZERO).await;
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
        ("Prefix", "/aaa/bb", &["/aaa/bbb"], false),
        ("Prefix", "/aaa/bbb", &["/aaa/bbb", "/aaa/bbb/", "/aaa/bbb/ccc"], true),
        ("Prefix", "/aaa/bbb/", &["/aaa/bbb"], true),
    ];
    let mut yaml = alb_class(&[(port, "HTTP")]) + &service(NS, "hit", &[&hit]);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    for (i, (ty, path, _, _)) in table.iter().enumerate() {
        yaml += &ingress(
            NS,
            &format!("row{i}"),
            &[("listen-ports", &lp)],
            &rule(&format!("row{i}.test"), &[(path, ty, "hit")]),
        );
    }
    let _p = proxy(&model(&yaml));
    let c = client();
    for (i, (ty, path, requests, want)) in table.iter().enumerate() {
        for req in *requests {
            let got = get(&c, port, &format!("row{i}.test"), req, &[]).await;
            let status = if *want { 200 } else { 503 };
            assert_eq!(got.status, status, "{ty} {path} vs {req}: {}", got.body);
            if *want {
                assert_eq!(got.uri(), *req, "the path reaches the backend unchanged");
            }
        }
    }
}

/// The reference's "multiple rule paths" table: the first listed path wins, not the longest.
#[tokio::test]
async fn golden_multiple_rule_paths_through_requests() {
    let port = free_port();
    let (a, b) = (echo("a", Duration::ZERO).await, echo("b", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    // (paths in order with their Services, request, winner or None)
    type Row<'a> = (&'a [(&'a str, &'a str)], &'a str, Option<&'a str>);
    let table: &[Row] = &[
        (&[("/", "a"), ("/aaa", "b")], "/aaa/ccc", Some("a")),
        (&[("/aaa", "a"), ("/", "b")], "/aaa/ccc", Some("a")),
        (&[("/aaa", "a"), ("/", "b")], "/ccc", Some("b")),
        (&[("/aaa", "a"), ("/bbb", "b")], "/ccc", None),
    ];
    let mut yaml = alb_class(&[(port, "HTTP")]) + &service(NS, "a", &[&a]) + &service(NS, "b", &[&b]);
    for (i, (paths, _, _)) in table.iter().enumerate() {
        let ps: Vec<(&str, &str, &str)> = paths.iter().map(|(p, s)| (*p, "Prefix", *s)).collect();
        yaml += &ingress(NS, &format!("m{i}"), &[("listen-ports", &lp)], &rule(&format!("m{i}.test"), &ps));
    }
    let _p = proxy(&model(&yaml));
    let c = client();
    for (i, (paths, req, want)) in table.iter().enumerate() {
        let got = get(&c, port, &format!("m{i}.test"), req, &[]).await;
        match want {
            Some(w) => assert_eq!(got.backend(), *w, "{paths:?} vs {req}"),
            None => assert_eq!(got.status, 503, "{paths:?} vs {req}"),
        }
    }
}

/// The three "Configure rewrite" examples: what the backend receives.
#[tokio::test]
async fn golden_rewrite_examples_through_requests() {
    let port = free_port();
    let svc = echo("rewrite", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    type Example<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, Option<&'a str>)]);
    let examples: &[Example] = &[
        (
            "/${2}",
            &["/something(/|$)(.*)"],
            &[
                ("/something", Some("/")),
                ("/something/", Some("/")),
                ("/something/new", Some("/new")),
                ("/something-new/item", None),
            ],
        ),
        (
            "/${2}?code=${3}",
            &["/items/(.*)/(.*)/(.*)"],
            &[
                ("/items/electronics/computers/554", Some("/computers?code=554")),
                ("/items/produce/fruits/12", Some("/fruits?code=12")),
                ("/items/headphones/5", None),
                ("/drinks/41", None),
            ],
        ),
        (
            "/app-c/${2}",
            &["/app-a(/|$)(.*)", "/app-b(/|$)(.*)"],
            &[
                ("/app-a/item1", Some("/app-c/item1")),
                ("/app-a", Some("/app-c/")),
                ("/app-a/", Some("/app-c/")),
                ("/app-b/x", Some("/app-c/x")),
                ("/drinks/41", None),
            ],
        ),
    ];
    let mut yaml = alb_class(&[(port, "HTTP")]) + &service(NS, "rewrite-svc", &[&svc]);
    for (i, (target, paths, _)) in examples.iter().enumerate() {
        let ps: Vec<(&str, &str, &str)> = paths.iter().map(|p| (*p, "Prefix", "rewrite-svc")).collect();
        yaml += &ingress(
            NS,
            &format!("rw{i}"),
            &[("listen-ports", &lp), ("use-regex", "true"), ("rewrite-target", target)],
            &rule(&format!("rw{i}.test"), &ps),
        );
    }
    let _p = proxy(&model(&yaml));
    let c = client();
    for (i, (target, _, table)) in examples.iter().enumerate() {
        for (path, want) in *table {
            let got = get(&c, port, &format!("rw{i}.test"), path, &[]).await;
            match want {
                Some(w) => assert_eq!(got.uri(), *w, "{target}: {path}"),
                None => assert_eq!(got.status, 503, "{target}: {path} should match nothing"),
            }
        }
    }
}

/// `order` beats Ingress names; hosts exact and wildcard; no rule → 503 with a body;
/// a Service without endpoints → 503.
#[tokio::test]
async fn order_hosts_and_503s() {
    let port = free_port();
    let (a, b) = (echo("a", Duration::ZERO).await, echo("b", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "a", &[&a])
        + &service(NS, "b", &[&b])
        + &service(NS, "empty", &[])
        + &ingress(
            NS,
            "aaa-first-by-name",
            &[("listen-ports", &lp), ("order", "20")],
            &rule("shop.test", &[("/", "Prefix", "a")]),
        )
        + &ingress(
            NS,
            "zzz-first-by-order",
            &[("listen-ports", &lp), ("order", "5")],
            &rule("shop.test", &[("/", "Prefix", "b")]),
        )
        + &ingress(NS, "wild", &[("listen-ports", &lp)], &rule("*.wild.test", &[("/", "Prefix", "a")]))
        + &ingress(NS, "none", &[("listen-ports", &lp)], &rule("empty.test", &[("/", "Prefix", "empty")]));
    let _p = proxy(&model(&yaml));
    let c = client();
    assert_eq!(get(&c, port, "shop.test", "/", &[]).await.backend(), "b");
    assert_eq!(get(&c, port, "SHOP.test:80", "/x", &[]).await.backend(), "b", "host is case-insensitive, port ignored");
    assert_eq!(get(&c, port, "a.wild.test", "/", &[]).await.backend(), "a");
    assert_eq!(get(&c, port, "a.b.wild.test", "/", &[]).await.status, 503, "a wildcard covers one label");
    let none = get(&c, port, "other.test", "/", &[]).await;
    assert_eq!(none.status, 503);
    assert!(none.body.contains("no rule"), "{}", none.body);
    let empty = get(&c, port, "empty.test", "/", &[]).await;
    assert_eq!(empty.status, 503);
    assert!(empty.body.contains("no healthy backend"), "{}", empty.body);
}

/// `conditions.<service>`: Header, QueryString, Method, Cookie and SourceIp conditions all
/// have to hold for the rule to take a request; otherwise the next rule does.
#[tokio::test]
async fn conditions_through_requests() {
    let port = free_port();
    let (gray, main) = (echo("gray", Duration::ZERO).await, echo("main", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let cond = r#"[{"type":"Header","headerConfig":{"key":"stage","values":["gray"]}},{"type":"QueryString","queryStringConfig":{"values":[{"key":"type","value":"test"}]}},{"type":"Method","methodConfig":{"values":["GET","HEAD"]}},{"type":"Cookie","cookieConfig":{"values":[{"key":"user","value":"tom"}]}},{"type":"SourceIp","sourceIpConfig":{"values":["127.0.0.0/8"]}}]"#;
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "gray", &[&gray])
        + &service(NS, "main", &[&main])
        + &ingress(
            NS,
            "a-gray",
            &[("listen-ports", &lp), ("order", "1"), ("conditions.gray", cond)],
            &rule("c.test", &[("/", "Prefix", "gray")]),
        )
        + &ingress(NS, "b-main", &[("listen-ports", &lp), ("order", "2")], &rule("c.test", &[("/", "Prefix", "main")]));
    let _p = proxy(&model(&yaml));
    let c = client();
    let all = [("stage", "gray"), ("cookie", "a=1; user=tom")];
    assert_eq!(get(&c, port, "c.test", "/?type=test", &all).await.backend(), "gray");
    assert_eq!(get(&c, port, "c.test", "/?type=prod", &all).await.backend(), "main", "query");
    assert_eq!(get(&c, port, "c.test", "/?type=test", &[("cookie", "user=tom")]).await.backend(), "main", "header");
    assert_eq!(get(&c, port, "c.test", "/?type=test", &[("stage", "gray")]).await.backend(), "main", "cookie");
    assert_eq!(send(&c, "POST", port, "c.test", "/?type=test", &all).await.backend(), "main", "method");
}

/// An IngressClass naming an AlbConfig that does not exist: its Ingresses are rejected with
/// an error saying so (they were served on whatever port `listen-ports` named, with no word).
#[test]
fn an_ingress_whose_albconfig_does_not_exist_is_rejected() {
    let b = Echo { addr: "127.0.0.1:9".parse().unwrap(), hits: Default::default(), seen: Default::default() };
    let yaml = alb_class(&[(80, "HTTP")]).replace("kind: AlbConfig, name: alb}", "kind: AlbConfig, name: alb-typo}")
        + &service(NS, "b", &[&b])
        + &ingress(NS, "web", &[("listen-ports", r#"[{"HTTP": 8080}]"#)], &rule("w.test", &[("/", "Prefix", "b")]));
    let build = build(&yaml);
    assert!(build.model.l7.is_empty(), "{:?}", build.model.l7.keys().collect::<Vec<_>>());
    let e = build.errors.iter().find(|e| e.object.name == "web").expect("the Ingress is in error");
    assert_eq!(e.field, "spec.ingressClassName");
    assert!(e.reason.contains("\"alb-typo\", which does not exist"), "{}", e.reason);
}

/// Two AlbConfigs declaring one port: the newer's listener is in error and not served (every
/// AlbConfig listens on the node's addresses; the second was merged into the first's
/// listener with the first's settings, silently); its Ingress on that port is rejected.
#[test]
fn two_albconfigs_on_one_port_the_newer_is_in_error() {
    let port = free_port();
    let b = Echo { addr: "127.0.0.1:9".parse().unwrap(), hits: Default::default(), seen: Default::default() };
    // The newer AlbConfig, `alb`, sorts first by name: age decides.
    let older = alb_class(&[(port, "HTTP")]).replace("name: alb}", "name: alb-2}").replace(
        "metadata: {name: alb-2}\nspec:\n  config",
        "metadata: {name: alb-2, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec:\n  config",
    );
    let newer = alb_class(&[(port, "HTTP")]).replace(
        "metadata: {name: alb}\nspec:\n  config",
        "metadata: {name: alb, creationTimestamp: '2026-01-02T00:00:00Z'}\nspec:\n  config",
    );
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = older
        + &newer
        + &service(NS, "b", &[&b])
        + &ingress(NS, "one", &[("listen-ports", &lp)], &rule("one.test", &[("/", "Prefix", "b")]))
        + &ingress(NS, "two", &[("listen-ports", &lp)], &rule("two.test", &[("/", "Prefix", "b")]))
            .replace("ingressClassName: alb\n", "ingressClassName: alb-2\n");
    let build = build(&yaml);
    let cfg = build.errors.iter().find(|e| e.object.kind == "AlbConfig").expect("the newer AlbConfig is in error");
    assert_eq!((cfg.object.name.as_str(), cfg.field.as_str()), ("alb", "spec.listeners[0].port"));
    assert!(cfg.reason.contains("already a listener of AlbConfig \"alb-2\""), "{}", cfg.reason);
    let one = build.errors.iter().find(|e| e.object.name == "one").expect("its Ingress is in error");
    assert!(one.reason.contains("is not a listener of AlbConfig \"alb\""), "{}", one.reason);
    assert!(build.model.ingresses.contains_key(&format!("{NS}/two")));
    assert_eq!(build.errors.len(), 2, "{:?}", build.errors);
}

/// `cluster-weight.<id>` on an Ingress whose AlbConfig is not a multi-cluster gateway (no
/// `remote-clusters`) has nothing to split: a notice says so (it was ignored silently).
#[test]
fn cluster_weights_without_a_gateway_are_a_notice() {
    let port = free_port();
    let b = Echo { addr: "127.0.0.1:9".parse().unwrap(), hits: Default::default(), seen: Default::default() };
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(
            NS,
            "w",
            &[("listen-ports", &lp), ("cluster-weight.c1", "80"), ("cluster-weight.c2", "20")],
            &rule("w.test", &[("/", "Prefix", "b")]),
        );
    let build = build(&yaml);
    assert!(build.errors.is_empty(), "{:?}", build.errors);
    let notes: Vec<&str> =
        build.notices.iter().filter(|n| n.field.contains("cluster-weight.")).map(|n| n.note.as_str()).collect();
    assert_eq!(notes.len(), 2, "{:?}", build.notices);
    assert!(notes[0].contains("AlbConfig alb is not a multi-cluster gateway"), "{notes:?}");
}

/// Two Host or two Path conditions on one rule must both hold, as every condition of a rule
/// (the second of each was ignored).
#[tokio::test]
async fn every_host_and_path_condition_must_hold() {
    let port = free_port();
    let (both, other) = (echo("both", Duration::ZERO).await, echo("other", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let cond = r#"[{"type":"Path","pathConfig":{"values":["/a","/b"]}},{"type":"Path","pathConfig":{"values":["/b","/c"]}},{"type":"Host","hostConfig":{"values":["a.test","b.test"]}},{"type":"Host","hostConfig":{"values":["b.test"]}}]"#;
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "both", &[&both])
        + &service(NS, "other", &[&other])
        + &ingress(
            NS,
            "a-both",
            &[("listen-ports", &lp), ("order", "1"), ("conditions.both", cond)],
            &rule("", &[("/", "Prefix", "both")]),
        )
        + &ingress(NS, "b-other", &[("listen-ports", &lp), ("order", "2")], &rule("", &[("/", "Prefix", "other")]));
    let _p = proxy(&model(&yaml));
    let c = client();
    assert_eq!(get(&c, port, "b.test", "/b", &[]).await.backend(), "both");
    assert_eq!(get(&c, port, "b.test", "/a", &[]).await.backend(), "other", "the second Path condition");
    assert_eq!(get(&c, port, "a.test", "/b", &[]).await.backend(), "other", "the second Host condition");
}

/// `~` (case-insensitive) and `~*` (case-sensitive) regex values in Host and Path
/// conditions (`use-regex` on), through real requests: what matches goes to the conditioned
/// rule, the rest to the next one.
#[tokio::test]
async fn regex_conditions_tilde_and_tilde_star_through_requests() {
    let port = free_port();
    let (rx, main) = (echo("regex", Duration::ZERO).await, echo("main", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let path = r#"[{"type":"Path","pathConfig":{"values":["~*^/api/v[0-9]+$","~/Docs"]}}]"#;
    let host = r#"[{"type":"Host","hostConfig":{"values":["~^shop[0-9]*\\.test$"]}}]"#;
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "regex", &[&rx])
        + &service(NS, "hosts", &[&rx])
        + &service(NS, "main", &[&main])
        + &ingress(
            NS,
            "a-path",
            &[("listen-ports", &lp), ("order", "1"), ("use-regex", "true"), ("conditions.regex", path)],
            &rule("r.test", &[("/", "Prefix", "regex")]),
        )
        + &ingress(
            NS,
            "a-host",
            &[("listen-ports", &lp), ("order", "2"), ("conditions.hosts", host)],
            &rule("", &[("/", "Prefix", "hosts")]),
        )
        + &ingress(NS, "b-main", &[("listen-ports", &lp), ("order", "3")], &rule("", &[("/", "Prefix", "main")]));
    let _p = proxy(&model(&yaml));
    let c = client();
    let cases = [
        ("r.test", "/api/v2", "regex", "~*: case-sensitive match"),
        ("r.test", "/API/v2", "main", "~*: other case does not match"),
        ("r.test", "/api/v2/x", "main", "~*: anchored at the end"),
        ("r.test", "/docs/intro", "regex", "~: case-insensitive"),
        ("r.test", "/x/DOCS", "regex", "~: contains"),
        ("SHOP7.test", "/", "regex", "~ on Host: case-insensitive"),
        ("shop.test.evil", "/", "main", "~ on Host: anchored"),
        ("other.test", "/", "main", "no condition holds"),
    ];
    for (host, path, want, why) in cases {
        assert_eq!(get(&c, port, host, path, &[]).await.backend(), want, "{host}{path}: {why}");
    }
}
