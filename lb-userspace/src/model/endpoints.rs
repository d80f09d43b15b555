//! A Service's endpoints: EndpointSlices indexed by Service, and the endpoints of one port in
//! one address family (with their `lb.dev/endpoint-weights` weights, node names, and whether
//! they take new flows).
use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::discovery::v1::EndpointConditions;

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

/// The endpoints of the Service port named `port_name` in the VIP's address family (on
/// `node` only, for externalTrafficPolicy: Local), one per address and port. Ready ones
/// take new flows at their weight. One listed but not ready (terminating, or failing its
/// readiness probe) is kept at weight 0: no new flows, and the established ones go on until
/// it leaves the slice, as kube-proxy's conntrack keeps them. When none is ready, the
/// terminating ones that still serve take new flows (Kubernetes' terminating-endpoint
/// fallback, KEP-1669). Past [`lb_common::MAX_BACKENDS_PER_LISTENER`] the weight-0 ones go.
pub(super) fn backends(
    slices: &[&EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    vip: IpAddr,
    node: Option<&str>,
) -> Result<Vec<Backend>, String> {
    let listed: Vec<(Backend, Standing)> = listed_endpoints(slices, port_name, protocol, vip)?
        .into_iter()
        .filter(|(_, on, _)| node.is_none() || *on == node)
        .map(|(b, _, standing)| (b, standing))
        .collect();
    let any_ready = listed.iter().any(|(_, s)| *s == Standing::Ready);
    let mut by_endpoint: BTreeMap<(IpAddr, u16), Backend> = BTreeMap::new();
    for (b, standing) in listed {
        let weight = match standing {
            Standing::Ready => b.weight,
            Standing::Serving if !any_ready => b.weight,
            Standing::Serving | Standing::Out => 0,
        };
        let e = by_endpoint.entry((b.addr, b.port)).or_insert(Backend { weight, ..b });
        e.weight = e.weight.max(weight);
    }
    let mut out: Vec<Backend> = by_endpoint.into_values().collect();
    if out.len() > lb_common::MAX_BACKENDS_PER_LISTENER as usize {
        out.retain(|b| b.weight > 0);
    }
    Ok(out)
}

/// Whether an endpoint takes new flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Ready (a missing condition means ready).
    Ready,
    /// Terminating, still serving: new flows only when no endpoint is ready.
    Serving,
    /// Not ready (terminating and no longer serving, starting, failing its probe).
    Out,
}

fn standing(c: Option<&EndpointConditions>) -> Standing {
    let Some(c) = c else { return Standing::Ready };
    if c.ready != Some(false) {
        Standing::Ready
    } else if c.terminating == Some(true) && c.serving == Some(true) {
        Standing::Serving
    } else {
        Standing::Out
    }
}

/// The ready endpoints of every node, each with the `nodeName` of its endpoint.
pub(super) fn ready_endpoints<'s>(
    slices: &[&'s EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    vip: IpAddr,
) -> Result<Vec<(Backend, Option<&'s str>)>, String> {
    Ok(listed_endpoints(slices, port_name, protocol, vip)?
        .into_iter()
        .filter(|(_, _, s)| *s == Standing::Ready)
        .map(|(b, on, _)| (b, on))
        .collect())
}

/// An endpoint listed for a port: the backend, its node, its standing.
type Listed<'s> = (Backend, Option<&'s str>, Standing);

/// Every endpoint listed for the port, with its node and standing.
fn listed_endpoints<'s>(
    slices: &[&'s EndpointSlice],
    port_name: &str,
    protocol: Protocol,
    vip: IpAddr,
) -> Result<Vec<Listed<'s>>, String> {
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
            let standing = standing(ep.conditions.as_ref());
            for addr in &ep.addresses {
                if let Ok(addr) = addr.parse::<IpAddr>() {
                    let weight = weights.get(&addr).copied().unwrap_or(DEFAULT_WEIGHT);
                    out.push((Backend { addr, port, weight }, ep.node_name.as_deref(), standing));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A slice of port `http` 8080 with `endpoints` as YAML flow items.
    fn slice(endpoints: &[&str]) -> EndpointSlice {
        let text = format!(
            "metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{}",
            endpoints.iter().map(|e| format!("- {e}\n")).collect::<String>()
        );
        serde_yaml_ng::from_str(&text).unwrap()
    }

    fn picked(slices: &[EndpointSlice], node: Option<&str>) -> Vec<String> {
        let slices: Vec<&EndpointSlice> = slices.iter().collect();
        let vip = IpAddr::from([198, 18, 100, 10]);
        let b = backends(&slices, "http", Protocol::Tcp, vip, node).unwrap();
        b.iter().map(|b| format!("{}*{}", b.addr, b.weight)).collect()
    }

    const READY: &str = "{addresses: [10.0.0.1], nodeName: a}";
    const TERMINATING: &str =
        "{addresses: [10.0.0.2], nodeName: b, conditions: {ready: false, serving: true, terminating: true}}";
    const GONE_UNSERVING: &str =
        "{addresses: [10.0.0.3], nodeName: b, conditions: {ready: false, serving: false, terminating: true}}";
    const STARTING: &str = "{addresses: [10.0.0.4], nodeName: a, conditions: {ready: false}}";

    /// A pod being deleted keeps its established flows (weight 0, no new ones) until it leaves
    /// the slice, as kube-proxy's conntrack keeps them; connection drain does not cut them at
    /// the first sight of `terminating`.
    #[test]
    fn endpoints_that_are_not_ready_take_no_new_flows_and_keep_their_own() {
        let s = [slice(&[READY, TERMINATING, GONE_UNSERVING, STARTING])];
        assert_eq!(picked(&s, None), ["10.0.0.1*100", "10.0.0.2*0", "10.0.0.3*0", "10.0.0.4*0"]);
    }

    /// No ready endpoint: the terminating ones that still serve take new flows (KEP-1669),
    /// also under externalTrafficPolicy: Local, per node.
    #[test]
    fn serving_terminating_endpoints_take_new_flows_when_none_is_ready() {
        let s = [slice(&[TERMINATING, GONE_UNSERVING, STARTING])];
        assert_eq!(picked(&s, None), ["10.0.0.2*100", "10.0.0.3*0", "10.0.0.4*0"]);
        let s = [slice(&[READY, TERMINATING])];
        assert_eq!(picked(&s, Some("b")), ["10.0.0.2*100"], "node b has no ready endpoint");
        assert_eq!(picked(&s, Some("a")), ["10.0.0.1*100"]);
    }

    /// An address in two slices (a pod moving between them) counts once, at its best standing.
    #[test]
    fn an_endpoint_in_two_slices_counts_once() {
        let moving = "{addresses: [10.0.0.2], nodeName: b}";
        let s = [slice(&[READY, TERMINATING]), slice(&[moving])];
        assert_eq!(picked(&s, None), ["10.0.0.1*100", "10.0.0.2*100"]);
    }

    /// Past the per-listener limit, the endpoints that take no new flows are the ones left out.
    #[test]
    fn past_the_limit_the_weight_0_endpoints_go() {
        let max = lb_common::MAX_BACKENDS_PER_LISTENER as usize;
        let ready: Vec<String> = (0..max).map(|i| format!("{{addresses: [10.1.{}.{}]}}", i / 256, i % 256)).collect();
        let mut all: Vec<&str> = ready.iter().map(String::as_str).collect();
        all.push(STARTING);
        let p = picked(&[slice(&all)], None);
        assert_eq!(p.len(), max);
        assert!(p.iter().all(|b| b.ends_with("*100")));
    }
}
