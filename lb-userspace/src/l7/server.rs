//! Listening sockets and client connections: accept, TLS handshake (ALPN h2 / http/1.1),
//! HTTP/1.1 with keep-alive and upgrades or HTTP/2 (h2c by prior knowledge on plain
//! listeners), the listener's idle timeout, header and write timeouts, and graceful draining
//! (bounded by the drain timeout) when a listener is removed.
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch};

use super::{
    forward::{self, ClientBody, Conn},
    limits::{Blocked, ConnectionGate, Limits, WriteWatch},
    respond::Body,
    router::Table,
    upstreams::Upstreams,
};

/// Requests a listener answered, by status class, and connections it took or refused.
#[derive(Default)]
pub struct Counters {
    pub connections: AtomicU64,
    pub refused_by_acl: AtomicU64,
    /// Connections closed at accept: the listener or the client had too many open.
    pub refused_over_limit: AtomicU64,
    /// Connections cut off because the client abandoned too many requests (rapid reset).
    pub abusive_closed: AtomicU64,
    pub tls_failures: AtomicU64,
    /// Requests not mirrored: their body was longer than `--l7-mirror-max-body-bytes`.
    pub mirror_skipped: Arc<AtomicU64>,
    /// Plain connections the proxy's own HTTP/1.1 server ([`super::serve_h1`]) handed to
    /// hyper's (a request it leaves to hyper). Not exported: for tests and debugging.
    pub handed_to_hyper: AtomicU64,
    /// Index 0: 1xx ... 4: 5xx.
    pub responses: [AtomicU64; 5],
    /// From a request's head to its response's head (`lb_l7_request_duration_seconds`).
    pub latency: crate::metrics::latency::Histogram,
}

impl Counters {
    fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let r = |i: usize| self.responses[i].load(Ordering::Relaxed);
        serde_json::json!({
            "connections": self.connections.load(Ordering::Relaxed),
            "refused_by_acl": self.refused_by_acl.load(Ordering::Relaxed),
            "refused_over_limit": self.refused_over_limit.load(Ordering::Relaxed),
            "abusive_closed": self.abusive_closed.load(Ordering::Relaxed),
            "tls_failures": self.tls_failures.load(Ordering::Relaxed),
            "mirror_skipped": self.mirror_skipped.load(Ordering::Relaxed),
            "requests": (0..5).map(r).sum::<u64>(),
            "responses": { "1xx": r(0), "2xx": r(1), "3xx": r(2), "4xx": r(3), "5xx": r(4) },
        })
    }
}

/// What every connection of a listener shares; swapped in place on reload.
pub struct ListenerState {
    pub counters: Counters,
    pub table: ArcSwap<Table>,
    pub tls: ArcSwapOption<rustls::ServerConfig>,
    pub upstreams: Arc<Upstreams>,
    /// Turns true when the listener is removed: connections finish their requests and close.
    pub drain: watch::Receiver<bool>,
    pub limits: Limits,
    /// Open connections, per listener and per client.
    pub gate: Arc<ConnectionGate>,
    /// Peers whose forwarding headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) are kept.
    pub trusted: Arc<[ipnet::IpNet]>,
}

