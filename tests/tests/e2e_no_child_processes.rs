//! `lb run` starts no child process (issue #17, item 2): routes, neighbours, links and the
//! local routes of L7 VIPs are read and written through netlink in process. `lb run` runs
//! under `strace -f` through startup, a manifest change that adds a backend on a new next
//! hop, an endpoint change, an L7 VIP's route made and removed, link events (a pod veth
//! appears; a backend's link goes down and up) and a managed neighbour entry deleted under
//! it, then shutdown; the trace holds one execve (lb itself) and no clone but of threads.
//! Each change is seen done on the node, and the VIP serves at the end.
use std::{fs, net::SocketAddr, time::Duration};

use lb_tests::{
    daemon::Daemon,
    netns::{Netns, veth},
    scenario::service_yaml,
    servers::{name_server, tcp_request},
    topology::{Topology, VIP},
};

/// A Service with a CLB http listener on `vip`:80 and one endpoint (its VIP gets a local route).
fn http_service(name: &str, vip: &str, endpoint: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: t\n  annotations: {{service.beta.kubernetes.io/alibaba-cloud-loadbalancer-protocol-port: \"http:80\"}}\nspec: {{type: LoadBalancer, loadBalancerIP: {vip}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: t, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{endpoint}]}}]\n---\n"
    )
}

fn eps(addrs: &[&str]) -> Vec<(String, Option<u32>)> {
    addrs.iter().map(|a| (a.to_string(), None)).collect()
}

/// Wait until `check` holds (30 s at most).
fn wait(what: &str, lb: &Daemon, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}\n{}", lb.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `ns` has a managed neighbour entry for `addr`.
fn managed_neighbour(ns: &Netns, addr: &str) -> bool {
    ns.ip(&["neigh", "show", addr]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("managed"))
}

/// Whether `ns` has lb's local route (proto 252) to `vip`.
fn vip_route(ns: &Netns, vip: &str) -> bool {
    ns.ip(&["route", "show", "table", "local", "exact", &format!("{vip}/32"), "proto", "252"])
        .is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
}

/// `agent.route_lookups` of lb's `/stats` (from inside its namespace).
fn route_lookups(ns: &Netns) -> u64 {
    let out = ns.command("curl").args(["-sS", "--max-time", "5", "http://127.0.0.1:9901/stats"]).output().unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("/stats: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    stats["agent"]["route_lookups"].as_u64().unwrap_or_else(|| panic!("no agent.route_lookups in /stats: {stats}"))
}

/// The process `strace` (`tracer`) runs: its only child.
fn traced_child(tracer: u32) -> u32 {
    let children = fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children")).unwrap();
    let pids: Vec<u32> = children.split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 1, "strace runs lb only: {pids:?}");
    pids[0]
}

/// What the trace shows lb starting: every execve but lb's own first one, and every fork,
/// vfork and clone/clone3 without CLONE_THREAD (threads are fine). The L7 proxy process
/// (`lb proxy`, the same binary: the architecture keeps L7 out of the agent's process) is
/// the one child lb may have: its execve and the clone before it are returned apart.
struct Spawned<'a> {
    proxies: Vec<&'a str>,
    forks: Vec<&'a str>,
    others: Vec<&'a str>,
}

fn spawned(trace: &str) -> Spawned<'_> {
    let lb = fs::canonicalize(lb_tests::daemon::lb_bin()).unwrap();
    let mut s = Spawned { proxies: Vec::new(), forks: Vec::new(), others: Vec::new() };
    let mut first = true;
    for line in trace.lines() {
        // `PID call(...` (strace -f), `PID <... call resumed>...` for the end of a split call.
        let call = line.split_once(' ').map_or(line, |(_, rest)| rest.trim_start());
        if call.starts_with("execve(") || call.starts_with("execveat(") {
            let path = call.split('"').nth(1).unwrap_or_default();
            let is_lb = fs::canonicalize(path).is_ok_and(|p| p == lb);
            if first && is_lb {
                first = false;
            } else if is_lb && call.contains(", \"proxy\"") {
                s.proxies.push(line);
            } else {
                s.others.push(line);
            }
        } else if call.starts_with("fork(")
            || call.starts_with("vfork(")
            || ((call.starts_with("clone(") || call.starts_with("clone3(")) && !call.contains("CLONE_THREAD"))
        {
            s.forks.push(line);
        }
    }
    s
}

