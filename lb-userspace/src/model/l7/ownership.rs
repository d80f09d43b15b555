//! Host ownership across namespaces: when Ingresses of different namespaces claim the same
//! host and path, the oldest one (by `creationTimestamp`, then namespace and name) keeps it
//! and the others are rejected, whatever `order` or canary settings they give themselves.
//! Ingresses of one namespace share hosts freely (ALB order decides among them). A listener's
//! sources are kept oldest first so the proxy can try a host owner's rules first.
use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::annotations::alb::{HostMatch, IngressParse, Rule};
use crate::model::{ObjectError, ObjectRef};

/// What a rule claims: its host (`None`: any) and its path with the path type.
type Claim = (Option<String>, String);

/// The Ingresses (by model key) to reject, with why. `created`: each Ingress's
/// `creationTimestamp` (absent sorts first), by (namespace, name).
pub fn conflicts(
    ingresses: &BTreeMap<String, IngressParse>,
    created: &BTreeMap<(String, String), Timestamp>,
) -> Vec<(String, ObjectError)> {
    let mut by_age: Vec<(&String, &IngressParse)> = ingresses.iter().collect();
    by_age.sort_by_key(|(_, p)| age(p, created));
    // The first (oldest) Ingress to claim a host and path owns it for its namespace.
    let mut owners: BTreeMap<Claim, &IngressParse> = BTreeMap::new();
    let mut out = Vec::new();
    for (key, p) in by_age {
        let taken = p.rules.iter().find_map(|r| {
            let claim = claim(r);
            match owners.get(&claim) {
                Some(owner) if owner.namespace != p.namespace => Some((claim, *owner)),
                _ => None,
            }
        });
        match taken {
            Some(((host, path), owner)) => out.push((
                key.clone(),
                ObjectError {
                    object: ObjectRef { kind: "Ingress".into(), namespace: p.namespace.clone(), name: p.name.clone() },
                    field: "spec.rules".into(),
                    reason: format!(
                        "host {} path {path} is already served for Ingress {}/{} (created earlier, in another namespace)",
                        host.as_deref().unwrap_or("*"),
                        owner.namespace,
                        owner.name
                    ),
                },
            )),
            None => {
                for r in &p.rules {
                    owners.entry(claim(r)).or_insert(p);
                }
            }
        }
    }
    out
}

/// Orders a listener's sources oldest first (`creationTimestamp`, absent first, then
/// namespace and name; Ingresses before other kinds): the proxy gives a host to the namespace
/// of the first source that names it (`l7::router`), so that `order` cannot hand a host,
/// or a path under it, to a newer Ingress of another namespace.
pub fn oldest_first(sources: &mut [ObjectRef], created: &BTreeMap<(String, String), Timestamp>) {
    sources.sort_by_key(|s| {
        let ts = created.get(&(s.namespace.clone(), s.name.clone())).copied();
        (s.kind != "Ingress", ts, s.namespace.clone(), s.name.clone())
    });
}

/// Which namespace each host written in rules belongs to for TLS: that of the oldest Ingress
/// with a rule on it (as written: `shop.example`, `*.example`), so that a certificate in
/// another namespace's `spec.tls` is not served for it. `ingresses` oldest first.
pub fn tls_host_owners<'a>(ingresses: impl Iterator<Item = &'a IngressParse>) -> BTreeMap<String, String> {
    let mut owners = BTreeMap::new();
    for p in ingresses {
        for h in p.rules.iter().filter_map(|r| r.host.as_ref()) {
            if !matches!(h, HostMatch::Regex(_)) {
                owners.entry(host_text(h).to_ascii_lowercase()).or_insert_with(|| p.namespace.clone());
            }
        }
    }
    owners
}

/// The Ingresses oldest first (`creationTimestamp`, absent first, then namespace and name).
pub fn by_age(ingresses: &mut [(String, IngressParse)], created: &BTreeMap<(String, String), Timestamp>) {
    ingresses.sort_by_key(|(_, p)| age(p, created));
}

/// An Ingress's age as ownership orders it: `creationTimestamp` (absent first), then
/// namespace and name.
fn age(p: &IngressParse, created: &BTreeMap<(String, String), Timestamp>) -> (Option<Timestamp>, String, String) {
    let ts = created.get(&(p.namespace.clone(), p.name.clone())).copied();
    (ts, p.namespace.clone(), p.name.clone())
}

fn claim(r: &Rule) -> Claim {
    (r.host.as_ref().map(host_text), format!("{:?} {}", r.path.path_type, r.path.path))
}

fn host_text(h: &HostMatch) -> String {
    match h {
        HostMatch::Exact(h) => h.clone(),
        HostMatch::Wildcard(suffix) => format!("*.{suffix}"),
        HostMatch::Regex(p) => format!("~{}", p.source),
    }
}
