//! Sending a prepared request to its endpoint: the backend URI, its body copied for the
//! mirrors ([`super::mirror`]), one retry on
//! another endpoint when the connection could not be made, limits on the bodies both ways,
//! upgrades turned into tunnels, connection drain of removed endpoints, and failures turned
//! into 408/413/502/504 without internal addresses.
use std::{net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;

use super::{
    balance::PickContext,
    deadline::Deadline,
    drain::{Cut, CutBody},
    h2_upstream::{H2Error, Sent},
    headers::{is_upgrade, strip_hop_by_hop},
    limits::{IdleBody, Limits, Place, Stalled},
    mirror, pool,
    respond::{self, Body, BoxError},
    router::{CompiledRoute, Pick},
    upstreams::Upstreams,
};
use crate::model::l7::route::BackendProtocol;

/// What a request body from a client is to the proxy: hyper's `Incoming`, or
/// [`super::serve_h1`]'s body read from the connection's own buffer.
pub trait ClientBody:
    hyper::body::Body<Data = bytes::Bytes, Error: std::error::Error + Send + Sync + 'static> + Send + Sync + Unpin + 'static
{
}

impl<B> ClientBody for B where
    B: hyper::body::Body<Data = bytes::Bytes, Error: std::error::Error + Send + Sync + 'static>
        + Send
        + Sync
        + Unpin
        + 'static
{
}

fn upstream_uri(uri: &Uri, addr: SocketAddr, scheme: &str) -> Result<Uri, http::Error> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder().scheme(scheme).authority(addr.to_string()).path_and_query(pq).build()
}

/// An HTTP/2 backend request's URI: `http`, the request's Host as the authority (the
/// endpoint's address when it has none, or none that is an authority), its path.
fn h2_uri(headers: &http::HeaderMap, uri: &Uri, addr: SocketAddr) -> Uri {
    let host = headers.get(http::header::HOST).and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
    let Some(authority) = host else { return upstream_uri(uri, addr, "http").unwrap_or_default() };
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder().scheme("http").authority(authority).path_and_query(pq).build().unwrap_or_default()
}

/// The exchange of one request with its backend, boxed: the request's future (and every
/// future it sits in: the connection's, hyper's stream task) holds only this pointer, not
/// the exchange's state (a few KiB, which each of them would otherwise hold and move).
pub(super) type Exchange<'a> = Pin<Box<dyn Future<Output = Response<Body>> + Send + 'a>>;

/// Sends the prepared request to `pick` (and to one other endpoint when the connection
/// could not be made), within `timeout`. Plain HTTP/1.1 goes through this worker's
/// [`pool`](super::pool); gRPC (h2c) through [`super::h2_upstream`]; HTTPS and upgrades
/// through the shared clients.
/// What can be done before anything is awaited is done here, at the call: the future
/// keeps only what the exchange needs.
pub(super) fn forward<'a>(
    req: Request<Body>,
    route: &'a CompiledRoute,
    pick: Pick,
    cx: &'a PickContext<'a>,
    up: &'a Arc<Upstreams>,
    timeout: Duration,
    limits: Limits,
) -> Exchange<'a> {
    let backend = &route.route.rule.backend;
    let upgrade = is_upgrade(req.headers());
    let (mut parts, body) = req.into_parts();
    // A client body that is malformed, stalls or grows past the limit fails the request
    // (400 / 408 / 413). A request without one (most) needs no copy, limit nor timer.
    let body = if body.is_end_stream() && parts.extensions.get::<mirror::Tap>().is_none() {
        body
    } else {
        let body = mirror::tee(&mut parts, body);
        Limited::new(IdleBody::new(body, limits.body_idle), limits.max_body_bytes as usize)
            .map_err(BoxError::from)
            .boxed()
    };
    let (deadline, body) = Deadline::new(timeout, body);
    let t = Target { route, pick, cx, up, deadline, timeout, limits };
    if backend.protocol == BackendProtocol::Http && !upgrade {
        parts.version = Version::HTTP_11;
        return Box::pin(pooled(Request::from_parts(parts, body), t));
    }
    if backend.protocol == BackendProtocol::Grpc && !upgrade {
        return Box::pin(grpc(parts, body, t));
    }
    Box::pin(through_client(parts, body, upgrade, t))
}

/// What an exchange needs besides the request: the route and the endpoint picked (and how
/// to pick another), the upstreams, the deadline (`timeout` from the end of the request) and
/// the limits.
struct Target<'a> {
    route: &'a CompiledRoute,
    pick: Pick,
    cx: &'a PickContext<'a>,
    up: &'a Arc<Upstreams>,
    deadline: Deadline,
    timeout: Duration,
    limits: Limits,
}

