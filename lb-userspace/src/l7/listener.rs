//! What the connections of one L7 listener share (its counters, routing table, TLS
//! configuration, upstreams, limits), what each connection reports of its requests to the
//! server that watches it (either HTTP server: hyper's or [`super::serve_h1`]), and the
//! answer to one request.
use std::{
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::{ArcSwap, ArcSwapOption};
use hyper::{Request, Response};
use tokio::sync::watch;

use super::{
    forward::{self, ClientBody, Conn},
    limits::{ConnectionGate, Limits},
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
    pub(super) fn response(&self, status: u16) {
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

/// Request line and headers of one request, at most (ALB allows 32 KiB of headers).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Answers one request (either server's): the listener's table and pipeline
/// ([`forward::handle`]), counted by status and timed to the response head.
pub(super) fn respond_to<B: ClientBody>(
    req: Request<B>,
    conn: Conn,
    state: Arc<ListenerState>,
) -> impl Future<Output = Response<Body>> + Send + 'static {
    use futures::FutureExt as _;
    let started = Instant::now();
    let (table, up) = (state.table.load_full(), state.upstreams.clone());
    let (trusted, mirror_skipped) = (state.trusted.clone(), state.counters.mirror_skipped.clone());
    // A combinator, not an `async` block: the request's future is held once, not moved into
    // a second slot to be awaited; it owns what it uses, so that the callers need not wrap it
    // in a block of their own either.
    forward::handle(req, conn, table, up, state.limits, trusted, mirror_skipped).map(move |resp| {
        state.counters.response(resp.status().as_u16());
        state.counters.latency.observe(started.elapsed());
        resp
    })
}

/// Requests in flight on a connection, when it last did something, and how many of its
/// requests the client abandoned (HTTP/2 stream resets, closed connections).
pub(super) struct Activity {
    pub(super) inflight: AtomicUsize,
    pub(super) last_ms: AtomicU64,
    pub(super) start: Instant,
    pub(super) completed: AtomicUsize,
    pub(super) abandoned: AtomicUsize,
    /// Wakes the connection's loop when the client abandons too many requests.
    pub(super) abusive: tokio::sync::Notify,
    /// The connection is to close after the request in flight ([`super::serve_h1`]).
    pub(super) closing: AtomicBool,
    /// Asks hyper's server to close after what is in flight.
    pub(super) finish: tokio::sync::Notify,
    /// Milliseconds since `start` when [`super::serve_h1`] began waiting for a request head
    /// (`u64::MAX`: not waiting); hyper's server times its heads itself.
    pub(super) head_since: AtomicU64,
    /// Answers being sent through hyper's server ([`super::answering`]).
    pub(super) bodies: Bodies,
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
        self.answered();
    }

    /// Answered: the request is not abandoned when this is dropped, later (once the
    /// answer's body is sent).
    pub(super) fn answered(&mut self) {
        if !self.1 {
            self.1 = true;
            self.0.completed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn activity(&self) -> &Arc<Activity> {
        &self.0
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
    pub(super) fn new() -> Arc<Activity> {
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
            bodies: Default::default(),
        })
    }

    /// Whether the connection is to close after the request in flight.
    pub(super) fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    /// A request head is awaited from now (`true`) or has been read.
    pub(super) fn reading_head(&self, waiting: bool) {
        let at = if waiting { self.now_ms() } else { u64::MAX };
        self.head_since.store(at, Ordering::Relaxed);
    }

    /// A request head has been awaited for `limit` or longer (slowloris, or a keep-alive
    /// connection left silent: as hyper's header timeout).
    pub(super) fn head_overdue(&self, limit: Duration) -> bool {
        match self.head_since.load(Ordering::Relaxed) {
            u64::MAX => false,
            since => self.start.elapsed().saturating_sub(Duration::from_millis(since)) >= limit,
        }
    }

    /// Milliseconds since the connection started.
    pub(super) fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub(super) fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    pub(super) fn idle_for(&self) -> Option<Duration> {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(self.start.elapsed().saturating_sub(last))
    }
}

/// The answers of one connection whose bodies hyper's server is sending ([`super::answering`]): (id, since when, in ms of the
/// connection's clock, each waits on the client; `u64::MAX` while it waits on its backend).
#[derive(Default)]
pub(super) struct Bodies {
    sending: Mutex<Vec<(u64, u64)>>,
    next: AtomicU64,
}

impl Bodies {
    fn lock(&self) -> MutexGuard<'_, Vec<(u64, u64)>> {
        self.sending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn start(&self, now_ms: u64) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().push((id, now_ms));
        id
    }

    pub(super) fn set(&self, id: u64, since: u64) {
        if let Some(b) = self.lock().iter_mut().find(|(i, _)| *i == id) {
            b.1 = since;
        }
    }

    pub(super) fn end(&self, id: u64) {
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
