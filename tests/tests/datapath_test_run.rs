//! The XDP program through BPF_PROG_TEST_RUN: crafted frames in, verdict and exact bytes out.
//!
//! Each test loads the datapath in a namespace of its own with real routes and neighbours,
//! so `bpf_fib_lookup` answers as it would on a node: interface `a` faces clients
//! (198.18.0.1/24, 2001:db8::1/64), interface `b` faces backends (198.18.1.1/24,
//! 2001:db8:1::1/64) with static neighbours for the backends.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use ipnet::IpNet;
use lb_tests::{
    packet::{
        ACK, ETH_ARP, ETH_IPV6, ETH_VLAN, FIN, Flow, Frame, PSH, RST, SYN, eth, ipv4_header, parse,
        reassemble_udp_fragments,
    },
    privileged,
    proxy_frames::{mss_of, sack_blocks, sack_options, syn_options, v1_header, v2_header},
    testbed::{Bed, listener, mac_of, model, pin_to_cpu0, run_frame},
};
use lb_userspace::{
    dataplane::{Dataplane, Options, conntrack::SweepOptions, maglev},
    model::{Acl, AclBinding, AclMode, L4Listener, Model, ObjectRef, Protocol, ProxyProtocol, Scheduler},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const B3: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 4);
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn be(a: Ipv4Addr, port: u16, weight: u32) -> (IpAddr, u16, u32) {
    (IpAddr::V4(a), port, weight)
}

/// The loaded datapath in its namespace.
struct Bench {
    dp: Dataplane,
    a: u32,
    b: u32,
    b_mac: [u8; 6],
}

impl Bench {
    /// Run one frame as if received on `ifindex`: (verdict, frame after the program).
    fn run(&mut self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        let (verdict, out, _) = run_frame(self.dp.program().unwrap(), frame, ifindex, 1);
        (verdict, out)
    }

    /// A client frame in on `a`: (verdict, backend address, SNAT port, parsed output).
    fn client(&mut self, f: &Frame) -> (u32, lb_tests::packet::Parsed) {
        let (v, out) = self.run(&f.bytes(), self.a);
        let p = if v == XDP_REDIRECT { parse(&out) } else { parse_or_empty(&out) };
        (v, p)
    }

    /// The backend a new TCP flow from `client:sport` to `vip:port` lands on.
    fn new_flow_backend(&mut self, client: IpAddr, sport: u16, vip: IpAddr, port: u16) -> IpAddr {
        let (v, p) = self.client(&Frame::tcp(Flow::new(client, sport, vip, port), SYN));
        assert_eq!(v, XDP_REDIRECT, "new flow {client}:{sport} → {vip}:{port}");
        assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
        p.flow.2
    }
}

fn parse_or_empty(out: &[u8]) -> lb_tests::packet::Parsed {
    if out.len() >= 54 { parse(out) } else { parse(&Frame::tcp(Flow::new(CLIENT, 1, VIP, 1), 0).bytes()) }
}

/// Build the namespace, load the datapath with `m`, run `f` on a thread inside it (pinned to
/// CPU 0, so per-CPU round robin is strictly sequential).
fn with_datapath(test: &str, m: Model, f: impl FnOnce(&mut Bench) + Send + 'static) {
    with_datapath_opts(test, Options::default(), m, f)
}

fn with_datapath_opts(test: &str, opts: Options, m: Model, f: impl FnOnce(&mut Bench) + Send + 'static) {
    if !privileged(test) {
        return;
    }
    let bed = Bed::new().unwrap();
    let (ai, bi, b_mac) = (bed.a, bed.b, bed.b_mac);
    bed.ns.run(move || {
        pin_to_cpu0();
        let mut dp = Dataplane::load(&opts).expect("load datapath");
        dp.add_port(ai, Some(Ipv4Addr::new(198, 18, 0, 1)), Some(v6("2001:db8::1"))).unwrap();
        dp.add_port(bi, Some(SNAT), Some(v6("2001:db8:1::1"))).unwrap();
        dp.apply(&m).unwrap();
        f(&mut Bench { dp, a: ai, b: bi, b_mac });
    });
}

