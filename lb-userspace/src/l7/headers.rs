//! Hop-by-hop headers: what a proxy removes before forwarding, and how an upgrade
//! (WebSocket, h2c) is recognised.
use http::{HeaderMap, HeaderName, header};

/// Names made once (removing by `&str` would parse the name on every request).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, and those named in `Connection`. `te: trailers` stays (gRPC).
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) names present instead of a hashed lookup per hop-by-hop name:
    // most requests and answers carry none of them.
    if !h.keys().any(|n| *n == header::TE || HOP_BY_HOP.contains(n)) {
        return;
    }
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
    if h.get(header::TE).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers")) {
        h.remove(header::TE);
    }
}

pub(super) fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade")))
}
