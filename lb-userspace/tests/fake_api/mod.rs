//! An in-process fake Kubernetes API server for the kube source's tests: it answers list
//! requests from the JSON fixtures in `tests/data/kube/`, keeps watch requests open and
//! streams the watch events a test pushes, accepts status patches and Event creations, and
//! records every request so that tests can assert on what the source actually sent.
#![allow(dead_code)] // each test crate uses part of the fake

mod objects;

#[allow(unused_imports)] // each test crate uses part of the fake
pub use objects::{COLLECTIONS, documents, examples_dir, stored};
use objects::{filter_list, namespaced};

use std::{
    collections::HashMap,
    convert::Infallible,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true" || p == "watch=1")
    }
}

#[derive(Default)]
struct State {
    /// Collection path (or single object path) -> fixture file name.
    routes: HashMap<String, String>,
    /// Collection path -> list body, served before `routes` (see [`FakeApi::serving`]).
    lists: HashMap<String, String>,
    /// Open watch streams by collection path.
    watches: HashMap<String, Vec<mpsc::UnboundedSender<Bytes>>>,
    /// Requests to paths ending with one of these are never answered.
    hang: Vec<String>,
    /// Collection path -> how many more list requests fail with 500.
    failures: HashMap<String, usize>,
    requests: Vec<Recorded>,
    /// Objects created or replaced through the fake (Leases), by path.
    objects: HashMap<String, Value>,
    resource_version: u64,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/kube")
}

