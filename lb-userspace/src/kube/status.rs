//! `status.loadBalancer.ingress` of the served Services and ALB Ingresses, merge-patched on
//! the status subresource only when the cached object differs, and not again until the
//! watch shows the object changed.
//!
//! - A Service gets its VIPs with `ipMode: Proxy` (kube-proxy then sends in-cluster clients
//!   to the VIP instead of short-cutting to the endpoints, so they get the listener's
//!   scheduler, ACL and persistence like everyone else), or the CLB `hostname` annotation's
//!   name alone when it has one (as the cloud controller does: EXTERNAL-IP shows the name)
//!   and its VIP is `spec.loadBalancerIP`; a VIP taken from the status keeps its entry,
//!   with the name beside it.
//! - An Ingress gets, as ingress-nginx does: `--publish-status-address` when given, else the
//!   addresses of the `--publish-service` Service (its `status.loadBalancer.ingress` and
//!   `spec.externalIPs`), else the writing node's addresses.
//! - A multi-cluster gateway AlbConfig (`remote-clusters`) gets
//!   `status.loadBalancer.subClusters`: its associated clusters that are connected.
use std::collections::HashMap;

use k8s_openapi::api::{
    core::v1::{LoadBalancerIngress, Node, Service},
    networking::v1::{Ingress, IngressLoadBalancerIngress},
};
use kube::{
    Api, Client,
    api::{DynamicObject, Patch, PatchParams},
};
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    KubeOptions,
    outcome::Report,
    watch::{self, Stores},
};
use crate::model::ObjectRef;

/// `ipMode` of the Services' entries: traffic for the VIP goes through the load balancer.
pub const IP_MODE: &str = "Proxy";

/// One `status.loadBalancer.ingress[]` entry, comparable.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Entry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(rename = "ipMode", skip_serializing_if = "Option::is_none")]
    pub ip_mode: Option<String>,
}

impl Entry {
    /// An address as ingress-nginx publishes it: an IP, else a hostname.
    pub fn address(a: &str) -> Entry {
        match a.parse::<std::net::IpAddr>() {
            Ok(ip) => Entry { ip: Some(ip.to_string()), hostname: None, ip_mode: None },
            Err(_) => Entry { ip: None, hostname: Some(a.to_string()), ip_mode: None },
        }
    }
}

/// `status.loadBalancer.ingress` of Services and Ingresses.
const INGRESS: &str = "ingress";
/// `status.loadBalancer.subClusters` of AlbConfigs.
const SUB_CLUSTERS: &str = "subClusters";

/// What was last written to one object.
struct Written {
    value: Value,
    /// The object's resourceVersion when we wrote: until the cache shows another one, the
    /// write is in flight and not repeated.
    resource_version: Option<String>,
}

pub struct StatusWriter {
    client: Client,
    stores: Stores,
    node_name: Option<String>,
    publish_service: Option<(String, String)>,
    publish_addresses: Vec<String>,
    node_addresses: Option<Vec<String>>,
    written: HashMap<ObjectRef, Written>,
    /// A write of the current sync failed.
    failed: bool,
    /// Why Ingress status was last not written (logged once per change).
    ingress_warning: Option<String>,
}

impl StatusWriter {
    pub fn new(client: Client, stores: Stores, opts: &KubeOptions) -> StatusWriter {
        StatusWriter {
            client,
            stores,
            node_name: opts.node_name.clone(),
            publish_service: opts.publish_service.clone(),
            publish_addresses: opts.publish_status_addresses.clone(),
            node_addresses: None,
            written: HashMap::new(),
            failed: false,
            ingress_warning: None,
        }
    }

    /// Writes what differs; whether every write went through (a failed one is for the
    /// caller to try again).
    pub async fn sync(&mut self, report: &Report) -> bool {
        self.failed = false;
        self.sync_all(report).await;
        !self.failed
    }

    async fn sync_all(&mut self, report: &Report) {
        // What was written for objects no longer served is not needed again (deleted
        // Services and Ingresses would otherwise be remembered for the process's life).
        self.written.retain(|o, _| {
            report.services.contains_key(o)
                || report.ingresses.contains(o)
                || (o.kind == "AlbConfig" && report.sub_clusters.contains_key(&o.name))
        });
        for (object, vips) in &report.services {
            let Some(svc) = watch::cached(&self.stores.services, (), object) else { continue };
            let current = sorted(lb_entries(&svc).into_iter().map(|i| entry(i.ip, i.hostname, i.ip_mode)));
            if written_by_ipam(&svc, &current, vips) {
                continue;
            }
            let desired = desired_entries(&svc, vips);
            let rv = svc.metadata.resource_version.clone();
            if self.needs_write(object, &json!(current), &json!(desired), &rv) {
                let api: Api<Service> = Api::namespaced(self.client.clone(), &object.namespace);
                self.write(api, object, INGRESS, json!(desired), rv).await;
            }
        }
        self.sync_sub_clusters(report).await;
        if report.ingresses.is_empty() {
            return;
        }
        let desired = match self.ingress_addresses().await {
            Ok(d) => {
                self.ingress_warning = None;
                d
            }
            Err(why) => {
                if self.ingress_warning.as_ref() != Some(&why) {
                    tracing::warn!(reason = %why, "Ingress status not written");
                    self.ingress_warning = Some(why);
                }
                return;
            }
        };
        for object in &report.ingresses {
            let Some(ing) = watch::cached(&self.stores.ingresses, (), object) else { continue };
            let current = sorted(ingress_entries(&ing).into_iter().map(|i| entry(i.ip, i.hostname, None)));
            let rv = ing.metadata.resource_version.clone();
            if self.needs_write(object, &json!(current), &json!(desired), &rv) {
                let api: Api<Ingress> = Api::namespaced(self.client.clone(), &object.namespace);
                self.write(api, object, INGRESS, json!(desired), rv).await;
            }
        }
    }