/// HTTPS and upgrades through the shared hyper clients.
async fn through_client(
    mut parts: http::request::Parts,
    body: Body,
    upgrade: bool,
    mut t: Target<'_>,
) -> Response<Body> {
    let up = t.up;
    let backend = &t.route.route.rule.backend;
    let scheme = if backend.protocol == BackendProtocol::Https { "https" } else { "http" };
    let client = if upgrade || !backend.keepalive { &up.fresh } else { &up.pooled };
    let on_upgrade = if upgrade {
        let place = parts.extensions.remove::<Place>();
        parts.extensions.remove::<hyper::upgrade::OnUpgrade>().map(|client_side| Upgrade { client_side, place })
    } else {
        None
    };
    let resendable = body.is_end_stream();
    parts.version = Version::HTTP_11;
    // hyper's client sends no body of unknown length with a GET or HEAD unless framing is
    // asked for (right for a library, not for a proxy whose client sent one).
    if !resendable
        && body.size_hint().exact().is_none()
        && matches!(parts.method, http::Method::GET | http::Method::HEAD)
        && !parts.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        parts.headers.insert(http::header::TRANSFER_ENCODING, http::HeaderValue::from_static("chunked"));
    }
    let send = |mut p: http::request::Parts, addr: SocketAddr, body: Body| {
        p.uri = upstream_uri(&p.uri, addr, scheme).unwrap_or_default();
        let fut = client.request(Request::from_parts(p, body));
        let guard = up.active.track(addr);
        let mut cut = up.departures.watch(addr);
        async move {
            // `None`: the endpoint was removed and its drain time ended first.
            let r = tokio::select! {
                r = fut => Some(r),
                _ = cut.cut() => None,
            };
            drop(guard);
            r
        }
    };
    let mut addr = t.pick.endpoint.addr;
    // Kept only when the request could be sent again (no body).
    let saved = resendable.then(|| parts.clone());
    let mut result = Box::pin(within(&mut t.deadline, send(parts, addr, body))).await;
    if let Some(saved) = saved
        && let Ok(Some(Err(e))) = &result
        && e.is_connect()
        && let Some(other) = t.instead_of(addr, e)
    {
        addr = other;
        result = Box::pin(within(&mut t.deadline, send(saved, addr, respond::empty()))).await;
    }
    t.answer(result, addr, None, on_upgrade)
}

/// A gRPC (h2c) exchange on its endpoint's HTTP/2 connection, taken before anything is sent;
/// `:authority` is the host the route matched. A request that was not sent (the connect
/// failed; or the kept connection had ended, the backend's GOAWAY, and a new one could not
/// be made: a gRPC server's graceful stop closes its listener first) goes to another
/// endpoint, once, body and all. A client body that fails ends the request as on HTTP/1.1
/// (400 / 408 / 413): hyper's HTTP/2 client only resets the stream and reports that.
#[allow(clippy::manual_async_fn)]
fn grpc<'a>(
    mut parts: http::request::Parts,
    body: Body,
    mut t: Target<'a>,
) -> impl Future<Output = Response<Body>> + Send + 'a {
    async move {
        let up = t.up;
        let mut addr = t.pick.endpoint.addr;
        parts.version = Version::HTTP_2;
        parts.uri = h2_uri(&parts.headers, &parts.uri, addr);
        let (body, body_failed) = keep_body_error(body);
        let mut req = Request::from_parts(parts, body);
        let mut moved = false;
        // The endpoint whose connection last gave the request back.
        let mut given_back = None;
        // To another endpoint, once: the URI names the endpoint when the request has no Host.
        let move_to = |req: &mut Request<Body>, other: SocketAddr| {
            *req.uri_mut() = h2_uri(req.headers(), req.uri(), other);
            (other, true)
        };
        // Bounded: a connect that fails moves the request once; a connection that gives the
        // request back is followed by a new one, and a second one of the same endpoint that
        // does (it is going away: each connection ends at once) by the move.
        for _ in 0..4 {
            let conn = match tokio::time::timeout_at(t.deadline.start_bound(), up.h2.connection(addr)).await {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => match (!moved && e.is_connect()).then(|| t.instead_of(addr, &e)).flatten() {
                    Some(other) => {
                        (addr, moved) = move_to(&mut req, other);
                        continue;
                    }
                    None => return t.answer::<Body, _>(Ok(Some(Err(e))), addr, None, None),
                },
                Err(_) => return t.answer::<Body, H2Error>(Err(TimedOut), addr, None, None),
            };
            let id = conn.id();
            let guard = up.active.track(addr);
            let mut cut = up.departures.watch(addr);
            let result = tokio::select! {
                biased;
                r = up.h2.send(conn, req) => Ok(Some(r)),
                _ = cut.cut() => Ok(None),
                _ = t.deadline.reached() => Err(TimedOut),
            };
            drop(guard);
            let result = match result {
                Ok(Some(Ok(Sent::GivenBack(r)))) => {
                    req = r;
                    if given_back == Some(addr)
                        && !moved
                        && let Some(other) = t.instead_of(addr, &"its connections end before a request is sent")
                    {
                        (addr, moved) = move_to(&mut req, other);
                    }
                    given_back = Some(addr);
                    continue;
                }
                Ok(Some(Ok(Sent::Answer(r)))) => Ok(Some(Ok(r))),
                Ok(Some(Err(e))) => Ok(Some(Err(e))),
                Ok(None) => Ok(None),
                Err(TimedOut) => {
                    // It may be dead (a peer gone without a reset): the next request makes
                    // a new one.
                    up.h2.forget(addr, id);
                    Err(TimedOut)
                }
            };
            if let Ok(Some(Err(_))) = &result
                && let Some(e) = body_failed.lock().unwrap_or_else(|e| e.into_inner()).take()
            {
                return client_failure(&*e, addr, t.limits);
            }
            return t.answer(result, addr, Some(cut), None);
        }
        tracing::info!(backend = %addr, "HTTP/2 connections kept giving the request back: 502");
        respond::error(StatusCode::BAD_GATEWAY, "the backend could not be reached")
    }
}

