//! `lb run` as the DaemonSet runs it (issue #17): after `lb node-prep` (the privileged init
//! container), with /proc/sys read-only and only CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON and
//! CAP_NET_BIND_SERVICE, it loads, attaches, pins and serves in every node shape; without
//! `lb node-prep` it refuses to start and says what to run.
use std::{fs, net::SocketAddr, time::Duration};

use lb_tests::{
    daemon::Daemon,
    in_every_shape,
    scenario::service_yaml,
    servers::{name_server, tcp_request},
    topology::{Shape, Topology, VIP},
};

/// CapEff of CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const RESTRICTED_CAPEFF: u64 = (1 << 10) | (1 << 12) | (1 << 38) | (1 << 39);

fn lb_serves_with_least_privilege_after_node_prep(shape: Shape) {
    let topo = Topology::shaped(shape, 2).unwrap();
    let _servers: Vec<_> = topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, ns)| name_server(ns, "[::]:8080".parse().unwrap(), &format!("backend-{}", i + 1)).unwrap())
        .collect();
    let eps: Vec<(String, Option<u32>)> = (1..=2).map(|i| (shape.backend_addr(i).to_string(), None)).collect();
    let work = tempfile::tempdir().unwrap();
    let manifests = work.path().join("manifests");
    fs::create_dir(&manifests).unwrap();
    fs::write(manifests.join("svc.yaml"), service_yaml("svc", &VIP.to_string(), &[], &eps)).unwrap();

    // Without node-prep: lb run stops at the first setting it cannot write, and says why.
    let refused = Daemon::start_restricted(&topo.lb, &manifests, &topo.iface_list(), 2, work.path(), false);
    let log = fs::read_to_string(work.path().join("lb.log")).unwrap_or_default();
    assert!(refused.is_err(), "lb run started with a read-only /proc/sys before node-prep");
    assert!(log.contains("run `lb node-prep`"), "{log}");
    drop(refused);

    let mut lb = Daemon::start_restricted(&topo.lb, &manifests, &topo.iface_list(), 2, work.path(), true).unwrap();
    let status = fs::read_to_string(format!("/proc/{}/status", lb.pid().unwrap())).unwrap();
    let field = |name: &str| {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    assert_eq!(fs::read_to_string(format!("/proc/{}/comm", lb.pid().unwrap())).unwrap().trim(), "lb");
    assert_eq!((field("CapEff:"), field("CapBnd:")), (RESTRICTED_CAPEFF, RESTRICTED_CAPEFF), "{status}");
    let to = SocketAddr::new(VIP.into(), 80);
    let names: Vec<String> = topo.client.run(move || {
        (0..10).map(|_| tcp_request(to, Duration::from_secs(5)).unwrap_or_else(|e| format!("{e:#}"))).collect()
    });
    assert!(names.iter().all(|n| n.starts_with("backend-")), "{names:?}\n{}", lb.run_log_text());
    assert!(names.iter().all(|n| n.starts_with("backend-")), "{names:?}");
    let log = lb.run_log_text();
    assert!(!log.contains(" ERROR "), "{log}");
    lb.stop().unwrap();
}

in_every_shape!(lb_serves_with_least_privilege_after_node_prep);
