//! Answers on their way to the client through hyper's server (TLS, HTTP/2): each counts its
//! request in flight until its body ends, and the connection sees which of them wait on the
//! client (hyper took a frame and has not asked for the next one: an HTTP/2 flow-control
//! window the client keeps shut, or a client that reads nothing).
use std::{
    pin::Pin,
    sync::{Mutex, MutexGuard},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::{
    listener::InFlight,
    respond::{Body, BoxError},
};

/// The answers of one connection whose bodies are being sent: (id, since when, in ms of the
/// connection's clock, each waits on the client; `u64::MAX` while it waits on its backend).
#[derive(Default)]
pub(super) struct Bodies {
    sending: Mutex<Vec<(u64, u64)>>,
    next: std::sync::atomic::AtomicU64,
}

impl Bodies {
    fn lock(&self) -> MutexGuard<'_, Vec<(u64, u64)>> {
        self.sending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self, now_ms: u64) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock().push((id, now_ms));
        id
    }

    fn set(&self, id: u64, since: u64) {
        if let Some(b) = self.lock().iter_mut().find(|(i, _)| *i == id) {
            b.1 = since;
        }
    }

    fn end(&self, id: u64) {
        let mut v = self.lock();
        if let Some(at) = v.iter().position(|(i, _)| *i == id) {
            v.swap_remove(at);
        }
    }

    /// How long the answer that has waited longest on the client has waited (`now_ms` on
    /// the connection's clock).
    pub(super) fn client_stalled_for(&self, now_ms: u64) -> Option<Duration> {
        let oldest = self.lock().iter().map(|(_, since)| *since).min().filter(|s| *s != u64::MAX)?;
        Some(Duration::from_millis(now_ms.saturating_sub(oldest)))
    }
}

/// An answer's body as hyper's server sends it: its request stays in flight until it ends or
/// is dropped (a long stream is not an idle connection), and whether it waits on the client
/// or on its backend is kept in the connection's [`Bodies`].
pub(super) struct Answering {
    inner: Body,
    id: u64,
    inflight: InFlight,
}

impl Answering {
    /// `inflight`: the request's, answered.
    pub(super) fn new(inner: Body, inflight: InFlight) -> Answering {
        let a = inflight.activity();
        let id = a.bodies.start(a.now_ms());
        Answering { inner, id, inflight }
    }
}

impl hyper::body::Body for Answering {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_frame(cx);
        let a = this.inflight.activity();
        match &r {
            // Taken: the next frame is asked for when the client has room for it.
            Poll::Ready(Some(Ok(_))) => a.bodies.set(this.id, a.now_ms()),
            // The backend's turn (its own idle limit applies).
            Poll::Pending => a.bodies.set(this.id, u64::MAX),
            Poll::Ready(_) => {}
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.inflight.activity().bodies.end(self.id);
    }
}
