//! The request timeout of an exchange: counted from the start for a request without a body,
//! from the end of its body otherwise (as Envoy's route timeout), so that a slow upload is
//! bounded by the body's idle timeout and size limit, not answered 504.
use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use hyper::body::{Body as _, Frame, SizeHint};
use tokio::{sync::oneshot, time::Instant};

use super::respond::{Body, BoxError};

/// When the request must have been answered by.
pub(super) struct Deadline {
    at: Instant,
    timeout: Duration,
    /// When the request body ended; `None` once known (or without a body).
    body_end: Option<oneshot::Receiver<Instant>>,
}

impl Deadline {
    /// `timeout` from now for a request without a body; for one with, `timeout` from when
    /// `body` ends (read to its end, failed or dropped): the body returned reports it.
    pub(super) fn new(timeout: Duration, body: Body) -> (Deadline, Body) {
        let at = Instant::now() + timeout;
        if body.is_end_stream() {
            return (Deadline { at, timeout, body_end: None }, body);
        }
        let (tx, rx) = oneshot::channel();
        let body = http_body_util::BodyExt::boxed(EndSignal { inner: body, tx: Some(tx) });
        (Deadline { at, timeout, body_end: Some(rx) }, body)
    }

    /// The first time by which anything of the exchange must be done (a connection made):
    /// `timeout` from the start.
    pub(super) fn start_bound(&self) -> Instant {
        self.at
    }

    /// Resolves when the request has had its time. Cancel-safe: a select may poll it again.
    pub(super) async fn reached(&mut self) {
        if let Some(end) = self.body_end.as_mut() {
            let ended = end.await.unwrap_or_else(|_| Instant::now());
            self.at = self.at.max(ended + self.timeout);
            self.body_end = None;
        }
        tokio::time::sleep_until(self.at).await
    }
}

/// A request body that sends the time it ended: its last frame read, an error, or dropped.
struct EndSignal {
    inner: Body,
    tx: Option<oneshot::Sender<Instant>>,
}

impl EndSignal {
    fn ended(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Instant::now());
        }
    }
}

impl Drop for EndSignal {
    fn drop(&mut self) {
        self.ended();
    }
}

impl hyper::body::Body for EndSignal {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None | Some(Err(_))) => self.ended(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.ended(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    /// The deadline of a request with a body runs from the body's end: a body that takes
    /// longer than the timeout to arrive does not make the exchange late.
    #[tokio::test(start_paused = true)]
    async fn a_body_request_is_timed_from_the_end_of_its_body() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<bytes::Bytes>, BoxError>>(1);
        let frames = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
        let body = StreamBody::new(frames).boxed();
        let (mut deadline, mut body) = Deadline::new(Duration::from_secs(10), body);
        let start = Instant::now();
        let upload = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(8)).await;
                tx.send(Ok(Frame::data(bytes::Bytes::from_static(b"x")))).await.unwrap();
            }
        });
        let reader = tokio::spawn(async move { while body.frame().await.is_some() {} });
        deadline.reached().await;
        upload.await.unwrap();
        reader.await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(34), "24 s of upload, then 10");
        // Without a body: from the start.
        let (mut deadline, _) = Deadline::new(Duration::from_secs(10), super::super::respond::empty());
        let start = Instant::now();
        deadline.reached().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
    }
}
