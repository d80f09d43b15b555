//! The backends of a CLB Service's ports, L4 and L7 alike: its ready endpoints (only this
//! node's under `externalTrafficPolicy: Local`), or with `backend-type: ecs` the selected
//! nodes on each port's NodePort (under Local only the nodes that host a ready endpoint of
//! the port, weighted by how many they host, as the Alibaba Cloud controller weighs them).
use std::{collections::BTreeMap, net::IpAddr};

use k8s_openapi::api::core::v1::{Node, ServicePort};

use super::{
    Backend, Notice, ObjectRef, Protocol,
    endpoints::{self, DEFAULT_WEIGHT},
    nodes::{self, BackendNode},
    slice::EndpointSlice,
};
use crate::annotations::clb::{self, BackendType};
use crate::annotations::lbdev::ENDPOINT_WEIGHTS;

/// Where a Service's ports take their backends from.
pub struct PortBackends<'a> {
    ports: &'a [ServicePort],
    slices: &'a [&'a EndpointSlice],
    from: Origin<'a>,
}

enum Origin<'a> {
    /// The endpoints; only those on this node (`Some`) under Local.
    Endpoints { node: Option<&'a str> },
    /// `backend-type: ecs`: these nodes; `local`: only those hosting a ready endpoint.
    Nodes { nodes: Vec<BackendNode>, local: bool },
}

/// A port's backends could not be chosen: the field to blame and why.
pub type PortError = (String, String);

