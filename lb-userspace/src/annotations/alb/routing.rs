//! Rules: host and path matching (Exact / Prefix / ImplementationSpecific, `use-regex`,
//! `~` / `~*`), `rewrite-target` with `${1}`..`${3}`, `ssl-redirect`, rule ordering, and
//! the pure functions the L7 proxy reuses: [`matches`], [`rewrite`], [`select`].
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{IngressBackend, IngressSpec};
use serde::Serialize;

use super::actions::{Action, ActionSet, Filter, ServicePort, ServiceRef, USE_ANNOTATION, WeightedService};
use super::backend::BackendSettings;
use super::canary::Canary;
use super::conditions::{Condition, PathValue, Request};
use super::cors::Cors;
use super::listeners::{ListenPort, ListenProtocol};
use super::values::{Pattern, boolean, dns_name, quote};
use super::{Ctx, PREFIX};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PathType {
    Exact,
    Prefix,
    ImplementationSpecific,
}

/// How a request path is compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
pub enum HostMatch {
    Exact(String),
    /// `*.example.com`: exactly one label before `example.com` (stored without `*.`).
    Wildcard(String),
    /// `~` / `~*` regex (Host conditions only).
    Regex(Pattern),
}

impl HostMatch {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(suffix) => {
                host.split_once('.').is_some_and(|(first, rest)| !first.is_empty() && rest == suffix)
            }
            HostMatch::Regex(p) => p.regex.is_match(host),
        }
    }
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

/// One routing rule: a host/path of an Ingress with everything that applies to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub namespace: String,
    pub ingress: String,
    /// Position in `spec.rules` and in its `http.paths` (the default backend: `usize::MAX`).
    pub rule_index: usize,
    pub path_index: usize,
    /// `spec.defaultBackend`: tried after every other rule.
    pub default_backend: bool,
    /// `order`: lower first.
    pub order: u32,
    /// `None`: any host.
    pub host: Option<HostMatch>,
    pub path: RulePath,
    /// The backend as written (`use-annotation` ports hand over to `actions.<name>`).
    pub service: ServiceRef,
    pub conditions: Vec<Condition>,
    pub action: Action,
    pub filters: Vec<Filter>,
    /// `rewrite-target` template (`${1}`..`${3}`).
    pub rewrite: Option<String>,
    /// Requests on the HTTP listener of port 80 are redirected to HTTPS 443.
    pub ssl_redirect: bool,
    pub canary: Option<Canary>,
    pub backend: BackendSettings,
    pub cors: Option<Cors>,
    pub qps_limit: Option<u32>,
}

impl Rule {
    /// Whether this rule answers on `listener` with a redirect to HTTPS 443.
    pub fn redirects_to_https(&self, listener: &ListenPort) -> bool {
        self.ssl_redirect && listener.protocol == ListenProtocol::Http && listener.port == 80
    }
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

/// Capturing groups of the path regex that matched (`groups[0]`: the whole match), and
/// the request path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captures {
    pub path: String,
    pub groups: Vec<String>,
}

impl Captures {
    fn literal(path: &str) -> Captures {
        Captures { path: path.to_owned(), groups: Vec::new() }
    }

    fn from_regex(p: &Pattern, path: &str) -> Option<Captures> {
        let c = p.regex.captures(path)?;
        let groups = c.iter().map(|m| m.map(|m| m.as_str().to_owned()).unwrap_or_default()).collect();
        Some(Captures { path: path.to_owned(), groups })
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

/// The request path after the rule's `rewrite-target` (the path itself when there is none).
/// Groups that did not take part in the match are empty.
pub fn rewrite(rule: &Rule, caps: &Captures) -> String {
    let Some(t) = &rule.rewrite else { return caps.path.clone() };
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
    out
}

/// A `Host` header (or `:authority`) without its port; `[v6]` without brackets.
pub fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split_once(']').map_or(host, |(h, _)| h);
    }
    host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
}

/// The host part of a `Host` header: lower case, without port and trailing dot.
fn normalize_host(host: &str) -> String {
    host_without_port(host).trim_end_matches('.').to_ascii_lowercase()
}

fn path_matches(m: &PathMatch, path: &str) -> Option<Captures> {
    match m {
        PathMatch::Exact(p) => (p == path).then(|| Captures::literal(path)),
        PathMatch::Prefix(p) => {
            let ok =
                p == "/" || path.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            ok.then(|| Captures::literal(path))
        }
        PathMatch::Regex(r) => Captures::from_regex(r, path),
    }
}

