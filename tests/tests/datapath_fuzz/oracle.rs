//! What a frame must get, decided without the datapath: whether it is certainly not ours
//! (then the program must pass it byte for byte), and which verdicts a program may answer.
//!
//! Only the VIPs and the SNAT addresses can make a frame ours: a client flow's conntrack key
//! has a VIP as its destination, a reply's reverse-NAT key a SNAT address, and an ICMP error
//! is looked up by the packet it quotes, whose source is then a VIP or a SNAT address. The
//! rules below say "not ours" only where the datapath's own reading of the frame cannot
//! disagree (and say nothing, "maybe ours", otherwise).
use std::net::IpAddr;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
/// IPv6 extension headers the datapath walks before giving up (lb-ebpf `parse::MAX_V6_EXT`).
const MAX_V6_EXT: usize = 6;

/// The addresses and listeners loaded into the datapath.
pub struct World {
    pub vips: Vec<IpAddr>,
    /// The addresses replies come back to (full NAT sources).
    pub snat: Vec<IpAddr>,
    /// (VIP, IP protocol, port) of every listener.
    pub listeners: Vec<(IpAddr, u8, u16)>,
}

impl World {
    fn is_vip(&self, a: &[u8]) -> bool {
        self.vips.iter().any(|v| octets(*v) == a)
    }

    fn is_snat(&self, a: &[u8]) -> bool {
        self.snat.iter().any(|v| octets(*v) == a)
    }

    /// A VIP or a SNAT address.
    fn maybe_ours(&self, a: &[u8]) -> bool {
        self.is_vip(a) || self.is_snat(a)
    }

    fn is_listener(&self, vip: &[u8], proto: u8, port: u16) -> bool {
        self.listeners.iter().any(|(v, p, n)| octets(*v) == vip && *p == proto && *n == port)
    }

    /// Some VIP or SNAT address occurs somewhere in `f` (at any offset).
    fn mentions_ours(&self, f: &[u8]) -> bool {
        self.vips.iter().chain(&self.snat).any(|a| {
            let o = octets(*a);
            f.windows(o.len()).any(|w| w == o)
        })
    }
}

pub fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// `Some(why)` when `f` is certainly not the load balancer's business: the program must
/// then answer PASS and leave every byte as it was.
pub fn not_ours(f: &[u8], w: &World) -> Option<&'static str> {
    if f.len() < 14 {
        return Some("shorter than an Ethernet header");
    }
    let ethertype = be16(f, 12);
    if ethertype != 0x0800 && ethertype != 0x86dd {
        return Some("EtherType not IPv4/IPv6 (VLAN tags included)");
    }
    if !w.mentions_ours(f) {
        return Some("no VIP or SNAT address anywhere in the frame");
    }
    if ethertype == 0x0800 { v4(f, w) } else { v6(f, w) }
}

fn v4(f: &[u8], w: &World) -> Option<&'static str> {
    if f.len() < 14 + 20 {
        return Some("IPv4 header cut");
    }
    let (vihl, proto) = (f[14], f[23]);
    let ihl = (vihl & 0x0f) as usize * 4;
    let frag = be16(f, 20);
    if proto == ICMP {
        if ihl < 20 {
            return Some("ICMP with IHL < 5");
        }
        if frag & 0x3fff != 0 {
            return Some("ICMP in fragments");
        }
        let icmp = 14 + ihl;
        if f.len() < icmp + 8 {
            return Some("ICMP header cut");
        }
        if ![3, 11, 12].contains(&f[icmp]) {
            return Some("ICMP, not an error");
        }
        let inner = icmp + 8;
        if f.len() < inner + 20 {
            return Some("ICMP error: quoted header cut");
        }
        let iihl = (f[inner] & 0x0f) as usize * 4;
        let iproto = f[inner + 9];
        if f[inner] >> 4 != 4 || !(20..=60).contains(&iihl) || (iproto != TCP && iproto != UDP) {
            return Some("ICMP error quoting no IPv4 TCP/UDP packet");
        }
        if f.len() < inner + iihl + 4 {
            return Some("ICMP error: quoted ports cut");
        }
        if !w.maybe_ours(&f[inner + 12..inner + 16]) {
            return Some("ICMP error quoting a packet not sent from a VIP or SNAT address");
        }
        return None;
    }
    if proto != TCP && proto != UDP {
        return Some("IPv4, not TCP/UDP/ICMP");
    }
    if vihl >> 4 != 4 || ihl < 20 {
        return Some("malformed IPv4 header (version or IHL)");
    }
    let dst = &f[30..34];
    if !w.maybe_ours(dst) {
        return Some("TCP/UDP not to a VIP or SNAT address");
    }
    if frag & 0x1fff != 0 {
        // A later fragment borrows the ports its first fragment recorded.
        return None;
    }
    l4(f, w, 14 + ihl, proto, dst)
}

/// The transport header at `off` of a packet to `dst`, not a later fragment.
fn l4(f: &[u8], w: &World, off: usize, proto: u8, dst: &[u8]) -> Option<&'static str> {
    let min = if proto == TCP { 20 } else { 8 };
    if f.len() < off + min || off > 0x3fff {
        return Some("transport header cut");
    }
    if w.is_vip(dst) && !w.is_snat(dst) && !w.is_listener(dst, proto, be16(f, off + 2)) {
        return Some("to a VIP, on no listener's port and protocol");
    }
    None
}

fn v6(f: &[u8], w: &World) -> Option<&'static str> {
    if f.len() < 14 + 40 {
        return Some("IPv6 header cut");
    }
    let mut next = f[20];
    if next == ICMPV6 {
        let icmp = 14 + 40;
        if f.len() < icmp + 8 {
            return Some("ICMPv6 header cut");
        }
        if ![1, 2, 3, 4].contains(&f[icmp]) {
            return Some("ICMPv6, not an error");
        }
        let inner = icmp + 8;
        if f.len() < inner + 40 {
            return Some("ICMPv6 error: quoted header cut");
        }
        let iproto = f[inner + 6];
        if iproto != TCP && iproto != UDP {
            return Some("ICMPv6 error quoting no TCP/UDP packet");
        }
        if f.len() < inner + 44 {
            return Some("ICMPv6 error: quoted ports cut");
        }
        if !w.maybe_ours(&f[inner + 8..inner + 24]) {
            return Some("ICMPv6 error quoting a packet not sent from a VIP or SNAT address");
        }
        return None;
    }
    if f[14] >> 4 != 6 {
        return Some("malformed IPv6 header (version)");
    }
    let dst = &f[38..54];
    if !w.maybe_ours(dst) {
        return Some("IPv6 not to a VIP or SNAT address");
    }
    // The extension headers, walked as the datapath walks them.
    let mut off = 14 + 40;
    let mut later_fragment = false;
    for _ in 0..MAX_V6_EXT {
        match next {
            TCP | UDP => break,
            0 | 43 | 60 => {
                if f.len() < off + 2 {
                    return Some("IPv6 extension header cut");
                }
                next = f[off];
                off += (f[off + 1] as usize + 1) * 8;
            }
            44 => {
                if f.len() < off + 8 {
                    return Some("IPv6 fragment header cut");
                }
                next = f[off];
                later_fragment = be16(f, off + 2) & 0xfff8 != 0;
                off += 8;
            }
            _ => return Some("IPv6, no TCP/UDP after the extension headers"),
        }
    }
    if next != TCP && next != UDP {
        return Some("IPv6: too many extension headers, or no TCP/UDP after them");
    }
    if later_fragment {
        return None;
    }
    l4(f, w, off, next, dst)
}