/// A listening socket: `SO_REUSEADDR`; `SO_REUSEPORT`, so that a CLB listener on
/// `VIP:port` and an ALB listener on `0.0.0.0:port` coexist (the kernel gives each
/// connection to the most specific socket); `IP_FREEBIND` (a VIP may be routed to the node
/// without being configured on an interface); IPv6 sockets IPv6-only (so `0.0.0.0` and
/// `::` can both be bound).
/// The socket is not yet registered with a runtime: the worker that serves it does that.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        socket.set_freebind_v6(true)?;
    } else {
        socket.set_freebind_v4(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Accepts until `stop` turns true.
pub async fn accept_loop(listener: TcpListener, state: Arc<ListenerState>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let denied = state.table.load().listener.acl.as_ref().is_some_and(|a| !super::matching::acl_allows(a, peer.ip()));
                    if denied {
                        state.counters.refused_by_acl.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "connection refused by the listener's ACL");
                        continue;
                    }
                    let Some(admitted) = state.gate.admit(peer.ip()) else {
                        state.counters.refused_over_limit.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "connection refused: too many open connections");
                        continue;
                    };
                    state.counters.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(peer);
                    let state = state.clone();
                    tokio::spawn(async move {
                        connection(stream, peer, local, state).await;
                        drop(admitted);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => if *stop.borrow() { break },
        }
    }
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request line and headers of one request, at most (ALB allows 32 KiB of headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per connection.
pub const MAX_H2_STREAMS: u32 = 256;
/// HTTP/2 streams reset by the client before they were served, per connection.
pub const MAX_H2_PENDING_RESETS: usize = 20;

/// The handshake and the HTTP state are boxed: a connection's task then starts small (the
/// runtime moves a task's future by value when it spawns it; unboxed, that was the largest
/// copy per connection in the profile).
async fn connection(stream: tokio::net::TcpStream, peer: SocketAddr, local: SocketAddr, state: Arc<ListenerState>) {
    let (stream, blocked) = WriteWatch::new(stream);
    match state.tls.load_full() {
        Some(cfg) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, Box::pin(acceptor.accept(stream))).await {
                Ok(Ok(tls)) => {
                    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                    let conn = Conn { client: peer, local, tls: true };
                    Box::pin(serve(TokioIo::new(tls), conn, state, Some(h2), blocked)).await
                }
                Ok(Err(e)) => {
                    state.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed")
                }
                Err(_) => {
                    state.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake timed out")
                }
            }
        }
        None => {
            let conn = Conn { client: peer, local, tls: false };
            if *HYPER_ONLY {
                let stream = super::readahead::ReadAhead::new(stream);
                return Box::pin(serve(TokioIo::new(stream), conn, state, None, blocked)).await;
            }
            Box::pin(plain(stream.into_inner(), conn, state)).await
        }
    }
}

/// `LB_L7_HYPER_H1=1`: plain connections go to hyper's server from their first byte, as
/// before [`super::serve_h1`] (to compare the two in `cargo xtask bench`).
static HYPER_ONLY: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("LB_L7_HYPER_H1").is_some_and(|v| v == "1"));

/// A plain connection: HTTP/1.1 served by [`super::serve_h1`] until a request it leaves to
/// hyper (HTTP/2 prior knowledge, HTTP/1.0, upgrades, `Expect`, heads hyper refuses), then
/// hyper's server from there on, with the bytes already read.
async fn plain(stream: tokio::net::TcpStream, conn: Conn, state: Arc<ListenerState>) {
    let activity = Activity::new();
    let (rd, wr) = stream.into_split();
    let (wr, blocked) = WriteWatch::new(wr);
    let served = super::serve_h1::serve(rd, wr, conn, state.clone(), activity.clone());
    tokio::pin!(served);
    // Asked to finish: at once when no request is in flight, else after its answer.
    let finish = |_: Pin<&mut _>| {
        activity.closing.store(true, Ordering::Relaxed);
        activity.inflight.load(Ordering::Relaxed) == 0
    };
    let Some(Some((stream, read))) = watch_connection(served, finish, &activity, &blocked, &state, conn).await else {
        return;
    };
    state.counters.handed_to_hyper.fetch_add(1, Ordering::Relaxed);
    let (stream, blocked) = WriteWatch::new(stream);
    let stream = super::readahead::ReadAhead::holding(stream, read.to_vec());
    serve(TokioIo::new(stream), conn, state, None, blocked).await
}

