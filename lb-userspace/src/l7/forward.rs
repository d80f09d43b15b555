//! One request through the proxy: route it, answer redirects and fixed responses, apply
//! the rule's filters, rewrite and forwarded headers, and hand it to [`super::send`] for the
//! chosen endpoint (pooled or fresh connections, HTTP/1.1, h2c for gRPC, TLS for HTTPS
//! backends).
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use ipnet::IpNet;

use super::matching::{self, cors_allows, host_without_port, redirects_to_https};
use super::{
    balance::{ActiveRequests, PickContext},
    limits::Limits,
    respond::{self, Body, Origin},
    router::{self, CompiledRoute, Table},
    sanitize,
    send::{forward, mirror},
    sticky::{set_sticky, sticky_endpoint, strip_cookie_prefix},
};
use crate::model::l7::route::{Action, Filter, HeaderValue as Value, StickySession, SystemValue};

/// The client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Connections to backends, shared by every listener.
pub struct Upstreams {
    /// Keep-alive pool (`backend-keepalive: true`).
    pub(super) pooled: HttpClient,
    /// A new connection per request (the default, as on ALB).
    pub(super) fresh: HttpClient,
    /// HTTP/2 (h2c) for gRPC backends, pooled.
    pub(super) h2: HttpClient,
    pub active: ActiveRequests,
    /// When each endpoint joined (slow start).
    pub ages: super::balance::EndpointAges,
    /// Endpoints in use, and the drain of those removed.
    pub departures: super::drain::Departures,
}

/// Name of the cookie the proxy inserts for `sticky-session-type: insert`.
pub const STICKY_COOKIE: &str = "SERVERID";
/// Name of the cookie that keeps a client on one Service of a forward group
/// (`ServerGroupStickySession`).
pub const GROUP_COOKIE: &str = "SERVERGROUPID";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for Upstreams {
    fn default() -> Self {
        Upstreams::new()
    }
}

impl Upstreams {
    pub fn new() -> Upstreams {
        let connector = || {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            http.set_nodelay(true);
            http.set_connect_timeout(Some(CONNECT_TIMEOUT));
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(crate::tls::backend_client_config())
                .https_or_http()
                .enable_http1()
                .enable_http2()
                .wrap_connector(http)
        };
        let builder = || Client::builder(TokioExecutor::new());
        Upstreams {
            pooled: builder().pool_idle_timeout(Duration::from_secs(60)).build(connector()),
            fresh: builder().pool_max_idle_per_host(0).build(connector()),
            h2: builder().http2_only(true).build(connector()),
            active: ActiveRequests::default(),
            ages: Default::default(),
            departures: Default::default(),
        }
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers, and those named in `Connection`. `te: trailers` stays (gRPC).
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    if h.get(header::TE).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers")) {
        h.remove(header::TE);
    }
}

pub(super) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade")))
}

