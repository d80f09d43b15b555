//! Response compression (`gzipEnabled` of ALB listeners, on by default as on ALB and CLB):
//! text-like answers of at least 1 KiB are gzip-compressed on the fly when the client
//! accepts gzip and the backend did not encode them already.
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
    resp.status().is_success()
        && resp.status() != http::StatusCode::NO_CONTENT
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
    parts.headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts.headers.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Response::from_parts(parts, StreamBody::new(out).boxed())
}
