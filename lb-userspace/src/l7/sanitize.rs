//! What a request must be before it is routed, and what of it a backend may see: one Host
//! that agrees with the request target (absolute-form or `:authority`), a path normalised as
//! nginx does (a path that climbs above the root is refused), and forwarding headers only
//! from peers the listener trusts.
use std::{borrow::Cow, net::IpAddr};

use http::{HeaderMap, Uri, Version, header, uri::Authority};

/// Why a request is answered `400` before it is routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the request path is not an absolute path")]
    NotAbsolute,
    #[error("the request path climbs above the root")]
    AboveRoot,
    #[error("the request has more than one Host header")]
    ManyHosts,
    #[error("an HTTP/1.1 request needs a Host header")]
    NoHost,
    #[error("the Host header is not a host")]
    BadHost,
    #[error("the Host header names another host than the request target")]
    HostMismatch,
}

/// A request path as nginx normalises it before matching: percent-encoded unreserved
/// characters decoded, duplicate slashes merged, `.` and `..` segments resolved. A `..` that
/// would climb above the root is refused, as nginx refuses it.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, Refused> {
    if !raw.starts_with('/') {
        return Err(Refused::NotAbsolute);
    }
    // Most paths are already normal (no escapes, no empty, `.` or `..` segments): borrowed.
    if !raw.contains('%') && !raw.contains("//") && raw.split('/').all(|s| s != "." && s != "..") {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode_unreserved(raw);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" | "." => trailing = i == last,
            ".." => {
                out.pop().ok_or(Refused::AboveRoot)?;
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut path = format!("/{}", out.join("/"));
    if trailing && !out.is_empty() {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

/// `%41` → `A` for the unreserved characters (ALPHA, DIGIT, `-`, `.`, `_`, `~`); every other
/// escape is kept as written (decoding `%2F` would change the path's segments).
fn decode_unreserved(raw: &str) -> String {
    let b = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(c) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
            && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
        {
            out.push(char::from(c));
            i += 3;
            continue;
        }
        let ch = raw[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

/// The host a request is for, with its port if one was sent: the request target's authority
/// (HTTP/1.1 absolute-form, HTTP/2 `:authority`) or else the `Host` header. Refused: more
/// than one `Host`, a `Host` that is not a host (`user@`, a path, bytes that are not text),
/// a `Host` naming another host or port than the target's authority (RFC 9113 8.3.1 lets a
/// server treat that as malformed; nginx and Envoy answer 400), and an HTTP/1.1 request
/// without any (RFC 9112 3.2). `tls`: the connection's scheme, for default ports.
pub fn request_host<'a>(uri: &'a Uri, version: Version, headers: &'a HeaderMap, tls: bool) -> Result<&'a str, Refused> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refused::ManyHosts);
    }
    let host = match host {
        Some(v) => Some(v.to_str().map_err(|_| Refused::BadHost)?),
        None => None,
    };
    let given = host.filter(|h| !h.is_empty());
    // Userinfo is no part of an http(s) authority (RFC 9110 4.2.4): `http://x@a.test/` would
    // route on `x@a.test`.
    if given.is_some_and(|h| h.contains('@')) || uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(Refused::BadHost);
    }
    // Most requests are origin-form with a plain `name[:port]` Host: nothing to compare it
    // with, and no parse (it copies the value) needed to know it is a host.
    if uri.authority().is_none()
        && let Some(h) = given
        && plain_host(h)
    {
        return Ok(h);
    }
    let parsed = match given {
        Some(h) => Some(h.parse::<Authority>().map_err(|_| Refused::BadHost)?),
        None => None,
    };
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        _ if tls => 443,
        _ => 80,
    };
    match (uri.authority(), parsed) {
        (Some(target), Some(h)) if !same_authority(target, &h, default_port) => Err(Refused::HostMismatch),
        (Some(target), _) => Ok(target.as_str()),
        // The value as sent (the parse kept it as it was).
        (None, Some(_)) => Ok(given.unwrap_or_default()),
        (None, None) if version == Version::HTTP_11 && host.is_none() => Err(Refused::NoHost),
        (None, None) => Ok(""),
    }
}

/// `name` or `name:port` with letters, digits, `-` and `.` in the name and up to five digits
/// in the port: a host an authority parse takes as it is.
fn plain_host(h: &str) -> bool {
    let (name, port) = h.split_once(':').unwrap_or((h, "1"));
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && (1..=5).contains(&port.len())
        && port.bytes().all(|b| b.is_ascii_digit())
}

/// Same host (case and a trailing dot aside) and same port (an absent port is the scheme's).
fn same_authority(a: &Authority, b: &Authority, default_port: u16) -> bool {
    let name = |x: &Authority| x.host().trim_end_matches('.').to_ascii_lowercase();
    name(a) == name(b) && a.port_u16().unwrap_or(default_port) == b.port_u16().unwrap_or(default_port)
}

