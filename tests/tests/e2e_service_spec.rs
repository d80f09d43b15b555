//! Service spec fields end to end (issue #18, item 5): `sessionAffinity: ClientIP` as L4
//! persistence, and dual-stack Services with a VIP per family, through the netns topology,
//! the `lb` daemon and XDP, in every topology shape.
use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use lb_tests::{
    in_every_shape,
    scenario::{Scenario, service_yaml},
    servers::{tcp_request, tcp_request_from},
    topology::{CLIENT, CLIENT6, Shape, VIP, VIP6},
};

const TIMEOUT: Duration = Duration::from_secs(5);

fn tally(replies: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in replies {
        *m.entry(r).or_default() += 1;
    }
    m
}

/// `yaml` with `lines` added to the Service's spec.
fn with_spec(yaml: &str, lines: &str) -> String {
    yaml.replacen("  type: LoadBalancer\n", &format!("  type: LoadBalancer\n{lines}"), 1)
}

/// Many connections of one client land on one backend (rr alone would spread them over
/// three); after `timeoutSeconds` (2 s here) without traffic the client is scheduled afresh.
fn client_ip_affinity_holds_then_expires(shape: Shape) {
    let eps: Vec<_> = (1..=3).map(|i| (shape.backend_addr(i).to_string(), None)).collect();
    let y = with_spec(
        &service_yaml("svc", &VIP.to_string(), &[], &eps),
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}\n",
    );
    let mut s = Scenario::start_in(shape, 3, &[("svc.yaml", &y)], 2, &[]).unwrap();
    let vip = SocketAddr::new(VIP.into(), 80);
    let first = s.topo.client.run(move || tally((0..10).map(|_| tcp_request(vip, TIMEOUT).unwrap())));
    assert_eq!(first.len(), 1, "rr would spread these; ClientIP affinity keeps them on one backend: {first:?}");
    std::thread::sleep(Duration::from_millis(3500));
    let second = s.topo.client.run(move || tally((0..5).map(|_| tcp_request(vip, TIMEOUT).unwrap())));
    assert_eq!(second.len(), 1, "{second:?}");
    let out = s.daemon.stop().unwrap();
    let stats: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    // 9 + 4 hits: the first connection after the 2 s timeout was scheduled afresh.
    assert_eq!(stats["stats"]["datapath"]["persist_hits"]["packets"], 13, "{stats}");
}

/// A dual-stack Service: its IPv4 VIP (`spec.loadBalancerIP`) balances over the IPv4
/// endpoints (backends 1 and 2), its IPv6 VIP (`status.loadBalancer.ingress`) over the IPv6
/// one (backend 3); an IPv4 and an IPv6 client each reach it through their own VIP.
fn dual_stack_service_serves_each_family_on_its_vip(shape: Shape) {
    let v4: Vec<_> = (1..=2).map(|i| (shape.backend_addr(i).to_string(), None)).collect();
    let v6 = [(shape.backend_addr6(3).to_string(), None)];
    let service = with_spec(
        &service_yaml("svc", &VIP.to_string(), &[], &v4),
        "  ipFamilies: [IPv4, IPv6]\n  ipFamilyPolicy: RequireDualStack\n",
    );
    let v6_slice = service_yaml("svc", &VIP6.to_string(), &[], &v6);
    let v6_slice = v6_slice[v6_slice.find("---\n").unwrap()..].replace("name: svc-1", "name: svc-6");
    let status = format!("status: {{loadBalancer: {{ingress: [{{ip: \"{VIP6}\"}}]}}}}\n");
    let y = service.replacen("---\n", &format!("{status}---\n"), 1) + "\n" + &v6_slice;
    let s = Scenario::start_in(shape, 3, &[("svc.yaml", &y)], 4, &[]).unwrap();
    let (four, six) = s.topo.client.run(|| {
        let vip4 = SocketAddr::new(VIP.into(), 80);
        let vip6 = SocketAddr::new(IpAddr::V6(VIP6), 80);
        let four = tally((0..8).map(|_| tcp_request_from(Some(CLIENT.into()), vip4, TIMEOUT).unwrap()));
        let six = tally((0..4).map(|_| tcp_request_from(Some(CLIENT6.into()), vip6, TIMEOUT).unwrap()));
        (four, six)
    });
    let names = |m: &BTreeMap<String, usize>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&four), ["backend-1", "backend-2"], "the IPv4 VIP: the IPv4 endpoints: {four:?}");
    assert_eq!(names(&six), ["backend-3"], "the IPv6 VIP: the IPv6 endpoint: {six:?}");
}

in_every_shape!(client_ip_affinity_holds_then_expires, dual_stack_service_serves_each_family_on_its_vip);
