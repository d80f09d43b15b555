//! The ALB multi-cluster gateway through `lb run`: a fleet directory (AlbConfig with
//! `remote-clusters`, IngressClass, Ingress, a Service without endpoints) and two cluster
//! directories given with `--cluster ID=DIR`, each holding EndpointSlices of that Service over
//! backends of the netns topology. Requests through the node split by ready replicas by
//! default, by `cluster-weight.<id>` when set (80/20, then 100 to one cluster); a cluster that
//! is not associated gets nothing; a cluster directory that goes away keeps its last
//! endpoints in service.
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use lb_tests::{
    in_every_shape,
    scenario::{Scenario, write_atomic},
    servers::http_name_server,
    topology::{LB_CLIENT_SIDE, Shape},
};

const HTTP_PORT: u16 = 8081;
const REQUESTS: usize = 100;

fn fleet(weights: &[(&str, u32)]) -> String {
    fleet_with(weights, "")
}

/// [`fleet`] with more Ingress annotations (indented lines).
fn fleet_with(weights: &[(&str, u32)], more: &str) -> String {
    let weights: String = weights
        .iter()
        .map(|(id, w)| format!("    alb.ingress.kubernetes.io/cluster-weight.{id}: \"{w}\"\n"))
        .chain(std::iter::once(more.to_owned()))
        .collect();
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: alb}}
spec:
  controller: ingress.k8s.alibabacloud/alb
  parameters: {{apiGroup: alibabacloud.com, kind: AlbConfig, name: fleet}}
---
apiVersion: alibabacloud.com/v1
kind: AlbConfig
metadata:
  name: fleet
  annotations:
    alb.ingress.kubernetes.io/remote-clusters: c1,c2
spec:
  config: {{name: fleet, addressType: Intranet, zoneMappings: [{{vSwitchId: vsw-a}}]}}
  listeners:
  - {{port: 8001, protocol: HTTP}}
---
apiVersion: v1
kind: Service
metadata: {{name: service1, namespace: demo}}
spec:
  ports: [{{name: http, port: 80, targetPort: {HTTP_PORT}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: alb-ingress
  namespace: demo
  annotations:
    alb.ingress.kubernetes.io/listen-ports: '[{{"HTTP": 8001}}]'
{weights}spec:
  ingressClassName: alb
  rules:
  - host: alb.ingress.alibaba.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: service1, port: {{number: 80}}}}}}}}
"#
    )
}

/// The cluster's EndpointSlice of `service1` over the given backends.
fn cluster_slice(shape: Shape, backends: &[usize]) -> String {
    let eps: String = backends.iter().map(|&i| format!("- addresses: [\"{}\"]\n", shape.backend_addr(i))).collect();
    format!(
        r#"apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: service1-abc, namespace: demo, labels: {{kubernetes.io/service-name: service1}}}}
addressType: IPv4
ports: [{{name: http, port: {HTTP_PORT}, protocol: TCP}}]
endpoints:
{eps}"#
    )
}

