//! TCP flows between the client's SYN and its handshake ACK, and the full-NAT source ports.
//!
//! A SYN opens a flow in the half-open tables (`HALF_OPEN`, `HALF_OPEN_REV`), never in the
//! established ones: a SYN flood churns a bounded table of its own and cannot evict an
//! established flow. The flow moves to `CONNTRACK` / `REVERSE_NAT` when the client's ACK
//! acknowledges the backend's SYN-ACK (a spoofed source never sees that SYN-ACK, so it
//! cannot complete the move). When no source port is free, a new flow takes the port of the
//! oldest half-open flow it came across, never an established flow's.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use lb_common::*;

use crate::{
    ctx::Ctx,
    maps::{CLAIM_WALK, CONFIG, CONNTRACK, HALF_OPEN, HALF_OPEN_REV, REVERSE_NAT},
    parse::{Ip, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats::count,
};

/// How long a half-open flow keeps its source port against a new flow that finds none free.
const HALF_OPEN_GRACE_NS: u64 = 50_000_000;
/// The same once the backend answered (its SYN-ACK relayed): the client may be connected
/// already on its side and only its ACK on the way, one round trip later; it would not
/// retry a SYN. A second (the backend's own SYN-ACK retransmit timeout) covers real round
/// trips; a flood's spoofed clients, which never answer, still give their ports back.
const ANSWERED_GRACE_NS: u64 = 1_000_000_000;

/// True for the only TCP packet that may open a flow: a SYN without ACK, RST or FIN.
#[inline(always)]
pub fn opens<H: Ip>(pkt: &Packet<H>) -> bool {
    pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
}

/// What to do with a client packet of a half-open flow.
pub enum Step {
    /// Forward it on the half-open entry (a retransmitted SYN, a RST).
    Forward,
    /// It completed the handshake: the flow is now in the established tables.
    Established,
    /// The flow lost its backend side (evicted, or its port taken back): forget it.
    Lost,
    /// Not a packet this flow may send yet (an ACK that acknowledges no SYN-ACK).
    Drop,
    /// A SYN-cookie flow's packet: the cookie program sends it as the flow's SYN again.
    Cookie,
}

/// A client packet of half-open flow `ct` (`HALF_OPEN[pkt.key]`). Not inlined: its keys
/// would grow the calling program's frame past what the new-flow call beneath it leaves.
#[inline(never)]
pub fn on_client<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, ct: &CtEntry, now: u64) -> Step {
    let key = &pkt.key;
    let rkey = ct.reverse_key(key.proto, key.family);
    let Some(r) = HALF_OPEN_REV.get_ptr_mut(&rkey) else { return Step::Lost };
    // SAFETY: map value pointer from a successful lookup.
    let r = unsafe { &mut *r };
    if !r.owned_by(key) {
        return Step::Lost;
    }
    let flags = pkt.tcp_flags;
    if ct.state & tcp_state::COOKIE != 0 && flags & TCP_RST == 0 {
        return Step::Cookie;
    }
    if flags & TCP_RST != 0 || flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
        // Keep the port's owner fresh: the oldest half-open flow is the one reclaimed.
        r.last_seen_ns = now;
        return Step::Forward;
    }
    if flags & (TCP_SYN | TCP_ACK) != TCP_ACK || r.state & tcp_state::SYN == 0 {
        return Step::Drop;
    }
    let Some(tcp) = pkt.tcp(ctx) else { return Step::Drop };
    // SAFETY: bounds checked by tcp().
    let ack = u32::from_be(unsafe { (*tcp).ack });
    if ack != r.server_isn.wrapping_add(1) {
        return Step::Drop;
    }
    // The reverse side first: the port is never free in between. Another CPU may have moved
    // this very flow already (the entry it wrote is this flow's).
    if REVERSE_NAT.insert(&rkey, r, BPF_NOEXIST as u64).is_err() {
        match REVERSE_NAT.get_ptr(&rkey) {
            // SAFETY: as above.
            Some(e) if unsafe { &*e }.owned_by(key) => {}
            _ => {
                count(stat::REVERSE_CONFLICT, 0);
                return Step::Drop;
            }
        }
    }
    let _ = CONNTRACK.insert(key, ct, BPF_NOEXIST as u64);
    let _ = HALF_OPEN_REV.remove(&rkey);
    let _ = HALF_OPEN.remove(key);
    Step::Established
}

