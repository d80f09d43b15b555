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
    // A path that climbs above the root is refused, as nginx refuses it.
    for sent in ["/../admin", "/tea/../../admin", "/%2e%2e/admin", "/tea/.%2E/..//admin"] {
        let got = get(&c, port, "a.test", sent, &[]).await;
        assert_eq!(got.status, 400, "{sent}: {}", got.body);
        assert!(got.body.contains("above the root"), "{sent}: {}", got.body);
    }
    assert_eq!((admin.hits(), tea.hits()), (6, 1));
}

/// Sends `raw` on a fresh connection; the proxy's answer (status line, headers, body).
async fn raw(port: u16, raw: &[u8]) -> String {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// The route is chosen by the host of the request target and the backend gets that host;
/// a request whose Host header names another host than its absolute-form target, or that
/// has two Host headers, or (HTTP/1.1) none, is refused with 400 before routing.
#[tokio::test]
async fn the_backend_gets_the_host_the_route_matched() {
    let port = free_port();
    let (admin, tea, _p) = two_rules(port).await;
    let text = raw(port, b"GET http://a.test/tea HTTP/1.1\r\nHost: A.TEST:80\r\nConnection: close\r\n\r\n").await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(json["backend"], "tea");
    assert_eq!(json["headers"]["host"], "a.test", "{json}");
    for (what, req) in [
        (
            "a Host naming another host",
            &b"GET http://a.test/tea HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n"[..],
        ),
        (
            "a Host naming another port",
            b"GET http://a.test/tea HTTP/1.1\r\nHost: a.test:8080\r\nConnection: close\r\n\r\n",
        ),
        ("two Host headers", b"GET /tea HTTP/1.1\r\nHost: a.test\r\nHost: evil.test\r\nConnection: close\r\n\r\n"),
        ("no Host header", b"GET /tea HTTP/1.1\r\nConnection: close\r\n\r\n"),
        ("a Host with userinfo", b"GET /tea HTTP/1.1\r\nHost: evil.test@a.test\r\nConnection: close\r\n\r\n"),
        (
            "a target with userinfo",
            b"GET http://evil.test@a.test/tea HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n",
        ),
    ] {
        let text = raw(port, req).await;
        assert!(text.starts_with("HTTP/1.1 400"), "{what}: {text}");
    }
    assert_eq!((admin.hits(), tea.hits()), (0, 1));
}

/// The Host the backend gets is never the endpoint's address: a client's `Connection: host`
/// does not remove it, and a request without one (HTTP/1.0) gets the address it was sent to.
#[tokio::test]
async fn the_backend_gets_a_host_even_when_the_client_names_it_hop_by_hop_or_sends_none() {
    let port = free_port();
    let any = echo("any", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "any", &[&any])
        + &ingress(NS, "h", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "any")]));
    let _p = proxy(&model(&yaml));
    let host = |text: &str| {
        let (head, body) = text.split_once("\r\n\r\n").expect("a response");
        assert!(head.contains(" 200 "), "{text}");
        let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{text}"));
        json["headers"]["host"].as_str().unwrap_or_default().to_owned()
    };
    let text = raw(port, b"GET / HTTP/1.1\r\nHost: shop.test\r\nConnection: close, host\r\n\r\n").await;
    assert_eq!(host(&text), "shop.test");
    let text = raw(port, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(host(&text), format!("127.0.0.1:{port}"));
    assert_eq!(any.hits(), 2);
}

/// An HTTP/2 (h2c prior knowledge) client connection to `port`, ready to send.
async fn h2c(port: u16) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    send.ready().await.unwrap()
}

/// The whole body of an HTTP/2 answer, its window given back as it comes.
async fn h2_body(mut body: h2::RecvStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    bytes
}

/// HTTP/2 clients send each cookie in a field of its own: an HTTP/1.1 backend gets them in
/// one `Cookie` (RFC 6265 5.4). A HEAD answer over HTTP/2 is a head alone, also when the
/// proxy makes it (no DATA frame: clients take one as a protocol error).
#[tokio::test]
async fn http2_cookies_are_joined_and_head_answers_have_no_body() {
    let port = free_port();
    let (_admin, tea, _p) = two_rules(port).await;
    let mut send = h2c(port).await;
    let req = http::Request::get("http://a.test/tea").header("cookie", "a=1").header("cookie", "b=2").body(()).unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&h2_body(resp.await.unwrap().into_body()).await).unwrap();
    assert_eq!(json["headers"]["cookie"], "a=1; b=2", "{json}");
    for (path, status) in [("/tea", 200), ("/nowhere", 503)] {
        let req = http::Request::head(format!("http://a.test{path}")).body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), status, "{path}");
        assert!(resp.body().is_end_stream(), "{path}: the answer's HEADERS end the stream");
    }
    assert_eq!(tea.hits(), 2);
}

/// A GET with a chunked body (a search query, as Elasticsearch takes) reaches the backend
/// with its body.
#[tokio::test]
async fn a_get_body_of_unknown_length_is_forwarded() {
    let port = free_port();
    let (_admin, tea, _p) = two_rules(port).await;
    let text = raw(
        port,
        b"GET /tea HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nquery\r\n0\r\n\r\n",
    )
    .await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{text}");
    let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_else(|_| panic!("{text}"));
    assert_eq!(json["body"], "query", "{json}");
    assert_eq!(tea.hits(), 1);
}

