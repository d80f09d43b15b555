//! What the fake API server holds: the example manifests as an API server would store them
//! (server-set metadata and defaulted fields), and list filtering by namespace and labels.
use std::path::PathBuf;

use serde_json::{Value, json};

/// `examples/` of the repository.
pub fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Every document of a manifest directory, as JSON (what `kubectl apply` would send).
pub fn documents(dir: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    for file in lb_userspace::manifests::manifest_files(dir).unwrap() {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            if !v.is_null() {
                out.push(v);
            }
        }
    }
    out
}

/// Each kind `lb` watches: its apiVersion and collection path.
pub const COLLECTIONS: &[(&str, (&str, &str))] = &[
    ("Service", ("v1", "/api/v1/services")),
    ("EndpointSlice", ("discovery.k8s.io/v1", "/apis/discovery.k8s.io/v1/endpointslices")),
    ("Ingress", ("networking.k8s.io/v1", "/apis/networking.k8s.io/v1/ingresses")),
    ("IngressClass", ("networking.k8s.io/v1", "/apis/networking.k8s.io/v1/ingressclasses")),
    ("Secret", ("v1", "/api/v1/secrets")),
    ("AlbConfig", ("alibabacloud.com/v1", "/apis/alibabacloud.com/v1/albconfigs")),
    ("AccessControlList", ("lb.dev/v1alpha1", "/apis/lb.dev/v1alpha1/accesscontrollists")),
    ("Node", ("v1", "/api/v1/nodes")),
];

/// `obj` as the API server returns it once created (the `i`th of its kind): the namespace
/// of a namespaced kind ("default" when the manifest has none), uid, resourceVersion,
/// creationTimestamp, generation and managedFields, and the defaults the API server fills in
/// (a Service's cluster IP, traffic policies, IP families, node ports, port protocols and
/// target ports; an EndpointSlice's port protocols; a Secret's type).
pub fn stored(obj: &Value, i: usize) -> Value {
    let mut o = obj.clone();
    let kind = o["kind"].as_str().unwrap_or_default().to_string();
    let api_version = o["apiVersion"].clone();
    let cluster_scoped = matches!(kind.as_str(), "IngressClass" | "AlbConfig" | "AccessControlList" | "Node");
    let meta = &mut o["metadata"];
    if !cluster_scoped && meta["namespace"].is_null() {
        meta["namespace"] = json!("default");
    }
    meta["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", i + 1));
    meta["resourceVersion"] = json!((100 + i).to_string());
    meta["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    meta["generation"] = json!(1);
    meta["managedFields"] = json!([{
        "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": api_version,
        "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}},
    }]);
    let default = |v: &mut Value, key: &str, value: Value| {
        if v[key].is_null() {
            v[key] = value;
        }
    };
    match kind.as_str() {
        "Service" => {
            let spec = &mut o["spec"];
            let load_balancer = spec["type"] == "LoadBalancer";
            default(spec, "type", json!("ClusterIP"));
            let cluster_ip = format!("10.96.0.{}", 10 + i);
            default(spec, "clusterIP", json!(cluster_ip));
            default(spec, "clusterIPs", json!([cluster_ip]));
            default(spec, "sessionAffinity", json!("None"));
            default(spec, "ipFamilies", json!(["IPv4"]));
            default(spec, "ipFamilyPolicy", json!("SingleStack"));
            default(spec, "internalTrafficPolicy", json!("Cluster"));
            if load_balancer {
                default(spec, "externalTrafficPolicy", json!("Cluster"));
                default(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
            for (j, port) in spec["ports"].as_array_mut().into_iter().flatten().enumerate() {
                default(port, "protocol", json!("TCP"));
                let number = port["port"].clone();
                default(port, "targetPort", number);
                if load_balancer {
                    default(port, "nodePort", json!(30000 + 100 * i + j));
                }
            }
            default(&mut o, "status", json!({"loadBalancer": {}}));
        }
        "EndpointSlice" => {
            for port in o["ports"].as_array_mut().into_iter().flatten() {
                default(port, "protocol", json!("TCP"));
            }
        }
        "Secret" => default(&mut o, "type", json!("Opaque")),
        _ => {}
    }
    o
}

/// A namespaced list path (`/api/v1/namespaces/NS/secrets`) as its cluster-wide collection
/// and the namespace; any other path as itself.
pub(super) fn namespaced(path: &str) -> (String, Option<String>) {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.iter().position(|s| *s == "namespaces") {
        Some(i) if segments.len() == i + 3 => {
            let mut collection = segments[..i].to_vec();
            collection.push(segments[i + 2]);
            (collection.join("/"), Some(segments[i + 1].to_string()))
        }
        _ => (path.to_string(), None),
    }
}

/// A list body with only the items in `namespace` (when given) and matching the query's
/// `labelSelector` (`key=value` terms only), as the API server filters.
pub(super) fn filter_list(body: &str, namespace: Option<&str>, query: &str) -> String {
    let mut list: Value = serde_json::from_str(body).unwrap();
    if list.get("items").is_none() {
        return body.to_string();
    }
    let selector: Vec<(String, String)> = query
        .split('&')
        .filter_map(|p| p.strip_prefix("labelSelector="))
        .flat_map(|s| {
            let s = s.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/");
            s.split(',')
                .filter_map(|t| t.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
                .collect::<Vec<_>>()
        })
        .collect();
    let items = list["items"].as_array_mut().unwrap();
    items.retain(|o| {
        namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns)
            && selector.iter().all(|(k, v)| o["metadata"]["labels"][k.as_str()] == v.as_str())
    });
    list.to_string()
}