/// A backend packet of a half-open flow (its SYN-ACK): remember the backend's ISN, which the
/// client's handshake ACK must acknowledge.
#[inline(always)]
pub fn on_backend<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, r: &mut RevEntry, now: u64) {
    r.last_seen_ns = now;
    if pkt.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        && let Some(tcp) = pkt.tcp(ctx)
    {
        // SAFETY: bounds checked by tcp().
        r.server_isn = u32::from_be(unsafe { (*tcp).seq });
    }
}

/// Reserve a source port for new flow `key`'s backend side: a bounded number of tries, each
/// a random port of the configured range. The reverse entry is inserted only where no flow
/// holds the port, so two flows never share one; a TCP flow's goes to `HALF_OPEN_REV` and
/// skips ports an established flow holds. When the walk finds no free port, a TCP flow
/// takes the port of the oldest half-open flow it met (whose client side is forgotten).
#[inline(always)]
pub fn claim_snat_port(entry: &mut CtEntry, rev: &RevEntry, key: &FlowKey) -> Option<FlowKey> {
    let cfg = CONFIG.get(0)?;
    let (min, max) = (cfg.snat_port_min as u32, cfg.snat_port_max as u32);
    if max < min {
        return None;
    }
    let span = max - min + 1;
    let w = CLAIM_WALK.get_ptr_mut(0)?;
    // SAFETY: per-CPU slot, used by this walk only.
    let w = unsafe { &mut *w };
    let tcp = key.proto == PROTO_TCP;
    w.oldest_seen = u64::MAX;
    w.oldest_port = 0;
    let mut i = 0;
    while i < SNAT_PORT_TRIES {
        // Each try an independent random port. A fixed stride from one random start probed
        // in chains, as linear probing does: taken ports clustered along them, so with most
        // of the range held a new flow met long runs of taken ports (a lookup, a cache miss
        // each) and, after the last try, was dropped.
        let port = min + unsafe { bpf_get_prandom_u32() } % span;
        entry.snat_port = (port as u16).to_be();
        w.rkey = entry.reverse_key(key.proto, key.family);
        i += 1;
        // A lookup first: an LRU map's insert takes a free node (evicting to get one when
        // its free list is empty) before it finds the key taken, then gives it back.
        if REVERSE_NAT.get_ptr(&w.rkey).is_some() {
            continue;
        }
        if !tcp {
            if REVERSE_NAT.insert(&w.rkey, rev, BPF_NOEXIST as u64).is_ok() {
                return Some(w.rkey);
            }
            continue;
        }
        if HALF_OPEN_REV.insert(&w.rkey, rev, BPF_NOEXIST as u64).is_ok() {
            return Some(w.rkey);
        }
        if let Some(h) = HALF_OPEN_REV.get_ptr(&w.rkey) {
            // SAFETY: map value pointer from a successful lookup.
            let (seen, state) = unsafe { ((*h).last_seen_ns, (*h).state) };
            // Compared as if last seen later, by the longer grace: below, every candidate
            // is held to HALF_OPEN_GRACE_NS.
            let seen = if state & tcp_state::SYN != 0 { seen + (ANSWERED_GRACE_NS - HALF_OPEN_GRACE_NS) } else { seen };
            if seen < w.oldest_seen {
                w.oldest_seen = seen;
                w.oldest_port = port;
            }
        }
    }
    // A flow younger than the grace keeps its port: its handshake gets at least that long
    // (a SYN that finds no port is dropped and its client retries, which it survives; a
    // handshake whose port was taken from under it is lost), one the backend answered a
    // second.
    let now = unsafe { bpf_ktime_get_ns() };
    if tcp {
        // No free port: under a SYN flood, cookies keep the ports for proven clients.
        crate::syncookie::arm(now);
    }
    // (`oldest_seen` may lie ahead of now: an answered flow's is moved on by the longer grace.)
    if w.oldest_seen == u64::MAX || w.oldest_seen.saturating_add(HALF_OPEN_GRACE_NS) > now {
        return None;
    }
    entry.snat_port = (w.oldest_port as u16).to_be();
    w.rkey = entry.reverse_key(key.proto, key.family);
    if let Some(h) = HALF_OPEN_REV.get_ptr(&w.rkey) {
        // SAFETY: as above.
        let _ = HALF_OPEN.remove(&unsafe { &*h }.client_key(key.proto, key.family));
    }
    HALF_OPEN_REV.insert(&w.rkey, rev, BPF_ANY as u64).ok()?;
    count(stat::HALF_OPEN_RECLAIMED, 0);
    Some(w.rkey)
}
