//! PROXY protocol (v1 text, v2 binary) in the datapath: the header that tells a backend the
//! real client, inserted into the client → backend byte stream (TCP) or in front of every
//! datagram (UDP, v2), by tail-called programs (`lb_xdp_pp_*`, `lb_tc_pp_*`) so the entry
//! programs stay within the verifier's limits. The same code runs in both hooks; only the
//! way room is made for the header differs ([`insert`]).
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
//! Checksums: seq, ack, SACK and MSS changes are summed (RFC 1624) and applied through the
//! hook ([`Ctx::l4_csum`]), so a partial checksum (tc, local senders) takes only what it
//! should. For an inserted header the transport checksum is rebuilt from the pseudo-header,
//! the transport header and the header bytes, with the payload's sum taken from the old
//! checksum (byte-swapped when the header's length is odd, since the payload then changes
//! byte lanes); in tc that full checksum is turned into the change it makes, which a partial
//! checksum ignores but for the length in its pseudo-header.
mod backend;
mod header;
mod insert;

use aya_ebpf::helpers::generated::bpf_csum_diff;
use lb_common::{PROTO_UDP, listener_flags, pp, prog_index, stat};

use crate::{
    ctx::{Ctx, Diff},
    flow::TAIL_CALL,
    maps::{CONNTRACK, PpScratch, REVERSE_NAT, pp_scratch},
    parse::{Ip, Packet, TCP_ACK, TCP_RST, TCP_SYN, TcpHdr, ptr_at},
    stats::count,
};
pub use backend::backend;
pub use insert::at_payload as tc_move;

/// Largest transport-header offset a PROXY flow's packets may have: the moved headers
/// (offset + a 60-byte TCP header) must fit the scratch buffer.
pub(crate) const MAX_OFF: u32 = (crate::maps::PP_HDR_BUF - 60) as u32;

/// The PROXY protocol settings of a new flow: (version, header length, client ISN). TCP
/// flows get one only when opened by a SYN (its ISN anchors the header); UDP always gets v2
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
    if pkt.tcp_flags & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return (pp::OFF, 0, 0);
    }
    let Some(tcp) = pkt.tcp(ctx) else { return (pp::OFF, 0, 0) };
    // SAFETY: bounds checked by tcp().
    let isn = u32::from_be(unsafe { (*tcp).seq });
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
    if off == 0 || off > MAX_OFF || s.fragment != 0 {
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
    if let Some(ct) = CONNTRACK.get_ptr_mut(&s.key) {
        // SAFETY: map value pointer from a successful lookup.
        unsafe { (*ct).pp_len = len };
    }
    if let Some(r) = REVERSE_NAT.get_ptr_mut(&s.rkey) {
        // SAFETY: as above.
        unsafe { (*r).pp_len = len };
    }
}

/// Ones' complement fold of a 64-bit accumulator to 16 bits.
#[inline(always)]
pub(crate) fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Unfolded ones' complement sum of `size` bytes at `p` (a multiple of 4).
#[inline(always)]
pub(crate) fn sum_of(p: *const u8, size: u32) -> u64 {
    // SAFETY: the helper reads `size` bytes at `p`, which the callers keep in bounds.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, size, 0) };
    (r as u64) & 0xffff_ffff
}
