//! What `lb run` keeps from one model build to the next, so that a change costs the objects it
//! touches: each EndpointSlice as cleaned of refused addresses, and each Service's listeners
//! (or its errors), reused while the Service and its slices are the same objects as at the
//! last build and nothing every Service depends on (the node, the address policy, the ACLs,
//! the Nodes, the TLS Secrets) changed. Objects are told apart by address: a source hands out
//! the same shared object until it changes, and the cache holds what it keys by address, so
//! no other object can take that address while its entry is here.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use k8s_openapi::api::core::v1::{Node, Secret, Service};

use super::{
    Acl, L4Listener, Notice, ObjectError, addresses::AddressPolicy, l7::L7Listener, last_build::address, listener_name,
    slice::EndpointSlice,
};

/// The build's memory between builds; an empty one (the default) builds everything.
#[derive(Default)]
pub struct BuildCache {
    context: Option<Context>,
    /// Cleaned slices, by the address of the source's slice.
    pub(super) slices: HashMap<usize, CleanSlice>,
    /// The last build's cleaned slices, alive until the Services were looked up (their entries
    /// name cleaned slices by address).
    retired_slices: HashMap<usize, CleanSlice>,
    /// Built Services, by the address of the source's Service.
    pub(super) services: HashMap<usize, CachedService>,
    /// The last build, to patch ([`super::patch`]).
    pub(super) last: Option<super::last_build::LastBuild>,
    /// Builds that were patched (the tests check the short way is taken).
    pub(super) patched: u64,
    /// The last version of each Service that built, by (namespace, name): a Service rejected
    /// now is built again from it on the current endpoints and nodes ([`super::build_next`]).
    /// A change of its status alone (the status writer's patch) is no change of this set.
    pub(super) good_services: HashMap<(String, String), Arc<Service>>,
    /// Whether `good_services` changed since [`BuildCache::good_services_changed`] last said.
    pub(super) good_changed: bool,
    /// The last good AccessControlLists of the agent before a restart ([`BuildCache::restore`]),
    /// until the first model is loaded: a list invalid now keeps their prefixes.
    pub(super) restored_acls: BTreeMap<String, Acl>,
}

/// Whether two versions of a Service build the same: the same object, or one that differs
/// only in what the build does not read (its status, which the status writer patches, and
/// the bookkeeping of its metadata).
pub(super) fn same_as_built(a: &Arc<Service>, b: &Arc<Service>) -> bool {
    Arc::ptr_eq(a, b)
        || (a.spec == b.spec
            && a.metadata.name == b.metadata.name
            && a.metadata.namespace == b.metadata.namespace
            && a.metadata.annotations == b.metadata.annotations
            && a.metadata.labels == b.metadata.labels
            && a.metadata.creation_timestamp == b.metadata.creation_timestamp)
}

/// What every Service's build depends on besides its own objects.
#[derive(PartialEq)]
struct Context {
    node_name: Option<String>,
    addresses: AddressPolicy,
    acls: BTreeMap<String, Acl>,
    nodes: Vec<Node>,
    secrets: Vec<Secret>,
}

pub(super) struct CleanSlice {
    /// Held: its address is the key.
    pub(super) source: Arc<EndpointSlice>,
    pub(super) clean: Arc<EndpointSlice>,
    pub(super) notices: Vec<Notice>,
}

impl CleanSlice {
    /// `source` cleaned by `policy` ([`AddressPolicy::clean_slice`]), with its notices.
    pub(super) fn new(source: Arc<EndpointSlice>, policy: &AddressPolicy) -> CleanSlice {
        let mut notices = Vec::new();
        let clean = policy.clean_slice(&source, &mut notices);
        CleanSlice { source, clean, notices }
    }
}

pub(super) struct CachedService {
    /// Held: its address is the key.
    pub(super) _service: Arc<Service>,
    /// The addresses of the cleaned slices it was built from.
    pub(super) slices: Vec<usize>,
    pub(super) built: Built,
}

/// One Service's listeners, named as in the model, or every reason it cannot be served.
pub type Built = Result<ServiceListeners, Vec<ObjectError>>;

pub struct ServiceListeners {
    pub listeners: Vec<(String, Arc<L4Listener>)>,
    pub l7: Vec<L7Listener>,
    pub notices: Vec<Notice>,
}

