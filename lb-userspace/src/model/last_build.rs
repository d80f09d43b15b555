//! What the last build read and gave, kept by the [`BuildCache`](super::BuildCache) so that
//! [`super::patch`] can patch it: the objects as they were (the Services and EndpointSlices by
//! address), where each Service and its slices are, and the build itself.
use std::{collections::BTreeMap, collections::HashMap, sync::Arc};

use crate::model::slice::EndpointSlice;

use super::{Acl, Build, ObjectSet};

/// An object's address: the key of what is kept of it (the keeper holds the object, so no
/// other object takes that address meanwhile).
pub(super) fn address<T>(object: &T) -> usize {
    object as *const T as usize
}

/// What the last full (or patched) build read and gave, to patch it.
pub(super) struct LastBuild {
    /// Everything but the Services and EndpointSlices, as it was.
    pub(super) others: Others,
    /// The Services (by address, as `objects.services`) and the EndpointSlices (by address).
    pub(super) services: Vec<usize>,
    pub(super) slices: Vec<usize>,
    /// The Services in build order (oldest first), by address.
    pub(super) order: Vec<usize>,
    /// Where each Service is in `objects.services`, by (namespace, name).
    pub(super) service_at: HashMap<(String, String), usize>,
    /// The slices of each Service (positions in `objects.endpoint_slices`), by (namespace, name).
    pub(super) slices_of: HashMap<(String, String), Vec<usize>>,
    /// Where the notices of each step end: the Ingresses, the slices, the clusters, the Services.
    pub(super) marks: NoticeMarks,
    pub(super) build: Build,
}

/// Lengths of `Build::notices` after each step that adds to it.
#[derive(Clone, Copy, Default)]
pub(super) struct NoticeMarks {
    pub(super) ingresses: usize,
    pub(super) slices: usize,
    pub(super) clusters: usize,
    pub(super) services: usize,
}

/// The objects every build reads besides the Services and EndpointSlices and what the
/// cache's context holds (the node, the address policy, the validated ACLs, the Nodes, the
/// Secrets: [`BuildCache::same_context`](super::BuildCache::same_context)).
#[derive(PartialEq)]
pub(super) struct Others {
    pub(super) last_good_acls: BTreeMap<String, Acl>,
    pub(super) acls: Vec<super::acl::AclObject>,
    pub(super) acls_unlisted: bool,
    pub(super) undecodable: Vec<super::ObjectRef>,
    pub(super) ingresses: Vec<k8s_openapi::api::networking::v1::Ingress>,
    pub(super) ingress_classes: Vec<k8s_openapi::api::networking::v1::IngressClass>,
    pub(super) alb_configs: Vec<serde_json::Value>,
    pub(super) clusters: BTreeMap<String, Vec<usize>>,
}

impl Others {
    pub(super) fn of(objects: &ObjectSet, last_good: &BTreeMap<String, Acl>) -> Others {
        Others {
            last_good_acls: last_good.clone(),
            acls: objects.acls.clone(),
            acls_unlisted: objects.acls_unlisted,
            undecodable: objects.undecodable.clone(),
            ingresses: objects.ingresses.clone(),
            ingress_classes: objects.ingress_classes.clone(),
            alb_configs: objects.alb_configs.clone(),
            clusters: clusters(objects),
        }
    }

    /// The same as `objects` hold now (compared without copying them).
    pub(super) fn same(&self, objects: &ObjectSet, last_good: &BTreeMap<String, Acl>) -> bool {
        self.last_good_acls == *last_good
            && self.acls == objects.acls
            && self.acls_unlisted == objects.acls_unlisted
            && self.undecodable == objects.undecodable
            && self.ingresses == objects.ingresses
            && self.ingress_classes == objects.ingress_classes
            && self.alb_configs == objects.alb_configs
            && self.clusters == clusters(objects)
    }
}

fn clusters(objects: &ObjectSet) -> BTreeMap<String, Vec<usize>> {
    objects
        .clusters
        .iter()
        .map(|(id, s)| (id.clone(), s.iter().map(|s| address::<EndpointSlice>(s)).collect()))
        .collect()
}

pub(super) fn addresses<T>(objects: &[Arc<T>]) -> Vec<usize> {
    objects.iter().map(|o| address::<T>(o)).collect()
}