#[test]
fn full_nat_both_ways_and_everything_else_untouched() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1), be(B2, 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)]),
        listener(vip, 90, Protocol::Tcp, Scheduler::Rr, &[]),
    ]);
    with_datapath("full_nat_both_ways_and_everything_else_untouched", m, move |t| {
        let flow = Flow::new(CLIENT, 40000, VIP, 80);
        let syn = Frame::tcp(flow, SYN);
        let (client_mac, our_mac) = (syn.src_mac, syn.dst_mac);

        // A TCP SYN to a listener: full NAT towards a backend, out of the backend interface.
        let (verdict, out) = t.run(&syn.bytes(), t.a);
        assert_eq!(verdict, XDP_REDIRECT, "SYN to VIP:80");
        let p = parse(&out);
        assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after NAT: {p:?}");
        let (src, sport, dst, dport) = p.flow;
        assert_eq!(src, IpAddr::V4(SNAT), "SNAT to the egress interface's address");
        assert!((61000..=65535).contains(&sport), "SNAT port {sport} in the default range");
        assert!(dst == IpAddr::V4(B1) || dst == IpAddr::V4(B2));
        assert_eq!(dport, 8080);
        assert_eq!(p.src_mac, t.b_mac, "source MAC is the egress interface's");
        assert_eq!(p.dst_mac, mac_of(dst), "destination MAC from the neighbour table");
        assert_eq!(out.len(), syn.bytes().len());
        let first = (dst, sport);

        // Data on the same flow: same backend, same SNAT port (conntrack), payload intact.
        let data = Frame::tcp(flow, ACK | PSH).payload(b"GET / HTTP/1.1\r\n\r\n");
        let (verdict, out) = t.run(&data.bytes(), t.a);
        assert_eq!(verdict, XDP_REDIRECT);
        let p = parse(&out);
        assert!(p.ip_csum_ok && p.l4_csum_ok);
        assert_eq!((p.flow.2, p.flow.1), first, "flow pinned in conntrack");
        assert_eq!(p.payload, b"GET / HTTP/1.1\r\n\r\n");

        // The backend's reply: reverse NAT to VIP:80 → client, back where the client came from.
        let reply = Frame {
            dst_mac: t.b_mac,
            src_mac: mac_of(first.0),
            ..Frame::tcp(Flow::new(first.0, 8080, SNAT, first.1), SYN | ACK)
        };
        let (verdict, out) = t.run(&reply.bytes(), t.b);
        assert_eq!(verdict, XDP_REDIRECT, "reply goes out of the client interface");
        let p = parse(&out);
        assert!(p.ip_csum_ok && p.l4_csum_ok);
        assert_eq!(p.flow, (vip, 80, IpAddr::V4(CLIENT), 40000));
        assert_eq!((p.dst_mac, p.src_mac), (client_mac, our_mac), "MACs the client's frames carried");

        // UDP to a listener on another port; a zero UDP checksum stays zero.
        let u = Frame::udp(Flow::new(CLIENT, 40000, VIP, 53)).payload(b"query");
        let (v, out) = t.run(&u.bytes(), t.a);
        assert_eq!(v, XDP_REDIRECT);
        let p = parse(&out);
        assert!(p.ip_csum_ok && p.l4_csum_ok && p.l4_csum != 0, "{p:?}");
        assert_eq!((p.flow.0, p.flow.2, p.flow.3), (IpAddr::V4(SNAT), IpAddr::V4(B1), 5353));
        let mut u0 = Frame::udp(Flow::new(CLIENT, 40100, VIP, 53)).payload(b"query");
        u0.udp_no_csum = true;
        let (v, out) = t.run(&u0.bytes(), t.a);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!(parse(&out).l4_csum, 0, "no UDP checksum stays none");

        // IPv4 options: the L4 header is found after them, options untouched.
        let mut opt = Frame::tcp(Flow::new(CLIENT, 40200, VIP, 80), SYN);
        opt.ip_options = vec![1, 1, 1, 0];
        let (v, out) = t.run(&opt.bytes(), t.a);
        assert_eq!(v, XDP_REDIRECT);
        let p = parse(&out);
        assert!(p.ip_csum_ok && p.l4_csum_ok);
        assert_eq!(p.ip_options, vec![1, 1, 1, 0]);
        assert_eq!(p.flow.3, 8080);

        // A listener without backends drops (and counts) instead of leaking to the kernel.
        let (v, _) = t.run(&Frame::tcp(Flow::new(CLIENT, 40000, VIP, 90), SYN).bytes(), t.a);
        assert_eq!(v, XDP_DROP);

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
        let cases: Vec<(&str, Vec<u8>)> = vec![
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
        ];
        for (name, frame) in cases {
            let (v, out) = t.run(&frame, t.a);
            assert_eq!(v, XDP_PASS, "{name}");
            assert_eq!(out, frame, "{name}: bytes untouched");
        }

        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.packets("new_flows"), 4, "{stats:?}");
        assert_eq!(stats.packets("fwd_to_client"), 1);
        assert_eq!(stats.packets("drop_no_backend"), 1);
        assert_eq!(stats.packets("pass_vlan"), 1);
        let l80 = stats.listeners["198.18.100.10:80/tcp"];
        assert_eq!((l80.new_flows, l80.packets, l80.reply_packets), (2, 3, 1), "{l80:?}");
        assert_eq!(stats.listeners["198.18.100.10:90/tcp"].no_backend_drops, 1);
    });
}

#[test]
fn schedulers_rr_wrr_sch_tch() {
    let vip = IpAddr::V4(VIP);
    let three = [be(B1, 8080, 1), be(B2, 8080, 1), be(B3, 8080, 1)];
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &three),
        listener(vip, 81, Protocol::Tcp, Scheduler::Wrr, &[be(B1, 8080, 30), be(B2, 8080, 10), be(B3, 8080, 0)]),
        listener(vip, 82, Protocol::Tcp, Scheduler::Sch, &three),
        listener(vip, 83, Protocol::Tcp, Scheduler::Tch, &three),
    ]);
    with_datapath("schedulers_rr_wrr_sch_tch", m, move |t| {
        let count = |picks: &[IpAddr]| {
            let mut m: BTreeMap<IpAddr, usize> = BTreeMap::new();
            for p in picks {
                *m.entry(*p).or_default() += 1;
            }
            m
        };
        // rr: strict rotation over the three backends.
        let rr: Vec<IpAddr> = (0..9).map(|i| t.new_flow_backend(CLIENT.into(), 30000 + i, vip, 80)).collect();
        assert_eq!(count(&rr).values().copied().collect::<Vec<_>>(), vec![3, 3, 3], "{rr:?}");
        for w in rr.windows(3) {
            assert!(w[0] != w[1] && w[1] != w[2] && w[0] != w[2], "rotation: {rr:?}");
        }
        // wrr 30:10:0 — exactly 3:1 over whole rings, nothing to the weight-0 backend.
        let wrr: Vec<IpAddr> = (0..8).map(|i| t.new_flow_backend(CLIENT.into(), 31000 + i, vip, 81)).collect();
        let c = count(&wrr);
        assert_eq!(
            (c.get(&IpAddr::V4(B1)), c.get(&IpAddr::V4(B2)), c.get(&IpAddr::V4(B3))),
            (Some(&6), Some(&2), None),
            "{wrr:?}"
        );
        // sch: one client lands on one backend whatever its port — the backend user space
        // predicts from the same Maglev table and flow hash.
        let table = maglev::build_default(&three);
        let predict = |client: Ipv4Addr, sport: u16, port: u16, tuple: bool| {
            let key = lb_common::FlowKey {
                src: [u32::from(client).to_be(), 0, 0, 0],
                dst: [u32::from(VIP).to_be(), 0, 0, 0],
                sport: sport.to_be(),
                dport: port.to_be(),
                proto: lb_common::PROTO_TCP,
                family: lb_common::FAMILY_V4,
                _pad: [0; 2],
            };
            three[table[(lb_common::flow_hash(&key, tuple) % lb_common::MAGLEV_M) as usize]].0
        };
        let mut per_client = BTreeMap::new();
        for c in 2..40u8 {
            let client = Ipv4Addr::new(198, 18, 0, c);
            let got: Vec<IpAddr> = (0..4).map(|i| t.new_flow_backend(client.into(), 32000 + i, vip, 82)).collect();
            assert!(got.iter().all(|g| *g == got[0]), "sch keeps {client} on one backend: {got:?}");
            assert_eq!(got[0], predict(client, 0, 82, false), "kernel and user space agree for {client}");
            per_client.insert(client, got[0]);
        }
        assert_eq!(count(&per_client.values().copied().collect::<Vec<_>>()).len(), 3, "sch spreads clients");
        // tch: one client's ports spread over the backends, each where user space predicts.
        let tch: Vec<IpAddr> = (0..30)
            .map(|i| {
                let got = t.new_flow_backend(CLIENT.into(), 33000 + i, vip, 83);
                assert_eq!(got, predict(CLIENT, 33000 + i, 83, true));
                got
            })
            .collect();
        assert_eq!(count(&tch).len(), 3, "tch spreads one client's ports: {tch:?}");
    });
}

