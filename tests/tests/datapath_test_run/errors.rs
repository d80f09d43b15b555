//! Fragments follow their first fragment; ICMP errors about a flow (IPv4 "fragmentation
//! needed", ICMPv6 "packet too big") reach the side that sent the packet they quote.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_tests::{
    fixture::{
        Out, Seen,
        Side::{Backend, Client},
        Step, from, packet, raw, then,
    },
    packet::{ACK, Flow, Frame, SYN, eth, finish, ipv4_header, parse, reassemble_udp_fragments, sum16},
    testbed::{listener, mac_of, model},
};
use lb_userspace::model::{Protocol, Scheduler};

use super::{B1, B2, Bench, CLIENT, Fixture, SNAT, VIP, XDP_PASS, XDP_REDIRECT, be, v6};

pub fn fragments_follow_their_first_fragment() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1), be(B2, 5353, 1)])]);
    let (first, later) = halves(Frame::udp(Flow::new(CLIENT, 47000, VIP, 53)).payload(&[7u8; 32]), 0x4242);
    let steps = vec![
        packet("first fragment opens the flow", Client, first, XDP_REDIRECT, Out::Any),
        packet("later fragment follows", Client, later, XDP_REDIRECT, Out::Any),
        // Both went to the same backend, addresses rewritten, IP checksums valid; the
        // reassembled datagram's UDP checksum is valid.
        then("reassembled", |t: &mut Bench, s| {
            let p = reassemble_udp_fragments(
                s.frame("first fragment opens the flow"),
                s.frame("later fragment follows"),
                0x4242,
            );
            assert!(p.flow.2 == IpAddr::V4(B1) || p.flow.2 == IpAddr::V4(B2));
            assert!(p.l4_csum_ok, "reassembled UDP checksum after NAT: {p:?}");
            assert_eq!(p.flow.3, 5353);
            assert_eq!(t.dp.stats().unwrap().packets("fragments_fwd"), 1);
        }),
    ];
    Fixture::new(m, steps)
}

/// Two clients' datagrams, fragmented with one identification, to one backend: after full NAT
/// both are from the SNAT address, so each leaves with an identification of its own (the
/// backend would otherwise reassemble them into one), its fragments all with the same (a
/// duplicated first fragment too); the backend's fragmented reply too.
pub fn fragments_of_two_clients_leave_with_identifications_of_their_own() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)])]);
    let other = Ipv4Addr::new(198, 18, 0, 3);
    let datagram = |flow: Flow| Frame::udp(flow).payload(&[7u8; 32]);
    let (a1, a2) = halves(datagram(Flow::new(CLIENT, 47000, VIP, 53)), 0x4242);
    let (b1, b2) = halves(datagram(Flow::new(other, 47000, VIP, 53)), 0x4242);
    let id = |f: &[u8]| u16::from_be_bytes([f[18], f[19]]);
    let steps = vec![
        packet("a: first fragment", Client, a1.clone(), XDP_REDIRECT, Out::Any),
        packet("b: first fragment", Client, b1, XDP_REDIRECT, Out::Any),
        packet("a: later fragment", Client, a2, XDP_REDIRECT, Out::Any),
        packet("b: later fragment", Client, b2, XDP_REDIRECT, Out::Any),
        // Duplicated on the way, after its later fragment left: the same identification.
        packet("a: first fragment again", Client, a1, XDP_REDIRECT, Out::Any),
        then("each reassembles apart", move |_: &mut Bench, s| {
            let mut ids = Vec::new();
            for who in ["a", "b"] {
                let (f1, f2) = (s.frame(&format!("{who}: first fragment")), s.frame(&format!("{who}: later fragment")));
                let p = reassemble_udp_fragments(f1, f2, id(f1));
                assert_eq!((p.flow.0, p.flow.2), (IpAddr::V4(SNAT), IpAddr::V4(B1)), "{who}: {p:?}");
                assert!(p.l4_csum_ok, "{who}: reassembled UDP checksum after NAT: {p:?}");
                ids.push(id(f1));
            }
            assert_ne!(ids[0], ids[1], "two datagrams from the SNAT address to B1 share identification {:#x}", ids[0]);
            assert_eq!(id(s.frame("a: first fragment again")), ids[0], "a duplicated first fragment");
        }),
        packet(
            "the backend's fragmented reply, first",
            Backend,
            from(|s| reply_fragment(s, true)),
            XDP_REDIRECT,
            Out::Any,
        ),
        packet(
            "the backend's fragmented reply, later",
            Backend,
            from(|s| reply_fragment(s, false)),
            XDP_REDIRECT,
            Out::Any,
        ),
        then("the reply reassembles at the client", move |_: &mut Bench, s| {
            let f1 = s.frame("the backend's fragmented reply, first");
            let f2 = s.frame("the backend's fragmented reply, later");
            let p = reassemble_udp_fragments(f1, f2, id(f1));
            assert_eq!((p.flow.0, p.flow.1, p.flow.2, p.flow.3), (vip, 53, IpAddr::V4(CLIENT), 47000), "{p:?}");
            assert!(p.l4_csum_ok, "reassembled reply's UDP checksum after NAT: {p:?}");
        }),
    ];
    Fixture::new(m, steps)
}