/// Serves one request of a listener.
pub async fn handle(
    mut req: Request<Incoming>,
    conn: Conn,
    table: Arc<Table>,
    up: Arc<Upstreams>,
    limits: Limits,
    trusted: &[IpNet],
) -> Response<Body> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return respond::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {} bytes", limits.max_body_bytes),
        );
    }
    let l = &table.listener;
    let scheme = if conn.tls { "https" } else { "http" };
    let checked = sanitize::request_host(req.uri(), req.version(), req.headers(), conn.tls)
        .and_then(|host| Ok((host, sanitize::normalize_path(req.uri().path())?)));
    let (host, path) = match checked {
        Ok(hp) => hp,
        Err(why) => return respond::error(StatusCode::BAD_REQUEST, &why.to_string()),
    };
    let bare_host = host_without_port(&host).to_owned();
    let query = req.uri().query().map(str::to_owned);
    if let Some(port) = l.redirect_https_port {
        return respond::redirect(301, &respond::location("https", &bare_host, port, &path, query.as_deref()));
    }
    // Borrowed from the request until it is rewritten (no copies on the hot path).
    let header_refs: Vec<(&str, &str)> =
        req.headers().iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))).collect();
    let method = req.method().as_str().to_owned();
    let gzip = l.gzip && super::gzip::accepts_gzip(req.headers());
    let view = matching::Request {
        host: &host,
        path: &path,
        method: &method,
        headers: &header_refs,
        query: query.as_deref().unwrap_or(""),
        source: conn.client.ip(),
    };
    let Some((route, caps)) = table.select(&view, fastrand::u32(0..100)) else {
        return respond::error(StatusCode::SERVICE_UNAVAILABLE, "no rule of this listener matches the request");
    };
    let rule = &route.route.rule;
    if !route.admit() {
        return respond::error(StatusCode::SERVICE_UNAVAILABLE, "traffic-limit-qps exceeded");
    }
    if redirects_to_https(rule, l.port, conn.tls) {
        return respond::redirect(301, &respond::location("https", &bare_host, 443, &path, query.as_deref()));
    }
    let origin_hdr = view.header("origin").map(str::to_owned);
    if let (Some(cors), Some(o)) = (&rule.cors, &origin_hdr)
        && req.method() == http::Method::OPTIONS
        && view.header("access-control-request-method").is_some()
    {
        if cors_allows(cors, o) {
            return respond::preflight(cors, o);
        }
        return respond::error(StatusCode::FORBIDDEN, "CORS origin not allowed");
    }
    let mut resp = match &rule.action {
        Action::Redirect(r) => {
            let o = Origin { scheme, host: &bare_host, port: l.port, path: &path, query: query.as_deref() };
            return respond::redirect(r.code, &respond::redirect_location(r, &o));
        }
        Action::FixedResponse(f) => respond::fixed(f),
        Action::Forward { .. } => {
            let new_path = matching::rewrite(rule, &caps);
            let (new_path, new_query) = match new_path.split_once('?') {
                Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
                None => (new_path, query.clone()),
            };
            let cx =
                PickContext { client: conn.client.ip(), query: query.as_deref().unwrap_or(""), ages: Some(&up.ages) };
            let sticky = sticky_endpoint(route, &view);
            let group_sticky = match &rule.action {
                Action::Forward { sticky: Some(g), .. } => Some(g.timeout_s),
                _ => None,
            };
            let group = group_sticky.and_then(|_| view.cookie(GROUP_COOKIE)).and_then(|id| route.group_of(id));
            let Some(pick) = route.pick(&cx, fastrand::u32(..), sticky, group) else {
                return respond::error(StatusCode::SERVICE_UNAVAILABLE, "no healthy backend for this route");
            };
            prepare(&mut req, &conn, &table, route, (&new_path, new_query.as_deref()), trusted);
            mirror(&req, route, &cx, &up);
            let mut resp =
                forward(req, route, pick, &cx, &up, Duration::from_secs(u64::from(l.request_timeout_s)), limits).await;
            set_sticky(route, pick, &mut resp);
            if gzip {
                resp = super::gzip::compress(resp);
            }
            if let Some(timeout) = group_sticky {
                let id = router::group_id(&route.route.upstreams[pick.upstream].name);
                let v = format!("{GROUP_COOKIE}={id}; Max-Age={timeout}; Path=/; HttpOnly");
                if let Ok(v) = HeaderValue::from_str(&v) {
                    resp.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            resp
        }
    };
    if let (Some(cors), Some(o)) = (&rule.cors, &origin_hdr)
        && cors_allows(cors, o)
    {
        respond::cors_headers(cors, o, resp.headers_mut());
    }
    resp
}

/// Rewrites the request for the backend: path and query, filters, forwarded headers,
/// hop-by-hop headers, the server-cookie prefix.
fn prepare(
    req: &mut Request<Incoming>,
    conn: &Conn,
    table: &Table,
    route: &CompiledRoute,
    (path, query): (&str, Option<&str>),
    trusted: &[IpNet],
) {
    let l = &table.listener;
    // ReferenceHeader values come from the request as received.
    let referenced: Vec<Option<String>> = route
        .route
        .rule
        .filters
        .iter()
        .map(|f| match f {
            Filter::InsertHeader { value: Value::RequestHeader(name), .. } => {
                req.headers().get(name.as_str()).and_then(|v| v.to_str().ok()).map(str::to_owned)
            }
            _ => None,
        })
        .collect();
    let upgrade = is_upgrade(req.headers());
    let upgrade_hdr = req.headers().get(header::UPGRADE).cloned();
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    let h = req.headers_mut();
    strip_hop_by_hop(h);
    // The Host the backend gets is the one the route matched: the URI's authority when the
    // request has one (HTTP/2 `:authority`, HTTP/1.1 absolute-form; a Host header that
    // disagreed with it was refused).
    if let Some(a) = authority {
        put(h, "host", &a);
    }
    // Forwarding headers are the listener's to set: a client's copy goes on only from a
    // trusted proxy (then X-Forwarded-For is appended to).
    sanitize::forwarding_from(h, conn.client.ip(), trusted);
    if upgrade && let Some(u) = upgrade_hdr {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    let client_ip = conn.client.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => client_ip.clone(),
    };
    put(h, "x-forwarded-for", &xff);
    if l.headers.proto {
        put(h, "x-forwarded-proto", if conn.tls { "https" } else { "http" });
    }
    if l.headers.listener_port {
        put(h, "x-forwarded-port", &l.port.to_string());
    }
    if l.headers.client_port {
        put(h, "x-forwarded-client-srcport", &conn.client.port().to_string());
    }
    for (f, referenced) in route.route.rule.filters.iter().zip(referenced) {
        match f {
            Filter::InsertHeader { key, value } => {
                let value = match value {
                    Value::Literal(v) => Some(v.clone()),
                    Value::RequestHeader(_) => referenced,
                    Value::System(s) => Some(match s {
                        SystemValue::ClientSrcPort => conn.client.port().to_string(),
                        SystemValue::ClientSrcIp => client_ip.clone(),
                        SystemValue::Protocol => (if conn.tls { "https" } else { "http" }).to_owned(),
                        SystemValue::SlbPort => l.port.to_string(),
                        SystemValue::LocalAddr => conn.local.ip().to_string(),
                    }),
                };
                if let Some(v) = value {
                    put(h, &key.to_ascii_lowercase(), &v);
                }
            }
            Filter::RemoveHeader(name) => {
                h.remove(name.to_ascii_lowercase().as_str());
            }
        }
    }
    if let Some(StickySession::Server { cookie }) = &route.route.rule.backend.sticky {
        strip_cookie_prefix(h, cookie);
    }
    let pq = match query {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_owned(),
    };
    // The backend's address goes in the URI at forward time; keep only the path here.
    if let Ok(uri) = Uri::builder().path_and_query(pq).build() {
        *req.uri_mut() = uri;
    }
}

fn put(h: &mut HeaderMap, name: &str, value: &str) {
    if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
        h.insert(n, v);
    }
}
