//! The XDP program through BPF_PROG_TEST_RUN: crafted frames in, verdict and exact bytes out.
//!
//! The program runs in a namespace of its own with real routes and neighbours, so
//! `bpf_fib_lookup` answers as it would on a node.
use std::net::{IpAddr, Ipv4Addr};

use aya::programs::{TestRun, TestRunOptions};
use lb_tests::{
    netns::{Netns, unique_prefix},
    packet::{ACK, ETH_ARP, ETH_IPV6, Frame, PSH, SYN, V4, eth, parse},
    privileged,
};
use lb_userspace::{
    dataplane::{Dataplane, Options},
    model::{Backend, L4Listener, Model, ObjectRef, Protocol, Scheduler, listener_name},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 10);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const SNAT: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 3);
const B1_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x01];
const B2_MAC: [u8; 6] = [0x02, 0xbe, 0, 0, 0, 0x02];

/// A namespace with a client-side interface (`a`, 198.18.0.1/24) and a backend-side one
/// (`b`, 198.18.1.1/24, static neighbours for the two backends), and the datapath loaded.
struct Bench {
    dp: Dataplane,
    a: u32,
    b: u32,
    b_mac: [u8; 6],
}

fn listener(port: u16, protocol: Protocol, backends: &[(Ipv4Addr, u16)]) -> L4Listener {
    L4Listener {
        source: ObjectRef { kind: "Service".into(), namespace: "t".into(), name: "t".into() },
        vip: IpAddr::V4(VIP),
        port,
        protocol,
        scheduler: Scheduler::Rr,
        backends: backends.iter().map(|(a, p)| Backend { addr: IpAddr::V4(*a), port: *p, weight: 100 }).collect(),
    }
}

fn setup(ns: &Netns) -> (String, String) {
    let (a, b) = (format!("{}a", ns.name), format!("{}b", ns.name));
    lb_tests::netns::sh(&["ip", "link", "add", &a, "netns", &ns.name, "type", "veth", "peer", "name", &b, "netns", &ns.name]).unwrap();
    ns.ip(&["addr", "add", "198.18.0.1/24", "dev", &a]).unwrap();
    ns.ip(&["addr", "add", "198.18.1.1/24", "dev", &b]).unwrap();
    ns.ip(&["link", "set", &a, "up"]).unwrap();
    ns.ip(&["link", "set", &b, "up"]).unwrap();
    for (ip, mac) in [(B1, B1_MAC), (B2, B2_MAC)] {
        let mac = mac.iter().map(|m| format!("{m:02x}")).collect::<Vec<_>>().join(":");
        ns.ip(&["neigh", "add", &ip.to_string(), "lladdr", &mac, "dev", &b, "nud", "permanent"]).unwrap();
    }
    ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
    (a, b)
}

impl Bench {
    /// Load the datapath; must run on a thread inside the namespace of `a` and `b`.
    fn new(ai: u32, bi: u32, b_mac: [u8; 6]) -> Bench {
        let mut dp = Dataplane::load(&Options::default()).expect("load datapath");
        dp.add_port(ai, Some(Ipv4Addr::new(198, 18, 0, 1))).unwrap();
        dp.add_port(bi, Some(SNAT)).unwrap();
        let mut model = Model::default();
        for l in [
            listener(80, Protocol::Tcp, &[(B1, 8080), (B2, 8080)]),
            listener(53, Protocol::Udp, &[(B1, 5353)]),
            listener(90, Protocol::Tcp, &[]),
        ] {
            model.listeners.insert(listener_name(&l), l);
        }
        dp.apply(&model).unwrap();
        Bench { dp, a: ai, b: bi, b_mac }
    }

    /// Run one frame as if received on `ifindex`: (verdict, frame after the program).
    fn run(&mut self, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex }
        let mut ctx = [0u8; 24];
        ctx[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.dp.program().unwrap();
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        opts.ctx_in = Some(&ctx);
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }
}

