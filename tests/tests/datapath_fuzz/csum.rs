//! Checksums of a mutated frame, read leniently: recomputed after a mutation (so some cases
//! arrive with every checksum right, and the datapath's incremental updates can be checked
//! on odd frames), and verified (`None` when the frame cannot be verified: lengths that do
//! not fit, fragments, protocols without a checksum of their own).
use lb_tests::packet::{finish, pseudo_sum, sum16};

/// Where the IP packet's checksummed parts are.
struct Parts {
    /// IPv4 header offset and length (no header checksum in IPv6).
    v4_hdr: Option<(usize, usize)>,
    /// The transport bytes `l4..end`, its protocol, and the pseudo-header's sum (0 for ICMP).
    l4: Option<(usize, usize, u8, u32)>,
    /// A quoted IPv4 header inside an ICMP error (offset, length).
    quoted_v4_hdr: Option<(usize, usize)>,
}

fn be16(f: &[u8], at: usize) -> usize {
    u16::from_be_bytes([f[at], f[at + 1]]) as usize
}

fn pseudo(f: &[u8], src: usize, alen: usize, proto: u8, len: usize) -> u32 {
    pseudo_sum(&f[src..src + 2 * alen], proto, len)
}

fn parts(f: &[u8]) -> Option<Parts> {
    if f.len() < 14 {
        return None;
    }
    match be16(f, 12) {
        0x0800 => {
            if f.len() < 34 || f[14] >> 4 != 4 {
                return None;
            }
            let ihl = (f[14] & 0x0f) as usize * 4;
            let tot = be16(f, 16);
            if ihl < 20 || tot < ihl || 14 + tot > f.len() {
                return None;
            }
            let hdr = Some((14, ihl));
            let (proto, l4, end) = (f[23], 14 + ihl, 14 + tot);
            if be16(f, 20) & 0x3fff != 0 {
                return Some(Parts { v4_hdr: hdr, l4: None, quoted_v4_hdr: None });
            }
            let l4 = match proto {
                6 if end - l4 >= 20 => Some((l4, end, proto, pseudo(f, 26, 4, proto, end - l4))),
                17 if end - l4 >= 8 => Some((l4, end, proto, pseudo(f, 26, 4, proto, end - l4))),
                1 if end - l4 >= 8 => Some((l4, end, proto, 0)),
                _ => None,
            };
            let quoted = match l4 {
                Some((at, end, 1, _)) if [3, 11, 12].contains(&f[at]) && end >= at + 28 && f[at + 8] >> 4 == 4 => {
                    let iihl = (f[at + 8] & 0x0f) as usize * 4;
                    (iihl >= 20 && at + 8 + iihl <= end).then_some((at + 8, iihl))
                }
                _ => None,
            };
            Some(Parts { v4_hdr: hdr, l4, quoted_v4_hdr: quoted })
        }
        0x86dd => {
            if f.len() < 54 {
                return None;
            }
            let end = 54 + be16(f, 18);
            if end > f.len() {
                return None;
            }
            let (mut next, mut off) = (f[20], 54);
            for _ in 0..8 {
                match next {
                    0 | 43 | 60 if off + 2 <= end => {
                        next = f[off];
                        off += (f[off + 1] as usize + 1) * 8;
                    }
                    44 => return None,
                    _ => break,
                }
            }
            if off > end {
                return None;
            }
            let min = match next {
                6 => 20,
                17 | 58 => 8,
                _ => return None,
            };
            if end - off < min {
                return None;
            }
            let l4 = Some((off, end, next, pseudo(f, 22, 16, next, end - off)));
            Some(Parts { v4_hdr: None, l4, quoted_v4_hdr: None })
        }
        _ => None,
    }
}

fn csum_at(proto: u8) -> usize {
    match proto {
        6 => 16,
        17 => 6,
        _ => 2,
    }
}

/// Recompute every checksum `f` has where it can (quoted header, transport, IPv4 header).
pub fn fix(f: &mut [u8]) {
    let Some(p) = parts(f) else { return };
    if let Some((at, len)) = p.quoted_v4_hdr {
        f[at + 10..at + 12].copy_from_slice(&[0, 0]);
        let c = finish(sum16(&f[at..at + len], 0));
        f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
    }
    if let Some((l4, end, proto, pseudo)) = p.l4 {
        let at = l4 + csum_at(proto);
        let keep_none = proto == 17 && f[at] == 0 && f[at + 1] == 0 && p.v4_hdr.is_some();
        if !keep_none {
            f[at..at + 2].copy_from_slice(&[0, 0]);
            let mut c = finish(sum16(&f[l4..end], pseudo));
            if proto == 17 && c == 0 {
                c = 0xffff;
            }
            f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
    }
    if let Some((at, len)) = p.v4_hdr {
        f[at + 10..at + 12].copy_from_slice(&[0, 0]);
        let c = finish(sum16(&f[at..at + len], 0));
        f[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
    }
}

/// Whether every checksum `f` has is right; `None` when `f` has none that can be checked.
pub fn valid(f: &[u8]) -> Option<bool> {
    let p = parts(f)?;
    let mut ok = true;
    let mut checked = false;
    for (at, len) in [p.v4_hdr, p.quoted_v4_hdr].into_iter().flatten() {
        ok &= finish(sum16(&f[at..at + len], 0)) == 0;
        checked = true;
    }
    if let Some((l4, end, proto, pseudo)) = p.l4 {
        let at = l4 + csum_at(proto);
        let none = proto == 17 && f[at] == 0 && f[at + 1] == 0 && p.v4_hdr.is_some();
        ok &= none || finish(sum16(&f[l4..end], pseudo)) == 0;
        checked = true;
    }
    checked.then_some(ok)
}
