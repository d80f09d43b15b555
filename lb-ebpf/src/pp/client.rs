//! PROXY protocol on the client side: a new flow's settings, and each client → backend
//! packet of a PROXY flow (the header inserted at ISN+1 until the backend acknowledged it,
//! every other segment's seq shifted by the header's length).
use lb_common::{PROTO_UDP, listener_flags, pp, prog_index, stat};

use super::{header, insert};
use crate::{
    csum::Diff,
    ctx::Ctx,
    maps::{CONNTRACK, HALF_OPEN, HALF_OPEN_REV, PP_MAX_OFF, PpScratch, REVERSE_NAT, TAIL_CALL, pp_scratch},
    parse::{Ip, Packet, TCP_ACK, TCP_RST, TCP_SYN, TcpHdr, ptr_at},
    stats::count,
};

/// The PROXY protocol settings of a new flow: (version, header length, client ISN). TCP
/// flows get one only when opened by a SYN or a SYN cookie's ACK (the ISN anchors the
/// header); UDP always gets v2
/// (v1 has no datagram form). A v1 header's length depends on the addresses: it is left 0
/// here and set by `lb_xdp_pp_client` when the SYN goes through it (the new-flow path of
/// `lb_xdp` has no stack to spare for it).
#[inline(always)]
pub fn for_new_flow<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, flags: u32) -> (u8, u16, u32) {
    if flags & (listener_flags::PROXY_V1 | listener_flags::PROXY_V2) == 0 {
        return (pp::OFF, 0, 0);
    }
    if pkt.proto == PROTO_UDP {
        return (pp::V2, header::v2_len(H::FAMILY), 0);
    }
    // A SYN, or an ACK that returned a SYN cookie (seq ISN + 1).
    let after_isn = match pkt.tcp_flags & (TCP_SYN | TCP_ACK) {
        TCP_SYN => 0,
        TCP_ACK => 1,
        _ => return (pp::OFF, 0, 0),
    };
    let Some(tcp) = pkt.tcp(ctx) else { return (pp::OFF, 0, 0) };
    // SAFETY: bounds checked by tcp().
    let isn = u32::from_be(unsafe { (*tcp).seq }).wrapping_sub(after_isn);
    if flags & listener_flags::PROXY_V2 != 0 { (pp::V2, header::v2_len(H::FAMILY), isn) } else { (pp::V1, 0, isn) }
}

/// `lb_xdp_pp_client` / `lb_tc_pp_client`: a client → backend packet of a PROXY flow,
/// already NATed.
#[inline(always)]
pub fn client<C: Ctx>(ctx: &C) -> u32 {
    let Some(s) = pp_scratch() else {
        count(stat::DROP_PP, 0);
        return C::DROP;
    };
    match try_client(ctx, s) {
        Ok(action) => action,
        Err(()) => {
            count(stat::DROP_PP, 0);
            C::DROP
        }
    }
}

#[inline(always)]
fn try_client<C: Ctx>(ctx: &C, s: &mut PpScratch) -> Result<u32, ()> {
    let action = s.action;
    let off = s.l4_off;
    // A datagram in fragments cannot grow (the later fragments' offsets would move).
    if off == 0 || off > PP_MAX_OFF || s.fragment != 0 {
        return Err(());
    }
    if s.proto == PROTO_UDP {
        return inserted(insert::insert(ctx, s, off, 8)?, action);
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
        return inserted(insert::insert(ctx, s, off, thl)?, action);
    }
    let new = seq.wrapping_add(s.pp_len).to_be();
    let mut d = Diff::new();
    d.add4(seq_raw, new);
    // SAFETY: as above (no helper has run since).
    unsafe { (*tcp).seq = new };
    ctx.l4_csum(off + 16, 0, d.get(), false);
    Ok(action)
}

/// After [`insert::insert`]: done (`action`), or the tc move program to tail-call.
#[inline(always)]
fn inserted(moving: bool, action: u32) -> Result<u32, ()> {
    if moving {
        return Ok(TAIL_CALL | prog_index::PP_MOVE);
    }
    count(stat::PP_INSERTED, 0);
    Ok(action)
}

/// A v1 flow's SYN: record its header length (it depends on the addresses) in both entries.
#[inline(always)]
fn set_v1_len(s: &PpScratch) {
    let len = header::v1_len(&s.key);
    if s.pp_len == len as u32 {
        return;
    }
    // The SYN's flow is half-open (a SYN on an established flow finds it there instead).
    let ct = match HALF_OPEN.get_ptr_mut(&s.key) {
        Some(ct) => Some(ct),
        None => CONNTRACK.get_ptr_mut(&s.key),
    };
    if let Some(ct) = ct {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { (*ct).pp_len = len };
    }
    let r = match HALF_OPEN_REV.get_ptr_mut(&s.rkey) {
        Some(r) => Some(r),
        None => REVERSE_NAT.get_ptr_mut(&s.rkey),
    };
    if let Some(r) = r {
        // SAFETY: as above.
        unsafe { (*r).pp_len = len };
    }
}
