//! gRPC backends (`backend-protocol: grpc`, h2c) behind an HTTPS listener: HTTP/2 with the
//! route's host as `:authority`, a request with a body moved to another endpoint when its
//! own cannot take it (connect refused; a graceful stop's GOAWAY with the listener closed),
//! a connection that did not answer let go, the body limit's 413.
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use super::{
    support::*,
    tls::{Ca, NS, ca, ca_file, curl, leaf, secret},
};

/// An HTTPS listener on `port` (its certificate for g.test signed by `ca`) whose route
/// sends everything to `backends` over gRPC (`backend-protocol: grpc`: h2c).
fn grpc_listener(port: u16, ca: &Ca, backends: &[&Echo]) -> String {
    grpc_listener_with(port, ca, backends, "")
}

/// [`grpc_listener`] with `extra` in the listener's AlbConfig entry.
fn grpc_listener_with(port: u16, ca: &Ca, backends: &[&Echo], extra: &str) -> String {
    let lp = format!("[{{\"HTTPS\": {port}}}]");
    alb_class_with(&[(port, "HTTPS")], extra)
        + &service(NS, "web", backends)
        + &secret("cert-g", &leaf(ca, &["g.test"]))
        + &ingress(
            NS,
            "grpc",
            &[("listen-ports", &lp), ("backend-protocol", "grpc")],
            &rule("g.test", &[("/", "Prefix", "web")]),
        )
        .replace("spec:\n", "spec:\n  tls:\n  - hosts: [g.test]\n    secretName: cert-g\n")
}

const GRPC_CALL: [&str; 5] = ["--http2", "-H", "te: trailers", "-H", "content-type: application/grpc"];

/// `backend-protocol: grpc` (on an HTTPS listener, as ALB requires): the backend is spoken
/// to in HTTP/2 (h2c) with `te: trailers` kept.
#[tokio::test]
async fn grpc_backends_get_http2() {
    let port = free_port();
    let web = echo("grpc", Duration::ZERO).await;
    let ca = ca();
    let (_dir, f) = ca_file(&ca);
    let _p = proxy(&model(&grpc_listener(port, &ca, &[&web])));
    let r = tokio::task::spawn_blocking(move || curl(&f, "g.test", port, "/pkg.Svc/Call", &GRPC_CALL)).await.unwrap();
    assert!(r.ok && r.status == 200, "{} {}", r.status, r.stderr);
    let j: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(j["version"], "HTTP/2.0", "gRPC backends are spoken to in HTTP/2");
    assert_eq!(j["headers"]["te"], "trailers");
    // `:authority` is the host the client asked for (the connection goes to the endpoint).
    assert_eq!(j["uri"], format!("http://g.test:{port}/pkg.Svc/Call"), "the backend's :authority");
}

/// A gRPC request (they nearly all have a body) whose endpoint refuses the connection goes
/// to another endpoint, body and all: the connection is taken before the body is read.
#[tokio::test]
async fn grpc_requests_with_a_body_go_to_another_endpoint_when_one_refuses() {
    let port = free_port();
    let web = echo("grpc", Duration::ZERO).await;
    // Nothing listens there.
    let dead = Echo { addr: ([127, 0, 0, 1], free_port()).into(), hits: Default::default(), seen: Default::default() };
    let ca = ca();
    let (_dir, f) = ca_file(&ca);
    let _p = proxy(&model(&grpc_listener(port, &ca, &[&dead, &web])));
    for i in 0..6 {
        let f = f.clone();
        let r = tokio::task::spawn_blocking(move || {
            curl(&f, "g.test", port, "/pkg.Svc/Call", &[&GRPC_CALL[..], &["--data-binary", "a message"]].concat())
        })
        .await
        .unwrap();
        assert!(r.ok && r.status == 200, "request {i}: {} {} {}", r.status, r.body, r.stderr);
    }
    assert_eq!(web.hits.load(Ordering::SeqCst), 6, "the live endpoint answered every request");
}

/// A gRPC request body past the proxy's limit, with no Content-Length to refuse it by, gets
/// 413 as on HTTP/1.1 (hyper's HTTP/2 client resets the backend's stream and reports only
/// that: it was a 502). The client is hyper's: curl 7.88 takes an answer that comes while it
/// is still sending (the stream then reset, as RFC 9113 8.1 allows) for no answer.
#[tokio::test]
async fn a_grpc_body_over_the_limit_gets_413() {
    let port = free_port();
    let web = echo("grpc", Duration::ZERO).await;
    let ca = ca();
    let limits = lb_userspace::l7::Limits { max_body_bytes: 1024, ..Default::default() };
    let mut p = lb_userspace::l7::Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], limits);
    let errors = p.apply(&model(&grpc_listener(port, &ca, &[&web])).l7);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(h2_post_unsized(&ca, port, "/pkg.Svc/Call", vec![b'x'; 1024]).await, Ok(200));
    for _ in 0..5 {
        assert_eq!(h2_post_unsized(&ca, port, "/pkg.Svc/Call", vec![b'x'; 64 * 1024]).await, Ok(413));
    }
}

