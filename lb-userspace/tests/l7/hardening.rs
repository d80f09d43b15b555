//! Requests as an attacker would send them: unnormalised paths, a Host that disagrees with
//! the request target, forged forwarding headers; and error bodies that must not leak
//! backend addresses.
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use lb_userspace::l7::Proxy;

use super::{routing::NS, support::*};

/// One Ingress on `port`: `/admin` Exact and `/tea` Prefix to their own Services, host
/// `a.test` only.
async fn two_rules(port: u16) -> (Echo, Echo, Proxy) {
    let (admin, tea) = (echo("admin", Duration::ZERO).await, echo("tea", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "admin", &[&admin])
        + &service(NS, "tea", &[&tea])
        + &ingress(
            NS,
            "h",
            &[("listen-ports", &lp)],
            &rule("a.test", &[("/admin", "Exact", "admin"), ("/tea", "Prefix", "tea")]),
        );
    let p = proxy(&model(&yaml));
    (admin, tea, p)
}

#[tokio::test]
async fn paths_are_normalised_before_matching_and_forwarded_as_matched() {
    let port = free_port();
    let (admin, tea, _p) = two_rules(port).await;
    let c = client();
    for (sent, backend, seen) in [
        ("/tea/../admin", "admin", "/admin"),
        ("//admin", "admin", "/admin"),
        ("/./admin", "admin", "/admin"),
        ("/%61dmin", "admin", "/admin"),
        ("/tea/x/../../admin", "admin", "/admin"),
        ("/../../admin", "admin", "/admin"),
        ("/tea//cup/./", "tea", "/tea/cup/"),
        ("/tea/%2e%2e/admin", "admin", "/admin"),
    ] {
        let got = get(&c, port, "a.test", sent, &[]).await;
        assert_eq!(got.status, 200, "{sent}: {}", got.body);
        assert_eq!(got.backend(), backend, "{sent}");
        assert_eq!(got.uri(), seen, "{sent}");
    }
    // An escape that is not an unreserved character stays encoded (no new segment).
    let got = get(&c, port, "a.test", "/admin%2Fx", &[]).await;
    assert_eq!(got.status, 503, "{}", got.body);
    assert_eq!((admin.hits(), tea.hits()), (7, 1));
}

/// HTTP/1.1 absolute-form: the URI's authority decides the route and is the Host the
/// backend receives, whatever Host header the client added.
#[tokio::test]
async fn the_backend_gets_the_host_the_route_matched() {
    let port = free_port();
    let (_admin, _tea, _p) = two_rules(port).await;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET http://a.test/tea HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(json["backend"], "tea");
    assert_eq!(json["headers"]["host"], "a.test", "{json}");
}

/// Forwarding headers are the listener's: a CLB listener that adds none passes none of
/// the client's on; X-Forwarded-For is appended to.
#[tokio::test]
async fn forged_forwarding_headers_are_removed() {
    let port = free_port();
    let web = echo("web", Duration::ZERO).await;
    let vip = "127.0.0.9";
    let yaml = clb_service(NS, "plain", vip, &[("protocol-port", &format!("http:{port}"))], &[("http", port)], &web);
    let _p = proxy(&model(&yaml));
    let c = client();
    let req = http::Request::get(format!("http://{vip}:{port}/"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-host", "bank.test")
        .header("x-real-ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .body(Default::default())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes()).unwrap();
    let h = &body["headers"];
    for name in ["x-forwarded-proto", "x-forwarded-port", "x-forwarded-host", "x-real-ip", "forwarded"] {
        assert!(h.get(name).is_none(), "{name} reached the backend: {h}");
    }
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
}

/// A backend that refuses connections: 502 without its address in the body.
#[tokio::test]
async fn error_bodies_do_not_name_backends() {
    let port = free_port();
    // Nothing listens there.
    let dead_port = free_port();
    let dead = Echo { addr: ([127, 0, 0, 1], dead_port).into(), hits: Default::default() };
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "dead", &[&dead])
        + &ingress(NS, "d", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "dead")]));
    let _p = proxy(&model(&yaml));
    let got = get(&client(), port, "d.test", "/", &[]).await;
    assert_eq!(got.status, 502, "{}", got.body);
    assert!(!got.body.contains("127.0.0.1") && !got.body.contains(&dead_port.to_string()), "{}", got.body);
}

/// An Ingress of another namespace cannot take a host and path an older Ingress serves,
/// not even with a lower `order`; Ingresses of one namespace still share hosts.
#[tokio::test]
async fn a_host_and_path_belong_to_the_oldest_ingress_across_namespaces() {
    let port = free_port();
    let (shop, evil) = (echo("shop", Duration::ZERO).await, echo("evil", Duration::ZERO).await);
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let created = |yaml: String, ns: &str, ts: &str| {
        yaml.replacen(
            &format!("  namespace: {ns}\n"),
            &format!("  namespace: {ns}\n  creationTimestamp: \"{ts}\"\n"),
            1,
        )
    };
    let yaml = alb_class(&[(port, "HTTP")])
        + &service("shop", "web", &[&shop])
        + &service("evil", "web", &[&evil])
        + &created(
            ingress("shop", "store", &[("listen-ports", &lp)], &rule("shop.test", &[("/", "Prefix", "web")])),
            "shop",
            "2026-01-01T00:00:00Z",
        )
        + &created(
            ingress(
                "evil",
                "grab",
                &[("listen-ports", &lp), ("order", "1")],
                &rule("shop.test", &[("/", "Prefix", "web")]),
            ),
            "evil",
            "2026-06-01T00:00:00Z",
        )
        + &created(
            ingress(
                "shop",
                "api",
                &[("listen-ports", &lp), ("order", "5")],
                &rule("shop.test", &[("/api", "Prefix", "web")]),
            ),
            "shop",
            "2026-07-01T00:00:00Z",
        );
    let b = build(&yaml);
    let errors: Vec<String> = b.errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        errors,
        [
            "Ingress evil/grab: spec.rules: host shop.test path Prefix / is already served for Ingress shop/store (created earlier, in another namespace)"
        ],
    );
    let _p = proxy(&b.model);
    let c = client();
    assert_eq!(get(&c, port, "shop.test", "/", &[]).await.backend(), "shop");
    assert_eq!(get(&c, port, "shop.test", "/api/x", &[]).await.backend(), "shop", "one namespace shares its hosts");
    assert_eq!(evil.hits(), 0);
}
