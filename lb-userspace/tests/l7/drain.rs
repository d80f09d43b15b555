//! Graceful drain: on shutdown, requests in flight finish and keep-alive connections close,
//! within the drain timeout; a removed endpoint's requests in flight go on for its
//! `connection-drain-timeout` (the proxy's drain timeout without one), then are closed.
use std::time::{Duration, Instant};

use lb_userspace::l7::{Limits, Proxy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{routing::NS, support::*};

/// An ALB listener on `port` whose `/` goes to `backend`, with extra Ingress annotations.
fn yaml(port: u16, backend: &Echo, annotations: &[(&str, &str)]) -> String {
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let mut ann = vec![("listen-ports", lp.as_str())];
    ann.extend_from_slice(annotations);
    alb_class(&[(port, "HTTP")])
        + &service(NS, "d", &[backend])
        + &ingress(NS, "drain", &ann, &rule("", &[("/", "Prefix", "d")]))
}

fn start(yaml: &str, limits: Limits) -> Proxy {
    let mut p = Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], limits);
    let errors = p.apply(&model(yaml).l7);
    assert!(errors.is_empty(), "{errors:?}");
    p
}

/// The status of a slow request started now, as a task.
fn slow_request(port: u16) -> tokio::task::JoinHandle<Option<u16>> {
    tokio::spawn(async move {
        let req = http::Request::get(format!("http://127.0.0.1:{port}/slow"))
            .header("host", "drain.test")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = client().request(req).await.ok()?;
        let status = resp.status().as_u16();
        http_body_util::BodyExt::collect(resp.into_body()).await.ok()?;
        Some(status)
    })
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish_and_closes_idle_connections() {
    let b = echo("b", Duration::from_millis(1500)).await;
    let port = free_port();
    let mut p = start(&yaml(port, &b, &[]), Limits::default());
    // An idle keep-alive connection, after one request.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: drain.test\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    let slow = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    p.shutdown_gracefully().await;
    let took = started.elapsed();
    assert_eq!(slow.await.unwrap(), Some(200), "the request in flight finished");
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(5), "shutdown waited {took:?}");
    let n = tokio::time::timeout(Duration::from_secs(1), idle.read(&mut buf)).await.expect("idle connection kept");
    assert_eq!(n.unwrap_or(0), 0, "the idle keep-alive connection was closed");
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err(), "no longer accepting");
}

/// On shutdown a request in flight has the proxy's drain timeout, not its route's
/// `connection-drain-timeout` (for an endpoint leaving its route: it cut the request at 1 s
/// with a 502).
#[tokio::test]
async fn shutdown_gives_requests_the_drain_timeout_not_the_routes_connection_drain() {
    let b = echo("b", Duration::from_millis(2500)).await;
    let port = free_port();
    let annotations = [("connection-drain-enabled", "true"), ("connection-drain-timeout", "1")];
    let mut p =
        start(&yaml(port, &b, &annotations), Limits { drain_timeout: Duration::from_secs(10), ..Limits::default() });
    let slow = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.shutdown_gracefully().await;
    assert_eq!(slow.await.unwrap(), Some(200), "the request in flight finished");
}

#[tokio::test]
async fn shutdown_closes_what_outlives_the_drain_timeout() {
    let b = echo("b", Duration::from_secs(15)).await;
    let port = free_port();
    let mut p = start(&yaml(port, &b, &[]), Limits { drain_timeout: Duration::from_secs(1), ..Limits::default() });
    let slow = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    p.shutdown_gracefully().await;
    assert!(started.elapsed() < Duration::from_secs(4), "shutdown waited {:?}", started.elapsed());
    let got = tokio::time::timeout(Duration::from_secs(3), slow).await.expect("the request was held").unwrap();
    // Closed: answered 502 when its endpoint's drain ended, or the connection cut.
    assert!(matches!(got, None | Some(502)), "the request past the drain timeout was closed: {got:?}");
}

/// ALB `connection-drain-timeout`: a request in flight to an endpoint removed from the
/// Service is closed when the drain time ends (502), not when the backend answers.
#[tokio::test]
async fn a_removed_endpoint_is_drained_for_its_annotated_time() {
    let (old, new) = (echo("old", Duration::from_secs(15)).await, echo("new", Duration::ZERO).await);
    let port = free_port();
    let ann = [("connection-drain-enabled", "true"), ("connection-drain-timeout", "1")];
    let mut p = start(&yaml(port, &old, &ann), Limits::default());
    let slow = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert!(p.apply(&model(&yaml(port, &new, &ann)).l7).is_empty());
    let got = tokio::time::timeout(Duration::from_secs(5), slow).await.expect("held past the drain time").unwrap();
    assert_eq!(got, Some(502));
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(3), "cut after {after:?}");
    assert_eq!(get(&client(), port, "drain.test", "/", &[]).await.backend(), "new", "new requests go to the new one");
}

