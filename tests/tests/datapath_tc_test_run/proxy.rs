//! PROXY protocol in `lb_tc`: the header inserted by moving the payload (v2 and v1), the MSS
//! clamp, seq/ack shifted, and a v2 header in front of each UDP datagram.
use std::net::{IpAddr, Ipv4Addr};

use lb_tests::{
    fixture::{Seen, Step, from, packet, parsed, then},
    packet::{ACK, Flow, Frame, PSH, SYN},
    proxy_frames::{mss_of, syn_options, v1_header, v2_header},
    testbed::{listener, model},
};
use lb_userspace::model::{Protocol, ProxyProtocol, Scheduler};

use super::{A, At, B, B1, CLIENT, Fixture, SNAT, TC_ACT_REDIRECT, Tc, VIP};

/// One TCP flow (client port `port`, ISN 1000) through a PROXY listener on `vip:80` whose
/// header is `header`: the client's frames on `a`, the backend's on `b`. Its cases are named
/// `<name>: <case>`.
fn pp_flow(name: &str, vip: IpAddr, port: u16, header: Vec<u8>) -> Vec<Step<Tc, At>> {
    let client = IpAddr::V4(CLIENT);
    let case = |what: &str| format!("{name}: {what}");
    let syn_case = case("SYN");
    // The backend's segments go to where the SYN went (SNAT port, backend).
    let to_client = move |s: &Seen, flags: u8, seq: u32, ack: u32| {
        let (_, sport, backend, _) = s.parsed(&syn_case).flow;
        Frame::tcp(Flow::new(backend, 8080, SNAT, sport), flags).seq_ack(seq, ack)
    };
    let reply = to_client.clone();
    let len = header.len() as u32;
    let syn = Frame::tcp(Flow::new(client, port, vip, 80), SYN).seq_ack(1000, 0).options(&syn_options(1460));
    // The first data segment (1400 bytes: several chunks moved), before the backend
    // acknowledged anything.
    let body: Vec<u8> = (0..1400u32).map(|i| (i * 7 + 3) as u8).collect();
    let data = Frame::tcp(Flow::new(client, port, vip, 80), ACK | PSH).seq_ack(1001, 9001).payload(&body);
    let more = Frame::tcp(Flow::new(client, port, vip, 80), ACK | PSH).seq_ack(2401, 9001).payload(b"more");
    vec![
        packet(
            case("SYN"),
            A,
            syn.bytes(),
            TC_ACT_REDIRECT,
            parsed(|p, _| assert_eq!(p.payload.len(), 0, "a SYN gets no header")),
        ),
        // The backend's SYN-ACK: MSS clamped by the header's length.
        packet(
            case("the backend's SYN-ACK"),
            B,
            from(move |s| to_client(s, SYN | ACK, 9000, 1001).options(&syn_options(1460)).bytes()),
            TC_ACT_REDIRECT,
            parsed(move |p, _| {
                assert!(p.l4_csum_ok, "{p:?}");
                assert_eq!(mss_of(&p.tcp_options), Some(1460 - len as u16));
            }),
        ),
        // The first data segment: the header in front of the payload.
        packet(
            case("the first data segment"),
            A,
            data.bytes(),
            TC_ACT_REDIRECT,
            parsed(move |p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after insertion ({vip}): {p:?}");
                assert_eq!(p.payload, [header.clone(), body.clone()].concat(), "header, then the payload intact");
                assert_eq!(p.ip_len, 20 + 20 + header.len() + body.len());
            }),
        ),
        // The backend acknowledges header and data: the client sees its data acknowledged.
        packet(
            case("the backend's ACK of header and data"),
            B,
            from(move |s| reply(s, ACK, 9001, 1001 + len + 1400).bytes()),
            TC_ACT_REDIRECT,
            parsed(|p, _| {
                assert!(p.l4_csum_ok);
                assert_eq!(p.ack, 1001 + 1400);
            }),
        ),
        // Later segments are shifted.
        packet(
            case("a later segment"),
            A,
            more.bytes(),
            TC_ACT_REDIRECT,
            parsed(move |p, _| {
                assert!(p.l4_csum_ok);
                assert_eq!((p.seq, p.payload.as_slice()), (2401 + len, &b"more"[..]));
            }),
        ),
    ]
}

pub fn tc_inserts_the_proxy_header_by_moving_the_payload() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let vip11 = IpAddr::V4(Ipv4Addr::new(198, 18, 100, 11));
    let mut v2 = listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)]);
    v2.proxy_protocol = ProxyProtocol::V2;
    let mut v1 = listener(vip11, 80, Protocol::Tcp, Scheduler::Rr, &[(B1.into(), 8080, 1)]);
    v1.proxy_protocol = ProxyProtocol::V1;
    let mut udp = listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[(B1.into(), 5353, 1)]);
    udp.proxy_protocol = ProxyProtocol::V2;
    let client = IpAddr::V4(CLIENT);

    // v2 (28 bytes), v1 of an even length (46 bytes) and of an odd one (45 bytes: client
    // port 4000), which the payload move must handle without a 16-bit alignment.
    let mut steps = pp_flow("v2 to 198.18.100.10", vip, 40000, v2_header(client, 40000, vip, 80, false));
    steps.extend(pp_flow("v1 to 198.18.100.11", vip11, 40000, v1_header(client, 40000, vip11, 80)));
    let odd = v1_header(client, 4000, vip11, 80);
    assert_eq!(odd.len() % 2, 1, "an odd-length v1 header");
    steps.extend(pp_flow("odd v1 to 198.18.100.11", vip11, 4000, odd));
    steps.extend([
        // A UDP datagram: a v2 header in front of each.
        packet(
            "a UDP datagram",
            A,
            Frame::udp(Flow::new(CLIENT, 5000, VIP, 53)).payload(&[9u8; 300]).bytes(),
            TC_ACT_REDIRECT,
            parsed(move |p, _| {
                assert!(p.l4_csum_ok, "{p:?}");
                assert_eq!(p.payload, [v2_header(client, 5000, IpAddr::V4(VIP), 53, true), vec![9u8; 300]].concat());
            }),
        ),
        then("counters", |t: &mut Tc, _| assert_eq!(t.counter("pp_inserted"), 4)),
    ]);
    Fixture::new(model(vec![v2, v1, udp]), steps)
}
