//! A packet of a known flow on its way: a client's to its backend ([`to_backend`],
//! [`send_to_backend`]), a backend's back to its client ([`to_client`]), with the flow's
//! TCP state, the once-a-second refresh of its reverse entry and persistence, and the
//! PROXY-protocol and SYN-cookie sequence work handed on.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_coarse_ns};
use lb_common::*;

use crate::{
    ctx::{Ctx, drop},
    fwd,
    maps::{HALF_OPEN_REV, LISTENER_CFG, REVERSE_NAT, TAIL_CALL, pp_scratch, scratch},
    nat,
    parse::{Ip, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    persist,
    stats::{self, count},
    syncookie,
};

/// How often (ns) a flow's `last_seen` is refreshed: not on every packet, to keep the
/// entry's cache line from bouncing between CPUs. Known flows read the coarse clock
/// (`bpf_ktime_get_coarse_ns`, the same CLOCK_MONOTONIC a tick behind, without reading the
/// clock source): a second's refresh, the idle timeouts and the next-hop cache's age need
/// no more. (A tick behind the fine clock other paths write `last_seen_ns` with: compared
/// saturating.)
const REFRESH_NS: u64 = 1_000_000_000;

#[inline(always)]
pub fn state_bits(tcp_flags: u8) -> u32 {
    let mut s = 0;
    if tcp_flags & TCP_SYN != 0 {
        s |= tcp_state::SYN;
    }
    if tcp_flags & TCP_FIN != 0 {
        s |= tcp_state::FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        s |= tcp_state::RST;
    }
    if tcp_flags & TCP_ACK != 0 {
        s |= tcp_state::ACK;
    }
    s
}

/// The reverse-NAT value for a client flow, from the client's packet and the flow's entry,
/// written in place (the struct is too large to build on the BPF stack and copy).
#[inline(always)]
pub fn write_reverse<C: Ctx, H: Ip>(
    ctx: &C,
    pkt: &Packet<H>,
    key: &FlowKey,
    ct: &CtEntry,
    state: u32,
    now: u64,
    out: &mut RevEntry,
) {
    let (client_mac, local_mac) = match pkt.eth(ctx) {
        // SAFETY: bounds checked by eth().
        Some(eth) => unsafe { ((*eth).src, (*eth).dst) },
        None => ([0; 6], [0; 6]),
    };
    out.client = key.src;
    out.vip = key.dst;
    out.client_port = key.sport;
    out.vip_port = key.dport;
    out.ifindex = ctx.ingress_ifindex();
    out.client_mac = client_mac;
    out.local_mac = local_mac;
    out.listener_id = ct.listener_id;
    out.state = state;
    out.client_isn = ct.client_isn;
    out.last_seen_ns = now;
    out.pp_len = ct.pp_len;
    out.pp_version = ct.pp_version;
    out.pp_acked = ct.pp_acked;
    out.flags = if ctx.local_origin() { rev_flags::LOCAL_CLIENT } else { 0 };
    out.server_isn = 0;
    out.seq_delta = 0;
}

/// A client packet of a known flow (`half`: a half-open one): NAT it towards its backend.
#[inline(never)]
pub fn to_backend<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, ct: *mut CtEntry, bytes: u64, half: bool) -> u32 {
    // SAFETY: map value pointer from a successful lookup.
    let entry = unsafe { &mut *ct };
    let bits = state_bits(pkt.tcp_flags);
    if pkt.proto == PROTO_TCP && entry.state | bits != entry.state {
        entry.state |= bits;
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.saturating_sub(entry.last_seen_ns) > REFRESH_NS {
        entry.last_seen_ns = now;
        if !half {
            refresh(ctx, pkt, entry, now);
        }
    }
    if entry.state & tcp_state::COOKIE != 0
        && !half
        // SAFETY: read-only copy.
        && let Some(r) = unsafe { REVERSE_NAT.get(&entry.reverse_key(pkt.key.proto, pkt.key.family)) }
    {
        syncookie::shift(ctx, pkt, r.seq_delta, false);
    }
    send_to_backend(ctx, pkt, entry, bytes, now)
}

/// Send a client packet of flow `entry` on to its backend: NAT, counters, the next hop, and
/// the PROXY protocol program when the flow has a header.
#[inline(always)]
pub fn send_to_backend<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, entry: &mut CtEntry, bytes: u64, now: u64) -> u32 {
    let hop = match fwd::lookup_cached(ctx, pkt, entry.backend_id, &entry.backend, now) {
        Ok(h) => h,
        Err(e) => return drop::<C>(e.counter(), bytes),
    };
    if !nat::rewrite(ctx, pkt, &entry.snat, &entry.backend, entry.snat_port, entry.backend_port) {
        return drop::<C>(stat::DROP_TTL, bytes);
    }
    count(stat::FWD_TO_BACKEND, bytes);
    stats::listener(entry.listener_id, |c| {
        c.packets += 1;
        c.bytes += bytes;
    });
    stats::backend(entry.backend_id, |c| {
        c.packets += 1;
        c.bytes += bytes;
    });
    let action = fwd::transmit(ctx, hop.ifindex, hop.out(), &hop.smac, &hop.dmac, bytes);
    if entry.pp_version == lb_common::pp::OFF || action == C::DROP {
        return action;
    }
    // PROXY protocol: the header and the sequence shift are the tail-called program's.
    let Some(s) = pp_scratch() else { return drop::<C>(stat::DROP_PP, 0) };
    s.action = action;
    s.l4_off = pkt.l4_off;
    s.client_isn = entry.client_isn;
    s.pp_len = entry.pp_len as u32;
    s.pp_version = entry.pp_version;
    s.pp_acked = entry.pp_acked;
    s.proto = pkt.proto;
    s.family = pkt.key.family;
    s.fragment = pkt.is_fragment as u8;
    s.key = pkt.key;
    s.rkey = entry.reverse_key(pkt.key.proto, pkt.key.family);
    TAIL_CALL | prog_index::PP_CLIENT
}