/// A fixture's text.
pub fn fixture(name: &str) -> String {
    let path = data_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

impl FakeApi {
    /// The fixtures every test starts from.
    pub fn new() -> FakeApi {
        let fake = FakeApi::default();
        for (path, file) in [
            ("/api/v1/services", "services.json"),
            ("/apis/discovery.k8s.io/v1/endpointslices", "endpointslices.json"),
            ("/apis/networking.k8s.io/v1/ingresses", "ingresses.json"),
            ("/apis/networking.k8s.io/v1/ingressclasses", "ingressclasses.json"),
            ("/api/v1/secrets", "secrets.json"),
            ("/apis/alibabacloud.com/v1/albconfigs", "albconfigs.json"),
            ("/apis/lb.dev/v1alpha1/accesscontrollists", "accesscontrollists.json"),
            ("/api/v1/nodes", "nodes.json"),
            ("/api/v1/nodes/node-a", "node-a.json"),
        ] {
            fake.state.lock().unwrap().routes.insert(path.into(), file.into());
        }
        fake
    }

    /// A fake whose collections list exactly `objects` (each kind lb watches, an empty list
    /// for a kind with none), as an API server that stored them would: see
    /// [`stored`] for what it adds to each. No fixture is served.
    pub fn serving(objects: &[Value]) -> FakeApi {
        let fake = FakeApi::default();
        let mut state = fake.state.lock().unwrap();
        for (kind, (api_version, path)) in COLLECTIONS {
            let items: Vec<Value> =
                objects.iter().filter(|o| o["kind"] == *kind).enumerate().map(|(i, o)| stored(o, i)).collect();
            let list = json!({
                "kind": format!("{kind}List"), "apiVersion": api_version,
                "metadata": {"resourceVersion": "1000"}, "items": items,
            });
            state.lists.insert((*path).into(), list.to_string());
        }
        drop(state);
        fake
    }

    /// `path` answers 404, as for a CRD that is not installed.
    pub fn remove_route(&self, path: &str) {
        self.state.lock().unwrap().routes.remove(path);
    }

    /// From now on, requests to paths ending with `suffix` get no answer (an API server
    /// that stopped responding to them).
    pub fn hang(&self, suffix: &str) {
        self.state.lock().unwrap().hang.push(suffix.into());
    }

    /// The next `n` requests of `path` (lists, gets, status patches) fail with 500 at once.
    pub fn fail_lists(&self, path: &str, n: usize) {
        self.state.lock().unwrap().failures.insert(path.into(), n);
    }

    /// A client whose every request goes to this fake.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Serve this fake over plain HTTP on 127.0.0.1, for clients built from a kubeconfig
    /// (`server: http://ADDR`); its address. The server lives as long as the test's runtime.
    pub async fn listen(&self) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = fake.clone();
                let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let fake = fake.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                        let req = Request::from_parts(parts, kube::client::Body::from(bytes.to_vec()));
                        Ok::<_, Infallible>(fake.handle(req).await)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
            }
        });
        addr
    }

    /// Store an object at `path` (as if another client had written it).
    pub fn put_object(&self, path: &str, mut obj: Value) {
        let mut state = self.state.lock().unwrap();
        state.resource_version += 1;
        obj["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
        state.objects.insert(path.into(), obj);
    }

    pub fn object(&self, path: &str) -> Option<Value> {
        self.state.lock().unwrap().objects.get(path).cloned()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests with this method whose path ends with `suffix`.
    pub fn requests_to(&self, method: Method, suffix: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == method && r.path.ends_with(suffix)).collect()
    }

    /// Stream the watch events of `jsonl` (one event a line) to the open watches of `path`,
    /// waiting (up to 10 s) for the source to have one open.
    pub async fn push(&self, path: &str, jsonl: &str) {
        for _ in 0..1000 {
            let sent = {
                let mut state = self.state.lock().unwrap();
                let watches = state.watches.entry(path.into()).or_default();
                watches.retain(|tx| !tx.is_closed());
                for tx in watches.iter() {
                    for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
                        let _ = tx.send(Bytes::from(format!("{line}\n")));
                    }
                }
                !watches.is_empty()
            };
            if sent {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no watch of {path} was opened");
    }

    async fn handle(&self, req: Request<kube::client::Body>) -> Response<BoxBody<Bytes, Infallible>> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let recorded = Recorded {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            body: serde_json::from_slice(&bytes).ok(),
        };
        let hang = {
            let mut state = self.state.lock().unwrap();
            state.requests.push(recorded.clone());
            state.hang.iter().any(|h| recorded.path.ends_with(h.as_str()))
        };
        if hang {
            return std::future::pending().await;
        }
        let mut state = self.state.lock().unwrap();
        let path = recorded.path.as_str();
        if !recorded.is_watch()
            && let Some(n) = state.failures.get_mut(path).filter(|n| **n > 0)
        {
            *n -= 1;
            return status(StatusCode::INTERNAL_SERVER_ERROR, "etcdserver: request timed out");
        }
        match recorded.method {
            Method::GET if recorded.is_watch() => {
                let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
                state.watches.entry(path.into()).or_default().push(tx);
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
                });
                Response::builder()
                    .header("content-type", "application/json")
                    .body(BodyExt::boxed(StreamBody::new(stream)))
                    .unwrap()
            }
            Method::GET if state.objects.contains_key(path) => {
                json_response(StatusCode::OK, &state.objects[path].to_string())
            }
            // Create (POST to the collection) and replace (PUT with the resourceVersion read:
            // optimistic concurrency, 409 on a stale one), as the API server does for Leases.
            Method::POST | Method::PUT if path.contains("/leases") => {
                let mut obj = recorded.body.clone().unwrap_or(Value::Null);
                let target = match recorded.method {
                    Method::POST => format!("{path}/{}", obj["metadata"]["name"].as_str().unwrap_or_default()),
                    _ => path.to_string(),
                };
                let stored_rv = state.objects.get(&target).map(|o| o["metadata"]["resourceVersion"].clone());
                let conflict = match (&recorded.method, &stored_rv) {
                    (&Method::POST, Some(_)) | (&Method::PUT, None) => true,
                    (&Method::PUT, Some(rv)) => *rv != obj["metadata"]["resourceVersion"],
                    _ => false,
                };
                if conflict {
                    return status(StatusCode::CONFLICT, &format!("conflict on {target}"));
                }
                state.resource_version += 1;
                obj["metadata"]["resourceVersion"] = json!(state.resource_version.to_string());
                state.objects.insert(target, obj.clone());
                json_response(
                    if recorded.method == Method::POST { StatusCode::CREATED } else { StatusCode::OK },
                    &obj.to_string(),
                )
            }
            Method::GET => {
                if let Some(n) = state.failures.get_mut(path).filter(|n| **n > 0) {
                    *n -= 1;
                    return status(StatusCode::INTERNAL_SERVER_ERROR, "etcdserver: request timed out");
                }
                let (collection, namespace) = namespaced(path);
                let body =
                    state.lists.get(&collection).cloned().or_else(|| state.routes.get(&collection).map(|f| fixture(f)));
                match body {
                    Some(body) => {
                        json_response(StatusCode::OK, &filter_list(&body, namespace.as_deref(), &recorded.query))
                    }
                    None => status(
                        StatusCode::NOT_FOUND,
                        &format!("the server could not find the requested resource ({path})"),
                    ),
                }
            }
            Method::PATCH if path.ends_with("/status") => {
                if let Some(n) = state.failures.get_mut(path).filter(|n| **n > 0) {
                    *n -= 1;
                    return status(StatusCode::INTERNAL_SERVER_ERROR, "etcdserver: request timed out");
                }
                // The object as the server would return it after the merge patch.
                let segments: Vec<&str> = path.split('/').collect();
                let (ns, kind_plural, name) =
                    (segments[segments.len() - 4], segments[segments.len() - 3], segments[segments.len() - 2]);
                let (api_version, kind) = match kind_plural {
                    "services" => ("v1", "Service"),
                    _ => ("networking.k8s.io/v1", "Ingress"),
                };
                let mut obj = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": ns, "resourceVersion": "9999"}});
                if let Some(s) = recorded.body.as_ref().and_then(|b| b.get("status")) {
                    obj["status"] = s.clone();
                }
                json_response(StatusCode::OK, &obj.to_string())
            }
            Method::POST if path.ends_with("/events") => {
                let mut obj = recorded.body.clone().unwrap_or(Value::Null);
                obj["metadata"]["resourceVersion"] = json!("9998");
                json_response(StatusCode::CREATED, &obj.to_string())
            }
            _ => status(StatusCode::METHOD_NOT_ALLOWED, "not handled by the fake API server"),
        }
    }
}

fn json_response(code: StatusCode, body: &str) -> Response<BoxBody<Bytes, Infallible>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))))
        .unwrap()
}

fn status(code: StatusCode, message: &str) -> Response<BoxBody<Bytes, Infallible>> {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": match code {
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::CONFLICT => "Conflict",
            _ => "InternalError",
        },
        "code": code.as_u16(),
    });
    json_response(code, &body.to_string())
}