#[test]
fn acl_white_black_and_empty_lists() {
    let vip = IpAddr::V4(VIP);
    let mut white = listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    white.acl = Some(AclBinding { acl: "office".into(), mode: AclMode::White });
    let mut black = listener(vip, 81, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    black.acl = Some(AclBinding { acl: "office".into(), mode: AclMode::Black });
    let mut empty_white = listener(vip, 82, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]);
    empty_white.acl = Some(AclBinding { acl: "empty".into(), mode: AclMode::White });
    let mut m = model(vec![white, black, empty_white]);
    let acl = |name: &str, nets: &[&str]| Acl {
        source: ObjectRef { kind: "AccessControlList".into(), namespace: String::new(), name: name.into() },
        entries: nets.iter().map(|n| n.parse::<IpNet>().unwrap()).collect(),
    };
    m.acls.insert("office".into(), acl("office", &["198.18.0.0/30", "198.18.0.64/26", "2001:db8::/64"]));
    m.acls.insert("empty".into(), acl("empty", &[]));
    let m2 = {
        let mut m2 = m.clone();
        m2.acls.insert("office".into(), acl("office", &["198.18.0.9/32"]));
        m2
    };
    with_datapath("acl_white_black_and_empty_lists", m, move |t| {
        let verdict = |t: &mut Bench, c: Ipv4Addr, sport: u16, port: u16| {
            t.client(&Frame::tcp(Flow::new(c, sport, VIP, port), SYN)).0
        };
        let (inside, inside2, outside) =
            (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 18, 0, 70), Ipv4Addr::new(198, 18, 0, 9));
        assert_eq!(verdict(t, inside, 1000, 80), XDP_REDIRECT, "whitelisted /30");
        assert_eq!(verdict(t, inside2, 1000, 80), XDP_REDIRECT, "whitelisted /26");
        assert_eq!(verdict(t, outside, 1000, 80), XDP_DROP, "not on the whitelist");
        assert_eq!(verdict(t, inside, 1001, 81), XDP_DROP, "blacklisted");
        assert_eq!(verdict(t, outside, 1001, 81), XDP_REDIRECT, "not on the blacklist");
        assert_eq!(verdict(t, outside, 1002, 82), XDP_REDIRECT, "an empty whitelist forwards all");
        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.packets("drop_acl"), 2);
        assert_eq!(stats.listeners["198.18.100.10:80/tcp"].acl_drops, 1);
        // An edit applies to the next new flow, without reloading anything else.
        t.dp.apply(&m2).unwrap();
        assert_eq!(verdict(t, inside, 1003, 80), XDP_DROP, "removed from the whitelist");
        assert_eq!(verdict(t, outside, 1003, 80), XDP_REDIRECT, "added to the whitelist");
        assert_eq!(verdict(t, outside, 1004, 81), XDP_DROP, "added to the blacklist");
    });
}

#[test]
fn session_persistence_holds_then_expires() {
    let vip = IpAddr::V4(VIP);
    let mut l = listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1), be(B2, 8080, 1)]);
    l.persistence_timeout = 1;
    with_datapath("session_persistence_holds_then_expires", model(vec![l]), move |t| {
        let first = t.new_flow_backend(CLIENT.into(), 20000, vip, 80);
        for i in 1..6 {
            assert_eq!(t.new_flow_backend(CLIENT.into(), 20000 + i, vip, 80), first, "persisted (rr would alternate)");
        }
        let other = t.new_flow_backend(Ipv4Addr::new(198, 18, 0, 3).into(), 20000, vip, 80);
        assert_ne!(other, first, "another client is scheduled normally");
        std::thread::sleep(Duration::from_millis(1300));
        let third = t.new_flow_backend(Ipv4Addr::new(198, 18, 0, 4).into(), 20000, vip, 80);
        let after = t.new_flow_backend(CLIENT.into(), 20100, vip, 80);
        assert_eq!(after, other, "expired: scheduled again (rr continues after {third})");
        assert!(t.dp.stats().unwrap().packets("persist_hits") >= 5);
    });
}

