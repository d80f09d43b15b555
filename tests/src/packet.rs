//! Crafted frames for BPF_PROG_TEST_RUN, and a reader that checks what came out, with its
//! own full checksum computation (independent of the datapath's incremental updates).
use std::net::{IpAddr, Ipv4Addr};

pub const ETH_IP: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV6: u16 = 0x86dd;
pub const ETH_VLAN: u16 = 0x8100;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;

/// Internet checksum of `data` added to `initial` (not yet inverted).
pub fn sum16(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word =
            if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
        sum += word as u32;
    }
    sum
}

pub fn finish(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn pseudo(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    let mut addrs = octets(src);
    addrs.extend_from_slice(&octets(dst));
    pseudo_sum(&addrs, proto, len)
}

/// The ones' complement sum of a TCP/UDP pseudo-header: `addrs` is the source then the
/// destination address (8 bytes for IPv4, 32 for IPv6), `len` the transport length.
pub fn pseudo_sum(addrs: &[u8], proto: u8, len: usize) -> u32 {
    let mut p = addrs.to_vec();
    if addrs.len() == 8 {
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    sum16(&p, 0)
}

/// A flow's endpoints (both of the same family).
#[derive(Debug, Clone, Copy)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl Flow {
    pub fn new(src: impl Into<IpAddr>, sport: u16, dst: impl Into<IpAddr>, dport: u16) -> Flow {
        Flow { src: src.into(), dst: dst.into(), sport, dport }
    }
}

/// Builder for Ethernet/IPv4|IPv6/TCP|UDP frames with valid checksums.
#[derive(Debug, Clone)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub flow: Flow,
    pub proto: u8,
    pub tcp_flags: u8,
    /// IPv4 options (a multiple of 4 bytes).
    pub ip_options: Vec<u8>,
    /// IPv6 extension headers before the transport header: (next-header value, bytes).
    pub v6_ext: Vec<(u8, Vec<u8>)>,
    pub frag_off: u16,
    pub ip_id: u16,
    pub payload: Vec<u8>,
    /// Send a UDP checksum of 0 ("none").
    pub udp_no_csum: bool,
    /// TCP sequence and acknowledgment numbers.
    pub seq: u32,
    pub ack: u32,
    /// TCP options (padded to a multiple of 4 bytes with EOL).
    pub tcp_options: Vec<u8>,
}

impl Frame {
    pub fn tcp(flow: Flow, flags: u8) -> Frame {
        Frame {
            dst_mac: [0x02, 0, 0, 0, 0, 0xaa],
            src_mac: [0x02, 0, 0, 0, 0, 0xcc],
            flow,
            proto: TCP,
            tcp_flags: flags,
            ip_options: Vec::new(),
            v6_ext: Vec::new(),
            frag_off: 0x4000, // DF
            ip_id: 0x1234,
            payload: Vec::new(),
            udp_no_csum: false,
            seq: 1000,
            ack: if flags & ACK != 0 { 2000 } else { 0 },
            tcp_options: Vec::new(),
        }
    }

    pub fn seq_ack(mut self, seq: u32, ack: u32) -> Frame {
        self.seq = seq;
        self.ack = ack;
        self
    }

    pub fn options(mut self, o: &[u8]) -> Frame {
        self.tcp_options = o.to_vec();
        while !self.tcp_options.len().is_multiple_of(4) {
            self.tcp_options.push(0);
        }
        self
    }

    pub fn udp(flow: Flow) -> Frame {
        Frame { proto: UDP, ..Frame::tcp(flow, 0) }
    }

    pub fn payload(mut self, p: &[u8]) -> Frame {
        self.payload = p.to_vec();
        self
    }

