//! Crafted frames for BPF_PROG_TEST_RUN, and a reader that checks what came out, with its
//! own full checksum computation (independent of the datapath's incremental updates).
use std::net::Ipv4Addr;

pub const ETH_IP: u16 = 0x0800;
pub const ETH_ARP: u16 = 0x0806;
pub const ETH_IPV6: u16 = 0x86dd;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;

/// Internet checksum of `data` added to `initial` (not yet inverted).
pub fn sum16(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 { u16::from_be_bytes([chunk[0], chunk[1]]) } else { u16::from_be_bytes([chunk[0], 0]) };
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

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    sum16(&p, 0)
}

/// An IPv4 flow endpoint pair.
#[derive(Debug, Clone, Copy)]
pub struct V4 {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

/// Builder for Ethernet/IPv4/TCP|UDP frames with valid checksums.
#[derive(Debug, Clone)]
pub struct Frame {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub flow: V4,
    pub proto: u8,
    pub tcp_flags: u8,
    pub ip_options: Vec<u8>,
    pub frag_off: u16,
    pub payload: Vec<u8>,
    /// Send a UDP checksum of 0 ("none").
    pub udp_no_csum: bool,
}

impl Frame {
    pub fn tcp(flow: V4, flags: u8) -> Frame {
        Frame {
            dst_mac: [0x02, 0, 0, 0, 0, 0xaa],
            src_mac: [0x02, 0, 0, 0, 0, 0xcc],
            flow,
            proto: TCP,
            tcp_flags: flags,
            ip_options: Vec::new(),
            frag_off: 0x4000, // DF
            payload: Vec::new(),
            udp_no_csum: false,
        }
    }

    pub fn udp(flow: V4) -> Frame {
        Frame { proto: UDP, ..Frame::tcp(flow, 0) }
    }

    pub fn payload(mut self, p: &[u8]) -> Frame {
        self.payload = p.to_vec();
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let l4 = self.l4();
        let ihl = 20 + self.ip_options.len();
        assert!(ihl % 4 == 0 && ihl <= 60);
        let mut ip = Vec::new();
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(0);
        ip.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        ip.extend_from_slice(&[0x12, 0x34]);
        ip.extend_from_slice(&self.frag_off.to_be_bytes());
        ip.push(64);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.flow.src.octets());
        ip.extend_from_slice(&self.flow.dst.octets());
        ip.extend_from_slice(&self.ip_options);
        let c = finish(sum16(&ip, 0));
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let mut f = eth(self.dst_mac, self.src_mac, ETH_IP);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&l4);
        f
    }

    fn l4(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(&self.flow.sport.to_be_bytes());
        h.extend_from_slice(&self.flow.dport.to_be_bytes());
        let csum_at;
        if self.proto == TCP {
            h.extend_from_slice(&1000u32.to_be_bytes()); // seq
            h.extend_from_slice(&(if self.tcp_flags & ACK != 0 { 2000u32 } else { 0 }).to_be_bytes());
            h.push(5 << 4);
            h.push(self.tcp_flags);
            h.extend_from_slice(&64240u16.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0]); // csum, urg
            csum_at = 16;
        } else {
            h.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            csum_at = 6;
        }
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
    pub flow: (Ipv4Addr, u16, Ipv4Addr, u16),
    pub proto: u8,
    pub ip_csum_ok: bool,
    pub l4_csum_ok: bool,
    /// The raw L4 checksum field.
    pub l4_csum: u16,
    pub ip_options: Vec<u8>,
    pub payload: Vec<u8>,
}

/// Parse an Ethernet/IPv4/TCP|UDP frame and verify both checksums from scratch.
pub fn parse(f: &[u8]) -> Parsed {
    assert!(f.len() >= 34, "frame too short: {}", f.len());
    let ip = &f[14..];
    let ihl = ((ip[0] & 0xf) as usize) * 4;
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let proto = ip[9];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let l4 = &ip[ihl..tot];
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    let (csum_at, hlen) = if proto == TCP { (16, ((l4[12] >> 4) as usize) * 4) } else { (6, 8) };
    let l4_csum = u16::from_be_bytes([l4[csum_at], l4[csum_at + 1]]);
    let l4_ok = if proto == UDP && l4_csum == 0 {
        true
    } else {
        finish(sum16(l4, pseudo(src, dst, proto, l4.len()))) == 0
    };
    Parsed {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        flow: (src, sport, dst, dport),
        proto,
        ip_csum_ok: finish(sum16(&ip[..ihl], 0)) == 0,
        l4_csum_ok: l4_ok,
        l4_csum,
        ip_options: ip[20..ihl].to_vec(),
        payload: l4[hlen..].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_have_valid_checksums() {
        let flow = V4 { src: Ipv4Addr::new(1, 2, 3, 4), dst: Ipv4Addr::new(5, 6, 7, 8), sport: 1, dport: 2 };
        for f in [Frame::tcp(flow, SYN), Frame::udp(flow).payload(b"abc")] {
            let p = parse(&f.bytes());
            assert!(p.ip_csum_ok && p.l4_csum_ok, "{p:?}");
        }
        let mut bad = Frame::tcp(flow, SYN).bytes();
        bad[40] ^= 1;
        assert!(!parse(&bad).l4_csum_ok);
    }
}
