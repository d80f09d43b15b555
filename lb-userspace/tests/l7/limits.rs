//! The proxy's limits through real connections: connections per client, the request body
//! size, idle tunnels.
use std::time::Duration;

use lb_userspace::l7::{Limits, Proxy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{routing::NS, support::*};

/// One ALB listener on `port` forwarding everything to one echo backend, under `limits`.
async fn listener(port: u16, limits: Limits) -> Proxy {
    let b = echo("b", Duration::ZERO).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(NS, "lim", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "b")]));
    let mut p = Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], limits);
    let errors = p.apply(&model(&yaml).l7);
    assert!(errors.is_empty(), "{errors:?}");
    p
}

/// Sends one HTTP/1.1 request on `s` and returns the status line ("" when the connection
/// was closed without an answer).
async fn status_line(s: &mut TcpStream, req: &[u8]) -> String {
    if s.write_all(req).await.is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: lim.test\r\n\r\n";

#[tokio::test]
async fn a_client_over_its_connection_limit_is_refused_until_one_closes() {
    let port = free_port();
    let _p = listener(port, Limits { max_connections_per_client: 2, ..Limits::default() }).await;
    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut second = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(status_line(&mut first, GET).await.starts_with("HTTP/1.1 200"));
    assert!(status_line(&mut second, GET).await.starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(status_line(&mut third, GET).await, "", "the third connection is closed unanswered");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(status_line(&mut again, GET).await.starts_with("HTTP/1.1 200"), "a freed place is taken again");
    assert!(status_line(&mut second, GET).await.starts_with("HTTP/1.1 200"), "admitted connections go on");
}

/// A connection turned into a tunnel (WebSocket) keeps its place under the limits until the
/// tunnel closes: the HTTP connection ends when it hands its socket over, and the tunnels
/// were not counted (one client could hold any number of them open).
#[tokio::test]
async fn tunnels_count_against_the_connection_limit() {
    const UPGRADE: &[u8] = b"GET /ws HTTP/1.1\r\nHost: lim.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n";
    let port = free_port();
    let _p = listener(port, Limits { max_connections_per_client: 2, ..Limits::default() }).await;
    let mut first = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut second = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(status_line(&mut first, UPGRADE).await.starts_with("HTTP/1.1 101"));
    assert!(status_line(&mut second, UPGRADE).await.starts_with("HTTP/1.1 101"));
    let mut third = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert_eq!(status_line(&mut third, UPGRADE).await, "", "a third connection beside two tunnels");
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut again = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    assert!(status_line(&mut again, GET).await.starts_with("HTTP/1.1 200"), "a closed tunnel frees its place");
    second.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping", "the tunnel that stayed goes on");
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413() {
    let port = free_port();
    let _p = listener(port, Limits { max_body_bytes: 1024, ..Limits::default() }).await;
    let c = client();
    let small = send_body(&c, port, vec![b'x'; 1024]).await;
    assert_eq!(small, 200);
    let big = send_body(&c, port, vec![b'x'; 1025]).await;
    assert_eq!(big, 413);
}

async fn send_body(c: &HttpClient, port: u16, body: Vec<u8>) -> u16 {
    let req = http::Request::post(format!("http://127.0.0.1:{port}/upload"))
        .header("host", "lim.test")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    c.request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn an_idle_tunnel_is_closed() {
    let port = free_port();
    let _p = listener(port, Limits { tunnel_idle: Duration::from_secs(1), ..Limits::default() }).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head =
        status_line(&mut s, b"GET /ws HTTP/1.1\r\nHost: lim.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
            .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Traffic keeps it open past the idle time...
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf, b"ping");
    }
    // ...silence closes it.
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed within the idle time");
    assert_eq!(n.unwrap_or(0), 0, "the tunnel was closed");
}

/// A backend that answers its headers and a first part of the body, then stalls: the proxy
/// cuts the response off after `body_idle` instead of holding the client forever.
#[tokio::test]
async fn a_stalled_response_body_is_cut_off() {
    let port = free_port();
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = Echo { addr: stall.local_addr().unwrap(), hits: Default::default(), seen: Default::default() };
    tokio::spawn(async move {
        while let Ok((mut s, _)) = stall.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nfirst part").await;
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "stall", &[&backend])
        + &ingress(NS, "st", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "stall")]));
    let limits = Limits { body_idle: Duration::from_secs(1), ..Limits::default() };
    let mut p = Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], limits);
    assert!(p.apply(&model(&yaml).l7).is_empty());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: st.test\r\n\r\n").await.unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the client was held past the body idle limit");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200") && text.ends_with("first part"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off after {:?}", started.elapsed());
}