/// Without `connection-drain`, a removed endpoint's requests in flight get the proxy's drain
/// timeout: one that answers within it is not cut.
#[tokio::test]
async fn a_removed_endpoint_finishes_its_requests_within_the_drain_timeout() {
    let (old, new) = (echo("old", Duration::from_millis(1500)).await, echo("new", Duration::ZERO).await);
    let port = free_port();
    let limits = Limits { drain_timeout: Duration::from_secs(5), ..Limits::default() };
    let mut p = start(&yaml(port, &old, &[]), limits);
    let slow = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.apply(&model(&yaml(port, &new, &[])).l7).is_empty());
    assert_eq!(slow.await.unwrap(), Some(200), "the request in flight finished on the removed endpoint");
}

/// A tunnel (a WebSocket's upgrade) of a listener that is removed closes when the listener's
/// drain time is over, as its connections do: it no longer outlives the listener (up to the
/// tunnel idle timeout, or for ever while it talks).
#[tokio::test]
async fn a_removed_listener_closes_its_tunnels_after_the_drain_timeout() {
    let b = echo("b", Duration::ZERO).await;
    let (port, other) = (free_port(), free_port());
    // Two listeners over the same endpoint: the one removed takes no endpoint away (whose
    // drain would close the tunnel too).
    let two = |ports: &[u16]| {
        let lp: Vec<String> = ports.iter().map(|p| format!("{{\"HTTP\": {p}}}")).collect();
        let lp = format!("[{}]", lp.join(","));
        let listeners: Vec<(u16, &str)> = ports.iter().map(|p| (*p, "HTTP")).collect();
        alb_class(&listeners)
            + &service(NS, "d", &[&b])
            + &ingress(NS, "drain", &[("listen-ports", &lp)], &rule("", &[("/", "Prefix", "d")]))
    };
    let mut p = start(&two(&[port, other]), Limits { drain_timeout: Duration::from_secs(1), ..Limits::default() });
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: drain.test\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"));
    async fn echoed(s: &mut TcpStream) -> Option<[u8; 4]> {
        let mut buf = [0u8; 4];
        s.write_all(b"ping").await.ok()?;
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf)).await.ok()?.ok()?;
        Some(buf)
    }
    assert_eq!(echoed(&mut s).await, Some(*b"ping"));
    let removed = Instant::now();
    assert!(p.apply(&model(&two(&[other])).l7).is_empty());
    // Within its drain time it still talks ...
    assert_eq!(echoed(&mut s).await, Some(*b"ping"), "the tunnel talks during the drain");
    // ... and then it is closed.
    let mut rest = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "the tunnel outlived its listener's drain by 5 s");
    let after = removed.elapsed();
    assert!(after >= Duration::from_millis(900), "closed after {after:?}, before the drain time");
}

/// `model` with the weight of every endpoint at `addr` set to `weight` (the health checker's
/// 0 for a failing endpoint, as the agent applies it).
fn weighted(
    mut model: lb_userspace::model::Model,
    addr: std::net::SocketAddr,
    weight: u32,
) -> lb_userspace::model::Model {
    for l in model.l7.values_mut() {
        for r in l.routes.iter_mut().chain(l.canaries.iter_mut()) {
            for e in r.upstreams.iter_mut().flat_map(|u| u.endpoints.iter_mut()).filter(|e| e.addr == addr) {
                e.weight = weight;
            }
        }
    }
    model
}

/// ALB connection drain "after a pod is removed or fails a health check": with
/// `connection-drain` on, a request in flight to an endpoint that fails its check is closed
/// at the end of the drain time; one whose endpoint passes again within it goes on; without
/// `connection-drain` a failing endpoint's requests are not cut (only new ones avoid it).
#[tokio::test]
async fn an_endpoint_that_fails_its_health_check_is_drained_unless_it_comes_back() {
    let slow = echo("slow", Duration::from_millis(2500)).await;
    let port = free_port();
    let ann = [("connection-drain-enabled", "true"), ("connection-drain-timeout", "1")];
    let healthy = model(&yaml(port, &slow, &ann));
    let mut p = Proxy::with_limits(vec!["127.0.0.1".parse().unwrap()], Limits::default());
    assert!(p.apply(&healthy.l7).is_empty());

    let request = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    assert!(p.apply(&weighted(healthy.clone(), slow.addr, 0).l7).is_empty());
    assert_eq!(request.await.unwrap(), Some(502), "cut at the end of the drain");
    let after = started.elapsed();
    assert!(after >= Duration::from_millis(900) && after < Duration::from_millis(2000), "cut after {after:?}");

    // Back within the drain: the request goes on to its answer.
    assert!(p.apply(&healthy.l7).is_empty());
    let request = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.apply(&weighted(healthy.clone(), slow.addr, 0).l7).is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.apply(&healthy.l7).is_empty());
    assert_eq!(request.await.unwrap(), Some(200), "back within its drain: not cut");

    // Without connection-drain: not cut.
    let undrained = model(&yaml(port, &slow, &[]));
    assert!(p.apply(&undrained.l7).is_empty());
    let request = slow_request(port);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(p.apply(&weighted(undrained, slow.addr, 0).l7).is_empty());
    assert_eq!(request.await.unwrap(), Some(200), "no drain on a failed check without connection-drain");
}
