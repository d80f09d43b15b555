//! The build's short way for the most frequent change, a Service's endpoints: when every object
//! but some EndpointSlices is the same as at the last build, and each changed slice belongs to
//! the same Service as the one it replaces, only those Services are built again and the last
//! build is patched with them — no sort, index or conflict pass over every Service. Anything
//! the short way cannot show to give the full build's result (a listener added or gone, a
//! Service rejected or in conflict, L7 listeners, an Ingress in the Service's namespace that
//! may route to it) takes the full build.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use crate::model::slice::EndpointSlice;

use super::{
    Acl, Build, BuildContext, BuildOptions, ObjectSet,
    endpoints::SliceIndex,
    l7::Lookup,
    last_build::{LastBuild, NoticeMarks, Others, address, addresses},
    memo::{BuildCache, CachedService, CleanSlice, ServiceListeners},
};

/// (namespace, Service name) of a slice.
fn owner(slice: &EndpointSlice) -> Option<(&str, &str)> {
    let svc = slice.service.as_ref()?;
    Some((slice.metadata.namespace.as_deref().unwrap_or("default"), svc.as_str()))
}

fn key((ns, name): (&str, &str)) -> (String, String) {
    (ns.to_owned(), name.to_owned())
}

impl BuildCache {
    /// Keeps what the full build `out` read and gave, to patch it at the next build.
    pub(super) fn remember(
        &mut self,
        objects: &ObjectSet,
        last_good: &BTreeMap<String, Acl>,
        order: &[&Arc<k8s_openapi::api::core::v1::Service>],
        marks: NoticeMarks,
        out: &Build,
    ) {
        let mut service_at: HashMap<(String, String), usize> = HashMap::with_capacity(objects.services.len());
        for (i, s) in objects.services.iter().enumerate() {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            // A name given twice (two files) is no place: its slices take the full build.
            service_at
                .entry(key((ns, s.metadata.name.as_deref().unwrap_or_default())))
                .and_modify(|at| *at = usize::MAX)
                .or_insert(i);
        }
        let mut slices_of: HashMap<(String, String), Vec<usize>> = HashMap::new();
        for (i, s) in objects.endpoint_slices.iter().enumerate() {
            if let Some(o) = owner(s) {
                slices_of.entry(key(o)).or_default().push(i);
            }
        }
        self.last = Some(LastBuild {
            others: Others::of(objects, last_good),
            services: addresses(&objects.services),
            slices: addresses(&objects.endpoint_slices),
            order: order.iter().map(|s| address::<k8s_openapi::api::core::v1::Service>(s)).collect(),
            service_at,
            slices_of,
            marks,
            build: Build {
                model: out.model.clone(),
                errors: out.errors.clone(),
                notices: out.notices.clone(),
                unserved: out.unserved.clone(),
            },
        });
    }

    /// The build of `objects`, patched from the last one, when only some Services' slices
    /// changed and patching gives what the full build would; else `None` (and the last build
    /// is forgotten: the full build that follows remembers its own).
    pub(super) fn patch(
        &mut self,
        objects: &ObjectSet,
        opts: &BuildOptions,
        last_good: &BTreeMap<String, Acl>,
    ) -> Option<Build> {
        let mut last = self.last.take()?;
        let (rebuilt, cleaned) = self.rebuild_touched(&last, objects, opts, last_good)?;
        // The patch holds: the cache takes the new slices and Services, the last build the
        // new listeners.
        // The notices stay as they are when every slice and Service built again gives the
        // ones it gave (the usual endpoint change): no walk over all of them.
        let mut same_notices = true;
        for (i, slice) in cleaned {
            let old = last.slices[i];
            same_notices &= self.slices.get(&old).is_some_and(|o| o.notices == slice.notices);
            last.slices[i] = address::<EndpointSlice>(&slice.source);
            if !last.slices.contains(&old) {
                self.slices.remove(&old);
            }
            self.slices.insert(last.slices[i], slice);
        }
        fn notices(c: &CachedService) -> &[super::Notice] {
            c.built.as_ref().map_or(&[], |b| b.notices.as_slice())
        }
        for (svc, cached) in rebuilt {
            if let Ok(b) = &cached.built {
                for (name, l) in &b.listeners {
                    last.build.model.listeners.insert(name.clone(), l.clone());
                }
            }
            same_notices &= self.services.get(&svc).is_some_and(|o| notices(o) == notices(&cached));
            self.services.insert(svc, cached);
        }
        if !same_notices {
            self.renotice(&mut last, objects);
        }
        self.patched += 1;
        let build = Build {
            model: last.build.model.clone(),
            errors: last.build.errors.clone(),
            notices: last.build.notices.clone(),
            unserved: last.build.unserved.clone(),
        };
        self.last = Some(last);
        Some(build)
    }