/// Whether `rule` takes a request for `host` (a `Host` header value) and `path` (without
/// query): its host and path, or its Host and Path conditions, which replace them.
/// Other conditions are checked by [`matches_request`].
pub fn matches(rule: &Rule, host: &str, path: &str) -> Option<Captures> {
    let host = normalize_host(host);
    let host_cond = rule.conditions.iter().find_map(|c| if let Condition::Host(h) = c { Some(h) } else { None });
    let host_ok = match (host_cond, &rule.host) {
        (Some(hs), _) => hs.iter().any(|h| h.matches(&host)),
        (None, Some(h)) => h.matches(&host),
        (None, None) => true,
    };
    if !host_ok {
        return None;
    }
    let path_cond = rule.conditions.iter().find_map(|c| if let Condition::Path(p) = c { Some(p) } else { None });
    match path_cond {
        Some(values) => values.iter().find_map(|v| match v {
            PathValue::Exact(p) => (p == path).then(|| Captures::literal(path)),
            PathValue::Regex(r) => Captures::from_regex(r, path),
        }),
        None => path_matches(&rule.path.matcher, path),
    }
}

/// [`matches`] plus every other condition of the rule (header, query, method, cookie,
/// source IP).
pub fn matches_request(rule: &Rule, req: &Request<'_>) -> Option<Captures> {
    let caps = matches(rule, req.host, req.path)?;
    rule.conditions.iter().all(|c| c.matches_request(req)).then_some(caps)
}

/// Orders rules as ALB does: `order` (lower first), then Ingresses by namespace, then
/// name (lexicographically smaller first), then the position of the rule and path in the
/// Ingress. Default backends come last. Path type and length play no part: of `/` and
/// `/aaa` in one Ingress, the one listed first wins (the reference's "multiple rule paths"
/// table).
pub fn sort_rules(rules: &mut [Rule]) {
    rules.sort_by(|a, b| {
        (a.default_backend, a.order, &a.namespace, &a.ingress, a.rule_index, a.path_index).cmp(&(
            b.default_backend,
            b.order,
            &b.namespace,
            &b.ingress,
            b.rule_index,
            b.path_index,
        ))
    });
}

/// The first rule of `rules` (sorted by [`sort_rules`]) that takes `host` and `path`.
pub fn select<'a>(rules: &'a [Rule], host: &str, path: &str) -> Option<(&'a Rule, Captures)> {
    rules.iter().find_map(|r| matches(r, host, path).map(|c| (r, c)))
}

/// The first rule of `rules` (sorted) whose host, path and conditions all take `req`.
pub fn select_request<'a>(rules: &'a [Rule], req: &Request<'_>) -> Option<(&'a Rule, Captures)> {
    rules.iter().find_map(|r| matches_request(r, req).map(|c| (r, c)))
}

/// `use-regex`, `rewrite-target`, `ssl-redirect`.
pub(super) fn parse_settings(ctx: &mut Ctx, listeners: &[ListenPort]) -> Settings {
    let use_regex = ctx.has("use-regex");
    ctx.parse("use-regex", boolean);
    let rewrite = ctx.parse("rewrite-target", rewrite_target).map(|(t, _)| t);
    let ssl_redirect = ctx.parse("ssl-redirect", boolean).unwrap_or(false);
    if ssl_redirect {
        if !listeners.iter().any(|l| l.protocol == ListenProtocol::Http && l.port == 80) {
            ctx.err("ssl-redirect", "applies only to HTTP rules on listening port 80; listen-ports has no HTTP:80");
        }
        if !listeners.iter().any(|l| l.protocol == ListenProtocol::Https && l.port == 443) {
            ctx.err(
                "ssl-redirect",
                "needs an HTTPS listener on port 443 (in listen-ports, or spec.tls for the default)",
            );
        }
    }
    Settings { use_regex, rewrite, ssl_redirect }
}

/// What every rule of one Ingress shares.
pub(super) struct Shared {
    pub namespace: String,
    pub ingress: String,
    pub order: u32,
    pub backend: BackendSettings,
    pub cors: Option<Cors>,
    pub qps_limit: Option<u32>,
    pub canary: Option<Canary>,
    pub settings: Settings,
}

