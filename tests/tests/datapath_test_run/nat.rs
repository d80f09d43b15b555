//! Full NAT both ways (IPv4, IPv6 with extension headers, TCP, UDP), everything that is not
//! ours passed untouched, and new flows through a full conntrack table.
use std::net::{IpAddr, Ipv4Addr};

use lb_tests::{
    fixture::{
        Out,
        Side::{Backend, Client},
        Step, from, packet, parsed, then,
    },
    packet::{ACK, ETH_ARP, ETH_IPV6, ETH_VLAN, Flow, Frame, PSH, SYN, eth},
    testbed::{listener, mac_of, model},
};
use lb_userspace::{
    dataplane::Options,
    model::{Protocol, Scheduler},
};

use super::{B1, B2, Bench, CLIENT, Fixture, SNAT, VIP, XDP_DROP, XDP_PASS, XDP_REDIRECT, be, v6};

pub fn full_nat_both_ways_and_everything_else_untouched() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1), be(B2, 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)]),
        listener(vip, 90, Protocol::Tcp, Scheduler::Rr, &[]),
    ]);
    let flow = Flow::new(CLIENT, 40000, VIP, 80);
    let syn = Frame::tcp(flow, SYN);
    let (client_mac, our_mac) = (syn.src_mac, syn.dst_mac);
    let syn_len = syn.bytes().len();
    let data = Frame::tcp(flow, ACK | PSH).payload(b"GET / HTTP/1.1\r\n\r\n");
    let mut udp_no_csum = Frame::udp(Flow::new(CLIENT, 40100, VIP, 53)).payload(b"query");
    udp_no_csum.udp_no_csum = true;
    let mut ip_options = Frame::tcp(Flow::new(CLIENT, 40200, VIP, 80), SYN);
    ip_options.ip_options = vec![1, 1, 1, 0];

    let mut steps: Vec<Step<Bench>> = vec![
        // A TCP SYN to a listener: full NAT towards a backend, out of the backend interface.
        packet(
            "SYN to VIP:80",
            Client,
            syn.bytes(),
            XDP_REDIRECT,
            parsed(move |p, s| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after NAT: {p:?}");
                let (src, sport, dst, dport) = p.flow;
                assert_eq!(src, IpAddr::V4(SNAT), "SNAT to the egress interface's address");
                assert!((10000..=29999).contains(&sport), "SNAT port {sport} in the default range");
                assert!(dst == IpAddr::V4(B1) || dst == IpAddr::V4(B2));
                assert_eq!(dport, 8080);
                assert_eq!(p.src_mac, s.b_mac, "source MAC is the egress interface's");
                assert_eq!(p.dst_mac, mac_of(dst), "destination MAC from the neighbour table");
                assert_eq!(s.frame("SYN to VIP:80").len(), syn_len);
            }),
        ),
        // The backend's reply: reverse NAT to VIP:80 → client, back where the client came from.
        // Its ISN (1999) is what the client's next ACK (ack 2000) acknowledges.
        packet(
            "the backend's SYN-ACK",
            Backend,
            from(|s| {
                let (_, sport, backend, _) = s.parsed("SYN to VIP:80").flow;
                let reply = Frame::tcp(Flow::new(backend, 8080, SNAT, sport), SYN | ACK).seq_ack(1999, 1001);
                Frame { dst_mac: s.b_mac, src_mac: mac_of(backend), ..reply }.bytes()
            }),
            XDP_REDIRECT,
            parsed(move |p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok);
                assert_eq!(p.flow, (vip, 80, IpAddr::V4(CLIENT), 40000));
                assert_eq!((p.dst_mac, p.src_mac), (client_mac, our_mac), "MACs the client's frames carried");
            }),
        ),
        // Data on the same flow (its ACK completes the handshake): same backend, same SNAT
        // port (conntrack), payload intact.
        packet(
            "data on the same flow",
            Client,
            data.bytes(),
            XDP_REDIRECT,
            parsed(|p, s| {
                assert!(p.ip_csum_ok && p.l4_csum_ok);
                let first = s.parsed("SYN to VIP:80").flow;
                assert_eq!((p.flow.2, p.flow.1), (first.2, first.1), "flow pinned in conntrack");
                assert_eq!(p.payload, b"GET / HTTP/1.1\r\n\r\n");
            }),
        ),
        // UDP to a listener on another port; a zero UDP checksum stays zero.
        packet(
            "UDP to VIP:53",
            Client,
            Frame::udp(Flow::new(CLIENT, 40000, VIP, 53)).payload(b"query").bytes(),
            XDP_REDIRECT,
            parsed(|p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok && p.l4_csum != 0, "{p:?}");
                assert_eq!((p.flow.0, p.flow.2, p.flow.3), (IpAddr::V4(SNAT), IpAddr::V4(B1), 5353));
            }),
        ),
        packet(
            "UDP without a checksum",
            Client,
            udp_no_csum.bytes(),
            XDP_REDIRECT,
            parsed(|p, _| assert_eq!(p.l4_csum, 0, "no UDP checksum stays none")),
        ),
        // IPv4 options: the L4 header is found after them, options untouched.
        packet(
            "IPv4 options",
            Client,
            ip_options.bytes(),
            XDP_REDIRECT,
            parsed(|p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok);
                assert_eq!(p.ip_options, vec![1, 1, 1, 0]);
                assert_eq!(p.flow.3, 8080);
            }),
        ),
        // A listener without backends drops (and counts) instead of leaking to the kernel.
        packet(
            "listener without backends",
            Client,
            Frame::tcp(Flow::new(CLIENT, 40000, VIP, 90), SYN).bytes(),
            XDP_DROP,
            Out::Any,
        ),
    ];

    // Everything that is not ours passes untouched.
    let mut arp = eth([0xff; 6], client_mac, ETH_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    let mut v6_unknown = eth(our_mac, client_mac, ETH_IPV6);
    v6_unknown.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 58, 64]); // ICMPv6
    v6_unknown.extend_from_slice(&[0u8; 40]);
    let full = syn.bytes();
    let mut vlan = eth(our_mac, client_mac, ETH_VLAN);
    vlan.extend_from_slice(&[0, 10, 0x08, 0x00]);
    vlan.extend_from_slice(&full[14..]);
    let mut bad_ihl = syn.bytes();
    bad_ihl[14] = 0x44;
    let mut bad_version = syn.bytes();
    bad_version[14] = 0x65;
    let mut icmp = syn.bytes();
    icmp[14 + 9] = 1;
    let mut later_fragment = Frame::udp(Flow::new(CLIENT, 41000, VIP, 53));
    later_fragment.frag_off = 100; // offset 800 bytes, first fragment never seen
    let not_ours: Vec<(&str, Vec<u8>)> = vec![
        ("ARP", arp),
        ("ICMPv6", v6_unknown),
        ("VLAN-tagged", vlan),
        ("ethernet only", full[..14].to_vec()),
        ("IPv4 header cut", full[..14 + 10].to_vec()),
        ("TCP header cut", full[..14 + 20 + 10].to_vec()),
        ("port not a listener", Frame::tcp(Flow::new(CLIENT, 40000, VIP, 81), SYN).bytes()),
        ("address not a VIP", Frame::tcp(Flow::new(CLIENT, 40000, Ipv4Addr::new(198, 18, 0, 1), 80), SYN).bytes()),
        ("UDP to a TCP-only port", Frame::udp(Flow::new(CLIENT, 40000, VIP, 80)).bytes()),
        ("later fragment without its first", later_fragment.with_l3_payload(&[0u8; 64])),
        ("IHL 4", bad_ihl),
        ("version 6 in an IPv4 frame", bad_version),
        ("ICMP", icmp),
        // The node's own traffic: to its address (a SNAT source), outside the SNAT ports, and
        // to a SNAT port no flow has.
        ("UDP to the node's address", Frame::udp(Flow::new(CLIENT, 40000, SNAT, 53)).bytes()),
        ("TCP to the node's address", Frame::tcp(Flow::new(CLIENT, 40000, SNAT, 22), SYN).bytes()),
        ("to a SNAT port of no flow", Frame::udp(Flow::new(CLIENT, 40000, SNAT, 20000)).bytes()),
    ];
    for (name, frame) in not_ours {
        steps.push(packet(name, Client, frame, XDP_PASS, Out::Untouched));
    }

    steps.push(then("counters", |t: &mut Bench, _| {
        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.packets("new_flows"), 4, "{stats:?}");
        assert_eq!(stats.packets("fwd_to_client"), 1);
        assert_eq!(stats.packets("drop_no_backend"), 1);
        assert_eq!(stats.packets("pass_vlan"), 1);
        assert_eq!(stats.packets("handshakes"), 1);
        let l80 = stats.listeners["198.18.100.10:80/tcp"];
        assert_eq!((l80.new_flows, l80.packets, l80.reply_packets), (2, 3, 1), "{l80:?}");
        assert_eq!(l80.handshakes, 1, "{l80:?}");
        assert_eq!(stats.listeners["198.18.100.10:90/tcp"].no_backend_drops, 1);
    }));
    Fixture::new(m, steps)
}

