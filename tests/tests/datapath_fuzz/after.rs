//! After the fuzz: the counters add up (every run counted once, its bytes too, no counter
//! above the runs — a counter that went below zero would wrap far above), and the datapath
//! is not wedged: a new flow still goes to a backend and its reply back, both families.
use std::net::IpAddr;

use lb_tests::{
    packet::{ACK, Flow, Frame, SYN, parse},
    testbed::mac_of,
};

use crate::{B1, B2, B61, B62, CLIENT, CLIENT6, SNAT, SNAT6, VIP, VIP6, runner::Runner};

/// Check the counters; returns the datapath counters that moved, for the run's summary.
pub fn counters(r: &Runner) -> String {
    let stats = r.dp.stats().expect("read the counters");
    let c = &r.counts;
    let rx = stats.datapath["rx"];
    assert_eq!(rx.packets, c.handled, "rx counts every run of the packet walk once: {stats:?}");
    assert_eq!(rx.bytes, c.handled_bytes, "rx bytes are the frames' lengths");
    assert_eq!(stats.packets("tc_rx"), c.tc_ingress, "tc_rx: every lb_tc run");
    assert_eq!(stats.packets("tc_egress_rx"), c.egress_local, "tc_egress_rx: every local lb_tc_egress run");
    for (name, count) in &stats.datapath {
        assert!(count.packets <= rx.packets, "counter {name} = {} above the {} runs", count.packets, rx.packets);
    }
    for (name, l) in &stats.listeners {
        for (what, n) in [
            ("packets", l.packets),
            ("reply_packets", l.reply_packets),
            ("new_flows", l.new_flows),
            ("acl_drops", l.acl_drops),
            ("no_backend_drops", l.no_backend_drops),
        ] {
            assert!(n <= rx.packets, "listener {name}: {what} = {n} above the {} runs", rx.packets);
        }
    }
    for (name, b) in &stats.backends {
        assert!(b.packets <= rx.packets && b.new_flows <= rx.packets, "backend {name}: {b:?}");
    }
    let moved: Vec<String> =
        stats.datapath.iter().filter(|(_, c)| c.packets > 0).map(|(n, c)| format!("{n} {}", c.packets)).collect();
    moved.join(", ")
}

/// A new flow (a client port no case used) to the VIP, and the backend's answer, for both
/// families: NATed both ways with valid checksums.
pub fn still_serves(r: &mut Runner) {
    let v4 = (IpAddr::V4(CLIENT), IpAddr::V4(VIP), 80, [IpAddr::V4(B1), IpAddr::V4(B2)], 8080, IpAddr::V4(SNAT));
    let v6 = (IpAddr::V6(CLIENT6), IpAddr::V6(VIP6), 443, [IpAddr::V6(B61), IpAddr::V6(B62)], 8443, IpAddr::V6(SNAT6));
    for (client, vip, port, backends, bport, snat) in [v4, v6] {
        let syn = Frame::tcp(Flow::new(client, 33333, vip, port), SYN);
        let sent = r.client(&syn.bytes());
        assert!(sent.forwarded(), "after the fuzz, a SYN to {vip}:{port} got verdict {}", sent.verdict);
        let p = parse(&sent.out);
        assert!(p.ip_csum_ok && p.l4_csum_ok, "after the fuzz: {p:?}");
        let (src, sport, dst, dport) = p.flow;
        assert!(src == snat && backends.contains(&dst) && dport == bport, "after the fuzz, the SYN went to {p:?}");
        let answer = Frame::tcp(Flow::new(dst, bport, snat, sport), SYN | ACK).seq_ack(5000, 1001);
        let answer = Frame { dst_mac: r.b_mac, src_mac: mac_of(dst), ..answer };
        let back = r.backend(&answer.bytes());
        assert!(back.forwarded(), "after the fuzz, the backend's SYN-ACK got verdict {}", back.verdict);
        let p = parse(&back.out);
        assert!(p.ip_csum_ok && p.l4_csum_ok, "after the fuzz: {p:?}");
        assert_eq!(p.flow, (vip, port, client, 33333), "after the fuzz, the reply's addresses");
        assert_eq!(p.tcp_flags, SYN | ACK);
    }
}