    /// The transport header and payload, with a valid checksum.
    pub fn l4(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&self.flow.sport.to_be_bytes());
        h.extend_from_slice(&self.flow.dport.to_be_bytes());
        let csum_at = if self.proto == TCP {
            h.extend_from_slice(&self.seq.to_be_bytes());
            h.extend_from_slice(&self.ack.to_be_bytes());
            h.push(((5 + self.tcp_options.len() / 4) as u8) << 4);
            h.push(self.tcp_flags);
            h.extend_from_slice(&64240u16.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]); // csum, urg
            h.extend_from_slice(&self.tcp_options);
            16
        } else {
            h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            6
        };
        h.extend_from_slice(&self.payload);
        if !(self.proto == UDP && self.udp_no_csum) {
            let mut c = finish(sum16(&h, pseudo(self.flow.src, self.flow.dst, self.proto, h.len())));
            if self.proto == UDP && c == 0 {
                c = 0xffff;
            }
            h[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
        }
        h
    }

    pub fn bytes(&self) -> Vec<u8> {
        let l4 = self.l4();
        self.with_l3_payload(&l4)
    }

    /// The frame carrying `l3_payload` (e.g. part of a fragmented datagram) after the IP
    /// header (and extension headers).
    pub fn with_l3_payload(&self, l3_payload: &[u8]) -> Vec<u8> {
        match (self.flow.src, self.flow.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut f = eth(self.dst_mac, self.src_mac, ETH_IP);
                f.extend_from_slice(&ipv4_header(
                    s,
                    d,
                    self.proto,
                    &self.ip_options,
                    self.ip_id,
                    self.frag_off,
                    l3_payload.len(),
                ));
                f.extend_from_slice(l3_payload);
                f
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = Vec::new();
                let mut next = self.proto;
                for (nh, bytes) in self.v6_ext.iter().rev() {
                    let mut e = bytes.clone();
                    e[0] = next;
                    next = *nh;
                    e.extend_from_slice(&ext);
                    ext = e;
                }
                let mut f = eth(self.dst_mac, self.src_mac, ETH_IPV6);
                f.extend_from_slice(&[0x60, 0, 0, 0]);
                f.extend_from_slice(&((ext.len() + l3_payload.len()) as u16).to_be_bytes());
                f.push(next);
                f.push(64);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&ext);
                f.extend_from_slice(l3_payload);
                f
            }
            _ => panic!("mixed address families"),
        }
    }
}

pub fn ipv4_header(
    s: Ipv4Addr,
    d: Ipv4Addr,
    proto: u8,
    options: &[u8],
    id: u16,
    frag_off: u16,
    payload: usize,
) -> Vec<u8> {
    let ihl = 20 + options.len();
    assert!(ihl.is_multiple_of(4) && ihl <= 60);
    let mut ip = Vec::new();
    ip.push(0x40 | (ihl / 4) as u8);
    ip.push(0);
    ip.extend_from_slice(&((ihl + payload) as u16).to_be_bytes());
    ip.extend_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&frag_off.to_be_bytes());
    ip.push(64);
    ip.push(proto);
    ip.extend_from_slice(&[0, 0]);
    ip.extend_from_slice(&s.octets());
    ip.extend_from_slice(&d.octets());
    ip.extend_from_slice(options);
    let c = finish(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// What a frame that left the datapath says, with its checksums verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub flow: (IpAddr, u16, IpAddr, u16),
    pub proto: u8,
    /// Always true for IPv6 (no header checksum).
    pub ip_csum_ok: bool,
    pub l4_csum_ok: bool,
    /// The raw L4 checksum field.
    pub l4_csum: u16,
    pub ip_options: Vec<u8>,
    pub payload: Vec<u8>,
    /// TCP only (zero / empty for UDP).
    pub seq: u32,
    pub ack: u32,
    pub tcp_flags: u8,
    pub tcp_options: Vec<u8>,
    /// The IP packet's length from its header (IPv4 total length, IPv6 40 + payload length).
    pub ip_len: usize,
}