/// Datagram `whole` (8 + 32 bytes) with identification `id`, cut after 24 bytes of L4 data:
/// its first fragment and its last.
fn halves(mut whole: Frame, id: u16) -> (Vec<u8>, Vec<u8>) {
    whole.ip_id = id;
    let l4 = whole.l4();
    let (head, tail) = l4.split_at(24);
    let (mut first, mut later) = (whole.clone(), whole);
    first.frag_off = 0x2000; // MF
    later.frag_off = 3; // offset 24 bytes, last
    (first.with_l3_payload(head), later.with_l3_payload(tail))
}

/// A fragment of B1's reply (identification 0x77) on client a's flow.
fn reply_fragment(s: &Seen, first: bool) -> Vec<u8> {
    let sport = s.parsed("a: first fragment").flow.1;
    let whole = Frame::udp(Flow::new(B1, 5353, SNAT, sport)).payload(&[9u8; 32]);
    let (head, tail) = halves(Frame { dst_mac: s.b_mac, src_mac: mac_of(IpAddr::V4(B1)), ..whole }, 0x0077);
    if first { head } else { tail }
}

pub fn ipv6_fragments_follow_their_first_fragment() -> Fixture {
    let vip6 = v6("2001:db8:100::10");
    let client = v6("2001:db8::2");
    let b1 = v6("2001:db8:1::2");
    let m = model(vec![listener(IpAddr::V6(vip6), 53, Protocol::Udp, Scheduler::Rr, &[(IpAddr::V6(b1), 5353, 1)])]);
    let whole = Frame::udp(Flow::new(client, 47000, vip6, 53)).payload(&[9u8; 40]);
    let l4 = whole.l4();
    let (head, tail) = l4.split_at(24);
    let frag = |offset: u16, more: bool| {
        let mut f = whole.clone();
        let off_flags = (offset << 3) | more as u16;
        f.v6_ext = vec![(44, vec![0, 0, (off_flags >> 8) as u8, off_flags as u8, 0, 0, 0x42, 0x42])];
        f
    };
    let addrs = |f: &[u8]| {
        (
            Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap()),
            Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()),
        )
    };
    let steps = vec![
        packet("first fragment opens the flow", Client, frag(0, true).with_l3_payload(head), XDP_REDIRECT, Out::Any),
        packet("later fragment follows", Client, frag(3, false).with_l3_payload(tail), XDP_REDIRECT, Out::Any),
        then("reassembled", move |_, s| {
            let (out1, out2) = (s.frame("first fragment opens the flow"), s.frame("later fragment follows"));
            assert_eq!(addrs(out1), (v6("2001:db8:1::1"), b1));
            assert_eq!(addrs(out2), addrs(out1), "same SNAT source and backend");
            // Reassemble (drop the fragment headers) and check the UDP checksum after NAT.
            let mut datagram = out1[14 + 40 + 8..].to_vec();
            datagram.extend_from_slice(&out2[14 + 40 + 8..]);
            let mut frame = out1[..14 + 40].to_vec();
            frame[14 + 4..14 + 6].copy_from_slice(&(datagram.len() as u16).to_be_bytes());
            frame[14 + 6] = 17;
            frame.extend_from_slice(&datagram);
            let p = parse(&frame);
            assert!(p.l4_csum_ok, "reassembled UDP checksum after NAT: {p:?}");
            assert_eq!(p.flow.3, 5353);
        }),
    ];
    Fixture::new(m, steps)
}

