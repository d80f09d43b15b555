//! Answers on their way to the client through hyper's server (TLS, HTTP/2): each counts its
//! request in flight until its body ends, and the connection sees which of them wait on the
//! client (hyper took a frame and has not asked for the next one: an HTTP/2 flow-control
//! window the client keeps shut, or a client that reads nothing).
use std::{
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};

use super::{
    listener::InFlight,
    respond::{Body, BoxError},
};

/// An answer's body as hyper's server sends it: its request stays in flight until it ends or
/// is dropped (a long stream is not an idle connection), and whether it waits on the client
/// or on its backend is kept in the connection's [`super::listener::Bodies`].
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