/// Headers through which a client could claim another address, scheme, port or host than
/// the proxy saw. The listener sets its own; a client's copy reaches the backend only when
/// the client is a trusted proxy.
const FORWARDING: &[&str] = &[
    "forwarded",
    "x-forwarded-for",
    "x-real-ip",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-host",
    "x-forwarded-client-srcport",
];

/// Whether `name` is one of the forwarding headers, also when spelt with `_` for `-`
/// (`X_Forwarded_For`): CGI-style backends (PHP, WSGI) read both spellings as one variable.
pub fn is_forwarding(name: &str) -> bool {
    FORWARDING.iter().any(|f| {
        f.len() == name.len()
            && f.bytes().zip(name.bytes()).all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
    })
}

/// Removes every forwarding header a client sent, unless `client` is within `trusted`.
/// Returns whether they were kept.
pub fn forwarding_from(h: &mut HeaderMap, client: IpAddr, trusted: &[ipnet::IpNet]) -> bool {
    if trusted.iter().any(|n| n.contains(&client)) {
        return true;
    }
    let names: Vec<header::HeaderName> = h.keys().filter(|n| is_forwarding(n.as_str())).cloned().collect();
    for n in names {
        h.remove(n);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_as_nginx_does() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//a///b", "/a/b"),
            ("/a/./b/.", "/a/b/"),
            ("/a/../b", "/b"),
            ("/a/..", "/"),
            ("/%61%2D%7e", "/a-~"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a/%2e%2E/x", "/x"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/%zz%4", "/%zz%4"),
            ("/é/../x", "/x"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
        for (raw, why) in [
            ("a/b", Refused::NotAbsolute),
            ("*", Refused::NotAbsolute),
            ("/..", Refused::AboveRoot),
            ("/../../etc", Refused::AboveRoot),
            ("/a/../../etc", Refused::AboveRoot),
            ("/%2e%2E/x", Refused::AboveRoot),
        ] {
            assert_eq!(normalize_path(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn the_host_agrees_with_the_target() {
        let h = |vals: &[&str]| {
            let mut m = HeaderMap::new();
            for v in vals {
                m.append(header::HOST, v.parse().unwrap());
            }
            m
        };
        let abs: Uri = "http://a.test/x".parse().unwrap();
        let origin: Uri = "/x".parse().unwrap();
        let v11 = Version::HTTP_11;
        assert_eq!(request_host(&abs, v11, &h(&["a.test"]), false), Ok("a.test"));
        assert_eq!(request_host(&abs, v11, &h(&["A.Test.:80"]), false), Ok("a.test"));
        assert_eq!(request_host(&abs, v11, &h(&[]), false), Ok("a.test"));
        assert_eq!(request_host(&abs, v11, &h(&["b.test"]), false), Err(Refused::HostMismatch));
        assert_eq!(request_host(&abs, v11, &h(&["a.test:8080"]), false), Err(Refused::HostMismatch));
        assert_eq!(request_host(&origin, v11, &h(&["a.test:8080"]), false), Ok("a.test:8080"));
        assert_eq!(request_host(&origin, v11, &h(&["a.test", "b.test"]), false), Err(Refused::ManyHosts));
        assert_eq!(request_host(&origin, v11, &h(&[]), false), Err(Refused::NoHost));
        assert_eq!(request_host(&origin, Version::HTTP_10, &h(&[]), false), Ok(""));
        // A plain name[:port] is taken without a parse; anything else is parsed as before.
        assert_eq!(request_host(&origin, v11, &h(&["A.test"]), false), Ok("A.test"));
        assert_eq!(request_host(&origin, v11, &h(&["[::1]:80"]), false), Ok("[::1]:80"));
        assert_eq!(request_host(&origin, v11, &h(&["a.test:"]), false), Ok("a.test:"));
        assert_eq!(request_host(&origin, v11, &h(&["a b"]), false), Err(Refused::BadHost));
        assert_eq!(request_host(&origin, v11, &h(&["a:1:2"]), false), Err(Refused::BadHost));
        assert_eq!(request_host(&origin, v11, &h(&["u@a.test"]), false), Err(Refused::BadHost));
        assert_eq!(request_host(&origin, v11, &h(&["a.test/x"]), false), Err(Refused::BadHost));
        let h2: Uri = "https://a.test/x".parse().unwrap();
        assert_eq!(request_host(&h2, Version::HTTP_2, &h(&["a.test:443"]), true), Ok("a.test"));
    }

    #[test]
    fn forwarding_headers_in_any_spelling() {
        for n in ["x-forwarded-for", "X_Forwarded_For", "forwarded", "x_real_ip", "X-Forwarded-Host"] {
            assert!(is_forwarding(n), "{n}");
        }
        for n in ["x-forwarded", "x-forwarded-fo", "xforwardedfor", "x-forwarded-for2"] {
            assert!(!is_forwarding(n), "{n}");
        }
    }
}
