//! Rules: one per host/path of an Ingress with everything that applies to it (conditions,
//! actions, canary, backend settings), and ALB's rule order. Matching requests is the
//! proxy's (`crate::l7::matching`).
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{IngressBackend, IngressSpec};
use serde::Serialize;

use super::actions::{Action, ActionSet, Filter, ServicePort, ServiceRef, USE_ANNOTATION, WeightedService};
use super::backend::BackendSettings;
use super::canary::Canary;
use super::conditions::Condition;
use super::cors::Cors;
use super::paths::{HostMatch, PathMatch, RulePath, Settings, host_match, rewrite_target, rule_path};
use super::values::quote;
use super::{Cx, Key, PREFIX};

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
    cx: &mut Cx,
) -> Option<Rule> {
    let at = &input.at;
    let path = match rule_path(at, input.path, input.path_type, &shared.settings) {
        Ok(p) => p,
        Err(e) => {
            let (field, reason) = e.split_once(": ").expect("field: reason");
            cx.field_error(field, reason);
            return None;
        }
    };
    if let (Some(t), PathMatch::Regex(p)) = (&shared.settings.rewrite, &path.matcher) {
        let (_, max) = rewrite_target(t).expect("validated");
        if max > p.groups() {
            cx.error(
                Key::RewriteTarget,
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
            cx.field_error(field.to_owned(), reason.to_owned());
            return None;
        }
    };
    let set = actions.get(&service.name).cloned().unwrap_or_default();
    let use_annotation = service.port == ServicePort::Name(USE_ANNOTATION.to_owned());
    let action = match (set.terminal, use_annotation) {
        (Some(a), true) => a,
        (None, false) => Action::Forward {
            groups: vec![WeightedService { service: service.clone(), weight: 100 }],
            server_groups: Vec::new(),
            sticky: None,
        },
        // Written but rejected: its own error says why; one that says it is missing would not.
        (None, true) if cx.family("actions.").iter().any(|(name, _)| *name == service.name) => return None,
        (None, true) => {
            cx.field_error(
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
            cx.field_error(
                format!("{PREFIX}actions.{}", service.name),
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
    cx: &mut Cx,
) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut names: BTreeSet<String> = BTreeSet::new();
    let default = spec.and_then(|s| s.default_backend.as_ref());
    for (i, r) in spec.and_then(|s| s.rules.as_ref()).into_iter().flatten().enumerate() {
        let host = match r.host.as_deref().filter(|h| !h.is_empty()).map(|h| host_match(h, false)).transpose() {
            Ok(h) => h,
            Err(e) => {
                cx.field_error(format!("spec.rules[{i}].host"), e);
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
                    out.extend(build_one(input, shared, actions, conditions, cx));
                }
                None => cx
                    .field_error(format!("spec.rules[{i}].http"), "has no paths and the Ingress has no defaultBackend"),
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
            out.extend(build_one(input, shared, actions, conditions, cx));
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
        out.extend(build_one(input, &plain, actions, conditions, cx));
    }
    for family in ["actions.", "conditions."] {
        let keyed: Vec<String> =
            if family == "actions." { actions.keys().cloned().collect() } else { conditions.keys().cloned().collect() };
        for svc in keyed {
            if !names.contains(&svc) {
                cx.field_error(
                    format!("{PREFIX}{family}{svc}"),
                    format!("no backend in spec.rules is the Service {svc}"),
                );
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
    use super::super::paths::PathType;
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

    /// The redirect is on HTTP:80 rules; the HTTPS:443 it goes to is the AlbConfig's, which
    /// another Ingress may serve (`tests::listeners_must_exist_in_the_albconfig`).
    #[test]
    fn ssl_redirect_applies_to_http_80() {
        let tls = format!("tls:\n- hosts: [demo.alb.ingress.top]\n  secretName: s\n{SIMPLE}");
        let p = parse(&[(&k("ssl-redirect"), "true")], &tls);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert!(p.rules[0].ssl_redirect);
        // HTTP:80 only (an Ingress for the redirect, another for 443).
        let p = parse(&[(&k("ssl-redirect"), "true")], SIMPLE);
        assert!(p.is_ok() && p.not_applicable.is_empty(), "{:?} {:?}", p.errors, p.not_applicable);
        assert!(p.rules[0].ssl_redirect);
        let p = parse(&[(&k("ssl-redirect"), "true"), (&k("listen-ports"), r#"[{"HTTPS": 443}]"#)], SIMPLE);
        assert!(p.is_ok(), "{:?}", p.errors);
        assert_eq!(
            p.not_applicable.iter().map(|n| n.reason.as_str()).collect::<Vec<_>>(),
            [
                "has no effect: it applies only to HTTP rules on listening port 80, and listen-ports has no HTTP listener"
            ]
        );
        // HTTP on another port: its rules would be served in clear, not redirected.
        let p = parse(&[(&k("ssl-redirect"), "true"), (&k("listen-ports"), r#"[{"HTTP": 8080}]"#)], SIMPLE);
        assert_eq!(
            errs(&p),
            vec![format!(
                "{}: applies only to HTTP rules on listening port 80, and this Ingress's HTTP listeners are on other ports: their rules would not be redirected",
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
}
