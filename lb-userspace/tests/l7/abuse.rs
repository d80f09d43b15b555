//! Abusive clients: many half-sent requests (slowloris) must not stop normal requests;
//! ambiguous framing (obs-fold, two lengths, bad lengths, unknown transfer codings) is
//! refused before anything reaches a backend, and Content-Length with chunked is normalised
//! (chunked wins, nothing after it is taken as a request).
use std::time::Duration;

use lb_userspace::l7::Proxy;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{routing::NS, support::*};

async fn one_backend(port: u16) -> (Echo, Proxy) {
    let b = echo("b", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(NS, "ab", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "b")]));
    let p = proxy(&model(&yaml));
    (b, p)
}

#[tokio::test]
async fn half_sent_requests_do_not_stop_normal_ones() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    let mut loris = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: ab.test\r\nX-Slow: ").await.unwrap();
        loris.push(s);
    }
    let c = client();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let got = get(&c, port, "ab.test", "/", &[]).await;
        assert_eq!(got.status, 200);
        assert!(started.elapsed() < Duration::from_secs(2), "a normal request took {:?}", started.elapsed());
    }
    assert_eq!(b.hits(), 20, "no half-sent request reached the backend");
}

/// Sends `raw` on a fresh connection and returns every status code the proxy answered.
async fn statuses(port: u16, raw: &[u8]) -> Vec<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw).await.unwrap();
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out)
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| String::from_utf8_lossy(&out)[i + 9..].get(..3)?.parse().ok())
        .collect()
}

#[tokio::test]
async fn ambiguous_framing_is_refused_or_normalised() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    let corpus: &[(&str, &[u8])] = &[
        (
            "Content-Length and Transfer-Encoding",
            b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ab.test\r\n\r\n",
        ),
        (
            "two different Content-Lengths",
            b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcdGET /smuggled HTTP/1.1\r\nHost: ab.test\r\n\r\n",
        ),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: ab.test\r\nX-Folded: a\r\n b\r\n\r\n"),
        ("a Transfer-Encoding that is not chunked", b"POST / HTTP/1.1\r\nHost: ab.test\r\nTransfer-Encoding: gzip\r\n\r\nabcd"),
        ("a space before the colon", b"GET / HTTP/1.1\r\nHost: ab.test\r\nContent-Length : 5\r\n\r\nhello"),
        ("a negative length", b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: -1\r\n\r\n"),
    ];
    for (what, raw) in corpus {
        let before = b.hits();
        let got = statuses(port, raw).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let forwarded = b.hits() - before;
        // Never a request the proxy did not answer for (one hidden in a body).
        let answered = got.iter().filter(|s| (200..300).contains(*s)).count();
        assert_eq!(forwarded, answered, "{what}: answered {got:?}, backend saw {forwarded}");
        if what.starts_with("Content-Length and Transfer-Encoding") {
            // Normalised: chunked wins, the length is dropped, the rest is not a request.
            assert_eq!(got, [200], "{what}");
        } else {
            assert_eq!(got, [400], "{what}: refused");
        }
    }
}

/// HTTP/2 rapid reset (CVE-2023-44487): a client that opens and resets streams as fast as it
/// can loses its connection, the backends see a bounded share of its requests, and other
/// clients are served meanwhile.
#[tokio::test]
async fn h2_rapid_reset_is_bounded() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (h2c, conn) = h2::client::handshake(tcp).await.unwrap();
    let driver = tokio::spawn(conn);
    // One honest request first: the server's SETTINGS (its stream limit) are then known.
    let mut h2c = h2c.ready().await.unwrap();
    let (resp, _) =
        h2c.send_request(http::Request::get(format!("http://ab.test:{port}/")).body(()).unwrap(), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    let held = h2c.clone();
    for _ in 0..10_000 {
        let req = http::Request::get(format!("http://ab.test:{port}/")).body(()).unwrap();
        let Ok(Ok(ready)) = tokio::time::timeout(Duration::from_secs(5), h2c.ready()).await else { break };
        h2c = ready;
        match h2c.send_request(req, true) {
            Ok((_resp, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => break,
        }
    }
    // The client still holds its side: only the server can have ended the connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    assert!(ended.is_ok(), "the abusive connection is still open");
    assert!(b.hits() < 1_000, "the backend saw {} of the reset requests", b.hits());
    drop(held);
    let got = get(&client(), port, "ab.test", "/", &[]).await;
    assert_eq!(got.status, 200, "other clients are served");
}
