//! The seed corpus that needs no flow: a client's first packet to every listener (TCP with
//! ordinary and odd options, UDP), IPv4 options, IPv6 extension headers, fragments, VLAN
//! tags, ARP and other EtherTypes, ICMP that is not an error, and frames that are not ours
//! (other addresses, other ports, other protocols).
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_tests::{
    fixture::Side,
    packet::{ACK, ETH_ARP, ETH_IP, ETH_IPV6, ETH_VLAN, FIN, Flow, Frame, PSH, RST, SYN, eth, finish, sum16},
    proxy_frames::{sack_options, syn_options},
};

use crate::{CLIENT, CLIENT6, OUTSIDE_ACL, Spec, VIP, VIP6};

/// A valid frame the fuzzer starts from, and the side it arrives on.
#[derive(Clone)]
pub struct Seed {
    pub name: String,
    pub frame: Vec<u8>,
    pub side: Side,
}

pub fn seed(name: impl Into<String>, side: Side, frame: Vec<u8>) -> Seed {
    Seed { name: name.into(), frame, side }
}

/// TCP option lists: Linux's SYN options, SACK blocks, timestamps, window scale, NOPs, and
/// odd but legal (or plainly broken) lengths.
pub fn tcp_option_sets() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("Linux SYN options", syn_options(1460)),
        ("MSS only", vec![2, 4, 0x05, 0xb4]),
        ("three SACK blocks", sack_options(&[(100, 200), (300, 400), (500, 600)])),
        ("timestamps", vec![1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 3]),
        ("window scale and NOPs", vec![1, 3, 3, 14, 1, 1, 1, 0]),
        ("40 bytes of NOPs", vec![1; 40]),
        ("MSS, NOP, odd order", vec![1, 4, 2, 2, 4, 0x02, 0x18, 3, 3, 2, 0]),
        ("zero-length option", vec![8, 0, 1, 1]),
        ("option longer than the header", vec![1, 2, 30, 0x05]),
        ("SACK with a cut block", vec![1, 1, 5, 7, 0, 0, 0, 1, 0, 0, 0]),
        ("unknown option kinds", vec![253, 4, 0xab, 0xcd, 254, 6, 1, 2, 3, 4, 30, 2]),
    ]
}

fn with_opts(mut f: Frame, opts: &[u8]) -> Frame {
    f = f.options(opts);
    f.tcp_options.truncate(40);
    f
}

/// IPv4 option lists (each a multiple of 4 bytes, at most 40).
fn ipv4_option_sets() -> Vec<(&'static str, Vec<u8>)> {
    let mut rr = vec![7, 11, 4];
    rr.extend_from_slice(&[0; 8]);
    rr.push(0);
    let mut ts = vec![68, 12, 5, 0];
    ts.extend_from_slice(&[0; 8]);
    vec![
        ("NOPs", vec![1, 1, 1, 0]),
        ("record route", rr),
        ("timestamp", ts),
        ("router alert", vec![148, 4, 0, 0]),
        ("40 bytes of options", vec![1; 40]),
    ]
}

/// An IPv6 extension header chain in the Frame builder's form: (type, bytes) each.
type ExtChain = Vec<(u8, Vec<u8>)>;