/// The first error of a request body, kept for the answer.
type BodyFailed = Arc<std::sync::Mutex<Option<BoxError>>>;

/// `body`, its first error kept in the slot returned beside it (hyper gets the error's text).
fn keep_body_error(body: Body) -> (Body, BodyFailed) {
    let failed = BodyFailed::default();
    if body.is_end_stream() {
        return (body, failed);
    }
    let slot = failed.clone();
    let body = body
        .map_err(move |e| {
            let text = BoxError::from(e.to_string());
            slot.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
            text
        })
        .boxed();
    (body, failed)
}

/// A plain HTTP/1.1 exchange through this worker's pool, connected before anything is sent
/// (when that fails, another endpoint may take the request, body and all), answered within
/// the deadline, cut when the endpoint was removed and its drain time ended first.
// Not an `async fn`, which would hold each argument twice (see the body).
#[allow(clippy::manual_async_fn)]
fn pooled<'a>(req: Request<Body>, mut t: Target<'a>) -> impl Future<Output = Response<Body>> + Send + 'a {
    // An async block, not an `async fn`, which would keep its arguments twice; the deadline
    // is a branch of the select below, not a `Timeout` around a second future holding the
    // request again.
    async move {
        let (up, deadline) = (t.up, t.deadline.start_bound());
        let keep = t.route.route.rule.backend.keepalive;
        let mut addr = t.pick.endpoint.addr;
        let checkout = |addr| tokio::time::timeout_at(deadline, pool::checkout(addr, keep));
        let conn = match checkout(addr).await {
            Ok(Err(e)) if e.is_connect() => match t.instead_of(addr, &e) {
                Some(other) => {
                    addr = other;
                    checkout(addr).await
                }
                None => Ok(Err(e)),
            },
            r => r,
        };
        let conn = match conn {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return t.answer::<pool::PooledBody, _>(Ok(Some(Err(e))), addr, None, None),
            Err(_) => return t.answer::<pool::PooledBody, pool::Error>(Err(TimedOut), addr, None, None),
        };
        let guard = up.active.track(addr);
        let mut cut = up.departures.watch(addr);
        let result = tokio::select! {
            biased;
            r = conn.send(req) => Ok(Some(r)),
            _ = cut.cut() => Ok(None),
            _ = t.deadline.reached() => Err(TimedOut),
        };
        drop(guard);
        t.answer(result, addr, Some(cut), None)
    }
}

/// The backend did not answer within the request timeout.
struct TimedOut;

/// `exchange`, unless the request's time runs out first.
async fn within<F: Future>(deadline: &mut Deadline, exchange: F) -> Result<F::Output, TimedOut> {
    tokio::select! {
        biased;
        r = exchange => Ok(r),
        _ = deadline.reached() => Err(TimedOut),
    }
}

/// The client's side of an upgrade, and the connection's place the tunnel keeps.
struct Upgrade {
    client_side: hyper::upgrade::OnUpgrade,
    place: Option<Place>,
}

