//! Mutations of a valid frame: bit flips, byte sets, cuts at layer boundaries and at random
//! lengths, garbage appended or inserted, VLAN tags pushed, and header fields (lengths,
//! offsets, flags, protocols, option lengths, addresses, ports) set to extreme values.
//! Each mutation is described in words, for the report of a failing case.
use crate::{
    csum,
    layout::{self, Kind},
    rng::Rng,
};

/// Frames BPF_PROG_TEST_RUN takes: at least an Ethernet header, at most this (a page minus
/// the kernel's headroom and tailroom is about 3.5 KB).
pub const MIN_FRAME: usize = 14;
pub const MAX_FRAME: usize = 2048;

/// Values worth trying in address and port fields: the datapath's own and some others.
pub struct Palette {
    pub addrs4: Vec<[u8; 4]>,
    pub addrs6: Vec<[u8; 16]>,
    pub ports: Vec<u16>,
}

/// Apply one to four mutations to `f`, then sometimes recompute its checksums; returns what
/// was done.
pub fn mutate(rng: &mut Rng, f: &mut Vec<u8>, p: &Palette) -> Vec<String> {
    let mut n = 1;
    while n < 4 && rng.chance(45) {
        n += 1;
    }
    let mut done = Vec::new();
    for _ in 0..n {
        done.push(one(rng, f, p));
        if f.len() < MIN_FRAME {
            f.resize(MIN_FRAME, 0);
        }
        f.truncate(MAX_FRAME);
    }
    if rng.chance(35) {
        csum::fix(f);
        done.push("checksums recomputed".into());
    }
    done
}

fn one(rng: &mut Rng, f: &mut Vec<u8>, p: &Palette) -> String {
    let l = layout::read(f);
    match rng.below(100) {
        0..=34 if !l.fields.is_empty() => {
            let field = *rng.pick(&l.fields);
            set_field(rng, f, field.at, field.kind, p)
        }
        0..=44 => {
            let bits = rng.range(1, 4);
            let mut at = Vec::new();
            for _ in 0..bits {
                let i = header_biased(rng, f.len());
                let b = rng.below(8);
                f[i] ^= 1 << b;
                at.push(format!("{i}.{b}"));
            }
            format!("flip bits {}", at.join(","))
        }
        45..=54 => {
            let i = header_biased(rng, f.len());
            let r8 = rng.byte();
            let v = *rng.pick(&[0u8, 1, 0x7f, 0x80, 0xfe, 0xff, r8]);
            f[i] = v;
            format!("byte {i} = {v:#04x}")
        }
        55..=69 => {
            let b = *rng.pick(&l.bounds);
            let at = (b + rng.below(4)).saturating_sub(rng.below(4)).max(MIN_FRAME);
            f.truncate(at);
            format!("cut at {at} (layer boundary {b})")
        }
        70..=76 => {
            let at = rng.range(MIN_FRAME, f.len().max(MIN_FRAME));
            f.truncate(at);
            format!("cut at {at}")
        }
        77..=84 => {
            let n = if rng.chance(80) { rng.range(1, 64) } else { rng.range(65, 1200) };
            let fill = rng.below(3);
            for _ in 0..n {
                let b = match fill {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.byte(),
                };
                f.push(b);
            }
            format!("append {n} bytes (fill {fill})")
        }
        85..=91 => {
            let b = *rng.pick(&l.bounds);
            let at = b.min(f.len());
            if rng.chance(50) {
                let n = rng.range(1, 24);
                let bytes = rng.bytes(n);
                f.splice(at..at, bytes);
                format!("insert {n} bytes at {at}")
            } else {
                let n = rng.range(1, 24).min(f.len() - at);
                f.drain(at..at + n);
                format!("delete {n} bytes at {at}")
            }
        }
        92..=95 => {
            let tpid: u16 = *rng.pick(&[0x8100, 0x88a8]);
            let vid = rng.below(4096) as u16;
            let mut tag = tpid.to_be_bytes().to_vec();
            tag.extend_from_slice(&vid.to_be_bytes());
            f.splice(12..12, tag);
            format!("push VLAN tag {tpid:#06x} vid {vid}")
        }
        _ => {
            // A header region copied over another boundary (a header repeated or smeared).
            let (a, b) = (*rng.pick(&l.bounds), *rng.pick(&l.bounds));
            let n = rng.range(1, 40);
            let chunk: Vec<u8> = f[a.min(f.len())..(a + n).min(f.len())].to_vec();
            let end = (b + chunk.len()).min(f.len());
            let k = end.saturating_sub(b);
            if k > 0 {
                f[b..end].copy_from_slice(&chunk[..k]);
            }
            format!("copy {k} bytes from {a} over {b}")
        }
    }
}

