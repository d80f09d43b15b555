//! Response compression (`gzipEnabled` of ALB listeners, on by default as on ALB and CLB):
//! text-like answers of at least 1 KiB are gzip-compressed on the fly when the client
//! accepts gzip and the backend did not encode them already, nor forbid it (`Cache-Control:
//! no-transform`); not a partial answer (206: its `Content-Range` counts the bytes sent). A
//! strong `ETag` becomes weak, as nginx makes it: the bytes changed, not the resource.
use futures::TryStreamExt;
use http::{HeaderMap, HeaderValue, Response, header};
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;

use super::respond::{Body, BoxError};

/// Content types worth compressing (ALB's list: text, JSON, JavaScript, XML).
const TYPES: [&str; 6] = [
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "application/x-javascript",
    "image/svg+xml",
];
/// Smaller answers are sent as they are.
const MIN_BYTES: u64 = 1024;

/// Whether the request's `Accept-Encoding` takes gzip (and does not refuse it with q=0).
pub fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|item| {
        let mut parts = item.trim().split(';');
        let coding = parts.next().unwrap_or("").trim();
        let q0 = parts.any(|p| matches!(p.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !q0
    })
}

fn compressible(resp: &Response<Body>) -> bool {
    let h = resp.headers();
    let ctype = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let small = h
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n < MIN_BYTES);
    let no_transform = h
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("no-transform"));
    resp.status().is_success()
        && resp.status() != http::StatusCode::NO_CONTENT
        && resp.status() != http::StatusCode::PARTIAL_CONTENT
        && !no_transform
        && !h.contains_key(header::CONTENT_ENCODING)
        && !small
        && TYPES.iter().any(|t| ctype.starts_with(t))
}

/// `resp` gzip-compressed when it is worth it.
pub fn compress(resp: Response<Body>) -> Response<Body> {
    if !compressible(&resp) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let data = BodyStream::new(body)
        .try_filter_map(|frame| async move { Ok(frame.into_data().ok()) })
        .map_err(std::io::Error::other);
    let encoder = async_compression::tokio::bufread::GzipEncoder::new(tokio_util::io::StreamReader::new(data));
    let out = tokio_util::io::ReaderStream::new(encoder).map_ok(Frame::data).map_err(BoxError::from);
    parts.headers.remove(header::CONTENT_LENGTH);
    // Byte ranges of the compressed answer are not ranges of the resource a later Range
    // request gets (uncompressed: partial answers pass as sent), as nginx's gzip drops it.
    parts.headers.remove(header::ACCEPT_RANGES);
    if let Some(tag) = parts.headers.get(header::ETAG).and_then(|v| v.to_str().ok())
        && tag.starts_with('"')
        && let Ok(weak) = HeaderValue::from_str(&format!("W/{tag}"))
    {
        parts.headers.insert(header::ETAG, weak);
    }
    parts.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Response::from_parts(parts, StreamBody::new(out).boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(status: u16, headers: &[(&str, &str)]) -> Response<Body> {
        let mut r = Response::builder().status(status).header(header::CONTENT_TYPE, "text/plain");
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        r.body(super::super::respond::full(bytes::Bytes::from(vec![b'x'; 4096]))).unwrap()
    }

    fn encoded(r: &Response<Body>) -> bool {
        r.headers().contains_key(header::CONTENT_ENCODING)
    }

    #[test]
    fn partial_and_no_transform_answers_stay_as_sent_and_etags_turn_weak() {
        assert!(!encoded(&compress(text(206, &[("content-range", "bytes 0-4095/10000")]))), "206");
        assert!(!encoded(&compress(text(200, &[("cache-control", "public, no-transform")]))), "no-transform");
        let r = compress(text(200, &[("etag", "\"v1\""), ("accept-ranges", "bytes")]));
        assert!(encoded(&r));
        assert_eq!(r.headers()[header::ETAG], "W/\"v1\"");
        assert!(r.headers().get(header::ACCEPT_RANGES).is_none(), "ranges of the compressed bytes are not offered");
        let weak = compress(text(200, &[("etag", "W/\"v1\"")]));
        assert_eq!(weak.headers()[header::ETAG], "W/\"v1\"");
    }
}
