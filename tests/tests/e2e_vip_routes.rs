//! The routes `lb run` makes for CLB http VIPs (issue #17, item 5): a VIP without a route in
//! the local table gets one marked `proto 252`, removed when `lb` stops; a route to a VIP that
//! `lb` did not make is never replaced nor deleted. In a namespace of the test's own.
use std::{fs, time::Duration};

use lb_tests::{
    daemon::Daemon,
    netns::{Netns, unique_prefix},
};

/// The Service `name` on `vip` with a CLB http listener on port 80 and one endpoint.
fn http_service(name: &str, vip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: t\n  annotations: {{service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: \"http:80\"}}\nspec: {{type: LoadBalancer, loadBalancerIP: {vip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [198.18.1.2]}}]\n---\n"
    )
}

/// The local-table routes to exactly `prefix`, as `ip -j` gives them.
fn local_routes(ns: &Netns, prefix: &str) -> Vec<serde_json::Value> {
    let out = ns.ip(&["-j", "-4", "route", "show", "table", "local", "exact", prefix]).unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// A namespace of the test's own (`name` after a unique prefix) with one veth pair up, its
/// `a` end on 198.18.1.1/24: the node and the interface `lb` runs on.
fn node(name: &str) -> (Netns, String) {
    let p = unique_prefix();
    let ns = Netns::new(&format!("{p}{name}")).unwrap();
    let iface = format!("{p}a");
    ns.ip(&["link", "add", &iface, "type", "veth", "peer", "name", &format!("{p}b")]).unwrap();
    ns.ip(&["addr", "add", "198.18.1.1/24", "dev", &iface]).unwrap();
    ns.ip(&["link", "set", &iface, "up"]).unwrap();
    ns.ip(&["link", "set", &format!("{p}b"), "up"]).unwrap();
    (ns, iface)
}

#[test]
fn lb_makes_its_own_vip_routes_and_leaves_the_others() {
    if !lb_tests::privileged("lb_makes_its_own_vip_routes_and_leaves_the_others") {
        return;
    }
    let (ns, iface) = node("vr");
    // Someone else's route to the second VIP (an announcer's, a node address's).
    ns.ip(&["route", "add", "local", "198.18.100.42/32", "dev", "lo", "table", "local", "proto", "static"]).unwrap();

    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    fs::create_dir(&manifests).unwrap();
    fs::write(
        manifests.join("svc.yaml"),
        http_service("mine", "198.18.100.41") + &http_service("theirs", "198.18.100.42"),
    )
    .unwrap();
    let mut lb = Daemon::start_with(&ns, &manifests, &iface, 0, work.path(), &["--no-pin", "--admin", "off"]).unwrap();
    lb.wait_for_log("VIP made local", 1, Duration::from_secs(30)).unwrap();
    lb.wait_for_log("lb did not make", 1, Duration::from_secs(30)).unwrap();

    let mine = local_routes(&ns, "198.18.100.41/32");
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["protocol"], "252", "lb marks its route: {mine:?}");
    let theirs = local_routes(&ns, "198.18.100.42/32");
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["protocol"], "static", "not replaced: {theirs:?}");

    // The VIP goes from the model: lb's route goes, the other stays.
    fs::write(manifests.join("svc.yaml"), http_service("theirs", "198.18.100.42")).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !local_routes(&ns, "198.18.100.41/32").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(local_routes(&ns, "198.18.100.41/32").is_empty(), "lb removes its route when the VIP goes");
    fs::write(
        manifests.join("svc.yaml"),
        http_service("mine", "198.18.100.41") + &http_service("theirs", "198.18.100.42"),
    )
    .unwrap();
    lb.wait_for_log("VIP made local", 2, Duration::from_secs(30)).unwrap();

    lb.stop().unwrap();
    assert!(local_routes(&ns, "198.18.100.41/32").is_empty(), "lb removes its route on exit");
    let theirs = local_routes(&ns, "198.18.100.42/32");
    assert_eq!(theirs.len(), 1, "never deleted: {theirs:?}\n{}", lb.log_text());
    assert_eq!(theirs[0]["protocol"], "static");
    let log = lb.log_text();
    assert_eq!(log.matches("lb did not make").count(), 1, "warned once per VIP: {log}");
}

/// With a pinned datapath the VIP routes stay when `lb` stops (an L7 proxy container outlives
/// the agent and keeps getting its VIPs' traffic); the next `lb` adopts them, removing a
/// route of its own making whose VIP is no longer served (left by a crash, or by a Service
/// deleted meanwhile); `lb uninstall` removes them.
#[test]
fn pinned_lb_keeps_its_vip_routes_across_a_restart() {
    if !lb_tests::privileged("pinned_lb_keeps_its_vip_routes_across_a_restart") {
        return;
    }
    let (ns, iface) = node("vk");
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    fs::create_dir(&manifests).unwrap();
    fs::write(manifests.join("svc.yaml"), http_service("mine", "198.18.100.51")).unwrap();
    let mut lb = Daemon::start_with(&ns, &manifests, &iface, 0, work.path(), &["--admin", "off"]).unwrap();
    lb.wait_for_log("VIP made local", 1, Duration::from_secs(30)).unwrap();
    lb.halt(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(local_routes(&ns, "198.18.100.51/32").len(), 1, "kept with the pinned datapath");

    // A leftover of lb's own making for a VIP no Service has any more.
    ns.ip(&["route", "add", "local", "198.18.100.52/32", "dev", "lo", "table", "local", "proto", "252"]).unwrap();
    lb.resume().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !local_routes(&ns, "198.18.100.52/32").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(local_routes(&ns, "198.18.100.52/32").is_empty(), "the stale route stays: {}", lb.log_text());
    assert_eq!(local_routes(&ns, "198.18.100.51/32").len(), 1, "the served VIP's route");
    lb.halt(nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = lb.uninstall().unwrap();
    assert!(out.contains("removed 1 VIP route"), "{out}");
    assert!(local_routes(&ns, "198.18.100.51/32").is_empty(), "lb uninstall removes them");
    lb.stop().unwrap();
}