#[test]
fn tcp_state_reopen_and_conntrack_sweep() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1), be(B2, 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)]),
    ]);
    with_datapath("tcp_state_reopen_and_conntrack_sweep", m, move |t| {
        let flow = Flow::new(CLIENT, 45000, VIP, 80);
        let first = t.new_flow_backend(CLIENT.into(), 45000, vip, 80);
        let (_, p) = t.client(&Frame::tcp(flow, ACK | PSH));
        assert_eq!(p.flow.2, first, "same flow");
        // A retransmitted SYN of an open flow keeps its backend.
        assert_eq!(t.new_flow_backend(CLIENT.into(), 45000, vip, 80), first);
        // Client closes (FIN) — then a new SYN on the same 4-tuple is a new connection.
        t.client(&Frame::tcp(flow, FIN | ACK));
        let reopened = t.new_flow_backend(CLIENT.into(), 45000, vip, 80);
        assert_ne!(reopened, first, "rescheduled (rr moves on)");
        assert_eq!(t.dp.stats().unwrap().packets("flow_reopened"), 1);

        // Sweep: a flow that saw a RST and an idle UDP flow go; an open TCP flow stays.
        t.client(&Frame::tcp(Flow::new(CLIENT, 45001, VIP, 80), SYN));
        t.client(&Frame::tcp(Flow::new(CLIENT, 45001, VIP, 80), RST));
        t.client(&Frame::udp(Flow::new(CLIENT, 45002, VIP, 53)));
        let report =
            t.dp.sweep(&SweepOptions {
                udp_timeout: Duration::ZERO,
                tcp_closed_timeout: Duration::ZERO,
                tcp_syn_timeout: Duration::from_secs(60),
            })
            .unwrap();
        assert_eq!((report.flows, report.expired), (3, 2), "{report:?}");
        let (_, p) = t.client(&Frame::tcp(flow, ACK));
        assert_eq!(p.flow.2, reopened, "the open flow survived the sweep");
    });
}

#[test]
fn ipv6_full_nat_with_extension_headers() {
    let vip = IpAddr::V6(v6("2001:db8:100::10"));
    let client = v6("2001:db8::2");
    let backends = [(IpAddr::V6(v6("2001:db8:1::2")), 8080, 1), (IpAddr::V6(v6("2001:db8:1::3")), 8080, 1)];
    let m = model(vec![
        listener(vip, 443, Protocol::Tcp, Scheduler::Rr, &backends),
        listener(vip, 443, Protocol::Udp, Scheduler::Sch, &backends),
    ]);
    with_datapath("ipv6_full_nat_with_extension_headers", m, move |t| {
        let flow = Flow::new(client, 50000, vip, 443);
        let mut syn = Frame::tcp(flow, SYN);
        syn.v6_ext = vec![(60, vec![0, 0, 1, 4, 0, 0, 0, 0])]; // destination options, PadN
        let (v, out) = t.run(&syn.bytes(), t.a);
        assert_eq!(v, XDP_REDIRECT);
        let p = parse(&out);
        assert!(p.l4_csum_ok, "{p:?}");
        assert_eq!(p.flow.0, IpAddr::V6(v6("2001:db8:1::1")), "SNAT to the egress interface's IPv6 address");
        assert!(backends.iter().any(|b| b.0 == p.flow.2) && p.flow.3 == 8080);
        assert_eq!(p.dst_mac, mac_of(p.flow.2));
        let reply = Frame {
            dst_mac: t.b_mac,
            ..Frame::tcp(Flow::new(p.flow.2, 8080, v6("2001:db8:1::1"), p.flow.1), SYN | ACK)
        };
        let (v, out) = t.run(&reply.bytes(), t.b);
        assert_eq!(v, XDP_REDIRECT);
        let r = parse(&out);
        assert!(r.l4_csum_ok);
        assert_eq!(r.flow, (vip, 443, IpAddr::V6(client), 50000));
        // UDP on the same VIP:port, IPv6 UDP always carries a checksum.
        let (v, out) = t.run(&Frame::udp(flow).payload(b"hi").bytes(), t.a);
        assert_eq!(v, XDP_REDIRECT);
        let u = parse(&out);
        assert!(u.l4_csum_ok && u.l4_csum != 0);
    });
}

#[test]
fn fragments_follow_their_first_fragment() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1), be(B2, 5353, 1)])]);
    with_datapath("fragments_follow_their_first_fragment", m, move |t| {
        // One UDP datagram of 8 + 32 bytes, cut after 24 bytes of L4 data.
        let mut whole = Frame::udp(Flow::new(CLIENT, 47000, VIP, 53)).payload(&[7u8; 32]);
        whole.ip_id = 0x4242;
        let l4 = whole.l4();
        let (head, tail) = l4.split_at(24);
        let mut first = whole.clone();
        first.frag_off = 0x2000; // MF
        let (v, out1) = t.run(&first.with_l3_payload(head), t.a);
        assert_eq!(v, XDP_REDIRECT, "first fragment opens the flow");
        let mut later = whole.clone();
        later.frag_off = 3; // offset 24 bytes, last
        let (v, out2) = t.run(&later.with_l3_payload(tail), t.a);
        assert_eq!(v, XDP_REDIRECT, "later fragment follows");
        // Both went to the same backend, addresses rewritten, IP checksums valid; the
        // reassembled datagram's UDP checksum is valid.
        let p = reassemble_udp_fragments(&out1, &out2, 0x4242);
        assert!(p.flow.2 == IpAddr::V4(B1) || p.flow.2 == IpAddr::V4(B2));
        assert!(p.l4_csum_ok, "reassembled UDP checksum after NAT: {p:?}");
        assert_eq!(p.flow.3, 5353);
        assert_eq!(t.dp.stats().unwrap().packets("fragments_fwd"), 1);
    });
}

/// An ICMP error (type 3 code 4, "fragmentation needed", MTU 1400) from `src` to `dst`
/// quoting `quoted` (an IPv4 packet without Ethernet header).
fn icmp_frag_needed(src: Ipv4Addr, dst: Ipv4Addr, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    icmp.extend_from_slice(quoted);
    let c = lb_tests::packet::finish(lb_tests::packet::sum16(&icmp, 0));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xcc], 0x0800);
    f.extend_from_slice(&ipv4_header(src, dst, 1, &[], 7, 0, icmp.len()));
    f.extend_from_slice(&icmp);
    f
}

