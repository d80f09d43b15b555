//! Inserting the PROXY header between the transport header and the payload.
//!
//! Both hooks first compute the new headers (IP length, UDP length, TCP PSH) and the new
//! transport checksum in the scratch buffers ([`prepare`]); then:
//! - XDP moves the Ethernet, IP and transport headers down into new headroom and writes the
//!   header in the gap (wire frames: the checksum is written as computed);
//! - tc grows the skb at its tail and moves the payload up instead: a local sender's partial
//!   checksum is anchored to where the transport header starts, which must not move. The
//!   checksum change goes through the kernel's helper, which a partial checksum takes only
//!   for the pseudo-header's length. A GSO skb (one write of several segments) or a payload
//!   over [`MAX_MOVE`] bytes is not grown: it is dropped and counted (`drop_pp_tc`), and
//!   the sender's retransmission (one segment) gets the header.
use lb_common::{FAMILY_V4, PROTO_TCP, PROTO_UDP, pp, stat};

use super::header::build;
use crate::{
    csum::{self, Diff, fold64, sum_of},
    ctx::Ctx,
    maps::{CHUNK, Insertion, PP_HDR_BUF, PpScratch, pp_scratch},
    parse::{ETH_HLEN, TCP_PSH},
    stats::count,
};

/// Largest payload tc moves to make room for a header (a jumbo frame's).
const MAX_MOVE: u32 = 9216;
const MAX_CHUNKS: u32 = MAX_MOVE / CHUNK as u32;

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

/// Insert the flow's header after the transport header (`l4_len` bytes at `off`). XDP does
/// it all here; tc only works it out (`s.ins`) and returns `Ok(true)`: the moving is
/// `lb_tc_pp_move`'s (a program of its own keeps each within the verifier's limits).
#[inline(always)]
pub fn insert<C: Ctx>(ctx: &C, s: &mut PpScratch, off: u32, l4_len: u32) -> Result<bool, ()> {
    prepare(ctx, s, off, l4_len)?;
    if C::XDP {
        at_head(ctx, s)?;
        return Ok(false);
    }
    Ok(true)
}

