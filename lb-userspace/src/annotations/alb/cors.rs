//! CORS: `enable-cors` and the `cors-*` annotations (origins, methods, headers, credentials,
//! preflight max age).
use serde::Serialize;

use super::values::{boolean, dns_name, header_name, list, number, quote};
use super::{Cx, Key, gated};

/// What the proxy answers to cross-origin requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cors {
    /// `["*"]`, or origins `scheme://host[:port]` (host may be `*.domain`).
    pub allow_origins: Vec<String>,
    /// Upper-case method names.
    pub allow_methods: Vec<String>,
    /// `["*"]` or header names.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    pub max_age_s: u32,
}

pub const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub const DEFAULT_HEADERS: &str = "DNT,X-CustomHeader,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Authorization";
const METHODS: [&str; 7] = ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "HEAD"];

/// One origin: `http://` or `https://`, a domain name or top-level wildcard domain (no
/// IP address), an optional port.
fn origin(v: &str) -> Result<String, String> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| format!("origin {} must start with http:// or https://", quote(v)))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    if let Some(p) = port {
        number(p, 1, 65535).map_err(|e| format!("origin {}: port {e}", quote(v)))?;
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() || host.starts_with('[') {
        return Err(format!("origin {}: IP addresses are not supported, use a domain name", quote(v)));
    }
    if host.matches('*').count() > 0 && !host.starts_with("*.") {
        return Err(format!("origin {}: a wildcard is only allowed as the first label (*.example.com)", quote(v)));
    }
    dns_name(host, true).map_err(|e| format!("origin {}: {e}", quote(v)))?;
    Ok(v.to_ascii_lowercase())
}

pub fn origins(v: &str) -> Result<Vec<String>, String> {
    if v == "*" {
        return Ok(vec!["*".into()]);
    }
    list(v)?.into_iter().map(origin).collect()
}

pub fn methods(v: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for m in list(v)? {
        let up = m.to_ascii_uppercase();
        if !METHODS.contains(&up.as_str()) {
            return Err(format!("{} is not one of {}", quote(m), METHODS.join(", ")));
        }
        if !out.contains(&up) {
            out.push(up);
        }
    }
    Ok(out)
}

/// `*` or a comma list of header names (letters, digits, inner `-`/`_`, 32 at most);
/// `allow_empty`: the empty string is the empty list.
pub fn headers(v: &str, allow_empty: bool) -> Result<Vec<String>, String> {
    if v == "*" {
        return Ok(vec!["*".into()]);
    }
    if v.is_empty() && allow_empty {
        return Ok(Vec::new());
    }
    list(v)?.into_iter().map(|h| header_name(h, 32)).collect()
}

