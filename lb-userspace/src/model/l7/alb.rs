//! ALB Ingresses → L7 listeners on every node address: one per `listen-ports` entry (with
//! its AlbConfig listener's settings), the Ingress's rules as routes with their Services
//! resolved to ready endpoints, and `spec.tls` certificates.
use super::{
    Certificate, ForwardedHeaders, L7Listener, L7Protocol, Lookup, Route, TlsSettings, Upstream, convert, fleet::Fleet,
    listener_key, lookup::port_text, ownership, sort_routes,
};
use crate::annotations::alb::{self, IngressParse, ListenProtocol, ServiceRef};
use crate::model::{Build, Notice, ObjectError, ObjectRef, health};
use std::collections::{BTreeMap, HashSet};

/// Default `request-timeout` and `idle-timeout` of ALB listeners without an AlbConfig.
const ALB_REQUEST_TIMEOUT_S: u32 = 60;
const ALB_IDLE_TIMEOUT_S: u32 = 15;

/// Routes of one rule with its Services resolved; missing Services become notices (the
/// rule then answers 503, as a controller whose Service is not there yet does).
fn route(
    rule: &alb::Rule,
    lookup: &Lookup<'_>,
    fleet: Option<&Fleet<'_>>,
    notices: &mut Vec<Notice>,
    source: &ObjectRef,
) -> Route {
    let mut resolve = |svc: &ServiceRef, weight: u32| {
        let endpoints = match fleet {
            Some(fleet) => lookup.fleet_endpoints(fleet, &rule.namespace, svc, rule.backend.ipv6),
            None => lookup.endpoints(&rule.namespace, svc, rule.backend.ipv6),
        };
        let endpoints = endpoints.unwrap_or_else(|reason| {
            notices.push(Notice {
                object: source.clone(),
                field: "spec.rules".into(),
                note: format!("{reason}: requests answer 503"),
            });
            Vec::new()
        });
        Upstream {
            name: format!("{}/{}:{}", rule.namespace, svc.name, port_text(&svc.port)),
            weight,
            endpoints,
            health_check: rule.backend.health_check.as_ref().map(health::from_alb),
        }
    };
    let (mapped, unmapped) = server_groups(rule, lookup);
    let upstreams = match &rule.action {
        alb::Action::Forward { groups, .. } => {
            let mut ups: Vec<Upstream> = Vec::new();
            for (svc, weight) in
                groups.iter().map(|g| (&g.service, g.weight)).chain(mapped.iter().map(|(s, w)| (s, *w)))
            {
                let up = resolve(svc, weight);
                // A server group mapped to a Service the group also names: one upstream.
                match ups.iter_mut().find(|u| u.name == up.name) {
                    Some(same) => same.weight += weight,
                    None => ups.push(up),
                }
            }
            ups
        }
        _ => Vec::new(),
    };
    let mirrors = rule
        .filters
        .iter()
        .filter_map(|f| if let alb::Filter::TrafficMirror(s) = f { Some(s) } else { None })
        .flatten()
        .map(|s| resolve(s, 100))
        .collect();
    let shares = split_text(&upstreams);
    for (id, weight, reason) in unmapped {
        notices.push(Notice {
            object: source.clone(),
            field: format!("{}actions.{}", alb::PREFIX, rule.service.name),
            note: format!("ServerGroupID {id} (weight {weight}) is not served: {reason}; {shares}"),
        });
    }
    Route { rule: convert::rule(rule, source), upstreams, mirrors }
}

/// A ForwardGroup's `ServerGroupID`s: those a Service of the Ingress's namespace stands for
/// (`lb.dev/server-group-id`) with their weights, and the others with the reason.
#[allow(clippy::type_complexity)]
fn server_groups(rule: &alb::Rule, lookup: &Lookup<'_>) -> (Vec<(ServiceRef, u32)>, Vec<(String, u32, String)>) {
    let (mut mapped, mut unmapped) = (Vec::new(), Vec::new());
    if let alb::Action::Forward { server_groups, .. } = &rule.action {
        for g in server_groups {
            match lookup.server_group(&rule.namespace, &g.id) {
                Ok(svc) => mapped.push((svc, g.weight)),
                Err(reason) => unmapped.push((g.id.clone(), g.weight, reason)),
            }
        }
    }
    (mapped, unmapped)
}

