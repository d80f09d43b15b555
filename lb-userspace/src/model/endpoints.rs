//! A Service's endpoints: EndpointSlices indexed by Service, and the ready endpoints of one
//! port in one address family (with their `lb.dev/endpoint-weights` weights and node names).
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::model::slice::EndpointSlice;

use super::{Backend, Protocol};
use crate::annotations::lbdev;

/// Weight of an endpoint without one.
pub const DEFAULT_WEIGHT: u32 = 100;

/// EndpointSlices by namespace and `kubernetes.io/service-name`, built once per model (the
/// keys borrowed from the slices).
pub type SliceIndex<'a> = BTreeMap<&'a str, BTreeMap<&'a str, Vec<&'a EndpointSlice>>>;

pub fn index_slices<'a>(slices: impl IntoIterator<Item = &'a EndpointSlice>) -> SliceIndex<'a> {
    let mut index: SliceIndex<'a> = BTreeMap::new();
    for s in slices {
        if let Some(svc) = &s.service {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            index.entry(ns).or_default().entry(svc.as_str()).or_default().push(s);
        }
    }
    index
}

/// The slices of the Service `namespace/name`.
pub fn of_service<'i, 'a>(index: &'i SliceIndex<'a>, namespace: &str, name: &str) -> &'i [&'a EndpointSlice] {
    index.get(namespace).and_then(|by_name| by_name.get(name)).map(Vec::as_slice).unwrap_or(&[])
}

/// Ready endpoints of the Service port named `port_name` in the VIP's address family (on
/// `node` only, for externalTrafficPolicy: Local).
pub(super) fn backends(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    vip: IpAddr,
    node: Option<&str>,
) -> Result<Vec<Backend>, String> {
    let ready = ready_endpoints(slices, port_name, protocol, vip)?;
    let set: BTreeSet<Backend> =
        ready.into_iter().filter(|(_, on)| node.is_none() || *on == node).map(|(b, _)| b).collect();
    Ok(set.into_iter().collect())
}

/// [`backends`] of every node, each with the `nodeName` of its endpoint.
pub(super) fn ready_endpoints<'s>(
    slices: &[&'s EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    vip: IpAddr,
) -> Result<Vec<(Backend, Option<&'s str>)>, String> {
    let family = if vip.is_ipv4() { "IPv4" } else { "IPv6" };
    let mut out = Vec::new();
    for slice in slices.iter().filter(|s| s.address_type == family) {
        let weights = lbdev::endpoint_weights(slice.metadata.annotations.as_ref())?;
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && p.protocol.as_deref().unwrap_or("TCP") == protocol_name(protocol)
        });
        let Some(port) = port.and_then(|p| p.port).and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for ep in &slice.endpoints {
            // A missing `ready` condition means ready (Kubernetes API semantics).
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for addr in &ep.addresses {
                if let Ok(addr) = addr.parse::<IpAddr>() {
                    let weight = weights.get(&addr).copied().unwrap_or(DEFAULT_WEIGHT);
                    out.push((Backend { addr, port, weight }, ep.node_name.as_deref()));
                }
            }
        }
    }
    Ok(out)
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
    }
}