impl From<super::service::ServiceBuild> for ServiceListeners {
    fn from(b: super::service::ServiceBuild) -> ServiceListeners {
        // Collected into a Vec of its own size: an in-place collect would keep the buffer of
        // the L4Listeners (~10x the size) for as long as the cache keeps the Service.
        let mut listeners = Vec::with_capacity(b.listeners.len());
        listeners.extend(b.listeners.into_iter().map(|l| (listener_name(&l), Arc::new(l))));
        ServiceListeners { listeners, l7: b.l7, notices: b.notices }
    }
}

impl BuildCache {
    /// Start from the last good Services and AccessControlLists of the agent before a restart
    /// (as [`BuildCache::good_services_changed`] and the served ACLs gave them): an object
    /// rejected at the first builds serves its last good version, as it did before the
    /// restart, instead of going dark.
    pub fn restore(&mut self, services: Vec<Service>, acls: Vec<Acl>) {
        for svc in services {
            let key = super::service_key(&svc);
            self.good_services.insert(key, Arc::new(svc));
        }
        self.restored_acls = acls.into_iter().map(|a| (a.source.name.clone(), a)).collect();
        // The first build's set is written whole (the writer starts from none).
        self.good_changed = true;
    }

    /// The first model is loaded: its ACLs are the last good ones from now on.
    pub fn forget_restored(&mut self) {
        self.restored_acls.clear();
    }

    /// The last good version of every Service, sorted by namespace and name, when it changed
    /// since the last call (a Service added, gone, or changed and valid).
    pub fn good_services_changed(&mut self) -> Option<Vec<Arc<Service>>> {
        if !std::mem::take(&mut self.good_changed) {
            return None;
        }
        let mut good: Vec<(&(String, String), &Arc<Service>)> = self.good_services.iter().collect();
        good.sort_unstable_by(|a, b| a.0.cmp(b.0));
        Some(good.into_iter().map(|(_, s)| s.clone()).collect())
    }

    /// Forget everything if what every Service depends on changed since the last build.
    pub fn check_context(
        &mut self,
        node_name: &Option<String>,
        addresses: &AddressPolicy,
        acls: &BTreeMap<String, Acl>,
        nodes: &[Node],
        secrets: &[Secret],
    ) {
        if !self.same_context(node_name, addresses, acls, nodes, secrets) {
            self.slices.clear();
            self.services.clear();
            self.context = Some(Context {
                node_name: node_name.clone(),
                addresses: addresses.clone(),
                acls: acls.clone(),
                nodes: nodes.to_vec(),
                secrets: secrets.to_vec(),
            });
        }
    }

    /// What every Service depends on is what the cache's entries were built with.
    pub(super) fn same_context(
        &self,
        node_name: &Option<String>,
        addresses: &AddressPolicy,
        acls: &BTreeMap<String, Acl>,
        nodes: &[Node],
        secrets: &[Secret],
    ) -> bool {
        self.context.as_ref().is_some_and(|c| {
            c.node_name == *node_name
                && c.addresses == *addresses
                && c.acls == *acls
                && c.nodes == nodes
                && c.secrets == secrets
        })
    }

    /// `slices` cleaned by `policy` ([`AddressPolicy::clean_slice`]); a slice seen at the last
    /// build comes back as it was cleaned then, with its notices.
    pub fn clean_slices(
        &mut self,
        slices: &[Arc<EndpointSlice>],
        policy: &AddressPolicy,
        notices: &mut Vec<Notice>,
    ) -> Vec<Arc<EndpointSlice>> {
        let mut next = HashMap::with_capacity(slices.len());
        let mut out = Vec::with_capacity(slices.len());
        for slice in slices {
            let key = address::<EndpointSlice>(slice);
            if let Some(seen) = next.get(&key) {
                // The same object twice: one entry.
                let seen: &CleanSlice = seen;
                notices.extend(seen.notices.iter().cloned());
                out.push(seen.clean.clone());
                continue;
            }
            let entry = self.slices.remove(&key).unwrap_or_else(|| CleanSlice::new(slice.clone(), policy));
            notices.extend(entry.notices.iter().cloned());
            out.push(entry.clean.clone());
            next.insert(key, entry);
        }
        self.retired_slices = std::mem::replace(&mut self.slices, next);
        out
    }

