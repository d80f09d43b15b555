//! The EndpointSlice as the agent keeps it: the fields the build reads (metadata, address
//! type, ports, and per endpoint its addresses, conditions and node), read straight from the
//! manifest or the API server's JSON. Kubernetes' own type carries every field of an endpoint
//! (352 bytes each, before its strings): at 100,000 endpoints that was ~35 MiB of the agent's
//! memory, this one takes ~56 bytes an endpoint.
use k8s_openapi::{
    api::discovery::v1::{EndpointConditions, EndpointPort},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Deserialize, Serialize};

/// A `discovery.k8s.io/v1` EndpointSlice, with the fields the agent uses.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
// A field absent is empty, as Kubernetes' type reads it.
#[serde(rename_all = "camelCase", default)]
pub struct EndpointSlice {
    pub metadata: ObjectMeta,
    /// `IPv4`, `IPv6` or `FQDN`.
    pub address_type: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Option<Vec<EndpointPort>>,
}

/// One endpoint of a slice.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub conditions: Option<EndpointConditions>,
    /// The Node the endpoint is on (`externalTrafficPolicy: Local` keeps this node's).
    pub node_name: Option<String>,
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
            metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}, annotations: {a: b}}\n\
            addressType: IPv4\nports: [{name: http, port: 8080, protocol: TCP}]\n\
            endpoints:\n- {addresses: [10.0.0.1], conditions: {ready: false, serving: true}, nodeName: n1, zone: z, hostname: h, targetRef: {kind: Pod, name: p}}\n\
            - {addresses: [10.0.0.2, 10.0.0.3]}\n";
        let full: k8s_openapi::api::discovery::v1::EndpointSlice = serde_yaml_ng::from_str(text).unwrap();
        let mine: EndpointSlice = serde_yaml_ng::from_str(text).unwrap();
        assert_eq!(mine.metadata, full.metadata);
        assert_eq!((&mine.address_type, &mine.ports), (&full.address_type, &full.ports));
        assert_eq!(mine.endpoints.len(), full.endpoints.len());
        for (m, f) in mine.endpoints.iter().zip(&full.endpoints) {
            assert_eq!((&m.addresses, &m.conditions, &m.node_name), (&f.addresses, &f.conditions, &f.node_name));
        }
        for missing in [
            "addressType: IPv4\nendpoints: []",
            "metadata: {name: a}\nendpoints: []",
            "metadata: {name: a}\naddressType: IPv4",
            "endpoints: [{nodeName: n}]",
            "endpoints: 1",
        ] {
            let full = serde_yaml_ng::from_str::<k8s_openapi::api::discovery::v1::EndpointSlice>(missing);
            let mine = serde_yaml_ng::from_str::<EndpointSlice>(missing);
            assert_eq!(mine.is_ok(), full.is_ok(), "{missing}: {mine:?} / {full:?}");
            if let (Ok(m), Ok(f)) = (mine, full) {
                assert_eq!(
                    (m.metadata, m.address_type, m.endpoints.len()),
                    (f.metadata, f.address_type, f.endpoints.len())
                );
            }
        }
        assert!(std::mem::size_of::<Endpoint>() * 5 < std::mem::size_of::<k8s_openapi::api::discovery::v1::Endpoint>());
    }
}
