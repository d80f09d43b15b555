//! HTTP/1.1 on the wire to plain backends, without a connection task of its own: the request
//! head framed as hyper's client frames it (Content-Length kept, chunked for bodies of unknown
//! length), the response head parsed with `httparse` (hyper's own parser, with its limits and
//! its framing rules: RFC 9112 6.3), and response bodies decoded (Content-Length, chunked,
//! close-delimited) from the connection's buffer.
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header, request};
use smallvec::SmallVec;

/// A response head larger than this is refused (hyper's client buffer limit).
pub const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Headers of one response, at most (hyper's default).
const MAX_HEADERS: usize = 100;
/// A chunk-size line or the trailers of a chunked body, at most.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why a backend's answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Malformed {
    #[error("response head: {0}")]
    Head(#[from] httparse::Error),
    #[error("response head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("invalid status code")]
    Status,
    #[error("invalid header")]
    Header,
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("Transfer-Encoding in an HTTP/1.0 response")]
    TransferEncoding10,
    #[error("invalid chunk")]
    Chunk,
}

/// How a request body goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// No body.
    Nothing,
    Length(u64),
    Chunked,
}

/// Writes the request head into `dst` (origin-form target, HTTP/1.1) and says how its body
/// goes: hyper's client rules (`Client::set_length`). `empty`: the body has nothing to send;
/// `exact`: its length when known.
pub fn encode_request(parts: &mut request::Parts, empty: bool, exact: Option<u64>, dst: &mut Vec<u8>) -> Sending {
    let h = &mut parts.headers;
    let sending = if empty {
        h.remove(header::TRANSFER_ENCODING);
        Sending::Nothing
    } else if h.contains_key(header::TRANSFER_ENCODING) {
        if !is_chunked(h) {
            // Repaired as hyper does: chunked becomes the last coding.
            h.append(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        }
        h.remove(header::CONTENT_LENGTH);
        Sending::Chunked
    } else if let Some(n) = content_length(h).ok().flatten() {
        Sending::Length(n)
    } else if let Some(n) = exact {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        Sending::Length(n)
    } else {
        // Whatever the method: a client's GET with a chunked body has one (hyper's client
        // sends no body of unknown length with a GET, right for a library, not for a proxy).
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.remove(header::CONTENT_LENGTH);
        Sending::Chunked
    };
    dst.extend_from_slice(parts.method.as_str().as_bytes());
    dst.push(b' ');
    dst.extend_from_slice(parts.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    dst.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in parts.headers.iter() {
        dst.extend_from_slice(name.as_str().as_bytes());
        dst.extend_from_slice(b": ");
        dst.extend_from_slice(value.as_bytes());
        dst.extend_from_slice(b"\r\n");
    }
    dst.extend_from_slice(b"\r\n");
    sending
}

/// A chunk of a chunked request body: size line, data, CRLF.
pub fn chunk(data: &[u8], dst: &mut Vec<u8>) {
    use std::io::Write;
    let _ = write!(dst, "{:X}\r\n", data.len());
    dst.extend_from_slice(data);
    dst.extend_from_slice(b"\r\n");
}

pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Until the backend closes.
    Close,
}

/// A backend's response head.
pub struct Head {
    pub response: http::Response<()>,
    pub framing: Framing,
    /// The connection may carry another request after this response.
    pub keep_alive: bool,
}

/// The response head at the front of `buf`, taken from it; `None` when more bytes are
/// needed. Informational answers (1xx but 101) are skipped, as hyper's client skips them.
pub fn parse_response(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Malformed> {
    loop {
        // Uninitialised slots and inline spans for a usual head: no 100-slot arrays zeroed
        // per response.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut []);
        let len =
            match httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut res, buf, &mut headers)? {
                httparse::Status::Complete(len) => len,
                httparse::Status::Partial if buf.len() >= MAX_HEAD_BYTES => return Err(Malformed::HeadTooLarge),
                httparse::Status::Partial => return Ok(None),
            };
        if len > MAX_HEAD_BYTES {
            return Err(Malformed::HeadTooLarge);
        }
        let status = StatusCode::from_u16(res.code.unwrap_or(0)).map_err(|_| Malformed::Status)?;
        let version = if res.version == Some(1) { Version::HTTP_11 } else { Version::HTTP_10 };
        let reason = res.reason.filter(|r| Some(*r) != status.canonical_reason()).map(|r| r.as_bytes().to_vec());
        // Offsets into the head, so that values can share its bytes once it is split off.
        let base = buf.as_ptr() as usize;
        let spans: SmallVec<[(usize, usize, usize, usize); 16]> = res
            .headers
            .iter()
            .map(|h| {
                let n = h.name.as_ptr() as usize - base;
                let v = h.value.as_ptr() as usize - base;
                (n, n + h.name.len(), v, v + h.value.len())
            })
            .collect();
        let head = buf.split_to(len).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        // Persistence and framing are read from the hop-by-hop fields, which then stay
        // here with the names Connection lists (RFC 9110 7.6.1): the answer goes on without
        // them, and is not stripped of them afterwards by removals from its map.
        let (mut close, mut keep) = (false, false);
        let mut listed: SmallVec<[&[u8]; 4]> = SmallVec::new();
        let mut te = None;
        for &(n0, n1, v0, v1) in &spans {
            let name = &head[n0..n1];
            if name.eq_ignore_ascii_case(b"connection") {
                for token in head[v0..v1].split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep = true;
                    } else if !token.is_empty() && !listed.iter().any(|t| t.eq_ignore_ascii_case(token)) {
                        // Names to leave behind, each once; more than a head has fields is no
                        // answer a proxy takes.
                        if listed.len() >= MAX_HEADERS {
                            return Err(Malformed::Header);
                        }
                        listed.push(token);
                    }
                }
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                te = Some(&head[v0..v1]);
            }
        }
        let keep_alive = !close && (version == Version::HTTP_11 || keep);
        let framing = framing(status, version, method, te, &spans, &head)?;
        let mut map = super::spare_maps::take(spans.len());
        // A head with both Transfer-Encoding and Content-Length: the backend's connection is
        // not used again (a backend that sent both may frame its next answers otherwise).
        let mut conflicting = false;
        for &(n0, n1, v0, v1) in &spans {
            let name = HeaderName::from_bytes(&head[n0..n1]).map_err(|_| Malformed::Header)?;
            // RFC 9112 6.3: Transfer-Encoding overrides Content-Length, and an intermediary
            // removes it before passing the message on (a client trusting it would frame the
            // body differently: response splitting).
            if te.is_some() && name == header::CONTENT_LENGTH {
                conflicting = true;
                continue;
            }
            if super::headers::is_hop_by_hop(&name)
                || listed.iter().any(|t| t.eq_ignore_ascii_case(name.as_str().as_bytes()))
            {
                continue;
            }
            let value = HeaderValue::from_maybe_shared(head.slice(v0..v1)).map_err(|_| Malformed::Header)?;
            map.append(name, value);
        }
        let mut response = http::Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = map;
        if let Some(reason) = reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r).ok()) {
            response.extensions_mut().insert(reason);
        }
        let upgrade = status == StatusCode::SWITCHING_PROTOCOLS || (*method == Method::CONNECT && status.is_success());
        return Ok(Some(Head {
            response,
            framing,
            keep_alive: keep_alive && !upgrade && !conflicting && framing != Framing::Close,
        }));
    }
}

