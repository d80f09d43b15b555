//! The validated configuration: what the datapath must serve, each part tagged with the
//! Kubernetes object it came from. Built from an [`ObjectSet`]; an object that fails
//! validation is left out with an [`ObjectError`] and never affects the others.
pub mod acl;
pub mod addresses;
mod affinity;
mod backends;
mod endpoints;
pub mod health;
mod ingress;
pub mod l7;
mod last_build;
mod listener_map;
mod memo;
mod nodes;
pub mod objects;
mod patch;
mod service;
pub mod slice;
mod vips;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    sync::Arc,
};

use serde::Serialize;

use k8s_openapi::api::core::v1::Service;
pub use listener_map::{Listeners, changed_listeners};
pub use memo::BuildCache;
use objects::ObjectSet;

/// `Kind namespace/name` of a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl ObjectRef {
    /// A cluster-scoped object's reference.
    pub fn default_for(kind: &str, name: &str) -> ObjectRef {
        ObjectRef { kind: kind.into(), namespace: String::new(), name: name.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            // Cluster-scoped.
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// Why one object was rejected: the object, the field or annotation, the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{object}: {field}: {reason}")]
pub struct ObjectError {
    pub object: ObjectRef,
    pub field: String,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => lb_common::PROTO_TCP,
            Protocol::Udp => lb_common::PROTO_UDP,
        }
    }
}

/// How an L4 listener picks a backend for a new flow (CLB `scheduler`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheduler {
    /// Round robin (the CLB default).
    #[default]
    Rr,
    /// Weighted round robin.
    Wrr,
    /// Consistent hash of the source IP (Maglev).
    Sch,
    /// Consistent hash of the 4-tuple (Maglev).
    Tch,
}

/// A backend endpoint of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Backend {
    pub addr: IpAddr,
    pub port: u16,
    pub weight: u32,
}

/// An L4 listener: traffic to `vip:port/protocol` is balanced over `backends`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct L4Listener {
    pub source: ObjectRef,
    pub vip: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub scheduler: Scheduler,
    /// Backends with weight 0 get no new flows; their established flows go on.
    pub backends: Vec<Backend>,
    /// Session persistence per client address (TCP), seconds; 0 = off.
    pub persistence_timeout: u32,
    /// Idle timeout of an established TCP flow, seconds.
    pub established_timeout: u32,
    /// Connection drain: a removed backend keeps its established flows this many seconds;
    /// `None` = drain off (its flows are cut when it is removed).
    pub drain_timeout: Option<u32>,
    pub acl: Option<AclBinding>,
    /// Active health checks of the backends (CLB `health-check-*`); `None` = off.
    pub health_check: Option<health::HealthCheck>,
    /// PROXY protocol header towards the backends (CLB `proxy-protocol`, version from
    /// `lb.dev/proxy-protocol-version`); new flows only.
    pub proxy_protocol: ProxyProtocol,
}

#[cfg(test)]
impl L4Listener {
    /// For tests: a TCP round-robin listener of the Service `t/NAME` on `vip:port`, with the
    /// settings of a Service without annotations but for health checks (off).
    pub fn sample(name: &str, vip: IpAddr, port: u16, backends: Vec<Backend>) -> L4Listener {
        L4Listener {
            source: ObjectRef { kind: "Service".into(), namespace: "t".into(), name: name.into() },
            vip,
            port,
            protocol: Protocol::Tcp,
            scheduler: Scheduler::Rr,
            backends,
            persistence_timeout: 0,
            established_timeout: DEFAULT_ESTABLISHED_TIMEOUT,
            drain_timeout: None,
            acl: None,
            health_check: None,
            proxy_protocol: ProxyProtocol::Off,
        }
    }
}

/// The PROXY protocol header a listener's backends get at the start of every connection
/// (TCP) or datagram (UDP, always v2: v1 has no datagram form).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    #[default]
    Off,
    /// Text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// Binary header.
    V2,
}

/// Default idle timeout of an established TCP flow (CLB `established-timeout` default).
pub const DEFAULT_ESTABLISHED_TIMEOUT: u32 = 900;

/// A listener's use of an ACL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AclBinding {
    /// Name of the `AccessControlList` object (the CLB `acl-id`).
    pub acl: String,
    pub mode: AclMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclMode {
    /// Only listed sources may open flows (an empty list lets everyone in, as CLB does).
    White,
    /// Listed sources may not open flows.
    Black,
}

