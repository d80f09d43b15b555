//! The tc programs through BPF_PROG_TEST_RUN: crafted frames in, verdict and exact bytes out.
//!
//! The namespace is the XDP tests' ([`Bed`]): interface `a` (198.18.0.1/24) and `b`
//! (198.18.1.1/24, static neighbours for the backends). Here neither is an XDP port: they
//! stand for a bridge with client pods behind it (`a`) and a bridge or overlay device the
//! backends are reached through (`b`), so the whole datapath runs in `lb_tc`. One test keeps
//! `a` an XDP NIC to check the hand-over from XDP to tc.
//!
//! BPF_PROG_TEST_RUN builds skbs without a partial checksum: these tests check the complete
//! checksum arithmetic through the kernel's helpers; the e2e tests (pods with default
//! offloads) check partial checksums.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_tests::{
    packet::{ACK, Flow, Frame, PSH, SYN, parse, reassemble_udp_fragments},
    privileged,
    proxy_frames::{mss_of, syn_options, v1_header, v2_header},
    testbed::{Bed, listener, mac_of, model, pin_to_cpu0, run_frame, run_skb},
};
use lb_userspace::{
    dataplane::{Dataplane, Options},
    model::{Model, Protocol, ProxyProtocol, Scheduler},
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

struct Tc {
    dp: Dataplane,
    a: u32,
    b: u32,
    b_mac: [u8; 6],
}

impl Tc {
    /// `lb_tc` on a frame arriving on `ifindex`.
    fn ingress(&mut self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let (v, out, _) = run_skb(self.dp.tc_program(lb_common::TC_PROGRAM).unwrap(), frame, ifindex, false, 1);
        (v, out)
    }

    /// `lb_tc_egress` on a frame this node's stack sends out of `ifindex`.
    fn egress(&mut self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let (v, out, _) = run_skb(self.dp.tc_program(lb_common::TC_EGRESS_PROGRAM).unwrap(), frame, ifindex, true, 1);
        (v, out)
    }

    fn counter(&self, name: &str) -> u64 {
        self.dp.stats().unwrap().datapath[name].packets
    }
}

/// The datapath loaded in its namespace with `a` and `b` as tc devices (or `a` an XDP NIC
/// when `xdp_a`), `m` applied, `f` run inside it on CPU 0.
fn with_tc(test: &str, xdp_a: bool, m: Model, f: impl FnOnce(&mut Tc) + Send + 'static) {
    if !privileged(test) {
        return;
    }
    let bed = Bed::new().unwrap();
    let (ai, bi, b_mac) = (bed.a, bed.b, bed.b_mac);
    bed.ns.run(move || {
        pin_to_cpu0();
        let mut dp = Dataplane::load(&Options::default()).expect("load datapath");
        if xdp_a {
            dp.add_port(ai, Some(Ipv4Addr::new(198, 18, 0, 1)), Some(v6("2001:db8::1"))).unwrap();
        } else {
            dp.set_snat(ai, Some(Ipv4Addr::new(198, 18, 0, 1)), Some(v6("2001:db8::1"))).unwrap();
        }
        dp.set_snat(bi, Some(SNAT), Some(v6("2001:db8:1::1"))).unwrap();
        dp.apply(&m).unwrap();
        f(&mut Tc { dp, a: ai, b: bi, b_mac });
    });
}

#[test]
fn tc_full_nat_both_ways_tcp_udp_ipv6() {
    let vip = IpAddr::V4(VIP);
    let vip6 = IpAddr::V6(v6("2001:db8:100::10"));
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[(B1.into(), 5353, 1)]),
        listener(vip6, 80, Protocol::Tcp, Scheduler::Rr, &[(v6("2001:db8:1::2").into(), 8080, 1)]),
    ]);
    with_tc("tc_full_nat_both_ways_tcp_udp_ipv6", false, m, move |t| {
        for (client, vip, backend, snat) in [
            (IpAddr::V4(CLIENT), vip, IpAddr::V4(B1), IpAddr::V4(SNAT)),
            (v6("2001:db8::2").into(), vip6, v6("2001:db8:1::2").into(), v6("2001:db8:1::1").into()),
        ] {
            // A client pod's SYN on the bridge: NAT towards the backend behind `b`.
            let syn = Frame::tcp(Flow::new(client, 40000, vip, 80), SYN).payload(b"");
            let (v, out) = t.ingress(&syn.bytes(), t.a);
            assert_eq!(v, TC_ACT_REDIRECT, "{client} SYN to the VIP");
            let p = parse(&out);
            assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after NAT: {p:?}");
            let (src, sport, dst, dport) = p.flow;
            assert_eq!((src, dst, dport), (snat, backend, 8080), "SNAT to the egress device's address");
            assert!((61000..=65535).contains(&sport));
            assert_eq!((p.src_mac, p.dst_mac), (t.b_mac, mac_of(backend)));

            // The backend's reply on `b`: back to the client, from the VIP.
            let reply = Frame::tcp(Flow::new(backend, 8080, snat, sport), SYN | ACK).payload(b"");
            let (v, out) = t.ingress(&reply.bytes(), t.b);
            assert_eq!(v, TC_ACT_REDIRECT);
            let p = parse(&out);
            assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after reverse NAT: {p:?}");
            assert_eq!(p.flow, (vip, 80, client, 40000));
            assert_eq!((p.src_mac, p.dst_mac), (syn.dst_mac, syn.src_mac), "back to the client's MAC");

            // Data with a payload, both ways.
            let data = Frame::tcp(Flow::new(client, 40000, vip, 80), ACK | PSH).payload(&[7u8; 999]);
            let (_, out) = t.ingress(&data.bytes(), t.a);
            let p = parse(&out);
            assert!(p.l4_csum_ok && p.payload == [7u8; 999], "{p:?}");
        }

        // UDP, with a checksum and without one (IPv4): a missing checksum stays missing.
        for no_csum in [false, true] {
            let mut d = Frame::udp(Flow::new(CLIENT, 5000, VIP, 53)).payload(b"query");
            d.udp_no_csum = no_csum;
            let (v, out) = t.ingress(&d.bytes(), t.a);
            assert_eq!(v, TC_ACT_REDIRECT);
            let p = parse(&out);
            assert_eq!((p.flow.2, p.flow.3), (IpAddr::V4(B1), 5353));
            if no_csum {
                assert_eq!(p.l4_csum, 0, "no checksum before, none after");
            } else {
                assert!(p.l4_csum_ok, "{p:?}");
            }
        }

        // Not ours: a pod talking to another address goes on untouched.
        let other = Frame::tcp(Flow::new(CLIENT, 40000, Ipv4Addr::new(198, 18, 1, 9), 80), SYN).bytes();
        assert_eq!(t.ingress(&other, t.a), (TC_ACT_OK, other.clone()));
        assert!(t.counter("tc_rx") >= 8);
    });
}

