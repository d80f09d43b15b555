//! One request through the proxy: route it, answer redirects and fixed responses, apply
//! the rule's filters, rewrite and forwarded headers, and hand it to [`super::send`] for the
//! chosen endpoint (pooled or fresh connections, HTTP/1.1, h2c for gRPC, TLS for HTTPS
//! backends).
use std::{net::SocketAddr, sync::Arc, time::Duration};

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, header};
use ipnet::IpNet;
use smallvec::SmallVec;

use super::matching::{self, cors_allows, host_without_port, redirects_to_https};
use super::{
    balance::PickContext,
    headers::{is_upgrade, strip_hop_by_hop},
    limits::Limits,
    mirror::mirror,
    respond::{self, Body, Origin},
    router::{self, CompiledRoute, Table},
    sanitize,
    send::{self, forward},
    sticky::{GROUP_COOKIE, set_sticky, sticky_endpoint, strip_cookie_prefix},
    upstreams::Upstreams,
};
use crate::model::l7::route::{Action, Filter, HeaderValue as Value, StickySession, SystemValue};

pub use super::send::ClientBody;

/// The client connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct Conn {
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub tls: bool,
    /// `client`'s address as text (X-Forwarded-For), formatted once for the connection, not
    /// on each of its requests (the formatting was 0.6% of the proxy's CPU in keep-alive).
    client_ip: IpText,
}

impl Conn {
    pub fn new(client: SocketAddr, local: SocketAddr, tls: bool) -> Conn {
        Conn { client, local, tls, client_ip: IpText::new(client.ip()) }
    }
}

/// An address as text, inline (the longest IPv6 text is 45 bytes).
#[derive(Debug, Clone, Copy)]
struct IpText {
    len: u8,
    buf: [u8; 46],
}

