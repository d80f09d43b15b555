//! Request-time routing, as pure functions over the route model: host and path matching,
//! conditions, whether a rule takes a request, `rewrite-target`, canary
//! selection, CORS origins and listener ACLs. No I/O: the proxy hands in a [`Request`] view.
use std::{borrow::Cow, net::IpAddr};

use crate::model::{
    AclMode,
    l7::{
        ListenerAcl,
        route::{Canary, Condition, Cors, HostMatch, PathMatch, PathValue, Pattern, Rule},
    },
};

/// The parts of a request the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `Host` header or `:authority`, port included if sent.
    pub host: &'a str,
    /// The path, without query.
    pub path: &'a str,
    pub method: &'a str,
    /// Header fields as received (names in any case; `Cookie` fields included).
    pub headers: &'a [(&'a str, &'a str)],
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub source: IpAddr,
}

impl Request<'_> {
    fn cookies(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every value of cookie `name`, in the order sent (a client sends one per path).
    pub fn cookies_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> {
        self.cookies().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Capturing groups of the path regex that matched (`groups[0]`: the whole match; none
/// for a literal match, which then allocates nothing).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    pub groups: Vec<String>,
}

impl Captures {
    fn literal() -> Captures {
        Captures { groups: Vec::new() }
    }

    fn from_regex(p: &Pattern, path: &str) -> Option<Captures> {
        let c = p.regex.captures(path)?;
        let groups = c.iter().map(|m| m.map(|m| m.as_str().to_owned()).unwrap_or_default()).collect();
        Some(Captures { groups })
    }
}

/// A `Host` header (or `:authority`) without its port; `[v6]` without brackets.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
}

/// The host part of a `Host` header: lower case, without port and trailing dot (borrowed
/// when already so: no allocation per rule and request).
pub fn normalize_host(host: &str) -> Cow<'_, str> {
    let h = host_without_port(host).trim_end_matches('.');
    if h.bytes().any(|b| b.is_ascii_uppercase()) { Cow::Owned(h.to_ascii_lowercase()) } else { Cow::Borrowed(h) }
}

/// Whether a (normalized) host matches.
pub fn host_matches(m: &HostMatch, host: &str) -> bool {
    match m {
        HostMatch::Exact(h) => h == host,
        HostMatch::Wildcard(suffix) => {
            host.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
        }
        HostMatch::Regex(p) => p.regex.is_match(host),
    }
}

fn path_matches(m: &PathMatch, path: &str) -> Option<Captures> {
    match m {
        PathMatch::Exact(p) => (p == path).then(Captures::literal),
        PathMatch::Prefix(p) => {
            let ok =
                p == "/" || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            ok.then(Captures::literal)
        }
        PathMatch::Regex(r) => Captures::from_regex(r, path),
    }
}

/// Whether `rule` takes a request for `host` (a `Host` header value) and `path` (without
/// query): its host and path, or its Host and Path conditions, which replace them (every
/// one of them must hold, as every condition of a rule: one of its values each). The
/// captures are the first Path condition's. Other conditions are checked by
/// [`matches_request`].
pub fn matches(rule: &Rule, host: &str, path: &str) -> Option<Captures> {
    let host = normalize_host(host);
    let mut host_conds =
        rule.conditions.iter().filter_map(|c| if let Condition::Host(h) = c { Some(h) } else { None }).peekable();
    let host_ok = match (host_conds.peek().is_some(), &rule.host) {
        (true, _) => host_conds.all(|hs| hs.iter().any(|h| host_matches(h, &host))),
        (false, Some(h)) => host_matches(h, &host),
        (false, None) => true,
    };
    if !host_ok {
        return None;
    }
    let mut caps = None;
    for values in rule.conditions.iter().filter_map(|c| if let Condition::Path(p) = c { Some(p) } else { None }) {
        let c = values.iter().find_map(|v| match v {
            PathValue::Exact(p) => (p == path).then(Captures::literal),
            PathValue::Regex(r) => Captures::from_regex(r, path),
        })?;
        caps.get_or_insert(c);
    }
    match caps {
        Some(c) => Some(c),
        None => path_matches(&rule.path.matcher, path),
    }
}

/// Whether the request meets one condition. Host and Path are evaluated by [`matches`]
/// (they replace the rule's host and path) and count as met here.
pub fn condition_holds(c: &Condition, req: &Request<'_>) -> bool {
    match c {
        Condition::Host(_) | Condition::Path(_) => true,
        Condition::Header { name, values } => {
            req.headers.iter().any(|(n, v)| n.eq_ignore_ascii_case(name) && values.iter().any(|want| want == v))
        }
        Condition::QueryString(pairs) => req
            .query
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .any(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v)),
        Condition::Method(ms) => ms.iter().any(|m| m == req.method),
        Condition::Cookie(pairs) => req.cookies().any(|(k, v)| pairs.iter().any(|(pk, pv)| pk == k && pv == v)),
        Condition::SourceIp(nets) => nets.iter().any(|n| n.contains(&req.source)),
    }
}

