//! Seeds that need a flow: the setup opens one flow per listener (the client's SYN or
//! datagram), learns the SNAT port and backend from the frame the datapath sent, and lets
//! the backend answer; the seeds are then the flow's later packets both ways (ACK, data,
//! SACK, FIN, RST, retransmissions), the backend's replies, and ICMP / ICMPv6 errors
//! quoting the flow's packets from either side.
use std::net::IpAddr;

use lb_tests::{
    fixture::Side,
    packet::{ACK, ETH_IP, ETH_IPV6, FIN, Flow, Frame, PSH, RST, SYN, eth, finish, ipv4_header, parse, sum16},
    proxy_frames::{sack_options, syn_options},
    testbed::mac_of,
};

use crate::{
    Spec,
    runner::Runner,
    seeds::{Seed, client_of, seed},
};

/// A flow the setup opened.
pub struct Opened {
    pub name: String,
    pub udp: bool,
    pub isn: u32,
    /// The client's side: client → VIP.
    pub flow: Flow,
    /// The backend's side: backend → SNAT address and port.
    pub reply: Flow,
    /// The frames the datapath sent: the client's first packet to the backend, the
    /// backend's answer to the client.
    pub to_backend: Vec<u8>,
    pub to_client: Option<Vec<u8>>,
}

/// Open a flow on every listener that has backends (ports from 40000 on), and let the
/// backend answer each.
pub fn open(r: &mut Runner, specs: &[Spec]) -> Vec<Opened> {
    let mut out = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let client = client_of(s.vip);
        let flow = Flow::new(client, 40000 + i as u16, s.vip, s.port);
        let isn = 1000 * (i as u32 + 1);
        let first = if s.udp {
            Frame::udp(flow).payload(b"first datagram")
        } else {
            Frame::tcp(flow, SYN).seq_ack(isn, 0).options(&syn_options(1460))
        };
        let sent = r.client(&first.bytes());
        if !sent.forwarded() {
            continue;
        }
        let sent = sent.out;
        let p = parse(&sent);
        let reply = Flow::new(p.flow.2, p.flow.3, p.flow.0, p.flow.1);
        let answer = if s.udp {
            Frame::udp(reply).payload(b"answer")
        } else {
            Frame::tcp(reply, SYN | ACK).seq_ack(7000, isn + 1).options(&syn_options(1400))
        };
        let answer = Frame { dst_mac: r.b_mac, src_mac: mac_of(reply.src), ..answer };
        let back = r.backend(&answer.bytes());
        let name = format!("{}:{}/{}", s.vip, s.port, if s.udp { "udp" } else { "tcp" });
        out.push(Opened {
            name,
            udp: s.udp,
            isn,
            flow,
            reply,
            to_backend: sent,
            to_client: back.forwarded().then_some(back.out),
        });
    }
    out
}

