//! PROXY protocol: header bytes (v1, v2; IPv4, IPv6; TCP, UDP), seq/ack/SACK rewriting, the
//! MSS clamp, retransmissions, malformed options, turning it off, and a client's own `PROXY`
//! line without a flow.
use std::net::{IpAddr, Ipv4Addr};

use lb_tests::{
    fixture::{
        Out, Seen,
        Side::{Backend, Client},
        Step, from, packet, parsed, raw, then,
    },
    packet::{ACK, FIN, Flow, Frame, PSH, Parsed, SYN},
    proxy_frames::{mss_of, sack_blocks, sack_options, syn_options, v1_header, v2_header},
    testbed::{listener, model},
};
use lb_userspace::model::{L4Listener, Protocol, ProxyProtocol, Scheduler};

use super::{B1, Bench, CLIENT, Fixture, VIP, XDP_DROP, XDP_REDIRECT, be, v6};

/// A listener with a PROXY protocol version.
fn pp_listener(
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    backends: &[(IpAddr, u16, u32)],
    pp: ProxyProtocol,
) -> L4Listener {
    let mut l = listener(vip, port, protocol, Scheduler::Rr, backends);
    l.proxy_protocol = pp;
    l
}

/// One TCP connection through a PROXY listener, played frame by frame: its cases are named
/// `<connection>: <case>`, and the backend's segments go to where its SYN went.
#[derive(Clone)]
struct Conn {
    name: String,
    flow: Flow,
}

impl Conn {
    /// The connection's SYN (with `isn` and `options`), which goes through unchanged.
    fn open(name: &str, flow: Flow, isn: u32, options: &[u8]) -> (Conn, Step<Bench>) {
        let c = Conn { name: name.into(), flow };
        let syn = Frame::tcp(flow, SYN).seq_ack(isn, 0).options(options);
        let opts = syn.tcp_options.clone();
        let step = packet(
            c.case("SYN"),
            Client,
            syn.bytes(),
            XDP_REDIRECT,
            parsed(move |p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
                assert_eq!(
                    (p.seq, p.tcp_options.clone(), p.payload.len()),
                    (isn, opts.clone(), 0),
                    "the SYN is not touched"
                );
            }),
        );
        (c, step)
    }

    fn case(&self, what: &str) -> String {
        format!("{}: {what}", self.name)
    }

    /// A client segment (ack 7001): the verdict, and what the frame out must be.
    fn send(&self, what: &str, flags: u8, seq: u32, payload: &[u8], verdict: u32, out: Out) -> Step<Bench> {
        let f = Frame::tcp(self.flow, flags).seq_ack(seq, 7001).payload(payload);
        packet(self.case(what), Client, f.bytes(), verdict, out)
    }

    /// A client segment redirected to the backend, its frame out passing `check`.
    fn sent(
        &self,
        what: &str,
        flags: u8,
        seq: u32,
        payload: &[u8],
        check: impl Fn(&Parsed) + Send + 'static,
    ) -> Step<Bench> {
        self.send(what, flags, seq, payload, XDP_REDIRECT, parsed(move |p, _| check(p)))
    }

    /// A backend segment towards the client (seq 7000): redirected with valid checksums, its
    /// frame out passing `check`.
    fn reply(
        &self,
        what: &str,
        flags: u8,
        ack: u32,
        options: &[u8],
        check: impl Fn(&Parsed) + Send + 'static,
    ) -> Step<Bench> {
        let (syn, options) = (self.case("SYN"), options.to_vec());
        packet(
            self.case(what),
            Backend,
            from(move |s: &Seen| {
                let (snat, snat_port, backend, bport) = s.parsed(&syn).flow;
                let f =
                    Frame::tcp(Flow::new(backend, bport, snat, snat_port), flags).seq_ack(7000, ack).options(&options);
                Frame { dst_mac: s.b_mac, ..f }.bytes()
            }),
            XDP_REDIRECT,
            parsed(move |p, _| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums of the backend's segment after rewriting: {p:?}");
                check(p)
            }),
        )
    }
}

