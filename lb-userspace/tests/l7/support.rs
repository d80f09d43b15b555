//! In-process backends, manifest builders and clients for the L7 proxy tests (everything on
//! 127.0.0.1).
use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use lb_userspace::{l7::Proxy, manifests, model};
use serde_json::{Value, json};

/// A backend that answers every request with what it saw, as JSON, and keeps it.
pub struct Echo {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// What each request looked like when it arrived (the JSON answered).
    pub seen: Arc<std::sync::Mutex<Vec<Value>>>,
}

impl Echo {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// The requests seen so far.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts an echo backend named `name`. `/slow` waits `delay` before answering; a request
/// with `Upgrade: echo` is switched (101) and its bytes are echoed back.
pub async fn echo(name: &str, delay: Duration) -> Echo {
    start_echo(name.to_owned(), delay, None).await
}

/// An echo backend behind TLS (a self-signed certificate, as in-cluster HTTPS backends have).
pub async fn echo_tls(name: &str) -> Echo {
    let cert = rcgen::generate_simple_self_signed(vec!["backend.local".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let cfg =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert.der().clone()], key)
            .unwrap();
    // As Go's, Envoy's and nginx's TLS servers: HTTP/2 offered first.
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    start_echo(format!("{name} over TLS"), Duration::ZERO, Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))).await
}

async fn start_echo(name: String, delay: Duration, tls: Option<tokio_rustls::TlsAcceptor>) -> Echo {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (h, log) = (hits.clone(), seen.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { return };
            let (name, h, tls, log) = (name.clone(), h.clone(), tls.clone(), log.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let (name, h, log) = (name.clone(), h.clone(), log.clone());
                    async move {
                        h.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(answer(req, &name, peer, delay, &log).await)
                    }
                });
                let builder = auto::Builder::new(TokioExecutor::new());
                let _ = match tls {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(s) => builder.serve_connection_with_upgrades(TokioIo::new(s), svc).await,
                        Err(_) => return,
                    },
                    None => builder.serve_connection_with_upgrades(TokioIo::new(stream), svc).await,
                };
            });
        }
    });
    Echo { addr, hits, seen }
}

async fn answer(
    mut req: Request<Incoming>,
    name: &str,
    peer: SocketAddr,
    delay: Duration,
    log: &std::sync::Mutex<Vec<Value>>,
) -> Response<Full<Bytes>> {
    if req.uri().path() == "/healthz" && name.starts_with("sick") {
        return Response::builder().status(500).body(Full::new(Bytes::from_static(b"sick"))).unwrap();
    }
    if req.uri().path() == "/big" {
        let body = "the quick brown fox jumps over the lazy dog\n".repeat(200);
        return Response::builder().header("content-type", "text/plain").body(Full::new(Bytes::from(body))).unwrap();
    }
    if req.uri().path() == "/huge" {
        return Response::new(Full::new(Bytes::from_static(&HUGE)));
    }
    if req.uri().path() == "/slow" {
        tokio::time::sleep(delay).await;
    }
    if req.headers().get("upgrade").is_some_and(|v| v == "echo") {
        let up = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = up.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(io));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Response::builder()
            .status(101)
            .header("upgrade", "echo")
            .header("connection", "upgrade")
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    let headers: BTreeMap<String, String> =
        req.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let (method, uri, version) = (req.method().as_str().to_owned(), req.uri().to_string(), req.version());
    // The whole body is read before the answer, as an application would.
    let Ok(received) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return Response::builder().status(400).body(Full::new(Bytes::from_static(b"body failed"))).unwrap();
    };
    let body = json!({
        "backend": name,
        "method": method,
        "uri": uri,
        "version": format!("{version:?}"),
        "headers": headers,
        "peer": peer.to_string(),
        "body": String::from_utf8_lossy(&received[..received.len().min(4096)]),
        "body_len": received.len(),
    });
    log.lock().unwrap().push(body.clone());
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
    if let Some(c) = headers.get("x-set-cookie").and_then(|c| http::HeaderValue::from_str(c).ok()) {
        resp.headers_mut().insert("set-cookie", c);
    }
    resp
}

/// The body of `/huge`: 8 MiB.
static HUGE: [u8; 8 << 20] = [b'x'; 8 << 20];

