//! Connections to plain HTTP/1.1 backends, pooled per worker thread (nginx's upstream
//! `keepalive`): a request takes an idle connection of its endpoint or opens one, and the
//! connection goes back to the thread's pool once the response body has been read to its
//! end (`backend-keepalive`; otherwise it is closed then). No pool is shared between
//! threads, so taking and returning a connection needs no lock and no task of its own.
//! Connecting is a step of its own, before anything is sent: a request whose endpoint
//! refuses can go to another one, body and all.
use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::{
    body::{Body as _, Frame, Incoming, SizeHint},
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;

use super::respond::Body;

/// Idle connections kept per endpoint and thread (nginx's bench config keeps 256).
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

thread_local! {
    /// This thread's idle connections, by endpoint; the most recently used at the back.
    static IDLE: RefCell<HashMap<SocketAddr, VecDeque<Idle>>> = RefCell::new(HashMap::new());
}

/// Why a request to a backend failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connecting: no answer within {}s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout,
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("request: {0}")]
    Request(#[source] hyper::Error),
}

impl Error {
    /// Nothing was sent: the request may go to another endpoint.
    pub fn is_connect(&self) -> bool {
        !matches!(self, Error::Request(_))
    }
}

/// A connection to one endpoint, taken for one request.
pub struct Conn {
    sender: SendRequest<Body>,
    addr: SocketAddr,
    /// Back to the pool after the response (else closed).
    keep: bool,
}

/// An idle connection to `addr` from this thread's pool (`keep`), or a new one.
pub async fn checkout(addr: SocketAddr, keep: bool) -> Result<Conn, Error> {
    if keep {
        while let Some(mut sender) = take_idle(addr) {
            // Ready at once, unless the connection is still finishing its last exchange.
            if sender.ready().await.is_ok() {
                return Ok(Conn { sender, addr, keep });
            }
        }
    }
    Ok(Conn { sender: connect(addr).await?, addr, keep })
}

fn take_idle(addr: SocketAddr) -> Option<SendRequest<Body>> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(i) = list.pop_back() {
            if !i.sender.is_closed() && i.since.elapsed() < IDLE_TIMEOUT {
                return Some(i.sender);
            }
        }
        None
    })
}

fn check_in(addr: SocketAddr, sender: SendRequest<Body>) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        // The oldest go first: past the idle time, or past the count kept.
        while list.front().is_some_and(|i| i.sender.is_closed() || i.since.elapsed() >= IDLE_TIMEOUT)
            || list.len() >= MAX_IDLE_PER_ENDPOINT
        {
            list.pop_front();
        }
        list.push_back(Idle { sender, since: Instant::now() });
    });
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, Error> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Error::Connect(e)),
        Err(_) => return Err(Error::ConnectTimeout),
    };
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(Error::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(backend = %addr, error = %e, "backend connection ended with an error");
        }
    });
    Ok(sender)
}

impl Conn {
    /// Sends `req` (its URI in origin form; a `Host` is added when it has none). A pooled
    /// connection the backend closed before the request went out is replaced by a new one.
    pub async fn send(mut self, mut req: Request<Body>) -> Result<Response<PooledBody>, Error> {
        if req.uri().scheme().is_some() || req.uri().authority().is_some() {
            let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
            *req.uri_mut() = Uri::try_from(pq).unwrap_or_else(|_| Uri::from_static("/"));
        }
        if !req.headers().contains_key(header::HOST)
            && let Ok(h) = HeaderValue::from_str(&self.addr.to_string())
        {
            req.headers_mut().insert(header::HOST, h);
        }
        let resp = match self.sender.try_send_request(req).await {
            Ok(r) => r,
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    self.sender = connect(self.addr).await?;
                    self.sender.send_request(req).await.map_err(Error::Request)?
                }
                None => return Err(Error::Request(e.into_error())),
            },
        };
        let back = self.keep.then_some((self.sender, self.addr));
        Ok(resp.map(|inner| PooledBody { inner, back }))
    }
}

/// A backend's response body: at its end, its connection goes back to the pool.
pub struct PooledBody {
    inner: Incoming,
    back: Option<(SendRequest<Body>, SocketAddr)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((sender, addr)) = self.back.take() {
            check_in(addr, sender);
        }
    }
}

impl Drop for PooledBody {
    /// A body with nothing to read (204, HEAD, `Content-Length: 0`) may never be polled.
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A broken response: its connection is not reused.
            Poll::Ready(Some(Err(_))) => this.back = None,
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
