//! ALB health checks through real requests, beyond HTTP status: the HTTP version and method
//! the annotations ask for, a separate check port, and gRPC health checks
//! (`grpc.health.v1.Health/Check` over h2c with the service name and codes asked for). The
//! agent's checker decides; requests then reach only the endpoints that pass.
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::{body::Frame, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use lb_userspace::{health::Checker, model::Model};

use super::{routing::NS, support::*};

/// Runs the checker over `m` until `n` changes arrived; the model with them applied.
async fn settle(m: &Model, n: usize) -> (Model, Vec<(SocketAddr, bool)>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let mut checker = Checker::default();
    checker.sync(m, &tx);
    let mut seen = Vec::new();
    for _ in 0..n {
        let c = tokio::time::timeout(Duration::from_secs(15), rx.recv()).await.expect("no health change").unwrap();
        seen.push((SocketAddr::new(c.backend.0, c.backend.1), c.healthy));
        checker.record(c);
    }
    (checker.effective(m).clone(), seen)
}

/// `healthcheck-httpversion`, `healthcheck-method`, `healthcheck-httpcode`: HTTP/1.1 GET
/// probes (with the endpoint as Host) on one Ingress, HTTP/1.0 HEAD on another; the failing
/// endpoint leaves both. `healthcheck-connect-port`: probes go to that port instead (here a
/// failing server), so every endpoint leaves and requests get 503.
#[tokio::test]
async fn alb_http_version_method_and_connect_port() {
    let port = free_port();
    let (good, sick, elsewhere) = (
        echo("good", Duration::ZERO).await,
        echo("sick", Duration::ZERO).await,
        echo("sick-port", Duration::ZERO).await,
    );
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let check = |version: &str, method: &str| {
        vec![
            ("listen-ports", lp.clone()),
            ("healthcheck-enabled", "true".to_owned()),
            ("healthcheck-path", "/healthz".to_owned()),
            ("healthcheck-httpversion", version.to_owned()),
            ("healthcheck-method", method.to_owned()),
            ("healthcheck-httpcode", "http_2xx".to_owned()),
            ("healthcheck-interval-seconds", "1".to_owned()),
            ("healthcheck-timeout-seconds", "1".to_owned()),
            ("unhealthy-threshold-count", "2".to_owned()),
        ]
    };
    let (v11, v10) = (check("HTTP1.1", "GET"), check("HTTP1.0", "HEAD"));
    let mut port_check = check("HTTP1.1", "GET");
    port_check.push(("healthcheck-connect-port", elsewhere.addr.port().to_string()));
    let yaml = alb_class(&[(port, "HTTP")])
        + &service(NS, "p11", &[&good, &sick])
        + &service(NS, "p10", &[&good, &sick])
        + &service(NS, "pport", &[&good])
        + &ingress(NS, "v11", &a(&v11), &rule("v11.test", &[("/", "Prefix", "p11")]))
        + &ingress(NS, "v10", &a(&v10), &rule("v10.test", &[("/", "Prefix", "p10")]))
        + &ingress(NS, "vport", &a(&port_check), &rule("port.test", &[("/", "Prefix", "pport")]));
    let m = model(&yaml);
    let mut p = proxy(&m);
    // sick: out under both checks; good: out under the connect-port check.
    let (effective, changes) = settle(&m, 3).await;
    assert!(changes.iter().all(|(_, healthy)| !healthy), "{changes:?}");
    assert!(p.apply(&effective.l7).is_empty());
    let c = client();
    for _ in 0..6 {
        assert_eq!(get(&c, port, "v11.test", "/", &[]).await.backend(), "good");
        assert_eq!(get(&c, port, "v10.test", "/", &[]).await.backend(), "good");
    }
    assert_eq!(get(&c, port, "port.test", "/", &[]).await.status, 503, "its probes failed on the connect port");
    let probes: Vec<serde_json::Value> = good.seen().into_iter().filter(|s| s["uri"] == "/healthz").collect();
    let has = |method: &str, version: &str| probes.iter().any(|p| p["method"] == method && p["version"] == version);
    assert!(has("GET", "HTTP/1.1") && has("HEAD", "HTTP/1.0"), "{probes:?}");
    let host = probes.iter().find(|p| p["version"] == "HTTP/1.1").unwrap()["headers"]["host"].clone();
    assert_eq!(host, "127.0.0.1", "HTTP/1.1 probes name the endpoint as Host");
    // The failing server answers 500 before logging: its hits count the probes.
    assert!(elsewhere.hits() >= 2, "the connect port was probed");
}

fn a<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// How a gRPC backend answers `grpc.health.v1.Health/Check`.
#[derive(Clone, Copy)]
enum Grpc {
    /// OK with this `ServingStatus` (1 SERVING, 2 NOT_SERVING).
    Status(u8),
    /// This `grpc-status`, trailers only.
    Code(u8),
}

/// A backend speaking HTTP/1.1 and h2c: the health method answers as `health` says (and logs
/// the service asked for); everything else gets `{"backend": name}`.
async fn grpc_backend(name: &'static str, health: Grpc) -> (SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let log = log.clone();
                    async move { Ok::<_, Infallible>(grpc_answer(req, name, health, &log).await) }
                });
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    (addr, asked)
}