/// [`matches`] plus every other condition of the rule (header, query, method, cookie,
/// source IP).
pub fn matches_request(rule: &Rule, req: &Request<'_>) -> Option<Captures> {
    let caps = matches(rule, req.host, req.path)?;
    rule.conditions.iter().all(|c| condition_holds(c, req)).then_some(caps)
}

/// The first rule of `rules` (in the order they are tried) that takes `host` and `path`.
pub fn select<'a>(rules: &'a [Rule], host: &str, path: &str) -> Option<(&'a Rule, Captures)> {
    rules.iter().find_map(|r| matches(r, host, path).map(|c| (r, c)))
}

/// The first rule of `rules` whose host, path and conditions all take `req`.
pub fn select_request<'a>(rules: &'a [Rule], req: &Request<'_>) -> Option<(&'a Rule, Captures)> {
    rules.iter().find_map(|r| matches_request(r, req).map(|c| (r, c)))
}

/// The request `path` after the rule's `rewrite-target` (the path itself when there is
/// none), `caps` being what the rule's match of `path` captured. Groups that did not take
/// part in the match are empty.
pub fn rewrite(rule: &Rule, path: &str, caps: &Captures) -> String {
    rewritten(rule, path, caps).into_owned()
}

/// [`rewrite`], borrowing the request path when the rule has no `rewrite-target`.
pub fn rewritten<'a>(rule: &Rule, path: &'a str, caps: &'a Captures) -> Cow<'a, str> {
    let Some(t) = &rule.rewrite else { return Cow::Borrowed(path) };
    let mut out = String::with_capacity(t.len());
    let mut rest = t.as_str();
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        match rest.as_bytes()[i..] {
            [b'$', b'{', d @ b'1'..=b'3', b'}', ..] => {
                out.push_str(caps.groups.get(usize::from(d - b'0')).map(String::as_str).unwrap_or(""));
                rest = &rest[i + 4..];
            }
            // Not a reference (parsed templates have none): kept as written.
            _ => {
                out.push_str("${");
                rest = &rest[i + 2..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// Whether the rule answers a request on an HTTP (`tls` false) listener of `port` with a
/// redirect to HTTPS 443 (`ssl-redirect` applies to HTTP:80 only).
pub fn redirects_to_https(rule: &Rule, port: u16, tls: bool) -> bool {
    rule.ssl_redirect && !tls && port == 80
}

/// Whether a request goes to the canary, with the precedence Header > Cookie > Weight.
/// `header`/`cookie` look a name up in the request; `roll` is a uniform random number in
/// 0..100 (used only when the weight decides). A weight out of a total other than 100
/// refines `roll` with 10^4 more uniform steps, so that `weight / total` is exact to 10^-6.
pub fn canary_selects<'a>(
    c: &Canary,
    header: impl Fn(&str) -> Option<&'a str>,
    cookie: impl Fn(&str) -> Option<&'a str>,
    roll: u32,
) -> bool {
    if let Some((name, value)) = &c.header
        && header(name) == Some(value.as_str())
    {
        return true;
    }
    if let Some((name, p)) = &c.header_pattern
        && header(name).is_some_and(|v| p.regex.is_match(v))
    {
        return true;
    }
    if let Some(name) = &c.cookie {
        match cookie(name) {
            Some("always") => return true,
            Some("never") => return false,
            _ => {}
        }
    }
    c.weight.is_some_and(|w| {
        if c.weight_total == 100 {
            return roll < w;
        }
        let x = u64::from(roll) * 10_000 + fastrand::u64(0..10_000); // uniform in 0..10^6
        x * u64::from(c.weight_total) < u64::from(w) * 1_000_000
    })
}

/// Whether `origin` (as sent in the `Origin` header) is allowed.
pub fn cors_allows(cors: &Cors, origin: &str) -> bool {
    let origin = origin.to_ascii_lowercase();
    cors.allow_origins.iter().any(|o| {
        if o == "*" || *o == origin {
            return true;
        }
        // `https://*.example.com` allows `https://a.example.com` (one label).
        match o.split_once("://*.") {
            Some((scheme, suffix)) => origin
                .strip_prefix(scheme)
                .and_then(|r| r.strip_prefix("://"))
                .and_then(|r| r.split_once('.'))
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => false,
        }
    })
}

/// Whether `client` may connect (an empty whitelist lets everyone in, as CLB does).
pub fn acl_allows(acl: &ListenerAcl, client: IpAddr) -> bool {
    let listed = acl.entries.iter().any(|n| n.contains(&client));
    match acl.mode {
        AclMode::White => listed || acl.entries.is_empty(),
        AclMode::Black => !listed,
    }
}