#[test]
fn lb_starts_no_child_process_while_serving() {
    if !lb_tests::privileged("lb_starts_no_child_process_while_serving") {
        return;
    }
    if std::process::Command::new("strace").arg("-V").output().is_err() {
        panic!("strace is needed (cargo xtask setup installs it)");
    }
    let topo = Topology::new(3).unwrap();
    let p = topo.prefix.clone();
    let _servers: Vec<_> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| name_server(ns, "[::]:8080".parse().unwrap(), &format!("backend-{}", i + 1)).unwrap())
        .collect();
    let (b1, b2, b3) = ("198.18.1.2", "198.18.2.2", "198.18.3.2");
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    fs::create_dir(&manifests).unwrap();
    let svc = manifests.join("svc.yaml");
    fs::write(&svc, service_yaml("svc", &VIP.to_string(), &[], &eps(&[b1]))).unwrap();
    let trace = work.path().join("lb.strace");
    let trace_arg = trace.to_str().unwrap();
    let wrapper = ["strace", "-f", "-e", "trace=execve,execveat,fork,vfork,clone,clone3", "-o", trace_arg];
    let mut lb =
        Daemon::start_wrapped(&topo.lb, &manifests, &topo.iface_list(), 2, work.path(), &[], &wrapper).unwrap();
    let lb_pid = traced_child(lb.pid().unwrap());
    assert_eq!(fs::read_to_string(format!("/proc/{lb_pid}/comm")).unwrap().trim(), "lb");
    wait("backend 1's managed neighbour", &lb, || managed_neighbour(&topo.lb, b1));

    // A backend on a new next hop (another NIC), then an endpoint change.
    fs::write(&svc, service_yaml("svc", &VIP.to_string(), &[], &eps(&[b1, b2]))).unwrap();
    wait("backend 2's managed neighbour", &lb, || managed_neighbour(&topo.lb, b2));
    fs::write(&svc, service_yaml("svc", &VIP.to_string(), &[], &eps(&[b2, b3]))).unwrap();
    wait("backend 3's managed neighbour", &lb, || managed_neighbour(&topo.lb, b3));
    // Each distinct backend was looked up once, whatever the number of applies and of
    // listeners (and Services) it serves.
    assert_eq!(route_lookups(&topo.lb), 3, "{}", lb.run_log_text());
    let svc2 = manifests.join("svc2.yaml");
    let loaded = lb.run_log_text().matches("listener loaded").count();
    fs::write(&svc2, service_yaml("svc2", "198.18.100.11", &[], &eps(&[b2, b3]))).unwrap();
    lb.wait_for_log("listener loaded", loaded + 2, Duration::from_secs(30)).unwrap();
    assert_eq!(route_lookups(&topo.lb), 3, "no lookup for backends already known:\n{}", lb.run_log_text());

    // An L7 VIP: lb makes its local route, and removes it with the Service.
    let l7 = manifests.join("l7.yaml");
    fs::write(&l7, http_service("web", "198.18.100.41", b2)).unwrap();
    wait("the L7 VIP's route", &lb, || vip_route(&topo.lb, "198.18.100.41"));
    fs::remove_file(&l7).unwrap();
    wait("the L7 VIP's route gone", &lb, || !vip_route(&topo.lb, "198.18.100.41"));

    // Link events: a pod's veth appears (a local client device: lb puts tc on it) ...
    let pod = Netns::new(&format!("{p}pod")).unwrap();
    veth(&topo.lb, &format!("{p}pv"), "198.18.60.1/24", &pod, &format!("{p}pw"), "198.18.60.2/24").unwrap();
    let pod_veth = format!("{p}pv");
    wait("the tc datapath on the pod's veth", &lb, || !topo.lb.bpf_programs(&pod_veth).is_empty());
    // ... a backend's link goes down (its route and neighbours go) and up again: lb looks
    // the route up again and makes the neighbour entry again.
    let l3 = format!("{p}l3");
    topo.lb.ip(&["link", "set", &l3, "down"]).unwrap();
    wait("backend 3's neighbour gone with its link", &lb, || !managed_neighbour(&topo.lb, b3));
    topo.lb.ip(&["link", "set", &l3, "up"]).unwrap();
    wait("backend 3's managed neighbour again", &lb, || managed_neighbour(&topo.lb, b3));
    let after_link = route_lookups(&topo.lb);
    assert!(after_link > 3, "backend 3 looked up again after its link's events: {after_link}");
    // Someone deletes lb's neighbour entry: lb makes it again.
    topo.lb.ip(&["neigh", "del", b2, "dev", &format!("{p}l2")]).unwrap();
    wait("backend 2's managed neighbour again", &lb, || managed_neighbour(&topo.lb, b2));

    // It serves: both backends answer through the VIP.
    let to = SocketAddr::new(VIP.into(), 80);
    let names: Vec<String> = topo.client.run(move || {
        (0..20).map(|_| tcp_request(to, Duration::from_secs(5)).unwrap_or_else(|e| format!("{e:#}"))).collect()
    });
    for name in ["backend-2", "backend-3"] {
        assert!(names.iter().any(|n| n == name), "{name} never answered: {names:?}\n{}", lb.run_log_text());
    }
    assert!(names.iter().all(|n| n == "backend-2" || n == "backend-3"), "{names:?}");

    // Shutdown (lb itself, so that strace sees it through: strace exits with lb), then the trace.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(lb_pid as i32), nix::sys::signal::Signal::SIGTERM).unwrap();
    let tracer = lb.pid().unwrap();
    wait("lb and strace to exit", &lb, || {
        fs::read_to_string(format!("/proc/{tracer}/stat"))
            .map_or(true, |s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')))
    });
    let out = lb.stop().unwrap();
    assert!(out.contains("\"stats\""), "lb exited cleanly: {out}\n{}", lb.log_text());
    let text = fs::read_to_string(&trace).unwrap();
    assert!(text.contains("execve("), "the trace is empty: {text}");
    assert!(text.contains("CLONE_THREAD"), "lb's threads are in the trace: {text}");
    let s = spawned(&text);
    eprintln!(
        "trace: {} lines, {} threads started, {} L7 proxy process(es)",
        text.lines().count(),
        text.lines().filter(|l| l.contains("CLONE_THREAD")).count(),
        s.proxies.len()
    );
    assert!(s.others.is_empty(), "lb ran other programs:\n{}\n{}", s.others.join("\n"), lb.log_text());
    assert!(s.proxies.len() <= 1, "the L7 proxy was started more than once:\n{}", s.proxies.join("\n"));
    assert_eq!(s.forks.len(), s.proxies.len(), "lb forked for nothing but its L7 proxy:\n{}", s.forks.join("\n"));
    drop(pod);
}
