//! The Kubernetes objects a model is built from, as a manifest directory or the API
//! server yields them, and the documents that could not be read.
use std::{path::PathBuf, sync::Arc};

use k8s_openapi::api::core::v1::Service;

use super::slice::EndpointSlice;

/// The objects read from a manifest directory, and what could not be read.
#[derive(Debug, Default, Clone)]
pub struct ObjectSet {
    /// Shared, not copied: a source hands out the same objects at every read, and one
    /// changed object among 10,000 costs its own parse only.
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// The project's `AccessControlList` objects.
    pub acls: Vec<super::acl::AclObject>,
    pub ingresses: Vec<k8s_openapi::api::networking::v1::Ingress>,
    pub ingress_classes: Vec<k8s_openapi::api::networking::v1::IngressClass>,
    /// `AlbConfig` objects, as written (the ALB parser validates them).
    pub alb_configs: Vec<serde_json::Value>,
    /// TLS Secrets (`kubernetes.io/tls`) the L7 listeners take certificates from.
    pub secrets: Vec<k8s_openapi::api::core::v1::Secret>,
    /// The cluster's Nodes: the backends of CLB Services with `backend-type: ecs`.
    pub nodes: Vec<k8s_openapi::api::core::v1::Node>,
    /// The EndpointSlices of each associated cluster of an ALB multi-cluster gateway, by
    /// cluster ID (`lb run --cluster ID=DIR`); empty without `--cluster`.
    pub clusters: std::collections::BTreeMap<String, Vec<Arc<EndpointSlice>>>,
    /// Documents that did not parse, with where they came from.
    pub errors: Vec<ManifestError>,
    /// Objects the source holds that are not valid objects of their kind (their errors are
    /// in `errors`): an AccessControlList among them keeps its last good prefixes in `lb run`.
    pub undecodable: Vec<super::ObjectRef>,
    /// Kinds present but not used by the agent (reported, not an error).
    pub ignored: Vec<String>,
    /// The source could not list the AccessControlLists yet (its lists keep failing past
    /// the sync timeout): none of them is known gone, and in `lb run` every last good one
    /// stays in force meanwhile.
    pub acls_unlisted: bool,
}

/// A document of a manifest file that could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{file}: document {document}: {reason}")]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based index of the document in its file.
    pub document: usize,
    pub reason: String,
}
