//! SYN cookies (`--syn-cookies always`): a SYN answered by the datapath with a cookie and no
//! state, only a valid cookie's ACK opening a flow (sent on as the backend's SYN), the
//! backend's SYN-ACK turned into the handshake's last ACK, and the sequence shift between
//! the two for the flow's life; IPv6, and a PROXY v2 listener whose header rides that ACK.
//! Answers go back out of the interface they came in on by the devmap (`xdp_tx` counts
//! them).
use std::net::IpAddr;

use lb_tests::{
    fixture::{
        Seen,
        Side::{Backend, Client},
        Step, from, packet, parsed, then,
    },
    packet::{ACK, Flow, Frame, PSH, Parsed, SYN},
    proxy_frames::{mss_of, syn_options, v2_header},
    testbed::{listener, mac_of, model},
};
use lb_userspace::{
    dataplane::{Options, SynCookies},
    model::{Protocol, ProxyProtocol, Scheduler},
};

use super::{B1, Bench, CLIENT, Fixture, VIP, XDP_DROP, XDP_REDIRECT, be, v6};

/// The backend's ISN in its SYN-ACK.
const BACKEND_ISN: u32 = 4999;
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\n\r\n";

/// The cookie the datapath's SYN-ACK of case `syn` carried.
fn cookie(s: &Seen, syn: &str) -> u32 {
    s.parsed(syn).seq
}

/// A client frame on `flow` acking the cookie of case `syn` (plus `off`).
fn acking(flow: Flow, flags: u8, syn: &'static str, off: u32, payload: &'static [u8]) -> lb_tests::fixture::Input {
    from(move |s| Frame::tcp(flow, flags).seq_ack(1001, cookie(s, syn).wrapping_add(1 + off)).payload(payload).bytes())
}

/// The backend's frame to where case `of` went (its SNAT address and port).
fn from_backend(of: &'static str, flags: u8, seq: u32, ack: u32, payload: &'static [u8]) -> lb_tests::fixture::Input {
    from(move |s| {
        let (snat, snat_port, backend, bport) = s.parsed(of).flow;
        let f = Frame::tcp(Flow::new(backend, bport, snat, snat_port), flags).seq_ack(seq, ack).payload(payload);
        Frame { dst_mac: s.b_mac, src_mac: mac_of(backend), ..f }.bytes()
    })
}

/// The datapath's SYN-ACK to the client of `flow`: turned around, ack ISN + 1, an MSS.
fn answered(flow: Flow, mss: u16) -> impl Fn(&Parsed, &Seen) + Send + 'static {
    move |p, _| {
        assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
        assert_eq!(p.flow, (flow.dst, flow.dport, flow.src, flow.sport), "turned around");
        assert_eq!((p.tcp_flags, p.ack, p.payload.len()), (SYN | ACK, 1001, 0), "{p:?}");
        assert_eq!(p.tcp_options, vec![2, 4, (mss >> 8) as u8, mss as u8], "only an MSS");
    }
}

/// The flow's SYN to its backend, from whatever client packet: seq the client's ISN, the
/// MSS option, no payload; on the SNAT port and backend of case `first` when given.
fn syn_to_backend(first: Option<&'static str>) -> impl Fn(&Parsed, &Seen) + Send + 'static {
    move |p, s| {
        assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
        assert_eq!((p.tcp_flags, p.seq, p.ack, p.payload.len()), (SYN, 1000, 0, 0), "{p:?}");
        assert!(mss_of(&p.tcp_options).is_some(), "{p:?}");
        if let Some(first) = first {
            assert_eq!(p.flow, s.parsed(first).flow, "the same SNAT port and backend");
        }
    }
}

pub fn syn_cookies_answer_syns_and_only_a_valid_cookie_opens_a_flow() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)])]);
    let flow = Flow::new(CLIENT, 46000, VIP, 80);
    let syn = Frame::tcp(flow, SYN).seq_ack(1000, 0).options(&syn_options(1460));
    let steps: Vec<Step<Bench>> = vec![
        packet("SYN", Client, syn.bytes(), XDP_REDIRECT, parsed(answered(flow, 1460))),
        then("no state for a SYN", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            assert_eq!(stats.packets("syncookies_sent"), 1, "{stats:?}");
            assert_eq!((stats.packets("new_flows"), stats.packets("fwd_to_backend")), (0, 0), "{stats:?}");
        }),
        packet("ACK with a wrong cookie", Client, acking(flow, ACK, "SYN", 7, b""), XDP_DROP, parsed(|_, _| {})),
        packet(
            "ACK with the cookie",
            Client,
            acking(flow, ACK, "SYN", 0, b""),
            XDP_REDIRECT,
            parsed(syn_to_backend(None)),
        ),
        packet(
            "data before the backend answered",
            Client,
            acking(flow, ACK | PSH, "SYN", 0, REQUEST),
            XDP_REDIRECT,
            parsed(syn_to_backend(Some("ACK with the cookie"))),
        ),
        packet(
            "backend SYN-ACK",
            Backend,
            from_backend("ACK with the cookie", SYN | ACK, BACKEND_ISN, 1001, b""),
            XDP_REDIRECT,
            parsed(|p, s| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!(p.flow, s.parsed("ACK with the cookie").flow, "back to the backend, from the SNAT port");
                assert_eq!((p.tcp_flags, p.seq, p.ack), (ACK, 1001, BACKEND_ISN + 1), "the handshake's last ACK");
                assert!(p.tcp_options.iter().all(|b| *b == 1), "options made NOPs: {p:?}");
            }),
        ),
        packet(
            "data",
            Client,
            acking(flow, ACK | PSH, "SYN", 0, REQUEST),
            XDP_REDIRECT,
            parsed(|p, s| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!(p.flow, s.parsed("ACK with the cookie").flow);
                assert_eq!(
                    (p.seq, p.ack, p.payload.as_slice()),
                    (1001, BACKEND_ISN + 1, REQUEST),
                    "ack moved to the backend's"
                );
            }),
        ),
        packet(
            "the backend's data",
            Backend,
            from_backend(
                "ACK with the cookie",
                ACK | PSH,
                BACKEND_ISN + 1,
                1001 + REQUEST.len() as u32,
                b"HTTP/1.1 200 OK\r\n\r\n",
            ),
            XDP_REDIRECT,
            parsed(move |p, s| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!(p.flow, (vip, 80, IpAddr::V4(CLIENT), 46000));
                assert_eq!(
                    (p.seq, p.ack),
                    (cookie(s, "SYN").wrapping_add(1), 1001 + REQUEST.len() as u32),
                    "seq moved to the cookie's"
                );
            }),
        ),
        packet(
            "backend SYN-ACK again (its ACK was lost)",
            Backend,
            from_backend("ACK with the cookie", SYN | ACK, BACKEND_ISN, 1001, b""),
            XDP_REDIRECT,
            parsed(|p, _| assert_eq!((p.tcp_flags, p.seq, p.ack), (ACK, 1001, BACKEND_ISN + 1))),
        ),
        then("counted", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            for (name, n) in [
                ("syncookies_sent", 1),
                ("syncookies_valid", 1),
                ("syncookie_handshakes", 2),
                ("handshakes", 1),
                ("new_flows", 1),
                ("drop_no_flow", 1),
            ] {
                assert_eq!(stats.packets(name), n, "{name}: {stats:?}");
            }
            let l = stats.listeners["198.18.100.10:80/tcp"];
            assert_eq!((l.handshakes, l.new_flows, l.no_flow_drops), (1, 1, 1), "{l:?}");
        }),
    ];
    Fixture { opts: Options { syn_cookies: SynCookies::Always, ..Options::default() }, ..Fixture::new(m, steps) }
}

