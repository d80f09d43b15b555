//! Plain HTTP/1.1 client connections served by the proxy itself, without hyper's connection
//! state machine: the request head parsed with `httparse` from the connection's own buffer
//! (hyper's parser, with hyper's server rules), its body (Content-Length or chunked) decoded
//! from that buffer, the request given to the same pipeline as hyper's requests
//! ([`super::listener::respond_to`]), the response head and body written in as few writes as
//! the body allows ([`super::write_h1`]), and the next request read on the same connection.
//! What this does not take (HTTP/1.0, HTTP/2 prior knowledge, upgrades, `CONNECT`,
//! `Expect`, any head hyper would refuse or frame otherwise: CL/TE conflicts, two lengths,
//! obs-fold, invalid bytes, a head past [`MAX_HEADER_BYTES`]) is handed, with the bytes read
//! so far, to hyper's server, which answers or refuses it as before.
use std::{
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use hyper::body::{Frame, SizeHint};
use smallvec::SmallVec;
use tokio::{
    io::{AsyncRead, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
};

use super::{
    forward::Conn,
    h1::{self, Decoding, Step},
    limits::WriteWatch,
    listener::{Activity, InFlight, ListenerState, MAX_HEADER_BYTES, respond_to},
    spare_maps,
    write_h1::{Nagle, write_response},
};

/// Headers of one request, at most (hyper's default: more goes to hyper, which answers 431).
const MAX_HEADERS: usize = 100;
/// A longer request target goes to hyper (which answers 414).
const MAX_URI_LEN: usize = u16::MAX as usize - 1;
/// What one read of the client asks for at least.
const READ_CHUNK: usize = 4096;
/// The buffer a request's first bytes are kept in, at least.
const FIRST_ROOM: usize = 1024;

/// What the bytes at the front of the buffer are (on the stack for one parse: not boxed).
#[allow(clippy::large_enum_variant)]
enum Parsed {
    /// Not a whole head yet.
    More,
    /// For hyper's server: not a request this server takes (the bytes are left in place).
    Hyper,
    Request(Head),
}

/// A request head this server takes.
struct Head {
    parts: http::request::Parts,
    body: Decoding,
    keep_alive: bool,
}

/// The head at the front of `buf`, taken from it when it is one this server serves.
fn parse(buf: &mut BytesMut) -> Parsed {
    // Uninitialised slots, and the names kept inline for a usual head: no 100-slot arrays
    // zeroed and dropped per request (0.8% of the proxy in keep-alive).
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEADER_BYTES => return Parsed::More,
        // Refused by hyper as it is now (400 or 431).
        _ => return Parsed::Hyper,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Hyper;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else { return Parsed::Hyper };
    if path.len() > MAX_URI_LEN || method == Method::CONNECT {
        return Parsed::Hyper;
    }
    // Offsets into the head, so that the target and values share its bytes once it is split
    // off.
    let base = buf.as_ptr() as usize;
    let path_span = (path.as_ptr() as usize - base, path.as_ptr() as usize - base + path.len());
    let mut fields: SmallVec<[(HeaderName, usize, usize); 16]> = SmallVec::new();
    let mut body = Decoding::Done;
    let (mut lengths, mut encodings) = (0, 0);
    let mut keep_alive = true;
    for h in req.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(h.name.as_bytes()) else { return Parsed::Hyper };
        let v = h.value;
        if !v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)) {
            return Parsed::Hyper;
        }
        match name {
            header::CONTENT_LENGTH => {
                lengths += 1;
                match digits(v) {
                    Some(n) => body = Decoding::from(h1::Framing::Length(n)),
                    None => return Parsed::Hyper,
                }
            }
            header::TRANSFER_ENCODING => {
                encodings += 1;
                if !v.eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Hyper;
                }
                body = Decoding::ChunkSize;
            }
            header::CONNECTION if h1::asks_close(v) => keep_alive = false,
            header::UPGRADE | header::EXPECT => return Parsed::Hyper,
            _ => {}
        }
        let v0 = v.as_ptr() as usize - base;
        fields.push((name, v0, v0 + v.len()));
    }
    // Two framings or two lengths: hyper's rules (CL dropped for chunked, the connection
    // closed after; differing lengths refused).
    if lengths + encodings > 1 {
        return Parsed::Hyper;
    }
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_span.0..path_span.1)) else {
        unsplit(buf, &head);
        return Parsed::Hyper;
    };
    // Room for the forwarding headers the proxy adds (no growing the map per request), in a
    // map an earlier message left.
    let mut map = spare_maps::take(fields.len() + 4);
    for (name, v0, v1) in fields {
        let Ok(value) = HeaderValue::from_maybe_shared(head.slice(v0..v1)) else {
            unsplit(buf, &head);
            return Parsed::Hyper;
        };
        map.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.headers = map;
    Parsed::Request(Head { parts, body, keep_alive })
}

/// Puts a head taken from `buf` back in front of it.
fn unsplit(buf: &mut BytesMut, head: &Bytes) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// A Content-Length value: digits only, as hyper reads it.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// The client connection's read side: what was read and not yet used, and where the body of
/// the request being served is. Shared with that request's body while it is read.
struct Reader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    body: Decoding,
    /// The body was malformed or cut short: the connection can't carry another request.
    broken: bool,
}