/// Answers one request (either server's): the listener's table and pipeline
/// ([`forward::handle`]), counted by status and timed to the response head.
pub(super) async fn respond_to<B: ClientBody>(req: Request<B>, conn: Conn, state: &ListenerState) -> Response<Body> {
    let started = Instant::now();
    let (table, up) = (state.table.load_full(), state.upstreams.clone());
    let resp =
        forward::handle(req, conn, table, up, state.limits, &state.trusted, &state.counters.mirror_skipped).await;
    state.counters.response(resp.status().as_u16());
    state.counters.latency.observe(started.elapsed());
    resp
}

/// Requests in flight on a connection, when it last did something, and how many of its
/// requests the client abandoned (HTTP/2 stream resets, closed connections).
pub(super) struct Activity {
    inflight: AtomicUsize,
    last_ms: AtomicU64,
    start: Instant,
    completed: AtomicUsize,
    abandoned: AtomicUsize,
    /// Wakes the connection's loop when the client abandons too many requests.
    abusive: tokio::sync::Notify,
    /// The connection is to close after the request in flight ([`super::serve_h1`]).
    closing: AtomicBool,
    /// Asks hyper's server to close after what is in flight.
    finish: tokio::sync::Notify,
    /// Milliseconds since `start` when [`super::serve_h1`] began waiting for a request head
    /// (`u64::MAX`: not waiting); hyper's server times its heads itself.
    head_since: AtomicU64,
}

/// A client that abandoned this many requests, more than it let finish, is cut off: it
/// makes the proxy and the backends work for nothing (HTTP/2 rapid reset, CVE-2023-44487).
const MAX_ABANDONED: usize = 100;

/// One request of a connection: counted in flight until it is answered or abandoned.
pub(super) struct InFlight(Arc<Activity>, bool);

impl InFlight {
    pub(super) fn start(activity: &Arc<Activity>) -> InFlight {
        activity.inflight.fetch_add(1, Ordering::Relaxed);
        activity.touch();
        InFlight(activity.clone(), false)
    }

    pub(super) fn done(mut self) {
        self.1 = true;
        self.0.completed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.inflight.fetch_sub(1, Ordering::Relaxed);
        a.touch();
        if !self.1 {
            let abandoned = a.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
            if abandoned >= MAX_ABANDONED && abandoned > a.completed.load(Ordering::Relaxed) {
                a.abusive.notify_one();
            }
        }
    }
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            inflight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            start: Instant::now(),
            completed: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            abusive: tokio::sync::Notify::new(),
            closing: AtomicBool::new(false),
            finish: tokio::sync::Notify::new(),
            head_since: AtomicU64::new(u64::MAX),
        })
    }

    /// Whether the connection is to close after the request in flight.
    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// A request head is awaited from now (`true`) or has been read.
    pub(super) fn reading_head(&self, waiting: bool) {
        let at = if waiting { self.start.elapsed().as_millis() as u64 } else { u64::MAX };
        self.head_since.store(at, Ordering::Relaxed);
    }

    /// A request head has been awaited for `limit` or longer (slowloris, or a keep-alive
    /// connection left silent: as hyper's header timeout).
    fn head_overdue(&self, limit: Duration) -> bool {
        match self.head_since.load(Ordering::Relaxed) {
            u64::MAX => false,
            since => self.start.elapsed().saturating_sub(Duration::from_millis(since)) >= limit,
        }
    }

    fn touch(&self) {
        self.last_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.start.elapsed().saturating_sub(last))
    }
}