/// (outer src, outer dst, quoted src:port, quoted dst:port) of an ICMP error, with every
/// checksum checked from scratch (outer IP, ICMP, quoted IP).
fn read_icmp(f: &[u8]) -> (Ipv4Addr, Ipv4Addr, (Ipv4Addr, u16), (Ipv4Addr, u16)) {
    use lb_tests::packet::{finish, sum16};
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

#[test]
fn icmp_errors_reach_the_right_side() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![
        listener(vip, 80, Protocol::Tcp, Scheduler::Rr, &[be(B1, 8080, 1)]),
        listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1)]),
    ]);
    with_datapath("icmp_errors_reach_the_right_side", m, move |t| {
        for (proto, port, bport) in [(6u8, 80u16, 8080u16), (17, 53, 5353)] {
            let flow = Flow::new(CLIENT, 40000, VIP, port);
            let first = if proto == 6 { Frame::tcp(flow, SYN) } else { Frame::udp(flow).payload(b"query") };
            let (v, sent) = t.run(&first.bytes(), t.a);
            assert_eq!(v, XDP_REDIRECT);
            let snat_port = parse(&sent).flow.1;
            // The backend side says our packet (SNAT → backend) was too big.
            let err = icmp_frag_needed(B1, SNAT, &sent[14..]);
            let (v, out) = t.run(&err, t.b);
            assert_eq!(v, XDP_REDIRECT, "proto {proto}: to the client");
            assert_eq!(read_icmp(&out), (VIP, CLIENT, (CLIENT, 40000), (VIP, port)), "proto {proto}");
            if proto == 17 {
                // The quoted UDP header's checksum was kept right too.
                let quoted = &out[34 + 8..];
                let udp = Frame::udp(flow).payload(b"query").l4();
                assert_eq!(&quoted[20..20 + udp.len()], &udp[..], "quoted datagram is the client's own");
            }
            // The client side says our reply (VIP → client) could not be delivered.
            let reply = Frame {
                dst_mac: t.b_mac,
                ..if proto == 6 {
                    Frame::tcp(Flow::new(B1, bport, SNAT, snat_port), SYN | ACK)
                } else {
                    Frame::udp(Flow::new(B1, bport, SNAT, snat_port))
                }
            };
            let (v, back) = t.run(&reply.bytes(), t.b);
            assert_eq!(v, XDP_REDIRECT);
            let err = icmp_frag_needed(CLIENT, VIP, &back[14..]);
            let (v, out) = t.run(&err, t.a);
            assert_eq!(v, XDP_REDIRECT, "proto {proto}: to the backend");
            assert_eq!(read_icmp(&out), (SNAT, B1, (B1, bport), (SNAT, snat_port)), "proto {proto}");
        }
        // An error about no flow of ours, and an ICMP echo, pass untouched.
        let stray = icmp_frag_needed(B1, SNAT, &Frame::tcp(Flow::new(SNAT, 1234, B1, 9999), SYN).bytes()[14..]);
        let (v, out) = t.run(&stray, t.b);
        assert_eq!((v, &out), (XDP_PASS, &stray));
        let mut echo = stray.clone();
        echo[34] = 8;
        let (v, _) = t.run(&echo, t.b);
        assert_eq!(v, XDP_PASS);
        assert_eq!(t.dp.stats().unwrap().packets("icmp_errors_fwd"), 4);
    });
}

#[test]
fn new_flows_still_work_when_conntrack_is_full() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![listener(vip, 53, Protocol::Udp, Scheduler::Rr, &[be(B1, 5353, 1), be(B2, 5353, 1)])]);
    let opts = Options { conntrack_entries: 64, ..Options::default() };
    with_datapath_opts("new_flows_still_work_when_conntrack_is_full", opts, m, move |t| {
        for sport in 1000..1600u16 {
            let (v, out) = t.run(&Frame::udp(Flow::new(CLIENT, sport, VIP, 53)).bytes(), t.a);
            assert_eq!(v, XDP_REDIRECT, "flow {sport} of 600 through a 64-flow table");
            assert!(parse(&out).l4_csum_ok);
        }
        assert_eq!(t.dp.stats().unwrap().packets("new_flows"), 600);
    });
}

/// An ICMPv6 "packet too big" (MTU 1280) from `src` to `dst` quoting `quoted` (an IPv6
/// packet without Ethernet header), with its pseudo-header checksum.
fn icmp6_too_big(src: Ipv6Addr, dst: Ipv6Addr, quoted: &[u8]) -> Vec<u8> {
    use lb_tests::packet::{finish, sum16};
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
    use lb_tests::packet::{finish, sum16};
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

#[test]
fn icmpv6_packet_too_big_reaches_the_right_side() {
    let vip6 = v6("2001:db8:100::10");
    let client = v6("2001:db8::2");
    let b1 = v6("2001:db8:1::2");
    let snat = v6("2001:db8:1::1");
    let m = model(vec![listener(IpAddr::V6(vip6), 443, Protocol::Tcp, Scheduler::Rr, &[(IpAddr::V6(b1), 8443, 1)])]);
    with_datapath("icmpv6_packet_too_big_reaches_the_right_side", m, move |t| {
        let (v, sent) = t.run(&Frame::tcp(Flow::new(client, 50000, vip6, 443), SYN).bytes(), t.a);
        assert_eq!(v, XDP_REDIRECT);
        let snat_port = parse(&sent).flow.1;
        let (v, out) = t.run(&icmp6_too_big(b1, snat, &sent[14..]), t.b);
        assert_eq!(v, XDP_REDIRECT, "to the client");
        assert_eq!(read_icmp6(&out), (vip6, client, (client, 50000), (vip6, 443)));
        let reply = Frame { dst_mac: t.b_mac, ..Frame::tcp(Flow::new(b1, 8443, snat, snat_port), SYN | ACK) };
        let (_, back) = t.run(&reply.bytes(), t.b);
        let (v, out) = t.run(&icmp6_too_big(client, vip6, &back[14..]), t.a);
        assert_eq!(v, XDP_REDIRECT, "to the backend");
        assert_eq!(read_icmp6(&out), (snat, b1, (b1, 8443), (snat, snat_port)));
    });
}

#[test]
fn ipv6_fragments_follow_their_first_fragment() {
    let vip6 = v6("2001:db8:100::10");
    let client = v6("2001:db8::2");
    let b1 = v6("2001:db8:1::2");
    let m = model(vec![listener(IpAddr::V6(vip6), 53, Protocol::Udp, Scheduler::Rr, &[(IpAddr::V6(b1), 5353, 1)])]);
    with_datapath("ipv6_fragments_follow_their_first_fragment", m, move |t| {
        let whole = Frame::udp(Flow::new(client, 47000, vip6, 53)).payload(&[9u8; 40]);
        let l4 = whole.l4();
        let (head, tail) = l4.split_at(24);
        let frag = |offset: u16, more: bool| {
            let mut f = whole.clone();
            let off_flags = (offset << 3) | more as u16;
            f.v6_ext = vec![(44, vec![0, 0, (off_flags >> 8) as u8, off_flags as u8, 0, 0, 0x42, 0x42])];
            f
        };
        let (v, out1) = t.run(&frag(0, true).with_l3_payload(head), t.a);
        assert_eq!(v, XDP_REDIRECT, "first fragment opens the flow");
        let (v, out2) = t.run(&frag(3, false).with_l3_payload(tail), t.a);
        assert_eq!(v, XDP_REDIRECT, "later fragment follows");
        let addrs = |f: &[u8]| {
            (
                Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap()),
                Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()),
            )
        };
        assert_eq!(addrs(&out1), (v6("2001:db8:1::1"), b1));
        assert_eq!(addrs(&out2), addrs(&out1), "same SNAT source and backend");
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
    });
}