/// How the groups left share the traffic: the remaining weights keep their split.
fn split_text(upstreams: &[Upstream]) -> String {
    let total: u32 = upstreams.iter().map(|u| u.weight).sum();
    if total == 0 {
        return "no group with a weight is left: requests answer 503".into();
    }
    let shares: Vec<String> = upstreams
        .iter()
        .map(|u| format!("{} {:.0}%", u.name, f64::from(u.weight) * 100.0 / f64::from(total)))
        .collect();
    format!("its share goes to the other groups, which keep their split: {}", shares.join(", "))
}

/// The clusters serving an Ingress when its AlbConfig is a multi-cluster gateway
/// (`remote-clusters`) and `lb` was given `--cluster` sources; notices for associated clusters
/// without a source and weighted clusters that are skipped. Without any `--cluster` source the
/// gateway serves this cluster's own endpoints.
fn fleet_of<'a>(
    cfg: &'a alb::AlbConfig,
    p: &'a IngressParse,
    lookup: &Lookup<'_>,
    source: &ObjectRef,
    notices: &mut Vec<Notice>,
) -> Option<Fleet<'a>> {
    if cfg.remote_clusters.is_empty() {
        // Weights of clusters the AlbConfig does not associate: nothing to split.
        for w in &p.cluster_weights {
            notices.push(Notice {
                object: source.clone(),
                field: format!("{}cluster-weight.{}", alb::PREFIX, w.cluster_id),
                note: format!(
                    "has no effect: AlbConfig {} is not a multi-cluster gateway (no {}remote-clusters); this cluster's endpoints serve",
                    cfg.name,
                    alb::PREFIX
                ),
            });
        }
        return None;
    }
    let albconfig = ObjectRef { kind: "AlbConfig".into(), namespace: String::new(), name: cfg.name.clone() };
    let field = format!("metadata.annotations.{}remote-clusters", alb::PREFIX);
    if lookup.clusters.is_empty() {
        notices.push(Notice {
            object: albconfig,
            field,
            note: "no --cluster source is configured: its Ingresses are served from this cluster's own endpoints"
                .into(),
        });
        return None;
    }
    for id in cfg.remote_clusters.iter().filter(|id| !lookup.clusters.contains_key(*id)) {
        notices.push(Notice {
            object: albconfig.clone(),
            field: field.clone(),
            note: format!(
                "associated cluster {id} is not connected (no --cluster source, or its source never answered): \
                 it gets no traffic"
            ),
        });
    }
    let clusters = cfg.remote_clusters.iter().map(String::as_str).filter(|id| lookup.clusters.contains_key(*id));
    let fleet = Fleet { clusters: clusters.collect(), weights: &p.cluster_weights };
    for id in fleet.skipped() {
        notices.push(Notice {
            object: source.clone(),
            field: format!("{}cluster-weight.{id}", alb::PREFIX),
            note: format!(
                "cluster {id} is not an associated cluster of AlbConfig {} with a --cluster source: skipped",
                cfg.name
            ),
        });
    }
    Some(fleet)
}