pub fn proxy_v2_tcp_header_seq_ack_sack_mss() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![pp_listener(vip, 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V2)]);
    let hdr = v2_header(CLIENT.into(), 40000, vip, 80, false);
    let len = hdr.len() as u32;
    assert_eq!(len, 28);
    let get = b"GET / HTTP/1.0\r\n\r\n";
    let (c, open) = Conn::open("first", Flow::new(CLIENT, 40000, VIP, 80), 5000, &syn_options(1460));
    let (h1, h2) = (hdr.clone(), hdr.clone());
    let opts = sack_options(&[(5001 + len + 100, 5001 + len + 200), (5001 + len + 300, 5001 + len + 400)]);
    let ts = opts[..12].to_vec();
    let (c2, open2) = Conn::open("second", Flow::new(CLIENT, 40001, VIP, 80), 0xffff_fff0, &[]);
    let steps = vec![
        open,
        // SYN-ACK: MSS clamped by the header's length, ack (ISN+1) unchanged.
        c.reply("SYN-ACK", SYN | ACK, 5001, &syn_options(1460), move |p| {
            assert_eq!(mss_of(&p.tcp_options), Some(1460 - 28), "MSS clamp");
            assert_eq!(p.ack, 5001);
            assert_eq!(p.flow, (vip, 80, IpAddr::V4(CLIENT), 40000));
        }),
        // The handshake's final ACK (seq ISN+1, no data) carries the header: server-first
        // protocols get it before the server speaks.
        c.sent("final ACK of the handshake", ACK, 5001, b"", move |p| {
            assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after insertion: {p:?}");
            assert_eq!((p.seq, p.payload.clone()), (5001, h1.clone()), "header at ISN+1");
            assert_eq!(p.ip_len, 20 + 20 + 28);
            assert_eq!((p.flow.2, p.flow.3), (IpAddr::V4(B1), 8080));
        }),
        // The first data segment, and its retransmission, before the backend acknowledged
        // the header: each carries the same header in front of the data.
        c.sent("first data segment", ACK | PSH, 5001, get, move |first| {
            assert!(first.l4_csum_ok && first.ip_csum_ok, "{first:?}");
            assert_eq!(first.payload, [h2.clone(), get.to_vec()].concat());
            assert_eq!(first.seq, 5001);
        }),
        c.send(
            "its retransmission",
            ACK | PSH,
            5001,
            get,
            XDP_REDIRECT,
            raw(|again, s| {
                assert_eq!(
                    again,
                    s.frame("first: first data segment"),
                    "a retransmission carries byte-identical header and data"
                )
            }),
        ),
        // The backend acknowledges part of the header only: the client sees nothing acked.
        c.reply("ack inside the header", ACK, 5001 + 10, &[], |p| assert_eq!(p.ack, 5001)),
        // Now the header and 18 bytes of data: the client sees its 18 bytes acknowledged.
        c.reply("ack past the header", ACK, 5001 + len + 18, &[], |p| {
            assert_eq!(p.ack, 5001 + 18, "ack moves down by the header length")
        }),
        // After the backend holds the header, a retransmission of the first segment and any
        // later segment are only shifted.
        c.sent("first segment again, header acknowledged", ACK | PSH, 5001, get, move |p| {
            assert!(p.l4_csum_ok, "{p:?}");
            assert_eq!((p.seq, p.payload.clone()), (5001 + len, get.to_vec()));
        }),
        c.sent("later data", ACK | PSH, 5019, b"more", move |p| {
            assert!(p.l4_csum_ok);
            assert_eq!((p.seq, p.payload.clone()), (5019 + len, b"more".to_vec()));
        }),
        c.sent("pure ACK", ACK, 5023, b"", move |p| {
            assert_eq!((p.seq, p.payload.len()), (5023 + len, 0), "pure ACKs are shifted, not given a header")
        }),
        // SACK blocks from the backend move down too (timestamps untouched).
        c.reply("SACK", ACK, 5001 + len + 50, &opts, move |p| {
            assert_eq!(p.ack, 5051);
            assert_eq!(sack_blocks(&p.tcp_options), vec![(5101, 5201), (5301, 5401)]);
            assert_eq!(&p.tcp_options[..12], &ts[..], "timestamps untouched");
        }),
        // A D-SACK of a duplicate header maps to the first data byte.
        c.reply("D-SACK of the header", ACK, 5001 + len + 50, &sack_options(&[(5001, 5001 + len)]), |p| {
            assert_eq!(sack_blocks(&p.tcp_options), vec![(5001, 5001)])
        }),
        // A client FIN and RST after the header: shifted.
        c.sent("FIN", FIN | ACK, 5100, b"", move |p| assert_eq!(p.seq, 5100 + len)),
        // A SYN-ACK without options (SYN without options on a second connection).
        open2,
        c2.reply("SYN-ACK without options", SYN | ACK, 0xffff_fff1, &[], |p| {
            assert!(p.tcp_options.is_empty() && p.ack == 0xffff_fff1)
        }),
        // Sequence numbers wrap: ISN+1+len past 2^32.
        c2.sent("data", ACK | PSH, 0xffff_fff1, b"x", |p| assert_eq!((p.seq, p.payload.len()), (0xffff_fff1, 29))),
        c2.reply("ack past 2^32", ACK, 0xffff_fff1u32.wrapping_add(29), &[], |p| assert_eq!(p.ack, 0xffff_fff2)),
        c2.sent("later data past 2^32", ACK | PSH, 0xffff_fff2, b"y", |p| {
            assert_eq!(p.seq, 0xffff_fff2u32.wrapping_add(28));
            assert!(p.l4_csum_ok);
        }),
        then("counters", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            assert_eq!(stats.packets("pp_inserted"), 4, "{stats:?}");
            assert_eq!(stats.packets("drop_pp"), 0);
        }),
    ];
    Fixture::new(m, steps)
}

