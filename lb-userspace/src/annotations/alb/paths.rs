//! Host and path matchers as written in rules (Exact / Prefix / ImplementationSpecific,
//! `use-regex`, `~` / `~*` flags) and the path settings of an Ingress: `use-regex`,
//! `rewrite-target` with `${1}`..`${3}`, `ssl-redirect`.
use serde::Serialize;

use super::listeners::{ListenPort, ListenProtocol};
use super::values::{Pattern, boolean, dns_name, quote};
use super::{Cx, Key, PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathType {
    Exact,
    Prefix,
    ImplementationSpecific,
}

/// How a request path is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// Equal (Exact, and ImplementationSpecific which ALB treats as exact).
    Exact(String),
    /// Equal, or followed by `/` (hierarchical; the rule's trailing `/` is ignored).
    Prefix(String),
    /// A regex found anywhere in the path ("contains"; `^` anchors it).
    Regex(Pattern),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulePath {
    pub path_type: PathType,
    /// As written (`/` for an ImplementationSpecific path left empty).
    pub path: String,
    pub matcher: PathMatch,
}

/// How a request host is compared (case-insensitively, without the port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: exactly one label before `example.com` (stored without `*.`).
    Wildcard(String),
    /// `~` / `~*` regex (Host conditions only).
    Regex(Pattern),
}

/// A host as written in a rule (`regex`: a Host condition, where `~`/`~*` are allowed).
pub fn host_match(v: &str, regex: bool) -> Result<HostMatch, String> {
    if regex && let Some(p) = Pattern::flagged(v) {
        return p.map(HostMatch::Regex);
    }
    let h = dns_name(v, true)?;
    Ok(match h.strip_prefix("*.") {
        Some(suffix) => HostMatch::Wildcard(suffix.to_owned()),
        None => HostMatch::Exact(h),
    })
}

/// The path-related annotations of an Ingress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `use-regex` is present (whatever its value: "regardless of whether its value is true
    /// or false, regex matching is enabled").
    pub use_regex: bool,
    pub rewrite: Option<String>,
    pub ssl_redirect: bool,
}

impl Settings {
    /// Regex paths are on: `use-regex`, or `rewrite-target` (which enables it).
    pub fn regex_on(&self) -> bool {
        self.use_regex || self.rewrite.is_some()
    }
}

/// `rewrite-target`: an absolute path (a query may follow `?`), `${1}`, `${2}`, `${3}`
/// for capturing groups. Returns the highest group referenced with the template.
pub fn rewrite_target(v: &str) -> Result<(String, usize), String> {
    if !v.starts_with('/') {
        return Err(format!("{} must start with /", quote(v)));
    }
    if let Some(c) = v.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '#') {
        return Err(format!("{} contains {c:?}", quote(v)));
    }
    let mut max = 0;
    let mut rest = v;
    while let Some(i) = rest.find('$') {
        let after = &rest[i..];
        let n = match after.as_bytes() {
            [b'$', b'{', d @ b'1'..=b'3', b'}', ..] => usize::from(d - b'0'),
            _ => {
                let shown: String = after.chars().take(4).collect();
                return Err(format!("{shown:?}... is not a capturing group reference; use ${{1}}, ${{2}} or ${{3}}"));
            }
        };
        max = max.max(n);
        rest = &after[4..];
    }
    Ok((v.to_owned(), max))
}

/// `use-regex`, `rewrite-target`, `ssl-redirect`.
pub(super) fn parse_settings(cx: &mut Cx, listeners: &[ListenPort]) -> Settings {
    let use_regex = cx.has(Key::UseRegex);
    cx.value(Key::UseRegex, boolean);
    let rewrite = cx.value(Key::RewriteTarget, rewrite_target).map(|(t, _)| t);
    let ssl_redirect = cx.value(Key::SslRedirect, boolean).unwrap_or(false);
    // The HTTPS:443 the redirect goes to must be in the AlbConfig (checked with it), not in
    // this Ingress: one Ingress may redirect port 80 while another serves 443.
    let http = |l: &&ListenPort| l.protocol == ListenProtocol::Http;
    if ssl_redirect && !listeners.iter().filter(http).any(|l| l.port == 80) {
        if listeners.iter().any(|l| http(&l)) {
            // Its rules would be served in clear on another HTTP port, not redirected.
            cx.error(
                Key::SslRedirect,
                "applies only to HTTP rules on listening port 80, and this Ingress's HTTP listeners are on other ports: their rules would not be redirected",
            );
        } else {
            cx.not_applicable(
                Key::SslRedirect,
                "has no effect: it applies only to HTTP rules on listening port 80, and listen-ports has no HTTP listener",
            );
        }
    }
    Settings { use_regex, rewrite, ssl_redirect }
}

/// The characters the reference says a path can hold only with `use-regex`.
const SPECIAL: &[char] = &['%', '#', ';', '!', '(', ')', '[', ']', '^', ',', '"', '\\'];

pub(super) fn rule_path(at: &str, path: Option<&str>, path_type: &str, s: &Settings) -> Result<RulePath, String> {
    let path_type = match path_type {
        "Exact" => PathType::Exact,
        "Prefix" => PathType::Prefix,
        "ImplementationSpecific" => PathType::ImplementationSpecific,
        other => return Err(format!("{at}.pathType: {other:?} is not one of Exact, Prefix, ImplementationSpecific")),
    };
    let path = match (path.filter(|p| !p.is_empty()), path_type) {
        (Some(p), _) => p.to_owned(),
        (None, PathType::ImplementationSpecific) => "/".to_owned(),
        (None, _) => return Err(format!("{at}.path: pathType {path_type:?} needs a non-empty absolute path")),
    };
    if !path.starts_with('/') {
        return Err(format!("{at}.path: {} is not an absolute path (it must start with /)", quote(&path)));
    }
    if s.rewrite.is_some() && path_type != PathType::Prefix {
        return Err(format!("{at}.pathType: {PREFIX}rewrite-target needs pathType Prefix, not {path_type:?}"));
    }
    if s.regex_on() && path_type == PathType::Prefix {
        let p = Pattern::new(&path, false).map_err(|e| format!("{at}.path: {e}"))?;
        return Ok(RulePath { path_type, path, matcher: PathMatch::Regex(p) });
    }
    if path.contains('*') && path_type != PathType::ImplementationSpecific {
        return Err(format!(
            "{at}.path: {} contains '*': pathType {path_type:?} takes no wildcard (it matches the path literally); for a pattern use {PREFIX}use-regex with pathType Prefix",
            quote(&path)
        ));
    }
    if let Some(c) = path.chars().find(|c| SPECIAL.contains(c) || c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{at}.path: {} contains {c:?}; paths with special characters need {PREFIX}use-regex and pathType Prefix",
            quote(&path)
        ));
    }
    let matcher = match path_type {
        PathType::Prefix => {
            let trimmed = path.trim_end_matches('/');
            PathMatch::Prefix(if trimmed.is_empty() { "/".to_owned() } else { trimmed.to_owned() })
        }
        _ => PathMatch::Exact(path.clone()),
    };
    Ok(RulePath { path_type, path, matcher })
}