pub fn ipv6_full_nat_with_extension_headers() -> Fixture {
    let vip = IpAddr::V6(v6("2001:db8:100::10"));
    let client = v6("2001:db8::2");
    let backends = [(IpAddr::V6(v6("2001:db8:1::2")), 8080, 1), (IpAddr::V6(v6("2001:db8:1::3")), 8080, 1)];
    let m = model(vec![
        listener(vip, 443, Protocol::Tcp, Scheduler::Rr, &backends),
        listener(vip, 443, Protocol::Udp, Scheduler::Sch, &backends),
    ]);
    let flow = Flow::new(client, 50000, vip, 443);
    let mut syn = Frame::tcp(flow, SYN);
    syn.v6_ext = vec![(60, vec![0, 0, 1, 4, 0, 0, 0, 0])]; // destination options, PadN
    let steps = vec![
        packet(
            "SYN with a destination options header",
            Client,
            syn.bytes(),
            XDP_REDIRECT,
            parsed(move |p, _| {
                assert!(p.l4_csum_ok, "{p:?}");
                assert_eq!(p.flow.0, IpAddr::V6(v6("2001:db8:1::1")), "SNAT to the egress interface's IPv6 address");
                assert!(backends.iter().any(|b| b.0 == p.flow.2) && p.flow.3 == 8080);
                assert_eq!(p.dst_mac, mac_of(p.flow.2));
            }),
        ),
        packet(
            "the backend's SYN-ACK",
            Backend,
            from(|s| {
                let p = s.parsed("SYN with a destination options header");
                let reply = Frame::tcp(Flow::new(p.flow.2, 8080, v6("2001:db8:1::1"), p.flow.1), SYN | ACK);
                Frame { dst_mac: s.b_mac, ..reply }.bytes()
            }),
            XDP_REDIRECT,
            parsed(move |r, _| {
                assert!(r.l4_csum_ok);
                assert_eq!(r.flow, (vip, 443, IpAddr::V6(client), 50000));
            }),
        ),
        // UDP on the same VIP:port, IPv6 UDP always carries a checksum.
        packet(
            "UDP on the same VIP:port",
            Client,
            Frame::udp(flow).payload(b"hi").bytes(),
            XDP_REDIRECT,
            parsed(|u, _| assert!(u.l4_csum_ok && u.l4_csum != 0)),
        ),
    ];
    Fixture::new(m, steps)
}

pub fn new_flows_still_work_when_conntrack_is_full() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1), be(B2, 5353, 1)])]);
    let mut steps: Vec<Step<Bench>> = (1000..1600u16)
        .map(|sport| {
            packet(
                format!("flow {sport} of 600 through a 64-flow table"),
                Client,
                Frame::udp(Flow::new(CLIENT, sport, VIP, 53)).bytes(),
                XDP_REDIRECT,
                parsed(|p, _| assert!(p.l4_csum_ok)),
            )
        })
        .collect();
    steps.push(then("counters", |t: &mut Bench, _| assert_eq!(t.dp.stats().unwrap().packets("new_flows"), 600)));
    Fixture { opts: Options { conntrack_entries: 64, ..Options::default() }, ..Fixture::new(m, steps) }
}