impl Reader {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        // No buffer while the connection is idle (as nginx): the first bytes are read on the
        // stack, and a buffer is taken only when there are some.
        if self.buf.capacity() == 0 {
            let mut stack = [const { std::mem::MaybeUninit::<u8>::uninit() }; READ_CHUNK];
            let mut first = tokio::io::ReadBuf::uninit(&mut stack);
            std::task::ready!(Pin::new(&mut self.rd).poll_read(cx, &mut first))?;
            let n = first.filled().len();
            if n > 0 {
                // Room for what came, at least a small block (which the allocator keeps a
                // per-thread cache of) rather than a 4 KiB one per request; more is made when
                // more is to be read.
                self.buf.reserve(n.max(FIRST_ROOM));
                self.buf.extend_from_slice(first.filled());
            }
            return Poll::Ready(Ok(n));
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.rd), cx, &mut self.buf)
    }
}

fn lock(r: &Mutex<Reader>) -> MutexGuard<'_, Reader> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request body read from the client connection (Content-Length or chunked).
pub struct RequestBody {
    /// `None`: the request has no body.
    reader: Option<Arc<Mutex<Reader>>>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BadBody {
    #[error("{0}")]
    Malformed(h1::Malformed),
    #[error("the client closed the connection within the request body")]
    Cut,
    #[error("reading the request body: {0}")]
    Io(std::io::Error),
}

impl hyper::body::Body for RequestBody {
    type Data = Bytes;
    type Error = BadBody;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BadBody>>> {
        let Some(shared) = &self.reader else { return Poll::Ready(None) };
        let mut guard = lock(shared);
        let r = &mut *guard;
        loop {
            if r.broken {
                return Poll::Ready(None);
            }
            match r.body.step(&mut r.buf) {
                Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(Step::Done) => return Poll::Ready(None),
                Ok(Step::More) => {}
                Err(e) => {
                    r.broken = true;
                    return Poll::Ready(Some(Err(BadBody::Malformed(e))));
                }
            }
            match std::task::ready!(r.poll_fill(cx)) {
                Ok(0) => {
                    r.broken = true;
                    return Poll::Ready(Some(Err(BadBody::Cut)));
                }
                Ok(_) => {}
                Err(e) => {
                    r.broken = true;
                    return Poll::Ready(Some(Err(BadBody::Io(e))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.as_ref().is_none_or(|r| lock(r).body == Decoding::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.reader.as_ref().map(|r| lock(r).body) {
            None | Some(Decoding::Done) => SizeHint::with_exact(0),
            Some(Decoding::Length(n)) => SizeHint::with_exact(n),
            Some(_) => SizeHint::default(),
        }
    }
}

/// Serves the connection's requests until it closes, ends, or meets a request for hyper:
/// then the connection and what was read of it are returned.
pub(super) async fn serve(
    rd: OwnedReadHalf,
    mut wr: WriteWatch<OwnedWriteHalf>,
    conn: Conn,
    state: Arc<ListenerState>,
    activity: Arc<Activity>,
) -> Option<(TcpStream, BytesMut)> {
    let reader = Arc::new(Mutex::new(Reader { rd, buf: BytesMut::new(), body: Decoding::Done, broken: false }));
    let mut out = Vec::new();
    let mut nagle = Nagle::Unwritten;
    loop {
        activity.reading_head(true);
        {
            // Nothing read ahead: the buffer goes back until the next request's bytes come.
            let mut r = lock(&reader);
            if r.buf.is_empty() {
                r.buf = BytesMut::new();
            }
        }
        let head = loop {
            let parsed = {
                let mut r = lock(&reader);
                if r.buf.is_empty() { Parsed::More } else { parse(&mut r.buf) }
            };
            match parsed {
                Parsed::More => {}
                Parsed::Hyper => return hand_over(reader, wr),
                Parsed::Request(head) => break head,
            }
            match std::future::poll_fn(|cx| lock(&reader).poll_fill(cx)).await {
                Ok(n) if n > 0 => {}
                _ => return None,
            }
        };
        activity.reading_head(false);
        let Head { parts, body, mut keep_alive } = head;
        let head_only = parts.method == Method::HEAD;
        let has_body = body != Decoding::Done;
        lock(&reader).body = body;
        let req = Request::from_parts(parts, RequestBody { reader: has_body.then(|| reader.clone()) });
        let inflight = InFlight::start(&activity);
        // Boxed: the pipeline's state is large and lives only while a request is served (the
        // connection's own future stays small while it waits for the next one).
        let resp = Box::pin(respond_to(req, conn, state.clone())).await;
        // A request body not read to its end by now (the answer came first: a 413, a
        // redirect) leaves the connection unable to carry another request: the answer says
        // `connection: close` rather than closing after a keep-alive answer.
        let unread = has_body && lock(&reader).body != Decoding::Done;
        keep_alive &= !activity.closing() && !unread;
        let written = write_response(&mut wr, resp, head_only, keep_alive, &mut out, &mut nagle).await;
        inflight.done();
        // The request body read to its end, and nothing of it left for the next request.
        let clean = {
            let r = lock(&reader);
            r.body == Decoding::Done && !r.broken
        };
        if out.capacity() > KEPT_OUT_BYTES {
            // A large answer grew it (to 64-128 KiB): an idle keep-alive connection keeps
            // only what a usual answer needs (the documented memory per idle connection).
            out = Vec::new();
        }
        match written {
            Ok(true) if clean && !activity.closing() => {}
            Ok(_) => {
                close(reader, wr, clean).await;
                return None;
            }
            Err(e) => {
                tracing::debug!(client = %conn.client, error = %e, "connection ended within a response");
                return None;
            }
        }
    }
}

/// The most of its write buffer a connection keeps between requests.
const KEPT_OUT_BYTES: usize = 16 * 1024;

/// How long a connection whose request was left unread is read and dropped before it is
/// closed (nginx's `lingering_time` is 30 s, its `lingering_timeout` 5 s).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);
/// What a lingering close reads at most before it closes anyway.
const LINGER_BYTES: usize = 1 << 20;

/// Ends a connection after its last response. Its request read to the end (nothing past
/// it) and the socket held here alone: dropping it closes the socket, which sends the FIN
/// (one syscall, as nginx closes). Else the FIN first (`shutdown`: a request body still
/// held elsewhere keeps the socket open), and when the client may still be sending, a
/// lingering close (as nginx's): what comes is read and dropped for a while, as closing a
/// socket with unread data resets the connection, and the client could lose the response.
async fn close(reader: Arc<Mutex<Reader>>, mut wr: WriteWatch<OwnedWriteHalf>, clean: bool) {
    // Bytes read past the request (a pipelined one): the client is sending more.
    let clean = clean && lock(&reader).buf.is_empty();
    let Ok(Reader { mut rd, mut buf, .. }) = sole(reader) else {
        let _ = wr.shutdown().await;
        return;
    };
    if clean {
        // A write half shuts the socket's writing down when dropped (unless shut down
        // before): not this one, the read half's drop closes the socket and sends the FIN.
        wr.into_inner().forget();
        return;
    }
    let _ = wr.shutdown().await;
    let until = tokio::time::Instant::now() + LINGER;
    let mut dropped = 0;
    while dropped < LINGER_BYTES {
        buf.clear();
        buf.reserve(16 * 1024);
        match tokio::time::timeout_at(until, tokio::io::AsyncReadExt::read_buf(&mut rd, &mut buf)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => break,
        }
    }
}

/// The reader, when nothing else holds it (a body of an earlier request may, somewhere).
fn sole(reader: Arc<Mutex<Reader>>) -> Result<Reader, Arc<Mutex<Reader>>> {
    Arc::try_unwrap(reader).map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// The connection back whole, with what was read of it, for hyper's server.
fn hand_over(reader: Arc<Mutex<Reader>>, wr: WriteWatch<OwnedWriteHalf>) -> Option<(TcpStream, BytesMut)> {
    // A body of an earlier request still held somewhere keeps the reader: nothing to hand on.
    let r = sole(reader).ok()?;
    let stream = r.rd.reunite(wr.into_inner()).ok()?;
    Some((stream, r.buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(n: usize) -> String {
        (0..n).map(|i| format!("X-H{i}: v{i}\r\n")).collect()
    }

    #[test]
    fn a_head_is_taken_with_every_field_in_order() {
        let raw = format!("GET /a?b HTTP/1.1\r\nHost: x\r\n{}\r\nrest", fields(40));
        let mut buf = BytesMut::from(raw.as_str());
        let Parsed::Request(head) = parse(&mut buf) else { panic!("not taken") };
        assert_eq!(&buf[..], b"rest", "the head is taken from the buffer, the rest left");
        assert_eq!(head.parts.uri, "/a?b");
        let got: Vec<String> =
            head.parts.headers.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
        let want: Vec<String> =
            ["host: x".to_string()].into_iter().chain((0..40).map(|i| format!("x-h{i}: v{i}"))).collect();
        assert_eq!(got, want);
        assert!(head.keep_alive);
    }

    #[test]
    fn heads_it_does_not_take_are_left_for_hyper() {
        let cases = [
            // Too many fields: hyper answers 431.
            format!("GET / HTTP/1.1\r\n{}\r\n", fields(MAX_HEADERS + 1)),
            // Upgrades and Expect are hyper's.
            "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_string(),
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n".to_string(),
            // Two framings.
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n".to_string(),
        ];
        for raw in cases {
            let mut buf = BytesMut::from(raw.as_str());
            assert!(matches!(parse(&mut buf), Parsed::Hyper), "{raw:?}");
            assert_eq!(&buf[..], raw.as_bytes(), "the bytes are left in place");
        }
        let mut partial = BytesMut::from("GET / HTTP/1.1\r\nHost: x\r\n");
        assert!(matches!(parse(&mut partial), Parsed::More));
    }
}
