//! What operators watch, against a running `lb`: `/metrics` passes `promtool check metrics`
//! and its counters move with real L4 and L7 traffic; `/readyz`, `/livez` and `/healthz`;
//! `--log-format json`; a rejected object logged once per change, not on every reload.
use std::{
    io::Write,
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use lb_tests::{
    daemon::Daemon,
    netns::Netns,
    privileged,
    scenario::{Scenario, service_yaml},
    servers::{http_name_server, tcp_request},
    topology::{Shape, Topology, VIP},
};

const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";
const HTTP_PORT: u16 = 8081;
const ADMIN: &str = "http://127.0.0.1:9901";

/// A CLB Service on the VIP: http:80 (the L7 proxy) and tcp:8080 (XDP), health-checked.
fn shop(shape: Shape) -> String {
    let eps: String = (1..=2).map(|i| format!("- addresses: [\"{}\"]\n", shape.backend_addr(i))).collect();
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: shop
  namespace: e2e
  annotations:
    {P}protocol-port: "http:80,tcp:8080"
    {P}health-check-interval: "1"
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

/// `GET path` on the admin endpoint, from inside lb's namespace: (status, body).
fn admin(s: &Scenario, path: &str) -> (u16, String) {
    try_admin(&s.topo.lb, path).unwrap_or_else(|e| panic!("curl {path}: {e}"))
}

/// [`admin`] in `ns`; `Err` when curl fails (nothing listening yet).
fn try_admin(ns: &Netns, path: &str) -> Result<(u16, String), String> {
    let out = ns
        .command("curl")
        .args(["-sS", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("{ADMIN}{path}"))
        .output()
        .expect("curl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    Ok((code.parse().unwrap(), body.to_string()))
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// `promtool check metrics` on `body`: its complaints, if any.
fn promtool(body: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; cargo xtask setup installs it)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (!out.status.success() || !said.trim().is_empty()).then_some(said)
}

#[test]
fn metrics_pass_promtool_and_move_with_traffic() {
    if !privileged("metrics_pass_promtool_and_move_with_traffic") {
        return;
    }
    let shape = Shape::Routed;
    let mut s = Scenario::start_in(shape, 2, &[("shop.yaml", &shop(shape))], 1, &[]).unwrap();
    let _http: Vec<_> = s
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            http_name_server(ns, SocketAddr::from(([0, 0, 0, 0], HTTP_PORT)), &format!("backend-{}", i + 1)).unwrap()
        })
        .collect();
    s.daemon.wait_for_log("L7 listener started", 1, Duration::from_secs(10)).unwrap();
    assert_eq!(admin(&s, "/readyz"), (200, "ok\n".into()));
    assert_eq!(admin(&s, "/livez"), (200, "ok\n".into()));
    assert_eq!(admin(&s, "/healthz"), (200, "ok\n".into()), "kept as an alias of /livez");
    assert_eq!(admin(&s, "/nope").0, 404);

    let (code, before) = admin(&s, "/metrics");
    assert_eq!(code, 200);
    if let Some(complaints) = promtool(&before) {
        panic!("promtool check metrics:\n{complaints}\n--- /metrics ---\n{before}");
    }
    assert_eq!(sample(&before, "lb_ready", &[]), 1.0);
    assert!(sample(&before, "lb_agent_reloads_total", &[]) >= 1.0);
    assert!(sample(&before, "lb_agent_last_sync_timestamp_seconds", &[]) > 1.7e9);

    const N: usize = 6;
    for _ in 0..N {
        let r = s.topo.client.run(|| tcp_request(SocketAddr::new(VIP.into(), 8080), Duration::from_secs(5)).unwrap());
        assert!(r.starts_with("backend-"), "{r}");
        let out =
            s.topo.client.command("curl").args(["-sS", "--max-time", "5", &format!("http://{VIP}/")]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("backend-"), "{out:?}");
    }
    let (_, after) = admin(&s, "/metrics");
    if let Some(complaints) = promtool(&after) {
        panic!("promtool check metrics after traffic:\n{complaints}\n--- /metrics ---\n{after}");
    }
    let moved = |name: &str, labels: &[&str]| sample(&after, name, labels) - sample(&before, name, labels);
    let l4 = [r#"port="8080""#, r#"protocol="tcp""#, r#"service="e2e/shop""#];
    assert!(moved("lb_listener_new_flows_total", &l4) >= N as f64, "{after}");
    assert!(moved("lb_listener_packets_total", &l4) >= 3.0 * N as f64, "{after}");
    assert!(moved("lb_backend_new_flows_total", &[]) >= N as f64, "{after}");
    assert!(moved("lb_datapath_packets_total", &[r#"counter="rx""#]) >= 3.0 * N as f64, "{after}");
    assert!(moved("lb_l7_responses_total", &[r#"code="2xx""#]) >= N as f64, "{after}");
    assert!(moved("lb_l7_request_duration_seconds_count", &[]) >= N as f64, "{after}");
    assert!(moved("lb_l7_request_duration_seconds_bucket", &[r#"le="+Inf""#]) >= N as f64, "{after}");
    let healthy = |i: usize| format!(r#"backend="{}:8080""#, shape.backend_addr(i));
    assert_eq!(sample(&after, "lb_backend_healthy", &[&healthy(1)]), 1.0, "{after}");
    assert_eq!(sample(&after, "lb_backend_healthy", &[&healthy(2)]), 1.0, "{after}");

    // A dead backend turns its gauge to 0.
    s.stop_backend(2);
    let deadline = Instant::now() + Duration::from_secs(10);
    while sample(&admin(&s, "/metrics").1, "lb_backend_healthy", &[&healthy(2)]) != 0.0 {
        assert!(Instant::now() < deadline, "backend 2 still healthy in /metrics:\n{}", admin(&s, "/metrics").1);
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A Service whose scheduler is `sched`.
fn with_scheduler(name: &str, sched: &str) -> String {
    let eps = [(Shape::Routed.backend_addr(1).to_string(), None)];
    service_yaml(name, "198.18.100.11", &[(&format!("{P}scheduler"), sched)], &eps)
}

#[test]
fn json_logs_and_a_rejection_logged_once_per_change() {
    if !privileged("json_logs_and_a_rejection_logged_once_per_change") {
        return;
    }
    let good = service_yaml("good", &VIP.to_string(), &[], &[(Shape::Routed.backend_addr(1).to_string(), None)]);
    let s = Scenario::start(
        1,
        &[("good.yaml", &good), ("bad.yaml", &with_scheduler("bad", "bogus"))],
        2,
        &["--log-format", "json"],
    )
    .unwrap();
    let reloads = |s: &Scenario| sample(&admin(s, "/metrics").1, "lb_agent_reloads_total", &[]);
    let reload = |s: &Scenario, file: &str, yaml: &str| {
        let was = reloads(s);
        s.write(file, yaml).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while reloads(s) <= was {
            assert!(Instant::now() < deadline, "no reload after writing {file}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let rejections = |s: &Scenario| s.daemon.run_log_text().lines().filter(|l| l.contains("object rejected")).count();
    assert_eq!(rejections(&s), 1, "{}", s.daemon.run_log_text());

    // Other objects change: the unchanged rejection is not logged again.
    for port in ["9001", "9002", "9003"] {
        reload(&s, "good.yaml", &good.replace("port: 80,", &format!("port: {port},")));
    }
    assert_eq!(rejections(&s), 1, "logged again on an unrelated reload:\n{}", s.daemon.run_log_text());

    // The rejected object changes (another bad value): logged again, once.
    reload(&s, "bad.yaml", &with_scheduler("bad", "bogus2"));
    reload(&s, "good.yaml", &good);
    assert_eq!(rejections(&s), 2, "{}", s.daemon.run_log_text());

    // Fixed: said once.
    reload(&s, "bad.yaml", &with_scheduler("bad", "wrr"));
    let log = s.daemon.run_log_text();
    assert_eq!(log.matches("no longer rejected").count(), 1, "{log}");

    // Every line is one JSON object with a level and fields.
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\n--- log ---\n{log}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    let rejected = log.lines().find(|l| l.contains("object rejected")).unwrap();
    let v: serde_json::Value = serde_json::from_str(rejected).unwrap();
    assert!(v["fields"]["error"].as_str().unwrap().contains("bogus"), "{rejected}");
}

/// Not ready while no model could be applied (the manifest directory does not exist yet),
/// though live; ready once it appears and its model is applied.
#[test]
fn readyz_waits_for_the_first_model() {
    if !privileged("readyz_waits_for_the_first_model") {
        return;
    }
    let topo = Topology::new(1).unwrap();
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    let mut lb = Daemon::start_with(&topo.lb, &manifests, &topo.iface_list(), 0, work.path(), &["--no-pin"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while try_admin(&topo.lb, "/livez").is_err() {
        assert!(Instant::now() < deadline, "no admin endpoint:\n{}", lb.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..5 {
        assert_eq!(try_admin(&topo.lb, "/livez"), Ok((200, "ok\n".into())));
        let (code, body) = try_admin(&topo.lb, "/readyz").unwrap();
        assert_eq!((code, body.as_str()), (503, "first model not applied yet\n"), "{}", lb.log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
    let (_, metrics) = try_admin(&topo.lb, "/metrics").unwrap();
    assert_eq!(sample(&metrics, "lb_ready", &[]), 0.0, "{metrics}");

    let tmp = work.path().join("staging");
    std::fs::create_dir(&tmp).unwrap();
    let svc = service_yaml("svc", &VIP.to_string(), &[], &[(Shape::Routed.backend_addr(1).to_string(), None)]);
    std::fs::write(tmp.join("svc.yaml"), svc).unwrap();
    std::fs::rename(&tmp, &manifests).unwrap();
    lb.wait_for_log("listener loaded", 2, Duration::from_secs(10)).unwrap();
    assert_eq!(try_admin(&topo.lb, "/readyz"), Ok((200, "ok\n".into())));
    let log = lb.run_log_text();
    assert_eq!(log.matches("reading the source").count(), 1, "once, not at every poll:\n{log}");
    assert_eq!(log.matches("the source reads again").count(), 1, "{log}");
    assert_eq!(sample(&try_admin(&topo.lb, "/metrics").unwrap().1, "lb_ready", &[]), 1.0);
}
