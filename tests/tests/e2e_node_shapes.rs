//! End to end on nodes shaped like Kubernetes nodes (`lb_tests::cluster`): pods behind a
//! bridge on the load balancer's node, pods on a second node behind a VXLAN overlay, a client
//! across the wire and a client pod on the node; pods keep their default offloads.
use std::{collections::BTreeMap, fs, net::SocketAddr, time::Duration};

use lb_tests::{
    cluster::{Cluster, NODE_A, Pods},
    daemon::Daemon,
    netns::Netns,
    privileged,
    scenario::service_yaml_on_nodes,
    servers::{Server, name_server, tcp_request, udp_request},
};

const TIMEOUT: Duration = Duration::from_secs(5);
const VIP: &str = "198.18.100.10";
const VIP_LOCAL: &str = "198.18.100.11";
const VIP6: &str = "2001:db8:100::10";

fn servers(cluster: &Cluster) -> Vec<Server> {
    cluster.pods.iter().map(|p| name_server(&p.ns, "[::]:8080".parse().unwrap(), &p.name).unwrap()).collect()
}

/// `n` TCP and `n` UDP requests from `ns` to `vip:80`: the answers by pod name, and the failures.
fn ask(ns: &Netns, vip: &str, n: usize) -> (BTreeMap<String, usize>, Vec<String>) {
    let to = SocketAddr::new(vip.parse().unwrap(), 80);
    ns.run(move || {
        let mut seen = BTreeMap::new();
        let mut failed = Vec::new();
        for i in 0..n * 2 {
            let answer = if i % 2 == 0 { tcp_request(to, TIMEOUT) } else { udp_request(to, TIMEOUT) };
            match answer {
                Ok(name) => *seen.entry(name).or_insert(0) += 1,
                Err(e) => failed.push(format!("{} #{i}: {e:#}", if i % 2 == 0 { "tcp" } else { "udp" })),
            }
        }
        (seen, failed)
    })
}

fn manifests(cluster: &Cluster, dir: &std::path::Path) {
    let eps = |v6: bool| -> Vec<(String, &str)> {
        cluster.endpoints(v6).into_iter().map(|(a, n)| (a.to_string(), n)).collect()
    };
    fs::write(dir.join("spread.yaml"), service_yaml_on_nodes("spread", VIP, &[], false, &eps(false))).unwrap();
    fs::write(dir.join("local.yaml"), service_yaml_on_nodes("local", VIP_LOCAL, &[], true, &eps(false))).unwrap();
    fs::write(
        dir.join("spread6.yaml"),
        service_yaml_on_nodes(
            "spread6",
            VIP6,
            &[("service.beta.kubernetes.io/alibaba-cloud-loadbalancer-ip-version", "ipv6")],
            false,
            &eps(true),
        ),
    )
    .unwrap();
}

fn start(cluster: &Cluster, work: &tempfile::TempDir) -> Daemon {
    let dir = work.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    manifests(cluster, &dir);
    // Three Services, TCP and UDP each.
    Daemon::start_with(&cluster.lb, &dir, &cluster.nic, 6, work.path(), &["--node-name", NODE_A]).unwrap()
}

fn all_pods(cluster: &Cluster) -> Vec<String> {
    cluster.pods.iter().map(|p| p.name.clone()).collect()
}

#[test]
fn wire_client_and_client_pod_reach_bridge_and_overlay_pods() {
    if !privileged("wire_client_and_client_pod_reach_bridge_and_overlay_pods") {
        return;
    }
    let cluster = Cluster::new(Pods::Both, 3).unwrap();
    let _servers = servers(&cluster);
    let work = tempfile::tempdir().unwrap();
    let mut daemon = start(&cluster, &work);

    for (who, ns, vip) in [
        ("client across the wire", &cluster.client, VIP),
        ("client across the wire, IPv6", &cluster.client, VIP6),
        ("client pod on node-a", &cluster.client_pod, VIP),
        ("client pod on node-a, IPv6", &cluster.client_pod, VIP6),
        ("node-a itself", &cluster.lb, VIP),
        ("node-a itself, IPv6", &cluster.lb, VIP6),
    ] {
        let (seen, failed) = ask(ns, vip, 30);
        assert!(failed.is_empty(), "{who}: {} of 60 failed: {failed:#?}\n{}", failed.len(), daemon.log_text());
        let names: Vec<String> = seen.keys().cloned().collect();
        assert_eq!(names, all_pods(&cluster), "{who}: every pod answers: {seen:?}");
    }
    let shown = |dev: &str| cluster.lb.bpf_programs(&format!("{}{dev}", cluster.prefix));
    for (dev, progs) in [("cni", vec!["lb_tc"]), ("vx", vec!["lb_tc"]), ("n0", vec!["lb_tc_nic", "xdp"])] {
        assert_eq!(shown(dev), progs, "programs on {dev} while lb runs");
    }
    let egress = cluster.lb.bpf_egress_programs(&cluster.nic);
    assert_eq!(egress, vec!["lb_tc_egress"], "on the NIC's egress");
    // The way the packets went: the wire client's requests were rewritten by XDP and handed
    // to tc (the bridge and the overlay take no XDP redirect); the pods' replies and the
    // client pod's requests went through the tc datapath on the bridge and the overlay.
    let out = daemon.stop().unwrap();
    let stats: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let packets = |name: &str| stats["stats"]["datapath"][name]["packets"].as_u64().unwrap();
    assert!(packets("xdp_to_tc") >= 60, "{stats}");
    assert!(packets("tc_rx") >= 120, "{stats}");
    assert!(packets("tc_redirect") >= 240, "{stats}");
    assert!(packets("to_local") >= 60, "replies to node-a itself: {stats}");
    assert!(packets("new_flows") >= 240, "{stats}");
    assert_eq!(packets("drop_no_snat_addr"), 0, "{stats}");
    // Nothing left on the node: tc programs detached from the bridge and the overlay.
    for dev in ["cni", "vx", "n0"] {
        assert!(shown(dev).is_empty(), "{dev} still has programs: {:?}", shown(dev));
    }
    assert!(cluster.lb.bpf_egress_programs(&cluster.nic).is_empty());
}

