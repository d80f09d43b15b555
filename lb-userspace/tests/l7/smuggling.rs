//! Request smuggling: HTTP/1.1 framing a proxy and a backend could read two ways (CL/TE
//! conflicts, two lengths, obs-fold, chunk sizes that overflow, whitespace before the colon)
//! and HTTP/2 requests that would inject headers or framing when sent on as HTTP/1.1 (CR/LF
//! in values, `transfer-encoding`, `connection`). Each is refused (400, or the HTTP/2 stream
//! reset) or normalised, asserted on what the backend received.
use std::time::Duration;

use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{abuse::one_backend, h2wire::*, support::*};

/// Sends `raw` on a fresh connection and returns every status code the proxy answered.
async fn statuses(port: u16, raw: &[u8]) -> Vec<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(raw).await.unwrap();
    let _ = s.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.match_indices("HTTP/1.1 ").filter_map(|(i, _)| text[i + 9..].get(..3)?.parse().ok()).collect()
}

/// What the backend received since `before` requests.
fn received_since(b: &Echo, before: usize) -> Vec<Value> {
    b.seen().split_off(before)
}

const REFUSED_H1: &[(&str, &[u8])] = &[
    (
        "two different Content-Lengths",
        b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcdGET /smuggled HTTP/1.1\r\nHost: ab.test\r\n\r\n",
    ),
    ("a Content-Length list", b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 4, 40\r\n\r\nabcd"),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: ab.test\r\nX-Folded: a\r\n b\r\n\r\n"),
    (
        "Transfer-Encoding: chunked by obs-fold",
        b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 4\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ab.test\r\n\r\n",
    ),
    ("a Transfer-Encoding that is not chunked", b"POST / HTTP/1.1\r\nHost: ab.test\r\nTransfer-Encoding: gzip\r\n\r\nabcd"),
    (
        "chunked, then another coding",
        b"POST / HTTP/1.1\r\nHost: ab.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    ),
    ("a space before the colon", b"GET / HTTP/1.1\r\nHost: ab.test\r\nContent-Length : 5\r\n\r\nhello"),
    (
        "a space before the colon of Transfer-Encoding",
        b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 4\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    ),
    ("a negative length", b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: -1\r\n\r\n"),
    (
        "a length past u64",
        b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 184467440737095516160\r\n\r\nabcd",
    ),
    (
        "a chunk size past u64",
        b"POST / HTTP/1.1\r\nHost: ab.test\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000a\r\nabcdefghij\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ab.test\r\n\r\n",
    ),
    ("a bare LF inside a header value", b"GET / HTTP/1.1\r\nHost: ab.test\r\nX-A: 1\rX-B: 2\r\n\r\n"),
];

#[tokio::test]
async fn ambiguous_http1_framing_is_refused() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    for (what, raw) in REFUSED_H1 {
        let before = b.seen().len();
        let got = statuses(port, raw).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let received = received_since(&b, before);
        // Refused: a 400 or the connection closed unanswered, and nothing forwarded.
        assert!(got == [400] || (got.is_empty() && received.is_empty()), "{what}: answered {got:?}");
        assert!(received.is_empty(), "{what}: the backend received {received:?}");
    }
}

/// Content-Length with chunked is normalised: chunked wins, the length is dropped, and what
/// follows the chunked body is not a request the backend sees.
#[tokio::test]
async fn content_length_with_chunked_is_normalised() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    let got = statuses(
        port,
        b"POST / HTTP/1.1\r\nHost: ab.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: ab.test\r\n\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received = b.seen();
    assert!(got.first() == Some(&200), "{got:?}");
    assert_eq!(received.len(), got.iter().filter(|s| **s == 200).count(), "one backend request per answer");
    assert_eq!(received[0]["body_len"], 0, "the chunked body (empty), not 4 bytes of what follows");
    assert!(received.iter().all(|r| r["uri"] != "/smuggled"), "{received:?}");
    let h = &received[0]["headers"];
    assert!(h.get("transfer-encoding").is_none_or(|v| v == "chunked"), "{h}");
    assert!(h.get("content-length").is_none_or(|v| v == "0"), "{h}");
}

/// HTTP/2 requests that would change the HTTP/1.1 request sent on: each stream is reset or
/// answered 400, and the backend never sees the injected header or framing.
#[tokio::test]
async fn h2_header_injection_is_refused() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    let corpus: &[(&str, Fields<'_>)] = &[
        ("CR LF in a value", &[(b"x-a", b"1\r\nx-injected: yes")]),
        ("LF in a value", &[(b"x-a", b"1\nx-injected: yes")]),
        ("CR LF in a name", &[(b"x-a\r\nx-injected", b"yes")]),
        ("transfer-encoding", &[(b"transfer-encoding", b"chunked")]),
        ("connection", &[(b"connection", b"close, x-injected")]),
        ("keep-alive", &[(b"keep-alive", b"timeout=5")]),
        ("te other than trailers", &[(b"te", b"gzip")]),
        ("an upper-case name", &[(b"X-Injected", b"yes")]),
        ("a space in a name", &[(b"x-injected foo", b"yes")]),
    ];
    for (what, extra) in corpus {
        let before = b.seen().len();
        let mut s = connect(port).await;
        let block = request_block(false, "/", "ab.test", extra);
        s.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block)).await.unwrap();
        let frames = read_frames(&mut s, Duration::from_millis(500)).await;
        let on_stream: Vec<&Frame> = frames.iter().filter(|f| f.stream == 1 || f.kind == GOAWAY).collect();
        let refused = on_stream.iter().any(|f| {
            f.kind == RST_STREAM
                || (f.kind == GOAWAY && f.error_code() != Some(0))
                || (f.kind == HEADERS && !f.is_200())
        });
        assert!(refused, "{what}: not refused: {on_stream:?}");
        let received = received_since(&b, before);
        assert!(received.is_empty(), "{what}: the backend received {received:?}");
    }
    // The same request without the bad header goes through, on the same kind of connection.
    let mut s = connect(port).await;
    s.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &request_block(false, "/", "ab.test", &[(b"x-a", b"1")])))
        .await
        .unwrap();
    let frames = read_frames(&mut s, Duration::from_millis(500)).await;
    assert!(frames.iter().any(|f| f.stream == 1 && f.is_200()), "{frames:?}");
}

/// An HTTP/2 body longer than its `content-length`: the stream is reset and the backend
/// never gets more than the declared length.
#[tokio::test]
async fn h2_body_past_its_content_length_is_refused() {
    let port = free_port();
    let (b, _p) = one_backend(port).await;
    let mut s = connect(port).await;
    let block = request_block(true, "/", "ab.test", &[(b"content-length", b"4")]);
    s.write_all(&frame(HEADERS, END_HEADERS, 1, &block)).await.unwrap();
    s.write_all(&frame(DATA, END_STREAM, 1, b"abcdGET /smuggled HTTP/1.1\r\nHost: ab.test\r\n\r\n")).await.unwrap();
    let frames = read_frames(&mut s, Duration::from_millis(500)).await;
    assert!(!frames.iter().any(|f| f.stream == 1 && f.is_200()), "answered 200: {frames:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let received = b.seen();
    assert!(received.iter().all(|r| r["body_len"].as_u64() <= Some(4) && r["uri"] != "/smuggled"), "{received:?}");
}