fn pin_to_cpu0() {
    let mut set = nix::sched::CpuSet::new();
    set.set(0).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

#[test]
fn datapath_packet_table() {
    if !privileged("datapath_packet_table") {
        return;
    }
    let ns = Netns::new(&format!("{}t", unique_prefix())).unwrap();
    let (a, b) = setup(&ns);
    let (ai, bi, b_mac) = (ns.ifindex(&a).unwrap(), ns.ifindex(&b).unwrap(), ns.mac(&b).unwrap());
    ns.run(move || {
        pin_to_cpu0();
        table(&mut Bench::new(ai, bi, b_mac));
    });
}

fn table(t: &mut Bench) {
    let flow = V4 { src: CLIENT, dst: VIP, sport: 40000, dport: 80 };
    let syn = Frame::tcp(flow, SYN);
    let client_mac = syn.src_mac;
    let our_mac = syn.dst_mac;

    // 1. A TCP SYN to a listener: full NAT towards a backend, out of the backend interface.
    let (verdict, out) = t.run(&syn.bytes(), t.a);
    assert_eq!(verdict, XDP_REDIRECT, "SYN to VIP:80");
    let p = parse(&out);
    assert!(p.ip_csum_ok && p.l4_csum_ok, "checksums after NAT: {p:?}");
    let (src, sport, dst, dport) = p.flow;
    assert_eq!(src, SNAT, "SNAT to the egress interface's address");
    assert!((61000..=65535).contains(&sport), "SNAT port {sport} in the default range");
    assert!(dst == B1 || dst == B2);
    assert_eq!(dport, 8080);
    assert_eq!(p.src_mac, t.b_mac, "source MAC is the egress interface's");
    assert_eq!(p.dst_mac, if dst == B1 { B1_MAC } else { B2_MAC }, "destination MAC from the neighbour table");
    assert_eq!(out.len(), syn.bytes().len());
    let first = (dst, sport);

    // 2. Data on the same flow: same backend, same SNAT port (conntrack), payload intact.
    let data = Frame::tcp(flow, ACK | PSH).payload(b"GET / HTTP/1.1\r\n\r\n");
    let (verdict, out) = t.run(&data.bytes(), t.a);
    assert_eq!(verdict, XDP_REDIRECT);
    let p = parse(&out);
    assert!(p.ip_csum_ok && p.l4_csum_ok);
    assert_eq!((p.flow.2, p.flow.1), first, "flow pinned in conntrack");
    assert_eq!(p.payload, b"GET / HTTP/1.1\r\n\r\n");

    // 3. The backend's reply: reverse NAT to VIP:80 → client, back where the client came from.
    let reply = Frame {
        dst_mac: t.b_mac,
        src_mac: if first.0 == B1 { B1_MAC } else { B2_MAC },
        ..Frame::tcp(V4 { src: first.0, dst: SNAT, sport: 8080, dport: first.1 }, SYN | ACK)
    };
    let (verdict, out) = t.run(&reply.bytes(), t.b);
    assert_eq!(verdict, XDP_REDIRECT, "reply goes out of the client interface");
    let p = parse(&out);
    assert!(p.ip_csum_ok && p.l4_csum_ok);
    assert_eq!(p.flow, (VIP, 80, CLIENT, 40000));
    assert_eq!((p.dst_mac, p.src_mac), (client_mac, our_mac), "MACs the client's frames carried");

    // 4. Round robin per new flow (one CPU: strict alternation), each flow then pinned.
    let mut picks = Vec::new();
    for port in 40001..40007 {
        let f = Frame::tcp(V4 { sport: port, ..flow }, SYN);
        let (v, out) = t.run(&f.bytes(), t.a);
        assert_eq!(v, XDP_REDIRECT);
        picks.push(parse(&out).flow.2);
    }
    for w in picks.windows(2) {
        assert_ne!(w[0], w[1], "round robin alternates: {picks:?}");
    }

    // 5. UDP to a listener on another port; a zero UDP checksum stays zero.
    let u = Frame::udp(V4 { dport: 53, ..flow }).payload(b"query");
    let (v, out) = t.run(&u.bytes(), t.a);
    assert_eq!(v, XDP_REDIRECT);
    let p = parse(&out);
    assert!(p.ip_csum_ok && p.l4_csum_ok && p.l4_csum != 0, "{p:?}");
    assert_eq!((p.flow.0, p.flow.2, p.flow.3), (SNAT, B1, 5353));
    let mut u0 = Frame::udp(V4 { sport: 40100, dport: 53, ..flow }).payload(b"query");
    u0.udp_no_csum = true;
    let (v, out) = t.run(&u0.bytes(), t.a);
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(parse(&out).l4_csum, 0, "no UDP checksum stays none");

    // 6. IPv4 options: the L4 header is found after them, options untouched.
    let mut opt = Frame::tcp(V4 { sport: 40200, ..flow }, SYN);
    opt.ip_options = vec![1, 1, 1, 0];
    let (v, out) = t.run(&opt.bytes(), t.a);
    assert_eq!(v, XDP_REDIRECT);
    let p = parse(&out);
    assert!(p.ip_csum_ok && p.l4_csum_ok);
    assert_eq!(p.ip_options, vec![1, 1, 1, 0]);
    assert_eq!(p.flow.3, 8080);

    // 7. A listener without backends drops (and counts) instead of leaking to the kernel.
    let (v, _) = t.run(&Frame::tcp(V4 { dport: 90, ..flow }, SYN).bytes(), t.a);
    assert_eq!(v, XDP_DROP);

    // 8. Everything that is not ours passes untouched.
    let mut arp = eth([0xff; 6], client_mac, ETH_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[0u8; 20]);
    let mut v6 = eth(our_mac, client_mac, ETH_IPV6);
    v6.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
    v6.extend_from_slice(&[0u8; 40]);
    let full = syn.bytes();
    let mut frag = Frame::tcp(V4 { sport: 40300, ..flow }, SYN);
    frag.frag_off = 0x2000; // MF
    let mut bad_ihl = syn.bytes();
    bad_ihl[14] = 0x44;
    let mut bad_version = syn.bytes();
    bad_version[14] = 0x65;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ARP", arp),
        ("IPv6", v6),
        ("empty", vec![]),
        ("ethernet only", full[..14].to_vec()),
        ("IPv4 header cut", full[..14 + 10].to_vec()),
        ("TCP header cut", full[..14 + 20 + 10].to_vec()),
        ("port not a listener", Frame::tcp(V4 { dport: 81, ..flow }, SYN).bytes()),
        ("address not a VIP", Frame::tcp(V4 { dst: Ipv4Addr::new(198, 18, 0, 1), ..flow }, SYN).bytes()),
        ("UDP to a TCP-only port", Frame::udp(flow).bytes()),
        ("fragment", frag.bytes()),
        ("IHL 4", bad_ihl),
        ("version 6 in an IPv4 frame", bad_version),
        ("ICMP", {
            let mut f = syn.bytes();
            f[14 + 9] = 1;
            f
        }),
    ];
    for (name, frame) in cases {
        if frame.is_empty() {
            // The kernel refuses an empty frame before the program runs.
            continue;
        }
        let (v, out) = t.run(&frame, t.a);
        assert_eq!(v, XDP_PASS, "{name}");
        assert_eq!(out, frame, "{name}: bytes untouched");
    }

    let stats = t.dp.stats().unwrap();
    assert_eq!(stats.packets("new_flows"), 1 + 6 + 2 + 1, "{stats:?}");
    assert_eq!(stats.packets("fwd_to_client"), 1);
    assert_eq!(stats.packets("drop_no_backend"), 1);
    assert_eq!(stats.packets("pass_fragment"), 1);
}
