//! NAT both ways in `lb_tc` (TCP, UDP, IPv6, what is not ours), fragments following their
//! first fragment, the hand-over from XDP to tc, and the node itself as a client.
use std::net::{IpAddr, Ipv4Addr};

use lb_tests::{
    fixture::{Out, Step, from, packet, parsed, raw, then},
    packet::{ACK, Flow, Frame, PSH, SYN, parse, reassemble_udp_fragments},
    testbed::{listener, mac_of, model},
};
use lb_userspace::model::{Protocol, Scheduler};

use super::{A, At, B, B1, CLIENT, Fixture, SNAT, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, Tc, VIP, XDP_PASS, v6};

pub fn tc_full_nat_both_ways_tcp_udp_ipv6() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let vip6 = IpAddr::V6(v6("2001:db8:100::10"));
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[(B1.into(), 5353, 1)]),
        listener(vip6, 80, Protocol::Tcp, Scheduler::Rr, &[(v6("2001:db8:1::2").into(), 8080, 1)]),
    ]);
    let mut steps: Vec<Step<Tc, At>> = vec![];
    for (client, vip, backend, snat) in [
        (IpAddr::V4(CLIENT), vip, IpAddr::V4(B1), IpAddr::V4(SNAT)),
        (v6("2001:db8::2").into(), vip6, v6("2001:db8:1::2").into(), v6("2001:db8:1::1").into()),
    ] {
        let syn = Frame::tcp(Flow::new(client, 40000, vip, 80), SYN).payload(b"");
        let (client_mac, our_mac) = (syn.src_mac, syn.dst_mac);
        let syn_case = format!("{client} SYN to the VIP");
        let data = Frame::tcp(Flow::new(client, 40000, vip, 80), ACK | PSH).payload(&[7u8; 999]);
        steps.extend([
            // A client pod's SYN on the bridge: NAT towards the backend behind `b`.
            packet(
                syn_case.clone(),
                A,
                syn.bytes(),
                TC_ACT_REDIRECT,
                parsed(move |p, s| {
                    assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after NAT: {p:?}");
                    let (src, sport, dst, dport) = p.flow;
                    assert_eq!((src, dst, dport), (snat, backend, 8080), "SNAT to the egress device's address");
                    assert!((10000..=29999).contains(&sport));
                    assert_eq!((p.src_mac, p.dst_mac), (s.b_mac, mac_of(backend)));
                }),
            ),
            // The backend's reply on `b`: back to the client, from the VIP.
            packet(
                format!("{client}: the backend's SYN-ACK"),
                B,
                from(move |s| {
                    let sport = s.parsed(&syn_case).flow.1;
                    // ISN 1999: the client's data (ack 2000) completes the handshake.
                    Frame::tcp(Flow::new(backend, 8080, snat, sport), SYN | ACK)
                        .seq_ack(1999, 1001)
                        .payload(b"")
                        .bytes()
                }),
                TC_ACT_REDIRECT,
                parsed(move |p, _| {
                    assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after reverse NAT: {p:?}");
                    assert_eq!(p.flow, (vip, 80, client, 40000));
                    assert_eq!((p.src_mac, p.dst_mac), (our_mac, client_mac), "back to the client's MAC");
                }),
            ),
            // Data with a payload, both ways.
            packet(
                format!("{client}: data with a payload"),
                A,
                data.bytes(),
                TC_ACT_REDIRECT,
                parsed(|p, _| assert!(p.l4_csum_ok && p.payload == [7u8; 999], "{p:?}")),
            ),
        ]);
    }

    // UDP, with a checksum and without one (IPv4): a missing checksum stays missing.
    for (name, no_csum) in [("UDP with a checksum", false), ("UDP without a checksum", true)] {
        let mut d = Frame::udp(Flow::new(CLIENT, 5000, VIP, 53)).payload(b"query");
        d.udp_no_csum = no_csum;
        steps.push(packet(
            name,
            A,
            d.bytes(),
            TC_ACT_REDIRECT,
            parsed(move |p, _| {
                assert_eq!((p.flow.2, p.flow.3), (IpAddr::V4(B1), 5353));
                if no_csum {
                    assert_eq!(p.l4_csum, 0, "no checksum before, none after");
                } else {
                    assert!(p.l4_csum_ok, "{p:?}");
                }
            }),
        ));
    }

    // Only a SYN opens a TCP flow: data for no flow is dropped and counted.
    let stray = Frame::tcp(Flow::new(CLIENT, 40001, VIP, 80), ACK | PSH).payload(b"no handshake");
    steps.push(packet("data with no flow", A, stray.bytes(), TC_ACT_SHOT, Out::Any));
    // Not ours: a pod talking to another address goes on untouched.
    let other = Frame::tcp(Flow::new(CLIENT, 40000, Ipv4Addr::new(198, 18, 1, 9), 80), SYN).bytes();
    steps.push(packet("a pod talking to another address", A, other, TC_ACT_OK, Out::Untouched));
    steps.push(then("counters", |t: &mut Tc, _| {
        assert!(t.counter("tc_rx") >= 8);
        assert_eq!((t.counter("handshakes"), t.counter("drop_no_flow")), (2, 1));
    }));
    Fixture::new(m, steps)
}

