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

use k8s_openapi::api::{
    core::v1::{Node, Secret, Service},
    discovery::v1::EndpointSlice,
};

use super::{Acl, L4Listener, Notice, ObjectError, addresses::AddressPolicy, l7::L7Listener, listener_name};

/// The build's memory between builds; an empty one (the default) builds everything.
#[derive(Default)]
pub struct BuildCache {
    context: Option<Context>,
    /// Cleaned slices, by the address of the source's slice.
    slices: HashMap<usize, CleanSlice>,
    /// The last build's cleaned slices, alive until the Services were looked up (their entries
    /// name cleaned slices by address).
    retired_slices: HashMap<usize, CleanSlice>,
    /// Built Services, by the address of the source's Service.
    services: HashMap<usize, CachedService>,
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

struct CleanSlice {
    /// Held: its address is the key.
    _source: Arc<EndpointSlice>,
    clean: Arc<EndpointSlice>,
    notices: Vec<Notice>,
}

struct CachedService {
    /// Held: its address is the key.
    _service: Arc<Service>,
    /// The addresses of the cleaned slices it was built from.
    slices: Vec<usize>,
    built: Built,
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
        let listeners = b.listeners.into_iter().map(|l| (listener_name(&l), Arc::new(l))).collect();
        ServiceListeners { listeners, l7: b.l7, notices: b.notices }
    }
}

fn address<T>(object: &T) -> usize {
    object as *const T as usize
}

impl BuildCache {
    /// Forget everything if what every Service depends on changed since the last build.
    pub fn check_context(
        &mut self,
        node_name: &Option<String>,
        addresses: &AddressPolicy,
        acls: &BTreeMap<String, Acl>,
        nodes: &[Node],
        secrets: &[Secret],
    ) {
        let same = self.context.as_ref().is_some_and(|c| {
            c.node_name == *node_name
                && c.addresses == *addresses
                && c.acls == *acls
                && c.nodes == nodes
                && c.secrets == secrets
        });
        if !same {
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
            let entry = self.slices.remove(&key).unwrap_or_else(|| {
                let mut notices = Vec::new();
                let clean = policy.clean_slice(slice, &mut notices);
                CleanSlice { _source: slice.clone(), clean, notices }
            });
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
}