/// A named list of source prefixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Acl {
    pub source: ObjectRef,
    pub entries: Vec<ipnet::IpNet>,
}

/// (VIP, port, protocol): what identifies a listener on the node.
pub type ListenerId = (IpAddr, u16, Protocol);

impl L4Listener {
    pub fn id(&self) -> ListenerId {
        (self.vip, self.port, self.protocol)
    }
}

/// Everything the node serves.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Model {
    /// Shared, not copied: the model's copies (the one applied, the one wanted, the one with
    /// health applied) and an unchanged Service's next build hold the same listener, and
    /// [`changed_listeners`] compares two versions without reading what they share.
    pub listeners: Listeners,
    pub acls: BTreeMap<String, Acl>,
    /// L7 listeners (ALB Ingresses and CLB http/https ports), by [`l7::listener_key`].
    pub l7: BTreeMap<String, l7::L7Listener>,
    /// ALB Ingresses, validated (their routes are in `l7`).
    pub ingresses: BTreeMap<String, crate::annotations::alb::IngressParse>,
    /// AlbConfigs by name.
    pub alb_configs: BTreeMap<String, crate::annotations::alb::AlbConfig>,
    /// Per multi-cluster gateway AlbConfig (`remote-clusters`): its associated clusters that are
    /// connected (a `--cluster` source that answered), in `remote-clusters` order; the
    /// AlbConfig's `status.loadBalancer.subClusters`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sub_clusters: BTreeMap<String, Vec<String>>,
}

/// Something accepted that has no effect here (a cloud-only annotation, a listener kind not
/// served yet), reported so that it is never silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub object: ObjectRef,
    pub field: String,
    pub note: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.object, self.field, self.note)
    }
}

/// The model built from a set of objects, with every object that was rejected.
#[derive(Debug, Default, Serialize)]
pub struct Build {
    pub model: Model,
    pub errors: Vec<ObjectError>,
    pub notices: Vec<Notice>,
    /// The L7 listeners (keys) where an object that serves on others has its rules in error
    /// (an Ingress's HTTPS listener without a certificate): its last good routes serve there.
    #[serde(skip)]
    pub unserved: Vec<(ObjectRef, String)>,
}

/// What the model depends on besides the objects.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// This node's name (externalTrafficPolicy: Local keeps only its endpoints).
    pub node_name: Option<String>,
    /// The VIPs Services may take and the endpoint addresses that are served.
    pub addresses: addresses::AddressPolicy,
}

/// What the Service builder needs to know of the rest of the model.
pub struct BuildContext {
    pub node_name: Option<String>,
    /// Names of the ACLs that validated.
    pub acls: std::collections::BTreeSet<String>,
    pub addresses: addresses::AddressPolicy,
}

/// Validate `objects` into a model. Services are taken oldest first (`creationTimestamp`, then
/// namespace and name): of two claiming one VIP, port and protocol the older keeps it.
pub fn build(objects: &ObjectSet, opts: &BuildOptions) -> Build {
    build_with(objects, opts, &BTreeMap::new(), &mut BuildCache::default())
}