/// Once a second per flow: keep the reply path alive and pointed at where the client is now,
/// and the client's persistence fresh. The reverse entry is changed only when this flow owns
/// it: a flow whose entry was evicted and its port taken by another, established or
/// half-open, never overwrites or writes that flow's (replies would go to the wrong client).
#[inline(always)]
fn refresh<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, entry: &CtEntry, now: u64) {
    let key = &pkt.key;
    let rkey = entry.reverse_key(key.proto, key.family);
    match REVERSE_NAT.get_ptr_mut(&rkey) {
        Some(r) => {
            // SAFETY: map value pointer from a successful lookup.
            let r = unsafe { &mut *r };
            if r.owned_by(key) {
                if let Some(eth) = pkt.eth(ctx) {
                    // SAFETY: bounds checked by eth().
                    unsafe {
                        r.client_mac = (*eth).src;
                        r.local_mac = (*eth).dst;
                    }
                }
                r.ifindex = ctx.ingress_ifindex();
                // Only where the client is changes: a SYN-cookie flow stays one.
                let local = if ctx.local_origin() { rev_flags::LOCAL_CLIENT } else { 0 };
                r.flags = (r.flags & !rev_flags::LOCAL_CLIENT) | local;
                r.last_seen_ns = now;
            } else {
                count(stat::REVERSE_CONFLICT, 0);
            }
        }
        // Lost to the LRU, and its port taken since by a flow still half-open: that flow's
        // SYN-ACK would come back to this flow's client, and its handshake find the port taken.
        None if HALF_OPEN_REV.get_ptr(&rkey).is_some() => count(stat::REVERSE_CONFLICT, 0),
        None => {
            if let Some(scratch) = scratch() {
                // Lost to the LRU: a flow the client has acknowledged had its backend's SYN-ACK,
                // so the sweep keeps giving it the established timeout, not the SYN one.
                let back = if entry.state & tcp_state::ACK != 0 { tcp_state::SYN | tcp_state::ACK } else { 0 };
                write_reverse(ctx, pkt, key, entry, back, now, &mut scratch.rev);
                let _ = REVERSE_NAT.insert(&rkey, &scratch.rev, BPF_NOEXIST as u64);
            }
        }
    }
    if let Some(cfg) = LISTENER_CFG.get(entry.listener_id)
        && cfg.persist_timeout_s != 0
    {
        persist::remember(&persist::key(entry.listener_id, key), entry.backend_id, now);
    }
}

/// A backend's reply: NAT it back to the client's flow and send it where the client is.
#[inline(never)]
pub fn to_client<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, rev: *mut RevEntry, bytes: u64) -> u32 {
    // SAFETY: map value pointer from a successful lookup.
    let r = unsafe { &mut *rev };
    let bits = state_bits(pkt.tcp_flags);
    if pkt.proto == PROTO_TCP && r.state | bits != r.state {
        r.state |= bits;
    }
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.saturating_sub(r.last_seen_ns) > REFRESH_NS {
        r.last_seen_ns = now;
    }
    if r.flags & rev_flags::COOKIE != 0 {
        syncookie::shift(ctx, pkt, r.seq_delta, true);
    }
    if !nat::rewrite(ctx, pkt, &r.vip, &r.client, r.vip_port, r.client_port) {
        return drop::<C>(stat::DROP_TTL, bytes);
    }
    count(stat::FWD_TO_CLIENT, bytes);
    stats::listener(r.listener_id, |c| {
        c.reply_packets += 1;
        c.reply_bytes += bytes;
    });
    let out = if r.flags & rev_flags::LOCAL_CLIENT != 0 { fwd::Out::Local } else { fwd::Out::Resolved };
    let action = fwd::transmit(ctx, r.ifindex, out, &r.local_mac, &r.client_mac, bytes);
    // PROXY protocol over TCP: ack, SACK and MSS are the tail-called program's. (UDP replies
    // carry no header: nothing to undo.)
    if r.pp_version == lb_common::pp::OFF || pkt.proto != PROTO_TCP || action == C::DROP {
        return action;
    }
    let Some(s) = pp_scratch() else { return drop::<C>(stat::DROP_PP, 0) };
    s.action = action;
    s.l4_off = pkt.l4_off;
    s.client_isn = r.client_isn;
    s.pp_len = r.pp_len as u32;
    s.pp_version = r.pp_version;
    s.pp_acked = r.pp_acked;
    s.proto = pkt.proto;
    s.family = pkt.key.family;
    s.fragment = pkt.is_fragment as u8;
    s.key = FlowKey {
        src: r.client,
        dst: r.vip,
        sport: r.client_port,
        dport: r.vip_port,
        proto: pkt.key.proto,
        family: pkt.key.family,
        _pad: [0; 2],
    };
    s.rkey = pkt.key;
    TAIL_CALL | prog_index::PP_BACKEND
}