    /// The notices again, in the full build's order, from the cached slices and Services.
    fn renotice(&self, last: &mut LastBuild, objects: &ObjectSet) {
        let m = last.marks;
        let old = std::mem::take(&mut last.build.notices);
        let mut notices = old[..m.ingresses].to_vec();
        for s in &objects.endpoint_slices {
            notices.extend(self.slices[&address::<EndpointSlice>(s)].notices.iter().cloned());
        }
        let slices = notices.len();
        notices.extend_from_slice(&old[m.slices..m.clusters]);
        let clusters = notices.len();
        for a in &last.order {
            if let Ok(b) = &self.services[a].built {
                notices.extend(b.notices.iter().cloned());
            }
        }
        let services = notices.len();
        notices.extend_from_slice(&old[m.services..]);
        last.marks = NoticeMarks { ingresses: m.ingresses, slices, clusters, services };
        last.build.notices = notices;
    }

    /// The Services whose slices changed, built again, with the changed slices cleaned (by
    /// position); `None` when the last build cannot be patched with them.
    #[allow(clippy::type_complexity)]
    fn rebuild_touched(
        &self,
        last: &LastBuild,
        objects: &ObjectSet,
        opts: &BuildOptions,
        last_good: &BTreeMap<String, Acl>,
    ) -> Option<(Vec<(usize, CachedService)>, Vec<(usize, CleanSlice)>)> {
        let same_services = last.services.len() == objects.services.len()
            && last.services.iter().zip(&objects.services).all(|(a, s)| *a == address::<_>(&**s));
        // The ACL objects the same first: the last build's validated ACLs are then today's.
        if !same_services
            || last.slices.len() != objects.endpoint_slices.len()
            || !last.others.same(objects, last_good)
            || !self.same_context(
                &opts.node_name,
                &opts.addresses,
                &last.build.model.acls,
                &objects.nodes,
                &objects.secrets,
            )
        {
            return None;
        }
        let changed: Vec<usize> = (0..last.slices.len())
            .filter(|&i| last.slices[i] != address::<EndpointSlice>(&objects.endpoint_slices[i]))
            .collect();
        // Each changed slice replaces one of the same Service (else the index changes shape).
        let mut touched: Vec<(String, String)> = Vec::new();
        for &i in &changed {
            let old = &self.slices.get(&last.slices[i])?.source;
            let new = owner(&objects.endpoint_slices[i])?;
            if owner(old)? != new {
                return None;
            }
            if !touched.iter().any(|t| (t.0.as_str(), t.1.as_str()) == new) {
                touched.push(key(new));
            }
        }
        // An Ingress there may route to the Service (its endpoints are in the L7 routes).
        let ingress_in =
            |ns: &str| objects.ingresses.iter().any(|i| i.metadata.namespace.as_deref().unwrap_or("default") == ns);
        if touched.iter().any(|(ns, _)| ingress_in(ns)) {
            return None;
        }
        let cleaned: Vec<(usize, CleanSlice)> = changed
            .iter()
            .map(|&i| (i, CleanSlice::new(objects.endpoint_slices[i].clone(), &opts.addresses)))
            .collect();
        let clean_at = |i: usize| -> Option<&Arc<EndpointSlice>> {
            match cleaned.iter().find(|(at, _)| *at == i) {
                Some((_, c)) => Some(&c.clean),
                None => self.slices.get(&last.slices[i]).map(|c| &c.clean),
            }
        };
        let cx = BuildContext {
            node_name: opts.node_name.clone(),
            acls: last.build.model.acls.keys().cloned().collect(),
            addresses: opts.addresses.clone(),
        };
        // A Service without L7 listeners reads only the Nodes and ACLs of the lookup.
        let no_slices = SliceIndex::new();
        let lookup = Lookup {
            services: BTreeMap::new(),
            secrets: BTreeMap::new(),
            slices: &no_slices,
            classes: Vec::new(),
            acls: last.build.model.acls.iter().map(|(k, a)| (k.clone(), a.entries.clone())).collect(),
            ingress_created: BTreeMap::new(),
            clusters: BTreeMap::new(),
            nodes: &objects.nodes,
        };
        let mut rebuilt = Vec::with_capacity(touched.len());
        for t in &touched {
            let svc = objects.services.get(*last.service_at.get(t)?)?;
            let positions = last.slices_of.get(t).map(Vec::as_slice).unwrap_or(&[]);
            let clean: Vec<&Arc<EndpointSlice>> = positions.iter().map(|&i| clean_at(i)).collect::<Option<_>>()?;
            let mine: Vec<&EndpointSlice> = clean.iter().map(|s| &***s).collect();
            let Ok(old) = &self.services.get(&address::<_>(&**svc))?.built else { return None };
            let new: ServiceListeners = super::service::listeners(svc, &mine, &cx, &lookup).ok()?.into();
            let model = &last.build.model;
            let same_listeners = old.l7.is_empty()
                && new.l7.is_empty()
                && old.listeners.len() == new.listeners.len()
                && old.listeners.iter().zip(&new.listeners).all(|((n0, l0), (n1, l1))| {
                    // Same names and ids, and held in the last model: it lost no conflict.
                    n0 == n1 && l0.id() == l1.id() && model.listeners.get(n0).is_some_and(|m| Arc::ptr_eq(m, l0))
                });
            if !same_listeners {
                return None;
            }
            let slices = clean.iter().map(|s| address::<EndpointSlice>(s)).collect();
            rebuilt.push((address::<_>(&**svc), CachedService { _service: svc.clone(), slices, built: Ok(new) }));
        }
        Some((rebuilt, cleaned))
    }
}