/// HTTP on one connection. `alpn_h2`: what TLS negotiated (`None` on plain listeners,
/// where h2c prior knowledge is detected from the preface when HTTP/2 is on).
/// `blocked`: how long the client has not taken what was written to it (a slow reader is
/// cut off after the body idle time).
async fn serve<I>(io: TokioIo<I>, conn: Conn, state: Arc<ListenerState>, alpn_h2: Option<bool>, blocked: Blocked)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http2 = state.table.load().listener.http2;
    let activity = Activity::new();
    let svc = {
        let (state, activity) = (state.clone(), activity.clone());
        service_fn(move |req: Request<Incoming>| {
            let (activity, state) = (activity.clone(), state.clone());
            let inflight = InFlight::start(&activity);
            // Boxed: the request's future is large, and hyper would move it by value.
            Box::pin(async move {
                let resp = respond_to(req, conn, &state).await;
                inflight.done();
                Ok::<_, Infallible>(resp)
            })
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(state.limits.header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(None)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_H2_STREAMS)
        // Streams a client opens and resets before they are served (CVE-2023-44487): past
        // this, the connection is closed with GOAWAY.
        .max_pending_accept_reset_streams(MAX_H2_PENDING_RESETS);
    let builder = match alpn_h2 {
        Some(true) => builder.http2_only(),
        Some(false) => builder.http1_only(),
        None if !http2 => builder.http1_only(),
        None => builder,
    };
    // Asked to finish: hyper's graceful shutdown (answers in flight, then close).
    let served = async {
        let served = builder.serve_connection_with_upgrades(io, svc);
        tokio::pin!(served);
        tokio::select! {
            r = served.as_mut() => return r,
            _ = activity.finish.notified() => served.as_mut().graceful_shutdown(),
        }
        served.await
    };
    tokio::pin!(served);
    let finish = |_: Pin<&mut _>| {
        activity.finish.notify_one();
        false
    };
    if let Some(Err(e)) = watch_connection(served, finish, &activity, &blocked, &state, conn).await {
        tracing::debug!(client = %conn.client, error = %e, "connection ended with an error");
    }
}

/// Serves a connection (`served`) until it ends (its output), or cuts it (`None`): the client
/// reads nothing of its answer for the body idle time, the drain time is over, a request
/// head is overdue, the client abandoned too many requests. When the connection is idle for
/// the listener's idle timeout or the listener drains, `finish` asks it to end after what is
/// in flight (`true`: it may be dropped at once).
async fn watch_connection<F: Future>(
    mut served: Pin<&mut F>,
    mut finish: impl FnMut(Pin<&mut F>) -> bool,
    activity: &Activity,
    blocked: &Blocked,
    state: &ListenerState,
    conn: Conn,
) -> Option<F::Output> {
    let idle = Duration::from_secs(u64::from(state.table.load().listener.idle_timeout_s.max(1)));
    let mut drain = state.drain.clone();
    // The first tick one period on (a connection has nothing to check at its start).
    let period = Duration::from_millis(250).min(idle);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut closing = false;
    // Set when draining starts: what is still in flight then is closed at this deadline.
    let mut drain_deadline = None;
    loop {
        tokio::select! {
            r = served.as_mut() => return Some(r),
            _ = tick.tick() => {
                if blocked.for_how_long() >= state.limits.body_idle {
                    tracing::debug!(client = %conn.client, "connection closed: the client read nothing of its answer");
                    return None;
                }
                if drain_deadline.is_some_and(|d| Instant::now() >= d) {
                    tracing::debug!(client = %conn.client, "connection closed: drain time over");
                    return None;
                }
                if activity.head_overdue(state.limits.header_timeout) {
                    tracing::debug!(client = %conn.client, "connection closed: no request head within the header timeout");
                    return None;
                }
                if !closing && activity.idle_for().is_some_and(|d| d >= idle) {
                    closing = true;
                    if finish(served.as_mut()) {
                        return None;
                    }
                }
            }
            r = drain.changed(), if drain_deadline.is_none() => {
                if r.is_err() || *drain.borrow() {
                    closing = true;
                    drain_deadline = Some(Instant::now() + state.limits.drain_timeout);
                    if finish(served.as_mut()) {
                        return None;
                    }
                }
            }
            _ = activity.abusive.notified() => {
                state.counters.abusive_closed.fetch_add(1, Ordering::Relaxed);
                tracing::info!(client = %conn.client, "connection closed: the client abandoned too many requests");
                return None;
            }
        }
    }
}