pub fn syn_cookies_ipv6_and_proxy_v2() -> Fixture {
    let vip6 = IpAddr::V6(v6("2001:db8:100::10"));
    let client6 = IpAddr::V6(v6("2001:db8::2"));
    let b6 = IpAddr::V6(v6("2001:db8:1::2"));
    let mut pp = listener(IpAddr::V4(VIP), 81, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    pp.proxy_protocol = ProxyProtocol::V2;
    let m = model(vec![listener(vip6, 80, Protocol::Tcp, Scheduler::Rr, &[(b6, 8080, 1)]), pp]);
    let f6 = Flow::new(client6, 46000, vip6, 80);
    let fpp = Flow::new(CLIENT, 46001, VIP, 81);
    let steps: Vec<Step<Bench>> = vec![
        packet(
            "v6 SYN",
            Client,
            Frame::tcp(f6, SYN).seq_ack(1000, 0).bytes(),
            XDP_REDIRECT,
            parsed(answered(f6, 1440)),
        ),
        packet(
            "v6 ACK with the cookie",
            Client,
            acking(f6, ACK, "v6 SYN", 0, b""),
            XDP_REDIRECT,
            parsed(syn_to_backend(None)),
        ),
        // A PROXY v2 listener: the MSS leaves room for the header, which the handshake's last
        // ACK carries (a server-first backend gets it before the client sends a byte).
        packet(
            "pp SYN",
            Client,
            Frame::tcp(fpp, SYN).seq_ack(1000, 0).bytes(),
            XDP_REDIRECT,
            parsed(answered(fpp, 1460 - 28)),
        ),
        packet(
            "pp ACK with the cookie",
            Client,
            acking(fpp, ACK, "pp SYN", 0, b""),
            XDP_REDIRECT,
            parsed(syn_to_backend(None)),
        ),
        packet(
            "pp backend SYN-ACK",
            Backend,
            from_backend("pp ACK with the cookie", SYN | ACK, BACKEND_ISN, 1001, b""),
            XDP_REDIRECT,
            parsed(|p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!((p.tcp_flags & ACK, p.seq, p.ack), (ACK, 1001, BACKEND_ISN + 1), "{p:?}");
                assert_eq!(p.payload, v2_header(IpAddr::V4(CLIENT), 46001, IpAddr::V4(VIP), 81, false), "the header");
            }),
        ),
        packet(
            "pp backend acks the header",
            Backend,
            from_backend("pp ACK with the cookie", ACK, BACKEND_ISN + 1, 1001 + 28, b""),
            XDP_REDIRECT,
            parsed(|p, s| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!((p.seq, p.ack), (cookie(s, "pp SYN").wrapping_add(1), 1001), "both shifts");
            }),
        ),
        packet(
            "pp data",
            Client,
            acking(fpp, ACK | PSH, "pp SYN", 0, REQUEST),
            XDP_REDIRECT,
            parsed(|p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!((p.seq, p.ack, p.payload.as_slice()), (1001 + 28, BACKEND_ISN + 1, REQUEST), "both shifts");
            }),
        ),
        then("counted", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            assert_eq!((stats.packets("syncookies_sent"), stats.packets("syncookies_valid")), (2, 2), "{stats:?}");
            assert_eq!(stats.packets("pp_inserted"), 1, "{stats:?}");
        }),
    ];
    Fixture { opts: Options { syn_cookies: SynCookies::Always, ..Options::default() }, ..Fixture::new(m, steps) }
}