    /// Each of `services` built: from the cache where the Service and its cleaned slices
    /// (`slices_of`) are the objects it was built from, else by `build`. Services not in
    /// `services` are forgotten.
    pub fn services<'x>(
        &mut self,
        services: &[&'x Arc<Service>],
        slices_of: impl Fn(&Service) -> &'x [&'x EndpointSlice],
        mut build: impl FnMut(&Service, &'x [&'x EndpointSlice]) -> Result<super::service::ServiceBuild, Vec<ObjectError>>,
    ) -> Vec<&Built> {
        // Entries are replaced where they changed and dropped where their Service went: an
        // unchanged Service costs a lookup.
        let mut seen = std::collections::HashSet::with_capacity(services.len());
        for &svc in services {
            let key = address::<Service>(svc);
            seen.insert(key);
            let slices = slices_of(svc);
            let same_slices = |c: &CachedService| {
                c.slices.len() == slices.len() && c.slices.iter().zip(slices).all(|(a, b)| *a == address(*b))
            };
            if !self.services.get(&key).is_some_and(same_slices) {
                let entry = CachedService {
                    _service: svc.clone(),
                    slices: slices.iter().map(|s| address(*s)).collect(),
                    built: build(svc, slices).map(ServiceListeners::from),
                };
                self.services.insert(key, entry);
            }
        }
        if seen.len() != self.services.len() {
            self.services.retain(|key, _| seen.contains(key));
        }
        self.retired_slices = HashMap::new();
        services.iter().map(|svc| &self.services[&address::<Service>(svc)].built).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, sync::Arc};

    use crate::{
        manifests,
        model::{self, BuildCache, BuildOptions, Model, ObjectSet},
    };

    fn objects(yaml: &str) -> ObjectSet {
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("t.yaml"), yaml, &mut set);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        set
    }

    fn service(name: &str, vip: &str, endpoint: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec: {{type: LoadBalancer, loadBalancerIP: {vip}, ports: [{{name: http, port: 80}}]}}\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}-1, namespace: shop, labels: {{kubernetes.io/service-name: {name}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{endpoint}\"]}}]\n---\n"
        )
    }

    /// A change rebuilds the Service it touches; the others' listeners are the objects of the
    /// last build. A change of what every Service depends on (the node's addresses) rebuilds
    /// them all, and an unchanged build gives what a build without a cache gives.
    #[test]
    fn a_change_rebuilds_only_the_services_it_touches() {
        let (a, b) = (service("a", "198.18.100.1", "10.0.0.1"), service("b", "198.18.100.2", "10.0.0.2"));
        let mut set = objects(&format!("{a}{b}"));
        let opts = BuildOptions::default();
        let mut cache = BuildCache::default();
        let first = model::build_next(&set, &opts, &Model::default(), &mut cache);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let listener = |m: &Model, vip: &str| m.listeners[&format!("{vip}:80/tcp")].clone();

        // b's EndpointSlice changes (a new object, as the source hands out).
        let changed = objects(&service("b", "198.18.100.2", "10.0.0.3"));
        set.endpoint_slices[1] = changed.endpoint_slices[0].clone();
        let next = model::build_next(&set, &opts, &first.model, &mut cache);
        assert!(Arc::ptr_eq(&listener(&first.model, "198.18.100.1"), &listener(&next.model, "198.18.100.1")));
        let b_next = listener(&next.model, "198.18.100.2");
        assert!(!Arc::ptr_eq(&listener(&first.model, "198.18.100.2"), &b_next));
        assert_eq!(b_next.backends[0].addr.to_string(), "10.0.0.3");
        assert_eq!(next.model, model::build(&set, &opts).model, "the same model as a build from scratch");

        // The node takes b's VIP: every Service is built again, and b is refused.
        let mut moved = opts.clone();
        moved.addresses.node_addresses.insert("198.18.100.2".parse().unwrap());
        let again = model::build_next(&set, &moved, &next.model, &mut cache);
        assert!(!Arc::ptr_eq(&listener(&next.model, "198.18.100.1"), &listener(&again.model, "198.18.100.1")));
        assert_eq!(again.errors.len(), 1, "{:?}", again.errors);
        assert!(again.errors[0].to_string().contains("address of this node"), "{}", again.errors[0]);
    }

    /// A rejected Service keeps serving its last good version, built again on the current
    /// endpoints: its pods roll while it stays rejected, and new flows follow them (the
    /// listener it had would keep sending to the deleted pods). L4 and CLB http listeners.
    #[test]
    fn a_rejected_service_serves_its_last_good_version_on_the_current_endpoints() {
        let http = "annotations: {service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: \"http:81\"}";
        let good = service("a", "198.18.100.1", "10.0.0.1")
            .replace("metadata: {name: a, namespace: shop}", &format!("metadata: {{name: a, namespace: shop, {http}}}"))
            .replace("ports: [{name: http, port: 80}]", "ports: [{name: http, port: 80}, {name: web, port: 81}]")
            .replace("ports: [{name: http, port: 8080}]", "ports: [{name: http, port: 8080}, {name: web, port: 8081}]");
        let bad = good.replace(
            "\"http:81\"",
            "\"http:81\", service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler: fastest",
        );
        let opts = BuildOptions::default();
        let mut cache = BuildCache::default();
        let first = model::build_next(&objects(&good), &opts, &Model::default(), &mut cache);
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let served = |m: &Model| {
            let l4: Vec<String> =
                m.listeners["198.18.100.1:80/tcp"].backends.iter().map(|b| b.addr.to_string()).collect();
            let l7 = &m.l7["198.18.100.1:81/http"];
            let routes: Vec<Vec<String>> = l7
                .routes
                .iter()
                .map(|r| r.upstreams[0].endpoints.iter().map(|e| e.addr.ip().to_string()).collect())
                .collect();
            (l4, routes)
        };
        let rejected = model::build_next(&objects(&bad), &opts, &first.model, &mut cache);
        assert_eq!(rejected.errors.len(), 1, "{:?}", rejected.errors);
        assert_eq!(served(&rejected.model), (vec!["10.0.0.1".to_string()], vec![vec!["10.0.0.1".to_string()]]));
        let rolled =
            model::build_next(&objects(&bad.replace("10.0.0.1", "10.0.0.7")), &opts, &rejected.model, &mut cache);
        assert_eq!(rolled.errors.len(), 1, "still rejected: {:?}", rolled.errors);
        assert_eq!(served(&rolled.model), (vec!["10.0.0.7".to_string()], vec![vec!["10.0.0.7".to_string()]]));
        // Its last good version is kept for as long as it is rejected, across builds.
        let again = model::build_next(&objects(&bad.replace("10.0.0.1", "10.0.0.8")), &opts, &rolled.model, &mut cache);
        assert_eq!(served(&again.model), (vec!["10.0.0.8".to_string()], vec![vec!["10.0.0.8".to_string()]]));
    }

    /// A Service whose slice loses refused addresses is cleaned once: the next build reuses it.
    #[test]
    fn cleaned_slices_and_their_notices_are_reused() {
        let set = objects(
            &service("a", "198.18.100.1", "127.0.0.1").replace("[\"127.0.0.1\"]", "[\"127.0.0.1\", \"10.0.0.9\"]"),
        );
        let opts = BuildOptions::default();
        let mut cache = BuildCache::default();
        let first = model::build_next(&set, &opts, &Model::default(), &mut cache);
        let next = model::build_next(&set, &opts, &first.model, &mut cache);
        let l = "198.18.100.1:80/tcp";
        assert!(Arc::ptr_eq(&first.model.listeners[l], &next.model.listeners[l]));
        assert_eq!(next.model.listeners[l].backends.len(), 1);
        assert_eq!(first.notices, next.notices, "the notice of the refused address, at every build");
        assert!(next.notices.iter().any(|n| n.note.contains("127.0.0.1")), "{:?}", next.notices);
    }

    /// The short way ([`super::super::patch`]): a Service's endpoints changing patch the last
    /// build, and each patched build is what a build from scratch gives (model, errors, notices,
    /// in order), through changes that add and clear notices, with a Service that lost a
    /// conflict, and with an Ingress in a namespace (which takes the full build).
    #[test]
    fn patched_builds_are_what_a_build_from_scratch_gives() {
        let mut yaml: String =
            (0..12).map(|i| service(&format!("s{i}"), &format!("198.18.100.{i}"), "10.0.0.1")).collect();
        // s12 claims s3's VIP and port (with a creationTimestamp): one of the two loses.
        yaml += &service("s12", "198.18.100.3", "10.0.0.1")
            .replace("namespace: shop}", "namespace: shop, creationTimestamp: \"2030-01-01T00:00:00Z\"}");
        let mut set = objects(&yaml);
        let opts = BuildOptions::default();
        let mut cache = BuildCache::default();
        let mut last = model::build_next(&set, &opts, &Model::default(), &mut cache);
        assert_eq!(last.errors.len(), 1, "{:?}", last.errors);
        let slice_of = |set: &ObjectSet, name: &str| {
            set.endpoint_slices.iter().position(|s| s.metadata.name.as_deref() == Some(&format!("{name}-1"))).unwrap()
        };
        // s3 and s12 claim one VIP and port: the one that lost is rejected.
        let lost = last.errors[0].object.name.clone();
        let won = if lost == "s3" { "s12" } else { "s3" };
        // (Service, its new endpoint addresses, patched?)
        let steps = [
            ("s1", "10.0.0.2", true),
            ("s5", "127.0.0.1\", \"10.0.0.5", true),
            ("s5", "10.0.0.6", true),
            (lost.as_str(), "10.0.0.7", false),
            (won, "10.0.0.8\", \"10.0.0.9", true),
            ("s1", "10.0.0.2", true),
        ];
        for (round, (name, endpoints, patched)) in steps.into_iter().enumerate() {
            let vip = format!("198.18.100.{}", name[1..].parse::<u8>().unwrap() % 12);
            let changed = objects(&service(name, &vip, endpoints));
            let at = slice_of(&set, name);
            set.endpoint_slices[at] = changed.endpoint_slices[0].clone();
            let before = cache.patched;
            let next = model::build_next(&set, &opts, &last.model, &mut cache);
            assert_eq!(cache.patched - before, u64::from(patched), "round {round}: patched");
            let scratch = model::build(&set, &opts);
            assert_eq!(next.model, scratch.model, "round {round}: model");
            assert_eq!(next.errors, scratch.errors, "round {round}: errors");
            assert_eq!(next.notices, scratch.notices, "round {round}: notices");
            last = next;
        }
        assert!(last.notices.is_empty(), "the refused address's notice went with it: {:?}", last.notices);

        // An Ingress in the namespace may route to the Service: the full build.
        let ingress =
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: shop}\nspec: {}\n";
        set.ingresses = objects(ingress).ingresses;
        last = model::build_next(&set, &opts, &last.model, &mut cache);
        let at = slice_of(&set, "s2");
        set.endpoint_slices[at] = objects(&service("s2", "198.18.100.2", "10.0.0.4")).endpoint_slices[0].clone();
        let before = cache.patched;
        let next = model::build_next(&set, &opts, &last.model, &mut cache);
        assert_eq!(cache.patched, before, "not patched");
        assert_eq!(next.model, model::build(&set, &opts).model);
    }

    /// A Service name given twice (two files, two VIPs) builds both from the same slices: a
    /// change of those slices takes the full build.
    #[test]
    fn a_service_given_twice_is_not_patched() {
        let mut set = objects(&(service("a", "198.18.100.1", "10.0.0.1") + &service("b", "198.18.100.2", "10.0.0.1")));
        let twin = objects(&service("a", "198.18.100.3", "10.0.0.1"));
        set.services.push(twin.services[0].clone());
        let opts = BuildOptions::default();
        let mut cache = BuildCache::default();
        let first = model::build_next(&set, &opts, &Model::default(), &mut cache);
        set.endpoint_slices[0] = objects(&service("a", "198.18.100.1", "10.0.0.7")).endpoint_slices[0].clone();
        let next = model::build_next(&set, &opts, &first.model, &mut cache);
        assert_eq!(cache.patched, 0);
        let scratch = model::build(&set, &opts);
        assert_eq!((next.model, next.errors), (scratch.model, scratch.errors));
    }
}
