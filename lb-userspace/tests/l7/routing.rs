//! Routing through real requests: the reference's path and rewrite tables, order, 503,
//! actions, canary, schedulers, stickiness, forwarded headers, timeouts, upgrades, h2c.
use std::{collections::BTreeMap, time::Duration};

use super::support::*;

const NS: &str = "demo";

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

/// Forward actions: redirect, fixed response, weighted forward groups, headers inserted and
/// removed; canary by header, cookie and weight.
#[tokio::test]
async fn actions_and_canary() {
    let port = free_port();
    let (a, b, canary) =
        (echo("a", Duration::ZERO).await, echo("b", Duration::ZERO).await, echo("canary", Duration::ZERO).await);
    let mirror = echo("mirror", Duration::ZERO).await;
    let mirrored = r#"[{"type":"TrafficMirror","trafficMirrorConfig":{"targetType":"ForwardGroupMirror","mirrorGroupConfig":{"serverGroupTuples":[{"serviceName":"mirror","servicePort":80}]}}},{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"a","ServicePort":80,"Weight":100}]}}]"#;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let group = r#"[{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"a","ServicePort":80,"Weight":80},{"ServiceName":"b","ServicePort":80,"Weight":20}]}},{"type":"InsertHeader","InsertHeaderConfig":{"key":"x-from","value":"lb","valueType":"UserDefined"}},{"type":"InsertHeader","InsertHeaderConfig":{"key":"x-client-port","value":"ClientSrcPort","valueType":"SystemDefined"}},{"type":"RemoveHeader","RemoveHeaderConfig":{"key":"x-secret"}}]"#;
    let redirect = r#"[{"type":"Redirect","RedirectConfig":{"protocol":"HTTPS","path":"/new","httpCode":"302"}}]"#;
    let fixed = r#"[{"type":"FixedResponse","FixedResponseConfig":{"contentType":"text/plain","httpCode":"418","content":"short and stout"}}]"#;
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "a", &[&a])
        + &service(NS, "b", &[&b])
        + &service(NS, "canary", &[&canary])
        + &service(NS, "mirror", &[&mirror])
        + &ingress(
            NS,
            "mirrored",
            &[("listen-ports", &lp), ("actions.m", mirrored)],
            &rule("mirror.test", &[("/", "Prefix", "m")]).replace("number: 80", "name: use-annotation"),
        )
        + &ingress(
            NS,
            "groups",
            &[("listen-ports", &lp), ("actions.split", group)],
            &rule("g.test", &[("/", "Prefix", "split")]).replace("number: 80", "name: use-annotation"),
        )
        + &ingress(
            NS,
            "redir",
            &[("listen-ports", &lp), ("actions.r", redirect)],
            &rule("r.test", &[("/", "Prefix", "r")]).replace("number: 80", "name: use-annotation"),
        )
        + &ingress(
            NS,
            "fixed",
            &[("listen-ports", &lp), ("actions.f", fixed)],
            &rule("f.test", &[("/", "Prefix", "f")]).replace("number: 80", "name: use-annotation"),
        )
        + &ingress(NS, "main", &[("listen-ports", &lp)], &rule("c.test", &[("/", "Prefix", "a")]))
        + &ingress(
            NS,
            "main-canary",
            &[
                ("listen-ports", &lp),
                ("canary", "true"),
                ("canary-by-header", "x-canary"),
                ("canary-by-header-value", "yes"),
                ("canary-by-cookie", "beta"),
            ],
            &rule("c.test", &[("/", "Prefix", "canary")]),
        )
        + &ingress(NS, "w", &[("listen-ports", &lp)], &rule("w.test", &[("/", "Prefix", "a")]))
        + &ingress(
            NS,
            "w-canary",
            &[("listen-ports", &lp), ("canary", "true"), ("canary-weight", "30")],
            &rule("w.test", &[("/", "Prefix", "canary")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();

    let r = get(&c, port, "r.test", "/old?q=1", &[]).await;
    assert_eq!((r.status, r.header("location").as_deref()), (302, Some("https://r.test/new?q=1")));
    let f = get(&c, port, "f.test", "/", &[]).await;
    assert_eq!(
        (f.status, f.body.as_str(), f.header("content-type").as_deref()),
        (418, "short and stout", Some("text/plain"))
    );

    for _ in 0..5 {
        assert_eq!(get(&c, port, "mirror.test", "/", &[]).await.backend(), "a");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while mirror.hits() < 5 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(mirror.hits(), 5, "every request is mirrored, the answers dropped");

    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..200 {
        let got = get(&c, port, "g.test", "/", &[("x-secret", "s")]).await;
        let j = got.json();
        assert_eq!(j["headers"]["x-from"], "lb");
        assert!(j["headers"]["x-client-port"].as_str().unwrap().parse::<u16>().is_ok());
        assert!(j["headers"].get("x-secret").is_none(), "RemoveHeader");
        *counts.entry(got.backend()).or_default() += 1;
    }
    let share_a = counts["a"] as f64 / 200.0;
    assert!((0.65..0.92).contains(&share_a), "80/20 split gave {counts:?}");

    assert_eq!(get(&c, port, "c.test", "/", &[]).await.backend(), "a");
    assert_eq!(get(&c, port, "c.test", "/", &[("x-canary", "yes")]).await.backend(), "canary");
    assert_eq!(get(&c, port, "c.test", "/", &[("x-canary", "no")]).await.backend(), "a");
    assert_eq!(get(&c, port, "c.test", "/", &[("cookie", "beta=always")]).await.backend(), "canary");
    assert_eq!(get(&c, port, "c.test", "/", &[("cookie", "beta=never")]).await.backend(), "a");
    let mut to_canary = 0;
    for _ in 0..200 {
        if get(&c, port, "w.test", "/", &[]).await.backend() == "canary" {
            to_canary += 1;
        }
    }
    assert!((30..90).contains(&to_canary), "canary-weight 30 took {to_canary}/200");
}

/// Schedulers: wrr spreads evenly, sch keeps a client on one backend, uch hashes a query
/// parameter; insert-cookie stickiness returns to the same backend.
#[tokio::test]
async fn schedulers_and_sticky_sessions() {
    let port = free_port();
    let bs = [echo("b0", Duration::ZERO).await, echo("b1", Duration::ZERO).await, echo("b2", Duration::ZERO).await];
    let refs: Vec<&Echo> = bs.iter().collect();
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "pool", &refs)
        + &ingress(NS, "rr", &[("listen-ports", &lp)], &rule("wrr.test", &[("/", "Prefix", "pool")]))
        + &ingress(
            NS,
            "sch",
            &[("listen-ports", &lp), ("backend-scheduler", "sch")],
            &rule("sch.test", &[("/", "Prefix", "pool")]),
        )
        + &ingress(
            NS,
            "uch",
            &[("listen-ports", &lp), ("backend-scheduler", "uch"), ("backend-scheduler-uch-value", "uid")],
            &rule("uch.test", &[("/", "Prefix", "pool")]),
        )
        + &ingress(
            NS,
            "sticky",
            &[
                ("listen-ports", &lp),
                ("sticky-session", "true"),
                ("sticky-session-type", "Insert"),
                ("cookie-timeout", "300"),
            ],
            &rule("sticky.test", &[("/", "Prefix", "pool")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..30 {
        *seen.entry(get(&c, port, "wrr.test", "/", &[]).await.backend()).or_default() += 1;
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), vec![10, 10, 10], "wrr with equal weights: {seen:?}");
    let first = get(&c, port, "sch.test", "/", &[]).await.backend();
    for _ in 0..10 {
        assert_eq!(get(&c, port, "sch.test", "/", &[]).await.backend(), first, "sch: one client, one backend");
    }
    let mut by_uid = BTreeMap::new();
    for uid in 0..20 {
        let b = get(&c, port, "uch.test", &format!("/?uid={uid}"), &[]).await.backend();
        assert_eq!(
            get(&c, port, "uch.test", &format!("/x?a=1&uid={uid}"), &[]).await.backend(),
            b,
            "uch: same uid, same backend"
        );
        by_uid.insert(uid, b);
    }
    assert!(by_uid.values().collect::<std::collections::BTreeSet<_>>().len() > 1, "uch spreads uids");
    let r = get(&c, port, "sticky.test", "/", &[]).await;
    let cookie = r.header("set-cookie").expect("an inserted cookie");
    assert!(cookie.starts_with("SERVERID=") && cookie.contains("Max-Age=300"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..10 {
        assert_eq!(
            get(&c, port, "sticky.test", "/", &[("cookie", &pair)]).await.backend(),
            r.backend(),
            "sticky cookie"
        );
    }
}

/// A CLB http listener on a VIP: X-Forwarded-* headers as the xforwardedfor-* annotations
/// ask, request-timeout → 504.
#[tokio::test]
async fn clb_http_listener_headers_and_timeout() {
    let (port, https_port) = (free_port(), free_port());
    let slow = echo("slow", Duration::from_secs(3)).await;
    let vip = "127.0.0.7";
    let yaml = clb_service(
        NS,
        "web",
        vip,
        &[
            ("protocol-port", &format!("http:{port},http:{https_port}")),
            ("xforwardedfor-proto", "on"),
            ("xforwardedfor-slbport", "on"),
            ("xforwardedfor-clientsrcport", "on"),
            ("request-timeout", "1"),
        ],
        &[("http", port), ("other", https_port)],
        &slow,
    );
    let m = model(&yaml);
    assert!(m.l7.contains_key(&format!("{vip}:{port}/http")), "{:?}", m.l7.keys());
    let _p = proxy(&m);
    let c = client();
    let url = |p: u16, path: &str| format!("http://{vip}:{p}{path}");
    let req = http::Request::get(url(port, "/hello"))
        .header("x-forwarded-for", "203.0.113.9")
        .body(Default::default())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes()).unwrap();
    let h = &body["headers"];
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1", "XFF is appended to");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-port"], port.to_string());
    assert!(h["x-forwarded-client-srcport"].as_str().unwrap().parse::<u16>().is_ok());
    assert_eq!(h["host"], format!("{vip}:{port}"), "the client's Host reaches the backend");

    let started = std::time::Instant::now();
    let resp = c.request(http::Request::get(url(port, "/slow")).body(Default::default()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "504 after request-timeout 1s, took {:?}",
        started.elapsed()
    );
}

/// WebSocket-style upgrades are tunnelled; h2c prior knowledge reaches an HTTP/1.1 backend.
#[tokio::test]
async fn upgrade_tunnel_and_h2c() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = free_port();
    let b = echo("b", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(NS, "u", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "b")]));
    let _p = proxy(&model(&yaml));

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: u.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut got = Vec::new();
    while got.len() < 23 {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "tunnel closed early");
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"ping through the tunnel");

    let h2: hyper_util::client::legacy::Client<_, http_body_util::Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let resp = h2
        .request(http::Request::get(format!("http://127.0.0.1:{port}/h2c")).body(Default::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body: serde_json::Value =
        serde_json::from_slice(&http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["version"], "HTTP/1.1", "the backend is spoken to in HTTP/1.1");
    assert_eq!(body["uri"], "/h2c");
}

/// `backend-protocol: https`, `backend-keepalive` (one
/// backend connection for many requests), `traffic-limit-qps` → 503, oversized headers
/// → 431, the listener's idle timeout closes a quiet keep-alive connection.
#[tokio::test]
async fn backend_protocols_keepalive_and_limits() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = free_port();
    let (plain, tls) = (echo("plain", Duration::ZERO).await, echo_tls("secure").await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let class = alb_class_with(&[(port, "HTTP")], "    idleTimeout: 1\n");
    let yaml = class
        + &service(NS, "plain", &[&plain])
        + &service(NS, "secure", &[&tls])
        + &ingress(
            NS,
            "https",
            &[("listen-ports", &lp), ("backend-protocol", "https")],
            &rule("https.test", &[("/", "Prefix", "secure")]),
        )
        + &ingress(
            NS,
            "ka",
            &[("listen-ports", &lp), ("backend-keepalive", "true")],
            &rule("ka.test", &[("/", "Prefix", "plain")]),
        )
        + &ingress(NS, "fresh", &[("listen-ports", &lp)], &rule("fresh.test", &[("/", "Prefix", "plain")]))
        + &ingress(
            NS,
            "limited",
            &[("listen-ports", &lp), ("traffic-limit-qps", "5")],
            &rule("qps.test", &[("/", "Prefix", "plain")]),
        );
    let m = model(&yaml);
    let _p = proxy(&m);
    let c = client();
    assert_eq!(get(&c, port, "https.test", "/", &[]).await.backend(), "secure over TLS");

    let peers = |host: &'static str| {
        let c = c.clone();
        async move {
            let mut ports = std::collections::BTreeSet::new();
            for _ in 0..5 {
                ports.insert(get(&c, port, host, "/", &[]).await.json()["peer"].as_str().unwrap().to_owned());
            }
            ports.len()
        }
    };
    assert_eq!(peers("ka.test").await, 1, "backend-keepalive reuses one backend connection");
    assert_eq!(peers("fresh.test").await, 5, "without it every request opens a new one");

    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(get(&c, port, "qps.test", "/", &[]).await.status);
    }
    let passed = statuses.iter().filter(|s| **s == 200).count();
    assert!((5..=8).contains(&passed) && statuses.iter().all(|s| *s == 200 || *s == 503), "qps 5: {statuses:?}");

    let big = "x".repeat(70 * 1024);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: fresh.test\r\nX-Big: {big}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&buf[..n]));

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: fresh.test\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("idle connection not closed")
            .unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let idle = started.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(3),
        "closed after {idle:?} (idle-timeout 1s)"
    );
}