pub fn proxy_v1_and_ipv6_header_bytes() -> Fixture {
    let vip6 = v6("2001:db8:100::10");
    let client6 = v6("2001:db8::2");
    let b6 = (IpAddr::V6(v6("2001:db8:1::2")), 8080, 1);
    let m = model(vec![
        pp_listener(IpAddr::V4(VIP), 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V1),
        pp_listener(IpAddr::V6(vip6), 80, Protocol::Tcp, &[b6], ProxyProtocol::V1),
        pp_listener(IpAddr::V6(vip6), 81, Protocol::Tcp, &[b6], ProxyProtocol::V2),
    ]);
    let mut steps = Vec::new();
    // v1 over IPv4; clients whose header has an odd and an even length (the payload changes
    // byte lanes in the checksum when it is odd).
    for (client, sport) in [(Ipv4Addr::new(198, 18, 0, 2), 40000u16), (Ipv4Addr::new(198, 18, 0, 23), 5)] {
        let (c, open) = Conn::open(
            &format!("v1 from {client}:{sport}"),
            Flow::new(client, sport, VIP, 80),
            100,
            &syn_options(1460),
        );
        let hdr = v1_header(client.into(), sport, VIP.into(), 80);
        let hl = hdr.len() as u32;
        steps.extend([
            open,
            c.reply("SYN-ACK", SYN | ACK, 101, &syn_options(1460), move |p| {
                assert_eq!(mss_of(&p.tcp_options), Some(1460 - hl as u16))
            }),
            c.sent("data", ACK | PSH, 101, b"hello, odd and even\n", move |p| {
                assert!(p.ip_csum_ok && p.l4_csum_ok, "{hl} bytes of header: {p:?}");
                assert_eq!(
                    p.payload,
                    [hdr.clone(), b"hello, odd and even\n".to_vec()].concat(),
                    "{}",
                    String::from_utf8_lossy(&p.payload)
                );
            }),
            c.reply("ack", ACK, 101 + hl + 20, &[], |p| assert_eq!(p.ack, 121)),
            c.sent("later data", ACK | PSH, 121, b"z", move |p| {
                assert_eq!(p.seq, 121 + hl);
                assert!(p.l4_csum_ok);
            }),
        ]);
    }
    // v1 and v2 over IPv6.
    for (port, want) in [
        (80u16, v1_header(client6.into(), 50000, vip6.into(), 80)),
        (81, v2_header(client6.into(), 50000, vip6.into(), 81, false)),
    ] {
        let (c, open) =
            Conn::open(&format!("IPv6 to port {port}"), Flow::new(client6, 50000, vip6, port), 77, &syn_options(1440));
        let wl = want.len();
        steps.extend([
            open,
            c.reply("SYN-ACK", SYN | ACK, 78, &syn_options(1440), move |p| {
                assert_eq!(mss_of(&p.tcp_options), Some(1440 - wl as u16))
            }),
            c.sent("final ACK of the handshake", ACK, 78, b"", move |p| {
                assert!(p.l4_csum_ok, "{p:?}");
                assert_eq!(p.payload, want, "{}", String::from_utf8_lossy(&p.payload));
                assert_eq!(p.ip_len, 40 + 20 + wl);
            }),
        ]);
    }
    assert_eq!(
        v1_header(client6.into(), 50000, vip6.into(), 80),
        b"PROXY TCP6 2001:db8:0:0:0:0:0:2 2001:db8:100:0:0:0:0:10 50000 80\r\n"
    );
    Fixture::new(m, steps)
}

