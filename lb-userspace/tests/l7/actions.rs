//! Forward actions through real requests: redirects, fixed responses, forward groups,
//! header rewrites, canary; CORS; ssl-redirect.
use std::{collections::BTreeMap, time::Duration};

use super::{routing::NS, support::*};

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
    let group = r#"[{"type":"ForwardGroup","ForwardConfig":{"ServerGroups":[{"ServiceName":"a","ServicePort":80,"Weight":80},{"ServiceName":"b","ServicePort":80,"Weight":20}]}},{"type":"InsertHeader","InsertHeaderConfig":{"key":"x-from","value":"lb","valueType":"UserDefined"}},{"type":"InsertHeader","InsertHeaderConfig":{"key":"x-client-port","value":"ClientSrcPort","valueType":"SystemDefined"}},{"type":"InsertHeader","InsertHeaderConfig":{"key":"x-client-ip","value":"ClientSrcIp","valueType":"SystemDefined"}},{"type":"InsertHeader","InsertHeaderConfig":{"key":"x-proto","value":"Protocol","valueType":"SystemDefined"}},{"type":"InsertHeader","InsertHeaderConfig":{"key":"x-slb-port","value":"SLBPort","valueType":"SystemDefined"}},{"type":"RemoveHeader","RemoveHeaderConfig":{"key":"x-secret"}}]"#;
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
        // The client connects from loopback: the address text made once per connection.
        assert_eq!(j["headers"]["x-client-ip"], "127.0.0.1");
        assert_eq!(j["headers"]["x-proto"], "http");
        assert_eq!(j["headers"]["x-slb-port"], port.to_string());
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
    assert_eq!(pre.header("vary").as_deref(), Some("Origin"), "a cache keys the answer on the origin");
    assert_eq!(b.hits(), 0, "preflights are answered by the proxy");
    let got = get(&c, port, "api.test", "/x", &[("origin", "https://app.test")]).await;
    assert_eq!((got.status, got.header("access-control-allow-origin").as_deref()), (200, Some("https://app.test")));
    assert_eq!(got.header("vary").as_deref(), Some("Origin"));
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

/// `cors-allow-methods`, `cors-allow-headers`, `cors-expose-headers`: a preflight is
/// answered with the methods and headers written (case as given, methods upper-cased), an
/// answer carries the exposed headers.
#[tokio::test]
async fn cors_methods_and_headers_as_written() {
    let port = free_port();
    let b = echo("b", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(
            NS,
            "cors-lists",
            &[
                ("listen-ports", &lp),
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://app.test"),
                ("cors-allow-methods", "get,POST"),
                ("cors-allow-headers", "X-Token,X-Trace-Id"),
                ("cors-expose-headers", "X-Request-Id"),
            ],
            &rule("lists.test", &[("/", "Prefix", "b")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    let origin = ("origin", "https://app.test");
    let pre = send(&c, "OPTIONS", port, "lists.test", "/", &[origin, ("access-control-request-method", "POST")]).await;
    assert_eq!(pre.status, 204);
    let methods = pre.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("GET") && methods.contains("POST") && !methods.contains("PUT"), "{methods}");
    assert_eq!(pre.header("access-control-allow-headers").as_deref(), Some("X-Token, X-Trace-Id"));
    let got = get(&c, port, "lists.test", "/", &[origin]).await;
    assert_eq!(got.header("access-control-expose-headers").as_deref(), Some("X-Request-Id"));
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
        )
        .replace("spec:\n", "spec:\n  tls:\n  - hosts: [s.test]\n    secretName: cert-s\n")
        + &super::tls::secret("cert-s", &super::tls::leaf(&super::tls::ca(), &["s.test"]))
            .replace("namespace: tls}", &format!("namespace: {NS}}}"));
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

/// A canary rule ranks among the others by its `order` (ALB rule priorities): one with a
/// higher order than the main rules does not take requests they match (it took every
/// request its path matched, `/api` of a main rule with a lower order included); a canary
/// that does not select a request lets it fall through to the rules after it. (At the same
/// order, the default one, a canary comes first: `actions_and_canary`.)
#[tokio::test]
async fn a_canary_ranks_among_the_rules_by_its_order() {
    let port = free_port();
    let (api, root, canary) =
        (echo("api", Duration::ZERO).await, echo("root", Duration::ZERO).await, echo("canary", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "api", &[&api])
        + &service(NS, "root", &[&root])
        + &service(NS, "canary", &[&canary])
        + &ingress(
            NS,
            "main",
            &[("listen-ports", &lp), ("order", "5")],
            &rule("o.test", &[("/api", "Prefix", "api"), ("/", "Prefix", "root")]),
        )
        + &ingress(
            NS,
            "late-canary",
            &[("listen-ports", &lp), ("order", "1000"), ("canary", "true"), ("canary-weight", "100")],
            &rule("o.test", &[("/", "Prefix", "canary")]),
        )
        + &ingress(
            NS,
            "early-canary",
            &[
                ("listen-ports", &lp),
                ("order", "4"),
                ("canary", "true"),
                ("canary-by-header", "x-canary"),
                ("canary-by-header-value", "yes"),
            ],
            &rule("o.test", &[("/api", "Prefix", "canary")]),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    assert_eq!(get(&c, port, "o.test", "/api/x", &[]).await.backend(), "api", "a later canary took /api");
    assert_eq!(get(&c, port, "o.test", "/x", &[]).await.backend(), "root", "a later canary took /");
    assert_eq!(get(&c, port, "o.test", "/api/x", &[("x-canary", "yes")]).await.backend(), "canary");
    assert_eq!(get(&c, port, "o.test", "/api/x", &[("x-canary", "no")]).await.backend(), "api");
}