/// An ICMP error (type 3 code 4, "fragmentation needed", MTU 1400) from `src` to `dst`
/// quoting `quoted` (an IPv4 packet without Ethernet header).
fn icmp_frag_needed(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(quoted);
    let c = finish(sum16(&icmp, 0));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xcc], 0x0800);
    f.extend_from_slice(&ipv4_header(src, dst, 1, &[], 7, 0, icmp.len()));
    f.extend_from_slice(&icmp);
    f
}

/// (outer src, outer dst, quoted src:port, quoted dst:port) of an ICMP error, with every
/// checksum checked from scratch (outer IP, ICMP, quoted IP).
fn read_icmp(f: &[u8]) -> (Ipv4Addr, Ipv4Addr, (Ipv4Addr, u16), (Ipv4Addr, u16)) {
    let ip = &f[14..34];
    assert_eq!(finish(sum16(ip, 0)), 0, "outer IP checksum");
    let icmp = &f[34..];
    assert_eq!(finish(sum16(icmp, 0)), 0, "ICMP checksum");
    let inner = &icmp[8..];
    assert_eq!(finish(sum16(&inner[..20], 0)), 0, "quoted IP checksum");
    let a = |b: &[u8]| Ipv4Addr::new(b[0], b[1], b[2], b[3]);
    let p = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    (a(&ip[12..16]), a(&ip[16..20]), (a(&inner[12..16]), p(&inner[20..22])), (a(&inner[16..20]), p(&inner[22..24])))
}

pub fn icmp_errors_reach_the_right_side() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)]),
    ]);
    let mut steps: Vec<Step<Bench>> = Vec::new();
    for (proto, port, bport) in [(6u8, 80u16, 8080u16), (17, 53, 5353)] {
        let flow = Flow::new(CLIENT, 40000, VIP, port);
        let first = if proto == 6 { Frame::tcp(flow, SYN) } else { Frame::udp(flow).payload(b"query") };
        let sent = format!("proto {proto}: the client's packet");
        let back = format!("proto {proto}: the backend's reply");
        steps.push(packet(sent.clone(), Client, first.bytes(), XDP_REDIRECT, Out::Any));
        // The backend side says our packet (SNAT → backend) was too big.
        let quoted = sent.clone();
        steps.push(packet(
            format!("proto {proto}: an error from the backend side, to the client"),
            Backend,
            from(move |s| icmp_frag_needed(B1, SNAT, &s.frame(&quoted)[14..])),
            XDP_REDIRECT,
            raw(move |out, _| {
                assert_eq!(read_icmp(out), (VIP, CLIENT, (CLIENT, 40000), (VIP, port)), "proto {proto}");
                if proto == 17 {
                    // The quoted UDP header's checksum was kept right too.
                    let quoted = &out[34 + 8..];
                    let udp = Frame::udp(flow).payload(b"query").l4();
                    assert_eq!(&quoted[20..20 + udp.len()], &udp[..], "quoted datagram is the client's own");
                }
            }),
        ));
        // The client side says our reply (VIP → client) could not be delivered.
        let snat_port_of = sent.clone();
        steps.push(packet(
            back.clone(),
            Backend,
            from(move |s| {
                let snat_port = s.parsed(&snat_port_of).flow.1;
                let reply = if proto == 6 {
                    Frame::tcp(Flow::new(B1, bport, SNAT, snat_port), SYN | ACK)
                } else {
                    Frame::udp(Flow::new(B1, bport, SNAT, snat_port))
                };
                Frame { dst_mac: s.b_mac, ..reply }.bytes()
            }),
            XDP_REDIRECT,
            Out::Any,
        ));
        let quoted = back.clone();
        steps.push(packet(
            format!("proto {proto}: an error from the client side, to the backend"),
            Client,
            from(move |s| icmp_frag_needed(CLIENT, VIP, &s.frame(&quoted)[14..])),
            XDP_REDIRECT,
            raw(move |out, s| {
                let snat_port = s.parsed(&sent).flow.1;
                assert_eq!(read_icmp(out), (SNAT, B1, (B1, bport), (SNAT, snat_port)), "proto {proto}");
            }),
        ));
    }
    // An error about no flow of ours, and an ICMP echo, pass untouched.
    let stray = icmp_frag_needed(B1, SNAT, &Frame::tcp(Flow::new(SNAT, 1234, B1, 9999), SYN).bytes()[14..]);
    let mut echo = stray.clone();
    echo[34] = 8;
    steps.extend([
        packet("an error about no flow of ours", Backend, stray, XDP_PASS, Out::Untouched),
        packet("an echo request", Backend, echo, XDP_PASS, Out::Any),
        then("counters", |t: &mut Bench, _| assert_eq!(t.dp.stats().unwrap().packets("icmp_errors_fwd"), 4)),
    ]);
    Fixture::new(m, steps)
}

