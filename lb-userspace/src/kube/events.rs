//! Kubernetes Events for rejected objects: one Warning per (object, field, reason) when it
//! first appears, not again while it persists (its counts may move); again if it goes away
//! and comes back.
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use super::watch::{self, Stores};
use crate::model::{ObjectError, ObjectRef, acl};

/// Events' `note` is limited to 1 kB.
const MAX_NOTE: usize = 1024;

type Key = (ObjectRef, String, String);

/// Publishes an Event for each new error.
pub struct EventWriter {
    client: Client,
    reporter: Reporter,
    stores: Stores,
    /// Errors already published (and still present).
    emitted: BTreeSet<Key>,
    /// Notes start with this (the node's errors: "on node NAME: ").
    prefix: String,
}

impl EventWriter {
    pub fn new(client: Client, stores: Stores, instance: String) -> EventWriter {
        let reporter = Reporter { controller: super::CONTROLLER.into(), instance: Some(instance) };
        EventWriter { client, reporter, stores, emitted: BTreeSet::new(), prefix: String::new() }
    }

    /// A writer for the errors of one node only: each note says which node.
    pub fn for_node(client: Client, stores: Stores, node: String) -> EventWriter {
        let prefix = format!("on node {node}: ");
        EventWriter { prefix, ..EventWriter::new(client, stores, node) }
    }

    /// Publish the errors not published yet; forget those that are gone. A failed publish
    /// is logged and retried with the next report.
    /// Records the errors not recorded yet; whether every one could be.
    pub async fn sync(&mut self, errors: &[ObjectError]) -> bool {
        let mut all = true;
        let mut current: BTreeMap<Key, &ObjectError> = BTreeMap::new();
        for e in errors {
            current.entry(key(e)).or_insert(e);
        }
        self.emitted.retain(|k| current.contains_key(k));
        for (key, e) in current {
            if self.emitted.contains(&key) {
                continue;
            }
            let (object, field, reason) = (&e.object, &e.field, &e.reason);
            let event = Event {
                type_: EventType::Warning,
                reason: event_reason(field, reason).into(),
                note: Some(truncate(format!("{}{field}: {reason}", self.prefix))),
                action: "Validate".into(),
                secondary: None,
            };
            // A recorder per Event: the shared one would merge two errors of one object
            // with the same reason into one series (it keys on the reason, not the note).
            let recorder = Recorder::new(self.client.clone(), self.reporter.clone());
            match recorder.publish(&event, &reference(&self.stores, object)).await {
                Ok(()) => {
                    self.emitted.insert(key);
                }
                Err(e) => {
                    tracing::warn!(%object, error = %e, "cannot record the rejection as an Event");
                    all = false;
                }
            }
        }
        all
    }
}

/// What tells one error from another for Events: its object, field, and reason with every
/// number in it as `#`. A reason that only counts something ("backend table full (12 entries
/// needed, 3 free)", "1100 ready endpoints") is one error while the counts move, not a new
/// Event at every change.
fn key(e: &ObjectError) -> Key {
    let mut reason = String::with_capacity(e.reason.len());
    for c in e.reason.chars() {
        match c {
            '0'..='9' if reason.ends_with('#') => {}
            '0'..='9' => reason.push('#'),
            c => reason.push(c),
        }
    }
    (e.object.clone(), e.field.clone(), reason)
}

