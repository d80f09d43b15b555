//! A listener's routing table, compiled from the model once per reload and swapped
//! atomically: route selection (ALB order, canary rules ranked among the others by their
//! `order` and taking a request only when they select it; the rules of the namespace
//! owning the request's host before those of other namespaces), the Service of a forward
//! group by weight, and the endpoint by the rule's scheduler or sticky cookie.
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use super::balance::{self, ActiveRequests, Balancer, PickContext};
use super::matching::{Captures, Request, canary_selects, matches_request, normalize_host};
use crate::model::l7::{
    Endpoint, L7Listener, Route, Upstream,
    route::{Condition, HostMatch},
};

pub struct Table {
    pub listener: L7Listener,
    /// The listener's port as a header value (`X-Forwarded-Port`), made once.
    pub port_value: http::HeaderValue,
    /// Every rule, canaries included, in the order they are tried.
    rules: Vec<CompiledRoute>,
    owners: Owners,
}

/// Which namespace owns each host some rule names (exactly, or as a `*.` wildcard): that of
/// the oldest Ingress naming it (the listener's sources are oldest first). Empty when every
/// rule comes from one namespace.
#[derive(Default)]
struct Owners {
    exact: HashMap<String, String>,
    wildcard: HashMap<String, String>,
}

impl Owners {
    fn new(listener: &L7Listener) -> Owners {
        let mut out = Owners::default();
        let first_ns = listener.sources.first().map(|s| &s.namespace);
        if listener.sources.iter().all(|s| Some(&s.namespace) == first_ns) {
            return out;
        }
        let age = |r: &Route| listener.sources.iter().position(|s| *s == r.rule.source).unwrap_or(usize::MAX);
        let mut named: Vec<(usize, &HostMatch, &str)> = Vec::new();
        for r in listener.canaries.iter().chain(&listener.routes) {
            let ns = r.rule.source.namespace.as_str();
            named.extend(r.rule.host.iter().map(|h| (age(r), h, ns)));
            for c in &r.rule.conditions {
                if let Condition::Host(hs) = c {
                    named.extend(hs.iter().map(|h| (age(r), h, ns)));
                }
            }
        }
        named.sort_by_key(|(a, _, _)| *a);
        for (_, h, ns) in named {
            let (map, key) = match h {
                HostMatch::Exact(h) => (&mut out.exact, h),
                HostMatch::Wildcard(suffix) => (&mut out.wildcard, suffix),
                HostMatch::Regex(_) => continue,
            };
            map.entry(key.clone()).or_insert_with(|| ns.to_owned());
        }
        out
    }

    /// The namespace owning `host` (a `Host` value), if any.
    fn of(&self, host: &str) -> Option<&str> {
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return None;
        }
        let host = normalize_host(host);
        self.exact
            .get(host.as_ref())
            .or_else(|| host.split_once('.').and_then(|(_, rest)| self.wildcard.get(rest)))
            .map(String::as_str)
    }
}

pub struct CompiledRoute {
    pub route: Route,
    balancers: Vec<Box<dyn Balancer>>,
    mirror_balancers: Vec<Box<dyn Balancer>>,
    /// `traffic-limit-qps`: shared with the table this one replaced, if it had the rule.
    limit: Option<Arc<RateLimit>>,
}

/// A token bucket holding one second of requests.
struct RateLimit {
    qps: f64,
    state: std::sync::Mutex<(f64, std::time::Instant)>,
}

impl RateLimit {
    fn new(qps: u32) -> RateLimit {
        RateLimit { qps: f64::from(qps), state: std::sync::Mutex::new((f64::from(qps), std::time::Instant::now())) }
    }

    fn admit(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * self.qps).min(self.qps);
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The endpoint chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub upstream: usize,
    pub endpoint: Endpoint,
}

/// What tells a rule from another across tables: its object, its place in it, its kind.
type RuleId<'a> = (&'a crate::model::ObjectRef, usize, usize, bool, bool);

fn rule_id(r: &Route) -> RuleId<'_> {
    let rule = &r.rule;
    (&rule.source, rule.rule_index, rule.path_index, rule.canary.is_some(), rule.default_backend)
}

impl Table {
    pub fn new(listener: L7Listener, active: &ActiveRequests) -> Table {
        Table::replacing(listener, active, None)
    }