/// POSTs `body` (in 512-byte DATA frames, no Content-Length) over HTTP/2 and TLS to
/// g.test:`port` (trusting `ca`): the answer's status, or the error hyper's client met.
async fn h2_post_unsized(ca: &Ca, port: u16, path: &str, body: Vec<u8>) -> Result<u16, String> {
    use http_body_util::StreamBody;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.ca.der().clone()).unwrap();
    let mut cfg =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("g.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let chunks: Vec<Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>> =
        body.chunks(512).map(|c| Ok(hyper::body::Frame::data(bytes::Bytes::copy_from_slice(c)))).collect();
    let req = http::Request::post(format!("https://g.test:{port}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(futures::stream::iter(chunks)))
        .unwrap();
    send.send_request(req).await.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"))
}

/// An h2c backend that stops as a gRPC server's graceful stop does, on its first request: it
/// closes its listener, then ends its connection (GOAWAY), and answers that request after
/// 500 ms (naming itself, as the echo backends do). The flag is raised once it has stopped.
async fn stopping_backend() -> (Echo, Arc<std::sync::atomic::AtomicBool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let raised = stopped.clone();
    tokio::spawn(async move {
        let Ok((s, _)) = listener.accept().await else { return };
        let stop = Arc::new(tokio::sync::Notify::new());
        let said = stop.clone();
        let svc = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
            h.fetch_add(1, Ordering::SeqCst);
            said.notify_one();
            async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let body = bytes::Bytes::from_static(br#"{"backend":"stopping"}"#);
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(body)))
            }
        });
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = stop.notified() => {
                drop(listener);
                conn.as_mut().graceful_shutdown();
                raised.store(true, Ordering::SeqCst);
            }
        }
        let _ = conn.await;
    });
    (Echo { addr, hits, seen: Default::default() }, stopped)
}

/// A rolling restart of a gRPC backend: while it still answers a request, its connection,
/// ended by GOAWAY, gives the next requests back unsent and a new connection is refused.
/// Those requests (with bodies) go to the other endpoint (they were 502s).
#[tokio::test]
async fn requests_given_back_by_a_stopping_backend_go_to_another_endpoint() {
    let port = free_port();
    let (stopping, stopped) = stopping_backend().await;
    let web = echo("web", Duration::ZERO).await;
    let ca = ca();
    let (_dir, f) = ca_file(&ca);
    let _p = proxy(&model(&grpc_listener(port, &ca, &[&stopping, &web])));
    let call = |f: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            curl(&f, "g.test", port, "/pkg.Svc/Call", &[&GRPC_CALL[..], &["--data-binary", "a message"]].concat())
        })
    };
    // Requests one at a time until one reaches the stopping backend (where the balancer
    // starts is not fixed); that one is left waiting for its answer.
    let mut answered_before = 0;
    let mut first = None;
    for _ in 0..4 {
        let mut c = call(f.clone());
        let stopped = loop {
            tokio::select! {
                r = &mut c => {
                    let r = r.unwrap();
                    assert!(r.status == 200 && r.body.contains(r#""backend":"web""#), "{} {}", r.status, r.body);
                    answered_before += 1;
                    break false;
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {
                    if stopped.load(Ordering::SeqCst) {
                        break true;
                    }
                }
            }
        };
        if stopped {
            first = Some(c);
            break;
        }
    }
    let first = first.expect("a request reached the stopping backend");
    // The backend has stopped (listener closed, GOAWAY sent) while it answers `first`; the
    // GOAWAY reaches the proxy's connection.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 0..4 {
        let r = call(f.clone()).await.unwrap();
        assert!(r.ok && r.status == 200, "request {i}: {} {} {}", r.status, r.body, r.stderr);
        assert!(r.body.contains(r#""backend":"web""#), "request {i}: {}", r.body);
    }
    let first = first.await.unwrap();
    assert!(
        first.status == 200 && first.body.contains("stopping"),
        "the first request went to the stopping backend: {}",
        first.body
    );
    assert_eq!(stopping.hits.load(Ordering::SeqCst), 1);
    assert_eq!(web.hits.load(Ordering::SeqCst), 4 + answered_before);
}

/// A gRPC backend that takes requests and never answers: each request gets 504 and its
/// connection is let go (a peer gone without a reset leaves a connection open that no answer
/// will ever come on), so the next request makes a new one.
#[tokio::test]
async fn a_grpc_connection_that_did_not_answer_in_time_is_let_go() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = Echo { addr: listener.local_addr().unwrap(), hits: Default::default(), seen: Default::default() };
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let svc = hyper::service::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<bytes::Bytes>::new()))
            });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    let port = free_port();
    let ca = ca();
    let (_dir, f) = ca_file(&ca);
    let _p = proxy(&model(&grpc_listener_with(port, &ca, &[&silent], "    requestTimeout: 1\n")));
    for i in 0..2 {
        let f = f.clone();
        let r =
            tokio::task::spawn_blocking(move || curl(&f, "g.test", port, "/pkg.Svc/Call", &GRPC_CALL)).await.unwrap();
        assert_eq!(r.status, 504, "request {i}: {} {}", r.body, r.stderr);
    }
    assert_eq!(connections.load(Ordering::SeqCst), 2, "a new connection after each 504");
}
