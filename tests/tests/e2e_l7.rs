//! The L7 proxy inside `lb run`, end to end in the netns topology: curl in the client
//! namespace → XDP (passes L7 traffic up) → the proxy in the load balancer's namespace →
//! HTTP servers in the backend namespaces (routed hosts, pods behind a bridge, pods behind a
//! VXLAN overlay). An ALB Ingress on the node's addresses and a CLB
//! http listener on a VIP (made local by the agent) beside an L4 port of the same Service.
use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use lb_tests::{
    in_every_shape,
    scenario::{Scenario, alb_class_yaml},
    servers::{http_name_server, tcp_request},
    topology::{LB_CLIENT_SIDE, Shape, VIP},
};

const HTTP_PORT: u16 = 8081;

fn manifests(shape: Shape) -> String {
    let eps: String = (1..=2).map(|i| format!("- addresses: [\"{}\"]\n", shape.backend_addr(i))).collect();
    alb_class_yaml(&["{port: 8000, protocol: HTTP}"])
        + &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: web, namespace: e2e}}
spec:
  ports: [{{name: http, port: 80, targetPort: {HTTP_PORT}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: web-1, namespace: e2e, labels: {{kubernetes.io/service-name: web}}}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORT}, protocol: TCP}}]
endpoints:
{eps}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: api
  namespace: e2e
  annotations:
    alb.ingress.kubernetes.io/listen-ports: '[{{"HTTP": 8000}}]'
    alb.ingress.kubernetes.io/rewrite-target: /${{1}}
spec:
  ingressClassName: alb
  rules:
  - host: e2e.test
    http:
      paths:
      - {{path: /api/(.*), pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: e2e
  annotations:
    service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: "http:80,tcp:8080"
spec:
  type: LoadBalancer
  loadBalancerIP: "{VIP}"
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
{eps}"#
        )
}

/// `curl` in the client namespace; the body.
fn curl(s: &Scenario, args: &[&str]) -> String {
    let out = s.topo.client.command("curl").args(["-sS", "--max-time", "5"]).args(args).output().expect("curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ingress_and_clb_http_listener_through_lb_run(shape: Shape) {
    let mut s = Scenario::start_in(shape, 2, &[("l7.yaml", &manifests(shape))], 1, &[]).unwrap();
    let _http: Vec<_> = s
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            http_name_server(ns, SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)), &format!("backend-{}", i + 1)).unwrap()
        })
        .collect();
    s.daemon.wait_for_log("L7 listener started", 2, Duration::from_secs(10)).unwrap();

    // ALB: the node's address, host routing, rewrite, both backends.
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let body = curl(&s, &["-H", "Host: e2e.test", &format!("http://{LB_CLIENT_SIDE}:8000/api/cart?id=7")]);
        let mut lines = body.lines();
        seen.insert(lines.next().unwrap_or("").to_owned());
        assert_eq!(lines.next(), Some("GET /cart?id=7 HTTP/1.1"), "rewritten path: {body}");
    }
    assert_eq!(seen, BTreeSet::from(["backend-1".to_owned(), "backend-2".to_owned()]));
    let out = s
        .topo
        .client
        .command("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", "-H", "Host: other.test"])
        .arg(format!("http://{LB_CLIENT_SIDE}:8000/"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "503");

    // CLB: http on the VIP (L7 proxy) and tcp on the same VIP (XDP) side by side.
    let body = curl(&s, &[&format!("http://{VIP}/")]);
    assert!(body.starts_with("backend-"), "{body}");
    let l4 = s.topo.client.run(|| tcp_request(SocketAddr::new(VIP.into(), 8080), Duration::from_secs(5)).unwrap());
    assert!(l4.starts_with("backend-"), "{l4}");

    // Counters: `lb stats --json` against the daemon's admin endpoint.
    let out =
        s.topo.lb.command(lb_tests::daemon::lb_bin().to_str().unwrap()).args(["stats", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stats JSON");
    let alb = &v["l7"]["*:8000/http"];
    assert!(alb.is_object(), "no counters for *:8000/http: {}", v["l7"]);
    assert_eq!(alb["requests"], 7, "{alb}");
    assert_eq!(alb["responses"]["2xx"], 6);
    assert_eq!(alb["responses"]["5xx"], 1);
    assert_eq!(v["l7"]["198.18.100.10:80/http"]["responses"]["2xx"], 1);
    assert_eq!(v["agent"]["objects_rejected"], 0);

    let log = s.daemon.stop().unwrap();
    assert!(!s.daemon.log_text().contains("L7 listener not applied"), "{}", s.daemon.log_text());
    let _ = log;
}

in_every_shape!(ingress_and_clb_http_listener_through_lb_run);