#[test]
fn tc_fragments_follow_their_first_fragment() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[(B1.into(), 5353, 1)])]);
    with_tc("tc_fragments_follow_their_first_fragment", false, m, move |t| {
        // A client pod's UDP datagram of 8 + 32 bytes, cut after 24 bytes of L4 data.
        let mut whole = Frame::udp(Flow::new(CLIENT, 47000, VIP, 53)).payload(&[7u8; 32]);
        whole.ip_id = 0x4242;
        let l4 = whole.l4();
        let (head, tail) = l4.split_at(24);
        let mut first = whole.clone();
        first.frag_off = 0x2000; // MF
        let (v, out1) = t.ingress(&first.with_l3_payload(head), t.a);
        assert_eq!(v, TC_ACT_REDIRECT, "first fragment opens the flow");
        let mut later = whole.clone();
        later.frag_off = 3; // offset 24 bytes, last
        let (v, out2) = t.ingress(&later.with_l3_payload(tail), t.a);
        assert_eq!(v, TC_ACT_REDIRECT, "later fragment follows");
        // Same backend, IP checksums valid, the reassembled datagram's UDP checksum too.
        let p = reassemble_udp_fragments(&out1, &out2, 0x4242);
        assert_eq!((p.flow.0, p.flow.2), (IpAddr::V4(SNAT), IpAddr::V4(B1)));
        assert!(p.l4_csum_ok, "reassembled UDP checksum after NAT: {p:?}");
        assert_eq!(p.flow.3, 5353);
        assert_eq!(t.counter("fragments_fwd"), 1);
    });
}

