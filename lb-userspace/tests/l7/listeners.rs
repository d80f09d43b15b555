//! Listener and backend features through real requests: X-Forwarded-* headers and
//! timeouts, upgrades and h2c, backend protocols, keep-alive and limits, ACLs, gzip.
use std::time::Duration;

use super::{routing::NS, support::*};

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
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "XFF names the client (an untrusted client's copy is dropped)");
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

/// The request timeout counts from the end of the request body (as Envoy's): an upload that
/// takes longer than `request-timeout`, never idle for the body's idle timeout, is answered
/// by the backend, not 504 (it was timed from the request's start).
#[tokio::test]
async fn request_timeout_starts_after_the_request_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = free_port();
    let b = echo("b", Duration::ZERO).await;
    let yaml = clb_service(
        NS,
        "up",
        "127.0.0.7",
        &[("protocol-port", &format!("http:{port}")), ("request-timeout", "1")],
        &[("http", port)],
        &b,
    );
    let _p = proxy(&model(&yaml));
    let mut s = tokio::net::TcpStream::connect(("127.0.0.7", port)).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: up.test\r\nContent-Length: 5\r\n\r\n").await.unwrap();
    for byte in b"hello" {
        tokio::time::sleep(Duration::from_millis(400)).await;
        s.write_all(&[*byte]).await.unwrap();
    }
    let (mut got, mut buf) = (Vec::new(), [0u8; 4096]);
    while !String::from_utf8_lossy(&got).contains("\"body_len\"") {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            r => panic!("{r:?} after {:?}", String::from_utf8_lossy(&got)),
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body\":\"hello\""), "{text}");
}

/// WebSocket-style upgrades are tunnelled, an upgrade to h2c is not; h2c prior knowledge
/// reaches an HTTP/1.1 backend.
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

    // An upgrade to h2c is not passed on (h2c smuggling): a plain request reaches the backend.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(
        b"GET /up HTTP/1.1\r\nHost: u.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\
          Connection: Upgrade, HTTP2-Settings\r\n\r\n",
    )
    .await
    .unwrap();
    let mut text = Vec::new();
    while !text.ends_with(b"}") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&text));
        text.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json: serde_json::Value = serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert!(json["headers"].get("upgrade").is_none(), "{json}");
    assert!(json["headers"].get("http2-settings").is_none(), "{json}");

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
    let secure = get(&c, port, "https.test", "/", &[]).await.json();
    assert_eq!(secure["backend"], "secure over TLS");
    // A TLS backend offering h2 by ALPN is spoken to in HTTP/1.1, with the client's Host (an
    // HTTP/2 hop had the endpoint's address as :authority).
    assert_eq!(
        (secure["version"].as_str(), secure["headers"]["host"].as_str()),
        (Some("HTTP/1.1"), Some("https.test"))
    );
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: https.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "an upgrade to an HTTPS backend: {head}");
    s.write_all(b"tls tunnel").await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"tls tunnel");
    drop(s);

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
