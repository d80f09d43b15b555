//! Hop-by-hop headers: what a proxy removes before forwarding, and how an upgrade
//! (WebSocket, h2c) is recognised.
use http::{HeaderMap, HeaderName, HeaderValue, header};
use smallvec::SmallVec;

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

/// A hop-by-hop name (`te` aside, which [`strip_hop_by_hop`] keeps as `te: trailers`).
pub(super) fn is_hop_by_hop(n: &HeaderName) -> bool {
    HOP_BY_HOP.contains(n)
}

/// Removes hop-by-hop headers, and those named in `Connection`. `te: trailers` stays (gRPC).
pub(super) fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) names present, noting which hop-by-hop ones are (a standard
    // name compares as an enum): most requests carry none, most answers only Connection;
    // only those present are then removed (each removal hashes its name).
    let (mut present, mut te) = (0u32, false);
    for n in h.keys() {
        match HOP_BY_HOP.iter().position(|x| x == n) {
            Some(i) => present |= 1 << i,
            None => te |= n == header::TE,
        }
    }
    if present == 0 && !te {
        return;
    }
    // HOP_BY_HOP[0]: the names Connection lists go too, removed by `&str` (no name made).
    if present & 1 != 0 {
        let mut values = h.get_all(header::CONNECTION).iter();
        let several = values.nth(1).is_some();
        // Inline for the usual one or two values: no allocation per answer.
        let listed: SmallVec<[HeaderValue; 2]> = if several {
            let all = h.get_all(header::CONNECTION).iter().cloned().collect();
            h.remove(header::CONNECTION);
            all
        } else {
            h.remove(header::CONNECTION).into_iter().collect()
        };
        // Never Host: the route matched it, and the backend must get it (a client's
        // `Connection: host` would otherwise hand it the endpoint's own address).
        for n in listed.iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')) {
            let n = n.trim();
            if !n.eq_ignore_ascii_case("host") {
                h.remove(n);
            }
        }
    }
    for (i, n) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if present & (1 << i) != 0 {
            h.remove(n);
        }
    }
    if te && h.get(header::TE).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers")) {
        h.remove(header::TE);
    }
}

/// A request to switch protocols the proxy tunnels (WebSocket and the like). `h2c` alone is
/// not one (RFC 9113 dropped it): a backend that took it would serve an HTTP/2 connection
/// whose requests the proxy never routes nor filters ("h2c smuggling"), so the request goes
/// on as a plain one, its `Upgrade` removed as hop-by-hop.
pub(super) fn is_upgrade(h: &HeaderMap) -> bool {
    h.get(header::UPGRADE)
        .is_some_and(|v| !v.as_bytes().split(|b| *b == b',').all(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c")))
        && h.get_all(header::CONNECTION)
            .iter()
            .any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains("upgrade")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.iter().map(|(n, v)| format!("{n}: {}", v.to_str().unwrap())).collect();
        v.sort();
        v
    }

    #[test]
    fn strips_hop_by_hop_and_what_connection_names() {
        type Fields<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Fields, &[&str])] = &[
            // Nothing hop-by-hop: unchanged.
            (&[("host", "a"), ("accept", "*/*")], &["accept: */*", "host: a"]),
            // An answer's usual Connection.
            (&[("connection", "keep-alive"), ("keep-alive", "timeout=5"), ("server", "x")], &["server: x"]),
            // Names listed in Connection, spaces and case as clients send them.
            (
                &[("connection", "close, X-Secret ,x-other"), ("x-secret", "1"), ("x-other", "2"), ("x-kept", "3")],
                &["x-kept: 3"],
            ),
            // Several Connection fields: every one's names go.
            (&[("connection", "x-a"), ("connection", "x-b"), ("x-a", "1"), ("x-b", "2"), ("x-c", "3")], &["x-c: 3"]),
            // A name that is no header name is ignored.
            (&[("connection", "bad name, ,"), ("x-c", "3")], &["x-c: 3"]),
            // Every fixed hop-by-hop name.
            (
                &[
                    ("proxy-connection", "keep-alive"),
                    ("proxy-authenticate", "Basic"),
                    ("proxy-authorization", "Basic eA=="),
                    ("trailer", "x-t"),
                    ("transfer-encoding", "chunked"),
                    ("upgrade", "websocket"),
                    ("x-c", "3"),
                ],
                &["x-c: 3"],
            ),
            // te: trailers stays (gRPC), any other te goes.
            (&[("te", "trailers")], &["te: trailers"]),
            (&[("te", "TRAILERS")], &["te: TRAILERS"]),
            (&[("te", "gzip"), ("x-c", "3")], &["x-c: 3"]),
        ];
        for (given, kept) in cases {
            let mut h = map(given);
            strip_hop_by_hop(&mut h);
            assert_eq!(names(&h), *kept, "from {given:?}");
        }
    }
}