/// Parse an Ethernet/IPv4|IPv6/TCP|UDP frame (IPv6 without extension headers, or with
/// those built by [`Frame`]) and verify its checksums from scratch.
pub fn parse(f: &[u8]) -> Parsed {
    assert!(f.len() >= 34, "frame too short: {}", f.len());
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let ip = &f[14..];
    let ip_len;
    let (src, dst, proto, l4, options, ip_ok): (IpAddr, IpAddr, u8, &[u8], Vec<u8>, bool) = if ethertype == ETH_IP {
        let ihl = ((ip[0] & 0xf) as usize) * 4;
        let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        ip_len = tot;
        (
            Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]).into(),
            Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]).into(),
            ip[9],
            &ip[ihl..tot],
            ip[20..ihl].to_vec(),
            finish(sum16(&ip[..ihl], 0)) == 0,
        )
    } else {
        assert_eq!(ethertype, ETH_IPV6);
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        ip_len = 40 + plen;
        let mut next = ip[6];
        let mut off = 40;
        while next != TCP && next != UDP {
            let len = (ip[off + 1] as usize + 1) * 8;
            next = ip[off];
            off += len;
        }
        let s: [u8; 16] = ip[8..24].try_into().unwrap();
        let d: [u8; 16] = ip[24..40].try_into().unwrap();
        (s.into(), d.into(), next, &ip[off..40 + plen], Vec::new(), true)
    };
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let (csum_at, hlen) = if proto == TCP { (16, ((l4[12] >> 4) as usize) * 4) } else { (6, 8) };
    let l4_csum = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    let l4_ok = if proto == UDP && l4_csum == 0 && src.is_ipv4() {
        true
    } else {
        finish(sum16(l4, pseudo(src, dst, proto, l4.len()))) == 0
    };
    Parsed {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        flow: (src, sport, dst, dport),
        proto,
        ip_csum_ok: ip_ok,
        l4_csum_ok: l4_ok,
        l4_csum,
        ip_options: options,
        payload: l4[hlen..].to_vec(),
        seq: if proto == TCP { u32::from_be_bytes(l4[4..8].try_into().unwrap()) } else { 0 },
        ack: if proto == TCP { u32::from_be_bytes(l4[8..12].try_into().unwrap()) } else { 0 },
        tcp_flags: if proto == TCP { l4[13] } else { 0 },
        tcp_options: if proto == TCP { l4[20..hlen].to_vec() } else { Vec::new() },
        ip_len,
    }
}

/// Two IPv4 fragments of one UDP datagram after a rewrite (Ethernet frames, 20-byte IP
/// headers), checked and put back together: both IP checksums valid and both fragments
/// between the same addresses; the reassembled datagram parsed (its UDP checksum verified).
pub fn reassemble_udp_fragments(out1: &[u8], out2: &[u8], id: u16) -> Parsed {
    let (ip1, ip2) = (&out1[14..34], &out2[14..34]);
    assert_eq!(ip1[12..20], ip2[12..20], "both fragments between the same addresses");
    assert_eq!(ip1[4..6], ip2[4..6], "both fragments with the same identification");
    for ip in [ip1, ip2] {
        assert_eq!(finish(sum16(ip, 0)), 0, "IP checksum");
    }
    let src = Ipv4Addr::new(ip1[12], ip1[13], ip1[14], ip1[15]);
    let dst = Ipv4Addr::new(ip1[16], ip1[17], ip1[18], ip1[19]);
    let mut datagram = out1[34..].to_vec();
    datagram.extend_from_slice(&out2[34..]);
    let mut frame = eth([0; 6], [0; 6], ETH_IP);
    frame.extend_from_slice(&ipv4_header(src, dst, UDP, &[], id, 0, datagram.len()));
    frame.extend_from_slice(&datagram);
    parse(&frame)
}

/// A bare IPv4 TCP SYN (no Ethernet header, for a raw socket) from `src:sport` to
/// `dst:dport` with sequence `seq`, checksums right, so a backend's kernel answers it as it
/// would a real one.
pub fn syn_v4(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, sport: u16, dport: u16, seq: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ip_csum = finish(sum16(&p[..20], 0));
    p[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x02; // SYN
    p[34..36].copy_from_slice(&64240u16.to_be_bytes());
    let tcp_csum = finish(sum16(&p[20..40], pseudo_sum(&p[12..20], 6, 20)));
    p[36..38].copy_from_slice(&tcp_csum.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn built_frames_have_valid_checksums() {
        let v4 = Flow::new(Ipv4Addr::new(1, 2, 3, 4), 1, Ipv4Addr::new(5, 6, 7, 8), 2);
        let v6 =
            Flow::new("2001:db8::1".parse::<Ipv6Addr>().unwrap(), 1, "2001:db8::2".parse::<Ipv6Addr>().unwrap(), 2);
        let mut with_ext = Frame::tcp(v6, SYN);
        with_ext.v6_ext = vec![(60, vec![0, 0, 1, 4, 0, 0, 0, 0])];
        for f in [
            Frame::tcp(v4, SYN),
            Frame::udp(v4).payload(b"abc"),
            Frame::tcp(v6, SYN),
            Frame::udp(v6).payload(b"x"),
            with_ext,
        ] {
            let p = parse(&f.bytes());
            assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
            assert_eq!(p.flow, (f.flow.src, f.flow.sport, f.flow.dst, f.flow.dport));
        }
        let mut bad = Frame::tcp(v4, SYN).bytes();
        bad[40] ^= 1;
        assert!(!parse(&bad).l4_csum_ok);
    }
}