/// ALB listeners for the accepted Ingresses, plus CLB http/https listeners already put in
/// `out.model.l7` by the Service builder. An Ingress that asks for a port another Ingress
/// already serves with another protocol, or a host and path an older Ingress of another
/// namespace serves, is rejected.
pub fn build_alb(lookup: &Lookup<'_>, out: &mut Build) {
    for (key, err) in ownership::conflicts(&out.model.ingresses, &lookup.ingress_created) {
        out.model.ingresses.remove(&key);
        out.errors.push(err);
    }
    let mut rejected = Vec::new();
    // Oldest first: the first certificate of a host (and the listener's default) is the
    // oldest Ingress's, and a host's certificate comes from the namespace that owns it.
    let mut ingresses: Vec<(String, IngressParse)> =
        out.model.ingresses.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    ownership::by_age(&mut ingresses, &lookup.ingress_created);
    let tls_owners = ownership::tls_host_owners(ingresses.iter().map(|(_, p)| p));
    // Each Ingress's usable certificates, once: an HTTPS listener starts only with one, so
    // the ports where no Ingress has any (the reference's `spec.tls` with hosts only relies on
    // the cloud's certificate discovery; hosts of another namespace are not served) are errors.
    let certificates: BTreeMap<String, (Vec<Certificate>, Vec<Notice>)> =
        ingresses.iter().map(|(key, p)| (key.clone(), usable_certificates(p, lookup, &tls_owners))).collect();
    let certified: HashSet<u16> = ingresses
        .iter()
        .filter(|(key, _)| certificates.get(key).is_some_and(|(c, _)| !c.is_empty()))
        .flat_map(|(_, p)| p.listeners.iter().filter(|l| l.protocol == ListenProtocol::Https).map(|l| l.port))
        .collect();
    for (key, p) in ingresses {
        let source = ObjectRef { kind: "Ingress".into(), namespace: p.namespace.clone(), name: p.name.clone() };
        let class = alb::class_of(p.class_name.as_deref(), &lookup.classes);
        let albconfig = class.and_then(|c| out.model.alb_configs.get(&c.albconfig)).cloned();
        // Protocol clash with a listener of another Ingress or a CLB Service.
        let clash = p.listeners.iter().find_map(|l| {
            let proto = match l.protocol {
                ListenProtocol::Http => L7Protocol::Http,
                ListenProtocol::Https => L7Protocol::Https,
                ListenProtocol::Quic => return None,
            };
            let other = if proto == L7Protocol::Http { L7Protocol::Https } else { L7Protocol::Http };
            out.model.l7.get(&listener_key(None, l.port, other)).map(|o| (l.port, o.sources.first().cloned()))
        });
        // An HTTPS listener without a certificate cannot start: the Ingress's rules on it are
        // in error, those on its other listeners serve (the reference's ssl-redirect example:
        // HTTP:80 redirects while 443 waits for its certificate).
        let certless: Vec<u16> = p
            .listeners
            .iter()
            .filter(|l| l.protocol == ListenProtocol::Https && !certified.contains(&l.port))
            .map(|l| l.port)
            .collect();
        for port in &certless {
            out.errors.push(ObjectError {
                object: source.clone(),
                field: "spec.tls".into(),
                reason: format!(
                    "HTTPS listener {port} has no certificate: no Ingress on it names a usable kubernetes.io/tls Secret in spec.tls[].secretName, nor has one in its namespace covering its spec.tls hosts; its rules on {port} are not served"
                ),
            });
        }
        if p.listeners.iter().all(|l| l.protocol == ListenProtocol::Quic || certless.contains(&l.port)) {
            rejected.push(key);
            continue;
        }
        out.unserved.extend(certless.iter().map(|port| (source.clone(), listener_key(None, *port, L7Protocol::Https))));
        if let Some((port, owner)) = clash {
            let owner = owner.map(|o| o.to_string()).unwrap_or_default();
            out.errors.push(ObjectError {
                object: source,
                field: format!("{}listen-ports", alb::PREFIX),
                reason: format!("port {port} is already served with another protocol for {owner}"),
            });
            rejected.push(key);
            continue;
        }
        for l in &p.listeners {
            let protocol = match l.protocol {
                ListenProtocol::Http => L7Protocol::Http,
                ListenProtocol::Https => L7Protocol::Https,
                ListenProtocol::Quic => {
                    out.notices.push(Notice {
                        object: source.clone(),
                        field: format!("{}listen-ports", alb::PREFIX),
                        note: format!("QUIC:{} is not served (no HTTP/3 on this balancer)", l.port),
                    });
                    continue;
                }
            };
            if protocol == L7Protocol::Https && certless.contains(&l.port) {
                continue;
            }
            let cfg: Option<alb::AlbListener> =
                albconfig.as_ref().and_then(|c| c.listeners.iter().find(|a| a.port == l.port).cloned());
            let entry = out.model.l7.entry(listener_key(None, l.port, protocol)).or_insert_with(|| L7Listener {
                sources: Vec::new(),
                addr: None,
                port: l.port,
                protocol,
                tls: (protocol == L7Protocol::Https).then(|| TlsSettings {
                    policy: convert::tls_policy(
                        cfg.as_ref().and_then(|c| c.security_policy).unwrap_or(alb::TlsPolicy::Tls10),
                    ),
                    certificates: Vec::new(),
                }),
                http2: cfg.as_ref().is_none_or(|c| c.http2),
                request_timeout_s: cfg.as_ref().map_or(ALB_REQUEST_TIMEOUT_S, |c| c.request_timeout_s),
                idle_timeout_s: cfg.as_ref().map_or(ALB_IDLE_TIMEOUT_S, |c| c.idle_timeout_s),
                gzip: cfg.as_ref().is_none_or(|c| c.gzip),
                headers: ForwardedHeaders { proto: true, listener_port: true, client_port: false },
                redirect_https_port: None,
                acl: None,
                canaries: Vec::new(),
                routes: Vec::new(),
            });
            entry.sources.push(source.clone());
            let mut notices = Vec::new();
            let fleet = albconfig.as_ref().and_then(|c| fleet_of(c, &p, lookup, &source, &mut notices));
            for rule in &p.rules {
                let r = route(rule, lookup, fleet.as_ref(), &mut notices, &source);
                if rule.canary.is_some() { entry.canaries.push(r) } else { entry.routes.push(r) }
            }
            if let Some(tls) = entry.tls.as_mut() {
                let (certs, cert_notices) = &certificates[&key];
                tls.certificates.extend(certs.iter().cloned());
                notices.extend(cert_notices.iter().cloned());
            }
            // One notice per missing thing, even when the Ingress is on several listeners.
            for n in notices {
                if !out.notices.contains(&n) {
                    out.notices.push(n);
                }
            }
        }
    }
    for key in rejected {
        out.model.ingresses.remove(&key);
    }
    for l in out.model.l7.values_mut() {
        ownership::oldest_first(&mut l.sources, &lookup.ingress_created);
        sort_routes(&mut l.routes);
        sort_routes(&mut l.canaries);
    }
}

