//! The proxy's own limits, so that one abusive client or a flood cannot exhaust the node:
//! open connections per listener and per client address, how long request headers may take,
//! the request body size, how long a body may stall either way, how long an upgraded tunnel
//! (WebSocket) may stay silent, and how long draining may take. Defaults are in
//! [`Limits::default`] and `docs/l7.md`.
use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The limits of every listener of a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections of one listener; more are closed at accept.
    pub max_connections: usize,
    /// Open connections of one listener from one client address.
    pub max_connections_per_client: usize,
    /// A request body larger than this gets 413 (by `Content-Length`) or is cut off.
    pub max_body_bytes: u64,
    /// TrafficMirror copies request bodies up to this size; a longer one is not mirrored.
    pub mirror_max_body_bytes: u64,
    /// An upgraded connection (WebSocket tunnel) silent both ways this long is closed.
    pub tunnel_idle: Duration,
    /// A body that moves nothing for this long is cut off: a backend's response body that
    /// sends nothing, a client's request body that sends nothing, a client that reads nothing
    /// of its answer.
    pub body_idle: Duration,
    /// Request line and headers must arrive within this (slowloris).
    pub header_timeout: Duration,
    /// On shutdown, and for a removed endpoint without `connection-drain`, requests in flight
    /// get this long to finish before they are closed.
    pub drain_timeout: Duration,
}

/// Default of [`Limits::max_connections`] (`lb run --l7-max-connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Default of [`Limits::max_connections_per_client`] (`--l7-max-connections-per-client`).
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 1_024;
/// Default of [`Limits::max_body_bytes`] (`--l7-max-body-bytes`): 256 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 256 << 20;
/// Default of [`Limits::mirror_max_body_bytes`] (`--l7-mirror-max-body-bytes`): 1 MiB.
pub const DEFAULT_MIRROR_MAX_BODY_BYTES: u64 = 1 << 20;
/// Default of [`Limits::tunnel_idle`] in seconds (`--l7-tunnel-idle`).
pub const DEFAULT_TUNNEL_IDLE_S: u64 = 300;
/// Default of [`Limits::body_idle`] in seconds (`--l7-body-idle`).
pub const DEFAULT_BODY_IDLE_S: u64 = 60;
/// Default of [`Limits::header_timeout`] in seconds (`--l7-header-timeout`).
pub const DEFAULT_HEADER_TIMEOUT_S: u64 = 30;
/// Default of [`Limits::drain_timeout`] in seconds (`--l7-drain-timeout`): `lb run` then exits
/// within the 30 s a Kubernetes Pod gets by default between SIGTERM and SIGKILL.
pub const DEFAULT_DRAIN_TIMEOUT_S: u64 = 25;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            mirror_max_body_bytes: DEFAULT_MIRROR_MAX_BODY_BYTES,
            tunnel_idle: Duration::from_secs(DEFAULT_TUNNEL_IDLE_S),
            body_idle: Duration::from_secs(DEFAULT_BODY_IDLE_S),
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_S),
            drain_timeout: Duration::from_secs(DEFAULT_DRAIN_TIMEOUT_S),
        }
    }
}

/// Counts a listener's open connections, in all and per client address.
pub struct ConnectionGate {
    limits: Limits,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
pub struct Admitted {
    gate: Arc<ConnectionGate>,
    client: IpAddr,
}

/// A connection's place, shared with the tunnel an upgrade turns it into: the tunnel
/// outlives the HTTP connection that handed its socket over, and keeps the place (under
/// the per-listener and per-client caps, and counted by the drain) until it closes. It
/// closes with its listener's drain, as the listener's connections do.
#[derive(Clone)]
pub struct Place {
    _admitted: Arc<Admitted>,
    /// The listener's drain (true once it is removed), and how long its connections get.
    drain: tokio::sync::watch::Receiver<bool>,
    drain_timeout: Duration,
}

impl Place {
    pub fn new(admitted: Admitted, drain: tokio::sync::watch::Receiver<bool>, drain_timeout: Duration) -> Place {
        Place { _admitted: Arc::new(admitted), drain, drain_timeout }
    }