/// A free TCP port on 127.0.0.1 for a proxy listener to bind later.
///
/// Not an ephemeral port (`bind(:0)`): between this call and the proxy's bind, a client
/// connection of a test running in parallel may take the same port as its source port
/// (CI saw `Address already in use`). The ports handed out lie below the kernel's
/// ephemeral range (`ip_local_port_range` starts at 32768 by default), each once per
/// process, starting at an offset drawn from the pid so test processes rarely meet.
pub fn free_port() -> u16 {
    const FIRST: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let offset = (std::process::id() % u32::from(SPAN)) as u16;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = FIRST + (offset + n) % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// A ClusterIP Service `name` (port 80, named `http`) in `ns` and its EndpointSlice with
/// `backends` (one slice per backend port: the endpoints may listen on different ports).
pub fn service(ns: &str, name: &str, backends: &[&Echo]) -> String {
    let port = backends.first().map_or(8080, |b| b.addr.port());
    // One slice per port: endpoints of one Service may listen on different ports here.
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  ports:\n  - {{name: http, port: 80, targetPort: {port}}}\n---\n"
    );
    let by_port: BTreeMap<u16, Vec<&&Echo>> = backends.iter().fold(BTreeMap::new(), |mut m, b| {
        m.entry(b.addr.port()).or_default().push(b);
        m
    });
    for (i, (port, bs)) in by_port.iter().enumerate() {
        let endpoints: String =
            bs.iter().map(|b| format!("- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n", b.addr.ip())).collect();
        out.push_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n- {{name: http, port: {port}, protocol: TCP}}\nendpoints:\n{endpoints}---\n"
        ));
    }
    out
}

/// The IngressClass `alb` and an AlbConfig with `listeners` (`(port, "HTTP"|"HTTPS")`).
pub fn alb_class(listeners: &[(u16, &str)]) -> String {
    alb_class_with(listeners, "")
}

/// As [`alb_class`], with `extra` (YAML lines, 4-space indented) added to every listener.
pub fn alb_class_with(listeners: &[(u16, &str)], extra: &str) -> String {
    let ls: String =
        listeners.iter().map(|(p, proto)| format!("  - port: {p}\n    protocol: {proto}\n{extra}")).collect();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: alb}}\nspec:\n  controller: ingress.k8s.alibabacloud/alb\n  parameters: {{apiGroup: alibabacloud.com, kind: AlbConfig, name: alb}}\n---\napiVersion: alibabacloud.com/v1\nkind: AlbConfig\nmetadata: {{name: alb}}\nspec:\n  config:\n    name: alb\n    addressType: Intranet\n    zoneMappings: [{{vSwitchId: vsw-a}}, {{vSwitchId: vsw-b}}]\n  listeners:\n{ls}---\n"
    )
}

/// The model of `yaml`; panics on any rejected object (tests write valid manifests unless
/// they check errors).
pub fn model(yaml: &str) -> model::Model {
    let build = build(yaml);
    assert!(build.errors.is_empty(), "rejected: {:#?}", build.errors);
    build.model
}

pub fn build(yaml: &str) -> model::Build {
    model::build(&objects(yaml), &build_options())
}

/// The build of `yaml` as the agent makes it after `previous` (a rejected object keeps its
/// last good listeners and routes).
pub fn build_after(yaml: &str, previous: &model::Model) -> model::Build {
    model::build_next(&objects(yaml), &build_options(), previous, &mut model::BuildCache::default())
}

fn objects(yaml: &str) -> manifests::ObjectSet {
    let mut set = manifests::ObjectSet::default();
    manifests::load_text(Path::new("test.yaml"), yaml, &mut set);
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    set
}

/// The proxy and its backends share 127.0.0.0/8 here: loopback VIPs and endpoints are
/// accepted for these in-process tests only (lb run and lb check refuse them).
fn build_options() -> model::BuildOptions {
    let addresses = model::addresses::AddressPolicy { allow_loopback: true, ..Default::default() };
    model::BuildOptions { addresses, ..Default::default() }
}

/// A proxy whose ALB listeners bind 127.0.0.1, with `model` applied.
pub fn proxy(model: &model::Model) -> Proxy {
    let mut p = Proxy::new(vec!["127.0.0.1".parse().unwrap()]);
    let errors = p.apply(&model.l7);
    assert!(errors.is_empty(), "{errors:?}");
    p
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response: status, headers, body.
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.body))
    }

    pub fn backend(&self) -> String {
        self.json()["backend"].as_str().unwrap_or_default().to_owned()
    }

    pub fn uri(&self) -> String {
        self.json()["uri"].as_str().unwrap_or_default().to_owned()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
    }
}