/// ALB `healthcheck-*`: an endpoint failing its HTTP check stops getting requests; the
/// agent's checker drives it exactly as `lb run` does.
#[tokio::test]
async fn health_checks_take_a_failing_endpoint_out() {
    let port = free_port();
    let (good, sick) = (echo("good", Duration::ZERO).await, echo("sick", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "pool", &[&good, &sick])
        + &ingress(
            NS,
            "checked",
            &[
                ("listen-ports", &lp),
                ("healthcheck-enabled", "true"),
                ("healthcheck-path", "/healthz"),
                ("healthcheck-interval-seconds", "1"),
                ("healthcheck-timeout-seconds", "1"),
                ("unhealthy-threshold-count", "2"),
            ],
            &rule("hc.test", &[("/", "Prefix", "pool")]),
        );
    let m = model(&yaml);
    let mut p = proxy(&m);
    let c = client();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        seen.insert(get(&c, port, "hc.test", "/", &[]).await.backend());
    }
    assert_eq!(seen.len(), 2, "both endpoints serve before the checks decide");
    let (tx, mut rx) = tokio::sync::mpsc::channel(8);
    let mut checker = lb_userspace::health::Checker::default();
    checker.sync(&m, &tx);
    let change = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("no health change").unwrap();
    assert_eq!((change.backend, change.healthy), ((sick.addr.ip(), sick.addr.port()), false));
    checker.record(change);
    assert!(p.apply(&checker.effective(&m).l7).is_empty());
    for _ in 0..10 {
        assert_eq!(get(&c, port, "hc.test", "/", &[]).await.backend(), "good");
    }
}

