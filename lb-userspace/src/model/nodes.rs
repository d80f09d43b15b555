//! The cluster's Nodes as the backends of a CLB Service with `backend-type: ecs`: the nodes
//! it may use (`backend-label`, `remove-unscheduled-backend`, and the nodes the Alibaba Cloud
//! controller always leaves out) and their InternalIP addresses.
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;

use super::{Notice, ObjectRef, addresses};
use crate::annotations::clb::{self, BackendOptions};

/// The key of `backend-type` (outside the `alibaba-cloud-loadbalancer-` family).
pub const BACKEND_TYPE: &str = "service.beta.kubernetes.io/backend-type";
/// Nodes with this label are control-plane nodes: never backends.
const MASTER_ROLE: &str = "node-role.kubernetes.io/master";
/// The taint the cluster autoscaler puts on a node it is about to delete: never a backend.
const TO_BE_DELETED: &str = "ToBeDeletedByClusterAutoscaler";

/// A node that may be a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendNode {
    pub name: String,
    /// Its `InternalIP` addresses, in `status.addresses` order.
    pub addrs: Vec<IpAddr>,
}

impl BackendNode {
    /// Its first InternalIP in the family of `vip`.
    pub fn addr_for(&self, vip: IpAddr) -> Option<IpAddr> {
        self.addrs.iter().copied().find(|a| a.is_ipv4() == vip.is_ipv4())
    }
}

/// Why a node is not a backend, or `None` when it is one (the label filter aside).
fn left_out(node: &Node, remove_unscheduled: bool) -> Option<String> {
    let labels = node.metadata.labels.as_ref();
    if labels.is_some_and(|l| l.contains_key(MASTER_ROLE)) {
        return Some(format!("is a control-plane node ({MASTER_ROLE})"));
    }
    let spec = node.spec.as_ref();
    if spec.and_then(|s| s.taints.as_ref()).into_iter().flatten().any(|t| t.key == TO_BE_DELETED) {
        return Some(format!("has the {TO_BE_DELETED} taint (the autoscaler is deleting it)"));
    }
    if remove_unscheduled && spec.and_then(|s| s.unschedulable) == Some(true) {
        return Some("is unschedulable (cordoned) and remove-unscheduled-backend is on".into());
    }
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    match conditions.into_iter().flatten().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "True" => None,
        Some(c) => Some(format!("is not Ready (Ready condition {})", c.status)),
        None => Some("has no Ready condition in status.conditions".into()),
    }
}