/// The characters the reference says a path can hold only with `use-regex`.
const SPECIAL: &[char] = &['%', '#', ';', '!', '(', ')', '[', ']', '^', ',', '"', '\\'];

fn rule_path(at: &str, path: Option<&str>, path_type: &str, s: &Settings) -> Result<RulePath, String> {
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

fn service_ref(at: &str, b: &IngressBackend) -> Result<ServiceRef, String> {
    let Some(svc) = &b.service else {
        return Err(format!("{at}: only Service backends are supported (not resource backends)"));
    };
    let port = match &svc.port {
        Some(p) => match (p.number, &p.name) {
            (Some(n), None) if (1..=65535).contains(&n) => ServicePort::Number(n as u16),
            (None, Some(n)) if !n.is_empty() => ServicePort::Name(n.clone()),
            _ => return Err(format!("{at}.service.port: needs exactly one of number (1..=65535) or name")),
        },
        None => return Err(format!("{at}.service.port is missing")),
    };
    Ok(ServiceRef { name: svc.name.clone(), port })
}

struct RuleInput<'a> {
    at: String,
    rule_index: usize,
    path_index: usize,
    default_backend: bool,
    host: Option<HostMatch>,
    path: Option<&'a str>,
    path_type: &'a str,
    backend: &'a IngressBackend,
}

fn build_one(
    input: RuleInput<'_>,
    shared: &Shared,
    actions: &BTreeMap<String, ActionSet>,
    conditions: &BTreeMap<String, Vec<Condition>>,
    ctx: &mut Ctx,
) -> Option<Rule> {
    let at = &input.at;
    let path = match rule_path(at, input.path, input.path_type, &shared.settings) {
        Ok(p) => p,
        Err(e) => {
            let (field, reason) = e.split_once(": ").expect("field: reason");
            ctx.field_err(field, reason);
            return None;
        }
    };
    if let (Some(t), PathMatch::Regex(p)) = (&shared.settings.rewrite, &path.matcher) {
        let (_, max) = rewrite_target(t).expect("validated");
        if max > p.groups() {
            ctx.err(
                "rewrite-target",
                format!(
                    "references ${{{max}}} but path {} of {at} has {} capturing group(s)",
                    quote(&path.path),
                    p.groups()
                ),
            );
            return None;
        }
    }
    let service = match service_ref(&format!("{at}.backend"), input.backend) {
        Ok(s) => s,
        Err(e) => {
            let (field, reason) = e.split_once(": ").unwrap_or((at, &e));
            ctx.field_err(field.to_owned(), reason.to_owned());
            return None;
        }
    };
    let set = actions.get(&service.name).cloned().unwrap_or_default();
    let use_annotation = service.port == ServicePort::Name(USE_ANNOTATION.to_owned());
    let action = match (set.terminal, use_annotation) {
        (Some(a), true) => a,
        (None, false) => {
            Action::Forward { groups: vec![WeightedService { service: service.clone(), weight: 100 }], sticky: None }
        }
        (None, true) => {
            ctx.field_err(
                format!("{at}.backend"),
                format!("port {USE_ANNOTATION} needs {PREFIX}actions.{} with a ForwardGroup, Redirect or FixedResponse action", service.name),
            );
            return None;
        }
        (Some(a), false) => {
            let kind = match a {
                Action::Forward { .. } => "ForwardGroup",
                Action::Redirect(_) => "Redirect",
                Action::FixedResponse(_) => "FixedResponse",
            };
            ctx.err(
                &format!("actions.{}", service.name),
                format!("{kind} needs the rule's backend port to be name: {USE_ANNOTATION} ({at})"),
            );
            return None;
        }
    };
    Some(Rule {
        namespace: shared.namespace.clone(),
        ingress: shared.ingress.clone(),
        rule_index: input.rule_index,
        path_index: input.path_index,
        default_backend: input.default_backend,
        order: shared.order,
        host: input.host,
        path,
        conditions: conditions.get(&service.name).cloned().unwrap_or_default(),
        service,
        action,
        filters: set.filters,
        rewrite: shared.settings.rewrite.clone(),
        ssl_redirect: shared.settings.ssl_redirect,
        canary: shared.canary.clone(),
        backend: shared.backend.clone(),
        cors: shared.cors.clone(),
        qps_limit: shared.qps_limit,
    })
}