#[test]
fn local_traffic_policy_reaches_only_this_nodes_pods() {
    if !privileged("local_traffic_policy_reaches_only_this_nodes_pods") {
        return;
    }
    let cluster = Cluster::new(Pods::Both, 3).unwrap();
    let _servers = servers(&cluster);
    let work = tempfile::tempdir().unwrap();
    let daemon = start(&cluster, &work);
    let (seen, failed) = ask(&cluster.client, VIP_LOCAL, 30);
    assert!(failed.is_empty(), "{} of 60 failed: {failed:#?}\n{}", failed.len(), daemon.log_text());
    let local: Vec<String> = cluster.pods.iter().filter(|p| p.node == NODE_A).map(|p| p.name.clone()).collect();
    assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), local, "only node-a's pods: {seen:?}");
}

#[test]
fn per_pod_veths_with_host_routes() {
    if !privileged("per_pod_veths_with_host_routes") {
        return;
    }
    // Calico-style pods on node-a (no bridge: a veth and a /32 route each), beside the
    // overlay's pods on node-b.
    let mut cluster = Cluster::new(Pods::Vxlan, 1).unwrap();
    cluster.add_veth_pod(2).unwrap();
    cluster.add_veth_pod(3).unwrap();
    let _servers = servers(&cluster);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    let eps: Vec<(String, &str)> = cluster.endpoints(false).into_iter().map(|(a, n)| (a.to_string(), n)).collect();
    fs::write(dir.join("svc.yaml"), service_yaml_on_nodes("veths", VIP, &[], false, &eps)).unwrap();
    let mut daemon =
        Daemon::start_with(&cluster.lb, &dir, &cluster.nic, 2, work.path(), &["--node-name", NODE_A]).unwrap();
    for (who, ns) in [
        ("client across the wire", &cluster.client),
        ("client pod", &cluster.client_pod),
        ("node-a itself", &cluster.lb),
    ] {
        let (seen, failed) = ask(ns, VIP, 15);
        assert!(failed.is_empty(), "{who}: {} of 30 failed: {failed:#?}\n{}", failed.len(), daemon.log_text());
        assert_eq!(seen.keys().cloned().collect::<Vec<_>>(), all_pods(&cluster), "{who}: {seen:?}");
    }
    let cali: Vec<String> = (2..=3).map(|i| format!("{}cali{i}", cluster.prefix)).collect();
    for dev in &cali {
        assert_eq!(cluster.lb.bpf_programs(dev), vec!["lb_tc"], "the tc datapath on {dev}");
    }
    // A pod goes (its veth with it): the agent lets go of the attachment at its next look.
    cluster.lb.ip(&["link", "del", &cali[1]]).unwrap();
    daemon.wait_for_log("tc attachment forgotten", 1, std::time::Duration::from_secs(12)).unwrap();
}

#[test]
fn local_clients_upload_megabytes_through_the_vip() {
    if !privileged("local_clients_upload_megabytes_through_the_vip") {
        return;
    }
    // A client pod and the node keep TSO on: their bulk data reaches tc as GSO skbs, each far
    // longer than the route's MTU (the kernel segments it after the redirect).
    let cluster = Cluster::new(Pods::Both, 1).unwrap();
    let _servers = servers(&cluster);
    let work = tempfile::tempdir().unwrap();
    let daemon = start(&cluster, &work);
    for (who, ns) in [("client pod", &cluster.client_pod), ("node-a itself", &cluster.lb)] {
        for _ in 0..4 {
            let to = SocketAddr::new(VIP.parse().unwrap(), 80);
            let got = ns.run(move || -> anyhow::Result<String> {
                use std::io::{BufRead, Write};
                let mut s = std::net::TcpStream::connect_timeout(&to, TIMEOUT)?;
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                s.set_write_timeout(Some(Duration::from_secs(20)))?;
                s.write_all(&vec![b'x'; 4 << 20])?;
                s.write_all(b"\n")?;
                let mut line = String::new();
                std::io::BufReader::new(&s).read_line(&mut line)?;
                Ok(line.trim().to_string())
            });
            let name =
                got.unwrap_or_else(|e| panic!("{who}: 4 MiB upload through the VIP: {e:#}\n{}", daemon.log_text()));
            assert!(name.starts_with("pod-"), "{who}: {name:?}");
        }
    }
}
