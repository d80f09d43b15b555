//! Abusive clients must not stop normal requests: many half-sent requests and headers sent a
//! byte a second (slowloris), clients that read nothing of large answers, HTTP/2 rapid reset
//! and clients opening more streams than allowed. Request smuggling is in `smuggling.rs`.
use std::time::Duration;

use lb_userspace::l7::Proxy;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{routing::NS, support::*};

pub async fn one_backend(port: u16) -> (Echo, Proxy) {
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

/// Normal requests on fresh connections during `for_how_long`: each must be answered 200
/// within `bound`. Returns how many were made.
async fn normal_requests_stay_fast(port: u16, for_how_long: Duration, bound: Duration) -> usize {
    let c = client();
    let until = std::time::Instant::now() + for_how_long;
    let mut n = 0;
    while std::time::Instant::now() < until {
        let started = std::time::Instant::now();
        let got = get(&c, port, "ab.test", "/", &[("connection", "close")]).await;
        assert_eq!(got.status, 200);
        assert!(started.elapsed() < bound, "a normal request took {:?}", started.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    n
}

/// 200 slowloris connections, each sending one more header byte every second: normal
/// clients are answered within 500 ms throughout, and no slow request reaches the backend.
#[tokio::test]
async fn byte_a_second_headers_do_not_stop_normal_requests() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    let mut loris = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: ab.test\r\n").await.unwrap();
        loris.push(s);
    }
    let drip = tokio::spawn(async move {
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for s in &mut loris {
                let _ = s.write_all(b"x").await;
            }
        }
        loris
    });
    let n = normal_requests_stay_fast(port, Duration::from_secs(5), Duration::from_millis(500)).await;
    assert!(n >= 20, "only {n} normal requests in 5 s");
    drop(drip.await.unwrap());
    assert_eq!(b.hits(), n, "no slow request reached the backend");
}

/// 50 clients ask for an 8 MiB answer and read none of it: normal clients are answered
/// within 500 ms meanwhile.
#[tokio::test]
async fn slow_readers_do_not_stop_normal_requests() {
    let port = free_port();
    let (_b, _p) = one_backend(port).await;
    let mut readers = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        s.write_all(b"GET /huge HTTP/1.1\r\nHost: ab.test\r\n\r\n").await.unwrap();
        readers.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n = normal_requests_stay_fast(port, Duration::from_secs(4), Duration::from_millis(500)).await;
    assert!(n >= 15, "only {n} normal requests in 4 s");
    // The slow readers did get a large answer started: they were served, not refused.
    let mut head = [0u8; 12];
    readers[0].read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// A client opening more streams at once than the server allows (256): the streams past the
/// limit are refused (or the connection closed), the backend never has more than the limit
/// from it in flight, and other clients are served meanwhile.
#[tokio::test]
async fn h2_streams_past_the_limit_are_refused() {
    use super::h2wire::*;
    let b = echo("b", Duration::from_secs(2)).await;
    let port = free_port();
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(NS, "ab", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "b")]));
    let _p = proxy(&model(&yaml));
    let mut s = connect(port).await;
    let mut burst = Vec::new();
    for i in 0..400u32 {
        let block = request_block(false, "/slow", "ab.test", &[]);
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
    }
    s.write_all(&burst).await.unwrap();
    let frames = read_frames(&mut s, Duration::from_millis(1000)).await;
    let refused = frames.iter().filter(|f| f.kind == RST_STREAM && f.error_code() == Some(REFUSED_STREAM)).count();
    let goaway = frames.iter().any(|f| f.kind == GOAWAY);
    assert!(refused >= 400 - 256 || goaway, "{refused} streams refused, no GOAWAY");
    assert!(b.hits() <= 256, "the backend got {} requests of one connection at once", b.hits());
    let started = std::time::Instant::now();
    let got = get(&client(), port, "ab.test", "/", &[]).await;
    assert_eq!(got.status, 200, "other clients are served");
    assert!(started.elapsed() < Duration::from_millis(500), "took {:?}", started.elapsed());
}