impl IpText {
    fn new(ip: std::net::IpAddr) -> IpText {
        use std::io::Write as _;
        let mut buf = [0u8; 46];
        let mut w = &mut buf[..];
        let len = match write!(w, "{ip}") {
            Ok(()) => 46 - w.len(),
            Err(_) => 0,
        };
        IpText { len: len as u8, buf }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len as usize]
    }

    fn as_str(&self) -> &str {
        // Written by `Display`: ASCII.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// Serves one request of a listener, whichever server read it (hyper's, or
/// [`super::serve_h1`]'s for plain HTTP/1.1).
// Not an `async fn`, which would hold each argument twice (see the body).
#[allow(clippy::manual_async_fn)]
pub fn handle<B: ClientBody>(
    req: Request<B>,
    conn: Conn,
    table: Arc<Table>,
    up: Arc<Upstreams>,
    limits: Limits,
    trusted: Arc<[IpNet]>,
    mirror_skipped: Arc<std::sync::atomic::AtomicU64>,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    // An async block, not an `async fn`: an `async fn` keeps its arguments twice (as taken,
    // and moved into its body), the request included.
    async move {
        // The target as received (a cheap clone: its bytes are shared), read while the
        // request is rewritten; the endpoint pick (and a retry's) hashes its query.
        let uri = req.uri().clone();
        let cx = PickContext {
            client: conn.client.ip(),
            tuple: (conn.client, conn.local),
            query: uri.query().unwrap_or(""),
            ages: Some(&up.ages),
        };
        // Routing is done before anything is awaited, in a plain function: what the
        // request's future holds across the exchange is only what the answer needs (the
        // routing's locals would otherwise stay in it, copied with it at every move).
        let sent = match route(req, conn, &uri, &cx, &table, &up, limits, &trusted, &mirror_skipped) {
            Routed::Answer(resp) => return resp,
            Routed::Sent(sent) => sent,
        };
        let mut resp = sent.exchange.await;
        let (route, pick) = (sent.route, sent.pick);
        if let Some(&send::AnsweredBy(addr)) = resp.extensions().get() {
            set_sticky(route, addr, &mut resp);
        }
        if sent.gzip {
            resp = super::gzip::compress(resp);
        }
        if let Some(timeout) = sent.group_sticky {
            let id = router::group_id(&route.route.upstreams[pick.upstream].name);
            let v = format!("{GROUP_COOKIE}={id}; Max-Age={timeout}; Path=/; HttpOnly");
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        with_cors(&route.route.rule, sent.origin.as_deref(), resp)
    }
}

/// What routing made of a request: an answer of the proxy's own, or an exchange sent.
enum Routed<'a> {
    Answer(Response<Body>),
    Sent(Sent<'a>),
}

/// A request on its way to a backend, and what its answer still needs.
struct Sent<'a> {
    exchange: send::Exchange<'a>,
    route: &'a CompiledRoute,
    pick: router::Pick,
    gzip: bool,
    group_sticky: Option<u32>,
    origin: Option<String>,
}

/// CORS headers on an answer, when the rule allows the request's origin.
fn with_cors(rule: &crate::model::l7::route::Rule, origin: Option<&str>, mut resp: Response<Body>) -> Response<Body> {
    if let (Some(cors), Some(o)) = (&rule.cors, origin)
        && cors_allows(cors, o)
    {
        respond::cors_headers(cors, o, resp.headers_mut());
    }
    resp
}

/// Routes one request: the proxy's own answers (errors, redirects, fixed responses, CORS
/// preflights), or the request rewritten and sent to the endpoint picked.
#[allow(clippy::too_many_arguments)]
fn route<'a, B: ClientBody>(
    req: Request<B>,
    conn: Conn,
    uri: &'a Uri,
    cx: &'a PickContext<'a>,
    table: &'a Table,
    up: &'a Arc<Upstreams>,
    limits: Limits,
    trusted: &[IpNet],
    mirror_skipped: &Arc<std::sync::atomic::AtomicU64>,
) -> Routed<'a> {
    let mut req = req.map(send::client_body);
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Routed::Answer(respond::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the request body is larger than {} bytes", limits.max_body_bytes),
        ));
    }
    let l = &table.listener;
    let scheme = if conn.tls { "https" } else { "http" };
    let checked = sanitize::request_host(uri, req.version(), req.headers(), conn.tls)
        .and_then(|host| Ok((host, sanitize::normalize_path(uri.path())?)));
    let (host, path) = match checked {
        Ok(hp) => hp,
        Err(why) => return Routed::Answer(respond::error(StatusCode::BAD_REQUEST, &why.to_string())),
    };
    let bare_host = host_without_port(host);
    let query = uri.query();
    if let Some(port) = l.redirect_https_port {
        return Routed::Answer(respond::redirect(301, &respond::location("https", bare_host, port, &path, query)));
    }
    // Borrowed from the request until it is rewritten (no copies on the hot path).
    let mut header_refs: SmallVec<[(&str, &str); 16]> = SmallVec::with_capacity(req.headers().len());
    header_refs.extend(req.headers().iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v))));
    let gzip = l.gzip && super::gzip::accepts_gzip(req.headers());
    let view = matching::Request {
        host,
        path: &path,
        method: req.method().as_str(),
        headers: &header_refs,
        query: query.unwrap_or(""),
        source: conn.client.ip(),
    };
    let Some((route, caps)) = table.select(&view, fastrand::u32(0..100)) else {
        return Routed::Answer(respond::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no rule of this listener matches the request",
        ));
    };
    let rule = &route.route.rule;
    if !route.admit() {
        return Routed::Answer(respond::error(StatusCode::SERVICE_UNAVAILABLE, "traffic-limit-qps exceeded"));
    }
    if redirects_to_https(rule, l.port, conn.tls) {
        return Routed::Answer(respond::redirect(301, &respond::location("https", bare_host, 443, &path, query)));
    }
    let origin = view.header("origin").map(str::to_owned);
    if let (Some(cors), Some(o)) = (&rule.cors, &origin)
        && req.method() == http::Method::OPTIONS
        && view.header("access-control-request-method").is_some()
    {
        if cors_allows(cors, o) {
            return Routed::Answer(respond::preflight(cors, o));
        }
        return Routed::Answer(respond::error(StatusCode::FORBIDDEN, "CORS origin not allowed"));
    }
    match &rule.action {
        Action::Redirect(r) => {
            let o = Origin { scheme, host: bare_host, port: l.port, path: &path, query };
            Routed::Answer(respond::redirect(r.code, &respond::redirect_location(r, &o)))
        }
        Action::FixedResponse(f) => Routed::Answer(with_cors(rule, origin.as_deref(), respond::fixed(f))),
        Action::Forward { sticky: group, .. } => {
            let rewritten = matching::rewritten(rule, &path, &caps);
            let (new_path, new_query) = match rewritten.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (&*rewritten, query),
            };
            let sticky = sticky_endpoint(route, &view);
            let group_sticky = group.as_ref().map(|g| g.timeout_s);
            let group = group_sticky.and_then(|_| view.cookie(GROUP_COOKIE)).and_then(|id| route.group_of(id));
            let Some(pick) = route.pick(cx, fastrand::u32(..), sticky, group) else {
                return Routed::Answer(respond::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy backend for this route",
                ));
            };
            // The views into the request end here (the inline list has a destructor, which
            // would otherwise hold them to the end of the function).
            drop(header_refs);
            prepare(&mut req, &conn, table, route, (new_path, new_query), trusted);
            mirror(&mut req, route, cx, up, limits.mirror_max_body_bytes, mirror_skipped);
            let timeout = Duration::from_secs(u64::from(l.request_timeout_s));
            let exchange = forward(req, route, pick, cx, up, timeout, limits);
            Routed::Sent(Sent { exchange, route, pick, gzip, group_sticky, origin })
        }
    }
}

