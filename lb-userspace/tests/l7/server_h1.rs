//! The proxy's own HTTP/1.1 server for plain connections (`l7/serve_h1.rs`), on raw sockets:
//! pipelined requests, heads and bodies split across reads, keep-alive after chunked bodies
//! both ways, HEAD and `Connection: close`, and the requests it hands to hyper's server
//! (`Expect`, `Upgrade`, HTTP/1.0) on the same connection, with what was already read.
use std::time::Duration;

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{abuse::one_backend, support::*};

/// One response read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Reads `n` responses from `s` (Content-Length or chunked bodies; none for `head`).
async fn answers(s: &mut TcpStream, n: usize, head: bool) -> Vec<Answer> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while out.len() < n {
        if let Some((answer, used)) = parse_answer(&buf, head) {
            buf.drain(..used);
            out.push(answer);
            continue;
        }
        let mut chunk = [0u8; 16384];
        let read = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await;
        match read {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => {
                panic!("{} of {n} answers, then {:?}", out.len(), String::from_utf8_lossy(&buf))
            }
            Ok(Ok(k)) => buf.extend_from_slice(&chunk[..k]),
        }
    }
    assert!(buf.is_empty(), "bytes after the answers: {:?}", String::from_utf8_lossy(&buf));
    out
}

fn parse_answer(buf: &[u8], head: bool) -> Option<(Answer, usize)> {
    let mut hs = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut hs);
    let httparse::Status::Complete(len) = r.parse(buf).expect("a valid response head") else { return None };
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let rest = &buf[len..];
    if head || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some((Answer { status, headers, body: Vec::new() }, len));
    }
    if get("transfer-encoding").as_deref() == Some("chunked") {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let line_end = rest[at..].windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(std::str::from_utf8(&rest[at..at + line_end]).unwrap(), 16).unwrap();
            at += line_end + 2;
            if rest.len() < at + size + 2 {
                return None;
            }
            body.extend_from_slice(&rest[at..at + size]);
            at += size + 2;
            if size == 0 {
                return Some((Answer { status, headers, body }, len + at));
            }
        }
    }
    let cl: usize = get("content-length").expect("a length or chunked").parse().unwrap();
    if rest.len() < cl {
        return None;
    }
    Some((Answer { status, headers, body: rest[..cl].to_vec() }, len + cl))
}

/// Connections of the listener handed to hyper's server so far.
fn handed(p: &lb_userspace::l7::Proxy) -> u64 {
    p.counters().map(|(_, c)| c.handed_to_hyper.load(std::sync::atomic::Ordering::Relaxed)).sum()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let port = free_port();
    let (b, p) = one_backend(port).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut all = Vec::new();
    for path in ["/one", "/two", "/three"] {
        all.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: ab.test\r\n\r\n").as_bytes());
    }
    s.write_all(&all).await.unwrap();
    let got = answers(&mut s, 3, false).await;
    let uris: Vec<Value> = got.iter().map(|a| a.json()["uri"].clone()).collect();
    assert_eq!(uris, ["/one", "/two", "/three"], "{got:?}");
    assert!(got.iter().all(|a| a.status == 200 && a.header("date").is_some()), "{got:?}");
    assert_eq!(b.hits(), 3);
    assert_eq!(handed(&p), 0, "plain HTTP/1.1 stays on the proxy's own server");
}

/// Header maps are reused once a head is written out (`l7/spare_maps.rs`): nothing of one
/// request reaches the backend with the next, on the same connection or another.
#[tokio::test]
async fn no_field_of_one_request_goes_with_the_next() {
    let port = free_port();
    let (_b, _p) = one_backend(port).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut other = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    for (i, on_other) in [false, false, true, false].into_iter().enumerate() {
        let conn = if on_other { &mut other } else { &mut s };
        let extra = if i == 0 { "X-Only-First: yes\r\nCookie: a=1\r\n" } else { "" };
        conn.write_all(format!("GET /{i} HTTP/1.1\r\nHost: ab.test\r\n{extra}\r\n").as_bytes()).await.unwrap();
        let got = answers(conn, 1, false).await;
        let headers = &got[0].json()["headers"];
        assert_eq!(got[0].json()["uri"], format!("/{i}"));
        if i == 0 {
            assert_eq!(headers["x-only-first"], "yes", "{headers}");
        } else {
            assert!(headers.get("x-only-first").is_none() && headers.get("cookie").is_none(), "request {i}: {headers}");
        }
    }
}