#[test]
fn xdp_hands_frames_bound_for_tc_devices_to_tc() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)])]);
    with_tc("xdp_hands_frames_bound_for_tc_devices_to_tc", true, m, move |t| {
        // A wire client's SYN on the XDP NIC `a`, its backend behind the tc device `b`: XDP
        // rewrites it and passes it up for `lb_tc_nic` to redirect.
        let syn = Frame::tcp(Flow::new(CLIENT, 40000, vip, 80), SYN).bytes();
        let prog = t.dp.program().unwrap();
        let (v, out, _) = run_frame(prog, &syn, t.a, 1);
        assert_eq!(v, XDP_PASS);
        // The output starts at the metadata: the hand-over (magic, flags, egress ifindex).
        let meta = lb_common::Handoff {
            magic: u16::from_ne_bytes([out[0], out[1]]),
            flags: u16::from_ne_bytes([out[2], out[3]]),
            ifindex: u32::from_ne_bytes(out[4..8].try_into().unwrap()),
        };
        assert_eq!(meta, lb_common::Handoff { magic: lb_common::HANDOFF_MAGIC, flags: 0, ifindex: t.b });
        let p = parse(&out[8..]);
        assert!(p.ip_csum_ok && p.l4_csum_ok);
        assert_eq!((p.flow.0, p.flow.2, p.flow.3), (IpAddr::V4(SNAT), IpAddr::V4(B1), 8080));
        assert_eq!(t.counter("xdp_to_tc"), 1);
        // The backend's reply comes in on `b` (tc), goes out of the NIC `a` by tc.
        let reply = Frame::tcp(Flow::new(B1, 8080, SNAT, p.flow.1), SYN | ACK).bytes();
        let (v, out) = t.ingress(&reply, t.b);
        assert_eq!(v, TC_ACT_REDIRECT);
        assert_eq!(parse(&out).flow, (vip, 80, IpAddr::V4(CLIENT), 40000));
    });
}

#[test]
fn the_node_itself_as_a_client() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)])]);
    with_tc("the_node_itself_as_a_client", false, m, move |t| {
        let node = Ipv4Addr::new(198, 18, 0, 1);
        let syn = Frame::tcp(Flow::new(node, 33000, vip, 80), SYN).bytes();
        let (v, out) = t.egress(&syn, t.a);
        assert_eq!(v, TC_ACT_REDIRECT, "the node's own SYN to a VIP, seen leaving by the NIC");
        let p = parse(&out);
        assert_eq!((p.flow.2, p.flow.3), (IpAddr::V4(B1), 8080));
        let reply = Frame::tcp(Flow::new(B1, 8080, SNAT, p.flow.1), SYN | ACK).bytes();
        let (v, out) = t.ingress(&reply, t.b);
        assert_eq!(v, TC_ACT_REDIRECT, "the reply goes up the node's stack");
        let p = parse(&out);
        assert!(p.l4_csum_ok);
        assert_eq!(p.flow, (vip, 80, IpAddr::V4(node), 33000));
        assert_eq!(t.counter("to_local"), 1);
        // Forwarded packets (they have an input interface) are not the egress program's.
        let fwd = Frame::tcp(Flow::new(CLIENT, 33000, vip, 80), SYN).bytes();
        let (v, _, _) = run_skb(t.dp.tc_program(lb_common::TC_EGRESS_PROGRAM).unwrap(), &fwd, t.a, false, 1);
        assert_eq!(v, TC_ACT_OK);
    });
}

/// One TCP flow through a PROXY listener in tc: the client's frames on `a`, the backend's
/// on `b`.
fn pp_flow(t: &mut Tc, client: IpAddr, vip: IpAddr, isn: u32) -> (u16, IpAddr) {
    let syn = Frame::tcp(Flow::new(client, 40000, vip, 80), SYN).seq_ack(isn, 0).options(&syn_options(1460));
    let (v, out) = t.ingress(&syn.bytes(), t.a);
    assert_eq!(v, TC_ACT_REDIRECT);
    let p = parse(&out);
    assert_eq!(p.payload.len(), 0, "a SYN gets no header");
    (p.flow.1, p.flow.2)
}