/// The Event's `reason` for an error on `field`.
pub fn event_reason(field: &str, reason: &str) -> &'static str {
    if reason.contains("already served for") {
        "ListenerConflict"
    } else if reason.contains("never a VIP")
        || reason.contains("outside every --vip-pool")
        || reason.contains("address of this node")
    {
        // model::addresses::VipRefused: the VIP is not one this node may serve.
        "VipNotAllowed"
    } else if reason.contains("not loaded into the datapath") || reason.contains("not loaded into the L7 proxy") {
        // Valid, but the node's datapath or L7 proxy could not take it (dataplane::Rejected,
        // a listener whose port another program holds).
        "NotLoaded"
    } else if field.contains("annotations[")
        || (field.contains('/') && !["spec", "metadata", "status"].iter().any(|p| field.starts_with(p)))
    {
        "InvalidAnnotation"
    } else if field.starts_with("spec") || field.starts_with("metadata") {
        "InvalidSpec"
    } else {
        "Invalid"
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_NOTE {
        let mut end = MAX_NOTE - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// The object as Events refer to it, with its uid when the cache has it.
pub fn reference(stores: &Stores, object: &ObjectRef) -> ObjectReference {
    let uid =
        |meta: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>| meta.and_then(|m| m.uid.clone());
    let (api_version, uid) = match object.kind.as_str() {
        "Service" => ("v1", uid(watch::cached(&stores.services, (), object).as_deref().map(|o| &o.metadata))),
        "Ingress" => {
            ("networking.k8s.io/v1", uid(watch::cached(&stores.ingresses, (), object).as_deref().map(|o| &o.metadata)))
        }
        "IngressClass" => (
            "networking.k8s.io/v1",
            uid(watch::cached(&stores.ingress_classes, (), object).as_deref().map(|o| &o.metadata)),
        ),
        "AlbConfig" => (
            "alibabacloud.com/v1",
            uid(watch::cached(&stores.alb_configs, watch::alb_config_resource(), object)
                .as_deref()
                .map(|o| &o.metadata)),
        ),
        acl::KIND => (
            acl::API_VERSION,
            uid(watch::cached(&stores.acls, watch::acl_resource(), object).as_deref().map(|o| &o.metadata)),
        ),
        _ => ("", None),
    };
    ObjectReference {
        api_version: (!api_version.is_empty()).then(|| api_version.into()),
        kind: Some(object.kind.clone()),
        name: Some(object.name.clone()),
        namespace: (!object.namespace.is_empty()).then(|| object.namespace.clone()),
        uid,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::{event_reason, key, truncate};
    use crate::model::{ObjectError, ObjectRef};

    /// An error whose counts move is one Event; another reason or field is another.
    #[test]
    fn errors_that_differ_only_in_their_counts_are_one_event() {
        let e = |field: &str, reason: &str| ObjectError {
            object: ObjectRef { kind: "Service".into(), namespace: "shop".into(), name: "web".into() },
            field: field.into(),
            reason: reason.into(),
        };
        let full = |needed: u32, free: u32| {
            format!("listener 10.0.0.1:80/tcp not loaded: backend table full ({needed} entries needed, {free} free)")
        };
        assert_eq!(key(&e("spec.ports", &full(1200, 3))), key(&e("spec.ports", &full(1201, 17))));
        assert_eq!(
            key(&e("spec.ports", "1100 ready endpoints, at most 1024 per listener")),
            key(&e("spec.ports", "1099 ready endpoints, at most 1024 per listener"))
        );
        assert_ne!(key(&e("spec.ports", &full(1200, 3))), key(&e("spec.loadBalancerIP", &full(1200, 3))));
        assert_ne!(key(&e("spec.ports", "no VIP")), key(&e("spec.ports", "no port")));
    }

    #[test]
    fn reasons_follow_the_field() {
        let clb = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-persistence-timeout";
        assert_eq!(event_reason(clb, "4000 is outside 0..=3600"), "InvalidAnnotation");
        assert_eq!(event_reason("metadata.annotations[lb.dev/endpoint-weights]", "x"), "InvalidAnnotation");
        assert_eq!(event_reason("spec.loadBalancerIP", "no VIP"), "InvalidSpec");
        let refused = [
            "127.0.0.5 is never a VIP (loopback address)",
            "198.18.1.1 is outside every --vip-pool (10.0.0.0/8)",
            "10.0.0.1 is an address of this node: the datapath would take the node's own traffic",
        ];
        for reason in refused {
            assert_eq!(event_reason("spec.loadBalancerIP", reason), "VipNotAllowed", "{reason}");
            assert_eq!(event_reason("status.loadBalancer.ingress[].ip", reason), "VipNotAllowed", "{reason}");
        }
        assert_eq!(event_reason("spec.ports", "10.0.0.1:80/Tcp is already served for Service a/b"), "ListenerConflict");
        let full = "listener 10.0.0.1:80/tcp not loaded into the datapath: backend table full (16381 entries needed, 0 free): raise --backend-table-entries; not served";
        assert_eq!(event_reason("spec.ports", full), "NotLoaded");
    }

    #[test]
    fn long_notes_are_cut_at_a_char_boundary() {
        let s = truncate("é".repeat(600));
        assert!(s.len() <= super::MAX_NOTE && s.ends_with("..."), "{}", s.len());
    }
}