/// The seeds of the opened flows.
pub fn seeds(opened: &[Opened], b_mac: [u8; 6]) -> Vec<Seed> {
    let mut out = Vec::new();
    for o in opened {
        let backend = |f: Frame| Frame { dst_mac: b_mac, src_mac: mac_of(o.reply.src), ..f }.bytes();
        let c = |what: &str| format!("{}: client {what}", o.name);
        let b = |what: &str| format!("{}: backend {what}", o.name);
        if o.udp {
            out.push(seed(c("datagram"), Side::Client, Frame::udp(o.flow).payload(&[1; 200]).bytes()));
            out.push(seed(b("datagram"), Side::Backend, backend(Frame::udp(o.reply).payload(&[2; 200]))));
            let mut none = Frame::udp(o.reply).payload(b"no checksum");
            none.udp_no_csum = o.reply.src.is_ipv4();
            out.push(seed(b("datagram without a checksum"), Side::Backend, backend(none)));
        } else {
            let (isn, a) = (o.isn, 7001);
            let data = b"GET / HTTP/1.1\r\nHost: fuzz\r\n\r\n";
            let ts = [1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 1];
            let client_segs = [
                ("SYN again", Frame::tcp(o.flow, SYN).seq_ack(isn, 0).options(&syn_options(1460))),
                ("handshake ACK", Frame::tcp(o.flow, ACK).seq_ack(isn + 1, a)),
                ("first data", Frame::tcp(o.flow, ACK | PSH).seq_ack(isn + 1, a).payload(data)),
                ("data with timestamps", Frame::tcp(o.flow, ACK | PSH).seq_ack(isn + 1, a).options(&ts).payload(data)),
                ("later data", Frame::tcp(o.flow, ACK | PSH).seq_ack(isn + 1 + data.len() as u32, a).payload(b"more")),
                (
                    "ACK with SACK blocks",
                    Frame::tcp(o.flow, ACK).seq_ack(isn + 1, a).options(&sack_options(&[(7100, 7200), (7300, 7400)])),
                ),
                ("FIN", Frame::tcp(o.flow, FIN | ACK).seq_ack(isn + 40, a)),
                ("RST", Frame::tcp(o.flow, RST | ACK).seq_ack(isn + 40, a)),
            ];
            for (what, f) in client_segs {
                out.push(seed(c(what), Side::Client, f.bytes()));
            }
            let pp = 108; // the longest PROXY header: acks up to it are the datapath's to shift
            let backend_segs = [
                ("SYN-ACK", Frame::tcp(o.reply, SYN | ACK).seq_ack(7000, isn + 1).options(&syn_options(1400))),
                ("ACK of the header", Frame::tcp(o.reply, ACK).seq_ack(a, isn + 1 + pp)),
                ("data", Frame::tcp(o.reply, ACK | PSH).seq_ack(a, isn + 1).payload(b"HTTP/1.1 200 OK\r\n\r\n")),
                (
                    "SACK of the client's data",
                    Frame::tcp(o.reply, ACK).seq_ack(a, isn + 1).options(&sack_options(&[
                        (isn + 50, isn + 60),
                        (isn + 200, isn + 300),
                        (isn, isn + 2),
                    ])),
                ),
                ("FIN", Frame::tcp(o.reply, FIN | ACK).seq_ack(a + 20, isn + 40)),
                ("RST", Frame::tcp(o.reply, RST).seq_ack(a + 20, 0)),
            ];
            for (what, f) in backend_segs {
                out.push(seed(b(what), Side::Backend, backend(f)));
            }
        }
        // ICMP errors quoting the flow's packets: from the backend side about what we sent
        // the backend, from the client side about what we sent the client.
        for (kind, code) in if o.flow.src.is_ipv4() { [(3, 4), (11, 0), (12, 0)] } else { [(2, 0), (1, 4), (3, 0)] } {
            let what = format!("ICMP error {kind}/{code}");
            let from_backend = icmp_error(o.reply.src, o.reply.dst, kind, code, &o.to_backend[14..]);
            out.push(seed(b(&what), Side::Backend, from_backend));
            if let Some(back) = &o.to_client {
                let from_client = icmp_error(o.flow.src, o.flow.dst, kind, code, &back[14..]);
                out.push(seed(c(&what), Side::Client, from_client));
            }
        }
        // A quote cut right after the ports (the least an error must carry).
        let ihl = if o.flow.src.is_ipv4() { 20 } else { 40 };
        let short = icmp_error(o.reply.src, o.reply.dst, 3, 1, &o.to_backend[14..14 + ihl + 8]);
        out.push(seed(b("ICMP error with a short quote"), Side::Backend, short));
    }
    out
}

/// An ICMP (IPv4) or ICMPv6 error `kind`/`code` from `src` to `dst` quoting `quoted` (an IP
/// packet without its Ethernet header), its checksum valid.
pub fn icmp_error(src: IpAddr, dst: IpAddr, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0x05, 0x78];
    let (ours, theirs) = ([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xcc]);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            icmp.extend_from_slice(&quoted[..quoted.len().min(548)]);
            let c = finish(sum16(&icmp, 0));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut f = eth(ours, theirs, ETH_IP);
            f.extend_from_slice(&ipv4_header(s, d, 1, &[], 7, 0, icmp.len()));
            f.extend_from_slice(&icmp);
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            icmp.extend_from_slice(&quoted[..quoted.len().min(1232)]);
            let mut pseudo = s.octets().to_vec();
            pseudo.extend_from_slice(&d.octets());
            pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 58]);
            let c = finish(sum16(&icmp, sum16(&pseudo, 0)));
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            let mut f = eth(ours, theirs, ETH_IPV6);
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
            f.extend_from_slice(&[58, 64]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            f.extend_from_slice(&icmp);
            f
        }
        _ => panic!("mixed address families"),
    }
}