/// An offset, most often in the first 128 bytes (the headers).
fn header_biased(rng: &mut Rng, len: usize) -> usize {
    if rng.chance(80) { rng.below(len.min(128)) } else { rng.below(len) }
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn get16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

/// Set the field at `at` to a value chosen for its kind.
fn set_field(rng: &mut Rng, f: &mut [u8], at: usize, kind: Kind, p: &Palette) -> String {
    let r16 = rng.next() as u16;
    let r8 = rng.byte();
    match kind {
        Kind::EtherType => {
            let v = *rng.pick(&[0x0800, 0x86dd, 0x8100, 0x88a8, 0x0806, 0x8847, 0x88cc, 0, 0xffff, r16]);
            put16(f, at, v);
            format!("EtherType@{at} = {v:#06x}")
        }
        Kind::Ihl => {
            let v = rng.below(16) as u8;
            f[at] = (f[at] & 0xf0) | v;
            format!("IHL@{at} = {v}")
        }
        Kind::Version => {
            let v = *rng.pick(&[4u8, 6, 0, 5, 15, r8 & 0x0f]);
            f[at] = (f[at] & 0x0f) | (v << 4);
            format!("IP version@{at} = {v}")
        }
        Kind::Length => {
            let cur = get16(f, at);
            let near = cur.wrapping_add(rng.range(1, 64) as u16).wrapping_sub(rng.range(0, 64) as u16);
            let v = *rng.pick(&[0, 1, 7, 8, 19, 20, 39, 40, 0x7fff, 0xffff, near, r16]);
            put16(f, at, v);
            format!("length@{at} = {v} (was {cur})")
        }
        Kind::FragOff => {
            let v = *rng.pick(&[0x2000, 0x0001, 0x1fff, 0x3fff, 0x4000, 0x6000, 0x2001, 0xffff, 0, 0x0003, r16]);
            put16(f, at, v);
            format!("IPv4 flags+offset@{at} = {v:#06x}")
        }
        Kind::FragOff6 => {
            let v = *rng.pick(&[0x0001, 0x0008, 0x0018, 0xfff8, 0xfff9, 0, 0xffff, r16]);
            put16(f, at, v);
            format!("IPv6 fragment offset+M@{at} = {v:#06x}")
        }
        Kind::Proto => {
            let v = *rng.pick(&[0u8, 1, 6, 17, 43, 44, 47, 50, 51, 58, 59, 60, 132, 255, r8]);
            f[at] = v;
            format!("protocol/next header@{at} = {v}")
        }
        Kind::ExtLen => {
            let v = *rng.pick(&[0u8, 1, 2, 3, 0x7f, 0xff, r8]);
            f[at] = v;
            format!("extension header length@{at} = {v}")
        }
        Kind::Addr4 => {
            let v = if rng.chance(80) { *rng.pick(&p.addrs4) } else { [r8, rng.byte(), rng.byte(), rng.byte()] };
            f[at..at + 4].copy_from_slice(&v);
            format!("IPv4 address@{at} = {}", std::net::Ipv4Addr::from(v))
        }
        Kind::Addr6 => {
            let v = if rng.chance(80) {
                *rng.pick(&p.addrs6)
            } else {
                let mut a = [0u8; 16];
                a.copy_from_slice(&rng.bytes(16));
                a
            };
            f[at..at + 16].copy_from_slice(&v);
            format!("IPv6 address@{at} = {}", std::net::Ipv6Addr::from(v))
        }
        Kind::Port => {
            let snat = 10000 + rng.below(20000) as u16;
            let v = if rng.chance(50) { *rng.pick(&p.ports) } else { *rng.pick(&[0, 1, 65535, snat, r16]) };
            put16(f, at, v);
            format!("port@{at} = {v}")
        }
        Kind::Seq => {
            let cur = u32::from_be_bytes(f[at..at + 4].try_into().unwrap());
            let r32 = rng.next() as u32;
            let v = *rng.pick(&[
                0,
                u32::MAX,
                0x7fff_ffff,
                cur.wrapping_add(1),
                cur.wrapping_sub(1),
                cur ^ 0x8000_0000,
                r32,
            ]);
            f[at..at + 4].copy_from_slice(&v.to_be_bytes());
            format!("seq/ack@{at} = {v}")
        }
        Kind::Doff => {
            let v = rng.below(16) as u8;
            f[at] = (f[at] & 0x0f) | (v << 4);
            format!("TCP data offset@{at} = {v}")
        }
        Kind::TcpFlags => {
            let v = *rng.pick(&[0x02u8, 0x12, 0x10, 0x01, 0x04, 0x11, 0x14, 0x03, 0x06, 0x07, 0x18, 0x3f, 0, 0xff, r8]);
            f[at] = v;
            format!("TCP flags@{at} = {v:#04x}")
        }
        Kind::Plain16 => {
            let v = *rng.pick(&[0, 0xffff, r16]);
            put16(f, at, v);
            format!("16-bit field@{at} = {v:#06x}")
        }
        Kind::Plain8 => {
            let v = *rng.pick(&[0u8, 1, 0xff, r8]);
            f[at] = v;
            format!("8-bit field@{at} = {v}")
        }
        Kind::OptionType => {
            let v = *rng.pick(&[0u8, 1, 2, 3, 4, 5, 7, 8, 19, 28, 29, 30, 34, 68, 148, 253, 254, 255, r8]);
            f[at] = v;
            format!("option kind@{at} = {v}")
        }
        Kind::OptLen => {
            let v = *rng.pick(&[0u8, 1, 2, 3, 4, 5, 6, 8, 10, 18, 26, 34, 40, 41, 0x7f, 0xff, r8]);
            f[at] = v;
            format!("option length@{at} = {v}")
        }
        Kind::IcmpType => {
            let v = *rng.pick(&[0u8, 1, 2, 3, 4, 5, 8, 11, 12, 128, 129, 135, r8]);
            f[at] = v;
            format!("ICMP type@{at} = {v}")
        }
    }
}
