//! End to end through real kernels' TCP/UDP stacks: a client namespace talks to the VIP, the
//! `lb` daemon balances over backend namespaces with full NAT, replies come back through it.
use std::{
    collections::BTreeMap,
    fs,
    net::{SocketAddr, SocketAddrV4},
    path::Path,
    time::Duration,
};

use lb_tests::{
    daemon::Daemon,
    privileged,
    servers::{name_server, tcp_request, udp_request},
    topology::{LB_CLIENT_SIDE, Topology, VIP, backend_addr},
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn write_manifests(dir: &Path, backends: &[usize]) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/l4-basic");
    fs::copy(examples.join("service.yaml"), dir.join("service.yaml")).unwrap();
    let endpoints: String = backends
        .iter()
        .map(|i| format!("- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n", backend_addr(*i)))
        .collect();
    let slice = fs::read_to_string(examples.join("endpointslice.yaml")).unwrap();
    let head = slice.split("endpoints:").next().unwrap();
    // Write to a temporary name and rename, as a ConfigMap update would: no half-written file.
    let tmp = dir.join(".endpointslice.yaml.tmp");
    fs::write(&tmp, format!("{head}endpoints:\n{endpoints}")).unwrap();
    fs::rename(tmp, dir.join("endpointslice.yaml")).unwrap();
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(VIP, port))
}

#[test]
fn tcp_and_udp_balanced_through_the_vip() {
    if !privileged("tcp_and_udp_balanced_through_the_vip") {
        return;
    }
    let topo = Topology::new(3).unwrap();
    let _servers: Vec<_> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| name_server(ns, "[::]:8080".parse().unwrap(), &format!("backend-{}", i + 1)).unwrap())
        .collect();
    let local = SocketAddr::V4(SocketAddrV4::new(LB_CLIENT_SIDE, 7000));
    let _lb_local = name_server(&topo.lb, local, "lb-local").unwrap();

    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    fs::create_dir(&manifests).unwrap();
    write_manifests(&manifests, &[1, 2, 3]);
    // Unpinned: the datapath leaves with lb, and its exit restores the node (checked below).
    let mut daemon =
        Daemon::start_with(&topo.lb, &manifests, &topo.iface_list(), 2, work.path(), &["--no-pin"]).unwrap();

    // 30 TCP request/response connections, spread over the three backends.
    let counts = topo.client.run(|| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..30 {
            let reply = tcp_request(vip(80), TIMEOUT).unwrap_or_else(|e| panic!("TCP request {i}: {e:#}"));
            *counts.entry(reply).or_default() += 1;
        }
        counts
    });
    assert_eq!(counts.values().sum::<usize>(), 30);
    for b in ["backend-1", "backend-2", "backend-3"] {
        assert!(counts.get(b).copied().unwrap_or(0) >= 1, "{b} got no connection: {counts:?}");
    }

    // UDP through the same VIP:port as the TCP listener; replies come from the VIP.
    let udp = topo.client.run(|| {
        (0..10)
            .map(|i| udp_request(vip(80), TIMEOUT).unwrap_or_else(|e| panic!("UDP request {i}: {e:#}")))
            .collect::<Vec<_>>()
    });
    assert!(udp.iter().all(|r| r.starts_with("backend-")), "{udp:?}");

    // Traffic that is not for a listener reaches the node's own stack untouched.
    let (t, u) = topo.client.run(move || (tcp_request(local, TIMEOUT).unwrap(), udp_request(local, TIMEOUT).unwrap()));
    assert_eq!((t.as_str(), u.as_str()), ("lb-local", "lb-local"));

    // An edit of the manifest directory is applied without a restart.
    write_manifests(&manifests, &[2]);
    daemon.wait_for_log("listener loaded", 4, Duration::from_secs(10)).unwrap();
    let after = topo.client.run(|| (0..6).map(|_| tcp_request(vip(80), TIMEOUT).unwrap()).collect::<Vec<_>>());
    assert!(after.iter().all(|r| r == "backend-2"), "after the edit only backend-2 serves: {after:?}");

    // While lb runs, the full-NAT source ports are reserved from the node's own connections.
    let reserved = topo.lb.exec(&["sysctl", "-n", "net.ipv4.ip_local_reserved_ports"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&reserved.stdout).trim(), "10000-29999");

    // `lb stats` reads the running daemon's counters per listener and per backend.
    let bin = lb_tests::daemon::lb_bin();
    let out = topo.lb.exec(&[bin.to_str().unwrap(), "stats", "--json"]).unwrap();
    let live: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tcp = &live["listeners"]["198.18.100.10:80/tcp"];
    assert_eq!(tcp["new_flows"], 36, "30 + 6 TCP connections: {live}");
    assert!(tcp["reply_packets"].as_u64().unwrap() > 0);
    assert_eq!(live["listeners"]["198.18.100.10:80/udp"]["new_flows"], 10);
    let per_backend: u64 =
        (1..=3).map(|i| live["backends"][format!("198.18.{i}.2:8080")]["new_flows"].as_u64().unwrap_or(0)).sum();
    assert!(per_backend >= 6, "backends still loaded count their flows: {live}");
    let text = topo.lb.exec(&[bin.to_str().unwrap(), "stats"]).unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("198.18.100.10:80/tcp"));

    // SIGTERM: a clean exit with the datapath's counters, and the node as it was found.
    let out = daemon.stop().unwrap();
    let stats: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let packets = |name: &str| stats["stats"]["datapath"][name]["packets"].as_u64().unwrap();
    assert!(packets("new_flows") >= 30 + 10 + 6, "{stats}");
    assert!(packets("fwd_to_client") > 0, "{stats}");
    let links = String::from_utf8(topo.lb.ip(&["link", "show"]).unwrap().stdout).unwrap();
    assert!(!links.contains("xdp"), "XDP detached on exit:\n{links}");
    let fwd = topo.lb.exec(&["sysctl", "-n", &format!("net.ipv4.conf.{}.forwarding", topo.lb_ifaces[0])]).unwrap();
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "0", "forwarding restored");
    let reserved = topo.lb.exec(&["sysctl", "-n", "net.ipv4.ip_local_reserved_ports"]).unwrap();
    assert_eq!(String::from_utf8_lossy(&reserved.stdout).trim(), "", "reserved ports restored");
}