pub fn proxy_udp_datagrams_get_a_v2_header_replies_do_not() -> Fixture {
    let vip6 = v6("2001:db8:100::10");
    let client6 = v6("2001:db8::2");
    let m = model(vec![
        pp_listener(IpAddr::V4(VIP), 53, Protocol::Udp, &[be(B1, 5353, 1)], ProxyProtocol::V2),
        // v1 asked: UDP still gets v2.
        pp_listener(
            IpAddr::V6(vip6),
            53,
            Protocol::Udp,
            &[(IpAddr::V6(v6("2001:db8:1::2")), 5353, 1)],
            ProxyProtocol::V1,
        ),
    ]);
    let mut steps = Vec::new();
    for (client, vip) in [(IpAddr::V4(CLIENT), IpAddr::V4(VIP)), (IpAddr::V6(client6), IpAddr::V6(vip6))] {
        let hdr = v2_header(client, 41000, vip, 53, true);
        for i in 0..3u8 {
            let hdr = hdr.clone();
            steps.push(packet(
                format!("{client}: datagram {i}"),
                Client,
                Frame::udp(Flow::new(client, 41000, vip, 53)).payload(&[b'q', i]).bytes(),
                XDP_REDIRECT,
                parsed(move |p, _| {
                    assert!(p.ip_csum_ok && p.l4_csum_ok && p.l4_csum != 0, "{p:?}");
                    assert_eq!(p.payload, [hdr.clone(), vec![b'q', i]].concat(), "every datagram");
                }),
            ));
        }
        // The backend's reply goes back as it was sent.
        let last = format!("{client}: datagram 2");
        steps.push(packet(
            format!("{client}: the backend's reply"),
            Backend,
            from(move |s| {
                let (snat, sport, b, _) = s.parsed(&last).flow;
                Frame { dst_mac: s.b_mac, ..Frame::udp(Flow::new(b, 5353, snat, sport)).payload(b"answer") }.bytes()
            }),
            XDP_REDIRECT,
            parsed(move |p, _| {
                assert!(p.l4_csum_ok);
                assert_eq!((p.flow, p.payload.clone()), ((vip, 53, client, 41000), b"answer".to_vec()));
            }),
        ));
    }
    // IPv4 without a UDP checksum stays without one.
    let mut f = Frame::udp(Flow::new(CLIENT, 41001, VIP, 53)).payload(b"nocsum");
    f.udp_no_csum = true;
    // A fragmented datagram cannot grow: dropped and counted.
    let mut frag = Frame::udp(Flow::new(CLIENT, 41002, VIP, 53)).payload(&[1u8; 32]);
    frag.frag_off = 0x2000;
    steps.extend([
        packet(
            "IPv4 without a UDP checksum",
            Client,
            f.bytes(),
            XDP_REDIRECT,
            parsed(|p, _| assert_eq!((p.l4_csum, p.payload.len()), (0, 28 + 6))),
        ),
        packet("a first fragment", Client, frag.with_l3_payload(&frag.l4()[..24]), XDP_DROP, Out::Any),
        then("counters", |t: &mut Bench, _| {
            let stats = t.dp.stats().unwrap();
            assert_eq!((stats.packets("pp_inserted"), stats.packets("drop_pp")), (7, 1), "{stats:?}");
        }),
    ]);
    Fixture::new(m, steps)
}

