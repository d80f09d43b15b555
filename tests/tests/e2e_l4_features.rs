//! Each CLB L4 annotation family end to end: real TCP/UDP sockets in the netns topology,
//! the `lb` daemon reading annotated Services, packets through XDP and tc; every test runs
//! with routed backends, pods behind a bridge, and pods behind a VXLAN overlay.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_tests::{
    in_every_shape,
    scenario::{Scenario, service_yaml},
    servers::{Session, tcp_request, tcp_request_from, udp_request},
    topology::{CLIENT, CLIENT2, Shape, VIP, VIP6},
};

const P: &str = "service.beta.kubernetes.io/alibaba-cloud-loadbalancer-";
const TIMEOUT: Duration = Duration::from_secs(5);

fn ann(suffix: &str, value: &str) -> (String, String) {
    (format!("{P}{suffix}"), value.to_string())
}

fn yaml(vip: &str, annotations: &[(String, String)], endpoints: &[(String, Option<u32>)]) -> String {
    let a: Vec<(&str, &str)> = annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    service_yaml("svc", vip, &a, endpoints)
}

fn v4_backends(shape: Shape, n: usize) -> Vec<(String, Option<u32>)> {
    (1..=n).map(|i| (shape.backend_addr(i).to_string(), None)).collect()
}

fn vip80() -> SocketAddr {
    SocketAddr::new(VIP.into(), 80)
}

fn tally(replies: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in replies {
        *m.entry(r).or_default() += 1;
    }
    m
}