/// The certificates an Ingress's `spec.tls` gives, with a notice for each Secret or host left
/// out: a host another namespace owns (its oldest Ingress with a rule on it) is not served
/// with this Ingress's Secret, and a Secret that cannot be used leaves its hosts to the
/// listener's default certificate.
fn usable_certificates(
    p: &IngressParse,
    lookup: &Lookup<'_>,
    tls_owners: &BTreeMap<String, String>,
) -> (Vec<Certificate>, Vec<Notice>) {
    let source = ObjectRef { kind: "Ingress".into(), namespace: p.namespace.clone(), name: p.name.clone() };
    let (mut certs, mut notices) = (Vec::new(), Vec::new());
    for t in &p.tls {
        let (hosts, others): (Vec<String>, Vec<String>) = t
            .hosts
            .iter()
            .cloned()
            .partition(|h| tls_owners.get(&h.to_ascii_lowercase()).is_none_or(|ns| *ns == p.namespace));
        if !others.is_empty() {
            let left_out = match &t.secret_name {
                Some(secret) => format!("Secret {secret} is not served"),
                None => "no certificate is looked up".to_owned(),
            };
            notices.push(Notice {
                object: source.clone(),
                field: "spec.tls".into(),
                note: format!(
                    "{left_out} for {}: an older Ingress of another namespace has rules for it",
                    others.join(", ")
                ),
            });
        }
        let Some(secret) = &t.secret_name else {
            // No Secret named: one is found for each host, as the ALB finds certificates.
            discover(p, lookup, &hosts, &source, &mut certs, &mut notices);
            continue;
        };
        if hosts.is_empty() && !others.is_empty() {
            continue;
        }
        match lookup.certificate(&p.namespace, secret, hosts) {
            Ok(c) => certs.push(c),
            Err(reason) => notices.push(Notice {
                object: source.clone(),
                field: "spec.tls".into(),
                note: format!("{reason}: its hosts get the listener's default certificate"),
            }),
        }
    }
    (certs, notices)
}

/// The certificates of `spec.tls` `hosts` written without a `secretName`: for each host the
/// first `kubernetes.io/tls` Secret of the Ingress's namespace, by name, whose certificate
/// covers it (hosts one Secret covers share its certificate); a host none covers gets a
/// notice. Hosts of another namespace were left out before: that namespace's Secrets serve
/// them.
fn discover(
    p: &IngressParse,
    lookup: &Lookup<'_>,
    hosts: &[String],
    source: &ObjectRef,
    certs: &mut Vec<Certificate>,
    notices: &mut Vec<Notice>,
) {
    let (found, missing) = lookup.discover_certificates(&p.namespace, hosts);
    if !missing.is_empty() {
        notices.push(Notice {
            object: source.clone(),
            field: "spec.tls".into(),
            note: format!(
                "no kubernetes.io/tls Secret of namespace {} has a certificate for {} (spec.tls names no secretName): its requests get the listener's default certificate",
                p.namespace,
                missing.join(", ")
            ),
        });
    }
    certs.extend(found);
}
