//! Connection drain of removed endpoints: requests, response bodies and tunnels in flight to an
//! endpoint that left every route go on for its drain time (ALB `connection-drain-timeout`,
//! CLB `connection-drain-timeout`; the proxy's `drain_timeout` when the annotation is off),
//! then are closed; those of an endpoint that comes back within it are not.
use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::Mutex,
    task::{Context, Poll},
    time::Duration,
};

use tokio::sync::watch;

/// The endpoints in use and, for each, the signal that cuts what is still in flight to it.
#[derive(Default)]
pub struct Departures {
    present: Mutex<HashMap<SocketAddr, Present>>,
}

struct Present {
    cut: watch::Sender<bool>,
    drain: Duration,
    /// Left every route: the timer that cuts what is in flight at the end of its drain.
    leaving: Option<tokio::task::AbortHandle>,
}

impl Departures {
    /// The signal of `addr`: it turns true when `addr` has left and its drain time is over.
    pub fn watch(&self, addr: SocketAddr) -> Cut {
        let present = self.present.lock().unwrap_or_else(|e| e.into_inner());
        match present.get(&addr) {
            Some(p) if p.leaving.is_none() => Cut(Some(p.cut.subscribe())),
            // Not (or no longer) in any route: nothing to wait for.
            _ => Cut(None),
        }
    }

    /// Makes `endpoints` (address and drain time) the present ones. Those no longer among
    /// them are cut when their drain time ends. Must run inside a tokio runtime.
    pub fn update(&self, endpoints: impl IntoIterator<Item = (SocketAddr, Duration)>) {
        let mut wanted: HashMap<SocketAddr, Duration> = HashMap::new();
        for (a, d) in endpoints {
            let e = wanted.entry(a).or_insert(d);
            *e = (*e).max(d);
        }
        let mut present = self.present.lock().unwrap_or_else(|e| e.into_inner());
        // Those whose drain is over, or with nothing left in flight, are forgotten.
        present.retain(|_, p| p.leaving.as_ref().is_none_or(|t| !t.is_finished() && p.cut.receiver_count() > 0));
        for (addr, p) in present.iter_mut().filter(|(a, p)| !wanted.contains_key(a) && p.leaving.is_none()) {
            tracing::info!(endpoint = %addr, drain_s = p.drain.as_secs(), "endpoint removed: draining its requests");
            let (cut, drain, addr) = (p.cut.clone(), p.drain, *addr);
            let timer = tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(drain) => {
                        if cut.receiver_count() > 0 {
                            tracing::info!(endpoint = %addr, "drain time over: closing what is left in flight");
                        }
                        let _ = cut.send(true);
                    }
                    // Everything in flight finished first.
                    _ = cut.closed() => {}
                }
            });
            p.leaving = Some(timer.abort_handle());
        }
        for (addr, drain) in wanted {
            let p =
                present.entry(addr).or_insert_with(|| Present { cut: watch::channel(false).0, drain, leaving: None });
            p.drain = drain;
            if let Some(timer) = p.leaving.take() {
                // Back within its drain (a health check that passes again): what is in flight
                // goes on. A timer that had just fired cut it: the new requests get a signal
                // of their own.
                timer.abort();
                if *p.cut.borrow() {
                    p.cut = watch::channel(false).0;
                } else {
                    tracing::info!(endpoint = %addr, "endpoint back: its requests in flight go on");
                }
            }
        }
    }
}

/// Resolves when the endpoint's drain time is over; never, while it is in a route.
pub struct Cut(Option<watch::Receiver<bool>>);

impl Cut {
    pub async fn cut(&mut self) {
        match &mut self.0 {
            Some(rx) => {
                if rx.wait_for(|c| *c).await.is_err() {
                    std::future::pending::<()>().await
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// A body that ends with an error when its endpoint's drain time is over.
pub struct CutBody<B> {
    inner: B,
    /// The endpoint's signal, until the body first has to wait.
    cut: Option<watch::Receiver<bool>>,
    /// Waiting for the signal, made only once the body has had to wait for its backend (most
    /// answers are in the connection's buffer at once: no allocation for them). In a mutex
    /// only to be `Sync`, as boxed bodies are; polled through `get_mut`.
    waiting: Mutex<Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>>,
}

impl<B> CutBody<B> {
    pub fn new(inner: B, cut: Cut) -> CutBody<B> {
        CutBody { inner, cut: cut.0, waiting: Mutex::new(None) }
    }
}

/// The error of a body cut off by connection drain.
#[derive(Debug, thiserror::Error)]
#[error("the endpoint was removed and its drain time is over")]
pub struct Drained;

impl<B> hyper::body::Body for CutBody<B>
where
    B: hyper::body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let waiting = this.waiting.get_mut().unwrap_or_else(|e| e.into_inner());
        let drained = match (waiting.as_mut(), &this.cut) {
            (Some(w), _) => w.as_mut().poll(cx).is_ready(),
            (None, Some(rx)) => *rx.borrow(),
            (None, None) => false,
        };
        if drained {
            return Poll::Ready(Some(Err(Box::new(Drained))));
        }
        let frame = Pin::new(&mut this.inner).poll_frame(cx);
        if frame.is_pending()
            && let Some(rx) = this.cut.take()
        {
            // From now on the signal wakes this body too.
            let mut cut = Cut(Some(rx));
            let w = waiting.insert(Box::pin(async move { cut.cut().await }));
            if w.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(Box::new(Drained))));
            }
        }
        frame.map(|f| f.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_removed_endpoint_is_cut_after_its_drain_time() {
        let d = Departures::default();
        let (a, b): (SocketAddr, SocketAddr) = ("10.0.0.1:80".parse().unwrap(), "10.0.0.2:80".parse().unwrap());
        let drain = Duration::from_millis(300);
        d.update([(a, drain), (b, drain)]);
        let (mut ca, mut cb) = (d.watch(a), d.watch(b));
        d.update([(b, drain)]);
        let started = std::time::Instant::now();
        tokio::select! {
            _ = ca.cut() => {}
            _ = cb.cut() => panic!("an endpoint still present was cut"),
        }
        let after = started.elapsed();
        assert!(after >= drain && after < drain * 3, "cut after {after:?}");
        assert!(tokio::time::timeout(drain * 2, cb.cut()).await.is_err(), "a present endpoint is never cut");
        assert!(tokio::time::timeout(drain * 2, d.watch(a).cut()).await.is_err(), "a gone endpoint has nothing to cut");
    }
}