/// Rewrites the request for the backend: path and query, filters, forwarded headers,
/// hop-by-hop headers, the server-cookie prefix.
fn prepare(
    req: &mut Request<Body>,
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
    let upgrade_hdr = if upgrade { req.headers().get(header::UPGRADE).cloned() } else { None };
    let authority = req.uri().authority().map(|a| a.as_str().to_owned());
    // The target the backend gets: the request's own when routing changed neither its path
    // nor its query (no copy), else rebuilt.
    let target = {
        let u = req.uri();
        let same = u.path() == path && u.query() == query && query.is_none_or(|q| !q.is_empty());
        match (same, u.path_and_query()) {
            (true, _) if u.scheme().is_none() && u.authority().is_none() => None,
            (true, Some(pq)) => Some(Uri::from(pq.clone())),
            _ => {
                let pq = match query {
                    Some(q) if !q.is_empty() => format!("{path}?{q}"),
                    _ => path.to_owned(),
                };
                Uri::builder().path_and_query(pq).build().ok()
            }
        }
    };
    let h = req.headers_mut();
    // Room for the forwarding headers below: the map grows once, if at all.
    h.reserve(4);
    strip_hop_by_hop(h);
    // The Host the backend gets is the one the route matched: the URI's authority when the
    // request has one (HTTP/2 `:authority`, HTTP/1.1 absolute-form; a Host header that
    // disagreed with it was refused).
    // A request without any (HTTP/1.0, HTTP/2 without `:authority`) gets the address it was
    // sent to, not the endpoint's (which a backend would put in its redirects and links).
    if let Some(a) = authority {
        put(h, header::HOST, &a);
    } else if !h.contains_key(header::HOST) {
        put(h, header::HOST, &local_authority(conn));
    }
    // HTTP/2 clients send each cookie in a field of its own (RFC 9113 8.2.3); an HTTP/1.1
    // backend expects one `Cookie` (RFC 6265 5.4), as nginx and Envoy join them.
    if let Some(v) = joined(h, &header::COOKIE, "; ") {
        h.insert(header::COOKIE, v);
    }
    // Forwarding headers are the listener's to set: a client's copy goes on only from a
    // trusted proxy (then X-Forwarded-For is appended to).
    sanitize::forwarding_from(h, conn.client.ip(), trusted);
    if upgrade && let Some(u) = upgrade_hdr {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // A trusted proxy's X-Forwarded-For may come in several fields: all of them, in order.
    if let Some(v) = joined(h, &X_FORWARDED_FOR, ", ") {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    let xff = forwarded_for(h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()), conn.client_ip.as_bytes());
    if let Some(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    if l.headers.proto {
        let proto = HeaderValue::from_static(if conn.tls { "https" } else { "http" });
        h.insert(X_FORWARDED_PROTO.clone(), proto);
    }
    if l.headers.listener_port {
        h.insert(X_FORWARDED_PORT.clone(), table.port_value.clone());
    }
    if l.headers.client_port {
        h.insert(X_FORWARDED_CLIENT_SRCPORT.clone(), HeaderValue::from(conn.client.port()));
    }
    for (f, referenced) in route.route.rule.filters.iter().zip(referenced) {
        match f {
            Filter::InsertHeader { key, value } => {
                let value = match value {
                    Value::Literal(v) => Some(v.clone()),
                    Value::RequestHeader(_) => referenced,
                    Value::System(s) => Some(match s {
                        SystemValue::ClientSrcPort => conn.client.port().to_string(),
                        SystemValue::ClientSrcIp => conn.client_ip.as_str().to_owned(),
                        SystemValue::Protocol => (if conn.tls { "https" } else { "http" }).to_owned(),
                        SystemValue::SlbPort => l.port.to_string(),
                        SystemValue::LocalAddr => conn.local.ip().to_string(),
                    }),
                };
                if let Some(v) = value
                    && let Ok(n) = HeaderName::from_bytes(key.to_ascii_lowercase().as_bytes())
                {
                    put(h, n, &v);
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
    // The backend's address goes in the URI at forward time; keep only the path here.
    if let Some(uri) = target {
        *req.uri_mut() = uri;
    }
}

/// `X-Forwarded-For`: the previous value (kept from a trusted proxy), then the client's
/// address (formatted once for the connection), copied once into the value.
fn forwarded_for(prev: Option<&str>, ip: &[u8]) -> Option<HeaderValue> {
    match prev {
        Some(p) => {
            let mut v = Vec::with_capacity(p.len() + 2 + ip.len());
            v.extend_from_slice(p.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip);
            HeaderValue::from_bytes(&v).ok()
        }
        None => HeaderValue::from_bytes(ip).ok(),
    }
}

// Made once, not parsed on every request.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_CLIENT_SRCPORT: HeaderName = HeaderName::from_static("x-forwarded-client-srcport");

/// The values of `name` joined by `sep` into one, when the request has more than one field
/// of it (none: the usual case, no allocation).
fn joined(h: &HeaderMap, name: &HeaderName, sep: &str) -> Option<HeaderValue> {
    let mut values = h.get_all(name).iter();
    values.nth(1)?;
    let mut v = Vec::new();
    for (i, value) in h.get_all(name).iter().enumerate() {
        if i > 0 {
            v.extend_from_slice(sep.as_bytes());
        }
        v.extend_from_slice(value.as_bytes());
    }
    HeaderValue::from_bytes(&v).ok()
}

/// The address the client connected to, as a Host: the port only when not the scheme's.
fn local_authority(conn: &Conn) -> String {
    respond::authority(&conn.local.ip().to_string(), conn.local.port(), if conn.tls { 443 } else { 80 })
}

fn put(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_address_is_kept_as_its_text() {
        for ip in ["192.0.2.7", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", "::ffff:192.0.2.7"] {
            let addr: std::net::IpAddr = ip.parse().unwrap();
            let text = IpText::new(addr);
            assert_eq!(text.as_str(), addr.to_string(), "{ip}");
            assert_eq!(text.as_bytes(), addr.to_string().as_bytes());
        }
        let conn = Conn::new("[2001:db8::2]:4000".parse().unwrap(), "127.0.0.1:80".parse().unwrap(), false);
        assert_eq!(
            forwarded_for(Some("198.51.100.1"), conn.client_ip.as_bytes()).unwrap(),
            "198.51.100.1, 2001:db8::2"
        );
        assert_eq!(forwarded_for(None, conn.client_ip.as_bytes()).unwrap(), "2001:db8::2");
    }
}
