//! What a PROXY-protocol flow's frames carry, for the packet tests: the headers as the spec
//! writes them (lb-common's reference encoder), Linux's TCP options, and readers for the
//! options a datapath rewrites.
use std::net::{IpAddr, SocketAddr};

use lb_common::proxy_header::{self, Transport};

/// The v2 header of `client` → `vip` (PROXY command), from the reference encoder
/// ([`lb_common::proxy_header::v2`], checked against the spec's bytes).
pub fn v2_header(client: IpAddr, cport: u16, vip: IpAddr, vport: u16, udp: bool) -> Vec<u8> {
    let transport = if udp { Transport::Datagram } else { Transport::Stream };
    encoded(|b| proxy_header::v2(b, SocketAddr::new(client, cport), SocketAddr::new(vip, vport), transport))
}

/// The v1 header (IPv6 as eight lowercase hex groups without leading zeros), from the
/// reference encoder ([`lb_common::proxy_header::v1`]).
pub fn v1_header(client: IpAddr, cport: u16, vip: IpAddr, vport: u16) -> Vec<u8> {
    encoded(|b| proxy_header::v1(b, SocketAddr::new(client, cport), SocketAddr::new(vip, vport)))
}

fn encoded(f: impl FnOnce(&mut [u8]) -> Result<usize, proxy_header::EncodeError>) -> Vec<u8> {
    let mut b = [0u8; proxy_header::MAX_LEN];
    let n = f(&mut b).unwrap_or_else(|e| panic!("{e}"));
    b[..n].to_vec()
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