#[tokio::test]
async fn heads_and_bodies_split_across_reads() {
    let port = free_port();
    let (b, p) = one_backend(port).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let pieces: [&[u8]; 6] =
        [b"PO", b"ST /split HTTP/1.1\r\nHo", b"st: ab.test\r\nContent-Le", b"ngth: 11\r\n\r", b"\nhello ", b"world"];
    for piece in pieces {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let got = answers(&mut s, 1, false).await;
    assert_eq!(got[0].status, 200, "{got:?}");
    let seen = got[0].json();
    assert_eq!((seen["uri"].as_str(), seen["body"].as_str()), (Some("/split"), Some("hello world")));
    // The same connection takes the next request.
    s.write_all(b"GET /next HTTP/1.1\r\nHost: ab.test\r\n\r\n").await.unwrap();
    assert_eq!(answers(&mut s, 1, false).await[0].json()["uri"], "/next");
    assert_eq!(b.hits(), 2);
    assert_eq!(handed(&p), 0);
}

#[tokio::test]
async fn keep_alive_after_chunked_bodies_both_ways() {
    let port = free_port();
    let (b, p) = one_backend(port).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // A chunked request body (with an extension and a trailer), then a request behind it.
    s.write_all(
        b"POST /chunked HTTP/1.1\r\nHost: ab.test\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\nGET /after HTTP/1.1\r\nHost: ab.test\r\n\r\n",
    )
    .await
    .unwrap();
    let got = answers(&mut s, 2, false).await;
    assert_eq!(got[0].json()["body"], "hello world", "{got:?}");
    assert_eq!(got[1].json()["uri"], "/after", "{got:?}");
    // A response of unknown length (gzip on the fly) goes chunked, and the connection stays.
    s.write_all(b"GET /big HTTP/1.1\r\nHost: ab.test\r\nAccept-Encoding: gzip\r\n\r\nGET /last HTTP/1.1\r\nHost: ab.test\r\n\r\n")
        .await
        .unwrap();
    let got = answers(&mut s, 2, false).await;
    assert_eq!(got[0].header("transfer-encoding"), Some("chunked"), "{:?}", got[0].headers);
    assert_eq!(got[0].header("content-encoding"), Some("gzip"));
    assert!(got[0].body.starts_with(&[0x1f, 0x8b]), "a gzip stream");
    assert_eq!(got[1].json()["uri"], "/last");
    assert_eq!(b.hits(), 4);
    assert_eq!(handed(&p), 0);
}

#[tokio::test]
async fn head_and_connection_close() {
    let port = free_port();
    let (_b, p) = one_backend(port).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"HEAD /big HTTP/1.1\r\nHost: ab.test\r\n\r\n").await.unwrap();
    let got = answers(&mut s, 1, true).await;
    assert_eq!(got[0].status, 200);
    assert_eq!(got[0].header("content-length"), Some("8800"), "HEAD keeps the length: {:?}", got[0].headers);
    s.write_all(b"GET / HTTP/1.1\r\nHost: ab.test\r\nConnection: close\r\n\r\n").await.unwrap();
    let got = answers(&mut s, 1, false).await;
    assert_eq!(got[0].header("connection"), Some("close"));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert_eq!(n, 0, "the proxy closed the connection after the answer");
    assert_eq!(handed(&p), 0);
}

#[tokio::test]
async fn errors_of_the_pipeline_come_back_on_the_same_connection() {
    let port = free_port();
    let (b, p) = one_backend(port).await;
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // A target naming another host than Host (400), a path above the root (400), then a
    // good request.
    s.write_all(
        b"GET http://other.test/ HTTP/1.1\r\nHost: ab.test\r\n\r\nGET /../x HTTP/1.1\r\nHost: ab.test\r\n\r\nGET / HTTP/1.1\r\nHost: ab.test\r\n\r\n",
    )
    .await
    .unwrap();
    let got = answers(&mut s, 3, false).await;
    let statuses: Vec<u16> = got.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [400, 400, 200], "{got:?}");
    assert!(String::from_utf8_lossy(&got[0].body).contains("another host"), "{got:?}");
    assert_eq!(b.hits(), 1);
    assert_eq!(handed(&p), 0);
}

#[tokio::test]
async fn expect_upgrade_and_http10_go_to_hyper_with_what_was_read() {
    let port = free_port();
    let (b, p) = one_backend(port).await;
    // A request on the own server, then one with Expect on the same connection: hyper takes
    // the connection from there, with the bytes already read.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /first HTTP/1.1\r\nHost: ab.test\r\n\r\n").await.unwrap();
    assert_eq!(answers(&mut s, 1, false).await[0].json()["uri"], "/first");
    assert_eq!(handed(&p), 0);
    // One answer in one write: Nagle is still on (it is turned off before a second write).
    let client = s.local_addr().unwrap();
    assert_eq!(proxy_side_nodelay(port, client, false).await, Some(false));
    s.write_all(b"POST /expect HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let cont = answers(&mut s, 1, false).await;
    assert_eq!(cont[0].status, 100, "{cont:?}");
    s.write_all(b"hello").await.unwrap();
    let got = answers(&mut s, 1, false).await;
    assert_eq!(got[0].json()["body"], "hello", "{got:?}");
    assert_eq!(handed(&p), 1);
    // hyper's server writes in many small writes: Nagle is off once it has the connection.
    assert_eq!(proxy_side_nodelay(port, client, true).await, Some(true));
    // An upgrade: switched and tunnelled by hyper's server.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: ab.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n").await.unwrap();
    let got = answers(&mut s, 1, false).await;
    assert_eq!(got[0].status, 101, "{got:?}");
    s.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"ping");
    assert_eq!(handed(&p), 2);
    // HTTP/1.0.
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /old HTTP/1.0\r\nHost: ab.test\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut all)).await.unwrap().unwrap();
    assert!(all.starts_with(b"HTTP/1.0 200"), "{:?}", String::from_utf8_lossy(&all));
    assert_eq!(handed(&p), 3);
    // /first, /expect, /ws and /old.
    assert_eq!(b.hits(), 4);
}