pub fn tc_fragments_follow_their_first_fragment() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[(B1.into(), 5353, 1)])]);
    // A client pod's UDP datagram of 8 + 32 bytes, cut after 24 bytes of L4 data.
    let mut whole = Frame::udp(Flow::new(CLIENT, 47000, VIP, 53)).payload(&[7u8; 32]);
    whole.ip_id = 0x4242;
    let l4 = whole.l4();
    let (head, tail) = l4.split_at(24);
    let mut first = whole.clone();
    first.frag_off = 0x2000; // MF
    let mut later = whole.clone();
    later.frag_off = 3; // offset 24 bytes, last
    let steps = vec![
        packet("first fragment opens the flow", A, first.with_l3_payload(head), TC_ACT_REDIRECT, Out::Any),
        packet("later fragment follows", A, later.with_l3_payload(tail), TC_ACT_REDIRECT, Out::Any),
        // Same backend, IP checksums valid, the reassembled datagram's UDP checksum too.
        then("reassembled", |t: &mut Tc, s| {
            let p = reassemble_udp_fragments(
                s.frame("first fragment opens the flow"),
                s.frame("later fragment follows"),
                0x4242,
            );
            assert_eq!((p.flow.0, p.flow.2), (IpAddr::V4(SNAT), IpAddr::V4(B1)));
            assert!(p.l4_csum_ok, "reassembled UDP checksum after NAT: {p:?}");
            assert_eq!(p.flow.3, 5353);
            assert_eq!(t.counter("fragments_fwd"), 1);
        }),
    ];
    Fixture::new(m, steps)
}

/// The hand-over metadata `lb_xdp` puts in front of a frame it passes up for tc: (magic,
/// flags, egress ifindex).
fn handoff(out: &[u8]) -> lb_common::Handoff {
    lb_common::Handoff {
        magic: u16::from_ne_bytes([out[0], out[1]]),
        flags: u16::from_ne_bytes([out[2], out[3]]),
        ifindex: u32::from_ne_bytes(out[4..8].try_into().unwrap()),
    }
}

pub fn xdp_hands_frames_bound_for_tc_devices_to_tc() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)])]);
    const SYN_CASE: &str = "a wire client's SYN on the XDP NIC";
    let steps = vec![
        // A wire client's SYN on the XDP NIC `a`, its backend behind the tc device `b`: XDP
        // rewrites it and passes it up for `lb_tc_nic` to redirect. The output starts at the
        // metadata (8 bytes), then the frame.
        packet(
            SYN_CASE,
            At::Xdp,
            Frame::tcp(Flow::new(CLIENT, 40000, vip, 80), SYN).bytes(),
            XDP_PASS,
            raw(|out, _| {
                let p = parse(&out[8..]);
                assert!(p.ip_csum_ok && p.l4_csum_ok);
                assert_eq!((p.flow.0, p.flow.2, p.flow.3), (IpAddr::V4(SNAT), IpAddr::V4(B1), 8080));
            }),
        ),
        // The hand-over (magic, flags, egress ifindex) names `b`.
        then("handed over to b", |t: &mut Tc, s| {
            let meta = handoff(s.frame(SYN_CASE));
            assert_eq!(meta, lb_common::Handoff { magic: lb_common::HANDOFF_MAGIC, flags: 0, ifindex: t.b });
            assert_eq!(t.counter("xdp_to_tc"), 1);
        }),
        // The backend's reply comes in on `b` (tc), goes out of the NIC `a` by tc.
        packet(
            "the backend's SYN-ACK on b",
            B,
            from(|s| {
                let sport = parse(&s.frame(SYN_CASE)[8..]).flow.1;
                Frame::tcp(Flow::new(B1, 8080, SNAT, sport), SYN | ACK).bytes()
            }),
            TC_ACT_REDIRECT,
            parsed(move |p, _| assert_eq!(p.flow, (vip, 80, IpAddr::V4(CLIENT), 40000))),
        ),
    ];
    Fixture { xdp_a: true, ..Fixture::new(m, steps) }
}

pub fn the_node_itself_as_a_client() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)])]);
    let node = Ipv4Addr::new(198, 18, 0, 1);
    const SYN_CASE: &str = "the node's own SYN to a VIP, seen leaving by the NIC";
    let steps = vec![
        packet(
            SYN_CASE,
            At::Egress { local: true },
            Frame::tcp(Flow::new(node, 33000, vip, 80), SYN).bytes(),
            TC_ACT_REDIRECT,
            parsed(|p, _| assert_eq!((p.flow.2, p.flow.3), (IpAddr::V4(B1), 8080))),
        ),
        packet(
            "the reply goes up the node's stack",
            B,
            from(|s| Frame::tcp(Flow::new(B1, 8080, SNAT, s.parsed(SYN_CASE).flow.1), SYN | ACK).bytes()),
            TC_ACT_REDIRECT,
            parsed(move |p, _| {
                assert!(p.l4_csum_ok);
                assert_eq!(p.flow, (vip, 80, IpAddr::V4(node), 33000));
            }),
        ),
        then("counters", |t: &mut Tc, _| assert_eq!(t.counter("to_local"), 1)),
        // Forwarded packets (they have an input interface) are not the egress program's.
        packet(
            "a forwarded SYN leaving by the NIC",
            At::Egress { local: false },
            Frame::tcp(Flow::new(CLIENT, 33000, vip, 80), SYN).bytes(),
            TC_ACT_OK,
            Out::Any,
        ),
    ];
    Fixture::new(m, steps)
}