/// One rule per `spec.rules[].http.paths[]`, and one for `spec.defaultBackend`; every
/// `actions.<name>` / `conditions.<name>` must name a backend Service of the rules.
pub(super) fn build_rules(
    spec: Option<&IngressSpec>,
    shared: &Shared,
    actions: &BTreeMap<String, ActionSet>,
    conditions: &BTreeMap<String, Vec<Condition>>,
    ctx: &mut Ctx,
) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let default = spec.and_then(|s| s.default_backend.as_ref());
    for (i, r) in spec.and_then(|s| s.rules.as_ref()).into_iter().flatten().enumerate() {
        let host = match r.host.as_deref().filter(|h| !h.is_empty()).map(|h| host_match(h, false)).transpose() {
            Ok(h) => h,
            Err(e) => {
                ctx.field_err(format!("spec.rules[{i}].host"), e);
                continue;
            }
        };
        let paths = r.http.as_ref().map(|h| h.paths.as_slice()).unwrap_or_default();
        if paths.is_empty() {
            match default {
                Some(b) => {
                    let input = RuleInput {
                        at: format!("spec.rules[{i}]"),
                        rule_index: i,
                        path_index: 0,
                        default_backend: false,
                        host,
                        path: Some("/"),
                        path_type: "Prefix",
                        backend: b,
                    };
                    names.extend(b.service.as_ref().map(|s| s.name.clone()));
                    out.extend(build_one(input, shared, actions, conditions, ctx));
                }
                None => {
                    ctx.field_err(format!("spec.rules[{i}].http"), "has no paths and the Ingress has no defaultBackend")
                }
            }
            continue;
        }
        for (j, p) in paths.iter().enumerate() {
            names.extend(p.backend.service.as_ref().map(|s| s.name.clone()));
            let input = RuleInput {
                at: format!("spec.rules[{i}].http.paths[{j}]"),
                rule_index: i,
                path_index: j,
                default_backend: false,
                host: host.clone(),
                path: p.path.as_deref(),
                path_type: &p.path_type,
                backend: &p.backend,
            };
            out.extend(build_one(input, shared, actions, conditions, ctx));
        }
    }
    if let Some(b) = default {
        names.extend(b.service.as_ref().map(|s| s.name.clone()));
        let input = RuleInput {
            at: "spec.defaultBackend".into(),
            rule_index: usize::MAX,
            path_index: 0,
            default_backend: true,
            host: None,
            path: Some("/"),
            path_type: "Prefix",
            backend: b,
        };
        // The default backend takes every path: a literal prefix `/` even under use-regex.
        let plain = Shared {
            settings: Settings { use_regex: false, rewrite: None, ..shared.settings.clone() },
            ..clone_shared(shared)
        };
        out.extend(build_one(input, &plain, actions, conditions, ctx));
    }
    for family in ["actions.", "conditions."] {
        let keyed: Vec<String> =
            if family == "actions." { actions.keys().cloned().collect() } else { conditions.keys().cloned().collect() };
        for svc in keyed {
            if !names.contains(&svc) {
                ctx.err(&format!("{family}{svc}"), format!("no backend in spec.rules is the Service {svc}"));
            }
        }
    }
    out
}

