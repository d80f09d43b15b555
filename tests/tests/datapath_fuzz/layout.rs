//! Where the layers and header fields of a (possibly already mutated) frame are, read
//! leniently, so mutations can hit layer boundaries and length, offset and flag fields.
//! Whatever cannot be read is left out: mutations then fall back to bytes at random.

/// A header field the mutator knows values for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    EtherType,
    /// IPv4 IHL (low nibble).
    Ihl,
    /// IP version (high nibble of the first byte).
    Version,
    /// IPv4 total length, IPv6 payload length, UDP length.
    Length,
    /// IPv4 flags + fragment offset.
    FragOff,
    /// IPv6 fragment header offset + M flag.
    FragOff6,
    /// IPv4 protocol, IPv6 next header (fixed or extension header).
    Proto,
    /// An IPv6 extension header's length (8-byte units after the first 8).
    ExtLen,
    Addr4,
    Addr6,
    Port,
    /// TCP sequence or acknowledgment number.
    Seq,
    /// TCP data offset (high nibble).
    Doff,
    TcpFlags,
    /// A checksum, TTL, window or other plain 16-bit/8-bit value.
    Plain16,
    Plain8,
    /// A TCP or IPv4 option's kind and length bytes.
    OptionType,
    OptLen,
    IcmpType,
}

#[derive(Clone, Copy, Debug)]
pub struct Field {
    pub at: usize,
    pub kind: Kind,
}

/// The layer boundaries (offsets where a header starts or ends) and the fields found.
#[derive(Default)]
pub struct Layout {
    pub bounds: Vec<usize>,
    pub fields: Vec<Field>,
}

impl Layout {
    fn field(&mut self, f: &[u8], at: usize, kind: Kind) {
        let width = match kind {
            Kind::Addr4 | Kind::Seq => 4,
            Kind::Addr6 => 16,
            Kind::EtherType | Kind::Length | Kind::FragOff | Kind::FragOff6 | Kind::Port | Kind::Plain16 => 2,
            _ => 1,
        };
        if at + width <= f.len() {
            self.fields.push(Field { at, kind });
        }
    }

    fn bound(&mut self, f: &[u8], at: usize) {
        if at <= f.len() && !self.bounds.contains(&at) {
            self.bounds.push(at);
        }
    }
}

fn be16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

/// Read `f` as far as it goes.
pub fn read(f: &[u8]) -> Layout {
    let mut l = Layout::default();
    l.bound(f, 0);
    l.bound(f, 14);
    let mut at = 12;
    // VLAN tags (802.1Q, 802.1ad), at most two.
    for _ in 0..2 {
        match be16(f, at) {
            Some(0x8100 | 0x88a8) => {
                l.field(f, at, Kind::EtherType);
                at += 4;
                l.bound(f, at + 2);
            }
            _ => break,
        }
    }
    l.field(f, at, Kind::EtherType);
    let l3 = at + 2;
    match be16(f, at) {
        Some(0x0800) => ipv4(f, &mut l, l3, 0),
        Some(0x86dd) => ipv6(f, &mut l, l3, 0),
        _ => {}
    }
    l.bounds.sort_unstable();
    l
}

fn ipv4(f: &[u8], l: &mut Layout, l3: usize, depth: u8) {
    let Some(&vihl) = f.get(l3) else { return };
    l.bound(f, l3);
    l.field(f, l3, Kind::Version);
    l.field(f, l3, Kind::Ihl);
    l.field(f, l3 + 2, Kind::Length);
    l.field(f, l3 + 6, Kind::FragOff);
    l.field(f, l3 + 8, Kind::Plain8);
    l.field(f, l3 + 9, Kind::Proto);
    l.field(f, l3 + 10, Kind::Plain16);
    l.field(f, l3 + 12, Kind::Addr4);
    l.field(f, l3 + 16, Kind::Addr4);
    l.bound(f, l3 + 20);
    let ihl = (vihl & 0x0f) as usize * 4;
    if ihl < 20 {
        return;
    }
    l.bound(f, l3 + ihl);
    options(f, l, l3 + 20, l3 + ihl);
    let (Some(&proto), Some(frag)) = (f.get(l3 + 9), be16(f, l3 + 6)) else { return };
    if frag & 0x1fff == 0 {
        transport(f, l, l3 + ihl, proto, depth, false);
    }
}