/// RFC 9112 6.3, as hyper's client applies it (`Client::decoder`). `te`: the last
/// Transfer-Encoding value; `spans`: where each field's name and value are in `head`.
fn framing(
    status: StatusCode,
    version: Version,
    method: &Method,
    te: Option<&[u8]>,
    spans: &[(usize, usize, usize, usize)],
    head: &[u8],
) -> Result<Framing, Malformed> {
    if status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Empty);
    }
    if *method == Method::HEAD || (*method == Method::CONNECT && status.is_success()) {
        return Ok(Framing::Empty);
    }
    if let Some(te) = te {
        if version == Version::HTTP_10 {
            return Err(Malformed::TransferEncoding10);
        }
        return Ok(if ends_chunked(te) { Framing::Chunked } else { Framing::Close });
    }
    let lengths = spans
        .iter()
        .filter(|&&(n0, n1, ..)| head[n0..n1].eq_ignore_ascii_case(b"content-length"))
        .map(|&(.., v0, v1)| &head[v0..v1]);
    Ok(match lengths_agree(lengths)? {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Every `Content-Length` value (lists included) must be the same number.
pub fn content_length(h: &HeaderMap) -> Result<Option<u64>, Malformed> {
    lengths_agree(h.get_all(header::CONTENT_LENGTH).iter().map(HeaderValue::as_bytes))
}

/// The one number all these `Content-Length` values (lists included) say.
fn lengths_agree<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<Option<u64>, Malformed> {
    let mut found = None;
    for v in values {
        for part in v.split(|b| *b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
                return Err(Malformed::ContentLength);
            }
            let n = part
                .iter()
                .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
                .ok_or(Malformed::ContentLength)?;
            if found.is_some_and(|f| f != n) {
                return Err(Malformed::ContentLength);
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// A `Connection` value with the `close` token.
pub(crate) fn asks_close(v: &[u8]) -> bool {
    v.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// `chunked` is the last coding of the last `Transfer-Encoding` line (a text one).
fn is_chunked(h: &HeaderMap) -> bool {
    h.get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .is_some_and(|v| v.to_str().is_ok() && ends_chunked(v.as_bytes()))
}

/// `chunked` is the last coding of this `Transfer-Encoding` value.
fn ends_chunked(te: &[u8]) -> bool {
    te.rsplit(|b| *b == b',').next().unwrap_or_default().trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// Where a response body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoding {
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    Close,
    Done,
}

impl From<Framing> for Decoding {
    fn from(f: Framing) -> Decoding {
        match f {
            Framing::Empty | Framing::Length(0) => Decoding::Done,
            Framing::Length(n) => Decoding::Length(n),
            Framing::Chunked => Decoding::ChunkSize,
            Framing::Close => Decoding::Close,
        }
    }
}

/// What decoding the buffered bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    Data(Bytes),
    /// More bytes are needed.
    More,
    Done,
}

impl Decoding {
    /// Decodes from the front of `buf` (bytes of a close-delimited body are taken as they are).
    pub fn step(&mut self, buf: &mut BytesMut) -> Result<Step, Malformed> {
        loop {
            match *self {
                Decoding::Done => return Ok(Step::Done),
                Decoding::Length(n) | Decoding::ChunkData(n) if !buf.is_empty() => {
                    let take = (buf.len() as u64).min(n);
                    let data = buf.split_to(take as usize).freeze();
                    *self = match *self {
                        Decoding::Length(_) if take == n => Decoding::Done,
                        Decoding::Length(_) => Decoding::Length(n - take),
                        _ if take == n => Decoding::ChunkEnd,
                        _ => Decoding::ChunkData(n - take),
                    };
                    return Ok(Step::Data(data));
                }
                Decoding::Close if !buf.is_empty() => return Ok(Step::Data(buf.split().freeze())),
                Decoding::Length(_) | Decoding::ChunkData(_) | Decoding::Close => return Ok(Step::More),
                Decoding::ChunkSize => {
                    let Some(line) = line(buf, MAX_CHUNK_LINE)? else { return Ok(Step::More) };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 { Decoding::Trailers } else { Decoding::ChunkData(size) };
                }
                Decoding::ChunkEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Malformed::Chunk);
                    }
                    buf.advance(2);
                    *self = Decoding::ChunkSize;
                }
                Decoding::Trailers => {
                    // Trailers are read and dropped (hyper's server side writes none for
                    // HTTP/1.1); the whole block, up to its empty line, within the limit.
                    let mut at = 0;
                    while let Some(e) = find(&buf[at..], b"\r\n") {
                        if buf[at..at + e].contains(&b'\n') {
                            return Err(Malformed::Chunk);
                        }
                        at += e + 2;
                        if e == 0 {
                            buf.advance(at);
                            *self = Decoding::Done;
                            return Ok(Step::Done);
                        }
                    }
                    return if buf.len() > MAX_TRAILER_BYTES { Err(Malformed::Chunk) } else { Ok(Step::More) };
                }
            }
        }
    }

    /// The backend closed the connection: true at the end of a close-delimited body (or
    /// after the end), false when the body was cut short.
    pub fn at_eof(&mut self) -> bool {
        let whole = matches!(self, Decoding::Close | Decoding::Done);
        *self = Decoding::Done;
        whole
    }
}

/// One CRLF-terminated line from the front of `buf` (without its CRLF); a bare LF in it is
/// an error.
fn line(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, Malformed> {
    match find(buf, b"\r\n") {
        Some(e) => {
            let l = buf.split_to(e).freeze();
            buf.advance(2);
            if l.contains(&b'\n') || l.contains(&b'\r') {
                return Err(Malformed::Chunk);
            }
            Ok(Some(l))
        }
        None if buf.len() > max || buf.contains(&b'\n') => Err(Malformed::Chunk),
        None => Ok(None),
    }
}

/// A chunk-size line: hex digits (at most 16), then optional whitespace and extensions.
fn chunk_size(line: &[u8]) -> Result<u64, Malformed> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(Malformed::Chunk);
    }
    let rest = &line[digits..];
    let rest_ok = rest.iter().find(|b| **b != b' ' && **b != b'\t').is_none_or(|b| *b == b';');
    if !rest_ok {
        return Err(Malformed::Chunk);
    }
    let s = std::str::from_utf8(&line[..digits]).map_err(|_| Malformed::Chunk)?;
    u64::from_str_radix(s, 16).map_err(|_| Malformed::Chunk)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, method: Method) -> Result<Option<Head>, Malformed> {
        parse_response(&mut BytesMut::from(raw), &method)
    }

    fn decode(framing: Framing, raw: &[u8]) -> Result<(Vec<u8>, Step), Malformed> {
        let mut d = Decoding::from(framing);
        let mut buf = BytesMut::from(raw);
        let mut out = Vec::new();
        loop {
            match d.step(&mut buf)? {
                Step::Data(b) => out.extend_from_slice(&b),
                s => return Ok((out, s)),
            }
        }
    }

    #[test]
    fn every_header_up_to_the_limit_is_kept_in_order() {
        let fields = |n: usize| (0..n).map(|i| format!("X-H{i}: v{i}\r\n")).collect::<String>();
        // Past the inline room for a usual head (16): all kept, in order, values intact.
        let raw = format!("HTTP/1.1 200 OK\r\n{}Content-Length: 0\r\n\r\n", fields(40));
        let h = head(&raw, Method::GET).unwrap().unwrap();
        let got: Vec<String> =
            h.response.headers().iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
        let want: Vec<String> =
            (0..40).map(|i| format!("x-h{i}: v{i}")).chain(["content-length: 0".to_string()]).collect();
        assert_eq!(got, want);
        // More than MAX_HEADERS fields: refused.
        let raw = format!("HTTP/1.1 200 OK\r\n{}\r\n", fields(MAX_HEADERS + 1));
        assert!(head(&raw, Method::GET).is_err());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", Method::GET).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", Method::GET);
        let h = h.unwrap().unwrap();
        // Chunked, the Content-Length not passed on, and the connection not used again.
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert!(h.response.headers().get(header::CONTENT_LENGTH).is_none());
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", Method::GET).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Method::GET).unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", Method::HEAD).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", Method::GET).unwrap().unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", Method::GET);
        assert!(h.unwrap().unwrap().keep_alive);
        let h = head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n", Method::GET);
        assert!(!h.unwrap().unwrap().keep_alive);
        let h = head("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", Method::POST).unwrap().unwrap();
        assert_eq!((h.response.status(), h.framing), (StatusCode::NO_CONTENT, Framing::Empty));
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: 5", Method::GET).unwrap().is_none());
    }

    #[test]
    fn hop_by_hop_fields_and_the_names_connection_lists_stay_behind() {
        let raw = "HTTP/1.1 200 OK\r\nX-Private: 1\r\nConnection: keep-alive, X-Private\r\nKeep-Alive: timeout=5\r\n\
                   Proxy-Connection: x\r\nTrailer: y\r\nUpgrade: z\r\nContent-Length: 3\r\nVary: a\r\n\r\n";
        let h = head(raw, Method::GET).unwrap().unwrap();
        let names: Vec<&str> = h.response.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["content-length", "vary"]);
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(3), true));
        // Transfer-Encoding frames the body and goes, with the Content-Length it overrides.
        let raw =
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\nConnection: Close\r\n\r\n";
        let h = head(raw, Method::GET).unwrap().unwrap();
        assert!(h.response.headers().is_empty());
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        // Two Connection lines: close in either ends the connection.
        let raw = "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert!(!head(raw, Method::GET).unwrap().unwrap().keep_alive);
        // Empty and repeated names cost nothing; more distinct names than a head has fields
        // are refused.
        let commas = format!(
            "HTTP/1.1 200 OK\r\nConnection: {}x-a, X-A\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n",
            ",".repeat(5000)
        );
        let h = head(&commas, Method::GET).unwrap().unwrap();
        assert_eq!(h.response.headers().keys().map(|n| n.as_str()).collect::<Vec<_>>(), ["content-length"]);
        let names: Vec<String> = (0..=MAX_HEADERS).map(|i| format!("x-{i}")).collect();
        let many = format!("HTTP/1.1 200 OK\r\nConnection: {}\r\nContent-Length: 0\r\n\r\n", names.join(","));
        assert!(matches!(head(&many, Method::GET), Err(Malformed::Header)));
    }

    #[test]
    fn conflicting_or_invalid_lengths_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            assert!(head(bad, Method::GET).is_err(), "{bad:?}");
        }
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", Method::GET).unwrap().unwrap();
        assert_eq!(h.framing, Framing::Length(5));
    }

    #[test]
    fn chunked_bodies_are_decoded_strictly() {
        let (body, end) = decode(Framing::Chunked, b"5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nA: b\r\n\r\n").unwrap();
        assert_eq!((body.as_slice(), end), (&b"hello world"[..], Step::Done));
        let (body, end) = decode(Framing::Chunked, b"5\r\nhel").unwrap();
        assert_eq!((body.as_slice(), end), (&b"hel"[..], Step::More));
        for bad in [&b"5\nhello\r\n0\r\n\r\n"[..], b"5\r\nhelloXX0\r\n\r\n", b"z\r\n", b"11111111111111111\r\n"] {
            assert!(decode(Framing::Chunked, bad).is_err(), "{bad:?}");
        }
        let (body, end) = decode(Framing::Length(3), b"abcdef").unwrap();
        assert_eq!((body.as_slice(), end), (&b"abc"[..], Step::Done));
    }

    #[test]
    fn request_bodies_are_framed_as_hyper_frames_them() {
        let req = |m: Method, h: &[(&str, &str)]| {
            let mut r = http::Request::builder().method(m).uri("/a?b");
            for (k, v) in h {
                r = r.header(*k, *v);
            }
            r.body(()).unwrap().into_parts().0
        };
        let mut out = Vec::new();
        let mut p = req(Method::GET, &[("host", "a.test")]);
        assert_eq!(encode_request(&mut p, true, Some(0), &mut out), Sending::Nothing);
        assert_eq!(out, b"GET /a?b HTTP/1.1\r\nhost: a.test\r\n\r\n");
        let mut p = req(Method::POST, &[("content-length", "4")]);
        assert_eq!(encode_request(&mut p, false, None, &mut Vec::new()), Sending::Length(4));
        let mut p = req(Method::POST, &[]);
        assert_eq!(encode_request(&mut p, false, None, &mut Vec::new()), Sending::Chunked);
        assert_eq!(p.headers["transfer-encoding"], "chunked");
        let mut p = req(Method::GET, &[]);
        assert_eq!(encode_request(&mut p, false, None, &mut Vec::new()), Sending::Chunked);
        let mut out = Vec::new();
        chunk(b"hello world!", &mut out);
        assert_eq!(out, b"C\r\nhello world!\r\n");
    }
}