/// The nodes `opts` selects out of `nodes`, in name order. A notice on `source` for each
/// node left out for a reason other than its labels or its cordon (those were asked for),
/// and one when no node is left.
pub fn select(
    nodes: &[Node],
    opts: &BackendOptions,
    source: &ObjectRef,
    notices: &mut Vec<Notice>,
) -> Vec<BackendNode> {
    let mut notice = |note: String| {
        notices.push(Notice { object: source.clone(), field: BACKEND_TYPE.into(), note });
    };
    if nodes.is_empty() {
        notice(
            "ecs: no Node objects (add kind: Node objects to the manifest directory; from the API, lb lists the \
             cluster's Nodes): the listeners have no backends"
                .into(),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    let (mut by_label, mut cordoned) = (0, 0);
    for node in nodes {
        let name = node.metadata.name.clone().unwrap_or_default();
        let labels = node.metadata.labels.as_ref();
        if !opts.node_labels.iter().all(|l| labels.and_then(|m| m.get(&l.key)) == Some(&l.value)) {
            by_label += 1;
            continue;
        }
        if let Some(why) = left_out(node, opts.remove_unscheduled) {
            if why.starts_with("is unschedulable") {
                cordoned += 1;
            } else {
                notice(format!("ecs: Node {name} {why}: not a backend"));
            }
            continue;
        }
        let mut addrs = Vec::new();
        for a in node.status.as_ref().and_then(|s| s.addresses.as_ref()).into_iter().flatten() {
            if a.type_ != "InternalIP" {
                continue;
            }
            match a.address.parse::<IpAddr>() {
                Ok(ip) => match addresses::special(ip) {
                    Some(class) => notice(format!("ecs: Node {name}: InternalIP {ip} is not served ({class} address)")),
                    None => addrs.push(ip),
                },
                Err(_) => notice(format!("ecs: Node {name}: InternalIP {:?} is not an IP address", a.address)),
            }
        }
        if addrs.is_empty() {
            notice(format!("ecs: Node {name} has no usable InternalIP in status.addresses: not a backend"));
            continue;
        }
        out.push(BackendNode { name, addrs });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    if out.is_empty() {
        let label: Vec<String> = opts.node_labels.iter().map(|l| format!("{}={}", l.key, l.value)).collect();
        notice(format!(
            "ecs: none of the {} Nodes is a backend ({by_label} without the labels of {}backend-label {:?}, \
             {cordoned} cordoned): the listeners have no backends",
            nodes.len(),
            clb::CLB_PREFIX,
            label.join(",")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotations::clb::NodeLabel;

    fn node(name: &str, labels: &str, extra: &str, ready: &str) -> Node {
        let yaml = format!(
            "metadata: {{name: {name}, labels: {{{labels}}}}}\nspec: {{{extra}}}\nstatus:\n  addresses: [{{type: Hostname, address: {name}}}, {{type: InternalIP, address: 10.0.0.{}}}, {{type: InternalIP, address: \"fd00::{}\"}}]\n  conditions: [{{type: Ready, status: \"{ready}\"}}]\n",
            name.len(),
            name.len()
        );
        serde_yaml_ng::from_str(&yaml).unwrap()
    }

    fn src() -> ObjectRef {
        ObjectRef { kind: "Service".into(), namespace: "shop".into(), name: "web".into() }
    }

    fn names(nodes: &[BackendNode]) -> Vec<&str> {
        nodes.iter().map(|n| n.name.as_str()).collect()
    }

    #[test]
    fn labels_cordon_readiness_and_roles_select_the_nodes() {
        let nodes = [
            node("a", "pool: edge", "", "True"),
            node("bb", "pool: edge", "unschedulable: true", "True"),
            node("ccc", "pool: core", "", "True"),
            node("dddd", "pool: edge", "", "False"),
            node("eeeee", "pool: edge, node-role.kubernetes.io/master: \"\"", "", "True"),
            node("ffffff", "pool: edge", "taints: [{key: ToBeDeletedByClusterAutoscaler, effect: NoSchedule}]", "True"),
            node("g", "pool: edge", "taints: [{key: dedicated, effect: NoSchedule}]", "True"),
        ];
        let mut notices = Vec::new();
        let all = select(&nodes, &BackendOptions::default(), &src(), &mut notices);
        assert_eq!(names(&all), ["a", "bb", "ccc", "g"], "a cordoned node stays without remove-unscheduled-backend");
        assert_eq!(all[0].addrs, ["10.0.0.1".parse::<IpAddr>().unwrap(), "fd00::1".parse().unwrap()]);
        assert_eq!(all[0].addr_for("198.18.100.10".parse().unwrap()), Some("10.0.0.1".parse().unwrap()));
        let notes: Vec<String> = notices.iter().map(ToString::to_string).collect();
        assert_eq!(
            notes,
            [
                "Service shop/web: service.beta.kubernetes.io/backend-type: ecs: Node dddd is not Ready (Ready condition False): not a backend",
                "Service shop/web: service.beta.kubernetes.io/backend-type: ecs: Node eeeee is a control-plane node (node-role.kubernetes.io/master): not a backend",
                "Service shop/web: service.beta.kubernetes.io/backend-type: ecs: Node ffffff has the ToBeDeletedByClusterAutoscaler taint (the autoscaler is deleting it): not a backend",
            ]
        );
        let opts = BackendOptions {
            node_labels: vec![NodeLabel { key: "pool".into(), value: "edge".into() }],
            remove_unscheduled: true,
            ..Default::default()
        };
        assert_eq!(names(&select(&nodes, &opts, &src(), &mut Vec::new())), ["a", "g"]);
    }

    #[test]
    fn no_nodes_or_none_selected_is_a_notice_not_an_error() {
        let mut notices = Vec::new();
        assert!(select(&[], &BackendOptions::default(), &src(), &mut notices).is_empty());
        assert!(notices[0].note.starts_with("ecs: no Node objects"), "{notices:?}");
        let opts = BackendOptions {
            node_labels: vec![NodeLabel { key: "pool".into(), value: "gpu".into() }],
            ..Default::default()
        };
        let mut notices = Vec::new();
        assert!(select(&[node("a", "pool: edge", "", "True")], &opts, &src(), &mut notices).is_empty());
        assert_eq!(
            notices[0].note,
            "ecs: none of the 1 Nodes is a backend (1 without the labels of alibaba-cloud-loadbalancer-backend-label \"pool=gpu\", 0 cordoned): the listeners have no backends"
        );
    }
}