/// GET `path` on 127.0.0.1:`port` with `Host: host` and extra headers.
pub async fn get(c: &HttpClient, port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    send(c, "GET", port, host, path, headers).await
}

pub async fn send(c: &HttpClient, method: &str, port: u16, host: &str, path: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::builder().method(method).uri(format!("http://127.0.0.1:{port}{path}")).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req.body(Full::new(Bytes::new())).unwrap()))
        .await
        .expect("request timed out")
        .expect("request failed");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// An Ingress in `ns` named `name` with `annotations` (`key: value` pairs, keys without the
/// ALB prefix) and the rules YAML under `spec.rules`.
pub fn ingress(ns: &str, name: &str, annotations: &[(&str, &str)], rules: &str) -> String {
    let ann: String = annotations
        .iter()
        .map(|(k, v)| format!("    alb.ingress.kubernetes.io/{k}: {}\n", serde_json::to_string(v).unwrap()))
        .collect();
    let ann = if ann.is_empty() { String::new() } else { format!("  annotations:\n{ann}") };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: {ns}\n{ann}spec:\n  ingressClassName: alb\n  rules:\n{rules}---\n"
    )
}

/// One rule: `host` (empty: any), paths `(path, pathType, service)`.
pub fn rule(host: &str, paths: &[(&str, &str, &str)]) -> String {
    let host = if host.is_empty() { String::new() } else { format!("    host: '{host}'\n") };
    let ps: String = paths
        .iter()
        .map(|(p, t, s)| {
            format!("      - path: '{p}'\n        pathType: {t}\n        backend:\n          service:\n            name: {s}\n            port:\n              number: 80\n")
        })
        .collect();
    format!("  -\n{host}    http:\n      paths:\n{ps}")
}

/// A CLB Service `name` of type LoadBalancer on `vip` with CLB `annotations` (suffixes after
/// `alibaba-cloud-loadbalancer-`), TCP `ports` `(name, port)`, and its EndpointSlice: the
/// one `backend` (on 127.0.0.1) behind every port.
pub fn clb_service(
    ns: &str,
    name: &str,
    vip: &str,
    annotations: &[(&str, &str)],
    ports: &[(&str, u16)],
    backend: &Echo,
) -> String {
    let bport = backend.addr.port();
    let ann: String = annotations
        .iter()
        .map(|(k, v)| format!("    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-{k}: \"{v}\"\n"))
        .collect();
    let svc_ports: String =
        ports.iter().map(|(n, p)| format!("  - {{name: {n}, port: {p}, targetPort: {bport}}}\n")).collect();
    let slice_ports: String =
        ports.iter().map(|(n, _)| format!("- {{name: {n}, port: {bport}, protocol: TCP}}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  annotations:\n{ann}spec:\n  type: LoadBalancer\n  loadBalancerIP: {vip}\n  ports:\n{svc_ports}---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports:\n{slice_ports}endpoints:\n- addresses: [\"127.0.0.1\"]\n---\n"
    )
}

/// TCP_NODELAY on the proxy's end of the connection from `client` to its listener on `port`,
/// found among this process's sockets (the proxy runs in the test's process). The proxy sets
/// it in the connection's own task, after the accept: this waits up to 5 s for it to be
/// `want`, and returns what it last read (`None`: no such socket).
pub async fn proxy_side_nodelay(port: u16, client: SocketAddr, want: bool) -> Option<bool> {
    let mut seen = None;
    for _ in 0..500 {
        seen = nodelay_of(port, client);
        if seen == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    seen
}

fn nodelay_of(port: u16, client: SocketAddr) -> Option<bool> {
    use std::os::fd::BorrowedFd;
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        // SAFETY: the descriptor is only queried, never closed or written. One closed during
        // the scan makes the calls fail, or, reused at once by another thread, answers for
        // another socket: the addresses below must then match that socket's.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = socket2::SockRef::from(&fd);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        if local.is_some_and(|l| l.port() == port) && peer == Some(client) {
            return sock.tcp_nodelay().ok();
        }
    }
    None
}
