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

/// `NAME=<id>~value` → `NAME=value` in the Cookie headers (server cookie stickiness).
pub(super) fn strip_cookie_prefix(h: &mut HeaderMap, name: &str) {
    let values: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(|kv| match kv.trim().split_once('=') {
                    Some((k, val)) if k == name => format!("{k}={}", val.split_once('~').map_or(val, |(_, rest)| rest)),
                    _ => kv.trim().to_owned(),
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .collect();
    h.remove(header::COOKIE);
    for v in values {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.append(header::COOKIE, v);
        }
    }
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
            let rewritten: Vec<HeaderValue> = resp
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .filter_map(|v| {
                    let s = v.to_str().ok()?;
                    let out = match s.strip_prefix(&prefix) {
                        Some(rest) => format!("{prefix}{id}~{rest}"),
                        None => s.to_owned(),
                    };
                    HeaderValue::from_str(&out).ok()
                })
                .collect();
            resp.headers_mut().remove(header::SET_COOKIE);
            for v in rewritten {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
    }
}
