//! Listening sockets and client connections: accept, TLS handshake (ALPN h2 / http/1.1),
//! HTTP/1.1 with keep-alive and upgrades or HTTP/2 (h2c by prior knowledge on plain
//! listeners), the listener's idle timeout, header and write timeouts, and graceful draining
//! (bounded by the drain timeout) when a listener is removed.
use std::{
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use hyper::{Request, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{net::TcpListener, sync::watch};

pub use super::listener::{Counters, ListenerState, MAX_HEADER_BYTES};
use super::{
    answering::Answering,
    listener::{Activity, InFlight, respond_to},
};
use super::{
    forward::Conn,
    limits::{Blocked, Place, WriteWatch},
    ticker,
};

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
    // A listener bound to one address accepts only connections to it: their local address
    // is known without a `getsockname` each. A wildcard listener asks per connection.
    let bound = listener.local_addr().ok().filter(|a| !a.ip().is_unspecified());
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
                    let local = bound.or_else(|| stream.local_addr().ok()).unwrap_or(peer);
                    let place = Place::new(admitted, state.drain.clone(), state.limits.drain_timeout);
                    tokio::spawn(connection(stream, peer, local, state.clone(), place));
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
/// Concurrent HTTP/2 streams per connection.
pub const MAX_H2_STREAMS: u32 = 256;
/// HTTP/2 streams reset by the client before they were served, per connection.
pub const MAX_H2_PENDING_RESETS: usize = 20;

/// The handshake and the HTTP state are boxed: a connection's task then starts small (the
/// runtime moves a task's future by value when it spawns it; unboxed, that was the largest
/// copy per connection in the profile), and stays small while the connection is idle.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    state: Arc<ListenerState>,
    place: Place,
) {
    let tls_config = state.tls.load_full();
    // TLS and hyper's servers write a connection in many small writes: no Nagle delay for
    // them. The proxy's own HTTP/1.1 server turns it off before a connection's second write.
    if tls_config.is_some() || *HYPER_ONLY {
        let _ = stream.set_nodelay(true);
    }
    match tls_config {
        Some(cfg) => {
            let (stream, blocked) = WriteWatch::new(stream);
            Box::pin(tls(stream, blocked, cfg, Conn::new(peer, local, true), state, place)).await
        }
        None => {
            let conn = Conn::new(peer, local, false);
            if *HYPER_ONLY {
                let (stream, blocked) = WriteWatch::new(stream);
                let stream = super::readahead::ReadAhead::new(stream);
                return Box::pin(serve(TokioIo::new(stream), conn, state, None, blocked, place)).await;
            }
            // Its write half is watched (`plain`), not the whole stream.
            Box::pin(plain(stream, conn, state, place)).await
        }
    }
}

/// A TLS connection: the handshake (bounded in time), then HTTP over it.
async fn tls(
    stream: WriteWatch<tokio::net::TcpStream>,
    blocked: Blocked,
    cfg: Arc<rustls::ServerConfig>,
    conn: Conn,
    state: Arc<ListenerState>,
    place: Place,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            Box::pin(serve(TokioIo::new(tls), conn, state, Some(h2), blocked, place)).await
        }
        Ok(Err(e)) => {
            state.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %conn.client, error = %e, "TLS handshake failed")
        }
        Err(_) => {
            state.counters.tls_failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %conn.client, "TLS handshake timed out")
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
async fn plain(stream: tokio::net::TcpStream, conn: Conn, state: Arc<ListenerState>, place: Place) {
    let activity = Activity::new();
    let (rd, wr) = stream.into_split();
    let (wr, blocked) = WriteWatch::new(wr);
    // Boxed, as the hyper server below: an idle connection's task holds only what waiting for
    // the next request needs (unboxed, both servers' states made it 17 KiB).
    let mut served = Box::pin(super::serve_h1::serve(rd, wr, conn, state.clone(), activity.clone()));
    // Asked to finish: at once when no request is in flight, else after its answer.
    let finish = |_: Pin<&mut _>| {
        activity.closing.store(true, Ordering::Relaxed);
        activity.inflight.load(Ordering::Relaxed) == 0
    };
    let Some(Some((stream, read))) = watch_connection(served.as_mut(), finish, &activity, &blocked, &state, conn).await
    else {
        return;
    };
    state.counters.handed_to_hyper.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_nodelay(true);
    let (stream, blocked) = WriteWatch::new(stream);
    let stream = super::readahead::ReadAhead::holding(stream, read.to_vec());
    Box::pin(serve(TokioIo::new(stream), conn, state, None, blocked, place)).await
}

/// HTTP on one connection. `alpn_h2`: what TLS negotiated (`None` on plain listeners,
/// where h2c prior knowledge is detected from the preface when HTTP/2 is on).
/// `blocked`: how long the client has not taken what was written to it (a slow reader is
/// cut off after the body idle time). `place`: the connection's place under the listener's
/// limits, which an upgrade's tunnel keeps (it outlives this connection, which ends when it
/// hands its socket over).
async fn serve<I>(
    io: TokioIo<I>,
    conn: Conn,
    state: Arc<ListenerState>,
    alpn_h2: Option<bool>,
    blocked: Blocked,
    place: Place,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let http2 = state.table.load().listener.http2;
    let activity = Activity::new();
    let svc = {
        let (state, activity) = (state.clone(), activity.clone());
        service_fn(move |mut req: Request<Incoming>| {
            if super::headers::is_upgrade(req.headers()) {
                req.extensions_mut().insert(place.clone());
            }
            let (mut inflight, state) = (InFlight::start(&activity), state.clone());
            // HTTP/2: hyper sends a HEAD answer's body as DATA frames (its HTTP/1 server
            // drops it), which clients take as a protocol error; the head alone goes out.
            let head = req.method() == http::Method::HEAD;
            // Boxed: the request's future is large, and hyper would move it by value.
            Box::pin(async move {
                let mut resp = respond_to(req, conn, state).await;
                if head {
                    resp = resp.map(|_| super::respond::empty());
                }
                inflight.answered();
                Ok::<_, Infallible>(resp.map(|body| Answering::new(body, inflight)))
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
    // The worker's shared tick, not a timer of the connection's own (see `ticker`): the
    // first look within a period of the start (a connection has nothing to check before).
    let ticker = ticker::current();
    let tick = ticker.next();
    tokio::pin!(tick);
    let mut closing = false;
    // Set when draining starts: what is still in flight then is closed at this deadline.
    let mut drain_deadline = None;
    loop {
        tokio::select! {
            r = served.as_mut() => return Some(r),
            () = &mut tick => {
                tick.set(ticker.next());
                if blocked.for_how_long() >= state.limits.body_idle {
                    tracing::debug!(client = %conn.client, "connection closed: the client read nothing of its answer");
                    return None;
                }
                // An HTTP/2 client that keeps a stream's flow-control window shut while it
                // reads the socket: nothing blocks, but the answer waits on it for ever
                // (holding a backend connection). The whole connection goes, as one that
                // reads nothing does.
                if activity.bodies.client_stalled_for(activity.now_ms()).is_some_and(|d| d >= state.limits.body_idle) {
                    tracing::debug!(client = %conn.client, "connection closed: the client took nothing of an answer");
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