pub(super) fn parse(cx: &mut Cx) -> Option<Cors> {
    let on = cx.value_or(Key::EnableCors, false, boolean);
    const GATED: [Key; 6] = [
        Key::CorsAllowOrigin,
        Key::CorsAllowMethods,
        Key::CorsAllowHeaders,
        Key::CorsExposeHeaders,
        Key::CorsAllowCredentials,
        Key::CorsMaxAge,
    ];
    if !on {
        for k in GATED {
            gated(cx, k, Key::EnableCors, false);
        }
        return None;
    }
    Some(Cors {
        allow_origins: cx.value(Key::CorsAllowOrigin, origins).unwrap_or_else(|| vec!["*".into()]),
        allow_methods: cx
            .value(Key::CorsAllowMethods, methods)
            .unwrap_or_else(|| methods(DEFAULT_METHODS).expect("default")),
        allow_headers: cx
            .value(Key::CorsAllowHeaders, |v| headers(v, false))
            .unwrap_or_else(|| headers(DEFAULT_HEADERS, false).expect("default")),
        expose_headers: cx.value(Key::CorsExposeHeaders, |v| headers(v, true)).unwrap_or_default(),
        allow_credentials: cx.value_or(Key::CorsAllowCredentials, true, boolean),
        max_age_s: cx.value_or(Key::CorsMaxAge, 172800, |v| number(v, 0, 172800)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::parse;
    use super::super::testutil::*;
    use super::*;

    fn cors(ann: &[(&str, &str)]) -> (Option<Cors>, Vec<String>) {
        let owned: Vec<(String, &str)> = ann.iter().map(|(s, v)| (k(s), *v)).collect();
        let pairs: Vec<(&str, &str)> = owned.iter().map(|(s, v)| (s.as_str(), *v)).collect();
        let p = parse(&pairs, SIMPLE);
        (
            p.rules[0].cors.clone(),
            errs(&p).into_iter().map(|e| e.trim_start_matches("alb.ingress.kubernetes.io/").to_owned()).collect(),
        )
    }

    #[test]
    fn defaults() {
        let (c, e) = cors(&[("enable-cors", "true")]);
        assert!(e.is_empty());
        let c = c.unwrap();
        assert_eq!(c.allow_origins, vec!["*"]);
        assert_eq!(c.allow_methods, vec!["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]);
        assert_eq!(c.allow_headers.len(), 9);
        assert_eq!(c.allow_headers[1], "X-CustomHeader");
        assert!(c.expose_headers.is_empty());
        assert!(c.allow_credentials);
        assert_eq!(c.max_age_s, 172800);
        assert_eq!(cors(&[]), (None, vec![]));
        assert_eq!(cors(&[("enable-cors", "false")]), (None, vec![]));
    }

    #[test]
    fn reference_example() {
        let (c, e) = cors(&[
            ("enable-cors", "true"),
            ("cors-allow-origin", "https://example.com:4443, http://aliyundoc.com"),
            ("cors-allow-methods", "GET,POST"),
            ("cors-allow-credentials", "true"),
            ("cors-max-age", "600"),
            ("cors-expose-headers", ""),
        ]);
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(c.allow_origins, vec!["https://example.com:4443", "http://aliyundoc.com"]);
        assert_eq!(c.allow_methods, vec!["GET", "POST"]);
        assert_eq!(c.max_age_s, 600);
    }

    #[test]
    fn values_and_ranges() {
        let on = ("enable-cors", "true");
        let (c, e) = cors(&[
            on,
            ("cors-allow-origin", "https://*.example.com"),
            ("cors-allow-methods", "get, head"),
            ("cors-allow-headers", "*"),
            ("cors-expose-headers", "X-A,X_B"),
            ("cors-max-age", "0"),
            ("cors-allow-credentials", "false"),
        ]);
        assert!(e.is_empty(), "{e:?}");
        let c = c.unwrap();
        assert_eq!(
            (c.allow_methods.clone(), c.allow_headers.clone(), c.max_age_s, c.allow_credentials),
            (vec!["GET".to_owned(), "HEAD".into()], vec!["*".to_owned()], 0, false)
        );
        let (c, _) = cors(&[on, ("cors-max-age", "172800")]);
        assert_eq!(c.unwrap().max_age_s, 172800);
        for (key, v, want) in [
            ("cors-max-age", "172801", "cors-max-age: 172801 is outside 0..=172800"),
            (
                "cors-allow-origin",
                "example.com",
                "cors-allow-origin: origin \"example.com\" must start with http:// or https://",
            ),
            (
                "cors-allow-origin",
                "http://10.0.0.1",
                "cors-allow-origin: origin \"http://10.0.0.1\": IP addresses are not supported, use a domain name",
            ),
            (
                "cors-allow-origin",
                "http://a.*.com",
                "cors-allow-origin: origin \"http://a.*.com\": a wildcard is only allowed as the first label (*.example.com)",
            ),
            (
                "cors-allow-origin",
                "http://a.com:0",
                "cors-allow-origin: origin \"http://a.com:0\": port 0 is outside 1..=65535",
            ),
            (
                "cors-allow-methods",
                "GET,TRACE",
                "cors-allow-methods: \"TRACE\" is not one of GET, PUT, POST, DELETE, PATCH, OPTIONS, HEAD",
            ),
            ("cors-allow-headers", "-X", "cors-allow-headers: header name \"-X\" starts or ends with '-' or '_'"),
            ("cors-allow-headers", "", "cors-allow-headers: is empty"),
            (
                "cors-expose-headers",
                "X-Very-Long-Header-Name-Of-33-Chr",
                "cors-expose-headers: header name \"X-Very-Long-Header-Name-Of-33-Chr\" must have 1..=32 characters",
            ),
            ("cors-allow-credentials", "1", "cors-allow-credentials: \"1\" is not one of true, false"),
        ] {
            let (_, e) = cors(&[on, (key, v)]);
            assert_eq!(e, vec![want.to_owned()], "{key}={v}");
        }
        let (c, e) = cors(&[("cors-max-age", "10")]);
        assert!(c.is_none() && e.is_empty(), "a note, CORS off: {c:?} {e:?}");
    }
}
