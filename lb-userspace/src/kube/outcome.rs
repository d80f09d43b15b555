//! [`Report`]: what one applied build has to tell the API server (the objects rejected,
//! the served Services with their VIPs, the served Ingresses).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::model::{Model, ObjectError, ObjectRef};

/// What one applied build has to say to the API server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Every object rejected, with why.
    pub errors: Vec<ObjectError>,
    /// The objects this node could not serve (its datapath, its L7 proxy, its addresses):
    /// recorded by every node, leader or not.
    pub node_errors: Vec<ObjectError>,
    /// Each served Service and the VIPs its listeners use.
    pub services: BTreeMap<ObjectRef, BTreeSet<IpAddr>>,
    /// Each served ALB Ingress (its status takes the node's addresses).
    pub ingresses: BTreeSet<ObjectRef>,
    /// Each multi-cluster gateway AlbConfig and its connected associated clusters
    /// (`status.loadBalancer.subClusters`).
    pub sub_clusters: BTreeMap<String, Vec<String>>,
}

impl Report {
    pub fn new(errors: Vec<ObjectError>, node_errors: Vec<ObjectError>, applied: &Model) -> Report {
        let mut services: BTreeMap<ObjectRef, BTreeSet<IpAddr>> = BTreeMap::new();
        for l in applied.listeners.values().filter(|l| l.source.kind == "Service") {
            services.entry(l.source.clone()).or_default().insert(l.vip);
        }
        // CLB http/https listeners (served by the L7 proxy on the Service's VIP).
        for l in applied.l7.values() {
            if let Some(vip) = l.addr {
                for s in l.sources.iter().filter(|s| s.kind == "Service") {
                    services.entry(s.clone()).or_default().insert(vip);
                }
            }
        }
        let ingresses = applied
            .ingresses
            .values()
            .map(|i| ObjectRef { kind: "Ingress".into(), namespace: i.namespace.clone(), name: i.name.clone() })
            .collect();
        Report { errors, node_errors, services, ingresses, sub_clusters: applied.sub_clusters.clone() }
    }
}