fn ipv6(f: &[u8], l: &mut Layout, l3: usize, depth: u8) {
    if f.len() < l3 + 8 {
        return;
    }
    l.bound(f, l3);
    l.field(f, l3, Kind::Version);
    l.field(f, l3 + 4, Kind::Length);
    l.field(f, l3 + 6, Kind::Proto);
    l.field(f, l3 + 7, Kind::Plain8);
    l.field(f, l3 + 8, Kind::Addr6);
    l.field(f, l3 + 24, Kind::Addr6);
    let mut off = l3 + 40;
    l.bound(f, off);
    let mut next = f[l3 + 6];
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                l.field(f, off, Kind::Proto);
                l.field(f, off + 1, Kind::ExtLen);
                let Some(&len) = f.get(off + 1) else { return };
                next = f[off];
                if next == 0 || next == 60 {
                    options(f, l, off + 2, off + (len as usize + 1) * 8);
                }
                off += (len as usize + 1) * 8;
            }
            44 => {
                l.field(f, off, Kind::Proto);
                l.field(f, off + 2, Kind::FragOff6);
                let (Some(&nh), Some(fo)) = (f.get(off), be16(f, off + 2)) else { return };
                next = nh;
                off += 8;
                if fo & 0xfff8 != 0 {
                    l.bound(f, off);
                    return;
                }
            }
            _ => break,
        }
        l.bound(f, off);
    }
    transport(f, l, off, next, depth, true);
}

/// Type-length options (IPv4 options, TCP options, IPv6 TLVs) in `from..to`: kind 0 ends
/// them, kind 1 is one byte.
fn options(f: &[u8], l: &mut Layout, from: usize, to: usize) {
    let mut i = from;
    while i < to.min(f.len()) {
        l.field(f, i, Kind::OptionType);
        match f[i] {
            0 => break,
            1 => i += 1,
            _ => {
                l.field(f, i + 1, Kind::OptLen);
                let Some(&len) = f.get(i + 1) else { return };
                i += (len as usize).max(2);
            }
        }
    }
}

fn transport(f: &[u8], l: &mut Layout, l4: usize, proto: u8, depth: u8, v6: bool) {
    l.bound(f, l4);
    match proto {
        6 => {
            l.field(f, l4, Kind::Port);
            l.field(f, l4 + 2, Kind::Port);
            l.field(f, l4 + 4, Kind::Seq);
            l.field(f, l4 + 8, Kind::Seq);
            l.field(f, l4 + 12, Kind::Doff);
            l.field(f, l4 + 13, Kind::TcpFlags);
            l.field(f, l4 + 14, Kind::Plain16);
            l.field(f, l4 + 16, Kind::Plain16);
            l.field(f, l4 + 18, Kind::Plain16);
            l.bound(f, l4 + 20);
            if let Some(&doff) = f.get(l4 + 12) {
                let hlen = (doff >> 4) as usize * 4;
                if hlen >= 20 {
                    l.bound(f, l4 + hlen);
                    options(f, l, l4 + 20, l4 + hlen);
                }
            }
        }
        17 => {
            l.field(f, l4, Kind::Port);
            l.field(f, l4 + 2, Kind::Port);
            l.field(f, l4 + 4, Kind::Length);
            l.field(f, l4 + 6, Kind::Plain16);
            l.bound(f, l4 + 8);
        }
        1 | 58 if depth == 0 => {
            l.field(f, l4, Kind::IcmpType);
            l.field(f, l4 + 1, Kind::Plain8);
            l.field(f, l4 + 2, Kind::Plain16);
            l.bound(f, l4 + 8);
            // The quoted packet, one level deep.
            if v6 {
                ipv6(f, l, l4 + 8, 1);
            } else {
                ipv4(f, l, l4 + 8, 1);
            }
        }
        _ => {}
    }
}
