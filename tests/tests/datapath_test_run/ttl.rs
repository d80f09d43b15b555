//! TTL and hop limit: a forwarded packet loses one hop, both ways, with its IPv4 header
//! checksum kept right; a packet whose TTL has run out is dropped and counted, so a routing
//! loop through the load balancer ends.
use std::net::IpAddr;

use lb_tests::{
    fixture::{
        Out,
        Side::{Backend, Client},
        Step, from, packet, raw, then,
    },
    packet::{ACK, Flow, Frame, SYN, finish, parse, sum16},
    testbed::{listener, mac_of, model},
};
use lb_userspace::model::{Protocol, Scheduler};

use super::{B1, Bench, CLIENT, Fixture, SNAT, VIP, XDP_DROP, XDP_REDIRECT, be, v6};

/// Ethernet header length: the IP header starts here.
const L3: usize = 14;

/// `frame` with its IPv4 TTL (header checksum fixed) or IPv6 hop limit set to `ttl`.
fn with_ttl(mut frame: Vec<u8>, ttl: u8) -> Vec<u8> {
    if frame[L3] >> 4 == 4 {
        frame[L3 + 8] = ttl;
        frame[L3 + 10..L3 + 12].copy_from_slice(&[0, 0]);
        let ihl = (frame[L3] & 0xf) as usize * 4;
        let c = finish(sum16(&frame[L3..L3 + ihl], 0));
        frame[L3 + 10..L3 + 12].copy_from_slice(&c.to_be_bytes());
    } else {
        frame[L3 + 7] = ttl;
    }
    frame
}

/// The TTL / hop limit of a frame out.
fn ttl_of(frame: &[u8]) -> u8 {
    if frame[L3] >> 4 == 4 { frame[L3 + 8] } else { frame[L3 + 7] }
}

pub fn ttl_and_hop_limit_lose_one_hop_and_expire() -> Fixture {
    let (vip, vip6, b6) = (IpAddr::V4(VIP), IpAddr::V6(v6("2001:db8:100::10")), v6("2001:db8:1::2"));
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]),
        listener(vip6, 80, Protocol::Tcp, Scheduler::Rr, &[(IpAddr::V6(b6), 8080, 1)]),
    ]);
    let client6: IpAddr = v6("2001:db8::2").into();
    let syn = |client: IpAddr, sport: u16, to: IpAddr, ttl: u8| {
        with_ttl(Frame::tcp(Flow::new(client, sport, to, 80), SYN).bytes(), ttl)
    };
    let one_hop_less = |want: u8| {
        raw(move |out, _| {
            assert_eq!(ttl_of(out), want, "one hop less");
            let p = parse(out);
            assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after the hop: {p:?}");
        })
    };
    let steps: Vec<Step<Bench>> = vec![
        packet("SYN with TTL 64", Client, syn(CLIENT.into(), 41000, vip, 64), XDP_REDIRECT, one_hop_less(63)),
        packet("SYN with TTL 2", Client, syn(CLIENT.into(), 41001, vip, 2), XDP_REDIRECT, one_hop_less(1)),
        packet("IPv6 SYN with hop limit 64", Client, syn(client6, 41002, vip6, 64), XDP_REDIRECT, one_hop_less(63)),
        // The backend's reply loses a hop too.
        packet(
            "the backend's SYN-ACK with TTL 64",
            Backend,
            from(|s| {
                let (_, sport, _, _) = s.parsed("SYN with TTL 64").flow;
                let reply = Frame::tcp(Flow::new(B1, 8080, SNAT, sport), SYN | ACK).seq_ack(1999, 1001);
                with_ttl(Frame { dst_mac: s.b_mac, src_mac: mac_of(B1.into()), ..reply }.bytes(), 64)
            }),
            XDP_REDIRECT,
            one_hop_less(63),
        ),
        // Run out: dropped, not forwarded (a routing loop through the VIP ends here).
        packet("SYN with TTL 1", Client, syn(CLIENT.into(), 41003, vip, 1), XDP_DROP, Out::Any),
        packet("IPv6 SYN with hop limit 1", Client, syn(client6, 41004, vip6, 1), XDP_DROP, Out::Any),
        packet("SYN with TTL 0", Client, syn(CLIENT.into(), 41005, vip, 0), XDP_DROP, Out::Any),
        then("counters", |t: &mut Bench, _| assert_eq!(t.dp.stats().unwrap().packets("drop_ttl"), 3)),
    ];
    Fixture::new(m, steps)
}