impl<'a> PortBackends<'a> {
    /// `node`: this node's name under Local with endpoint backends (`None` otherwise);
    /// `local`: `externalTrafficPolicy: Local`. Notices on `source` for node options that
    /// have no effect and for the nodes [`nodes::select`] leaves out.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ports: &'a [ServicePort],
        cfg: &clb::ClbConfig,
        slices: &'a [&'a EndpointSlice],
        all_nodes: &[Node],
        node: Option<&'a str>,
        local: bool,
        source: &ObjectRef,
        notices: &mut Vec<Notice>,
    ) -> PortBackends<'a> {
        let opts = &cfg.backends;
        if opts.backend_type != Some(BackendType::Ecs) {
            let unused = [
                (!opts.node_labels.is_empty()).then_some("backend-label"),
                opts.remove_unscheduled.then_some("remove-unscheduled-backend"),
            ];
            for key in unused.into_iter().flatten() {
                notices.push(Notice {
                    object: source.clone(),
                    field: cfg.key(key),
                    note: format!(
                        "has no effect: the backends are the endpoints, not nodes (set {}: ecs)",
                        nodes::BACKEND_TYPE
                    ),
                });
            }
            return PortBackends { ports, slices, from: Origin::Endpoints { node } };
        }
        let nodes = nodes::select(all_nodes, opts, source, notices);
        PortBackends { ports, slices, from: Origin::Nodes { nodes, local } }
    }

    /// The backends of the Service port `port`/`protocol` for a listener on `vip` (its
    /// address family).
    pub fn for_port(&self, port: u16, protocol: Protocol, vip: IpAddr) -> Result<Vec<Backend>, PortError> {
        let proto = match protocol {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        };
        let found = self
            .ports
            .iter()
            .enumerate()
            .find(|(_, p)| p.port == i32::from(port) && p.protocol.as_deref().unwrap_or("TCP") == proto);
        let name = found.and_then(|(_, p)| p.name.as_deref()).unwrap_or("");
        let weights_field = || format!("metadata.annotations[{ENDPOINT_WEIGHTS}]");
        let (nodes, local) = match &self.from {
            Origin::Endpoints { node } => {
                return endpoints::backends(self.slices, name, protocol, vip, *node).map_err(|r| (weights_field(), r));
            }
            Origin::Nodes { nodes, local } => (nodes, *local),
        };
        let (i, spec_port) = found.ok_or_else(|| ("spec.ports".to_string(), format!("no port {port}/{proto}")))?;
        let node_port =
            spec_port.node_port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0).ok_or_else(|| {
                (
                    format!("spec.ports[{i}].nodePort"),
                    format!(
                        "{}: ecs sends to the nodes on the port's NodePort, and there is none (the API server \
                     allocates one; a manifest must give it)",
                        nodes::BACKEND_TYPE
                    ),
                )
            })?;
        let hosted: Option<BTreeMap<String, u32>> = if local {
            let mut count = BTreeMap::new();
            let ready =
                endpoints::ready_endpoints(self.slices, name, protocol, vip).map_err(|r| (weights_field(), r))?;
            for (_, on) in ready {
                if let Some(on) = on {
                    *count.entry(on.to_string()).or_insert(0u32) += 1;
                }
            }
            Some(count)
        } else {
            None
        };
        let mut out = Vec::new();
        for n in nodes {
            let Some(addr) = n.addr_for(vip) else { continue };
            // Local: a node's weight is the number of ready endpoints it hosts (at most 100).
            let weight = match &hosted {
                None => DEFAULT_WEIGHT,
                Some(count) => match count.get(&n.name) {
                    Some(c) => (*c).min(100),
                    None => continue,
                },
            };
            out.push(Backend { addr, port: node_port, weight });
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::{manifests, model};

    /// A Service with an http (L7) and a tcp port on NodePorts 30080/30081, endpoints on
    /// node-a (two) and node-b (one), and nodes a..d: c is cordoned, d has no `pool` label.
    fn yaml(annotations: &str, policy: &str) -> String {
        let node = |name: &str, ip: &str, labels: &str, spec: &str| {
            format!(
                "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}, labels: {{{labels}}}}}\nspec: {{{spec}}}\nstatus:\n  addresses: [{{type: InternalIP, address: {ip}}}]\n  conditions: [{{type: Ready, status: \"True\"}}]\n"
            )
        };
        format!(
            r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: "http:80,tcp:443"
{annotations}spec:
  type: LoadBalancer
  loadBalancerIP: 198.18.100.10
  externalTrafficPolicy: {policy}
  ports:
  - {{name: http, port: 80, targetPort: 8080, nodePort: 30080}}
  - {{name: tls, port: 443, targetPort: 8443, nodePort: 30081}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}, {{name: tls, port: 8443}}]
endpoints:
- {{addresses: [198.18.11.2], nodeName: node-a}}
- {{addresses: [198.18.11.3], nodeName: node-a}}
- {{addresses: [198.18.12.2], nodeName: node-b}}
- {{addresses: [198.18.13.2], nodeName: node-c, conditions: {{ready: false}}}}
{}{}{}{}"#,
            node("node-a", "10.0.0.1", "pool: edge", ""),
            node("node-b", "10.0.0.2", "pool: edge", ""),
            node("node-c", "10.0.0.3", "pool: edge", "unschedulable: true"),
            node("node-d", "10.0.0.4", "pool: core", ""),
        )
    }

    fn build(yaml: &str, node_name: Option<&str>) -> model::Build {
        let mut set = manifests::ObjectSet::default();
        manifests::load_text(Path::new("t.yaml"), yaml, &mut set);
        assert!(set.errors.is_empty(), "{:?}", set.errors);
        model::build(&set, &model::BuildOptions { node_name: node_name.map(Into::into), ..Default::default() })
    }

    /// (L4 tcp:443 backends, L7 http:80 endpoints), each as `addr:port*weight`.
    fn backends(b: &model::Build) -> (Vec<String>, Vec<String>) {
        let l4 = b.model.listeners["198.18.100.10:443/tcp"].backends.iter();
        let l7 = b.model.l7["198.18.100.10:80/http"].routes[0].upstreams[0].endpoints.iter();
        (
            l4.map(|b| format!("{}:{}*{}", b.addr, b.port, b.weight)).collect(),
            l7.map(|e| format!("{}*{}", e.addr, e.weight)).collect(),
        )
    }

    const ECS: &str = "    service.beta.kubernetes.io/backend-type: ecs\n";

    #[test]
    fn ecs_backends_are_the_nodes_on_the_node_port() {
        let b = build(&yaml(ECS, "Cluster"), None);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let (l4, l7) = backends(&b);
        assert_eq!(l4, ["10.0.0.1:30081*100", "10.0.0.2:30081*100", "10.0.0.3:30081*100", "10.0.0.4:30081*100"]);
        assert_eq!(l7, ["10.0.0.1:30080*100", "10.0.0.2:30080*100", "10.0.0.3:30080*100", "10.0.0.4:30080*100"]);
    }

    #[test]
    fn backend_label_and_remove_unscheduled_backend_pick_the_nodes() {
        let ann = format!(
            "{ECS}    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-backend-label: pool=edge\n    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-remove-unscheduled-backend: \"on\"\n"
        );
        let (l4, l7) = backends(&build(&yaml(&ann, "Cluster"), None));
        assert_eq!(l4, ["10.0.0.1:30081*100", "10.0.0.2:30081*100"]);
        assert_eq!(l7, ["10.0.0.1:30080*100", "10.0.0.2:30080*100"]);
    }

    #[test]
    fn ecs_under_local_takes_the_nodes_hosting_ready_endpoints_by_count() {
        // No node name needed: the nodes hosting endpoints are known from the slices. The
        // reference: Local wants the wrr scheduler (rr ignores weights).
        let wrr = format!("{ECS}    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler: wrr\n");
        let b = build(&yaml(&wrr, "Local"), None);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let (l4, l7) = backends(&b);
        assert_eq!(l4, ["10.0.0.1:30081*2", "10.0.0.2:30081*1"], "node-c's endpoint is not ready");
        assert_eq!(l7, ["10.0.0.1:30080*2", "10.0.0.2:30080*1"]);
        assert!(b.notices.iter().all(|n| !n.note.contains("rr ignores")), "{:?}", b.notices);
        // Under rr (the default) the weights are lost: said, not an error (the reference's
        // own Local examples leave the scheduler unset).
        let rr = build(&yaml(ECS, "Local"), None);
        assert!(rr.errors.is_empty(), "{:?}", rr.errors);
        let n = rr.notices.iter().find(|n| n.note.contains("rr ignores")).expect("a notice");
        assert_eq!(n.field, "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler");
    }

    #[test]
    fn local_on_clb_http_listeners_keeps_this_nodes_endpoints() {
        let b = build(&yaml("", "Local"), Some("node-a"));
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let (l4, l7) = backends(&b);
        assert_eq!(l4, ["198.18.11.2:8443*100", "198.18.11.3:8443*100"]);
        assert_eq!(l7, ["198.18.11.2:8080*100", "198.18.11.3:8080*100"]);
        let (_, l7) = backends(&build(&yaml("", "Cluster"), Some("node-a")));
        // node-c's endpoint is not ready: no new requests.
        assert_eq!(l7, ["198.18.11.2:8080*100", "198.18.11.3:8080*100", "198.18.12.2:8080*100", "198.18.13.2:8080*0"]);
    }

    /// The slice's `lb.dev/endpoint-weights` weigh its endpoints; one not listed weighs 100.
    #[test]
    fn endpoint_weights_come_from_the_slice() {
        let text = yaml("", "Cluster").replace(
            "metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}",
            "metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}, \
             annotations: {lb.dev/endpoint-weights: \"198.18.11.2=0,198.18.12.2=40\"}}",
        );
        let b = build(&text, None);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let (l4, _) = backends(&b);
        assert_eq!(l4, ["198.18.11.2:8443*0", "198.18.11.3:8443*100", "198.18.12.2:8443*40", "198.18.13.2:8443*0"]);
    }

    #[test]
    fn ecs_without_nodes_serves_nothing_and_says_so() {
        let text = yaml(ECS, "Cluster");
        let b = build(&text[..text.find("---\napiVersion: v1\nkind: Node").unwrap()], None);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        assert_eq!(backends(&b), (vec![], vec![]));
        let notes: Vec<String> = b.notices.iter().map(ToString::to_string).collect();
        assert!(
            notes.iter().any(|n| n.starts_with(
                "Service shop/web: service.beta.kubernetes.io/backend-type: ecs: no Node objects (add kind: Node objects"
            )),
            "{notes:?}"
        );
    }

    #[test]
    fn ecs_needs_node_ports() {
        let b = build(&yaml(ECS, "Cluster").replace(", nodePort: 30081", ""), None);
        let errors: Vec<String> = b.errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [
                "Service shop/web: spec.ports[1].nodePort: service.beta.kubernetes.io/backend-type: ecs sends to the nodes on the port's NodePort, and there is none (the API server allocates one; a manifest must give it)"
            ]
        );
    }

    #[test]
    fn node_options_without_ecs_are_a_notice() {
        // The notice names the key as the Service wrote it (here in the legacy spelling).
        let ann = "    service.beta.kubernetes.io/alicloud-loadbalancer-backend-label: pool=edge\n";
        let b = build(&yaml(ann, "Cluster"), None);
        assert!(b.errors.is_empty(), "{:?}", b.errors);
        let notes: Vec<String> = b.notices.iter().map(ToString::to_string).collect();
        assert_eq!(
            notes,
            [
                "Service shop/web: service.beta.kubernetes.io/alicloud-loadbalancer-backend-label: has no effect: the backends are the endpoints, not nodes (set service.beta.kubernetes.io/backend-type: ecs)"
            ]
        );
        assert_eq!(
            backends(&b).0,
            ["198.18.11.2:8443*100", "198.18.11.3:8443*100", "198.18.12.2:8443*100", "198.18.13.2:8443*0"]
        );
    }
}