/// An ICMPv6 "packet too big" (MTU 1280) from `src` to `dst` quoting `quoted` (an IPv6
/// packet without Ethernet header), with its pseudo-header checksum.
fn icmp6_too_big(src: Ipv6Addr, dst: Ipv6Addr, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&quoted[..quoted.len().min(1232)]);
    let mut pseudo = src.octets().to_vec();
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    let c = finish(sum16(&icmp, sum16(&pseudo, 0)));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xcc], 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

/// (outer src, outer dst, quoted src:port, quoted dst:port) of an ICMPv6 error, its
/// checksum (pseudo-header included) checked from scratch.
fn read_icmp6(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, (Ipv6Addr, u16), (Ipv6Addr, u16)) {
    let ip = &f[14..54];
    let icmp = &f[54..];
    let a = |b: &[u8]| Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap());
    let mut pseudo = ip[8..40].to_vec();
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    assert_eq!(finish(sum16(icmp, sum16(&pseudo, 0))), 0, "ICMPv6 checksum");
    let inner = &icmp[8..];
    let p = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    (a(&ip[8..24]), a(&ip[24..40]), (a(&inner[8..24]), p(&inner[40..42])), (a(&inner[24..40]), p(&inner[42..44])))
}

pub fn icmpv6_packet_too_big_reaches_the_right_side() -> Fixture {
    let vip6 = v6("2001:db8:100::10");
    let client = v6("2001:db8::2");
    let b1 = v6("2001:db8:1::2");
    let snat = v6("2001:db8:1::1");
    let m = model(vec![listener(IpAddr::V6(vip6), 443, Protocol::Tcp, Scheduler::Rr, &[(IpAddr::V6(b1), 8443, 1)])]);
    let snat_port = |s: &lb_tests::fixture::Seen| s.parsed("SYN").flow.1;
    let steps = vec![
        packet("SYN", Client, Frame::tcp(Flow::new(client, 50000, vip6, 443), SYN).bytes(), XDP_REDIRECT, Out::Any),
        packet(
            "packet too big from the backend side, to the client",
            Backend,
            from(move |s| icmp6_too_big(b1, snat, &s.frame("SYN")[14..])),
            XDP_REDIRECT,
            raw(move |out, _| assert_eq!(read_icmp6(out), (vip6, client, (client, 50000), (vip6, 443)))),
        ),
        packet(
            "the backend's SYN-ACK",
            Backend,
            from(move |s| {
                Frame { dst_mac: s.b_mac, ..Frame::tcp(Flow::new(b1, 8443, snat, snat_port(s)), SYN | ACK) }.bytes()
            }),
            XDP_REDIRECT,
            Out::Any,
        ),
        packet(
            "packet too big from the client side, to the backend",
            Client,
            from(move |s| icmp6_too_big(client, vip6, &s.frame("the backend's SYN-ACK")[14..])),
            XDP_REDIRECT,
            raw(move |out, s| assert_eq!(read_icmp6(out), (snat, b1, (b1, 8443), (snat, snat_port(s))))),
        ),
    ];
    Fixture::new(m, steps)
}