/// HTTP/2 (h2c prior knowledge): `:authority` routes; a `host` field that disagrees with
/// it is refused (RFC 9113 8.3.1), one that agrees reaches the backend as the Host.
#[tokio::test]
async fn http2_authority_and_host_must_agree() {
    let port = free_port();
    let (_admin, tea, _p) = two_rules(port).await;
    let mut send = h2c(port).await;
    let mut ask = async |host: &str| {
        let req = http::Request::get("http://a.test/tea").header("host", host).body(()).unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        let status = resp.status().as_u16();
        (status, String::from_utf8_lossy(&h2_body(resp.into_body()).await).into_owned())
    };
    let (status, body) = ask("evil.test").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = ask("a.test").await;
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((json["backend"].as_str(), json["headers"]["host"].as_str()), (Some("tea"), Some("a.test")));
    assert_eq!(tea.hits(), 1);
}

/// A GET to the CLB listener `vip:port` with every forwarding header forged, in both
/// spellings; the headers the backend saw.
async fn forged(vip: &str, port: u16) -> serde_json::Value {
    let req = http::Request::get(format!("http://{vip}:{port}/"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-for", "198.51.100.7")
        .header("x_forwarded_for", "203.0.113.8")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-port", "443")
        .header("x-forwarded-host", "bank.test")
        .header("x-real-ip", "203.0.113.9")
        .header("x_real_ip", "203.0.113.9")
        .header("forwarded", "for=203.0.113.9;proto=https")
        .body(Default::default())
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value =
        serde_json::from_slice(&http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes()).unwrap();
    body["headers"].clone()
}

/// Forwarding headers are the listener's: a CLB listener that adds none passes none of
/// the client's on, and X-Forwarded-For names the client alone; from a trusted proxy they
/// are kept (X-Forwarded-For appended to, the listener's own headers overwriting).
#[tokio::test]
async fn forged_forwarding_headers_are_removed_unless_the_client_is_trusted() {
    let port = free_port();
    let web = echo("web", Duration::ZERO).await;
    let vip = "127.0.0.9";
    let yaml = clb_service(
        NS,
        "plain",
        vip,
        &[("protocol-port", &format!("http:{port}")), ("xforwardedfor-proto", "on")],
        &[("http", port)],
        &web,
    );
    let m = model(&yaml);
    let mut p = proxy(&m);
    let h = forged(vip, port).await;
    for name in ["x-forwarded-port", "x-forwarded-host", "x-real-ip", "x_real_ip", "forwarded", "x_forwarded_for"] {
        assert!(h.get(name).is_none(), "{name} reached the backend: {h}");
    }
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "the listener's own value: {h}");
    p.shutdown();
    drop(p);

    let port = free_port();
    let yaml = clb_service(
        NS,
        "plain",
        vip,
        &[("protocol-port", &format!("http:{port}")), ("xforwardedfor-proto", "on")],
        &[("http", port)],
        &web,
    );
    let mut trusting =
        Proxy::new(vec!["127.0.0.1".parse().unwrap()]).with_trusted_proxies(vec!["127.0.0.0/8".parse().unwrap()]);
    assert!(trusting.apply(&model(&yaml).l7).is_empty());
    let h = forged(vip, port).await;
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.51.100.7, 127.0.0.1", "every field of it, in order: {h}");
    assert_eq!(h["x-forwarded-host"], "bank.test", "{h}");
    assert_eq!(h["forwarded"], "for=203.0.113.9;proto=https", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http", "the listener's own value: {h}");
}

/// A backend that takes connections and answers each with `reply` (nothing if `None`,
/// keeping the connection open).
async fn bad_backend(reply: Option<&'static [u8]>) -> Echo {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            match reply {
                Some(r) => {
                    let _ = s.write_all(r).await;
                }
                None => held.push(s),
            }
        }
    });
    Echo { addr, hits: Default::default(), seen: Default::default() }
}

/// Backends that refuse connections, answer garbage or do not answer: 502 and 504 with a
/// fixed body, without the backend's address or the error the proxy met (that is logged).
#[tokio::test]
async fn error_bodies_do_not_name_backends() {
    let port = free_port();
    // Nothing listens there.
    let dead_port = free_port();
    let dead = Echo { addr: ([127, 0, 0, 1], dead_port).into(), hits: Default::default(), seen: Default::default() };
    let garbage = bad_backend(Some(b"SMTP ready 127.0.0.1\r\n\r\n")).await;
    let silent = bad_backend(None).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class_with(&[(port, "HTTP")], "    requestTimeout: 1\n")
        + &service(NS, "dead", &[&dead])
        + &service(NS, "garbage", &[&garbage])
        + &service(NS, "silent", &[&silent])
        + &ingress(
            NS,
            "d",
            &[("listen-ports", &lp)],
            &rule(
                "",
                &[("/dead", "Prefix", "dead"), ("/garbage", "Prefix", "garbage"), ("/silent", "Prefix", "silent")],
            ),
        );
    let _p = proxy(&model(&yaml));
    let c = client();
    for (path, status, body, backend) in [
        ("/dead", 502, "502 Bad Gateway: the backend could not be reached\n", &dead),
        ("/garbage", 502, "502 Bad Gateway: the backend could not be reached\n", &garbage),
        ("/silent", 504, "504 Gateway Timeout: the backend did not answer within 1s\n", &silent),
    ] {
        let got = get(&c, port, "d.test", path, &[]).await;
        assert_eq!((got.status, got.body.as_str()), (status, body), "{path}");
        assert!(!got.body.contains(&backend.addr.port().to_string()), "{path}: {}", got.body);
    }
}
