//! CLB backends chosen by node, end to end in the netns topology: `backend-type: ecs` sends a
//! Service's traffic to the nodes' InternalIP on its NodePort (each backend namespace stands
//! for a node, a server on the NodePort answering with the node's name, the pods' servers on
//! the target port beside it), `backend-label` and `remove-unscheduled-backend` pick the nodes,
//! and `externalTrafficPolicy: Local` keeps a CLB http listener on this node's endpoints.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    scenario::Scenario,
    servers::{Server, http_name_server, name_server, tcp_request},
    topology::{Shape, VIP},
};

const TIMEOUT: Duration = Duration::from_secs(5);
const NODE_PORT: u16 = 30080;
const VIP_LOCAL: &str = "198.18.100.11";

fn tally(replies: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in replies {
        *m.entry(r).or_default() += 1;
    }
    m
}

/// Node `node-i` on backend `i`'s address, with `labels` and `spec` (YAML flow mappings' bodies).
fn node_yaml(i: usize, labels: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{i}, labels: {{{labels}}}}}\nspec: {{{spec}}}\nstatus:\n  addresses: [{{type: InternalIP, address: \"{}\"}}, {{type: Hostname, address: node-{i}}}]\n  conditions: [{{type: Ready, status: \"True\"}}]\n",
        Shape::Routed.backend_addr(i)
    )
}

/// Nodes 1..=4: 1-3 in pool `edge` (3 cordoned unless `uncordon_3`), 4 in pool `core`.
fn nodes_yaml(uncordon_3: bool) -> String {
    let cordon = if uncordon_3 { "" } else { "unschedulable: true" };
    node_yaml(1, "pool: edge", "")
        + &node_yaml(2, "pool: edge", "")
        + &node_yaml(3, "pool: edge", cordon)
        + &node_yaml(4, "pool: core", "")
}

/// A Service on `vip` (TCP 80, NodePort 30080, target port 8080) with `annotations`, its
/// pods on the nodes `pods_on` (pod `i` is backend `i`'s address).
fn node_port_service(name: &str, vip: &str, annotations: &[(&str, &str)], policy: &str, pods_on: &[usize]) -> String {
    let ann: String = annotations.iter().map(|(k, v)| format!("    {k}: \"{v}\"\n")).collect();
    let eps: String = pods_on
        .iter()
        .map(|i| format!("- {{addresses: [\"{}\"], nodeName: node-{i}}}\n", Shape::Routed.backend_addr(*i)))
        .collect();
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: e2e
  annotations:
{ann}spec:
  type: LoadBalancer
  loadBalancerIP: "{vip}"
  externalTrafficPolicy: {policy}
  ports: [{{name: tcp, protocol: TCP, port: 80, targetPort: 8080, nodePort: {NODE_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: e2e, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: tcp, protocol: TCP, port: 8080}}]
endpoints:
{eps}"#
    )
}

/// Each backend namespace as a node: a server on the NodePort answering `node-i`.
fn node_servers(s: &Scenario) -> Vec<Server> {
    let addr: SocketAddr = format!("[::]:{NODE_PORT}").parse().unwrap();
    s.topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| name_server(ns, addr, &format!("node-{}", i + 1)).unwrap())
        .collect()
}

#[test]
fn ecs_backends_are_the_labelled_schedulable_nodes_on_the_node_port() {
    if !lb_tests::privileged("ecs_backends_are_the_labelled_schedulable_nodes_on_the_node_port") {
        return;
    }
    let ecs = ("service.beta.kubernetes.io/backend-type", "ecs");
    let picked = node_port_service(
        "picked",
        &VIP.to_string(),
        &[
            ecs,
            ("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-backend-label", "pool=edge"),
            ("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-remove-unscheduled-backend", "on"),
        ],
        "Cluster",
        &[1, 2, 3, 4],
    );
    // Local with ecs: only the nodes hosting a ready pod (node 2), no node name needed.
    let local = node_port_service(
        "local",
        VIP_LOCAL,
        &[ecs, ("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-scheduler", "wrr")],
        "Local",
        &[2],
    );
    let s =
        Scenario::start(4, &[("nodes.yaml", &nodes_yaml(false)), ("svc.yaml", &(picked + &local))], 2, &[]).unwrap();
    let _nodes = node_servers(&s);
    let vip = SocketAddr::new(VIP.into(), 80);
    let counts = s.topo.client.run(move || tally((0..20).map(|_| tcp_request(vip, TIMEOUT).unwrap())));
    // rr over node-1 and node-2 (each CPU keeps its own turn, so not exactly 10 each): the
    // pods (backend-i on 8080), the cordoned node-3 and the unlabelled node-4 get nothing.
    let names: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(names, ["node-1", "node-2"], "{counts:?}");
    let local_vip = SocketAddr::new(VIP_LOCAL.parse().unwrap(), 80);
    let local = s.topo.client.run(move || tally((0..6).map(|_| tcp_request(local_vip, TIMEOUT).unwrap())));
    assert_eq!(local, BTreeMap::from([("node-2".to_string(), 6)]));

    // Uncordoning node-3 (the Node object changes) brings it in.
    s.write("nodes.yaml", &nodes_yaml(true)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = BTreeMap::new();
    while Instant::now() < deadline && !seen.contains_key("node-3") {
        seen = s.topo.client.run(move || tally((0..6).map(|_| tcp_request(vip, TIMEOUT).unwrap())));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.contains_key("node-3"), "node-3 uncordoned but still no traffic: {seen:?}");
    assert!(!seen.contains_key("node-4") && !seen.keys().any(|k| k.starts_with("backend-")), "{seen:?}");
}

#[test]
fn clb_http_listener_under_local_sends_only_to_this_nodes_endpoint() {
    if !lb_tests::privileged("clb_http_listener_under_local_sends_only_to_this_nodes_endpoint") {
        return;
    }
    const HTTP_PORT: u16 = 8081;
    let yaml = format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: e2e
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: "http:80,tcp:8080"
spec:
  type: LoadBalancer
  loadBalancerIP: "{VIP}"
  externalTrafficPolicy: Local
  ports:
  - {{name: http, port: 80, targetPort: {HTTP_PORT}}}
  - {{name: tcp, port: 8080, targetPort: 8080}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: shop-1, namespace: e2e, labels: {{kubernetes.io/service-name: shop}}}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORT}, protocol: TCP}}, {{name: tcp, port: 8080, protocol: TCP}}]
endpoints:
- {{addresses: ["{}"], nodeName: node-a}}
- {{addresses: ["{}"], nodeName: node-b}}
"#,
        Shape::Routed.backend_addr(1),
        Shape::Routed.backend_addr(2)
    );
    let mut s = Scenario::start(2, &[("svc.yaml", &yaml)], 1, &["--node-name", "node-a"]).unwrap();
    let _http: Vec<Server> = s
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| http_name_server(ns, SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)), &format!("backend-{}", i + 1)))
        .collect::<Result<_, _>>()
        .unwrap();
    s.daemon.wait_for_log("L7 listener started", 1, Duration::from_secs(10)).unwrap();
    let mut firsts = Vec::new();
    for _ in 0..8 {
        let out = s.topo.client.command("curl").args(["-sS", "--max-time", "5", &format!("http://{VIP}/")]).output();
        let out = out.expect("curl");
        assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
        firsts.push(String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned());
    }
    // rr over both endpoints would give backend-2 half of them: node-b's endpoint gets none.
    assert_eq!(tally(firsts), BTreeMap::from([("backend-1".to_string(), 8)]));
    s.daemon.stop().unwrap();
}