// ---------------------------------------------------------------------------------------
// PROXY protocol: header bytes, seq/ack/SACK rewriting, MSS clamp, retransmissions, UDP.

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

/// One TCP connection through a PROXY listener, driven frame by frame.
struct PpConn {
    flow: Flow,
    backend: IpAddr,
    bport: u16,
    snat: IpAddr,
    snat_port: u16,
}

impl PpConn {
    /// Open with a SYN carrying `options`: the SYN goes through unchanged.
    fn open(t: &mut Bench, flow: Flow, isn: u32, options: &[u8]) -> PpConn {
        let syn = Frame::tcp(flow, SYN).seq_ack(isn, 0).options(options);
        let (v, p) = t.client(&syn);
        assert_eq!(v, XDP_REDIRECT, "SYN");
        assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
        assert_eq!(
            (p.seq, p.tcp_options.clone(), p.payload.len()),
            (isn, syn.tcp_options.clone(), 0),
            "the SYN is not touched"
        );
        PpConn { flow, backend: p.flow.2, bport: p.flow.3, snat: p.flow.0, snat_port: p.flow.1 }
    }

    /// A client segment: (verdict, parsed output).
    fn send(&self, t: &mut Bench, flags: u8, seq: u32, payload: &[u8]) -> (u32, lb_tests::packet::Parsed, Vec<u8>) {
        let f = Frame::tcp(self.flow, flags).seq_ack(seq, 7001).payload(payload);
        let (v, out) = t.run(&f.bytes(), t.a);
        let p = if v == XDP_REDIRECT { parse(&out) } else { parse_or_empty(&out) };
        (v, p, out)
    }

    /// A backend segment towards the client: (verdict, parsed output).
    fn reply(&self, t: &mut Bench, flags: u8, ack: u32, options: &[u8]) -> (u32, lb_tests::packet::Parsed) {
        let f = Frame {
            dst_mac: t.b_mac,
            ..Frame::tcp(Flow::new(self.backend, self.bport, self.snat, self.snat_port), flags)
                .seq_ack(7000, ack)
                .options(options)
        };
        let (v, out) = t.run(&f.bytes(), t.b);
        assert_eq!(v, XDP_REDIRECT, "backend → client");
        let p = parse(&out);
        assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums of the backend's segment after rewriting: {p:?}");
        (v, p)
    }
}