/// Load the headers into `s.hdr`, build the PROXY header into `s.pp`, and rewrite the
/// headers for the longer packet (all but the transport checksum, left as it was).
#[inline(always)]
fn prepare<C: Ctx>(ctx: &C, s: &mut PpScratch, off: u32, l4_len: u32) -> Result<(), ()> {
    let len = build(s);
    if len == 0 || len > pp::MAX_LEN as u32 {
        return Err(());
    }
    let hl = off + l4_len;
    if hl > PP_HDR_BUF as u32 || hl < (ETH_HLEN + 28) as u32 || l4_len > 60 {
        return Err(());
    }
    if ctx.load_bytes(0, s.hdr.as_mut_ptr(), hl) != 0 {
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
    let keep_zero = proto == PROTO_UDP && old_csum == 0 && s.family == FAMILY_V4;
    // The payload's sum: what makes pseudo-header + transport header + payload sum to zero
    // (meaningless for a partial checksum, whose change below the helper then ignores).
    let payload = !fold64(sum_of(p.as_ptr(), pseudo_len) + sum_of(b.as_ptr().wrapping_add(l4), l4_len));
    let new_l4 = l4_old + len;
    let mut pseudo = Diff::new();
    pseudo.add2((l4_old as u16).to_be(), (new_l4 as u16).to_be());
    p[len_at] = (new_l4 >> 8) as u8;
    p[len_at + 1] = new_l4 as u8;
    if proto == PROTO_TCP {
        b[(l4 + 13) & 0xff] |= TCP_PSH;
    } else {
        set_be16(b, off + 4, new_l4);
    }
    b[(l4 + csum_at) & 0xff] = 0;
    b[(l4 + csum_at + 1) & 0xff] = 0;
    let payload = if len & 1 != 0 { payload.swap_bytes() } else { payload };
    let total = sum_of(p.as_ptr(), pseudo_len)
        + sum_of(b.as_ptr().wrapping_add(l4), l4_len)
        + sum_of(s.pp.as_ptr(), (len + 3) & !3)
        + payload as u64;
    let mut new_csum = !fold64(total);
    if proto == PROTO_UDP {
        new_csum = csum::udp_nonzero(new_csum);
    }
    let old = old_csum.to_ne_bytes();
    b[(l4 + csum_at) & 0xff] = old[0];
    b[(l4 + csum_at + 1) & 0xff] = old[1];
    s.ins = Insertion {
        len,
        hl,
        csum_off: off + csum_at as u32,
        old_csum,
        new_csum,
        pseudo: pseudo.get(),
        keep_zero: keep_zero as u8,
        _pad: 0,
    };
    Ok(())
}

/// XDP: new headroom, the headers moved down into it, the PROXY header in the gap.
#[inline(always)]
fn at_head<C: Ctx>(ctx: &C, s: &mut PpScratch) -> Result<(), ()> {
    let p = s.ins;
    if p.keep_zero == 0 {
        let at = ((p.csum_off) & 0xff) as usize;
        let c = p.new_csum.to_ne_bytes();
        s.hdr[at] = c[0];
        s.hdr[(at + 1) & 0xff] = c[1];
    }
    if ctx.grow_head(p.len) != 0 {
        return Err(());
    }
    if ctx.store_bytes(0, s.hdr.as_ptr(), p.hl) != 0 || ctx.store_bytes(p.hl, s.pp.as_ptr(), p.len) != 0 {
        return Err(());
    }
    Ok(())
}

/// `v` if it lies in `min..=max`, passed through a map field so the check is made on the very
/// register a helper then gets (LLVM would otherwise test a copy, and the verifier lose the
/// bounds).
#[inline(always)]
fn checked(slot: &mut u32, v: u32, min: u32, max: u32) -> Result<u32, ()> {
    *slot = v;
    // SAFETY: a plain read of a map value field.
    let v = unsafe { core::ptr::read_volatile(slot) };
    if v < min || v > max {
        return Err(());
    }
    Ok(v)
}

/// `lb_tc_pp_move`: the skb grown at its tail, the payload moved up (from its end, a chunk
/// at a time), the headers rewritten in place and the PROXY header in the gap; then the
/// checksum. Returns the verdict the entry program decided.
#[inline(always)]
pub fn at_payload<C: Ctx>(ctx: &C) -> u32 {
    let Some(s) = pp_scratch() else { return C::DROP };
    match try_at_payload(ctx, s) {
        Ok(()) => {
            count(stat::PP_INSERTED, 0);
            s.action
        }
        Err(()) => {
            count(stat::DROP_PP, 0);
            C::DROP
        }
    }
}

#[inline(always)]
fn try_at_payload<C: Ctx>(ctx: &C, s: &mut PpScratch) -> Result<(), ()> {
    let p = s.ins;
    if p.len == 0 || p.len > pp::MAX_LEN as u32 || p.hl > PP_HDR_BUF as u32 || p.hl < (ETH_HLEN + 28) as u32 {
        return Err(());
    }
    let total = ctx.pkt_len();
    if ctx.is_gso() || total < p.hl || total - p.hl > MAX_MOVE {
        count(stat::DROP_PP_TC, total as u64);
        return Err(());
    }
    let plen = total - p.hl;
    if ctx.grow_tail(total + p.len) != 0 {
        return Err(());
    }
    let mut k = 0;
    while k < MAX_CHUNKS {
        let end = plen.wrapping_sub(k * CHUNK as u32);
        if end == 0 || end > plen {
            break;
        }
        let start = end.saturating_sub(CHUNK as u32);
        let n = checked(&mut s.opt_len, end - start, 1, CHUNK as u32)?;
        if ctx.load_bytes(p.hl + start, s.chunk.as_mut_ptr(), n) != 0
            || ctx.store_bytes(p.hl + p.len + start, s.chunk.as_ptr(), n) != 0
        {
            return Err(());
        }
        k += 1;
    }
    let hl = checked(&mut s.opt_len, p.hl, (ETH_HLEN + 28) as u32, PP_HDR_BUF as u32)?;
    if ctx.store_bytes(0, s.hdr.as_ptr(), hl) != 0 {
        return Err(());
    }
    let len = checked(&mut s.opt_len, p.len, 1, pp::MAX_LEN as u32)?;
    if ctx.store_bytes(p.hl, s.pp.as_ptr(), len) != 0 {
        return Err(());
    }
    if p.keep_zero == 0 {
        // A complete checksum goes from old to new: new = ~(~old + pseudo + data).
        let mut data = Diff::new();
        data.add2(p.pseudo, 0); // + ~pseudo
        data.add2(p.new_csum, 0); // + ~new
        data.add2(0, p.old_csum); // + old
        ctx.l4_csum(p.csum_off, p.pseudo, data.get(), s.proto == PROTO_UDP);
    }
    Ok(())
}
