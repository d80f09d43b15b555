//! PROXY protocol on a backend → client TCP packet: the backend counts the header as bytes
//! of the stream, the client never sent them, so ack and SACK edges move down by the
//! header's length, and the SYN-ACK's MSS leaves room for the header.
use lb_common::stat;

use crate::{
    csum,
    ctx::Ctx,
    maps::{CONNTRACK, PP_HDR_BUF, PP_MAX_OFF, PpScratch, REVERSE_NAT, pp_scratch},
    parse::{TCP_ACK, TCP_SYN, TcpHdr, ptr_at},
    stats::count,
};

use super::options::{NO_OPTION, read, walk_options};

/// Smallest MSS the clamp leaves.
const MIN_MSS: u32 = 64;

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

/// `lb_xdp_pp_backend` / `lb_tc_pp_backend`: a backend → client TCP packet of a PROXY flow, already NATed.
#[inline(always)]
pub fn backend<C: Ctx>(ctx: &C) -> u32 {
    let Some(s) = pp_scratch() else {
        count(stat::DROP_PP, 0);
        return C::DROP;
    };
    match try_backend(ctx, s) {
        Ok(action) => action,
        Err(()) => {
            count(stat::DROP_PP, 0);
            C::DROP
        }
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
        *c = csum::replace_byte(*c, 20 + at + k, old, new[k as usize]);
        o[i(k)] = new[k as usize];
        k += 1;
    }
}

#[inline(always)]
fn try_backend<C: Ctx>(ctx: &C, s: &mut PpScratch) -> Result<u32, ()> {
    let action = s.action;
    let off = s.l4_off;
    if off == 0 || off > PP_MAX_OFF {
        return Err(());
    }
    let tcp: *mut TcpHdr = ptr_at(ctx, off as usize)?;
    // SAFETY: bounds checked by ptr_at.
    let (flags, doff) = unsafe { ((*tcp).flags, (*tcp).doff) };
    // The changes below are chained onto a checksum of all ones (the ones' complement of
    // zero): what they leave is the complement of their sum, applied at the end.
    let mut c: u16 = 0xffff;
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
        // At most 40 bytes into a 256-byte buffer; the helper checks the frame.
        if ctx.load_bytes(off + 20, s.hdr.as_mut_ptr(), olen) != 0 {
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
                c = csum::replace_byte(c, 20 + at, hi, nh);
                c = csum::replace_byte(c, 21 + at, lo, nl);
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
                    c = csum::replace_byte(c, 20 + i, old, 1);
                    o[(i & 63) as usize] = 1;
                }
                i += 1;
            }
        }
        if changed && ctx.store_bytes(off + 20, s.hdr.as_ptr(), olen) != 0 {
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
    }
    ctx.l4_csum(off + 16, 0, !c, false);
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
