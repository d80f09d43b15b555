//! HTTP/2 (h2c) connections to gRPC backends: one multiplexed connection per endpoint, made
//! on first use (once, however many requests wait for it) and again once it has ended. The
//! connection goes to the endpoint the balancer picked while the request's `:authority`
//! stays the host the client asked for (a pooled client keyed by the URI's authority would
//! need the endpoint's address there).
use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use http::{Request, Response};
use hyper::{body::Incoming, client::conn::http2::SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::respond::Body;

/// A connection not used for this long is let go (as the shared clients' pools do).
const IDLE: Duration = Duration::from_secs(90);
/// How often, at most, the connections are looked over for ended and idle ones.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why a request to a gRPC backend failed.
#[derive(Debug, thiserror::Error)]
pub enum H2Error {
    /// No connection could be made: nothing was sent. Shared by every request that waited
    /// for that connection.
    #[error(transparent)]
    Connect(Arc<ConnectError>),
    #[error("HTTP/2 exchange: {0}")]
    Exchange(#[source] hyper::Error),
}

/// Why a connection to a gRPC backend could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// [`super::pool::dial`]'s error.
    #[error(transparent)]
    Dial(super::pool::Error),
    #[error("HTTP/2 handshake: {0}")]
    Handshake(#[source] hyper::Error),
    /// The connect's task did not end (it panicked, or its worker ended first).
    #[error("the connect's task: {0}")]
    Task(#[source] tokio::task::JoinError),
}

impl H2Error {
    /// Nothing was sent: another endpoint may take the request.
    pub fn is_connect(&self) -> bool {
        matches!(self, H2Error::Connect(_))
    }
}

/// What became of a request sent on a connection.
pub enum Sent {
    Answer(Response<Incoming>),
    /// The connection had ended (the backend's GOAWAY, seen only now, as after a rolling
    /// restart or gRPC's maximum connection age) and gave the request back unsent: it may
    /// go on a new connection, or to another endpoint. The connection was let go.
    GivenBack(Request<Body>),
}

/// The connections, shared by every listener and worker.
#[derive(Default)]
pub struct H2Upstreams {
    conns: Arc<Mutex<Conns>>,
}

#[derive(Default)]
struct Conns {
    by_endpoint: HashMap<SocketAddr, Slot>,
    /// Connections made so far: numbers them, so that one let go is told from its successor.
    made: u64,
    swept: Option<Instant>,
}

/// An endpoint's connection, or the connect every request for it waits on meanwhile.
enum Slot {
    Open { sender: SendRequest<Body>, used: Instant, id: u64 },
    Connecting { connect: Connect, since: Instant, id: u64 },
}

/// One connect and handshake, its own task (it ends, and files its connection, whether or
/// not anyone still waits), awaited by every request that came for it.
type Connect = Shared<BoxFuture<'static, Result<(SendRequest<Body>, u64), Arc<ConnectError>>>>;

/// A connection to one endpoint, taken for one request before its body is read (a failed
/// connect leaves the request whole for another endpoint).
pub struct H2Conn {
    addr: SocketAddr,
    sender: SendRequest<Body>,
    id: u64,
}

impl H2Conn {
    /// Which connection this is, for [`H2Upstreams::forget`].
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl H2Upstreams {
    /// The endpoint's open connection, else one made now: requests that come meanwhile wait
    /// for that one connect (and share its error) instead of each making their own.
    pub async fn connection(&self, addr: SocketAddr) -> Result<H2Conn, H2Error> {
        let connect = {
            let mut conns = lock(&self.conns);
            let now = Instant::now();
            conns.sweep(now);
            match conns.by_endpoint.get_mut(&addr) {
                Some(Slot::Open { sender, used, id }) if !sender.is_closed() => {
                    *used = now;
                    return Ok(H2Conn { addr, sender: sender.clone(), id: *id });
                }
                Some(Slot::Connecting { connect, .. }) => connect.clone(),
                _ => {
                    conns.made += 1;
                    let id = conns.made;
                    let connect = spawn_connect(self.conns.clone(), addr, id);
                    conns.by_endpoint.insert(addr, Slot::Connecting { connect: connect.clone(), since: now, id });
                    connect
                }
            }
        };
        let (sender, id) = connect.await.map_err(H2Error::Connect)?;
        Ok(H2Conn { addr, sender, id })
    }

    /// Sends `req` on `conn`; a connection that gives it back unsent is let go
    /// ([`Sent::GivenBack`]).
    pub async fn send(&self, conn: H2Conn, req: Request<Body>) -> Result<Sent, H2Error> {
        let H2Conn { addr, mut sender, id } = conn;
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(Sent::Answer(resp)),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    tracing::debug!(backend = %addr, error = %e.error(), "HTTP/2 backend connection ended: request given back");
                    self.forget(addr, id);
                    Ok(Sent::GivenBack(req))
                }
                None => Err(H2Error::Exchange(e.into_error())),
            },
        }
    }

    /// Lets connection `id` to `addr` go (one that did not answer in time may be dead: a
    /// peer gone without a reset leaves it open), unless another has taken its place.
    /// Requests in flight on it go on; it closes when they are done.
    pub fn forget(&self, addr: SocketAddr, id: u64) {
        forget(&self.conns, addr, id);
    }

    /// Lets go the connections (and connects) to endpoints `present` no longer holds (they
    /// left every route): requests in flight on one go on, under the endpoint's drain, and
    /// it closes when they are done.
    pub fn retain(&self, present: impl Fn(&SocketAddr) -> bool) {
        let mut conns = lock(&self.conns);
        conns.by_endpoint.retain(|addr, _| present(addr));
    }
}

fn lock(conns: &Mutex<Conns>) -> std::sync::MutexGuard<'_, Conns> {
    conns.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes connection (or connect) `id` to `addr` out of `conns`, unless another has taken
/// its place already.
fn forget(conns: &Mutex<Conns>, addr: SocketAddr, id: u64) {
    let mut conns = lock(conns);
    if conns.by_endpoint.get(&addr).is_some_and(|c| c.id() == id) {
        conns.by_endpoint.remove(&addr);
    }
}

impl Conns {
    /// Lets go, at most every [`SWEEP_EVERY`], the connections that ended or sat idle for
    /// [`IDLE`] (an endpoint that was removed).
    fn sweep(&mut self, now: Instant) {
        if self.swept.is_some_and(|t| now.duration_since(t) < SWEEP_EVERY) {
            return;
        }
        self.swept = Some(now);
        self.by_endpoint.retain(|_, slot| match slot {
            Slot::Open { sender, used, .. } => !sender.is_closed() && now.duration_since(*used) < IDLE,
            // A connect is its own task and ends (the dial has a timeout): one older than
            // this is not waited for.
            Slot::Connecting { since, .. } => now.duration_since(*since) < IDLE,
        });
    }
}

impl Slot {
    fn id(&self) -> u64 {
        match self {
            Slot::Open { id, .. } | Slot::Connecting { id, .. } => *id,
        }
    }
}

/// Connection `id` to `addr`, made in a task of its own that files it in `conns` (or, when
/// it fails, takes its place there away: later requests would get its error too), so it
/// ends on one runtime whoever waits for it.
fn spawn_connect(conns: Arc<Mutex<Conns>>, addr: SocketAddr, id: u64) -> Connect {
    let filing = conns.clone();
    let task = tokio::spawn(async move {
        let sender = match connect(addr).await {
            Ok(sender) => sender,
            Err(e) => {
                forget(&filing, addr, id);
                return Err(Arc::new(e));
            }
        };
        let mut filed = lock(&filing);
        if filed.by_endpoint.get(&addr).is_some_and(|c| c.id() == id) {
            filed.by_endpoint.insert(addr, Slot::Open { sender: sender.clone(), used: Instant::now(), id });
        }
        Ok((sender, id))
    });
    task.map(move |joined| {
        joined.unwrap_or_else(|e| {
            forget(&conns, addr, id);
            Err(Arc::new(ConnectError::Task(e)))
        })
    })
    .boxed()
    .shared()
}

/// The receive window of a backend connection, shared by its streams: 32 streams' worth.
const CONNECTION_WINDOW: u32 = 64 << 20;

/// Connects to `addr` and makes the HTTP/2 handshake; the connection's own task is spawned.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, ConnectError> {
    let stream = super::pool::dial(addr).await.map_err(ConnectError::Dial)?;
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        // One connection carries every client's streams to this endpoint: its window (hyper's
        // default 5 MiB, returned only as clients read) must outlast a few slow readers of
        // streamed answers (2 MiB each at most), or every other stream stalls behind them.
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(backend = %addr, error = %e, "HTTP/2 backend connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use http_body_util::BodyExt;
    use hyper::service::service_fn;

    use super::*;

    /// An h2c server answering each request with its `:authority`; counts its connections
    /// and ends each after `per_conn` requests.
    async fn server(per_conn: usize) -> (SocketAddr, Arc<Accepted>) {
        h2c_server(move |stop| {
            let served = Arc::new(AtomicUsize::new(0));
            service_fn(move |req: Request<Incoming>| {
                if served.fetch_add(1, Ordering::SeqCst) + 1 >= per_conn {
                    stop.notify_one();
                }
                let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
                async move {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from(
                        authority,
                    ))))
                }
            })
        })
        .await
    }

    /// A test server's connections: all it accepted, and those still open.
    #[derive(Default)]
    struct Accepted {
        total: AtomicUsize,
        open: AtomicUsize,
    }

    /// An h2c server: each connection served by what `make` gives for it, until the
    /// notification it was handed says to end it; counts its connections.
    async fn h2c_server<S, F>(make: F) -> (SocketAddr, Arc<Accepted>)
    where
        F: Fn(Arc<tokio::sync::Notify>) -> S + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = http_body_util::Full<bytes::Bytes>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(Accepted::default());
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.total.fetch_add(1, Ordering::SeqCst);
                count.open.fetch_add(1, Ordering::SeqCst);
                let end = Arc::new(tokio::sync::Notify::new());
                let served = serve_until_told_to_end(s, make(end.clone()), end);
                let count = count.clone();
                tokio::spawn(async move {
                    served.await;
                    count.open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (addr, accepted)
    }

    /// Serves h2c on `s` until `end` is notified, then ends the connection gracefully
    /// (GOAWAY, the streams in flight answered, close).
    async fn serve_until_told_to_end<S>(s: tokio::net::TcpStream, svc: S, end: Arc<tokio::sync::Notify>)
    where
        S: hyper::service::HttpService<Incoming, ResBody = http_body_util::Full<bytes::Bytes>>,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn =
            hyper::server::conn::http2::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(s), svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = end.notified() => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }

    impl H2Upstreams {
        /// Sends `req` to `addr` as the proxy does: the connection first, then the request,
        /// on a new connection if the first gave it back.
        async fn request(&self, addr: SocketAddr, req: Request<Body>) -> Result<Response<Incoming>, H2Error> {
            let conn = self.connection(addr).await?;
            match self.send(conn, req).await? {
                Sent::Answer(r) => Ok(r),
                Sent::GivenBack(req) => match self.send(self.connection(addr).await?, req).await? {
                    Sent::Answer(r) => Ok(r),
                    Sent::GivenBack(_) => panic!("given back twice"),
                },
            }
        }
    }

    fn request(authority: &str) -> Request<Body> {
        let uri = format!("http://{authority}/pkg.Svc/Call");
        Request::builder().uri(uri).version(http::Version::HTTP_2).body(super::super::respond::empty()).unwrap()
    }

    /// An open connection to `addr` is kept.
    fn kept(up: &H2Upstreams, addr: SocketAddr) -> bool {
        matches!(lock(&up.conns).by_endpoint.get(&addr), Some(Slot::Open { sender, .. }) if !sender.is_closed())
    }

    async fn body(r: Response<Incoming>) -> String {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn one_connection_per_endpoint_made_again_once_it_ended() {
        let (addr, accepted) = server(3).await;
        let up = H2Upstreams::default();
        for _ in 0..3 {
            let r = up.request(addr, request("g.test:8443")).await.unwrap();
            assert_eq!(body(r).await, "g.test:8443", "the request's authority, not the endpoint's address");
        }
        assert_eq!(accepted.total.load(Ordering::SeqCst), 1, "the requests shared one connection");
        // The server ends that connection after its third request (GOAWAY, then close);
        // once it is closed, the next request makes another.
        for _ in 0..200 {
            if !kept(&up, addr) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!kept(&up, addr), "the ended connection is still handed out");
        let answered = Some(body(up.request(addr, request("g.test")).await.unwrap()).await);
        assert_eq!(answered.as_deref(), Some("g.test"));
        assert_eq!(accepted.total.load(Ordering::SeqCst), 2);
    }

    /// A backend that ends its connection (GOAWAY) while a request is still in flight on it,
    /// as a rolling restart or gRPC's maximum connection age does: the connection is still
    /// kept open for that request, and the next request, which it gives back unsent, goes on
    /// a new connection instead of failing.
    #[tokio::test]
    async fn a_request_given_back_by_an_ending_connection_goes_on_a_new_one() {
        let (addr, accepted) = h2c_server(|said| {
            // The first request of a connection is answered after 300 ms, its connection
            // told to end (GOAWAY) at once.
            let first = Arc::new(std::sync::atomic::AtomicBool::new(true));
            service_fn(move |_req: Request<Incoming>| {
                let slow = first.swap(false, Ordering::SeqCst);
                if slow {
                    said.notify_one();
                }
                async move {
                    if slow {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from(
                        "ok",
                    ))))
                }
            })
        })
        .await;
        let up = Arc::new(H2Upstreams::default());
        let slow = tokio::spawn({
            let up = up.clone();
            async move { up.request(addr, request("g.test")).await.map(|_| ()) }
        });
        // The GOAWAY has come while the first request waits for its answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = up.request(addr, request("g.test")).await;
        assert_eq!(body(r.unwrap_or_else(|e| panic!("{e}"))).await, "ok");
        slow.await.unwrap().unwrap();
        assert_eq!(accepted.total.load(Ordering::SeqCst), 2);
    }

    /// An endpoint that left every route: its connection is let go at once, not at the next
    /// sweep; a request in flight on it still gets its answer, then the connection closes.
    #[tokio::test]
    async fn a_removed_endpoints_connection_closes_once_its_requests_are_done() {
        let (addr, accepted) = h2c_server(|_| {
            service_fn(|_req: Request<Incoming>| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("ok"))))
            })
        })
        .await;
        let up = Arc::new(H2Upstreams::default());
        let in_flight = tokio::spawn({
            let up = up.clone();
            async move { body(up.request(addr, request("g.test")).await.unwrap()).await }
        });
        for _ in 0..200 {
            if kept(&up, addr) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        up.retain(|a| *a != addr);
        assert!(!kept(&up, addr), "the removed endpoint's connection is still handed out");
        assert_eq!(accepted.open.load(Ordering::SeqCst), 1, "closed under the request in flight");
        assert_eq!(in_flight.await.unwrap(), "ok");
        for _ in 0..200 {
            if accepted.open.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(accepted.open.load(Ordering::SeqCst), 0, "the connection stayed open after its last request");
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let e = H2Upstreams::default().request(addr, request("g.test")).await.unwrap_err();
        assert!(e.is_connect(), "{e}");
    }

    /// Requests that come together to an endpoint with no connection yet wait for one
    /// connect, instead of each making a connection of its own (all but one then closed).
    #[tokio::test]
    async fn concurrent_first_requests_share_one_connect() {
        let (addr, accepted) = server(usize::MAX).await;
        let up = Arc::new(H2Upstreams::default());
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let up = up.clone();
                tokio::spawn(async move { body(up.request(addr, request("g.test")).await.unwrap()).await })
            })
            .collect();
        for r in requests {
            assert_eq!(r.await.unwrap(), "g.test");
        }
        assert_eq!(accepted.total.load(Ordering::SeqCst), 1, "one connection for all of them");
        assert!(kept(&up, addr));
    }

    /// A connect every waiter gave up on (the client went away, its deadline passed) still
    /// ends and files its connection: the next request finds it open.
    #[tokio::test]
    async fn a_connect_nobody_waits_for_still_files_its_connection() {
        let (addr, accepted) = server(usize::MAX).await;
        let up = H2Upstreams::default();
        {
            let waiting = up.connection(addr);
            tokio::pin!(waiting);
            assert!(futures::poll!(waiting.as_mut()).is_pending(), "the connect has started");
        }
        for _ in 0..200 {
            if kept(&up, addr) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(kept(&up, addr), "the connection was filed");
        assert_eq!(body(up.request(addr, request("g.test")).await.unwrap()).await, "g.test");
        assert_eq!(accepted.total.load(Ordering::SeqCst), 1);
    }
}