/// [`build`], where an AccessControlList that is rejected (or that the source could not
/// decode) takes its prefixes from `last_good`, if it has an entry there. What `cache` kept of
/// the last build is reused where its objects are the same.
fn build_with(
    objects: &ObjectSet,
    opts: &BuildOptions,
    last_good: &BTreeMap<String, Acl>,
    cache: &mut BuildCache,
) -> Build {
    if let Some(patched) = cache.patch(objects, opts, last_good) {
        return patched;
    }
    let mut out = Build::default();
    let mut marks = last_build::NoticeMarks::default();
    for obj in &objects.acls {
        match acl::build(obj) {
            Ok(a) => {
                out.model.acls.insert(a.source.name.clone(), a);
            }
            Err(mut e) => {
                if let Some(prev) = last_good.get(&e.object.name) {
                    e.reason = format!("{}; its last good prefixes ({}) stay in force", e.reason, prev.entries.len());
                    out.model.acls.insert(e.object.name.clone(), prev.clone());
                }
                out.errors.push(e);
            }
        }
    }
    for rejected in objects.undecodable.iter().filter(|o| o.kind == acl::KIND) {
        if let Some(prev) = last_good.get(&rejected.name) {
            tracing::warn!(object = %rejected, prefixes = prev.entries.len(), "invalid: its last good prefixes stay in force");
            out.model.acls.entry(rejected.name.clone()).or_insert_with(|| prev.clone());
        }
    }
    if objects.acls_unlisted {
        // Not listed yet: none is known gone or changed; the Services naming them go on.
        for (name, prev) in last_good {
            out.model.acls.entry(name.clone()).or_insert_with(|| prev.clone());
        }
    }
    let created = |s: &k8s_openapi::api::core::v1::Service| s.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let mut services: Vec<_> = objects.services.iter().collect();
    fn seniority(s: &Service) -> (bool, Created, &str, &str) {
        let ns = s.metadata.namespace.as_deref().unwrap_or("default");
        let created = s.metadata.creation_timestamp.as_ref().map(|t| t.0);
        addresses::seniority(created, ns, s.metadata.name.as_deref().unwrap_or_default())
    }
    services.sort_by(|a, b| seniority(a).cmp(&seniority(b)));
    ingress::build(objects, &mut out);
    marks.ingresses = out.notices.len();
    let cx = BuildContext {
        node_name: opts.node_name.clone(),
        acls: out.model.acls.keys().cloned().collect(),
        addresses: opts.addresses.clone(),
    };
    cache.check_context(&opts.node_name, &opts.addresses, &out.model.acls, &objects.nodes, &objects.secrets);
    let clean = cache.clean_slices(&objects.endpoint_slices, &opts.addresses, &mut out.notices);
    marks.slices = out.notices.len();
    let slices = endpoints::index_slices(clean.iter().map(|s| s.as_ref()));
    let mut lookup = l7::Lookup::new(objects, &slices);
    lookup.acls = out.model.acls.iter().map(|(k, a)| (k.clone(), a.entries.clone())).collect();
    let clusters = clean_clusters(objects, &out.model, opts, &mut out.notices);
    marks.clusters = out.notices.len();
    out.model.sub_clusters = sub_clusters(&out.model, objects);
    lookup.clusters =
        clusters.iter().map(|(id, c)| (id.clone(), endpoints::index_slices(c.iter().map(|s| s.as_ref())))).collect();
    let slices_of = |svc: &Service| {
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        endpoints::of_service(&slices, ns, svc.metadata.name.as_deref().unwrap_or_default())
    };
    let good = std::mem::take(&mut cache.good_services);
    let built = cache.services(&services, slices_of, |svc, mine| service::listeners(svc, mine, &cx, &lookup));
    // A rejected Service keeps serving its last good version, built again on the current
    // endpoints and nodes (the listeners it had then would keep the backends of then while
    // its pods roll).
    let mut good_next = HashMap::with_capacity(services.len());
    let rebuilt: Vec<Option<memo::ServiceListeners>> = services
        .iter()
        .zip(&built)
        .map(|(svc, built)| {
            let key = service_key(svc);
            let last = match built {
                Ok(_) => Some((*svc).clone()),
                Err(_) => good.get(&key).cloned(),
            };
            let again = match (built, &last) {
                (Err(_), Some(g)) => service::listeners(g, slices_of(svc), &cx, &lookup).ok().map(Into::into),
                _ => None,
            };
            if let Some(last) = last {
                good_next.insert(key, last);
            }
            again
        })
        .collect();
    let good_changed = good.len() != good_next.len()
        || good_next.iter().any(|(k, s)| !good.get(k).is_some_and(|g| memo::same_as_built(g, s)));
    drop(good);
    // Who holds each (VIP, port, protocol), and since when.
    let mut owners: BTreeMap<ListenerId, &ObjectRef> = BTreeMap::new();
    let mut ages: BTreeMap<(&str, &str), Created> = BTreeMap::new();
    for ((svc, built), rebuilt) in services.iter().zip(built).zip(&rebuilt) {
        let (built, fresh) = match (built, rebuilt) {
            (Ok(built), _) => (built, true),
            (Err(errors), Some(last_good)) => {
                out.errors.extend(errors.iter().cloned());
                (last_good, false)
            }
            (Err(errors), None) => {
                out.errors.extend(errors.iter().cloned());
                continue;
            }
        };
        if fresh {
            out.notices.extend(built.notices.iter().cloned());
        }
        let age = |o: &ObjectRef| ages.get(&(o.namespace.as_str(), o.name.as_str())).copied().flatten();
        let mine = created(svc);
        let listeners = built.listeners.iter().map(|(_, l)| &**l);
        if let Some(err) =
            conflict(listeners, &owners, age, mine).or_else(|| l7_conflict(&built.l7, &out.model, age, mine))
        {
            // A last good version in conflict now is not served: its object's own errors say
            // why it is rejected.
            if fresh {
                out.errors.push(err);
            }
            continue;
        }
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        ages.insert((ns, svc.metadata.name.as_deref().unwrap_or_default()), mine);
        for (name, l) in &built.listeners {
            owners.insert(l.id(), &l.source);
            out.model.listeners.insert(name.clone(), l.clone());
        }
        for l in &built.l7 {
            out.model.l7.insert(l7::listener_key(l.addr, l.port, l.protocol), l.clone());
        }
    }
    marks.services = out.notices.len();
    l7::build_alb(&lookup, &mut out);
    cache.remember(objects, last_good, &services, marks, &out);
    cache.good_services = good_next;
    cache.good_changed |= good_changed;
    out
}