#[test]
fn tc_inserts_the_proxy_header_by_moving_the_payload() {
    let vip = IpAddr::V4(VIP);
    let mut v2 = listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)]);
    v2.proxy_protocol = ProxyProtocol::V2;
    let mut v1 = listener(
        IpAddr::V4(Ipv4Addr::new(198, 18, 100, 11)),
        80,
        Protocol::Tcp,
        Scheduler::Rr,
        &[(B1.into(), 8080, 1)],
    );
    v1.proxy_protocol = ProxyProtocol::V1;
    let mut udp = listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[(B1.into(), 5353, 1)]);
    udp.proxy_protocol = ProxyProtocol::V2;
    with_tc("tc_inserts_the_proxy_header_by_moving_the_payload", false, model(vec![v2, v1, udp]), move |t| {
        let client = IpAddr::V4(CLIENT);
        // v2 (even length) and v1 (this one is odd: the payload changes byte lanes).
        for (vip, header) in [
            (vip, v2_header(client, 40000, vip, 80, false)),
            (
                IpAddr::V4(Ipv4Addr::new(198, 18, 100, 11)),
                v1_header(client, 40000, "198.18.100.11".parse().unwrap(), 80),
            ),
        ] {
            let len = header.len() as u32;
            let (sport, backend) = pp_flow(t, client, vip, 1000);
            // The backend's SYN-ACK: MSS clamped by the header's length.
            let synack = Frame::tcp(Flow::new(backend, 8080, SNAT, sport), SYN | ACK)
                .seq_ack(9000, 1001)
                .options(&syn_options(1460));
            let (v, out) = t.ingress(&synack.bytes(), t.b);
            assert_eq!(v, TC_ACT_REDIRECT);
            let p = parse(&out);
            assert!(p.l4_csum_ok, "{p:?}");
            assert_eq!(mss_of(&p.tcp_options), Some(1460 - len as u16));
            // The first data segment (1400 bytes: several chunks moved), before the backend
            // acknowledged anything: the header in front of the payload.
            let body: Vec<u8> = (0..1400u32).map(|i| (i * 7 + 3) as u8).collect();
            let data = Frame::tcp(Flow::new(client, 40000, vip, 80), ACK | PSH).seq_ack(1001, 9001).payload(&body);
            let (v, out) = t.ingress(&data.bytes(), t.a);
            assert_eq!(v, TC_ACT_REDIRECT, "{vip}");
            let p = parse(&out);
            assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after insertion ({vip}): {p:?}");
            assert_eq!(p.payload, [header.clone(), body.clone()].concat(), "header, then the payload intact");
            assert_eq!(p.ip_len, 20 + 20 + header.len() + body.len());
            // The backend acknowledges header and data: the client sees its data acknowledged.
            let ack = Frame::tcp(Flow::new(backend, 8080, SNAT, sport), ACK).seq_ack(9001, 1001 + len + 1400);
            let (_, out) = t.ingress(&ack.bytes(), t.b);
            let p = parse(&out);
            assert!(p.l4_csum_ok);
            assert_eq!(p.ack, 1001 + 1400);
            // Later segments are shifted.
            let more = Frame::tcp(Flow::new(client, 40000, vip, 80), ACK | PSH).seq_ack(2401, 9001).payload(b"more");
            let p = parse(&t.ingress(&more.bytes(), t.a).1);
            assert!(p.l4_csum_ok);
            assert_eq!((p.seq, p.payload.as_slice()), (2401 + len, &b"more"[..]));
        }
        // A UDP datagram: a v2 header in front of each.
        let d = Frame::udp(Flow::new(CLIENT, 5000, VIP, 53)).payload(&[9u8; 300]);
        let (v, out) = t.ingress(&d.bytes(), t.a);
        assert_eq!(v, TC_ACT_REDIRECT);
        let p = parse(&out);
        assert!(p.l4_csum_ok, "{p:?}");
        assert_eq!(p.payload, [v2_header(client, 5000, IpAddr::V4(VIP), 53, true), vec![9u8; 300]].concat());
        assert_eq!(t.counter("pp_inserted"), 3);
    });
}