/// Requests per backend name (or other status code) for [`REQUESTS`] requests on one
/// keep-alive connection, with the `headers` given.
fn spread(s: &Scenario, headers: &[&str]) -> BTreeMap<String, usize> {
    let url = format!("http://{LB_CLIENT_SIDE}:8001/");
    let mut cmd = s.topo.client.command("curl");
    cmd.args(["-sS", "--max-time", "20", "-H", "Host: alb.ingress.alibaba.com", "-w", "\\n%{http_code}\\n"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    for _ in 0..REQUESTS {
        cmd.arg(&url);
    }
    let out = cmd.output().expect("curl");
    let mut seen = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("backend-") {
            *seen.entry(line.trim().to_owned()).or_default() += 1;
        } else if line.len() == 3 && line.bytes().all(|b| b.is_ascii_digit()) && line != "200" {
            // `-w`: the status code after each answer's body (200s are counted by backend).
            *seen.entry(format!("status {line}")).or_default() += 1;
        }
    }
    seen
}

/// Requests to cluster 1 (backends 1-3) and cluster 2 (backend 4).
fn by_cluster(seen: &BTreeMap<String, usize>) -> (usize, usize) {
    let n = |names: &[&str]| names.iter().map(|b| seen.get(*b).copied().unwrap_or(0)).sum::<usize>();
    (n(&["backend-1", "backend-2", "backend-3"]), n(&["backend-4"]))
}

/// Waits until the split is `want` (requests to cluster 1, to cluster 2) within ±3.
fn expect_split(s: &Scenario, want: (usize, usize), what: &str) -> BTreeMap<String, usize> {
    expect_split_with(s, &[], want, what)
}

fn expect_split_with(s: &Scenario, headers: &[&str], want: (usize, usize), what: &str) -> BTreeMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = spread(s, headers);
        let (a, b) = by_cluster(&seen);
        if a.abs_diff(want.0) <= 3 && b.abs_diff(want.1) <= 3 && a + b == REQUESTS {
            return seen;
        }
        assert!(Instant::now() < deadline, "{what}: wanted {want:?} of {REQUESTS}, got ({a}, {b}): {seen:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn fleet_splits_by_replicas_then_by_cluster_weight(shape: Shape) {
    let work = tempfile::tempdir().unwrap();
    let (c1, c2, c3) = (work.path().join("c1"), work.path().join("c2"), work.path().join("c3"));
    for d in [&c1, &c2, &c3] {
        std::fs::create_dir(d).unwrap();
    }
    write_atomic(&c1, "eps.yaml", &cluster_slice(shape, &[1, 2, 3])).unwrap();
    write_atomic(&c2, "eps.yaml", &cluster_slice(shape, &[4])).unwrap();
    // c3 is given to lb but not associated with the gateway: it must get nothing.
    write_atomic(&c3, "eps.yaml", &cluster_slice(shape, &[4])).unwrap();
    let args: Vec<String> = [("c1", &c1), ("c2", &c2), ("c3", &c3)]
        .iter()
        .flat_map(|(id, d)| ["--cluster".to_owned(), format!("{id}={}", d.display())])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut s = Scenario::start_in(shape, 4, &[("fleet.yaml", &fleet(&[]))], 0, &args).unwrap();
    let _http: Vec<_> = (0..4)
        .map(|i| {
            let ns = &s.topo.backends[i];
            http_name_server(ns, SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)), &format!("backend-{}", i + 1)).unwrap()
        })
        .collect();
    s.daemon.wait_for_log("L7 listener started", 1, Duration::from_secs(10)).unwrap();
    let log = s.daemon.run_log_text();
    assert!(log.contains("no AlbConfig lists it in remote-clusters"), "c3 is reported as not associated:\n{log}");

    // By ready replicas: 3 to 1.
    let seen = expect_split(&s, (75, 25), "by replicas");
    assert_eq!(seen.len(), 4, "every replica of both clusters serves: {seen:?}");

    // cluster-weight 80/20.
    s.write("fleet.yaml", &fleet(&[("c1", 80), ("c2", 20)])).unwrap();
    expect_split(&s, (80, 20), "cluster-weight 80/20");

    // Everything to c2; c1's replicas get nothing.
    s.write("fleet.yaml", &fleet(&[("c1", 0), ("c2", 100)])).unwrap();
    expect_split(&s, (0, 100), "cluster-weight c2 100");

    // Header routing (the reference's example 3) together with cluster-weight: requests with
    // `stage: gray` take the rule and go to c2; the others match no rule.
    let gray = r#"    alb.ingress.kubernetes.io/conditions.service1: '[{"type": "Header", "headerConfig": {"key": "stage", "values": ["gray"]}}]'
"#;
    s.write("fleet.yaml", &fleet_with(&[("c2", 100)], gray)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let other = spread(&s, &["stage: blue"]);
        if by_cluster(&other) == (0, 0) {
            assert_eq!(other.values().sum::<usize>(), REQUESTS, "every request answered: {other:?}");
            break;
        }
        assert!(Instant::now() < deadline, "requests without the header still reach a backend: {other:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    expect_split_with(&s, &["stage: gray"], (0, 100), "header stage: gray, c2 100");

    // A cluster whose source fails keeps its last good endpoints.
    s.write("fleet.yaml", &fleet(&[])).unwrap();
    expect_split(&s, (75, 25), "by replicas again");
    std::fs::remove_dir_all(&c2).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    expect_split(&s, (75, 25), "c2 unreadable, its last endpoints serve");
    s.daemon.wait_for_log("its last good EndpointSlices stay in service", 1, Duration::from_secs(10)).unwrap();
}

in_every_shape!(fleet_splits_by_replicas_then_by_cluster_weight);