impl Target<'_> {
    /// Another endpoint of the picked upstream, for a request `addr` could not take (`e`:
    /// nothing was sent).
    fn instead_of(&self, addr: SocketAddr, e: &dyn std::fmt::Display) -> Option<SocketAddr> {
        let other = self.route.retry_pick(self.cx, self.pick.upstream, addr)?;
        tracing::debug!(backend = %addr, error = %e, retry = %other.addr, "connect failed, retrying on another endpoint");
        Some(other.addr)
    }

    /// The client's answer to what the backend `addr` did: its response (a tunnel for an
    /// upgrade), or 504 / 502 / 400 / 408 / 413 naming no internal address.
    fn answer<B, E>(
        &self,
        result: Result<Option<Result<Response<B>, E>>, TimedOut>,
        addr: SocketAddr,
        cut: Option<Cut>,
        on_upgrade: Option<Upgrade>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = bytes::Bytes> + Send + Sync + Unpin + 'static,
        B::Error: Into<BoxError>,
        E: std::error::Error + 'static,
    {
        let (up, timeout, limits) = (self.up, self.timeout, self.limits);
        match result {
            // The answer names no backend and no internal error: those go to the log.
            Err(_) => {
                tracing::info!(backend = %addr, timeout_s = timeout.as_secs(), "backend did not answer in time: 504");
                respond::error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("the backend did not answer within {}s", timeout.as_secs()),
                )
            }
            Ok(None) => {
                tracing::info!(backend = %addr, "endpoint removed and drained before it answered: 502");
                respond::error(StatusCode::BAD_GATEWAY, "the backend was removed before it answered")
            }
            Ok(Some(Err(e))) => client_failure(&e, addr, limits),
            Ok(Some(Ok(mut resp))) => {
                // The signal the exchange watched, else a new one.
                let cut = cut.unwrap_or_else(|| up.departures.watch(addr));
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(Upgrade { client_side, place }) = on_upgrade
                {
                    let backend_side = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(c), Ok(b)) = (client_side.await, backend_side.await) {
                            let mut cut = cut;
                            // Its endpoint's drain, or its listener's, is over.
                            let over = async {
                                let listener = async {
                                    match &place {
                                        Some(p) => p.listener_drained().await,
                                        None => std::future::pending().await,
                                    }
                                };
                                tokio::select! {
                                    () = cut.cut() => {}
                                    () = listener => {}
                                }
                            };
                            super::limits::tunnel(TokioIo::new(c), TokioIo::new(b), limits.tunnel_idle, over).await;
                        }
                        drop(place);
                    });
                    let (p, _) = resp.into_parts();
                    return Response::from_parts(p, respond::empty());
                }
                strip_hop_by_hop(resp.headers_mut());
                // A sticky route's cookie names the endpoint that answered (a retry may have
                // moved the request from the one picked); only there: an extension allocates.
                if self.route.route.rule.backend.sticky.is_some() {
                    resp.extensions_mut().insert(AnsweredBy(addr));
                }
                resp.map(|b| CutBody::new(IdleBody::new(b, limits.body_idle), cut).boxed())
            }
        }
    }
}

/// The endpoint whose answer a response is (sticky routes only; none on the proxy's own
/// answers).
#[derive(Clone, Copy)]
pub(super) struct AnsweredBy(pub SocketAddr);

/// The client's request body could not be read (a bad chunk size, the client went away).
#[derive(Debug, thiserror::Error)]
#[error("the request body could not be read: {0}")]
struct BadBody(BoxError);

/// A client's request body (hyper's, or [`super::serve_h1`]'s) as the rest of the pipeline
/// takes it, its errors marked as the client's ([`BadBody`]: 400).
pub(super) fn client_body<B: ClientBody>(body: B) -> Body {
    // Most requests have none: an empty body is boxed without an allocation.
    if body.is_end_stream() {
        return respond::empty();
    }
    body.map_err(|e| BoxError::from(BadBody(Box::new(e)))).boxed()
}

/// The answer to a request the backend client failed: 400, 408 or 413 when the client's body
/// was at fault, 502 otherwise.
fn client_failure(e: &(dyn std::error::Error + 'static), addr: SocketAddr, limits: Limits) -> Response<Body> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(inner) = src {
        if inner.is::<http_body_util::LengthLimitError>() {
            return respond::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the request body is larger than {} bytes", limits.max_body_bytes),
            );
        }
        if inner.is::<BadBody>() {
            tracing::debug!(error = %error_text(e), "request body unreadable: 400");
            return respond::error(StatusCode::BAD_REQUEST, "the request body is malformed");
        }
        if inner.is::<Stalled>() {
            return respond::error(
                StatusCode::REQUEST_TIMEOUT,
                &format!("the request body sent nothing for {}s", limits.body_idle.as_secs()),
            );
        }
        src = inner.source();
    }
    tracing::info!(backend = %addr, error = %error_text(e), "backend request failed: 502");
    respond::error(StatusCode::BAD_GATEWAY, "the backend could not be reached")
}

fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}