/// `enable-cors`: preflights answered by the proxy for allowed origins, CORS headers on
/// answers, other origins refused.
#[tokio::test]
async fn cors_preflight_and_headers() {
    let port = free_port();
    let b = echo("b", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(
            NS,
            "cors",
            &[
                ("listen-ports", &lp),
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.test"),
                ("cors-allow-credentials", "true"),
                ("cors-max-age", "600"),
            ],
            &rule("api.test", &[("/", "Prefix", "b")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let pre = send(
        &c,
        "OPTIONS",
        port,
        "api.test",
        "/x",
        &[("origin", "https://app.test"), ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin").as_deref(), Some("https://app.test"));
    assert!(pre.header("access-control-allow-methods").unwrap().contains("PUT"));
    assert_eq!(pre.header("access-control-max-age").as_deref(), Some("600"));
    assert_eq!(pre.header("access-control-allow-credentials").as_deref(), Some("true"));
    assert_eq!(b.hits(), 0, "preflights are answered by the proxy");
    let got = get(&c, port, "api.test", "/x", &[("origin", "https://app.test")]).await;
    assert_eq!((got.status, got.header("access-control-allow-origin").as_deref()), (200, Some("https://app.test")));
    let evil = send(
        &c,
        "OPTIONS",
        port,
        "api.test",
        "/x",
        &[("origin", "https://evil.test"), ("access-control-request-method", "PUT")],
    )
    .await;
    assert_eq!(evil.status, 403);
    assert!(
        get(&c, port, "api.test", "/x", &[("origin", "https://evil.test")])
            .await
            .header("access-control-allow-origin")
            .is_none()
    );
}

/// `ssl-redirect`: HTTP on port 80 is redirected to HTTPS 443 (on 127.0.0.10 so as not to
/// meet anything else on port 80).
#[tokio::test]
async fn ssl_redirect_on_port_80() {
    let b = echo("b", Duration::ZERO).await;
    let lp = "[{\"HTTP\": 80}, {\"HTTPS\": 443}]";
    let yaml = alb_class(&[(80, "HTTP"), (443, "HTTPS")])
        + &service(NS, "b", &[&b])
        + &ingress(
            NS,
            "secure",
            &[("listen-ports", lp), ("ssl-redirect", "true")],
            &rule("s.test", &[("/", "Prefix", "b")]),
        );
    let m = model(&yaml);
    let http: std::collections::BTreeMap<_, _> =
        m.l7.iter().filter(|(k, _)| k.ends_with("/http")).map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut p = lb_userspace::l7::Proxy::new(vec!["127.0.0.10".parse().unwrap()]);
    assert!(p.apply(&http).is_empty());
    let c = client();
    let req =
        http::Request::get("http://127.0.0.10:80/cart?x=1").header("host", "s.test").body(Default::default()).unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 301);
    assert_eq!(resp.headers()["location"], "https://s.test/cart?x=1");
}

/// CLB `acl-*` on an http listener: the proxy refuses connections the ACL does not let in.
#[tokio::test]
async fn clb_acl_guards_http_listeners() {
    let b = echo("b", Duration::ZERO).await;
    let cases = [
        ("white", "127.0.0.1/32", true),
        ("white", "10.0.0.0/8", false),
        ("black", "127.0.0.0/8", false),
        ("black", "10.0.0.0/8", true),
    ];
    for (i, (kind, cidr, allowed)) in cases.into_iter().enumerate() {
        let port = free_port();
        let vip = format!("127.0.1.{}", i + 1);
        let acl = format!(
            "apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {{name: acl{i}}}\nspec:\n  entries: [{{cidr: \"{cidr}\"}}]\n---\n"
        );
        let annotations = [
            ("protocol-port", format!("http:{port}")),
            ("acl-status", "on".to_owned()),
            ("acl-id", format!("acl{i}")),
            ("acl-type", kind.to_owned()),
        ];
        let annotations: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let yaml = acl + &clb_service(NS, &format!("web{i}"), &vip, &annotations, &[("http", port)], &b);
        let _p = proxy(&model(&yaml));
        let c = client();
        let req = http::Request::get(format!("http://{vip}:{port}/")).body(Default::default()).unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), c.request(req)).await.unwrap();
        assert_eq!(r.is_ok(), allowed, "{kind} {cidr}: {r:?}");
    }
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

/// `slow-start-*`: an endpoint added to a running proxy starts with a small share of the
/// requests; without slow start it takes its full share at once.
#[tokio::test]
async fn slow_start_ramps_a_new_endpoint() {
    let port = free_port();
    let (old, new) = (echo("old", Duration::ZERO).await, echo("new", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = |eps: &[&Echo]| {
        alb_class(&[(port, "HTTP")])
            + &service(NS, "slow", eps)
            + &service(NS, "fast", eps)
            + &ingress(
                NS,
                "slow",
                &[("listen-ports", &lp), ("slow-start-enabled", "true"), ("slow-start-duration", "60")],
                &rule("slow.test", &[("/", "Prefix", "slow")]),
            )
            + &ingress(NS, "fast", &[("listen-ports", &lp)], &rule("fast.test", &[("/", "Prefix", "fast")]))
    };
    let mut p = proxy(&model(&yaml(&[&old])));
    assert!(p.apply(&model(&yaml(&[&old, &new])).l7).is_empty());
    let c = client();
    let count = |host: &'static str| {
        let c = c.clone();
        async move {
            let mut n = 0;
            for _ in 0..40 {
                if get(&c, port, host, "/", &[]).await.backend() == "new" {
                    n += 1;
                }
            }
            n
        }
    };
    let slow = count("slow.test").await;
    let fast = count("fast.test").await;
    assert!(slow <= 4, "slow start: the new endpoint took {slow}/40");
    assert!((15..=25).contains(&fast), "no slow start: the new endpoint took {fast}/40");
}

/// `ServerGroupStickySession`: a client that got one Service of a forward group keeps it
/// (cookie `SERVERGROUPID`), whatever the group's weights say.
#[tokio::test]
async fn forward_group_stickiness() {
    let port = free_port();
    let (a, b) = (echo("a", Duration::ZERO).await, echo("b", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let group = r#"[{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"a","ServicePort":80,"Weight":50},{"ServiceName":"b","ServicePort":80,"Weight":50}],"ServerGroupStickySession":{"Enabled":true,"Timeout":120}}}]"#;
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "a", &[&a])
        + &service(NS, "b", &[&b])
        + &ingress(
            NS,
            "g",
            &[("listen-ports", &lp), ("actions.split", group)],
            &rule("g.test", &[("/", "Prefix", "split")]).replace("number: 80", "name: use-annotation"),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let first = get(&c, port, "g.test", "/", &[]).await;
    let cookie = first.header("set-cookie").expect("a group cookie");
    assert!(cookie.starts_with("SERVERGROUPID=") && cookie.contains("Max-Age=120"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    for _ in 0..20 {
        assert_eq!(get(&c, port, "g.test", "/", &[("cookie", &pair)]).await.backend(), first.backend());
    }
    let spread: std::collections::BTreeSet<String> = backends_without_cookie(&c, port).await;
    assert_eq!(spread.len(), 2, "without the cookie both Services serve");
}

async fn backends_without_cookie(c: &HttpClient, port: u16) -> std::collections::BTreeSet<String> {
    let mut s = std::collections::BTreeSet::new();
    for _ in 0..30 {
        s.insert(get(c, port, "g.test", "/", &[]).await.backend());
    }
    s
}

/// `gzipEnabled` (on by default): text answers of 1 KiB or more are compressed for clients
/// that accept gzip (curl decompresses them back to the same bytes); not for others, not
/// when the listener turns it off.
#[tokio::test]
async fn gzip_compresses_text_answers() {
    let (on, off) = (free_port(), free_port());
    let b = echo("b", Duration::ZERO).await;
    let class = alb_class(&[(on, "HTTP")]).replace(
        "  listeners:\n",
        &format!("  listeners:\n  - port: {off}\n    protocol: HTTP\n    gzipEnabled: false\n"),
    );
    let lp = format!("[{{\"HTTP\": {on}}}, {{\"HTTP\": {off}}}]");
    let yaml = class
        + &service(NS, "b", &[&b])
        + &ingress(NS, "z", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "b")]));
    let _p = proxy(&model(&yaml));
    let want = "the quick brown fox jumps over the lazy dog\n".repeat(200);
    let curl = |port: u16, args: &'static [&'static str]| {
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new("curl")
                .args(["-sS", "--max-time", "5", "-D", "/dev/stderr"])
                .args(args)
                .arg(format!("http://127.0.0.1:{port}/big"))
                .output()
                .unwrap();
            (
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).to_ascii_lowercase(),
            )
        })
    };
    let (body, head) = curl(on, &["--compressed"]).await.unwrap();
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert_eq!(body, want, "curl decompresses to the backend's bytes");
    let (body, head) = curl(on, &[]).await.unwrap();
    assert!(!head.contains("content-encoding"), "no Accept-Encoding, no gzip: {head}");
    assert_eq!(body, want);
    let (_, head) = curl(off, &["--compressed"]).await.unwrap();
    assert!(!head.contains("content-encoding"), "gzipEnabled: false: {head}");
    let c = client();
    let small = get(&c, on, "x", "/small", &[("accept-encoding", "gzip")]).await;
    assert!(small.header("content-encoding").is_none(), "answers under 1 KiB are sent as they are");
}
