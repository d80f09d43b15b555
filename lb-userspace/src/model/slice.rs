//! The EndpointSlice as the agent keeps it: the fields the build reads (metadata, the Service
//! it belongs to, address type, ports, and per endpoint its addresses, conditions and node),
//! read straight from the manifest or the API server's JSON. Kubernetes' own type carries
//! every field of an endpoint (352 bytes each, before its strings, and two allocations for
//! its address); this one keeps an endpoint in 64 bytes with no allocation of its own (an
//! address and a node name up to 24 bytes are inline), of the slice's labels only
//! `kubernetes.io/service-name` (a map of labels takes a 544-byte node for one label), and of
//! its annotations only the one the build reads (`lb.dev/endpoint-weights`).
use compact_str::CompactString;
use k8s_openapi::{
    api::discovery::v1::{EndpointConditions, EndpointPort},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::annotations::lbdev::ENDPOINT_WEIGHTS;

/// The label naming the Service a slice belongs to.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A `discovery.k8s.io/v1` EndpointSlice, with the fields the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(from = "Wire", into = "Wire")]
pub struct EndpointSlice {
    /// What identifies the slice (name, namespace, uid, resource version) and its endpoint
    /// weights (`lb.dev/endpoint-weights`); other annotations, the labels (the agent reads
    /// none but the Service's name) and the managed fields are not kept.
    pub metadata: ObjectMeta,
    /// `kubernetes.io/service-name`: the Service the slice belongs to.
    pub service: Option<CompactString>,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: CompactString,
    pub endpoints: Vec<Endpoint>,
    pub ports: Option<Vec<EndpointPort>>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoint {
    /// One address in practice (the EndpointSlice controller writes exactly one).
    pub addresses: SmallVec<[CompactString; 1]>,
    pub conditions: Option<EndpointConditions>,
    /// The Node the endpoint is on (`externalTrafficPolicy: Local` keeps this node's).
    pub node_name: Option<CompactString>,
}

/// The slice as written: a field absent is empty, as Kubernetes' type reads it.
#[derive(Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
struct Wire {
    metadata: ObjectMeta,
    address_type: CompactString,
    endpoints: Vec<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ports: Option<Vec<EndpointPort>>,
}

impl From<Wire> for EndpointSlice {
    fn from(w: Wire) -> EndpointSlice {
        let mut metadata = w.metadata;
        let service = metadata.labels.take().and_then(|mut l| l.remove(SERVICE_NAME_LABEL)).map(CompactString::from);
        metadata.annotations = metadata.annotations.take().and_then(|mut a| {
            a.retain(|key, _| key == ENDPOINT_WEIGHTS);
            (!a.is_empty()).then_some(a)
        });
        metadata.managed_fields = None;
        EndpointSlice { metadata, service, address_type: w.address_type, endpoints: w.endpoints, ports: w.ports }
    }
}

impl From<EndpointSlice> for Wire {
    fn from(s: EndpointSlice) -> Wire {
        let mut metadata = s.metadata;
        if let Some(service) = s.service {
            metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), service.into_string())].into());
        }
        Wire { metadata, address_type: s.address_type, endpoints: s.endpoints, ports: s.ports }
    }
}

impl k8s_openapi::Resource for EndpointSlice {
    const API_VERSION: &'static str = "discovery.k8s.io/v1";
    const GROUP: &'static str = "discovery.k8s.io";
    const KIND: &'static str = "EndpointSlice";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "endpointslices";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::ListableResource for EndpointSlice {
    const LIST_KIND: &'static str = "EndpointSliceList";
}

impl k8s_openapi::Metadata for EndpointSlice {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Kubernetes' type reads from a slice, this one reads the same (the fields it has),
    /// and a slice that lacks a field is read as that one reads it.
    #[test]
    fn reads_what_the_kubernetes_type_reads() {
        let text = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
            metadata: {name: web-1, namespace: shop, uid: u1, labels: {kubernetes.io/service-name: web, app: a}, annotations: {a: b, lb.dev/endpoint-weights: 10.0.0.1=5}}\n\
            addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\n\
            endpoints:\n- {addresses: [10.0.0.1], conditions: {ready: false, serving: true}, nodeName: n1, zone: z, hostname: h, targetRef: {kind: Pod, name: p}}\n\
            - {addresses: [10.0.0.2, 10.0.0.3]}\n\
            - {addresses: [2001:db8:1234:5678:9abc:def0:1234:5678], nodeName: a-node-name-longer-than-24-bytes}\n";
        let full: k8s_openapi::api::discovery::v1::EndpointSlice = serde_yaml_ng::from_str(text).unwrap();
        let mine: EndpointSlice = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(
            (&mine.metadata.name, &mine.metadata.namespace, &mine.metadata.uid),
            (&full.metadata.name, &full.metadata.namespace, &full.metadata.uid)
        );
        assert_eq!(
            mine.service.as_deref(),
            full.metadata.labels.as_ref().unwrap().get(SERVICE_NAME_LABEL).map(|s| s.as_str())
        );
        assert_eq!(mine.metadata.labels, None, "not kept");
        let kept = [("lb.dev/endpoint-weights".to_string(), "10.0.0.1=5".to_string())].into();
        assert_eq!(mine.metadata.annotations, Some(kept), "only the endpoint weights are kept");
        assert_eq!((mine.address_type.as_str(), &mine.ports), (full.address_type.as_str(), &full.ports));
        assert_eq!(mine.endpoints.len(), full.endpoints.len());
        for (m, f) in mine.endpoints.iter().zip(&full.endpoints) {
            let addresses: Vec<&str> = m.addresses.iter().map(|a| a.as_str()).collect();
            assert_eq!(addresses, f.addresses);
            assert_eq!((&m.conditions, m.node_name.as_deref()), (&f.conditions, f.node_name.as_deref()));
        }
        // Written out again, the service's label is back.
        let again: k8s_openapi::api::discovery::v1::EndpointSlice =
            serde_json::from_value(serde_json::to_value(&mine).unwrap()).unwrap();
        assert_eq!(again.metadata.labels.unwrap().get(SERVICE_NAME_LABEL).map(|s| s.as_str()), Some("web"));
        assert_eq!(again.endpoints.len(), 3);
        for missing in [
            "addressType: IPv4\nendpoints: []",
            "metadata: {name: a}\nendpoints: []",
            "metadata: {name: a}\naddressType: IPv4",
            "endpoints: [{nodeName: n}]",
            "endpoints: 1",
            "endpoints: [{addresses: 1}]",
        ] {
            let full = serde_yaml_ng::from_str::<k8s_openapi::api::discovery::v1::EndpointSlice>(missing);
            let mine = serde_yaml_ng::from_str::<EndpointSlice>(missing);
            assert_eq!(mine.is_ok(), full.is_ok(), "{missing}: {mine:?} / {full:?}");
            if let (Ok(m), Ok(f)) = (mine, full) {
                assert_eq!(
                    (m.metadata, m.address_type.as_str(), m.endpoints.len()),
                    (f.metadata, f.address_type.as_str(), f.endpoints.len())
                );
            }
        }
        // An endpoint with one short address and node name: no allocation of its own.
        assert_eq!(std::mem::size_of::<Endpoint>(), 64);
        assert!(!mine.endpoints[0].addresses.spilled() && !mine.endpoints[0].addresses[0].is_heap_allocated());
    }
}