    /// As [`Table::new`], taking over the `traffic-limit-qps` buckets of `previous`'s rules
    /// that keep their limit: a new table (an endpoint change, a health change) neither
    /// refills a bucket nor lets a burst through.
    pub fn replacing(listener: L7Listener, active: &ActiveRequests, previous: Option<&Table>) -> Table {
        let limits: HashMap<RuleId<'_>, &Arc<RateLimit>> = previous
            .into_iter()
            .flat_map(|t| &t.rules)
            .filter_map(|r| Some((rule_id(&r.route), r.limit.as_ref()?)))
            .collect();
        let limit = |r: &Route| {
            let qps = r.rule.qps_limit?;
            let kept = limits.get(&rule_id(r)).filter(|l| l.qps == f64::from(qps)).map(|l| Arc::clone(l));
            Some(kept.unwrap_or_else(|| Arc::new(RateLimit::new(qps))))
        };
        let mut rules: Vec<CompiledRoute> = listener
            .canaries
            .iter()
            .chain(&listener.routes)
            .map(|r| CompiledRoute::new(r.clone(), active, limit(r)))
            .collect();
        // ALB order; at the same `order` a canary before the rule it shadows (a canary
        // Ingress that left `order` at its default, as with other controllers' canaries).
        rules.sort_by(|a, b| rank(a).cmp(&rank(b)));
        Table { rules, owners: Owners::new(&listener), port_value: http::HeaderValue::from(listener.port), listener }
    }

    /// The first rule in ALB order that takes `req`: it matches and, for a canary rule,
    /// selects it (a canary that does not falls through to the rules after it). `roll` is
    /// uniform in 0..100 (canary weight). When the request's host is owned by a namespace,
    /// its rules are tried first and canaries of other namespaces not at all: `order` ranks
    /// rules within what a namespace may serve, it does not let a newer Ingress of another
    /// namespace take an owned host (by a rule without host, a wildcard, a Host condition or
    /// a wider path).
    pub fn select(&self, req: &Request<'_>, roll: u32) -> Option<(&CompiledRoute, Captures)> {
        let Some(owner) = self.owners.of(req.host) else {
            return first_taker(self.rules.iter(), req, roll);
        };
        let owned = |r: &CompiledRoute| r.route.rule.source.namespace == owner;
        let first = |r: &&CompiledRoute| owned(r) && !r.route.rule.default_backend;
        first_taker(self.rules.iter().filter(first), req, roll).or_else(|| {
            let rest = self.rules.iter().filter(|r| !first(r) && (r.route.rule.canary.is_none() || owned(r)));
            first_taker(rest, req, roll)
        })
    }
}

/// Where a rule is tried: ALB order, and at the same `order` a canary first.
fn rank(r: &CompiledRoute) -> (bool, u32, bool, &str, &str, usize, usize) {
    let r = &r.route.rule;
    (r.default_backend, r.order, r.canary.is_none(), &r.source.namespace, &r.source.name, r.rule_index, r.path_index)
}

/// The first of `rules` that takes `req`: it matches and, for a canary rule, selects it.
fn first_taker<'a>(
    mut rules: impl Iterator<Item = &'a CompiledRoute>,
    req: &Request<'_>,
    roll: u32,
) -> Option<(&'a CompiledRoute, Captures)> {
    rules.find_map(|r| {
        let caps = matches_request(&r.route.rule, req)?;
        match &r.route.rule.canary {
            Some(k) if !canary_selects(k, |h| req.header(h), |n| req.cookie(n), roll) => None,
            _ => Some((r, caps)),
        }
    })
}

impl CompiledRoute {
    fn new(route: Route, active: &ActiveRequests, limit: Option<Arc<RateLimit>>) -> CompiledRoute {
        let make = |ups: &[Upstream]| {
            ups.iter()
                .map(|u| balance::for_scheduler(&route.rule.backend.scheduler, u.endpoints.len(), active))
                .collect()
        };
        CompiledRoute { balancers: make(&route.upstreams), mirror_balancers: make(&route.mirrors), limit, route }
    }

    /// Whether the rule's QPS limit lets one more request through now.
    pub fn admit(&self) -> bool {
        self.limit.as_deref().is_none_or(RateLimit::admit)
    }

    /// The Service by weight (`roll` uniform in 0..total), then its endpoint: the sticky one
    /// when `sticky` names a live endpoint of that Service, else the scheduler's pick.
    pub fn pick(
        &self,
        cx: &PickContext<'_>,
        roll: u32,
        sticky: Option<SocketAddr>,
        group: Option<usize>,
    ) -> Option<Pick> {
        if let Some(addr) = sticky {
            for (ui, u) in self.route.upstreams.iter().enumerate() {
                if let Some(e) = u.endpoints.iter().find(|e| e.addr == addr && e.weight > 0) {
                    return Some(Pick { upstream: ui, endpoint: *e });
                }
            }
        }
        let live = |u: &Upstream| u.endpoints.iter().any(|e| e.weight > 0);
        let ui = match group.filter(|g| self.route.upstreams.get(*g).is_some_and(live)) {
            Some(g) => g,
            None => weighted_index(
                self.route.upstreams.iter().map(|u| if u.endpoints.is_empty() { 0 } else { u.weight }),
                roll,
            )?,
        };
        let u = &self.route.upstreams[ui];
        match (self.route.rule.backend.slow_start_s, cx.ages) {
            (Some(ramp), Some(ages)) => {
                let ramped = ages.ramped(&u.endpoints, std::time::Duration::from_secs(u64::from(ramp)));
                let ei = self.balancers[ui].pick(cx, &ramped)?;
                Some(Pick { upstream: ui, endpoint: u.endpoints[ei] })
            }
            _ => {
                let ei = self.balancers[ui].pick(cx, &u.endpoints)?;
                Some(Pick { upstream: ui, endpoint: u.endpoints[ei] })
            }
        }
    }

