//! PROXY protocol (v1 text, v2 binary) in the datapath: the header that tells a backend the
//! real client, inserted into the client → backend byte stream (TCP) or in front of every
//! datagram (UDP, v2), by two tail-called programs so `lb_xdp` stays within the verifier's
//! limits.
//!
//! TCP, per flow (state in `CtEntry` / `RevEntry`: the client's ISN, the header length, the
//! version, whether the backend acknowledged the header):
//! - client → backend: a segment whose seq is ISN+1 (the first data segment, every
//!   retransmission of it, the handshake's final ACK and its repeats — so server-first
//!   protocols get the header too), while the backend has not acknowledged the header,
//!   gets the header inserted in front of its payload. The header is built from the flow's
//!   key, so every copy carries the same bytes and the backend's TCP merges duplicates.
//!   Every other segment's seq moves up by the header length.
//! - backend → client: ack and SACK edges move down by the header length (clamped to ISN+1
//!   while they point into the header); the SYN-ACK's MSS shrinks by the header length so a
//!   full-sized client segment plus the header still fits the backend's MTU.
//!
//! Checksums: seq, ack, SACK and MSS are updated incrementally (RFC 1624). For an inserted
//! header the transport checksum is rebuilt from the pseudo-header, the transport header and
//! the header bytes, with the payload's sum taken from the old checksum (byte-swapped when
//! the header's length is odd, since the payload then changes byte lanes).
use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_csum_diff, bpf_xdp_adjust_head, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use lb_common::{FAMILY_V4, FlowKey, PROTO_TCP, PROTO_UDP, listener_flags, pp, stat};

use crate::{
    csum,
    maps::{CONNTRACK, PP_BUF, PP_HDR_BUF, PpScratch, REVERSE_NAT, pp_scratch},
    parse::{ETH_HLEN, Ip, Packet, TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, TcpHdr, ptr_at},
    stats::count,
};

/// Largest transport-header offset a PROXY flow's packets may have: the moved headers
/// (offset + a 60-byte TCP header) must fit the scratch buffer.
const MAX_OFF: u32 = (PP_HDR_BUF - 60) as u32;
/// TCP option walk budget (Linux sends at most 6 options: NOP NOP TS NOP NOP SACK).
const MAX_OPTIONS: u32 = 12;
/// Smallest MSS the clamp leaves.
const MIN_MSS: u32 = 64;

/// The PROXY protocol settings of a new flow: (version, header length, client ISN). TCP
/// flows get one only when opened by a SYN (its ISN anchors the header); UDP always gets v2
/// (v1 has no datagram form). A v1 header's length depends on the addresses: it is left 0
/// here and set by `lb_xdp_pp_client` when the SYN goes through it (the new-flow path of
/// `lb_xdp` has no stack to spare for it).
#[inline(always)]
pub fn for_new_flow<C: crate::ctx::Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, flags: u32) -> (u8, u16, u32) {
    if flags & (listener_flags::PROXY_V1 | listener_flags::PROXY_V2) == 0 {
        return (pp::OFF, 0, 0);
    }
    if pkt.proto == PROTO_UDP {
        return (pp::V2, v2_len(H::FAMILY), 0);
    }
    if pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return (pp::OFF, 0, 0);
    }
    let Some(tcp) = pkt.tcp(ctx) else { return (pp::OFF, 0, 0) };
    // SAFETY: bounds checked by tcp().
    let isn = u32::from_be(unsafe { (*tcp).seq });
    if flags & listener_flags::PROXY_V2 != 0 { (pp::V2, v2_len(H::FAMILY), isn) } else { (pp::V1, 0, isn) }
}