    /// `status.loadBalancer.subClusters` of the multi-cluster gateway AlbConfigs: the IDs of
    /// their connected associated clusters (an empty list when none is).
    async fn sync_sub_clusters(&mut self, report: &Report) {
        let resource = watch::alb_config_resource();
        for (name, clusters) in &report.sub_clusters {
            let object = ObjectRef { kind: "AlbConfig".into(), namespace: String::new(), name: name.clone() };
            let Some(cfg) = watch::cached(&self.stores.alb_configs, resource.clone(), &object) else { continue };
            let current = cfg.data["status"]["loadBalancer"][SUB_CLUSTERS].clone();
            let rv = cfg.metadata.resource_version.clone();
            if self.needs_write(&object, &current, &json!(clusters), &rv) {
                let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
                self.write(api, &object, SUB_CLUSTERS, json!(clusters), rv).await;
            }
        }
    }

    fn needs_write(&self, object: &ObjectRef, current: &Value, desired: &Value, rv: &Option<String>) -> bool {
        if current == desired {
            return false;
        }
        !self.written.get(object).is_some_and(|w| &w.value == desired && &w.resource_version == rv)
    }

    /// Merge-patch `status.loadBalancer.<field>` of `object` to `value`.
    async fn write<K>(&mut self, api: Api<K>, object: &ObjectRef, field: &str, value: Value, rv: Option<String>)
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let patch = json!({ "status": { "loadBalancer": { field: value } } });
        let params = PatchParams { field_manager: Some("lb".into()), ..Default::default() };
        match api.patch_status(&object.name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::info!(%object, %field, value = %value, "status.loadBalancer written");
                self.written.insert(object.clone(), Written { value, resource_version: rv });
            }
            Err(e) => {
                self.failed = true;
                tracing::warn!(%object, error = %e, "cannot write status.loadBalancer; retrying")
            }
        }
    }

    /// What every served Ingress's status holds, or why it cannot be known.
    async fn ingress_addresses(&mut self) -> Result<Vec<Entry>, String> {
        if !self.publish_addresses.is_empty() {
            return Ok(sorted(self.publish_addresses.iter().map(|a| Entry::address(a))));
        }
        if let Some((ns, name)) = &self.publish_service {
            let object = ObjectRef { kind: "Service".into(), namespace: ns.clone(), name: name.clone() };
            let svc = watch::cached(&self.stores.services, (), &object)
                .ok_or_else(|| format!("--publish-service {ns}/{name}: no such Service"))?;
            let published = published_addresses(&svc);
            if published.is_empty() {
                return Err(format!("--publish-service {ns}/{name}: the Service has no address yet"));
            }
            return Ok(sorted(published.iter().map(|a| Entry::address(a))));
        }
        Ok(sorted(self.node_addresses().await?.iter().map(|a| Entry::address(a))))
    }

    /// This node's ExternalIP addresses, else its InternalIP ones (read once).
    async fn node_addresses(&mut self) -> Result<Vec<String>, String> {
        if let Some(a) = &self.node_addresses {
            return Ok(a.clone());
        }
        let Some(name) = &self.node_name else {
            return Err("no --node-name, --publish-service or --publish-status-address".into());
        };
        let node = Api::<Node>::all(self.client.clone())
            .get(name)
            .await
            .map_err(|e| format!("cannot read the Node {name}'s addresses: {e}"))?;
        let addresses = node.status.and_then(|s| s.addresses).unwrap_or_default();
        let of = |t: &str| -> Vec<String> {
            let mut v: Vec<String> = addresses.iter().filter(|a| a.type_ == t).map(|a| a.address.clone()).collect();
            v.sort();
            v
        };
        let ips = Some(of("ExternalIP")).filter(|v| !v.is_empty()).unwrap_or_else(|| of("InternalIP"));
        if ips.is_empty() {
            return Err(format!("the Node {name} has no ExternalIP or InternalIP address"));
        }
        self.node_addresses = Some(ips.clone());
        Ok(ips)
    }
}

