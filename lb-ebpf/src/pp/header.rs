//! The PROXY protocol header of a flow: v1 text (`PROXY TCP4 ...\r\n`, built right to left
//! without a stack buffer) or v2 binary, from the flow's client-side key.
use lb_common::{
    FAMILY_V4, FlowKey, PROTO_TCP, PROTO_UDP, pp,
    proxy_header::{
        V2_ADDR_LEN_V4, V2_ADDR_LEN_V6, V2_AF_INET, V2_AF_INET6, V2_DGRAM, V2_FIXED_LEN, V2_PROXY, V2_SIGNATURE,
        V2_STREAM,
    },
};

use crate::maps::{PP_BUF, PpScratch};

/// Length of a v2 header (PROXY command, TCP or UDP) for `family`.
#[inline(always)]
pub fn v2_len(family: u8) -> u16 {
    V2_FIXED_LEN as u16 + if family == FAMILY_V4 { V2_ADDR_LEN_V4 } else { V2_ADDR_LEN_V6 }
}

/// Decimal digits of `v` (at most 5).
#[inline(always)]
fn dec_digits(v: u32) -> u32 {
    1 + (v >= 10) as u32 + (v >= 100) as u32 + (v >= 1000) as u32 + (v >= 10000) as u32
}

/// Hex digits of a 16-bit group without leading zeros (at most 4).
#[inline(always)]
fn hex_digits(v: u32) -> u32 {
    1 + (v >= 0x10) as u32 + (v >= 0x100) as u32 + (v >= 0x1000) as u32
}

/// The network-order bytes of an address word.
#[inline(always)]
fn bytes(w: u32) -> [u8; 4] {
    w.to_ne_bytes()
}

/// Length of an address in v1 text: dotted quad, or eight hex groups (`x:x:x:x:x:x:x:x`).
#[inline(always)]
fn addr_text_len(a: &lb_common::Addr, family: u8) -> u32 {
    if family == FAMILY_V4 {
        let b = bytes(a[0]);
        3 + dec_digits(b[0] as u32) + dec_digits(b[1] as u32) + dec_digits(b[2] as u32) + dec_digits(b[3] as u32)
    } else {
        let mut n = 7;
        let mut i = 0;
        while i < 4 {
            let b = bytes(a[i]);
            n += hex_digits(((b[0] as u32) << 8) | b[1] as u32) + hex_digits(((b[2] as u32) << 8) | b[3] as u32);
            i += 1;
        }
        n
    }
}

/// Length of the v1 header `PROXY TCP4 <src> <dst> <sport> <dport>\r\n` of a flow.
#[inline(always)]
pub fn v1_len(key: &FlowKey) -> u16 {
    let n = 11
        + addr_text_len(&key.src, key.family)
        + 1
        + addr_text_len(&key.dst, key.family)
        + 1
        + dec_digits(u16::from_be(key.sport) as u32)
        + 1
        + dec_digits(u16::from_be(key.dport) as u32)
        + 2;
    n as u16
}

/// Writes into the zeroed PROXY header buffer at a running position (masked: always in
/// bounds).
struct Writer<'a> {
    b: &'a mut [u8; PP_BUF],
    pos: u32,
}

impl Writer<'_> {
    #[inline(always)]
    fn put(&mut self, c: u8) {
        self.b[(self.pos & (PP_BUF as u32 - 1)) as usize] = c;
        self.pos += 1;
    }

    #[inline(always)]
    fn put_all(&mut self, s: &[u8]) {
        for c in s {
            self.put(*c);
        }
    }

    /// `v` in decimal, left to right (digits written from the last one back).
    #[inline(always)]
    fn dec(&mut self, v: u32) {
        let d = dec_digits(v);
        let mut x = v;
        let mut i = 0;
        while i < 5 {
            if i < d {
                self.b[((self.pos + d - 1 - i) & (PP_BUF as u32 - 1)) as usize] = b'0' + (x % 10) as u8;
                x /= 10;
            }
            i += 1;
        }
        self.pos += d;
    }

    /// A 16-bit group in lowercase hex without leading zeros.
    #[inline(always)]
    fn hex(&mut self, v: u32) {
        let d = hex_digits(v);
        let mut x = v;
        let mut i = 0;
        while i < 4 {
            if i < d {
                let n = (x & 15) as u8;
                let c = if n < 10 { b'0' + n } else { b'a' + n - 10 };
                self.b[((self.pos + d - 1 - i) & (PP_BUF as u32 - 1)) as usize] = c;
                x >>= 4;
            }
            i += 1;
        }
        self.pos += d;
    }

    #[inline(always)]
    fn addr(&mut self, a: &lb_common::Addr, family: u8) {
        if family == FAMILY_V4 {
            let b = bytes(a[0]);
            self.dec(b[0] as u32);
            self.put(b'.');
            self.dec(b[1] as u32);
            self.put(b'.');
            self.dec(b[2] as u32);
            self.put(b'.');
            self.dec(b[3] as u32);
        } else {
            let mut i = 0;
            while i < 4 {
                let b = bytes(a[i]);
                if i != 0 {
                    self.put(b':');
                }
                self.hex(((b[0] as u32) << 8) | b[1] as u32);
                self.put(b':');
                self.hex(((b[2] as u32) << 8) | b[3] as u32);
                i += 1;
            }
        }
    }
}

/// Build the flow's PROXY header into `s.pp` (zero-padded); returns its length.
#[inline(always)]
pub fn build(s: &mut PpScratch) -> u32 {
    let key = s.key;
    let version = s.pp_version;
    let proto = s.proto;
    let mut i = 0;
    while i < PP_BUF / 8 {
        // SAFETY: in bounds (i < PP_BUF / 8); the buffer has no alignment requirement for
        // an unaligned write.
        unsafe { (s.pp.as_mut_ptr() as *mut u64).add(i).write_unaligned(0) };
        i += 1;
    }
    let mut w = Writer { b: &mut s.pp, pos: 0 };
    let v4 = key.family == FAMILY_V4;
    if version == pp::V1 && proto == PROTO_TCP {
        w.put_all(if v4 { b"PROXY TCP4 " } else { b"PROXY TCP6 " });
        w.addr(&key.src, key.family);
        w.put(b' ');
        w.addr(&key.dst, key.family);
        w.put(b' ');
        w.dec(u16::from_be(key.sport) as u32);
        w.put(b' ');
        w.dec(u16::from_be(key.dport) as u32);
        w.put(b'\r');
        w.put(b'\n');
        return w.pos;
    }
    // v2: signature, PROXY command, family and transport, address length, addresses, ports.
    w.put_all(&V2_SIGNATURE);
    w.put(V2_PROXY);
    let fam = if v4 { V2_AF_INET } else { V2_AF_INET6 };
    w.put(fam | if proto == PROTO_UDP { V2_DGRAM } else { V2_STREAM });
    w.put(0);
    w.put(if v4 { V2_ADDR_LEN_V4 } else { V2_ADDR_LEN_V6 } as u8);
    let words = if v4 { 1 } else { 4 };
    let mut j = 0;
    while j < 4 {
        if j < words {
            w.put_all(&bytes(key.src[j]));
        }
        j += 1;
    }
    j = 0;
    while j < 4 {
        if j < words {
            w.put_all(&bytes(key.dst[j]));
        }
        j += 1;
    }
    w.put_all(&key.sport.to_ne_bytes());
    w.put_all(&key.dport.to_ne_bytes());
    w.pos
}
