//! Connections to plain HTTP/1.1 backends, pooled per worker thread (nginx's upstream
//! `keepalive`): a request takes an idle connection of its endpoint or opens one, and the
//! connection goes back to the thread's pool once the response body has been read to its
//! end (`backend-keepalive`; otherwise it is closed then). No pool is shared between
//! threads, so taking and returning a connection needs no lock. The exchange runs in the
//! request's own task ([`super::h1`] on the socket: no connection task, no channel between
//! the two). Connecting is a step of its own, before anything is sent: a request whose
//! endpoint refuses can go to another one, body and all.
use std::{
    cell::RefCell,
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, header};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{
    h1::{self, Decoding, Malformed, Sending, Step},
    respond::{Body, BoxError},
};

/// Idle connections kept per endpoint and thread (nginx's bench config keeps 256).
const MAX_IDLE_PER_ENDPOINT: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of a backend connection (grown when a head needs more).
const READ_CHUNK: usize = 16 * 1024;
/// A request head buffer larger than this is not kept with its connection.
const MAX_HEAD_KEPT: usize = 4 * 1024;

/// A backend connection and what was read from it but not yet used.
struct Wire {
    stream: TcpStream,
    buf: BytesMut,
    /// The last request head written, its buffer reused by the next request (no allocation
    /// per request).
    head: Vec<u8>,
}

struct Idle {
    wire: Wire,
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
    #[error("request: {0}")]
    Io(#[source] std::io::Error),
    #[error("the backend closed the connection before it answered")]
    Closed,
    #[error("the backend closed the connection within its answer's head")]
    Incomplete,
    #[error("the backend's answer: {0}")]
    Malformed(#[source] Malformed),
    /// The client's request body failed (malformed, stalled, too large).
    #[error("request body: {0}")]
    Body(#[source] BoxError),
    #[error("the request body ended before its Content-Length")]
    ShortBody,
}

impl Error {
    /// Nothing was sent: the request may go to another endpoint.
    pub fn is_connect(&self) -> bool {
        matches!(self, Error::Connect(_) | Error::ConnectTimeout)
    }
}

/// A connection to one endpoint, taken for one request.
pub struct Conn {
    wire: Wire,
    addr: SocketAddr,
    /// Back to the pool after the response (else closed).
    keep: bool,
    /// Taken from the pool (the backend may have closed it meanwhile).
    reused: bool,
}

/// An idle connection to `addr` from this thread's pool (`keep`), or a new one.
pub async fn checkout(addr: SocketAddr, keep: bool) -> Result<Conn, Error> {
    if keep && let Some(wire) = take_idle(addr) {
        return Ok(Conn { wire, addr, keep, reused: true });
    }
    Ok(Conn { wire: connect(addr).await?, addr, keep, reused: false })
}

fn take_idle(addr: SocketAddr) -> Option<Wire> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        while let Some(i) = list.pop_back() {
            if i.since.elapsed() < IDLE_TIMEOUT && open(&i.wire.stream) {
                return Some(i.wire);
            }
        }
        None
    })
}

/// The idle connection has neither been closed by the backend nor sent anything
/// unasked: no readiness since its last read drained it (no syscall), or a read that would
/// block.
fn open(stream: &TcpStream) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match stream.poll_read_ready(&mut cx) {
        Poll::Pending => true,
        Poll::Ready(Err(_)) => false,
        Poll::Ready(Ok(())) => {
            let mut probe = [0u8; 1];
            matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        }
    }
}

fn check_in(addr: SocketAddr, wire: Wire) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        // One clock read for the check and the stamp.
        let now = Instant::now();
        // The oldest go first: past the idle time, or past the count kept.
        while list.front().is_some_and(|i| now.duration_since(i.since) >= IDLE_TIMEOUT)
            || list.len() >= MAX_IDLE_PER_ENDPOINT
        {
            list.pop_front();
        }
        list.push_back(Idle { wire, since: now });
    });
}

async fn connect(addr: SocketAddr) -> Result<Wire, Error> {
    let stream = dial(addr).await?;
    Ok(Wire { stream, buf: BytesMut::with_capacity(READ_CHUNK), head: Vec::new() })
}

/// A new TCP connection to a backend endpoint, within the connect timeout, Nagle off
/// (also [`super::h2_upstream`]'s).
pub(super) async fn dial(addr: SocketAddr) -> Result<TcpStream, Error> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Error::Connect(e)),
        Err(_) => return Err(Error::ConnectTimeout),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Methods a request may be sent again with on a new connection when a pooled one turned
/// out closed before any answer (RFC 9110 9.2.2).
fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE)
}

