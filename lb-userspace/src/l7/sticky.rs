//! Sticky sessions: the endpoint a client's cookie names (`Insert`: the proxy's own
//! `SERVERID`; `Server`: the backend's cookie prefixed with the endpoint id) and the cookies
//! set or rewritten on the backend's answer.
use std::net::SocketAddr;

use http::{HeaderMap, HeaderValue, Response, header};

use super::{
    balance::{endpoint_id, hash64},
    matching,
    respond::Body,
    router::CompiledRoute,
};
use crate::model::l7::route::{PathMatch, StickySession};

/// Name of the cookie the proxy inserts for `sticky-session-type: insert`.
pub const STICKY_COOKIE: &str = "SERVERID";
/// Name of the cookie that keeps a client on one Service of a forward group
/// (`ServerGroupStickySession`).
pub const GROUP_COOKIE: &str = "SERVERGROUPID";

/// The endpoint a sticky cookie names, if the rule is sticky.
pub(super) fn sticky_endpoint(route: &CompiledRoute, req: &matching::Request<'_>) -> Option<SocketAddr> {
    let named = |id: &str| {
        route.route.upstreams.iter().flat_map(|u| &u.endpoints).map(|e| e.addr).find(|a| sticky_id(*a) == id)
    };
    match route.route.rule.backend.sticky.as_ref()? {
        // A client holds a SERVERID per sticky route path of a host (see [`cookie_path`]) and
        // sends every one whose path covers the request's: the one naming this route's endpoint.
        StickySession::Insert { .. } => req.cookies_named(STICKY_COOKIE).find_map(named),
        StickySession::Server { cookie } => named(req.cookie(cookie)?.split_once('~')?.0),
    }
}

/// The `Path` of an inserted cookie: the route's own (a prefix or an exact path; a regex
/// route's is `/`), so that the routes of one host, each sticky on its own backends, do not
/// overwrite each other's cookie at every turn between them (RFC 6265 path matching is the
/// router's hierarchical prefix matching).
fn cookie_path(route: &CompiledRoute) -> &str {
    let path = match &route.route.rule.path.matcher {
        PathMatch::Exact(p) | PathMatch::Prefix(p) => p.as_str(),
        PathMatch::Regex(_) => "/",
    };
    let usable = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    if usable { path } else { "/" }
}

/// The cookie value naming an endpoint.
pub fn sticky_id(addr: SocketAddr) -> String {
    format!("{:016x}", hash64(&[&endpoint_id(addr)]))
}

/// `NAME=<id>~value` → `NAME=value` in the Cookie headers (server cookie stickiness). As
/// bytes: a cookie that is not ASCII (obs-text) is passed on, not dropped.
pub(super) fn strip_cookie_prefix(h: &mut HeaderMap, name: &str) {
    let values: Vec<HeaderValue> = h
        .get_all(header::COOKIE)
        .iter()
        .map(|v| HeaderValue::from_bytes(&strip_in(v.as_bytes(), name.as_bytes())).unwrap_or_else(|_| v.clone()))
        .collect();
    h.remove(header::COOKIE);
    for v in values {
        h.append(header::COOKIE, v);
    }
}

/// One Cookie value with the `<id>~` of cookie `name` taken off, its pairs joined by `; `.
fn strip_in(v: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    for (i, kv) in v.split(|b| *b == b';').enumerate() {
        let kv = kv.trim_ascii();
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        match kv.iter().position(|b| *b == b'=') {
            Some(eq) if &kv[..eq] == name => {
                let val = &kv[eq + 1..];
                out.extend_from_slice(&kv[..=eq]);
                out.extend_from_slice(val.iter().position(|b| *b == b'~').map_or(val, |t| &val[t + 1..]));
            }
            _ => out.extend_from_slice(kv),
        }
    }
    out
}

/// Sets or prefixes the sticky cookie on the answer of endpoint `answered`.
pub(super) fn set_sticky(route: &CompiledRoute, answered: SocketAddr, resp: &mut Response<Body>) {
    // Most rules are not sticky: no id to make for them.
    let Some(sticky) = &route.route.rule.backend.sticky else { return };
    let id = sticky_id(answered);
    match sticky {
        StickySession::Insert { timeout_s } => {
            let v = format!("{STICKY_COOKIE}={id}; Max-Age={timeout_s}; Path={}; HttpOnly", cookie_path(route));
            if let Ok(v) = HeaderValue::from_str(&v) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        StickySession::Server { cookie } => {
            let prefix = format!("{cookie}=");
            // As bytes: a Set-Cookie that is not ASCII is passed on, not dropped.
            let rewritten: Vec<HeaderValue> = resp
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| match v.as_bytes().strip_prefix(prefix.as_bytes()) {
                    Some(rest) => {
                        let out = [prefix.as_bytes(), id.as_bytes(), b"~", rest].concat();
                        HeaderValue::from_bytes(&out).unwrap_or_else(|_| v.clone())
                    }
                    None => v.clone(),
                })
                .collect();
            resp.headers_mut().remove(header::SET_COOKIE);
            for v in rewritten {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cookies that are not ASCII (obs-text) reach the backend, the prefix taken off.
    #[test]
    fn server_cookie_prefixes_are_stripped_from_any_bytes() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_bytes(b"name=caf\xc3\xa9;  sid=0011~abc").unwrap());
        h.append(header::COOKIE, HeaderValue::from_static("sid=plain"));
        strip_cookie_prefix(&mut h, "sid");
        let got: Vec<&[u8]> = h.get_all(header::COOKIE).iter().map(HeaderValue::as_bytes).collect();
        assert_eq!(got, [&b"name=caf\xc3\xa9; sid=abc"[..], b"sid=plain"]);
    }
}