    /// The index of the Service a group-stickiness cookie value names.
    pub fn group_of(&self, id: &str) -> Option<usize> {
        self.route.upstreams.iter().position(|u| group_id(&u.name) == id)
    }

    /// One endpoint per mirror target (those with endpoints).
    pub fn mirror_picks(&self, cx: &PickContext<'_>) -> Vec<Endpoint> {
        self.route
            .mirrors
            .iter()
            .zip(&self.mirror_balancers)
            .filter_map(|(u, b)| b.pick(cx, &u.endpoints).map(|i| u.endpoints[i]))
            .collect()
    }

    /// Another endpoint of the same Service than `not` (a retry after a failed connect):
    /// picked from the whole list with `not`'s weight 0, so a balancer with state (the smooth
    /// round robin's, one value per endpoint index) keeps it for the same endpoints (a
    /// shorter list shifted and cut it on every retry).
    pub fn retry_pick(&self, cx: &PickContext<'_>, upstream: usize, not: SocketAddr) -> Option<Endpoint> {
        let u = self.route.upstreams.get(upstream)?;
        let masked: Vec<Endpoint> =
            u.endpoints.iter().map(|e| if e.addr == not { Endpoint { weight: 0, ..*e } } else { *e }).collect();
        self.balancers[upstream].pick(cx, &masked).map(|i| masked[i])
    }
}

/// The index whose cumulative weight range holds `roll % total`; `None` when all are 0.
fn weighted_index(weights: impl Iterator<Item = u32> + Clone, roll: u32) -> Option<usize> {
    let total: u64 = weights.clone().map(u64::from).sum();
    if total == 0 {
        return None;
    }
    let mut x = u64::from(roll) % total;
    for (i, w) in weights.enumerate() {
        if x < u64::from(w) {
            return Some(i);
        }
        x -= u64::from(w);
    }
    None
}

/// The cookie value naming a Service of a forward group.
pub fn group_id(upstream: &str) -> String {
    format!("{:016x}", balance::hash64(&[upstream.as_bytes()]))
}

#[cfg(test)]
mod tests {
    use super::{Table, weighted_index};
    use crate::l7::balance::ActiveRequests;

    /// `traffic-limit-qps` 2 on every rule: a table that replaces another (an endpoint
    /// change) has the buckets as they were, not full again; a rule whose limit changed
    /// starts with a full one.
    #[test]
    fn a_new_table_keeps_the_rate_limit_buckets_of_the_one_it_replaces() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/l7-alb");
        let model = crate::model::build(&crate::manifests::load_dir(&dir).unwrap(), &Default::default());
        let mut listener = model.model.l7.into_values().next().expect("an ALB listener");
        for r in &mut listener.routes {
            r.rule.qps_limit = Some(2);
        }
        let active = ActiveRequests::default();
        let first = Table::new(listener.clone(), &active);
        let admits = |t: &Table| (0..3).map(|_| t.rules[0].admit()).collect::<Vec<_>>();
        assert_eq!(admits(&first), [true, true, false]);
        let mut moved = listener.clone();
        for e in moved.routes.iter_mut().flat_map(|r| &mut r.upstreams).flat_map(|u| &mut u.endpoints) {
            e.weight = 0;
        }
        let next = Table::replacing(moved.clone(), &active, Some(&first));
        assert!(!next.rules[0].admit(), "the bucket as it was, empty");
        for r in &mut moved.routes {
            r.rule.qps_limit = Some(3);
        }
        let changed = Table::replacing(moved, &active, Some(&next));
        assert_eq!(admits(&changed), [true, true, true], "another limit: a full bucket of its own");
    }

    #[test]
    fn weighted_index_spreads_by_weight() {
        let w = [80u32, 20, 0];
        let picks: Vec<_> = (0..100).map(|r| weighted_index(w.iter().copied(), r).unwrap()).collect();
        assert_eq!(picks.iter().filter(|i| **i == 0).count(), 80);
        assert_eq!(picks.iter().filter(|i| **i == 1).count(), 20);
        assert_eq!(weighted_index([0u32, 0].iter().copied(), 5), None);
    }
}
