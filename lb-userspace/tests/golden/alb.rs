//! ALB: the example objects of `alb-*.txt` (Ingress, AlbConfig, IngressClass), parsed, and
//! requests sent to the parsed rules as the proxy serves them (the route model and
//! `l7::matching`). Tables of the reference are in `alb_tables.rs`.
//!
//! A case file is YAML documents: the objects, then optionally a document without `kind`:
//!
//! ```yaml
//! albconfig: gateway.yaml   # check every Ingress against the AlbConfig of that file
//! requests:                 # sent to the rules of every Ingress of the case, in ALB order
//! - {host: h, path: /p, headers: {name: value}, cookies: {name: value}, roll: 99}
//! ```
//!
//! A request's output is the rule it goes to (`ingress` namespace/name, rule `path`,
//! `service` name:port; null when none takes it), `rewritten` (the path after the rule's
//! `rewrite-target`, when it has one) and `canary` (whether the rule's canary takes the
//! request, when it has one; `roll` is the random number 0..100 a canary weight is compared
//! with, default 0).
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use lb_userspace::annotations::alb::{
    self, AlbConfig, IngressParse, ServicePort, check_against_albconfig, parse_albconfig, parse_ingress,
    parse_ingress_class, sort_rules,
};
use lb_userspace::l7::matching::{self, Request};
use lb_userspace::model::{
    ObjectRef,
    l7::{convert, route},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::alb_tables;
use crate::runner::{documents, run_family};

/// The document after the objects.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Test {
    /// A case file of the same directory whose AlbConfig every Ingress is checked against.
    #[serde(default)]
    albconfig: Option<String>,
    #[serde(default)]
    requests: Vec<Req>,
}

/// A request; echoed in the output as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Req {
    host: String,
    path: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    cookies: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roll: Option<u32>,
}

/// The rule as the proxy serves it.
pub fn served(r: &alb::Rule) -> route::Rule {
    let source = ObjectRef { kind: "Ingress".into(), namespace: r.namespace.clone(), name: r.ingress.clone() };
    convert::rule(r, &source)
}

/// The rules of `parses` in ALB order, with the rules as served.
pub fn ordered(parses: &[IngressParse]) -> (Vec<alb::Rule>, Vec<route::Rule>) {
    let mut rules: Vec<alb::Rule> = parses.iter().flat_map(|p| p.rules.iter().cloned()).collect();
    sort_rules(&mut rules);
    let served = rules.iter().map(served).collect();
    (rules, served)
}

/// A case: a table (`rows`), or objects and the test document.
fn case(path: &Path, text: &str) -> Value {
    let mut docs = documents(text);
    if let [doc] = docs.as_slice()
        && doc.get("rows").is_some()
    {
        return alb_tables::table(doc);
    }
    let test: Test = match docs.last() {
        Some(d) if d.get("kind").is_none() => {
            serde_json::from_value(docs.pop().expect("a document")).unwrap_or_else(|e| panic!("test document: {e}"))
        }
        _ => Test::default(),
    };
    let albconfig = test.albconfig.as_ref().map(|f| albconfig_of(&path.with_file_name(f)));
    let mut objects = Vec::new();
    let mut parses = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_owned();
        objects.push(match kind.as_str() {
            "Ingress" => {
                let ing: Ingress = serde_json::from_value(doc).unwrap_or_else(|e| panic!("Ingress: {e}"));
                let p = parse_ingress(&ing);
                let mut entry = json!({"kind": kind, "parse": p});
                if let Some(c) = &albconfig {
                    entry["albconfig_check"] = json!(check_against_albconfig(&p, c));
                }
                parses.push(p);
                entry
            }
            "AlbConfig" => json!({"kind": kind, "parse": parse_albconfig(&doc)}),
            "IngressClass" => {
                let class: IngressClass = serde_json::from_value(doc).unwrap_or_else(|e| panic!("IngressClass: {e}"));
                json!({"kind": kind, "parse": parse_ingress_class(&class)})
            }
            _ => json!({"kind": kind, "name": doc["metadata"]["name"], "parse": "not an ALB object: not parsed"}),
        });
    }
    let mut out = json!({"objects": objects});
    if !test.requests.is_empty() {
        let (rules, served) = ordered(&parses);
        out["requests"] = test.requests.iter().map(|r| outcome(&rules, &served, r)).collect();
    }
    out
}

/// The AlbConfig of the case file `path`, which must parse.
fn albconfig_of(path: &Path) -> AlbConfig {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = documents(&text)
        .into_iter()
        .find(|d| d["kind"] == "AlbConfig")
        .unwrap_or_else(|| panic!("{}: no AlbConfig", path.display()));
    parse_albconfig(&doc).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()))
}

/// `name:port` of a rule's backend as written.
pub fn service(r: &alb::Rule) -> String {
    match &r.service.port {
        ServicePort::Number(n) => format!("{}:{n}", r.service.name),
        ServicePort::Name(n) => format!("{}:{n}", r.service.name),
    }
}

/// Where `r` goes among `rules` (and `served`, the same rules as served).
fn outcome(rules: &[alb::Rule], served: &[route::Rule], r: &Req) -> Value {
    let cookie: Vec<String> = r.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let cookie = cookie.join("; ");
    let mut headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if !cookie.is_empty() {
        headers.push(("Cookie", &cookie));
    }
    let req = Request {
        host: &r.host,
        path: &r.path,
        method: "GET",
        headers: &headers,
        query: "",
        source: IpAddr::from([192, 0, 2, 1]),
    };
    let mut out = json!({"request": r, "rule": null});
    let Some((rule, caps)) = matching::select_request(served, &req) else { return out };
    let i = served.iter().position(|s| std::ptr::eq(s, rule)).expect("a rule of the list");
    let written = &rules[i];
    out["rule"] = json!({
        "ingress": format!("{}/{}", written.namespace, written.ingress),
        "path": written.path.path,
        "service": service(written),
    });
    if rule.rewrite.is_some() {
        out["rewritten"] = json!(matching::rewrite(rule, req.path, &caps));
    }
    if let Some(c) = &rule.canary {
        out["canary"] = json!(matching::canary_selects(c, |n| req.header(n), |n| req.cookie(n), r.roll.unwrap_or(0)));
    }
    out
}

/// "Path matching reference": the simple, hierarchical and multiple rule path tables.
#[test]
fn alb_paths() {
    run_family("alb/paths", case);
}

/// "Configure regular expressions": the flags table and the two examples.
#[test]
fn alb_regex() {
    run_family("alb/regex", case);
}

/// "Configure rewrite": examples 1 to 3 with their tables.
#[test]
fn alb_rewrite() {
    run_family("alb/rewrite", case);
}

/// "Implement canary release": by header, by cookie.
#[test]
fn alb_canary() {
    run_family("alb/canary", case);
}

/// Ingress-wide settings: ssl-redirect, listen-ports, order, CORS.
#[test]
fn alb_ingress() {
    run_family("alb/ingress", case);
}

/// Backend settings: protocol, session persistence, scheduler, keepalive, IPv6, slow
/// start, connection draining, cross-zone, and the quick reference's defaults.
#[test]
fn alb_backend() {
    run_family("alb/backend", case);
}

/// `alb-ingress-forward-actions.txt`: scenarios 1 to 4.
#[test]
fn alb_forward() {
    run_family("alb/forward", case);
}

/// `alb-multi-cluster-gateway.txt`: the gateway (AlbConfig, IngressClass) and examples 1 to 4.
#[test]
fn alb_multicluster() {
    run_family("alb/multicluster", case);
}