/// (namespace, name) of a Service.
fn service_key(svc: &Service) -> (String, String) {
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    (ns.to_owned(), svc.metadata.name.clone().unwrap_or_default())
}

/// The associated clusters' EndpointSlices (`--cluster`), without refused endpoints; a
/// cluster no AlbConfig lists in `remote-clusters` gets a notice.
fn clean_clusters(
    objects: &ObjectSet,
    model: &Model,
    opts: &BuildOptions,
    notices: &mut Vec<Notice>,
) -> Vec<(String, Vec<std::sync::Arc<slice::EndpointSlice>>)> {
    objects
        .clusters
        .iter()
        .map(|(id, slices)| {
            if !model.alb_configs.values().any(|c| c.remote_clusters.contains(id)) {
                notices.push(Notice {
                    object: ObjectRef { kind: "Cluster".into(), namespace: String::new(), name: id.clone() },
                    field: "--cluster".into(),
                    note: "no AlbConfig lists it in remote-clusters: its endpoints are not used".into(),
                });
            }
            (id.clone(), opts.addresses.clean_slices(slices, notices))
        })
        .collect()
}

/// Each multi-cluster gateway's associated clusters that are connected.
fn sub_clusters(model: &Model, objects: &ObjectSet) -> BTreeMap<String, Vec<String>> {
    let gateways = model.alb_configs.iter().filter(|(_, c)| !c.remote_clusters.is_empty());
    gateways
        .map(|(name, c)| {
            let connected = c.remote_clusters.iter().filter(|id| objects.clusters.contains_key(*id));
            (name.clone(), connected.cloned().collect())
        })
        .collect()
}

/// When a Service was created, by its reference (`None`: no `creationTimestamp`).
type Created = Option<k8s_openapi::jiff::Timestamp>;

/// A CLB http/https listener on a VIP and port an older Service already serves.
fn l7_conflict(
    listeners: &[l7::L7Listener],
    model: &Model,
    age: impl Fn(&ObjectRef) -> Created,
    mine: Created,
) -> Option<ObjectError> {
    listeners.iter().find_map(|l| {
        let taken = model.l7.values().find(|o| o.addr == l.addr && o.port == l.port)?;
        let winner = &taken.sources[0];
        let name = l7::listener_key(l.addr, l.port, l.protocol);
        let e = addresses::VipConflict::new(name, winner, age(winner), mine);
        Some(ObjectError { object: l.sources[0].clone(), field: "spec.ports".into(), reason: e.to_string() })
    })
}

/// An L4 listener on a VIP, port and protocol an older Service already serves.
fn conflict<'l>(
    mut listeners: impl Iterator<Item = &'l L4Listener>,
    owners: &BTreeMap<ListenerId, &ObjectRef>,
    age: impl Fn(&ObjectRef) -> Created,
    mine: Created,
) -> Option<ObjectError> {
    listeners.find_map(|l| {
        let winner = owners.get(&l.id())?;
        let e = addresses::VipConflict::new(listener_name(l), winner, age(winner), mine);
        Some(ObjectError { object: l.source.clone(), field: "spec.ports".into(), reason: e.to_string() })
    })
}

/// An L4 listener that is not the same object in two models: added (no `before`), removed
/// (no `after`) or changed.
pub struct ListenerChange {
    pub name: String,
    pub before: Option<Arc<L4Listener>>,
    pub after: Option<Arc<L4Listener>>,
}