/// Request headers sent one byte at a time (slowloris): the connection is closed when the
/// header timeout ends, with no request made of it.
#[tokio::test]
async fn headers_that_take_too_long_are_cut_off() {
    let port = free_port();
    let _p = listener(port, Limits { header_timeout: Duration::from_secs(1), ..Limits::default() }).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = std::time::Instant::now();
    let mut closed_after = None;
    for b in
        b"GET / HTTP/1.1\r\nHost: lim.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter().cycle().take(200)
    {
        if s.write_all(&[*b]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            assert!(matches!(r, Ok(0) | Err(_)) || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"));
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let after = closed_after.expect("the slow headers were never cut off");
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(4), "cut off after {after:?}");
}

/// A request body that stops half way: the proxy answers 408 after the body idle time
/// instead of holding the connection and the backend's.
#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let port = free_port();
    let _p = listener(port, Limits { body_idle: Duration::from_secs(1), ..Limits::default() }).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let started = std::time::Instant::now();
    let head =
        status_line(&mut s, b"POST /upload HTTP/1.1\r\nHost: lim.test\r\nContent-Length: 100\r\n\r\nonly ten b").await;
    assert!(head.starts_with("HTTP/1.1 408"), "{head:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "answered after {:?}", started.elapsed());
}

/// A chunked body (no Content-Length to refuse it by) that grows past the limit gets 413, and
/// the backend never gets a whole request.
#[tokio::test]
async fn a_chunked_body_over_the_limit_gets_413() {
    let b = echo("b", Duration::ZERO).await;
    let port = free_port();
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "b", &[&b])
        + &ingress(NS, "lim", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "b")]));
    let mut p =
        Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], Limits { max_body_bytes: 1024, ..Limits::default() });
    assert!(p.apply(&model(&yaml).l7).is_empty());
    let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req =
        format!("POST /upload HTTP/1.1\r\nHost: lim.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    let head = status_line(&mut s, req.as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head:?}");
    assert!(b.seen().iter().all(|r| r["body_len"].as_u64() <= Some(1024)), "{:?}", b.seen());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("POST /upload HTTP/1.1\r\nHost: lim.test\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}0\r\n\r\n");
    assert!(status_line(&mut s, req.as_bytes()).await.starts_with("HTTP/1.1 200"), "at the limit");
}

/// A client that asks for a large answer and reads none of it is cut off after the body idle
/// time: it holds no backend connection and no buffers forever.
#[tokio::test]
async fn a_client_that_reads_nothing_is_cut_off() {
    let port = free_port();
    let big = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = Echo { addr: big.local_addr().unwrap(), hits: Default::default(), seen: Default::default() };
    let stopped = std::sync::Arc::new(tokio::sync::Notify::new());
    let on_stop = stopped.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = big.accept().await {
            let on_stop = on_stop.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n").await;
                let chunk = vec![b'x'; 64 * 1024];
                while s.write_all(&chunk).await.is_ok() {}
                on_stop.notify_one();
            });
        }
    });
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "big", &[&backend])
        + &ingress(NS, "big", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "big")]));
    let limits = Limits { body_idle: Duration::from_secs(1), ..Limits::default() };
    let mut p = Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], limits);
    assert!(p.apply(&model(&yaml).l7).is_empty());
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: big.test\r\n\r\n").await.unwrap();
    // The backend's connection is closed by the proxy within a few seconds of the stall.
    tokio::time::timeout(Duration::from_secs(8), stopped.notified()).await.expect("the backend was held");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await.expect("client still held");
    assert!(got.len() < 1 << 30, "the whole answer came through");
}

/// A request answered before its body was read (413 on its Content-Length): the client,
/// still sending that body, gets the answer and a clean end. The proxy reads and drops what
/// comes for a while before it closes (a lingering close, as nginx's): closing a socket
/// with unread data resets the connection, and the client could lose the answer with it.
#[tokio::test]
async fn a_client_still_sending_a_refused_body_gets_the_answer() {
    let port = free_port();
    let _p = listener(port, Limits { max_body_bytes: 1024, ..Limits::default() }).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: lim.test\r\nContent-Length: 262144\r\n\r\n").await.unwrap();
    // The answer written and the proxy at its close before the body comes.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let chunk = vec![b'x'; 4096];
    for i in 0..64 {
        s.write_all(&chunk).await.unwrap_or_else(|e| panic!("the body's chunk {i}: {e}"));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let head = String::from_utf8_lossy(&got).lines().next().unwrap_or_default().to_owned();
    assert!(head.starts_with("HTTP/1.1 413"), "{head:?}, {read:?}");
    assert!(matches!(read, Ok(Ok(_))), "the connection ended with {read:?}");
    // The answer says the connection ends: the client must not send another request on it.
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(text.contains("\r\nconnection: close\r\n"), "{text:?}");
}

/// An HTTP/2 client that keeps its flow-control window shut (SETTINGS_INITIAL_WINDOW_SIZE 0,
/// no WINDOW_UPDATE) while it reads the socket: nothing blocks on the proxy's side, but the
/// answer waits on the client. The connection is closed after the body idle time instead of
/// holding the stream, and the backend connection behind it, for ever.
#[tokio::test]
async fn an_http2_client_that_never_opens_its_window_is_cut_off() {
    use super::h2wire::{END_HEADERS, END_STREAM, HEADERS, frame, request_block};
    let port = free_port();
    let _p = listener(port, Limits { body_idle: Duration::from_secs(1), ..Limits::default() }).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(super::h2wire::PREFACE).await.unwrap();
    // SETTINGS_INITIAL_WINDOW_SIZE (0x4) = 0.
    s.write_all(&frame(4, 0, 0, &[0, 4, 0, 0, 0, 0])).await.unwrap();
    s.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &request_block(false, "/big", "lim.test", &[])))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = false;
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answered |= buf[..n].windows(2).any(|w| w == [0x01, 0x04] || w == [0x01, 0x05]),
            Err(_) => break false,
        }
    };
    assert!(answered, "the answer's HEADERS came");
    assert!(closed, "the connection was held with the answer waiting on the client");
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
}