pub fn proxy_malformed_options_and_toggling() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let on = model(vec![pp_listener(vip, 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V2)]);
    let off = model(vec![pp_listener(vip, 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::Off)]);
    let len = 28u32;
    let (c, open) = Conn::open("on", Flow::new(CLIENT, 42000, VIP, 80), 1, &syn_options(1460));
    let mut steps = vec![
        open,
        c.reply("SYN-ACK", SYN | ACK, 2, &syn_options(1460), move |p| {
            assert_eq!((mss_of(&p.tcp_options), p.ack), (Some(1460 - len as u16), 2))
        }),
        c.send("data", ACK | PSH, 2, b"data", XDP_REDIRECT, Out::Any),
    ];
    // Backend segments with broken or odd options: forwarded, checksums right, never a crash.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("option length 0", vec![8, 0, 1, 1]),
        ("option longer than the header", vec![1, 1, 5, 30, 0, 0, 0, 0]),
        ("SACK of odd length", vec![5, 7, 0, 0, 0, 0, 0, 1]),
        ("EOL first", vec![0, 5, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        ("40 NOPs", vec![1; 40]),
        ("unknown kinds", vec![99, 4, 1, 2, 254, 6, 1, 2, 3, 4, 1, 1]),
    ];
    for (name, opts) in cases {
        steps.push(c.reply(name, ACK, 2 + len + 4, &opts, move |p| assert_eq!(p.ack, 6, "{name}")));
    }
    // A SACK behind more options than the walk covers is blanked, never passed unshifted.
    let mut many = vec![1u8; 24];
    many.extend_from_slice(&[5, 10]);
    many.extend_from_slice(&(2 + len + 100).to_be_bytes());
    many.extend_from_slice(&(2 + len + 200).to_be_bytes());
    steps.push(c.reply("a SACK behind 24 NOPs", ACK, 2 + len + 4, &many, |p| {
        assert!(sack_blocks(&p.tcp_options).iter().all(|b| *b == (102, 202)), "{:?}", p.tcp_options)
    }));
    // A client segment at ISN+1 with a data offset below 5: dropped and counted.
    let (c2, open2) = Conn::open("bad data offset", Flow::new(CLIENT, 42001, VIP, 80), 1, &[]);
    // (It acknowledges the backend's SYN-ACK: it completes the handshake and reaches the
    // PROXY protocol program.)
    let mut bad = Frame::tcp(c2.flow, ACK).seq_ack(2, 7001).payload(b"x").bytes();
    bad[14 + 20 + 12] = 4 << 4;
    let (c3, open3) = Conn::open("after off", Flow::new(CLIENT, 42002, VIP, 80), 1, &[]);
    steps.extend([
        open2,
        c2.reply("SYN-ACK", SYN | ACK, 2, &[], |p| assert_eq!(p.ack, 2)),
        packet("bad data offset: data offset 4 at ISN+1", Client, bad, XDP_DROP, Out::Any),
        then("counted", |t: &mut Bench, _| assert_eq!(t.dp.stats().unwrap().packets("drop_pp"), 1)),
        // Turning the annotation off affects new connections only.
        then("PROXY protocol off", move |t: &mut Bench, _| t.dp.apply(&off).unwrap()),
        c.sent("still shifted", ACK | PSH, 6, b"still shifted", move |p| {
            assert_eq!(p.seq, 6 + len, "the established flow keeps its framing")
        }),
        open3,
        c3.reply("SYN-ACK", SYN | ACK, 2, &syn_options(1460), |p| {
            assert_eq!(mss_of(&p.tcp_options), Some(1460), "no header, no MSS clamp")
        }),
        c3.sent("plain", ACK | PSH, 2, b"plain", |p| {
            assert_eq!((p.seq, p.payload.clone()), (2, b"plain".to_vec()), "a new flow gets no header")
        }),
    ]);
    Fixture::new(on, steps)
}

/// A client's own `PROXY` line, sent where no flow exists (no handshake): the backend would
/// take it for the load balancer's header. Only a SYN opens a flow, so it is dropped, never
/// forwarded; on a real connection the datapath's header comes first.
pub fn proxy_forged_header_without_a_flow_is_dropped() -> Fixture {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![
        pp_listener(vip, 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V1),
        pp_listener(vip, 81, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V2),
    ]);
    let forged = [&b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..], b"GET / HTTP/1.0\r\n\r\n"].concat();
    let mut steps: Vec<Step<Bench>> = Vec::new();
    for port in [80u16, 81] {
        let flow = Flow::new(CLIENT, 43000, VIP, port);
        for (what, flags) in [("ACK", ACK), ("ACK and PSH", ACK | PSH)] {
            let f = Frame::tcp(flow, flags).seq_ack(1, 7001).payload(&forged);
            steps.push(packet(
                format!("port {port}: a forged PROXY line, {what}, no flow"),
                Client,
                f.bytes(),
                XDP_DROP,
                Out::Any,
            ));
        }
    }
    steps.push(then("dropped, none forwarded", |t: &mut Bench, _| {
        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.packets("drop_no_flow"), 4, "{stats:?}");
        assert_eq!(
            (stats.packets("fwd_to_backend"), stats.packets("pp_inserted"), stats.packets("new_flows")),
            (0, 0, 0)
        );
        for l in ["198.18.100.10:80/tcp", "198.18.100.10:81/tcp"] {
            assert_eq!((stats.listeners[l].no_flow_drops, stats.listeners[l].packets), (2, 0), "{l}");
        }
    }));
    // The same 4-tuple after a real handshake: the backend reads the datapath's header
    // first, the client's line after it as data.
    let (c, open) = Conn::open("real", Flow::new(CLIENT, 43000, VIP, 80), 100, &[]);
    let want = [v1_header(CLIENT.into(), 43000, vip, 80), forged.clone()].concat();
    steps.extend([
        open,
        c.reply("SYN-ACK", SYN | ACK, 101, &[], |p| assert_eq!(p.ack, 101)),
        c.sent("the same line after the handshake", ACK | PSH, 101, &forged, move |p| {
            assert_eq!(p.payload, want, "{}", String::from_utf8_lossy(&p.payload))
        }),
    ]);
    Fixture::new(m, steps)
}