fn wrr_follows_endpoint_weights(shape: Shape) {
    let eps: Vec<_> =
        [(1, 60), (2, 30), (3, 10)].iter().map(|(i, w)| (shape.backend_addr(*i).to_string(), Some(*w))).collect();
    let s = Scenario::start_in(
        shape,
        3,
        &[("svc.yaml", &yaml(&VIP.to_string(), &[ann("scheduler", "wrr")], &eps))],
        2,
        &[],
    )
    .unwrap();
    let counts = s.topo.client.run(|| tally((0..100).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    // Stated tolerance: each CPU walks the 10-slot ring on its own, so a backend is off by
    // at most one ring turn per CPU (6 connections on 2 CPUs for the heaviest).
    for (name, want) in [("backend-1", 60i64), ("backend-2", 30), ("backend-3", 10)] {
        let got = *counts.get(name).unwrap_or(&0) as i64;
        assert!((got - want).abs() <= 12, "{name}: {got} of 100, want {want}±12: {counts:?}");
    }
}

fn weight_zero_takes_no_new_connections(shape: Shape) {
    let eps = vec![(shape.backend_addr(1).to_string(), Some(0)), (shape.backend_addr(2).to_string(), Some(50))];
    let s = Scenario::start_in(
        shape,
        2,
        &[("svc.yaml", &yaml(&VIP.to_string(), &[ann("scheduler", "wrr")], &eps))],
        2,
        &[],
    )
    .unwrap();
    let counts = s.topo.client.run(|| tally((0..20).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(counts, BTreeMap::from([("backend-2".to_string(), 20)]));
}

fn sch_keeps_a_client_tch_spreads_its_ports(shape: Shape) {
    let sch = yaml(&VIP.to_string(), &[ann("scheduler", "sch")], &v4_backends(shape, 3));
    let tch = service_yaml("tch", "198.18.100.11", &[(&format!("{P}scheduler"), "tch")], &v4_backends(shape, 3));
    let s = Scenario::start_in(shape, 3, &[("sch.yaml", &sch), ("tch.yaml", &tch)], 4, &[]).unwrap();
    let (one, two, spread) = s.topo.client.run(|| {
        let one = tally((0..15).map(|_| tcp_request_from(Some(CLIENT.into()), vip80(), TIMEOUT).unwrap()));
        let two = tally((0..15).map(|_| tcp_request_from(Some(CLIENT2.into()), vip80(), TIMEOUT).unwrap()));
        let tch_vip = SocketAddr::new("198.18.100.11".parse().unwrap(), 80);
        let spread = tally((0..30).map(|_| tcp_request(tch_vip, TIMEOUT).unwrap()));
        (one, two, spread)
    });
    assert_eq!(one.len(), 1, "sch: one client, one backend: {one:?}");
    assert_eq!(two.len(), 1, "sch: one client, one backend: {two:?}");
    assert!(spread.len() >= 2, "tch spreads one client's ports: {spread:?}");
}

fn persistence_holds_then_expires(shape: Shape) {
    let y = yaml(&VIP.to_string(), &[ann("persistence-timeout", "2")], &v4_backends(shape, 3));
    let mut s = Scenario::start_in(shape, 3, &[("svc.yaml", &y)], 2, &[]).unwrap();
    let first = s.topo.client.run(|| tally((0..10).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(first.len(), 1, "rr would spread these; persistence keeps them on one backend: {first:?}");
    std::thread::sleep(Duration::from_millis(3500));
    let second = s.topo.client.run(|| tally((0..5).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(second.len(), 1, "{second:?}");
    let out = s.daemon.stop().unwrap();
    let stats: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    // 9 + 4 hits: the first connection after the 2 s timeout was scheduled afresh.
    assert_eq!(stats["stats"]["datapath"]["persist_hits"]["packets"], 13, "{stats}");
}

fn blacklisted_source_gets_nothing_through(shape: Shape) {
    let acl = "apiVersion: lb.dev/v1alpha1\nkind: AccessControlList\nmetadata: {name: acl-bad}\nspec:\n  entries:\n  - {cidr: 198.18.0.3/32}\n";
    let y = yaml(
        &VIP.to_string(),
        &[ann("acl-status", "on"), ann("acl-id", "acl-bad"), ann("acl-type", "black")],
        &v4_backends(shape, 2),
    );
    let s = Scenario::start_in(shape, 2, &[("acl.yaml", acl), ("svc.yaml", &y)], 2, &[]).unwrap();
    let (good, bad) = s.topo.client.run(|| {
        let good = (0..5).filter(|_| tcp_request_from(Some(CLIENT.into()), vip80(), TIMEOUT).is_ok()).count();
        let bad = (0..5)
            .filter(|_| tcp_request_from(Some(CLIENT2.into()), vip80(), Duration::from_millis(700)).is_ok())
            .count();
        (good, bad)
    });
    assert_eq!((good, bad), (5, 0), "allowed source 5 of 5, blacklisted source 0 of 5");
    // The ACL is edited live: now the first client is listed instead.
    s.write("acl.yaml", &acl.replace("198.18.0.3/32", "198.18.0.2/32")).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let (good, bad) = s.topo.client.run(|| {
        let good = (0..5).filter(|_| tcp_request_from(Some(CLIENT2.into()), vip80(), TIMEOUT).is_ok()).count();
        let bad = (0..5)
            .filter(|_| tcp_request_from(Some(CLIENT.into()), vip80(), Duration::from_millis(700)).is_ok())
            .count();
        (good, bad)
    });
    assert_eq!((good, bad), (5, 0), "after the edit");
}

fn drain_keeps_established_flows_until_the_timeout(shape: Shape) {
    let on = [ann("connection-drain", "on"), ann("connection-drain-timeout", "10")];
    let y = yaml(&VIP.to_string(), &on, &v4_backends(shape, 2));
    let s = Scenario::start_in(shape, 2, &[("svc.yaml", &y)], 2, &["--sweep-ms", "500"]).unwrap();
    // Open one long-lived connection per backend.
    let mut sessions: Vec<(String, Session)> = s.topo.client.run(|| {
        let mut out: Vec<(String, Session)> = Vec::new();
        for _ in 0..6 {
            let mut sess = Session::open(None, vip80(), TIMEOUT).unwrap();
            let name = sess.ask().unwrap();
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((name, sess));
            }
        }
        out
    });
    assert_eq!(sessions.len(), 2, "one session on each backend");
    let i = sessions.iter().position(|(n, _)| n == "backend-1").unwrap();
    let (_, mut drained) = sessions.remove(i);
    // Remove backend-1.
    s.write("svc.yaml", &yaml(&VIP.to_string(), &on, &[(shape.backend_addr(2).to_string(), None)])).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (drained, new) = s.topo.client.run(move || {
        let answers: Vec<String> = (0..5).map(|_| drained.ask().unwrap()).collect();
        let new = tally((0..10).map(|_| tcp_request(vip80(), TIMEOUT).unwrap()));
        (answers, new)
    });
    assert!(drained.iter().all(|a| a == "backend-1"), "the established flow keeps its backend: {drained:?}");
    assert_eq!(new, BTreeMap::from([("backend-2".to_string(), 10)]), "new connections avoid it");
    let _ = sessions;
}

/// Connection drain off (the default): a pod being deleted (its endpoint `terminating`, no
/// longer ready) keeps its established flows and takes no new ones, as kube-proxy's conntrack
/// keeps them; they are cut only once the endpoint leaves the slice.
fn terminating_endpoint_keeps_its_established_flows(shape: Shape) {
    let y = yaml(&VIP.to_string(), &[], &v4_backends(shape, 2));
    let s = Scenario::start_in(shape, 2, &[("svc.yaml", &y)], 2, &[]).unwrap();
    let mut sess = s.topo.client.run(|| {
        (0..8)
            .map(|_| {
                let mut sess = Session::open(None, vip80(), TIMEOUT).unwrap();
                (sess.ask().unwrap(), sess)
            })
            .find(|(name, _)| name == "backend-1")
            .map(|(_, sess)| sess)
            .expect("a session on backend-1")
    });
    let ready = format!("- addresses: [\"{}\"]\n  conditions: {{ready: true}}\n", shape.backend_addr(1));
    let leaving = ready.replace("{ready: true}", "{ready: false, serving: true, terminating: true}");
    assert!(y.contains(&ready), "{y}");
    s.write("svc.yaml", &y.replace(&ready, &leaving)).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let (answers, new, sess) = s.topo.client.run(move || {
        let answers: Vec<String> = (0..5).map(|_| sess.ask().unwrap()).collect();
        let new = tally((0..10).map(|_| tcp_request(vip80(), TIMEOUT).unwrap()));
        (answers, new, sess)
    });
    assert!(answers.iter().all(|a| a == "backend-1"), "the established flow keeps its backend: {answers:?}");
    assert_eq!(new, BTreeMap::from([("backend-2".to_string(), 10)]), "new connections avoid it");
    // The pod is gone from the slice: its flows are cut (the next segment meets backend-2,
    // which knows no such connection).
    s.write("svc.yaml", &y.replace(&ready, "")).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let mut sess = sess;
    let after = s.topo.client.run(move || sess.ask());
    assert!(after.is_err(), "the flow of a removed endpoint is cut: {after:?}");
}

fn drain_timeout_cuts_the_flow(shape: Shape) {
    let on = [ann("connection-drain", "on"), ann("connection-drain-timeout", "10")];
    let y = yaml(&VIP.to_string(), &on, &[(shape.backend_addr(1).to_string(), None)]);
    let s = Scenario::start_in(shape, 2, &[("svc.yaml", &y)], 2, &["--sweep-ms", "500"]).unwrap();
    let mut sess = s.topo.client.run(|| {
        let mut sess = Session::open(None, vip80(), TIMEOUT).unwrap();
        assert_eq!(sess.ask().unwrap(), "backend-1");
        sess
    });
    s.write("svc.yaml", &yaml(&VIP.to_string(), &on, &[(shape.backend_addr(2).to_string(), None)])).unwrap();
    std::thread::sleep(Duration::from_millis(11500));
    // The flow was removed at the deadline: its next segment is scheduled to backend-2,
    // whose kernel knows no such connection and resets it.
    let after = s.topo.client.run(move || sess.ask());
    assert!(after.is_err(), "the drained flow is cut after the timeout: {after:?}");
}

fn ipv6_end_to_end(shape: Shape) {
    let eps: Vec<_> = (1..=2).map(|i| (shape.backend_addr6(i).to_string(), None)).collect();
    let y = yaml(&VIP6.to_string(), &[ann("ip-version", "ipv6")], &eps);
    let s = Scenario::start_in(shape, 2, &[("svc.yaml", &y)], 2, &[]).unwrap();
    let vip = SocketAddr::new(IpAddr::V6(VIP6), 80);
    let (tcp, udp) = s.topo.client.run(move || {
        let tcp = tally((0..10).map(|_| tcp_request(vip, TIMEOUT).unwrap()));
        let udp = tally((0..6).map(|_| udp_request(vip, TIMEOUT).unwrap()));
        (tcp, udp)
    });
    assert_eq!(tcp.len(), 2, "both backends over IPv6: {tcp:?}");
    assert_eq!(udp.values().sum::<usize>(), 6, "{udp:?}");
}

fn health_checks_take_a_dead_backend_out_and_back(shape: Shape) {
    let checks = [
        ann("health-check-interval", "1"),
        ann("health-check-connect-timeout", "1"),
        ann("unhealthy-threshold", "2"),
        ann("healthy-threshold", "2"),
    ];
    let mut s =
        Scenario::start_in(shape, 2, &[("svc.yaml", &yaml(&VIP.to_string(), &checks, &v4_backends(shape, 2)))], 2, &[])
            .unwrap();
    let both = s.topo.client.run(|| tally((0..10).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(both.len(), 2, "{both:?}");
    s.stop_backend(2);
    // Two failed probes a second apart, and the change applied.
    std::thread::sleep(Duration::from_millis(4000));
    let one = s.topo.client.run(|| tally((0..10).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(one, BTreeMap::from([("backend-1".to_string(), 10)]), "no new flows to the dead backend");
    s.start_backend(2).unwrap();
    std::thread::sleep(Duration::from_millis(4000));
    let again = s.topo.client.run(|| tally((0..10).map(|_| tcp_request(vip80(), TIMEOUT).unwrap())));
    assert_eq!(again.len(), 2, "back in after two good probes: {again:?}");
    assert!(s.daemon.log_text().contains("backend health changed"));
}

/// A backend's ICMP error about a flow (port unreachable: nothing listens on the target port)
/// comes back to the client through the VIP, translated like the flow: the client's
/// connected UDP socket sees "connection refused", IPv4 and IPv6.
fn icmp_errors_come_back_through_the_vip(shape: Shape) {
    let closed = |vip: &str, eps: &[(String, Option<u32>)], anns: &[(String, String)]| {
        yaml(vip, anns, eps).replace("port: 8080}", "port: 9999}").replace("name: svc", "name: closed")
    };
    let v4 = closed(&VIP.to_string(), &v4_backends(shape, 1), &[]);
    let v6 = closed(&VIP6.to_string(), &[(shape.backend_addr6(1).to_string(), None)], &[ann("ip-version", "ipv6")])
        .replace("name: closed", "name: closed6");
    let s = Scenario::start_in(shape, 1, &[("v4.yaml", &v4), ("v6.yaml", &v6)], 4, &[]).unwrap();
    for vip in [IpAddr::V4(VIP), IpAddr::V6(VIP6)] {
        let to = SocketAddr::new(vip, 80);
        let got = s.topo.client.run(move || {
            let sock = std::net::UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
            sock.connect(to).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            // The first datagram may wait for neighbour discovery: a few tries.
            (0..3).find_map(|_| {
                sock.send(b"anyone?\n").unwrap();
                match sock.recv(&mut [0u8; 64]) {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(Ok(())),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        None
                    }
                    other => Some(Err(format!("{other:?}"))),
                }
            })
        });
        assert_eq!(
            got,
            Some(Ok(())),
            "{vip}: the port-unreachable error reached the client as ECONNREFUSED\n{}",
            s.daemon.log_text()
        );
    }
}

/// A listener the datapath cannot take (its backend table is full) is rejected on its own and
/// loaded, without any change to its Service, once room is made: the agent tries rejected
/// objects again at every sweep.
fn a_listener_rejected_for_room_loads_once_room_is_made(shape: Shape) {
    let sch = [ann("scheduler", "sch")];
    let b1 = [(shape.backend_addr(1).to_string(), None)];
    // Each Service: a TCP and a UDP listener, each a Maglev table of 16381 entries; the
    // table holds 40000: the first Service fits, the second does not.
    let first = yaml(&VIP.to_string(), &sch, &b1);
    let second = service_yaml("second", "198.18.100.11", &[(sch[0].0.as_str(), sch[0].1.as_str())], &b1);
    let extra = ["--backend-table-entries", "40000", "--sweep-ms", "500"];
    let mut s = Scenario::start_in(shape, 1, &[("a.yaml", &first), ("b.yaml", &second)], 2, &extra).unwrap();
    s.daemon.wait_for_log("not loaded into the datapath", 1, Duration::from_secs(10)).unwrap();
    let to_second = SocketAddr::new("198.18.100.11".parse().unwrap(), 80);
    assert!(s.topo.client.run(move || tcp_request(to_second, Duration::from_secs(1))).is_err(), "not served yet");
    // Room: the first Service goes. Its table regions are free again after their 2 s grace;
    // a sweep after that loads the second Service, whose manifest did not change.
    std::fs::remove_file(s.manifests_dir().join("a.yaml")).unwrap();
    s.daemon.wait_for_log("every object the datapath had rejected is loaded now", 1, Duration::from_secs(15)).unwrap();
    let got = s.topo.client.run(move || tcp_request(to_second, TIMEOUT));
    assert_eq!(got.unwrap(), "backend-1", "the second Service is served");
}

in_every_shape!(
    a_listener_rejected_for_room_loads_once_room_is_made,
    icmp_errors_come_back_through_the_vip,
    wrr_follows_endpoint_weights,
    weight_zero_takes_no_new_connections,
    sch_keeps_a_client_tch_spreads_its_ports,
    persistence_holds_then_expires,
    blacklisted_source_gets_nothing_through,
    drain_keeps_established_flows_until_the_timeout,
    drain_timeout_cuts_the_flow,
    terminating_endpoint_keeps_its_established_flows,
    ipv6_end_to_end,
    health_checks_take_a_dead_backend_out_and_back,
);