/// A stable, readable key for a listener in the model's JSON.
pub fn listener_name(l: &L4Listener) -> String {
    let proto = match l.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    match l.vip {
        IpAddr::V4(a) => format!("{a}:{}/{proto}", l.port),
        IpAddr::V6(a) => format!("[{a}]:{}/{proto}", l.port),
    }
}

/// The next model of `lb run`: `objects` validated as [`build`] does, except that what is
/// rejected keeps its last good version from `previous`, the model last applied. An
/// AccessControlList that stops validating keeps its prefixes (a whitelist must not close,
/// nor a blacklist open), so the Services naming it still build and update; its error says
/// so. A rejected Service or Ingress keeps its listeners and routes ([`keep_last_good`]).
/// `cache` keeps what the next build can reuse.
pub fn build_next(objects: &ObjectSet, opts: &BuildOptions, previous: &Model, cache: &mut BuildCache) -> Build {
    let restored;
    let last_good = if cache.restored_acls.is_empty() {
        &previous.acls
    } else {
        // Restarted: the last good ACLs of the agent before, where this one has none yet.
        let mut acls = cache.restored_acls.clone();
        acls.extend(previous.acls.iter().map(|(k, a)| (k.clone(), a.clone())));
        restored = acls;
        &restored
    };
    let mut out = build_with(objects, opts, last_good, cache);
    keep_last_good(previous, &mut out);
    out
}

/// Keep serving the last good listeners of every object rejected in `build`, unless another
/// object now serves the same (VIP, port, protocol).
pub fn keep_last_good(previous: &Model, build: &mut Build) {
    if build.errors.is_empty() {
        return;
    }
    // A rejected Service served from its last good version, built again, is in the model.
    let served: std::collections::BTreeSet<&ObjectRef> = build
        .model
        .listeners
        .values()
        .map(|l| &l.source)
        .chain(build.model.l7.values().flat_map(|l| l.routes.iter().chain(&l.canaries)).map(|r| &r.rule.source))
        .collect();
    let rejected: Vec<ObjectRef> =
        build.errors.iter().map(|e| e.object.clone()).filter(|o| !served.contains(o)).collect();
    let taken: std::collections::BTreeSet<ListenerId> = build.model.listeners.values().map(|l| l.id()).collect();
    let kept: Vec<(String, std::sync::Arc<L4Listener>)> = previous
        .listeners
        .iter()
        .filter(|(_, l)| rejected.contains(&l.source) && !taken.contains(&l.id()))
        .map(|(k, l)| (k.clone(), l.clone()))
        .collect();
    for (k, l) in kept {
        // The agent logs the rejection once per change, with `last_good_serving`.
        tracing::debug!(object = %l.source, listener = %k, "object rejected: its last good listener keeps serving");
        build.model.listeners.insert(k, l);
    }
    keep_last_good_routes(previous, build, &rejected);
}

/// The L7 routes of rejected Ingresses and Services keep serving as they last validated; so
/// do those of an object that serves on other listeners, on the listeners where its rules are
/// in error ([`Build::unserved`]).
fn keep_last_good_routes(previous: &Model, build: &mut Build, rejected: &[ObjectRef]) {
    for (key, prev) in &previous.l7 {
        let unserved = |source: &ObjectRef| build.unserved.iter().any(|(o, k)| o == source && k == key);
        let from_rejected = |r: &&l7::Route| rejected.contains(&r.rule.source) || unserved(&r.rule.source);
        let routes: Vec<l7::Route> = prev.routes.iter().filter(from_rejected).cloned().collect();
        let canaries: Vec<l7::Route> = prev.canaries.iter().filter(from_rejected).cloned().collect();
        if routes.is_empty() && canaries.is_empty() {
            continue;
        }
        tracing::debug!(listener = %key, routes = routes.len() + canaries.len(), "object rejected: its last good routes keep serving");
        match build.model.l7.get_mut(key) {
            Some(l) => {
                l.routes.extend(routes);
                l.canaries.extend(canaries);
                l7::sort_routes(&mut l.routes);
                l7::sort_routes(&mut l.canaries);
            }
            None => {
                let mut l = prev.clone();
                l.routes = routes;
                l.canaries = canaries;
                build.model.l7.insert(key.clone(), l);
            }
        }
    }
}