fn clone_shared(s: &Shared) -> Shared {
    Shared {
        namespace: s.namespace.clone(),
        ingress: s.ingress.clone(),
        order: s.order,
        backend: s.backend.clone(),
        cors: s.cors.clone(),
        qps_limit: s.qps_limit,
        canary: s.canary.clone(),
        settings: s.settings.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn one_path(path: &str, path_type: &str) -> String {
        format!(
            "rules:\n- host: demo.alb.ingress.top\n  http:\n    paths:\n    - path: '{path}'\n      pathType: {path_type}\n      backend: {{service: {{name: svc, port: {{number: 80}}}}}}\n"
        )
    }

    #[test]
    fn path_types_and_validation() {
        let p = parse(&[], &one_path("/foo/", "Prefix"));
        assert_eq!(p.rules[0].path.matcher, PathMatch::Prefix("/foo".into()));
        let p = parse(&[], &one_path("/foo/", "Exact"));
        assert_eq!(p.rules[0].path.matcher, PathMatch::Exact("/foo/".into()));
        let spec = "rules:\n- http:\n    paths:\n    - pathType: ImplementationSpecific\n      backend: {service: {name: svc, port: {number: 80}}}\n";
        let p = parse(&[], spec);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!(
            p.rules[0].path,
            RulePath {
                path_type: PathType::ImplementationSpecific,
                path: "/".into(),
                matcher: PathMatch::Exact("/".into())
            }
        );
        assert_eq!(p.rules[0].host, None);
        let spec = "rules:\n- http:\n    paths:\n    - pathType: Prefix\n      backend: {service: {name: svc, port: {number: 80}}}\n";
        assert_eq!(
            errs(&parse(&[], spec)),
            vec!["spec.rules[0].http.paths[0].path: pathType Prefix needs a non-empty absolute path"]
        );
        assert_eq!(
            errs(&parse(&[], &one_path("foo", "Exact"))),
            vec!["spec.rules[0].http.paths[0].path: \"foo\" is not an absolute path (it must start with /)"]
        );
        assert_eq!(
            errs(&parse(&[], &one_path("/foo", "Regex"))),
            vec!["spec.rules[0].http.paths[0].pathType: \"Regex\" is not one of Exact, Prefix, ImplementationSpecific"]
        );
    }

    #[test]
    fn special_characters_need_use_regex_and_prefix() {
        for c in ['%', '#', ';', '!', '(', ')', '[', ']', '^', ',', '"', '\\'] {
            let path = format!("/a{c}b").replace('\'', "''");
            let p = parse(&[], &one_path(&path, "Prefix"));
            assert_eq!(p.errors.len(), 1, "{c}");
            assert!(
                p.errors[0].reason.contains(
                    "paths with special characters need alb.ingress.kubernetes.io/use-regex and pathType Prefix"
                ),
                "{c}: {:?}",
                p.errors
            );
        }
        let p = parse(&[(&k("use-regex"), "true")], &one_path("/a(b|c)", "Prefix"));
        assert!(p.is_ok(), "{:?}", p.errors);
        // use-regex applies only to Prefix paths: an Exact path stays literal.
        let p = parse(&[(&k("use-regex"), "true")], &one_path("/a(b)", "Exact"));
        assert_eq!(p.errors.len(), 1);
        let p = parse(&[(&k("use-regex"), "true")], &one_path("/a.b", "Exact"));
        assert_eq!(p.rules[0].path.matcher, PathMatch::Exact("/a.b".into()));
    }

    #[test]
    fn use_regex_is_on_whatever_its_value() {
        for v in ["true", "false"] {
            let p = parse(&[(&k("use-regex"), v)], &one_path("/api/.*", "Prefix"));
            assert!(p.is_ok(), "{:?}", p.errors);
            assert!(matches!(p.rules[0].path.matcher, PathMatch::Regex(_)), "{v}");
        }
        let p = parse(&[(&k("use-regex"), "yes")], &one_path("/api", "Prefix"));
        assert_eq!(errs(&p), vec![format!("{}: \"yes\" is not one of true, false", k("use-regex"))]);
    }

    #[test]
    fn bad_regex_reports_the_regex_error() {
        let p = parse(&[(&k("use-regex"), "true")], &one_path("/a(b", "Prefix"));
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].annotation, "spec.rules[0].http.paths[0].path");
        assert!(
            p.errors[0].reason.starts_with("\"/a(b\" is not a valid regular expression: regex parse error"),
            "{}",
            p.errors[0].reason
        );
        assert!(p.errors[0].reason.contains("unclosed group"));
    }

    #[test]
    fn rewrite_target_templates() {
        assert_eq!(rewrite_target("/${2}"), Ok(("/${2}".into(), 2)));
        assert_eq!(rewrite_target("/${2}?code=${3}"), Ok(("/${2}?code=${3}".into(), 3)));
        assert_eq!(rewrite_target("/app-c/${2}"), Ok(("/app-c/${2}".into(), 2)));
        assert_eq!(rewrite_target("/static"), Ok(("/static".into(), 0)));
        assert_eq!(
            rewrite_target("/${4}"),
            Err("\"${4}\"... is not a capturing group reference; use ${1}, ${2} or ${3}".into())
        );
        assert_eq!(
            rewrite_target("/${0}"),
            Err("\"${0}\"... is not a capturing group reference; use ${1}, ${2} or ${3}".into())
        );
        assert_eq!(
            rewrite_target("/$1"),
            Err("\"$1\"... is not a capturing group reference; use ${1}, ${2} or ${3}".into())
        );
        assert_eq!(rewrite_target("${1}"), Err("\"${1}\" must start with /".into()));
        assert_eq!(rewrite_target("/a b"), Err("\"/a b\" contains ' '".into()));
    }

    #[test]
    fn rewrite_target_cross_rules() {
        // Enables regex by itself.
        let p = parse(&[(&k("rewrite-target"), "/${1}")], &one_path("/a/(.*)", "Prefix"));
        assert!(p.is_ok(), "{:?}", p.errors);
        assert!(matches!(p.rules[0].path.matcher, PathMatch::Regex(_)));
        let p = parse(&[(&k("rewrite-target"), "/${2}")], &one_path("/a/(.*)", "Prefix"));
        assert_eq!(
            errs(&p),
            vec![format!(
                "{}: references ${{2}} but path \"/a/(.*)\" of spec.rules[0].http.paths[0] has 1 capturing group(s)",
                k("rewrite-target")
            )]
        );
        let p = parse(&[(&k("rewrite-target"), "/x")], &one_path("/a", "Exact"));
        assert_eq!(
            errs(&p),
            vec![format!(
                "spec.rules[0].http.paths[0].pathType: {PREFIX}rewrite-target needs pathType Prefix, not Exact"
            )]
        );
        let p = parse(&[(&k("rewrite-target"), "/x")], &one_path("/a", "ImplementationSpecific"));
        assert_eq!(p.errors.len(), 1);
    }

    #[test]
    fn ssl_redirect_needs_http_80_and_https_443() {
        let tls = format!("tls:\n- hosts: [demo.alb.ingress.top]\n  secretName: s\n{SIMPLE}");
        let p = parse(&[(&k("ssl-redirect"), "true")], &tls);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert!(p.rules[0].ssl_redirect);
        let http80 = ListenPort { protocol: ListenProtocol::Http, port: 80 };
        let https = ListenPort { protocol: ListenProtocol::Https, port: 443 };
        assert!(p.rules[0].redirects_to_https(&http80) && !p.rules[0].redirects_to_https(&https));
        let p = parse(&[(&k("ssl-redirect"), "true")], SIMPLE);
        assert_eq!(
            errs(&p),
            vec![format!(
                "{}: needs an HTTPS listener on port 443 (in listen-ports, or spec.tls for the default)",
                k("ssl-redirect")
            )]
        );
        let p = parse(&[(&k("ssl-redirect"), "true"), (&k("listen-ports"), r#"[{"HTTPS": 443}]"#)], SIMPLE);
        assert_eq!(
            errs(&p),
            vec![format!(
                "{}: applies only to HTTP rules on listening port 80; listen-ports has no HTTP:80",
                k("ssl-redirect")
            )]
        );
        let p = parse(&[(&k("ssl-redirect"), "false")], SIMPLE);
        assert!(p.is_ok() && !p.rules[0].ssl_redirect);
        let fixed = r#"[{"type": "FixedResponse", "fixedResponseConfig": {"httpCode": "503"}}]"#;
        let spec = tls.replace("port: {number: 80}", "port: {name: use-annotation}");
        let p = parse(&[(&k("ssl-redirect"), "true"), (&k("actions.tea-svc"), fixed)], &spec);
        assert_eq!(
            errs(&p),
            vec![format!(
                "{}: FixedResponse cannot be combined with {PREFIX}ssl-redirect (it works only alongside InsertHeader/RemoveHeader actions and CORS)",
                k("actions.tea-svc")
            )]
        );
    }

    #[test]
    fn hosts_and_backends() {
        let spec = "rules:\n- host: '*.example.com'\n  http:\n    paths:\n    - path: /\n      pathType: Prefix\n      backend: {service: {name: svc, port: {name: http}}}\n";
        let p = parse(&[], spec);
        assert!(p.is_ok(), "{:?}", p.errors);
        let r = &p.rules[0];
        assert_eq!(r.host, Some(HostMatch::Wildcard("example.com".into())));
        assert_eq!(r.service, ServiceRef { name: "svc".into(), port: ServicePort::Name("http".into()) });
        assert!(matches(r, "a.example.com:8080", "/x").is_some());
        assert!(matches(r, "A.Example.COM.", "/x").is_some());
        assert!(matches(r, "a.b.example.com", "/x").is_none());
        assert!(matches(r, "example.com", "/x").is_none());
        let bad = spec.replace("'*.example.com'", "bad_host");
        assert_eq!(
            errs(&parse(&[], &bad)),
            vec![
                "spec.rules[0].host: \"bad_host\" is not a DNS name (label \"bad_host\" is not 1..=63 letters, digits or inner hyphens)"
            ]
        );
        let res = spec.replace("{service: {name: svc, port: {name: http}}}", "{resource: {kind: Bucket, name: b}}");
        assert_eq!(
            errs(&parse(&[], &res)),
            vec!["spec.rules[0].http.paths[0].backend: only Service backends are supported (not resource backends)"]
        );
    }

    #[test]
    fn default_backend_goes_last() {
        let spec = format!("defaultBackend: {{service: {{name: fallback, port: {{number: 8080}}}}}}\n{SIMPLE}");
        let p = parse(&[], &spec);
        assert!(p.is_ok(), "{:?}", p.errors);
        let mut rules = p.rules.clone();
        rules.reverse();
        sort_rules(&mut rules);
        assert_eq!(rules[0].service.name, "tea-svc");
        assert!(rules[1].default_backend);
        assert_eq!(select(&rules, "demo.alb.ingress.top", "/tea/x").unwrap().0.service.name, "tea-svc");
        assert_eq!(select(&rules, "other.host", "/anything").unwrap().0.service.name, "fallback");
    }

    #[test]
    fn sort_by_order_then_namespace_name_then_position() {
        let mk = |ns: &str, name: &str, order: &str| {
            let mut p = parse(
                &[(&k("order"), order)],
                "rules:\n- http:\n    paths:\n    - {path: /a, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}\n    - {path: /b, pathType: Prefix, backend: {service: {name: s, port: {number: 80}}}}\n",
            );
            for r in &mut p.rules {
                r.namespace = ns.into();
                r.ingress = name.into();
            }
            p.rules
        };
        let mut all: Vec<Rule> =
            [mk("b", "a", "10"), mk("a", "z", "10"), mk("a", "b", "10"), mk("z", "z", "1"), mk("a", "b", "1000")]
                .concat();
        sort_rules(&mut all);
        let got: Vec<String> =
            all.iter().map(|r| format!("{}/{}{}@{}", r.namespace, r.ingress, r.path.path, r.order)).collect();
        assert_eq!(
            got,
            vec![
                "z/z/a@1",
                "z/z/b@1",
                "a/b/a@10",
                "a/b/b@10",
                "a/z/a@10",
                "a/z/b@10",
                "b/a/a@10",
                "b/a/b@10",
                "a/b/a@1000",
                "a/b/b@1000"
            ]
        );
    }

    #[test]
    fn matches_request_checks_every_condition() {
        let cond = r#"[{"type": "Header", "headerConfig": {"key": "stage", "values": ["gray"]}}, {"type": "Method", "methodConfig": {"values": ["GET"]}}]"#;
        let p = parse(&[(&k("conditions.tea-svc"), cond)], SIMPLE);
        let r = &p.rules[0];
        let h = [("Stage", "gray")];
        let req = Request {
            host: "demo.alb.ingress.top",
            path: "/tea",
            method: "GET",
            headers: &h,
            query: "",
            source: "10.0.0.1".parse().unwrap(),
        };
        assert!(matches_request(r, &req).is_some());
        assert!(matches_request(r, &Request { method: "POST", ..req }).is_none());
        assert!(matches_request(r, &Request { headers: &[], ..req }).is_none());
        assert!(select_request(&p.rules, &Request { path: "/coffee", ..req }).is_none());
    }

    #[test]
    fn host_and_path_conditions_replace_the_rules_own() {
        let cond = r#"[{"type": "Host", "hostConfig": {"values": ["~test.example.com"]}}, {"type": "Path", "pathConfig": {"values": ["/only"]}}]"#;
        let p = parse(&[(&k("conditions.tea-svc"), cond)], SIMPLE);
        assert!(p.is_ok(), "{:?}", p.errors);
        let r = &p.rules[0];
        assert!(matches(r, "test.EXAMPLE.com", "/only").is_some());
        assert!(matches(r, "demo.alb.ingress.top", "/only").is_none());
        assert!(matches(r, "test.example.com", "/tea").is_none());
    }
}
