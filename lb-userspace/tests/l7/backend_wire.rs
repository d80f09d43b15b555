//! Plain HTTP/1.1 backends on the wire (the proxy's own HTTP/1.1 client, `l7/h1.rs` and
//! `l7/pool.rs`): bodies by length, chunked (extensions, trailers) and close-delimited,
//! interim 1xx answers, keep-alive connections the backend closes between requests, and
//! malformed answers (conflicting lengths, a bad chunk) turned into 502 or a cut body, a
//! Content-Length beside Transfer-Encoding dropped before the client sees it (and that
//! backend connection not used again), with
//! a raw backend that writes exactly the bytes each case needs.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

use super::support::*;

const NS: &str = "wire";

/// What the raw backend answers to a request for `path`, and whether it then closes.
fn scripted(path: &str) -> (&'static [u8], bool) {
    match path {
        "/length" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Case: length\r\n\r\nhello", false),
        "/chunked" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
        ),
        "/close" => (b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", true),
        "/interim" => (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", false),
        "/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbye!", true),
        "/te-and-length" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            true,
        ),
        "/te-and-length-kept" => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            false,
        ),
        "/two-lengths" => (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello", true),
        "/bad-chunk" => (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", true),
        "/head" => (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", false),
        _ => (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", false),
    }
}

/// A backend reading request heads (GET and HEAD only: no bodies) and writing the scripted
/// bytes; counts the connections it accepted.
async fn raw_backend() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    let (answer, close) = scripted(&path);
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// One raw request on a fresh client connection; the proxy's whole answer.
async fn ask(port: u16, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: wire.test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The body of a response the proxy sent chunked or by length.
fn body(answer: &str) -> String {
    let (head, rest) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return rest.to_owned();
    }
    let mut out = String::new();
    let mut rest = rest;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[tokio::test]
async fn backend_bodies_of_every_framing_are_relayed_and_bad_ones_refused() {
    let (addr, accepted) = raw_backend().await;
    let backend = Echo { addr, hits: Default::default(), seen: Default::default() };
    let port = free_port();
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "raw", &[&backend])
        + &ingress(
            NS,
            "wire",
            &[("listen-ports", &lp), ("backend-keepalive", "true")],
            &rule("", &[("/", "Prefix", "raw")]),
        );
    let _proxy = proxy(&model(&yaml));

    let a = ask(port, "GET", "/length").await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(a.to_ascii_lowercase().contains("x-case: length"), "{a}");
    assert_eq!(body(&a), "hello");
    assert_eq!(body(&ask(port, "GET", "/chunked").await), "hello world");
    let a = ask(port, "GET", "/close").await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert_eq!(body(&a), "until the end");
    let a = ask(port, "GET", "/interim").await;
    assert!(a.starts_with("HTTP/1.1 201"), "{a}");
    assert_eq!(body(&a), "ok");
    // Transfer-Encoding and Content-Length both: the chunked body is relayed whole, and
    // the client is not handed the Content-Length (RFC 9112 6.3: the intermediary drops it).
    let a = ask(port, "GET", "/te-and-length").await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    assert!(!a.to_ascii_lowercase().contains("content-length: 3"), "{a}");
    assert_eq!(body(&a), "hello");
    let a = ask(port, "HEAD", "/head").await;
    assert!(a.starts_with("HTTP/1.1 200") && a.ends_with("\r\n\r\n"), "{a}");

    // Keep-alive: the answers by length and chunked left their connection for the next
    // request; one the backend closed after answering is not reused, and the request
    // after it is still answered.
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(body(&ask(port, "GET", "/length").await), "hello");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), before, "pooled connections were not reused");
    for _ in 0..3 {
        assert_eq!(body(&ask(port, "GET", "/then-close").await), "bye!");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(body(&ask(port, "GET", "/length").await), "hello");
    }

    // A backend that sent Transfer-Encoding and Content-Length both and kept its
    // connection open: the answer is relayed, the connection is not used again (the two
    // framings disagree: a desynchronised connection would hand one client's answer to the
    // next).
    assert_eq!(body(&ask(port, "GET", "/length").await), "hello");
    let before = accepted.load(Ordering::SeqCst);
    assert_eq!(body(&ask(port, "GET", "/te-and-length-kept").await), "hello");
    assert_eq!(body(&ask(port, "GET", "/length").await), "hello");
    assert_eq!(accepted.load(Ordering::SeqCst), before + 1, "a connection that framed an answer two ways was reused");

    // Malformed answers: 502 before a head went out, a cut connection after.
    let a = ask(port, "GET", "/two-lengths").await;
    assert!(a.starts_with("HTTP/1.1 502"), "{a}");
    assert!(!a.contains(&addr.to_string()), "the 502 names the backend: {a}");
    let a = ask(port, "GET", "/bad-chunk").await;
    assert!(!a.contains("hello"), "a bad chunk was relayed: {a}");
    assert_eq!(body(&ask(port, "GET", "/length").await), "hello");
}
