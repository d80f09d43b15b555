//! `status.loadBalancer.ingress` of the served Services (their VIPs) and ALB Ingresses (this
//! node's addresses), merge-patched on the status subresource only when the cached object
//! differs, and not again until the watch shows the object changed.
use std::collections::HashMap;

use k8s_openapi::api::{
    core::v1::{Node, Service},
    networking::v1::Ingress,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;

use super::{
    outcome::Report,
    watch::{self, Stores},
};
use crate::model::ObjectRef;

/// What was last written to one object.
struct Written {
    ips: Vec<String>,
    /// The object's resourceVersion when we wrote: until the cache shows another one, the
    /// write is in flight and not repeated.
    resource_version: Option<String>,
}

pub struct StatusWriter {
    client: Client,
    stores: Stores,
    node_name: Option<String>,
    node_addresses: Option<Vec<String>>,
    written: HashMap<ObjectRef, Written>,
}

impl StatusWriter {
    pub fn new(client: Client, stores: Stores, node_name: Option<String>) -> StatusWriter {
        StatusWriter { client, stores, node_name, node_addresses: None, written: HashMap::new() }
    }

    pub async fn sync(&mut self, report: &Report) {
        for (object, vips) in &report.services {
            let Some(svc) = watch::cached(&self.stores.services, (), object) else { continue };
            let current = service_ips(&svc);
            let desired = sorted(vips.iter().map(ToString::to_string));
            let rv = svc.metadata.resource_version.clone();
            if self.needs_write(object, &current, &desired, &rv) {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &object.namespace);
                self.write(api, object, desired, rv).await;
            }
        }
        if report.ingresses.is_empty() {
            return;
        }
        let Some(desired) = self.node_addresses().await else { return };
        for object in &report.ingresses {
            let Some(ing) = watch::cached(&self.stores.ingresses, (), object) else { continue };
            let current = ingress_ips(&ing);
            let rv = ing.metadata.resource_version.clone();
            if self.needs_write(object, &current, &desired, &rv) {
                let api: Api<Ingress> = Api::namespaced(self.client.clone(), &object.namespace);
                self.write(api, object, desired.clone(), rv).await;
            }
        }
    }

    fn needs_write(&self, object: &ObjectRef, current: &[String], desired: &[String], rv: &Option<String>) -> bool {
        if current == desired {
            return false;
        }
        !self.written.get(object).is_some_and(|w| w.ips == desired && &w.resource_version == rv)
    }

    async fn write<K>(&mut self, api: Api<K>, object: &ObjectRef, ips: Vec<String>, rv: Option<String>)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let ingress: Vec<_> = ips.iter().map(|ip| json!({ "ip": ip })).collect();
        let patch = json!({ "status": { "loadBalancer": { "ingress": ingress } } });
        let params = PatchParams { field_manager: Some("lb".into()), ..Default::default() };
        match api.patch_status(&object.name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(%object, ingress = ?ips, "status.loadBalancer written");
                self.written.insert(object.clone(), Written { ips, resource_version: rv });
            }
            Err(e) => {
                tracing::warn!(%object, error = %e, "cannot write status.loadBalancer; retrying with the next change")
            }
        }
    }

    /// This node's ExternalIP addresses, else its InternalIP ones (read once).
    async fn node_addresses(&mut self) -> Option<Vec<String>> {
        if let Some(a) = &self.node_addresses {
            return Some(a.clone());
        }
        let Some(name) = &self.node_name else {
            tracing::warn!("no --node-name: Ingress status (the node's addresses) is not written");
            return None;
        };
        let node = match Api::<Node>::all(self.client.clone()).get(name).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(node = %name, error = %e, "cannot read this Node's addresses for Ingress status");
                return None;
            }
        };
        let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
        let of = |t: &str| -> Vec<String> {
            let mut v: Vec<String> = addresses.iter().filter(|a| a.type_ == t).map(|a| a.address.clone()).collect();
            v.sort();
            v
        };
        let ips = Some(of("ExternalIP")).filter(|v| !v.is_empty()).unwrap_or_else(|| of("InternalIP"));
        if ips.is_empty() {
            tracing::warn!(node = %name, "the Node has no ExternalIP or InternalIP address: Ingress status not written");
            return None;
        }
        self.node_addresses = Some(ips.clone());
        Some(ips)
    }
}

/// A Service's status addresses, sorted; hostname entries as `hostname:NAME` (never equal
/// to what `lb` writes).
fn service_ips(svc: &Service) -> Vec<String> {
    let entries = svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    sorted(entries.into_iter().flatten().map(|i| entry(i.ip.as_deref(), i.hostname.as_deref())))
}

fn ingress_ips(ing: &Ingress) -> Vec<String> {
    let entries = ing.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.as_ref());
    sorted(entries.into_iter().flatten().map(|i| entry(i.ip.as_deref(), i.hostname.as_deref())))
}

fn entry(ip: Option<&str>, hostname: Option<&str>) -> String {
    match (ip, hostname) {
        (Some(ip), None) => ip.to_string(),
        (ip, hostname) => format!("hostname:{}/{}", hostname.unwrap_or_default(), ip.unwrap_or_default()),
    }
}

fn sorted(it: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = it.collect();
    v.sort();
    v
}
