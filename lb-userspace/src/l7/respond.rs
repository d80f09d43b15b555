//! Responses the proxy makes itself: errors (502/503/504 with a short text body),
//! redirects, fixed responses and CORS preflights.
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

use crate::model::l7::route::{Cors, FixedResponse, Redirect};

/// Any error of a body the proxy relays or makes.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// A body with nothing in it; boxing it allocates nothing (it has no size).
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// `502`, `503`, `504` and friends: the status line's words, then why.
pub fn error(status: StatusCode, why: &str) -> Response<Body> {
    text(status, format!("{} {}: {why}\n", status.as_u16(), status.canonical_reason().unwrap_or("")))
}

pub fn redirect(code: u16, location: &str) -> Response<Body> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub fn fixed(f: &FixedResponse) -> Response<Body> {
    let mut r = Response::new(full(f.content.clone()));
    *r.status_mut() = StatusCode::from_u16(f.code).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&f.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// What a request looked like, for building a redirect target.
pub struct Origin<'a> {
    pub scheme: &'a str,
    /// Host without port.
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub query: Option<&'a str>,
}

/// `scheme://host[:port]path[?query]`, the port left out when it is the scheme's default.
pub fn location(scheme: &str, host: &str, port: u16, path: &str, query: Option<&str>) -> String {
    let default = match scheme {
        "http" => 80,
        "https" => 443,
        _ => 0,
    };
    let mut s = format!("{scheme}://{}{path}", authority(host, port, default));
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        s.push('?');
        s.push_str(q);
    }
    s
}

/// `host[:port]`, an IPv6 literal bracketed, the port left out when it is `default`.
pub fn authority(host: &str, port: u16, default: u16) -> String {
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
    if port == default { host } else { format!("{host}:{port}") }
}

/// The `Location` of a Redirect action: every part not set keeps the request's value.
pub fn redirect_location(r: &Redirect, o: &Origin<'_>) -> String {
    let scheme = r.protocol.as_deref().map(str::to_ascii_lowercase).unwrap_or_else(|| o.scheme.to_owned());
    let port = r.port.unwrap_or(if r.protocol.is_some() && scheme != o.scheme {
        if scheme == "https" { 443 } else { 80 }
    } else {
        o.port
    });
    location(
        &scheme,
        r.host.as_deref().unwrap_or(o.host),
        port,
        r.path.as_deref().unwrap_or(o.path),
        r.query.as_deref().or(o.query),
    )
}

/// The answer to a CORS preflight of an allowed origin.
pub fn preflight(cors: &Cors, origin: &str) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    put(h, "access-control-allow-origin", origin);
    put(h, "access-control-allow-methods", &cors.allow_methods.join(", "));
    put(h, "access-control-allow-headers", &cors.allow_headers.join(", "));
    put(h, "access-control-max-age", &cors.max_age_s.to_string());
    if cors.allow_credentials {
        put(h, "access-control-allow-credentials", "true");
    }
    vary_origin(h);
    r
}

/// CORS headers on an answer to an allowed origin.
pub fn cors_headers(cors: &Cors, origin: &str, h: &mut http::HeaderMap) {
    put(h, "access-control-allow-origin", origin);
    if !cors.expose_headers.is_empty() {
        put(h, "access-control-expose-headers", &cors.expose_headers.join(", "));
    }
    if cors.allow_credentials {
        put(h, "access-control-allow-credentials", "true");
    }
    vary_origin(h);
}

/// The allowed origin is the request's own: a shared cache must not give this answer to
/// another origin (the Fetch standard, CORS protocol and HTTP caches).
fn vary_origin(h: &mut http::HeaderMap) {
    h.append(http::header::VARY, HeaderValue::from_static("Origin"));
}

fn put(h: &mut http::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_leave_out_default_ports() {
        assert_eq!(location("https", "a.example.com", 443, "/x", Some("q=1")), "https://a.example.com/x?q=1");
        assert_eq!(location("http", "a", 8080, "/", None), "http://a:8080/");
        assert_eq!(location("http", "::1", 80, "/", Some("")), "http://[::1]/");
        let r = Redirect {
            protocol: Some("HTTPS".into()),
            host: None,
            port: None,
            path: Some("/new".into()),
            query: None,
            code: 301,
        };
        let o = Origin { scheme: "http", host: "shop.example.com", port: 80, path: "/old", query: Some("a=b") };
        assert_eq!(redirect_location(&r, &o), "https://shop.example.com/new?a=b");
    }
}