    /// Resolves when the listener was removed and its drain time is over.
    pub async fn listener_drained(&self) {
        let mut drain = self.drain.clone();
        // Closed without a drain: the listener is gone all the same.
        let _ = drain.wait_for(|removed| *removed).await;
        tokio::time::sleep(self.drain_timeout).await;
    }
}

impl ConnectionGate {
    pub fn new(limits: Limits) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate { limits, open: Mutex::new((0, HashMap::new())) })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    /// A place for a connection from `client`, or `None` when the listener or the client
    /// is at its limit.
    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let from_client = open.1.get(&client).copied().unwrap_or(0);
        if open.0 >= self.limits.max_connections || from_client >= self.limits.max_connections_per_client {
            return None;
        }
        open.0 += 1;
        open.1.insert(client, from_client + 1);
        Some(Admitted { gate: self.clone(), client })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.client);
            }
        }
    }
}

/// A body that fails when its source sends no frame for `idle` (a stalled backend). The
/// timer is armed only once the source has nothing ready: a body read in one go (most
/// answers) never sets one.
pub struct IdleBody<B> {
    inner: B,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleBody<B> {
    pub fn new(inner: B, idle: Duration) -> IdleBody<B> {
        IdleBody { inner, idle, timer: None }
    }
}

/// The error of a stalled body.
#[derive(Debug, thiserror::Error)]
#[error("the backend sent no response data for {0:?}")]
pub struct Stalled(Duration);

impl<B> hyper::body::Body for IdleBody<B>
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(timer) = &mut this.timer {
                    timer.as_mut().reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(Stalled(this.idle))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Copies both ways between `a` and `b` until either side closes, nothing moved for
/// `idle`, or `cut` resolves (the endpoint's drain time is over).
pub async fn tunnel<A, B>(a: A, b: B, idle: Duration, cut: impl Future<Output = ()>)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Watched { io: a, start, last: last.clone() };
    let mut b = Watched { io: b, start, last: last.clone() };
    let watchdog = async {
        loop {
            let quiet = start.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
        _ = watchdog => tracing::debug!(?idle, "tunnel idle: closed"),
        _ = cut => tracing::debug!("tunnel to a removed endpoint or of a removed listener: closed after its drain time"),
    }
}

/// An I/O object that records when it last read something.
struct Watched<T> {
    io: T,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A client connection that records since when its writes have been blocked (the client
/// reads nothing of its answer).
pub struct WriteWatch<T> {
    io: T,
    start: Instant,
    /// Milliseconds since `start` when a write first found the socket full; `u64::MAX`: not
    /// blocked.
    blocked: Arc<AtomicU64>,
}

impl<T> WriteWatch<T> {
    pub fn new(io: T) -> (WriteWatch<T>, Blocked) {
        let start = Instant::now();
        let blocked = Arc::new(AtomicU64::new(u64::MAX));
        (WriteWatch { io, start, blocked: blocked.clone() }, Blocked { start, blocked })
    }

    pub fn into_inner(self) -> T {
        self.io
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    fn record<R>(&self, r: &Poll<R>) {
        match r {
            Poll::Pending => {
                let now = self.start.elapsed().as_millis() as u64;
                let _ = self.blocked.compare_exchange(u64::MAX, now, Ordering::Relaxed, Ordering::Relaxed);
            }
            Poll::Ready(_) => self.blocked.store(u64::MAX, Ordering::Relaxed),
        }
    }
}

/// How long a [`WriteWatch`]'s writes have been blocked.
pub struct Blocked {
    start: Instant,
    blocked: Arc<AtomicU64>,
}

impl Blocked {
    pub fn for_how_long(&self) -> Duration {
        match self.blocked.load(Ordering::Relaxed) {
            u64::MAX => Duration::ZERO,
            since => self.start.elapsed().saturating_sub(Duration::from_millis(since)),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteWatch<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteWatch<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, data);
        self.record(&r);
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.record(&r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.record(&r);
        r
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_per_listener_and_per_client() {
        let gate =
            ConnectionGate::new(Limits { max_connections: 3, max_connections_per_client: 2, ..Limits::default() });
        let (a, b): (IpAddr, IpAddr) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let a1 = gate.admit(a).unwrap();
        let _a2 = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "a third from one client");
        let _b1 = gate.admit(b).unwrap();
        assert!(gate.admit(b).is_none(), "a fourth on the listener");
        drop(a1);
        assert!(gate.admit(b).is_some(), "a closed connection frees its place");
    }
}
