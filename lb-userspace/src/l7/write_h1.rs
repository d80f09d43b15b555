//! A response written to a plain HTTP/1.1 client connection (for [`super::serve_h1`]): the
//! head encoded with hyper's server rules, the head and what of the body is ready in one
//! write, the rest as it comes, Nagle turned off before a connection's second write.
use std::{cell::RefCell, pin::Pin, task::Poll, time::SystemTime};

use http::{Response, StatusCode, header};
use hyper::body::Body as _;
use tokio::{io::AsyncWriteExt, net::tcp::OwnedWriteHalf};

use super::{h1, limits::WriteWatch, respond::Body, spare_maps};

/// A write up to this size goes out in one send on a new connection (the kernel's default
/// send buffer, `tcp_wmem`, is 16 KiB).
const ONE_SEND: usize = 16 * 1024;
/// Response bytes gathered before they are written even though more are ready.
const MAX_GATHER: usize = 64 * 1024;

/// How a response body goes to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sending {
    Nothing,
    Length(u64),
    Chunked,
}

/// Writes the response head into `dst` with hyper's server rules (RFC 9112 6.3): the body's
/// length from its Content-Length or its size, else chunked; no body for HEAD, 1xx, 204
/// and 304; `content-length: 0` for an empty body; a `date` when the response has none;
/// `connection: close` when the connection ends after it. Returns how the body goes and
/// whether the connection may carry another request.
fn encode_head(resp: &Response<Body>, head_only: bool, mut keep_alive: bool, dst: &mut Vec<u8>) -> (Sending, bool) {
    let status = resp.status();
    let bodiless = status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let body = resp.body();
    let empty = body.is_end_stream();
    let reason = resp.extensions().get::<hyper::ext::ReasonPhrase>();
    if status == StatusCode::OK && reason.is_none() {
        dst.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.extend_from_slice(b"HTTP/1.1 ");
        dst.extend_from_slice(status.as_str().as_bytes());
        dst.push(b' ');
        match reason {
            Some(r) => dst.extend_from_slice(r.as_bytes()),
            None => dst.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
        }
        dst.extend_from_slice(b"\r\n");
    }
    let h = resp.headers();
    let length = h1::content_length(h).ok().flatten();
    let sending = if head_only || bodiless || empty {
        Sending::Nothing
    } else if let Some(n) = length.or(body.size_hint().exact()) {
        Sending::Length(n)
    } else {
        Sending::Chunked
    };
    let (mut dated, mut closes) = (false, false);
    for (name, value) in h {
        match *name {
            // Written once below, from what the body is.
            header::TRANSFER_ENCODING => continue,
            header::CONTENT_LENGTH if !head_only => continue,
            header::CONNECTION if h1::asks_close(value.as_bytes()) => {
                closes = true;
                keep_alive = false;
            }
            header::DATE => dated = true,
            _ => {}
        }
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    match sending {
        Sending::Length(n) => {
            dst.extend_from_slice(b"content-length: ");
            dst.extend_from_slice(itoa(n, &mut [0u8; 20]));
            dst.extend_from_slice(b"\r\n");
        }
        Sending::Chunked => dst.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Sending::Nothing if !head_only && !bodiless => dst.extend_from_slice(b"content-length: 0\r\n"),
        Sending::Nothing => {}
    }
    if !dated {
        dst.extend_from_slice(b"date: ");
        date(dst);
        dst.extend_from_slice(b"\r\n");
    }
    if !keep_alive && !closes {
        dst.extend_from_slice(b"connection: close\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    (sending, keep_alive)
}

fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

thread_local! {
    /// The `date` value of the current second (formatted once a second, as hyper does).
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn date(dst: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        dst.extend_from_slice(d.1.as_bytes());
    });
}

/// Nagle's algorithm on a client connection: turned off (TCP_NODELAY) before the
/// connection's second write, as nginx turns it off when a connection goes keep-alive. The
/// first write has nothing unacknowledged before it for Nagle to hold it back for (Linux
/// holds a short segment back only while an earlier short one is unacknowledged), so a
/// connection that carries one answer in one write (a new connection per request) needs no
/// syscall for it. A first write larger than [`ONE_SEND`] may take several sends (a new
/// socket's send buffer), each of which can leave a short segment: Nagle goes off before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Nagle {
    Unwritten,
    On,
    Off,
}

/// Writes `out` to the client, Nagle off from the connection's second write (not an
/// `async fn`: the write's future is all the caller holds).
fn put<'a>(
    wr: &'a mut WriteWatch<OwnedWriteHalf>,
    out: &'a [u8],
    nagle: &mut Nagle,
) -> impl Future<Output = std::io::Result<()>> + 'a {
    match *nagle {
        Nagle::Unwritten if out.len() <= ONE_SEND => *nagle = Nagle::On,
        Nagle::Off => {}
        Nagle::Unwritten | Nagle::On => {
            let _ = wr.get_ref().as_ref().set_nodelay(true);
            *nagle = Nagle::Off;
        }
    }
    wr.write_all(out)
}