impl Conn {
    /// Sends `req` (origin-form target; a `Host` is added when it has none) and reads the
    /// response head. A pooled connection the backend closed before answering a request
    /// without a body is replaced by a new one and the request sent again.
    /// The head is encoded at the call; the future holds it, not the request.
    pub fn send(mut self, req: Request<Body>) -> impl Future<Output = Result<Response<PooledBody>, Error>> {
        let (mut parts, mut body) = req.into_parts();
        if !parts.headers.contains_key(header::HOST)
            && let Ok(h) = HeaderValue::from_str(&self.addr.to_string())
        {
            parts.headers.insert(header::HOST, h);
        }
        let empty = body.is_end_stream();
        let mut head = std::mem::take(&mut self.wire.head);
        head.clear();
        head.reserve(64 + 48 * parts.headers.len());
        let sending = h1::encode_request(&mut parts, empty, body.size_hint().exact(), &mut head);
        // Written out: its map goes to the next message parsed on this thread.
        super::spare_maps::give_back(std::mem::take(&mut parts.headers));
        let method = parts.method;
        async move {
            let (answer, finished) = match exchange(&mut self.wire, &head, sending, &mut body, &method).await {
                Err(Error::Closed | Error::Io(_)) if self.reused && empty && idempotent(&method) => {
                    tracing::debug!(backend = %self.addr, "pooled connection closed by the backend: sending again on a new one");
                    self.wire = connect(self.addr).await?;
                    exchange(&mut self.wire, &head, sending, &mut body, &method).await?
                }
                r => r?,
            };
            if head.capacity() <= MAX_HEAD_KEPT {
                self.wire.head = head;
            }
            let (parts, ()) = answer.response.into_parts();
            let decoding = Decoding::from(answer.framing);
            // Reused only when the request went out whole and the answer leaves it clean.
            let keep = self.keep && answer.keep_alive && finished;
            let back = Some((self.wire, self.addr, keep));
            Ok(Response::from_parts(parts, PooledBody { back, decoding }))
        }
    }
}

/// Writes the head and body and reads the response head. The head is read while the body
/// is still going out (a backend may answer early, a 413 say): the answer comes back with
/// `false` then, and the connection is not reused.
async fn exchange(
    wire: &mut Wire,
    head: &[u8],
    sending: Sending,
    body: &mut Body,
    method: &Method,
) -> Result<(h1::Head, bool), Error> {
    let Wire { stream, buf, .. } = wire;
    stream.write_all(head).await.map_err(Error::Io)?;
    let (mut rd, mut wr) = stream.split();
    let read = read_head(&mut rd, buf, method);
    if sending == Sending::Nothing || sending == Sending::Length(0) {
        return Ok((read.await?, true));
    }
    let write = write_body(&mut wr, body, sending);
    tokio::pin!(read, write);
    tokio::select! {
        biased;
        w = &mut write => {
            w?;
            Ok((read.await?, true))
        }
        r = &mut read => Ok((r?, false)),
    }
}

async fn read_head(
    rd: &mut tokio::net::tcp::ReadHalf<'_>,
    buf: &mut BytesMut,
    method: &Method,
) -> Result<h1::Head, Error> {
    loop {
        if !buf.is_empty()
            && let Some(head) = h1::parse_response(buf, method).map_err(Error::Malformed)?
        {
            return Ok(head);
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        if rd.read_buf(buf).await.map_err(Error::Io)? == 0 {
            return Err(if buf.is_empty() { Error::Closed } else { Error::Incomplete });
        }
    }
}

async fn write_body(wr: &mut tokio::net::tcp::WriteHalf<'_>, body: &mut Body, sending: Sending) -> Result<(), Error> {
    let mut left = match sending {
        Sending::Length(n) => n,
        _ => u64::MAX,
    };
    let mut out = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let frame = frame.map_err(Error::Body)?;
        let Ok(data) = frame.into_data() else { continue };
        if data.is_empty() {
            continue;
        }
        if sending == Sending::Chunked {
            out.clear();
            h1::chunk(&data, &mut out);
            wr.write_all(&out).await.map_err(Error::Io)?;
        } else {
            // Never more than the declared length (as hyper's length encoder).
            let n = (data.len() as u64).min(left) as usize;
            wr.write_all(&data[..n]).await.map_err(Error::Io)?;
            left -= n as u64;
            if left == 0 {
                return Ok(());
            }
        }
    }
    match sending {
        Sending::Chunked => wr.write_all(h1::LAST_CHUNK).await.map_err(Error::Io),
        _ if left > 0 => Err(Error::ShortBody),
        _ => Ok(()),
    }
}

/// A backend's response body, decoded from its connection; at its end the connection goes
/// back to the pool (when it may carry another request).
pub struct PooledBody {
    back: Option<(Wire, SocketAddr, bool)>,
    decoding: Decoding,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((wire, addr, true)) = self.back.take()
            && wire.buf.is_empty()
        {
            check_in(addr, wire);
        }
    }

    fn fail(&mut self, e: std::io::Error) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.back = None;
        self.decoding = Decoding::Done;
        Poll::Ready(Some(Err(e)))
    }
}

impl Drop for PooledBody {
    /// A body with nothing to read (204, HEAD, `Content-Length: 0`) may never be polled.
    fn drop(&mut self) {
        if self.decoding == Decoding::Done {
            self.release();
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            let Some((wire, _, _)) = this.back.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoding.step(&mut wire.buf) {
                Ok(Step::Data(data)) => {
                    if this.decoding == Decoding::Done {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Done) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Step::More) => {}
                Err(e) => return this.fail(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            }
            if wire.buf.capacity() - wire.buf.len() < READ_CHUNK / 4 {
                wire.buf.reserve(READ_CHUNK);
            }
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut wire.stream), cx, &mut wire.buf);
            match std::task::ready!(read) {
                Ok(0) => {
                    if !this.decoding.at_eof() {
                        return this.fail(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    // Close-delimited: the connection is done with.
                    this.back = None;
                    return Poll::Ready(None);
                }
                Ok(_) => {}
                Err(e) => return this.fail(e),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoding == Decoding::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoding {
            Decoding::Done => SizeHint::with_exact(0),
            Decoding::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