#[inline(always)]
fn v2_len(family: u8) -> u16 {
    if family == FAMILY_V4 { 16 + 12 } else { 16 + 36 }
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
fn build(s: &mut PpScratch) -> u32 {
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
    w.put_all(&lb_common::PROXY_V2_SIGNATURE);
    w.put(0x21);
    let fam = if v4 { 0x10 } else { 0x20 };
    w.put(fam | if proto == PROTO_UDP { 0x02 } else { 0x01 });
    w.put(0);
    w.put(if v4 { 12 } else { 36 });
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

/// Ones' complement fold of a 64-bit accumulator to 16 bits.
#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Unfolded ones' complement sum of `size` bytes at `p` (a multiple of 4).
#[inline(always)]
fn sum_of(p: *const u8, size: u32) -> u64 {
    // SAFETY: the helper reads `size` bytes at `p`, which the callers keep in bounds.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, size, 0) };
    (r as u64) & 0xffff_ffff
}

/// `lb_xdp_pp_client`: a client → backend packet of a PROXY flow, already NATed.
#[inline(always)]
pub fn client(ctx: &XdpContext) -> u32 {
    let Some(s) = pp_scratch() else {
        count(stat::DROP_PP, 0);
        return xdp_action::XDP_DROP;
    };
    match try_client(ctx, s) {
        Ok(action) => action,
        Err(()) => {
            count(stat::DROP_PP, 0);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn try_client(ctx: &XdpContext, s: &mut PpScratch) -> Result<u32, ()> {
    let action = s.action;
    let off = s.l4_off;
    // A datagram in fragments cannot grow (the later fragments' offsets would move).
    if off == 0 || off > MAX_OFF || s.fragment != 0 {
        return Err(());
    }
    if s.proto == PROTO_UDP {
        insert(ctx, s, off, 8)?;
        count(stat::PP_INSERTED, 0);
        return Ok(action);
    }
    let tcp: *mut TcpHdr = ptr_at(ctx, off as usize)?;
    // SAFETY: bounds checked by ptr_at.
    let (flags, seq_raw, doff) = unsafe { ((*tcp).flags, (*tcp).seq, (*tcp).doff) };
    if flags & TCP_SYN != 0 {
        if s.pp_version == pp::V1 {
            set_v1_len(s);
        }
        return Ok(action);
    }
    if s.pp_len == 0 {
        // A v1 flow whose SYN never came through: no header length known.
        return Err(());
    }
    let seq = u32::from_be(seq_raw);
    if seq == s.client_isn.wrapping_add(1) && s.pp_acked == 0 {
        // Unknown whether the backend holds the header yet: a reset keeps its seq.
        if flags & TCP_RST != 0 {
            return Ok(action);
        }
        let thl = ((doff >> 4) as u32) * 4;
        if thl < 20 {
            return Err(());
        }
        insert(ctx, s, off, thl)?;
        count(stat::PP_INSERTED, 0);
        return Ok(action);
    }
    let new = seq.wrapping_add(s.pp_len).to_be();
    // SAFETY: as above (no helper has run since).
    unsafe {
        (*tcp).check = csum::replace4((*tcp).check, seq_raw, new);
        (*tcp).seq = new;
    }
    Ok(action)
}

/// A v1 flow's SYN: record its header length (it depends on the addresses) in both entries.
#[inline(always)]
fn set_v1_len(s: &PpScratch) {
    let len = v1_len(&s.key);
    if s.pp_len == len as u32 {
        return;
    }
    if let Some(ct) = CONNTRACK.get_ptr_mut(&s.key) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { (*ct).pp_len = len };
    }
    if let Some(r) = REVERSE_NAT.get_ptr_mut(&s.rkey) {
        // SAFETY: as above.
        unsafe { (*r).pp_len = len };
    }
}

/// Read a big-endian u16 from the header buffer.
#[inline(always)]
fn be16(b: &[u8; PP_HDR_BUF], at: u32) -> u32 {
    ((b[(at & 0xff) as usize] as u32) << 8) | b[((at + 1) & 0xff) as usize] as u32
}

#[inline(always)]
fn set_be16(b: &mut [u8; PP_HDR_BUF], at: u32, v: u32) {
    b[(at & 0xff) as usize] = (v >> 8) as u8;
    b[((at + 1) & 0xff) as usize] = v as u8;
}

/// Insert the flow's header after the transport header (`l4_len` bytes at `off`): move
/// Ethernet, IP and transport headers down by the header's length, write the header in the
/// gap, fix lengths and checksums.
#[inline(always)]
fn insert(ctx: &XdpContext, s: &mut PpScratch, off: u32, l4_len: u32) -> Result<(), ()> {
    let len = build(s);
    if len == 0 || len > pp::MAX_LEN as u32 {
        return Err(());
    }
    let hl = off + l4_len;
    if hl > PP_HDR_BUF as u32 || hl < (ETH_HLEN + 28) as u32 || l4_len > 60 {
        return Err(());
    }
    // SAFETY: `hl` bytes fit the buffer; the helper checks them against the frame.
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, s.hdr.as_mut_ptr() as *mut _, hl) } != 0 {
        return Err(());
    }
    let b = &mut s.hdr;
    let proto = s.proto;
    let p = &mut s.pseudo;
    // IP lengths; the old transport length for the pseudo-header.
    let (l4_old, pseudo_len) = if s.family == FAMILY_V4 {
        let tot = be16(b, 16);
        let ihl = off - ETH_HLEN as u32;
        if tot < ihl + l4_len {
            return Err(());
        }
        let new_tot = tot + len;
        let c = u16::from_ne_bytes([b[24], b[25]]);
        let c = csum::replace2(c, (tot as u16).to_be(), (new_tot as u16).to_be());
        set_be16(b, 16, new_tot);
        b[24..26].copy_from_slice(&c.to_ne_bytes());
        p[..8].copy_from_slice(&b[26..34]);
        p[8] = 0;
        p[9] = proto;
        (tot - ihl, 12)
    } else {
        let plen = be16(b, 18);
        let ext = off - (ETH_HLEN as u32 + 40);
        if plen < ext + l4_len {
            return Err(());
        }
        set_be16(b, 18, plen + len);
        p[..32].copy_from_slice(&b[22..54]);
        p[32] = 0;
        p[33] = 0;
        p[36] = 0;
        p[37] = 0;
        p[38] = 0;
        p[39] = proto;
        (plen - ext, 40)
    };
    let len_at = if pseudo_len == 12 { 10 } else { 34 };
    p[len_at] = (l4_old >> 8) as u8;
    p[len_at + 1] = l4_old as u8;
    let l4 = (off & 0xff) as usize;
    let csum_at = if proto == PROTO_TCP { 16 } else { 6 };
    let old_csum = u16::from_ne_bytes([b[(l4 + csum_at) & 0xff], b[(l4 + csum_at + 1) & 0xff]]);
    // IPv4 UDP without a checksum stays without one.
    let keep_zero = proto == PROTO_UDP && old_csum == 0 && s.family == FAMILY_V4;
    // The payload's sum: what makes pseudo-header + transport header + payload sum to zero.
    let payload = !fold(sum_of(p.as_ptr(), pseudo_len) + sum_of(b.as_ptr().wrapping_add(l4), l4_len));
    let new_l4 = l4_old + len;
    p[len_at] = (new_l4 >> 8) as u8;
    p[len_at + 1] = new_l4 as u8;
    if proto == PROTO_TCP {
        b[(l4 + 13) & 0xff] |= TCP_PSH;
    } else {
        set_be16(b, off + 4, new_l4);
    }
    b[(l4 + csum_at) & 0xff] = 0;
    b[(l4 + csum_at + 1) & 0xff] = 0;
    if !keep_zero {
        let payload = if len & 1 != 0 { payload.swap_bytes() } else { payload };
        let total = sum_of(p.as_ptr(), pseudo_len)
            + sum_of(b.as_ptr().wrapping_add(l4), l4_len)
            + sum_of(s.pp.as_ptr(), (len + 3) & !3)
            + payload as u64;
        let mut c = !fold(total);
        if proto == PROTO_UDP && c == 0 {
            c = 0xffff;
        }
        let c = c.to_ne_bytes();
        b[(l4 + csum_at) & 0xff] = c[0];
        b[(l4 + csum_at + 1) & 0xff] = c[1];
    }
    // SAFETY: helpers on the context; sizes bounded by the buffers.
    unsafe {
        if bpf_xdp_adjust_head(ctx.ctx, -(len as i32)) != 0 {
            return Err(());
        }
        if bpf_xdp_store_bytes(ctx.ctx, 0, s.hdr.as_mut_ptr() as *mut _, hl) != 0 {
            return Err(());
        }
        if bpf_xdp_store_bytes(ctx.ctx, hl, s.pp.as_mut_ptr() as *mut _, len) != 0 {
            return Err(());
        }
    }
    Ok(())
}

/// A backend-side sequence number (ack or SACK edge) in the client's space: past the
/// header it moves down by the header's length; inside the header it is the first data
/// byte; before it (never sent by a sane backend) it stays.
#[inline(always)]
fn to_client_seq(v: u32, base: u32, len: u32) -> u32 {
    let rel = v.wrapping_sub(base) as i32;
    if rel >= len as i32 {
        v.wrapping_sub(len)
    } else if rel >= 0 {
        base
    } else {
        v
    }
}

/// `lb_xdp_pp_backend`: a backend → client TCP packet of a PROXY flow, already NATed.
#[inline(always)]
pub fn backend(ctx: &XdpContext) -> u32 {
    let Some(s) = pp_scratch() else {
        count(stat::DROP_PP, 0);
        return xdp_action::XDP_DROP;
    };
    match try_backend(ctx, s) {
        Ok(action) => action,
        Err(()) => {
            count(stat::DROP_PP, 0);
            xdp_action::XDP_DROP
        }
    }
}

/// A byte of the TCP header changed at `at` (from the header's start): the checksum after.
#[inline(always)]
fn byte_changed(c: u16, at: u32, old: u8, new: u8) -> u16 {
    // Raw (in-memory) 16-bit lanes: an even offset is the low byte on this little-endian
    // target, an odd one the high byte.
    let shift = (at & 1) * 8;
    csum::replace2(c, (old as u16) << shift, (new as u16) << shift)
}

/// "No such option" in the walk's results.
const NO_OPTION: u32 = 0xff;
/// Walk position meaning "stopped" (end of list, or malformed: left to the client's stack).
const STOPPED: u32 = 0xfe;

/// A walk variable read back from the map: an unknown value to the verifier.
#[inline(always)]
fn read(v: &u32) -> u32 {
    // SAFETY: a plain read of a map value field.
    unsafe { core::ptr::read_volatile(v) }
}

/// Find the SACK and MSS options among the `olen` option bytes in `s.hdr` (at most
/// `MAX_OPTIONS` options). Results in `s.sack_at`, `s.sack_len`, `s.mss_at` (`NO_OPTION`
/// when absent), and `s.opt_pos`: where the walk stopped (`STOPPED`, or below `olen` when
/// the budget ran out).
#[inline(always)]
fn walk_options(s: &mut PpScratch, olen: u32) {
    s.opt_pos = 0;
    s.sack_at = NO_OPTION;
    s.sack_len = 0;
    s.mss_at = NO_OPTION;
    let mut n = 0;
    while n < MAX_OPTIONS {
        let pos = read(&s.opt_pos) & 0xff;
        if pos < olen && pos < 40 {
            let kind = s.hdr[pos as usize];
            if kind == 0 {
                s.opt_pos = STOPPED;
            } else if kind == 1 {
                s.opt_pos = pos + 1;
            } else {
                let l = s.hdr[(pos + 1) as usize] as u32;
                if l < 2 || pos + l > olen {
                    s.opt_pos = STOPPED;
                } else {
                    if kind == 5 {
                        s.sack_at = pos;
                        s.sack_len = l;
                    } else if kind == 2 && l == 4 {
                        s.mss_at = pos;
                    }
                    s.opt_pos = pos + l;
                }
            }
        }
        n += 1;
    }
}

/// Rewrite the 4-byte sequence number at option offset `at` in the client's space.
#[inline(always)]
fn sack_edge(o: &mut [u8; PP_HDR_BUF], at: u32, base: u32, len: u32, c: &mut u16) {
    let i = |k: u32| ((at + k) & 63) as usize;
    let v = u32::from_be_bytes([o[i(0)], o[i(1)], o[i(2)], o[i(3)]]);
    let new = to_client_seq(v, base, len).to_be_bytes();
    let mut k = 0;
    while k < 4 {
        let old = o[i(k)];
        *c = byte_changed(*c, 20 + at + k, old, new[k as usize]);
        o[i(k)] = new[k as usize];
        k += 1;
    }
}

#[inline(always)]
fn try_backend(ctx: &XdpContext, s: &mut PpScratch) -> Result<u32, ()> {
    let action = s.action;
    let off = s.l4_off;
    if off == 0 || off > MAX_OFF {
        return Err(());
    }
    let tcp: *mut TcpHdr = ptr_at(ctx, off as usize)?;
    // SAFETY: bounds checked by ptr_at.
    let (flags, doff, mut c) = unsafe { ((*tcp).flags, (*tcp).doff, (*tcp).check) };
    let base = s.client_isn.wrapping_add(1);
    let len = s.pp_len;
    if len == 0 {
        return Ok(action);
    }
    let thl = ((doff >> 4) as u32) * 4;
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    if thl > 20 && (syn || ack) {
        // Options: SACK edges follow the ack; the SYN-ACK's MSS leaves room for the header.
        // The length goes through the map so the check below is on the very register the
        // helpers get (LLVM otherwise tests `doff` and the verifier loses the relation).
        s.opt_len = thl - 20;
        let olen = read(&s.opt_len);
        if olen < 4 || olen > 40 {
            return Err(());
        }
        // SAFETY: at most 40 bytes into a 256-byte buffer; the helper checks the frame.
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, off + 20, s.hdr.as_mut_ptr() as *mut _, olen) } != 0 {
            return Err(());
        }
        let mut changed = false;
        walk_options(s, olen);
        let o = &mut s.hdr;
        let none = NO_OPTION;
        // SACK blocks (2 + 8n bytes): each edge into the client's space.
        let at = read(&s.sack_at);
        if ack && at != none {
            changed = true;
            let l = read(&s.sack_len);
            let mut e = 0;
            while e < 8 {
                if 2 + e * 4 + 4 <= l {
                    sack_edge(o, (at + 2 + e * 4) & 63, base, len, &mut c);
                }
                e += 1;
            }
        }
        // The SYN-ACK's MSS leaves room for the header.
        let at = read(&s.mss_at);
        if syn && at != none {
            let at = (at + 2) & 63;
            let (hi, lo) = (o[at as usize], o[((at + 1) & 63) as usize]);
            let mss = ((hi as u32) << 8) | lo as u32;
            if mss >= len + MIN_MSS {
                changed = true;
                let new = mss - len;
                let (nh, nl) = ((new >> 8) as u8, new as u8);
                c = byte_changed(c, 20 + at, hi, nh);
                c = byte_changed(c, 21 + at, lo, nl);
                o[at as usize] = nh;
                o[((at + 1) & 63) as usize] = nl;
            }
        }
        let pos = read(&s.opt_pos);
        if pos < olen {
            changed = true;
            // More options than the walk covers: blank the rest (NOPs) rather than let an
            // unshifted SACK block through.
            let mut i = 0;
            while i < 40 {
                if i >= pos && i < olen {
                    let old = o[(i & 63) as usize];
                    c = byte_changed(c, 20 + i, old, 1);
                    o[(i & 63) as usize] = 1;
                }
                i += 1;
            }
        }
        // SAFETY: as above.
        if changed && unsafe { bpf_xdp_store_bytes(ctx.ctx, off + 20, s.hdr.as_mut_ptr() as *mut _, olen) } != 0 {
            return Err(());
        }
    }
    let tcp: *mut TcpHdr = ptr_at(ctx, off as usize)?;
    let mut acked = false;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        if ack {
            let raw = (*tcp).ack;
            let a = u32::from_be(raw);
            acked = a.wrapping_sub(base) as i32 >= len as i32;
            let new = to_client_seq(a, base, len).to_be();
            if new != raw {
                c = csum::replace4(c, raw, new);
                (*tcp).ack = new;
            }
        }
        (*tcp).check = c;
    }
    if acked && s.pp_acked == 0 {
        // The backend holds the header: from now on every client segment is only shifted.
        if let Some(r) = REVERSE_NAT.get_ptr_mut(&s.rkey) {
            // SAFETY: map value pointer from a successful lookup.
            unsafe { (*r).pp_acked = 1 };
        }
        if let Some(ct) = CONNTRACK.get_ptr_mut(&s.key) {
            // SAFETY: as above.
            unsafe { (*ct).pp_acked = 1 };
        }
    }
    Ok(action)
}