/// Writes `resp`: its head and as much of its body as is ready in one write, then the rest
/// as it comes. `Ok(true)`: written whole, and the connection may carry another request.
pub(super) async fn write_response(
    wr: &mut WriteWatch<OwnedWriteHalf>,
    resp: Response<Body>,
    head_only: bool,
    keep_alive: bool,
    out: &mut Vec<u8>,
    nagle: &mut Nagle,
) -> std::io::Result<bool> {
    out.clear();
    out.reserve(1024);
    let (sending, keep_alive) = encode_head(&resp, head_only, keep_alive, out);
    let (mut parts, mut body) = resp.into_parts();
    spare_maps::give_back(std::mem::take(&mut parts.headers));
    let mut left = match sending {
        Sending::Nothing => {
            put(wr, out, nagle).await?;
            return Ok(keep_alive);
        }
        Sending::Length(n) => n,
        Sending::Chunked => u64::MAX,
    };
    loop {
        // Frames ready now are gathered; what was gathered is written before waiting.
        let next = std::future::poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            Poll::Pending if !out.is_empty() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        match next {
            None => {
                put(wr, out, nagle).await?;
                out.clear();
            }
            Some(Some(Ok(frame))) => {
                let Ok(data) = frame.into_data() else { continue };
                if data.is_empty() {
                    continue;
                }
                if sending == Sending::Chunked {
                    h1::chunk(&data, out);
                } else {
                    // Never more than the length the head announced.
                    let n = (data.len() as u64).min(left) as usize;
                    out.extend_from_slice(&data[..n]);
                    left -= n as u64;
                    if left == 0 {
                        put(wr, out, nagle).await?;
                        return Ok(keep_alive);
                    }
                }
                if out.len() >= MAX_GATHER {
                    put(wr, out, nagle).await?;
                    out.clear();
                }
            }
            Some(None) => {
                if sending == Sending::Chunked {
                    out.extend_from_slice(h1::LAST_CHUNK);
                }
                put(wr, out, nagle).await?;
                // A body shorter than its length: the client can only tell by the close.
                return Ok(keep_alive && (sending == Sending::Chunked || left == 0));
            }
            Some(Some(Err(e))) => {
                // As hyper: the answer is cut off (the client sees the connection close
                // within it).
                if !out.is_empty() {
                    let _ = put(wr, out, nagle).await;
                }
                return Err(std::io::Error::other(format!("the response body failed: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpStream;

    use super::*;

    #[tokio::test]
    async fn nagle_goes_off_before_a_connections_second_write() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_rd, wr) = server.into_split();
        let (mut wr, _) = WriteWatch::new(wr);
        let mut nagle = Nagle::Unwritten;
        put(&mut wr, b"first", &mut nagle).await.unwrap();
        assert!(!wr.get_ref().as_ref().nodelay().unwrap(), "one write: no syscall for it");
        put(&mut wr, b"second", &mut nagle).await.unwrap();
        assert!(wr.get_ref().as_ref().nodelay().unwrap(), "off from the second write on");
        assert_eq!(nagle, Nagle::Off);
        drop(client);
        // A first write that may take several sends: off before it.
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_rd, wr) = server.into_split();
        let (mut wr, _) = WriteWatch::new(wr);
        let mut nagle = Nagle::Unwritten;
        let large = vec![b'x'; ONE_SEND + 1];
        let mut read = client;
        let reader = tokio::spawn(async move {
            let mut got = vec![0; ONE_SEND + 1];
            tokio::io::AsyncReadExt::read_exact(&mut read, &mut got).await.map(|_| ())
        });
        put(&mut wr, &large, &mut nagle).await.unwrap();
        assert!(wr.get_ref().as_ref().nodelay().unwrap());
        reader.await.unwrap().unwrap();
    }
}
