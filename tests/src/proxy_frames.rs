//! What a PROXY-protocol flow's frames carry, for the packet tests: the headers as the spec
//! writes them, Linux's TCP options, and readers for the options a datapath rewrites.
use std::net::IpAddr;

/// An address's bytes in network order.
pub fn octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The v2 header the spec defines for `client` → `vip` (PROXY command).
pub fn v2_header(client: IpAddr, cport: u16, vip: IpAddr, vport: u16, udp: bool) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21);
    h.push(if client.is_ipv4() { 0x10 } else { 0x20 } | if udp { 2 } else { 1 });
    h.extend_from_slice(&(if client.is_ipv4() { 12u16 } else { 36 }).to_be_bytes());
    h.extend_from_slice(&octets(client));
    h.extend_from_slice(&octets(vip));
    h.extend_from_slice(&cport.to_be_bytes());
    h.extend_from_slice(&vport.to_be_bytes());
    h
}

/// The v1 header (IPv6 as eight lowercase hex groups without leading zeros).
pub fn v1_header(client: IpAddr, cport: u16, vip: IpAddr, vport: u16) -> Vec<u8> {
    let text = |a: IpAddr| match a {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a.segments().iter().map(|g| format!("{g:x}")).collect::<Vec<_>>().join(":"),
    };
    let fam = if client.is_ipv4() { "TCP4" } else { "TCP6" };
    format!("PROXY {fam} {} {} {cport} {vport}\r\n", text(client), text(vip)).into_bytes()
}

/// Linux's SYN options: MSS, SACK permitted, timestamps, window scale.
pub fn syn_options(mss: u16) -> Vec<u8> {
    let m = mss.to_be_bytes();
    vec![2, 4, m[0], m[1], 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7]
}

/// Linux's ACK options with SACK blocks: NOP NOP TS NOP NOP SACK.
pub fn sack_options(blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 1, 1, 1, 5, 2 + 8 * blocks.len() as u8];
    for (l, r) in blocks {
        o.extend_from_slice(&l.to_be_bytes());
        o.extend_from_slice(&r.to_be_bytes());
    }
    o
}

/// (left, right) edges of the SACK option in `opts`, if any.
pub fn sack_blocks(opts: &[u8]) -> Vec<(u32, u32)> {
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let l = opts[i + 1] as usize;
                if kind == 5 {
                    let be = |o: usize| u32::from_be_bytes(opts[o..o + 4].try_into().unwrap());
                    return (0..(l - 2) / 8).map(|b| (be(i + 2 + 8 * b), be(i + 6 + 8 * b))).collect();
                }
                i += l.max(2);
            }
        }
    }
    Vec::new()
}

/// The MSS option's value in `opts`, if any.
pub fn mss_of(opts: &[u8]) -> Option<u16> {
    opts.windows(4).position(|w| w[0] == 2 && w[1] == 4).map(|i| u16::from_be_bytes([opts[i + 2], opts[i + 3]]))
}