type Body = BoxBody<Bytes, Infallible>;

async fn grpc_answer(
    req: Request<hyper::body::Incoming>,
    name: &str,
    health: Grpc,
    log: &std::sync::Mutex<Vec<String>>,
) -> Response<Body> {
    let full = |b: Bytes| http_body_util::Full::new(b).boxed();
    if req.uri().path() != "/grpc.health.v1.Health/Check" {
        return Response::new(full(Bytes::from(format!("{{\"backend\":\"{name}\"}}"))));
    }
    let (parts, body) = req.into_parts();
    let msg = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    // HealthCheckRequest: 5-byte frame header, then field 1 (service) when not empty.
    let service = msg.get(7..).map(|s| String::from_utf8_lossy(s).into_owned()).unwrap_or_default();
    log.lock().unwrap().push(format!(
        "{} {:?} {} {}",
        parts.method,
        parts.version,
        parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or(""),
        service
    ));
    let resp = Response::builder().header("content-type", "application/grpc");
    match health {
        Grpc::Code(code) => resp.header("grpc-status", code.to_string()).body(full(Bytes::new())).unwrap(),
        Grpc::Status(s) => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            let frames =
                vec![Ok(Frame::data(Bytes::from(vec![0, 0, 0, 0, 2, 0x08, s]))), Ok(Frame::trailers(trailers))];
            resp.body(StreamBody::new(futures::stream::iter(frames)).boxed()).unwrap()
        }
    }
}

/// `healthcheck-protocol: GRPC`: `healthcheck-path: /shop.Cart` names the service asked
/// for, `healthcheck-method: POST`, `healthcheck-code: 0`. SERVING passes; NOT_SERVING and an
/// UNIMPLEMENTED status fail, and those endpoints get no more requests. With
/// `healthcheck-code: 0-12`, UNIMPLEMENTED passes.
#[tokio::test]
async fn alb_grpc_health_checks() {
    let port = free_port();
    let (good, asked) = grpc_backend("good", Grpc::Status(1)).await;
    let (not_serving, _) = grpc_backend("not-serving", Grpc::Status(2)).await;
    let (unimplemented, _) = grpc_backend("unimplemented", Grpc::Code(12)).await;
    let lp = format!("[{{\"HTTP\": {port}}}]");
    let grpc = |code: &'static str| {
        vec![
            ("listen-ports", lp.as_str()),
            ("healthcheck-enabled", "true"),
            ("healthcheck-protocol", "GRPC"),
            ("healthcheck-path", "/shop.Cart"),
            ("healthcheck-method", "POST"),
            ("healthcheck-code", code),
            ("healthcheck-interval-seconds", "1"),
            ("healthcheck-timeout-seconds", "1"),
            ("unhealthy-threshold-count", "2"),
        ]
    };
    let pool = |svc: &str| {
        let mut out = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: {NS}}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {}}}\n---\n",
            good.port()
        );
        for (i, a) in [good, not_serving, unimplemented].iter().enumerate() {
            out += &format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {svc}-{i}\n  namespace: {NS}\n  labels: {{kubernetes.io/service-name: {svc}}}\naddressType: IPv4\nports:\n- {{name: http, port: {}, protocol: TCP}}\nendpoints:\n- addresses: [\"127.0.0.1\"]\n---\n",
                a.port()
            );
        }
        out
    };
    let yaml = alb_class(&[(port, "HTTP")])
        + &pool("strict")
        + &pool("lenient")
        + &ingress(NS, "strict", &grpc("0"), &rule("strict.test", &[("/", "Prefix", "strict")]))
        + &ingress(NS, "lenient", &grpc("0-12"), &rule("lenient.test", &[("/", "Prefix", "lenient")]));
    let m = model(&yaml);
    let mut p = proxy(&m);
    // Out: not-serving under both checks, unimplemented under the strict one.
    let (effective, changes) = settle(&m, 3).await;
    assert!(changes.iter().all(|(a, healthy)| !healthy && *a != good), "{changes:?}");
    assert!(p.apply(&effective.l7).is_empty());
    let c = client();
    let mut lenient = std::collections::BTreeSet::new();
    for _ in 0..9 {
        let g = get(&c, port, "strict.test", "/", &[]).await;
        assert_eq!(g.backend(), "good", "{}", g.body);
        lenient.insert(get(&c, port, "lenient.test", "/", &[]).await.backend());
    }
    assert_eq!(lenient, ["good".to_owned(), "unimplemented".to_owned()].into(), "code 0-12 accepts UNIMPLEMENTED");
    let asked = asked.lock().unwrap().clone();
    assert!(asked.iter().any(|a| a == "POST HTTP/2.0 application/grpc shop.Cart"), "{asked:?}");
}