/// IPv6 extension header chains.
fn v6_ext_sets() -> Vec<(&'static str, ExtChain)> {
    let hbh = (0u8, vec![0, 0, 5, 2, 0, 0, 1, 0]); // router alert, PadN
    let dst = (60u8, vec![0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut rh = vec![0, 2, 0, 0, 0, 0, 0, 0];
    rh.extend_from_slice(&"2001:db8:2::1".parse::<Ipv6Addr>().unwrap().octets());
    let routing = (43u8, rh);
    let atomic_frag = (44u8, vec![0, 0, 0, 0, 0, 0, 0x11, 0x11]);
    vec![
        ("hop-by-hop", vec![hbh.clone()]),
        ("routing", vec![routing.clone()]),
        ("destination options", vec![dst.clone()]),
        ("atomic fragment header", vec![atomic_frag.clone()]),
        ("hop-by-hop, routing, destination options", vec![hbh.clone(), routing.clone(), dst.clone()]),
        (
            "six extension headers",
            vec![hbh.clone(), dst.clone(), routing.clone(), dst.clone(), dst.clone(), atomic_frag],
        ),
        ("seven extension headers", vec![hbh, dst.clone(), routing, dst.clone(), dst.clone(), dst.clone(), dst]),
    ]
}

/// The client a listener's first packets come from.
pub fn client_of(vip: IpAddr) -> IpAddr {
    if vip.is_ipv4() { IpAddr::V4(CLIENT) } else { IpAddr::V6(CLIENT6) }
}

/// Seeds that need no flow opened first.
pub fn stateless(specs: &[Spec]) -> Vec<Seed> {
    let mut out = Vec::new();
    let mut sport = 20000u16;
    let mut next_port = || {
        sport += 1;
        sport
    };
    // The first packet to every listener.
    for s in specs {
        let client = client_of(s.vip);
        let flow = Flow::new(client, next_port(), s.vip, s.port);
        let name = format!("{}:{}/{}", s.vip, s.port, if s.udp { "udp" } else { "tcp" });
        if s.udp {
            out.push(seed(format!("{name} datagram"), Side::Client, Frame::udp(flow).payload(b"query").bytes()));
        } else {
            for (what, opts) in tcp_option_sets() {
                let syn = with_opts(Frame::tcp(Flow { sport: next_port(), ..flow }, SYN), &opts);
                out.push(seed(format!("{name} SYN, {what}"), Side::Client, syn.bytes()));
            }
            for (what, flags) in [("ACK", ACK), ("data", ACK | PSH), ("FIN", FIN | ACK), ("RST", RST)] {
                let f = Frame::tcp(Flow { sport: next_port(), ..flow }, flags).payload(b"hello");
                out.push(seed(format!("{name} {what} without a flow"), Side::Client, f.bytes()));
            }
        }
    }
    for (vip, client) in [(IpAddr::V4(VIP), IpAddr::V4(CLIENT)), (IpAddr::V6(VIP6), IpAddr::V6(CLIENT6))] {
        let (tcp_port, udp_port) = if vip.is_ipv4() { (80, 53) } else { (443, 53) };
        let syn = Frame::tcp(Flow::new(client, next_port(), vip, tcp_port), SYN).options(&syn_options(1460));
        let dgram = Frame::udp(Flow::new(client, next_port(), vip, udp_port)).payload(&[0x5a; 100]);
        if vip.is_ipv4() {
            for (what, opts) in ipv4_option_sets() {
                for f in [syn.clone(), dgram.clone()] {
                    let f = Frame { ip_options: opts.clone(), flow: Flow { sport: next_port(), ..f.flow }, ..f };
                    out.push(seed(format!("IPv4 options: {what}"), Side::Client, f.bytes()));
                }
            }
            let mut none = dgram.clone();
            none.udp_no_csum = true;
            out.push(seed("UDP without a checksum", Side::Client, none.bytes()));
        } else {
            for (what, ext) in v6_ext_sets() {
                for f in [syn.clone(), dgram.clone()] {
                    let f = Frame { v6_ext: ext.clone(), flow: Flow { sport: next_port(), ..f.flow }, ..f };
                    out.push(seed(format!("IPv6 {what}"), Side::Client, f.bytes()));
                }
            }
        }
        out.extend(fragments(vip, client, udp_port, tcp_port, &mut next_port));
        // Not ours: other addresses, other ports, a VIP's port in the other protocol.
        let other: IpAddr = if vip.is_ipv4() {
            Ipv4Addr::new(198, 18, 1, 9).into()
        } else {
            "2001:db8:1::9".parse::<Ipv6Addr>().unwrap().into()
        };
        let node: IpAddr = if vip.is_ipv4() {
            Ipv4Addr::new(198, 18, 0, 1).into()
        } else {
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().into()
        };
        for (what, dst, port) in [
            ("another address", other, tcp_port),
            ("the node's address", node, 22),
            ("a port of no listener", vip, 9999),
        ] {
            let f = Frame::tcp(Flow::new(client, next_port(), dst, port), SYN).options(&syn_options(1400));
            out.push(seed(format!("not ours: TCP to {what}"), Side::Client, f.bytes()));
            let f = Frame::udp(Flow::new(client, next_port(), dst, port)).payload(b"x");
            out.push(seed(format!("not ours: UDP to {what}"), Side::Client, f.bytes()));
        }
        let f = Frame::udp(Flow::new(client, next_port(), vip, tcp_port)).payload(b"x");
        out.push(seed("not ours: UDP to a TCP-only port", Side::Client, f.bytes()));
    }
    // ACL: a client outside the white list (dropped) and outside the black list (served).
    for port in [83, 84] {
        let f = Frame::tcp(Flow::new(OUTSIDE_ACL, next_port(), VIP, port), SYN).options(&syn_options(1460));
        out.push(seed(format!("SYN from outside the ACL to :{port}"), Side::Client, f.bytes()));
    }
    out.extend(other_ethertypes(&mut next_port));
    out
}

/// First and later fragments of a UDP datagram and of a TCP segment (IPv4: flags and offset;
/// IPv6: a fragment header).
fn fragments(vip: IpAddr, client: IpAddr, udp_port: u16, tcp_port: u16, next: &mut impl FnMut() -> u16) -> Vec<Seed> {
    let mut out = Vec::new();
    let udp = Frame::udp(Flow::new(client, next(), vip, udp_port)).payload(&[7; 64]);
    let tcp = Frame::tcp(Flow::new(client, next(), vip, tcp_port), ACK | PSH).payload(&[9; 64]);
    for (what, whole) in [("UDP", udp), ("TCP", tcp)] {
        let l4 = whole.l4();
        let (head, tail) = l4.split_at(24);
        let id: u16 = 0x4200 + next() % 256;
        let (first, later) = if vip.is_ipv4() {
            let first = Frame { frag_off: 0x2000, ip_id: id, ..whole.clone() };
            let later = Frame { frag_off: 3, ip_id: id, ..whole.clone() };
            (first, later)
        } else {
            let frag = |off_m: u16| {
                let mut h = vec![0, 0];
                h.extend_from_slice(&off_m.to_be_bytes());
                h.extend_from_slice(&(id as u32).to_be_bytes());
                Frame { v6_ext: vec![(44, h)], ..whole.clone() }
            };
            (frag(1), frag(3 << 3))
        };
        out.push(seed(format!("{vip} {what} first fragment"), Side::Client, first.with_l3_payload(head)));
        out.push(seed(format!("{vip} {what} later fragment"), Side::Client, later.with_l3_payload(tail)));
    }
    out
}

/// ARP, VLAN-tagged and QinQ IP, MPLS, LLDP, an Ethernet header alone, IP protocols other
/// than TCP/UDP to a VIP, and ICMP messages that are not errors.
fn other_ethertypes(next: &mut impl FnMut() -> u16) -> Vec<Seed> {
    let (ours, theirs) = ([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xcc]);
    let syn = Frame::tcp(Flow::new(CLIENT, next(), VIP, 80), SYN).bytes();
    let mut out = Vec::new();
    let mut arp = eth([0xff; 6], theirs, ETH_ARP);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&theirs);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP.octets());
    out.push(seed("not ours: ARP who-has the VIP", Side::Client, arp));
    for (what, tags) in [("not ours: VLAN-tagged SYN", vec![ETH_VLAN]), ("not ours: QinQ SYN", vec![0x88a8, ETH_VLAN])]
    {
        let mut f = syn[..12].to_vec();
        for t in tags {
            f.extend_from_slice(&t.to_be_bytes());
            f.extend_from_slice(&[0, 10]);
        }
        f.extend_from_slice(&syn[12..]);
        out.push(seed(what, Side::Client, f));
    }
    for (what, et) in [("not ours: MPLS", 0x8847u16), ("not ours: LLDP", 0x88cc), ("not ours: EtherType 0", 0)] {
        let mut f = eth(ours, theirs, et);
        f.extend_from_slice(&syn[14..]);
        out.push(seed(what, Side::Client, f));
    }
    out.push(seed("not ours: an Ethernet header alone", Side::Client, syn[..14].to_vec()));
    for (what, proto) in [("GRE", 47u8), ("SCTP", 132), ("ESP", 50)] {
        let mut f = syn.clone();
        f[14 + 9] = proto;
        out.push(seed(format!("not ours: {what} to the VIP"), Side::Client, f));
    }
    let mut echo = vec![8, 0, 0, 0, 0, 1, 0, 1];
    echo.extend_from_slice(b"ping");
    let c = finish(sum16(&echo, 0));
    echo[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(ours, theirs, ETH_IP);
    f.extend_from_slice(&lb_tests::packet::ipv4_header(CLIENT, VIP, 1, &[], 9, 0, echo.len()));
    f.extend_from_slice(&echo);
    out.push(seed("not ours: ICMP echo to the VIP", Side::Client, f));
    let mut f = eth(ours, theirs, ETH_IPV6);
    let icmp6 = [128u8, 0, 0, 0, 0, 1, 0, 1];
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, icmp6.len() as u8, 58, 64]);
    f.extend_from_slice(&CLIENT6.octets());
    f.extend_from_slice(&VIP6.octets());
    f.extend_from_slice(&icmp6);
    out.push(seed("not ours: ICMPv6 echo to the VIP", Side::Client, f));
    out
}