/// What ingress-nginx publishes of a Service: its `externalName` (type ExternalName), its
/// status addresses (IP, else hostname) and its `spec.externalIPs`.
pub fn published_addresses(svc: &Service) -> Vec<String> {
    let spec = svc.spec.as_ref();
    let mut out = Vec::new();
    if let Some(name) =
        spec.filter(|s| s.type_.as_deref() == Some("ExternalName")).and_then(|s| s.external_name.clone())
    {
        out.push(name);
    }
    for i in lb_entries(svc) {
        if let Some(a) = i.ip.filter(|ip| !ip.is_empty()).or(i.hostname) {
            out.push(a);
        }
    }
    out.extend(spec.and_then(|s| s.external_ips.clone()).unwrap_or_default());
    out
}

/// Whether an IPAM (MetalLB, kube-vip) wrote the Service's VIPs to its status: none is
/// `spec.loadBalancerIP` and the status lists them all. That status is the IPAM's: it
/// rewrites it to its own form whenever it differs (MetalLB: `[{ip}]`), so adding `ipMode`
/// or a hostname would start a write loop between the two controllers.
fn written_by_ipam(svc: &Service, current: &[Entry], vips: &std::collections::BTreeSet<std::net::IpAddr>) -> bool {
    let spec_ip = spec_ip(svc);
    let listed: std::collections::BTreeSet<std::net::IpAddr> =
        current.iter().filter_map(|e| e.ip.as_deref()?.parse().ok()).collect();
    !vips.is_empty() && vips.iter().all(|v| Some(*v) != spec_ip && listed.contains(v))
}

/// What a served Service's `status.loadBalancer.ingress` should hold: its VIPs with
/// `ipMode: Proxy`; with the CLB `hostname` annotation, that name alone (as the cloud
/// controller writes it; `ipMode` needs an `ip`) when the VIP is `spec.loadBalancerIP`'s,
/// else (a dual-stack Service with one VIP from the status) each VIP with the name beside
/// it: a VIP from the status is the only record of it. (Status an IPAM wrote whole is not
/// written: [`written_by_ipam`].)
fn desired_entries(svc: &Service, vips: &std::collections::BTreeSet<std::net::IpAddr>) -> Vec<Entry> {
    let with_ip = |hostname: Option<String>| {
        sorted(vips.iter().map(|ip| Entry {
            ip: Some(ip.to_string()),
            hostname: hostname.clone(),
            ip_mode: Some(IP_MODE.into()),
        }))
    };
    let Some(name) = hostname(svc) else { return with_ip(None) };
    let spec_ip = spec_ip(svc);
    if vips.iter().all(|vip| Some(*vip) == spec_ip) {
        vec![Entry { ip: None, hostname: Some(name), ip_mode: None }]
    } else {
        with_ip(Some(name))
    }
}

/// The Service's `spec.loadBalancerIP`, when it is an address.
fn spec_ip(svc: &Service) -> Option<std::net::IpAddr> {
    svc.spec.as_ref().and_then(|s| s.load_balancer_ip.as_deref()).and_then(|ip| ip.parse().ok())
}

/// The CLB `hostname` annotation of a served Service (it validated: the Service is served).
fn hostname(svc: &Service) -> Option<String> {
    let annotations = svc.metadata.annotations.as_ref()?;
    // The hostname does not depend on the ports.
    crate::annotations::clb::parse(annotations, &[]).config.hostname
}

fn lb_entries(svc: &Service) -> Vec<LoadBalancerIngress> {
    svc.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default()
}

fn ingress_entries(ing: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    ing.status.as_ref().and_then(|s| s.load_balancer.as_ref()).and_then(|l| l.ingress.clone()).unwrap_or_default()
}

fn entry(ip: Option<String>, hostname: Option<String>, ip_mode: Option<String>) -> Entry {
    Entry { ip, hostname, ip_mode }
}

fn sorted(it: impl Iterator<Item = Entry>) -> Vec<Entry> {
    let mut v: Vec<Entry> = it.collect();
    v.sort();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_as_ingress_nginx_publishes_them() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "front", "namespace": "lb-system"},
            "spec": {"type": "LoadBalancer", "externalIPs": ["203.0.113.9"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.7", "ipMode": "VIP"}, {"hostname": "lb.example.com"}]}},
        }))
        .unwrap();
        assert_eq!(published_addresses(&svc), ["198.51.100.7", "lb.example.com", "203.0.113.9"]);
        let external: Service = serde_json::from_value(json!({
            "metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "edge.example.com"},
        }))
        .unwrap();
        assert_eq!(published_addresses(&external), ["edge.example.com"]);
        assert_eq!(Entry::address("2001:db8::1").ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(Entry::address("edge.example.com").hostname.as_deref(), Some("edge.example.com"));
    }

    #[test]
    fn entries_serialize_as_the_api_spells_them() {
        let e = Entry { ip: Some("192.0.2.10".into()), hostname: None, ip_mode: Some(IP_MODE.into()) };
        assert_eq!(serde_json::to_value(&e).unwrap(), json!({"ip": "192.0.2.10", "ipMode": "Proxy"}));
        let h = Entry { ip: None, hostname: Some("www.example.com".into()), ip_mode: None };
        assert_eq!(serde_json::to_value(&h).unwrap(), json!({"hostname": "www.example.com"}));
    }
}
