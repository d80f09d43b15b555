//! TrafficMirror: copies of a route's requests go to its mirror targets, their answers
//! dropped. A request body is copied as it streams to the primary backend, up to
//! [`Limits::mirror_max_body_bytes`](super::Limits::mirror_max_body_bytes); the copies leave
//! once the body has ended. A longer body (by `Content-Length`, or once it grows past the
//! bound) goes to the primary whole and is not mirrored; the listener counts it
//! (`mirror_skipped`).
use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Uri, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::oneshot;

use super::{balance::PickContext, respond, router::CompiledRoute, upstreams::Upstreams};

/// How long a mirror copy may take before it is given up.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends copies of `req` to the route's mirror targets: at once when it has no body; else
/// once its body, copied as it streams (see [`Tee`]), has ended within `max` bytes. A body
/// longer than `max` is not mirrored and counted in `skipped`.
pub(super) fn mirror(
    req: &mut Request<respond::Body>,
    route: &CompiledRoute,
    cx: &PickContext<'_>,
    up: &Arc<Upstreams>,
    max: u64,
    skipped: &Arc<AtomicU64>,
) {
    if route.route.mirrors.is_empty() {
        return;
    }
    let targets = route.mirror_picks(cx);
    if targets.is_empty() {
        return;
    }
    let head = (req.method().clone(), req.uri().clone(), req.headers().clone());
    let (client, slots, skipped_copies) = (up.fresh.clone(), up.mirrors.clone(), skipped.clone());
    let send = move |body: Bytes| {
        let (method, uri, headers) = &head;
        for e in &targets {
            let Ok(uri) = upstream_uri(uri, e.addr) else { continue };
            // Bounded: past MIRRORS_IN_FLIGHT copies (slow mirror targets) the copy is skipped.
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                skipped_copies.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let mut copy = Request::new(respond::full(body.clone()));
            *copy.method_mut() = method.clone();
            *copy.headers_mut() = copy_headers(headers, body.len());
            *copy.uri_mut() = uri;
            let client = client.clone();
            tokio::spawn(async move {
                // The whole exchange within the timeout, the answer read and dropped frame by
                // frame (a download or an endless stream is not kept).
                let exchange = async {
                    let mut body = client.request(copy).await.ok()?.into_body();
                    while body.frame().await?.is_ok() {}
                    Some(())
                };
                let _ = tokio::time::timeout(MIRROR_TIMEOUT, exchange).await;
                drop(slot);
            });
        }
    };
    if req.body().is_end_stream() {
        send(Bytes::new());
        return;
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        skip(skipped, max);
        return;
    }
    let (tx, rx) = oneshot::channel();
    let tap = TapState { tx, buf: BytesMut::new(), max: max as usize, skipped: skipped.clone() };
    req.extensions_mut().insert(Tap(Arc::new(Mutex::new(Some(tap)))));
    // The body never ends (the request failed, or it grew past the bound): no copies.
    tokio::spawn(async move {
        if let Ok(body) = rx.await {
            send(body);
        }
    });
}

fn skip(skipped: &AtomicU64, max: u64) {
    skipped.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(max_bytes = max, "request body larger than the mirror bound: not mirrored");
}

/// The request's headers for a copy: hop-by-hop framing replaced by the copy's length.
fn copy_headers(headers: &HeaderMap, len: usize) -> HeaderMap {
    let mut h = headers.clone();
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::CONTENT_LENGTH);
    if len > 0 {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    h
}

fn upstream_uri(uri: &Uri, addr: std::net::SocketAddr) -> Result<Uri, http::Error> {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    Uri::builder().scheme("http").authority(addr.to_string()).path_and_query(pq).build()
}

/// Where a request's body is copied for its mirrors (a request extension, taken by the
/// sender; clonable as extensions must be).
#[derive(Clone)]
pub(super) struct Tap(Arc<Mutex<Option<TapState>>>);

struct TapState {
    tx: oneshot::Sender<Bytes>,
    buf: BytesMut,
    max: usize,
    skipped: Arc<AtomicU64>,
}

/// A request body as the primary backend gets it, copied into the request's [`Tap`] (if it
/// has one) on the way.
pub(super) struct Tee<B> {
    inner: B,
    tap: Option<TapState>,
}

/// `body` of a request whose `parts` may carry a [`Tap`].
pub(super) fn tee<B>(parts: &mut http::request::Parts, body: B) -> Tee<B> {
    let tap = parts.extensions.remove::<Tap>().and_then(|t| t.0.lock().ok()?.take());
    Tee { inner: body, tap }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tee<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(tap), Some(data)) = (this.tap.as_mut(), f.data_ref()) {
                    if tap.buf.len() + data.len() > tap.max {
                        skip(&tap.skipped, tap.max as u64);
                        this.tap = None;
                    } else {
                        tap.buf.extend_from_slice(data);
                    }
                }
                // The sender stops polling once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Some(Err(_)) => this.tap = None,
            None => this.finish(),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Tee<B> {
    /// The body ended within the bound: the copies may leave.
    fn finish(&mut self) {
        if let Some(tap) = self.tap.take() {
            let _ = tap.tx.send(tap.buf.freeze());
        }
    }
}