#[test]
fn proxy_v2_tcp_header_seq_ack_sack_mss() {
    let vip = IpAddr::V4(VIP);
    let m = model(vec![pp_listener(vip, 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V2)]);
    with_datapath("proxy_v2_tcp_header_seq_ack_sack_mss", m, move |t| {
        let flow = Flow::new(CLIENT, 40000, VIP, 80);
        let c = PpConn::open(t, flow, 5000, &syn_options(1460));
        let hdr = v2_header(CLIENT.into(), 40000, vip, 80, false);
        let len = hdr.len() as u32;
        assert_eq!(len, 28);

        // SYN-ACK: MSS clamped by the header's length, ack (ISN+1) unchanged.
        let (_, p) = c.reply(t, SYN | ACK, 5001, &syn_options(1460));
        assert_eq!(mss_of(&p.tcp_options), Some(1460 - 28), "MSS clamp");
        assert_eq!(p.ack, 5001);
        assert_eq!(p.flow, (vip, 80, IpAddr::V4(CLIENT), 40000));

        // The handshake's final ACK (seq ISN+1, no data) carries the header: server-first
        // protocols get it before the server speaks.
        let (v, p, _) = c.send(t, ACK, 5001, b"");
        assert_eq!(v, XDP_REDIRECT);
        assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after insertion: {p:?}");
        assert_eq!((p.seq, p.payload.clone()), (5001, hdr.clone()), "header at ISN+1");
        assert_eq!(p.ip_len, 20 + 20 + 28);
        assert_eq!((p.flow.2, p.flow.3), (IpAddr::V4(B1), 8080));

        // The first data segment, and its retransmission, before the backend acknowledged
        // the header: each carries the same header in front of the data.
        let (_, first, first_bytes) = c.send(t, ACK | PSH, 5001, b"GET / HTTP/1.0\r\n\r\n");
        assert!(first.l4_csum_ok && first.ip_csum_ok, "{first:?}");
        assert_eq!(first.payload, [hdr.clone(), b"GET / HTTP/1.0\r\n\r\n".to_vec()].concat());
        assert_eq!(first.seq, 5001);
        let (_, _, again) = c.send(t, ACK | PSH, 5001, b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(again, first_bytes, "a retransmission carries byte-identical header and data");

        // The backend acknowledges part of the header only: the client sees nothing acked.
        let (_, p) = c.reply(t, ACK, 5001 + 10, &[]);
        assert_eq!(p.ack, 5001);
        // Now the header and 18 bytes of data: the client sees its 18 bytes acknowledged.
        let (_, p) = c.reply(t, ACK, 5001 + len + 18, &[]);
        assert_eq!(p.ack, 5001 + 18, "ack moves down by the header length");

        // After the backend holds the header, a retransmission of the first segment and any
        // later segment are only shifted.
        let (_, p, _) = c.send(t, ACK | PSH, 5001, b"GET / HTTP/1.0\r\n\r\n");
        assert!(p.l4_csum_ok, "{p:?}");
        assert_eq!((p.seq, p.payload.clone()), (5001 + len, b"GET / HTTP/1.0\r\n\r\n".to_vec()));
        let (_, p, _) = c.send(t, ACK | PSH, 5019, b"more");
        assert!(p.l4_csum_ok);
        assert_eq!((p.seq, p.payload.clone()), (5019 + len, b"more".to_vec()));
        let (_, p, _) = c.send(t, ACK, 5023, b"");
        assert_eq!((p.seq, p.payload.len()), (5023 + len, 0), "pure ACKs are shifted, not given a header");

        // SACK blocks from the backend move down too (timestamps untouched).
        let opts = sack_options(&[(5001 + len + 100, 5001 + len + 200), (5001 + len + 300, 5001 + len + 400)]);
        let (_, p) = c.reply(t, ACK, 5001 + len + 50, &opts);
        assert_eq!(p.ack, 5051);
        assert_eq!(sack_blocks(&p.tcp_options), vec![(5101, 5201), (5301, 5401)]);
        assert_eq!(&p.tcp_options[..12], &opts[..12], "timestamps untouched");
        // A D-SACK of a duplicate header maps to the first data byte.
        let (_, p) = c.reply(t, ACK, 5001 + len + 50, &sack_options(&[(5001, 5001 + len)]));
        assert_eq!(sack_blocks(&p.tcp_options), vec![(5001, 5001)]);

        // A client FIN and RST after the header: shifted.
        let (_, p, _) = c.send(t, FIN | ACK, 5100, b"");
        assert_eq!(p.seq, 5100 + len);

        // A SYN-ACK without options (SYN without options on a second connection).
        let c2 = PpConn::open(t, Flow::new(CLIENT, 40001, VIP, 80), 0xffff_fff0, &[]);
        let (_, p) = c2.reply(t, SYN | ACK, 0xffff_fff1, &[]);
        assert!(p.tcp_options.is_empty() && p.ack == 0xffff_fff1);
        // Sequence numbers wrap: ISN+1+len past 2^32.
        let (_, p, _) = c2.send(t, ACK | PSH, 0xffff_fff1, b"x");
        assert_eq!((p.seq, p.payload.len()), (0xffff_fff1, 29));
        let (_, p) = c2.reply(t, ACK, 0xffff_fff1u32.wrapping_add(29), &[]);
        assert_eq!(p.ack, 0xffff_fff2);
        let (_, p, _) = c2.send(t, ACK | PSH, 0xffff_fff2, b"y");
        assert_eq!(p.seq, 0xffff_fff2u32.wrapping_add(28));
        assert!(p.l4_csum_ok);

        let stats = t.dp.stats().unwrap();
        assert_eq!(stats.packets("pp_inserted"), 4, "{stats:?}");
        assert_eq!(stats.packets("drop_pp"), 0);
    });
}

#[test]
fn proxy_v1_and_ipv6_header_bytes() {
    let vip6 = v6("2001:db8:100::10");
    let client6 = v6("2001:db8::2");
    let b6 = (IpAddr::V6(v6("2001:db8:1::2")), 8080, 1);
    let m = model(vec![
        pp_listener(IpAddr::V4(VIP), 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V1),
        pp_listener(IpAddr::V6(vip6), 80, Protocol::Tcp, &[b6], ProxyProtocol::V1),
        pp_listener(IpAddr::V6(vip6), 81, Protocol::Tcp, &[b6], ProxyProtocol::V2),
    ]);
    with_datapath("proxy_v1_and_ipv6_header_bytes", m, move |t| {
        // v1 over IPv4; clients whose header has an odd and an even length (the payload
        // changes byte lanes in the checksum when it is odd).
        for (client, sport) in [(Ipv4Addr::new(198, 18, 0, 2), 40000u16), (Ipv4Addr::new(198, 18, 0, 23), 5)] {
            let c = PpConn::open(t, Flow::new(client, sport, VIP, 80), 100, &syn_options(1460));
            let hdr = v1_header(client.into(), sport, VIP.into(), 80);
            let (_, p) = c.reply(t, SYN | ACK, 101, &syn_options(1460));
            assert_eq!(mss_of(&p.tcp_options), Some(1460 - hdr.len() as u16));
            let (_, p, _) = c.send(t, ACK | PSH, 101, b"hello, odd and even\n");
            assert!(p.ip_csum_ok && p.l4_csum_ok, "{} bytes of header: {p:?}", hdr.len());
            assert_eq!(
                p.payload,
                [hdr.clone(), b"hello, odd and even\n".to_vec()].concat(),
                "{}",
                String::from_utf8_lossy(&p.payload)
            );
            let (_, p) = c.reply(t, ACK, 101 + hdr.len() as u32 + 20, &[]);
            assert_eq!(p.ack, 121);
            let (_, p, _) = c.send(t, ACK | PSH, 121, b"z");
            assert_eq!(p.seq, 121 + hdr.len() as u32);
            assert!(p.l4_csum_ok);
        }
        // v1 and v2 over IPv6.
        for (port, want) in [
            (80u16, v1_header(client6.into(), 50000, vip6.into(), 80)),
            (81, v2_header(client6.into(), 50000, vip6.into(), 81, false)),
        ] {
            let c = PpConn::open(t, Flow::new(client6, 50000, vip6, port), 77, &syn_options(1440));
            let (_, p) = c.reply(t, SYN | ACK, 78, &syn_options(1440));
            assert_eq!(mss_of(&p.tcp_options), Some(1440 - want.len() as u16));
            let (_, p, _) = c.send(t, ACK, 78, b"");
            assert!(p.l4_csum_ok, "{p:?}");
            assert_eq!(p.payload, want, "{}", String::from_utf8_lossy(&p.payload));
            assert_eq!(p.ip_len, 40 + 20 + want.len());
        }
        assert_eq!(
            v1_header(client6.into(), 50000, vip6.into(), 80),
            b"PROXY TCP6 2001:db8:0:0:0:0:0:2 2001:db8:100:0:0:0:0:10 50000 80\r\n"
        );
    });
}

#[test]
fn proxy_udp_datagrams_get_a_v2_header_replies_do_not() {
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
    with_datapath("proxy_udp_datagrams_get_a_v2_header_replies_do_not", m, move |t| {
        for (client, vip) in [(IpAddr::V4(CLIENT), IpAddr::V4(VIP)), (IpAddr::V6(client6), IpAddr::V6(vip6))] {
            let hdr = v2_header(client, 41000, vip, 53, true);
            let mut snat = None;
            for i in 0..3u8 {
                let (v, p) = t.client(&Frame::udp(Flow::new(client, 41000, vip, 53)).payload(&[b'q', i]));
                assert_eq!(v, XDP_REDIRECT);
                assert!(p.ip_csum_ok && p.l4_csum_ok && p.l4_csum != 0, "{p:?}");
                assert_eq!(p.payload, [hdr.clone(), vec![b'q', i]].concat(), "every datagram");
                snat = Some((p.flow.0, p.flow.1, p.flow.2));
            }
            // The backend's reply goes back as it was sent.
            let (s, sport, b) = snat.unwrap();
            let reply = Frame { dst_mac: t.b_mac, ..Frame::udp(Flow::new(b, 5353, s, sport)).payload(b"answer") };
            let (v, out) = t.run(&reply.bytes(), t.b);
            assert_eq!(v, XDP_REDIRECT);
            let p = parse(&out);
            assert!(p.l4_csum_ok);
            assert_eq!((p.flow, p.payload), ((vip, 53, client, 41000), b"answer".to_vec()));
        }
        // IPv4 without a UDP checksum stays without one.
        let mut f = Frame::udp(Flow::new(CLIENT, 41001, VIP, 53)).payload(b"nocsum");
        f.udp_no_csum = true;
        let (v, p) = t.client(&f);
        assert_eq!(v, XDP_REDIRECT);
        assert_eq!((p.l4_csum, p.payload.len()), (0, 28 + 6));
        // A fragmented datagram cannot grow: dropped and counted.
        let mut frag = Frame::udp(Flow::new(CLIENT, 41002, VIP, 53)).payload(&[1u8; 32]);
        frag.frag_off = 0x2000;
        let (v, _) = t.run(&frag.with_l3_payload(&frag.l4()[..24]), t.a);
        assert_eq!(v, XDP_DROP);
        let stats = t.dp.stats().unwrap();
        assert_eq!((stats.packets("pp_inserted"), stats.packets("drop_pp")), (7, 1), "{stats:?}");
    });
}

#[test]
fn proxy_malformed_options_and_toggling() {
    let vip = IpAddr::V4(VIP);
    let on = model(vec![pp_listener(vip, 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::V2)]);
    let off = model(vec![pp_listener(vip, 80, Protocol::Tcp, &[be(B1, 8080, 1)], ProxyProtocol::Off)]);
    with_datapath("proxy_malformed_options_and_toggling", on, move |t| {
        let c = PpConn::open(t, Flow::new(CLIENT, 42000, VIP, 80), 1, &syn_options(1460));
        let (_, _, _) = c.send(t, ACK | PSH, 2, b"data");
        let len = 28u32;
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
            let (v, p) = c.reply(t, ACK, 2 + len + 4, &opts);
            assert_eq!(v, XDP_REDIRECT, "{name}");
            assert_eq!(p.ack, 6, "{name}");
        }
        // A SACK behind more options than the walk covers is blanked, never passed unshifted.
        let mut many = vec![1u8; 24];
        many.extend_from_slice(&[5, 10]);
        many.extend_from_slice(&(2 + len + 100).to_be_bytes());
        many.extend_from_slice(&(2 + len + 200).to_be_bytes());
        let (_, p) = c.reply(t, ACK, 2 + len + 4, &many);
        assert!(sack_blocks(&p.tcp_options).iter().all(|b| *b == (102, 202)), "{:?}", p.tcp_options);
        // A client segment at ISN+1 with a data offset below 5: dropped and counted.
        let c2 = PpConn::open(t, Flow::new(CLIENT, 42001, VIP, 80), 1, &[]);
        let mut bad = Frame::tcp(c2.flow, ACK).seq_ack(2, 1).payload(b"x").bytes();
        bad[14 + 20 + 12] = 4 << 4;
        let (v, _) = t.run(&bad, t.a);
        assert_eq!(v, XDP_DROP);
        assert_eq!(t.dp.stats().unwrap().packets("drop_pp"), 1);

        // Turning the annotation off affects new connections only.
        t.dp.apply(&off).unwrap();
        let (_, p, _) = c.send(t, ACK | PSH, 6, b"still shifted");
        assert_eq!(p.seq, 6 + len, "the established flow keeps its framing");
        let c3 = PpConn::open(t, Flow::new(CLIENT, 42002, VIP, 80), 1, &[]);
        let (_, p, _) = c3.send(t, ACK | PSH, 2, b"plain");
        assert_eq!((p.seq, p.payload), (2, b"plain".to_vec()), "a new flow gets no header");
    });
}
