//! The SYN-cookie program's flow logic (`lb_xdp_cookie` / `lb_tc_cookie`): which of the
//! cookie steps of [`crate::syncookie`] a packet takes, and the flow tables it moves through.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_coarse_ns};
use lb_common::*;

use crate::{
    acl,
    ctx::{Ctx, drop, pass},
    forward::send_to_backend,
    maps::{CONNTRACK, HALF_OPEN, HALF_OPEN_REV, LISTENER_CFG, LISTENERS, REVERSE_NAT},
    parse::{Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    pp,
    stats::{self, count},
    syncookie::{self, CookieIp},
};

/// Largest PROXY v1 header per family ("PROXY TCP4 " + two addresses, two ports, CRLF).
const V1_MAX_LEN4: u32 = 56;
const V1_MAX_LEN6: u32 = 104;

/// A packet the entry or open program sent here: a SYN to answer, a client packet of a
/// cookie flow or carrying a cookie, or a cookie flow's backend SYN-ACK. Not inlined: the
/// program's entry function must stay small enough to be inlined into the program itself
/// (a tail call is not allowed from a BPF subprogram).
#[inline(never)]
pub fn step<C: Ctx, H: CookieIp>(ctx: &C, pkt: &mut Packet<H>, bytes: u64) -> u32 {
    if pkt.proto != PROTO_TCP {
        return pass::<C>(stat::PASS_NOT_OURS, bytes);
    }
    let flags = pkt.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN);
    let next = if flags == TCP_SYN | TCP_ACK {
        backend_synack(ctx, pkt).map(Next::Send)
    } else if C::XDP {
        client(ctx, pkt, flags, bytes)
    } else {
        Err(stat::DROP_NO_FLOW)
    };
    match next {
        // SAFETY: map value pointer from a successful lookup.
        Ok(Next::Send(ct)) => {
            send_to_backend(ctx, pkt, unsafe { &mut *ct }, bytes, unsafe { bpf_ktime_get_coarse_ns() })
        }
        Ok(Next::Answered(verdict)) => verdict,
        Err(counter) => drop::<C>(counter, bytes),
    }
}

/// Where a packet goes from here.
enum Next {
    /// On to the backend of this flow (it was made its SYN or its last handshake ACK).
    Send(*mut CtEntry),
    /// Back where it came from, as the cookie SYN-ACK: the verdict.
    Answered(u32),
}

/// A client packet: a SYN answered with a cookie, or a cookie flow's packet turned into the
/// flow's SYN, or dropped (the counter).
#[inline(always)]
fn client<C: Ctx, H: CookieIp>(ctx: &C, pkt: &mut Packet<H>, flags: u8, bytes: u64) -> Result<Next, u32> {
    let key = pkt.key;
    let lkey = ListenerKey { vip: key.dst, port: key.dport, proto: key.proto, family: key.family };
    // SAFETY: read-only copy of the value.
    let id = unsafe { LISTENERS.get(&lkey) }.copied().ok_or(stat::DROP_NO_FLOW)?;
    if flags == TCP_SYN {
        let cfg = LISTENER_CFG.get(id).ok_or(stat::DROP_NO_BACKEND)?;
        if !acl::allows(cfg, &key) {
            stats::listener(id, |c| c.acl_drops += 1);
            return Err(stat::DROP_ACL);
        }
        let room = if cfg.flags & listener_flags::PROXY_V2 != 0 {
            pp::v2_len(H::FAMILY) as u32
        } else if cfg.flags & listener_flags::PROXY_V1 != 0 {
            if H::FAMILY == FAMILY_V4 { V1_MAX_LEN4 } else { V1_MAX_LEN6 }
        } else {
            0
        };
        return syncookie::answer(ctx, pkt, room, bytes).map(Next::Answered).map_err(|()| stat::DROP_NO_FLOW);
    }
    // A client packet of a cookie flow the backend has not answered yet (the ACK that just
    // opened it, or one after): the flow's SYN, again.
    let h = HALF_OPEN.get_ptr_mut(&key).ok_or(stat::DROP_NO_FLOW)?;
    // SAFETY: map value pointer from a successful lookup.
    let isn = unsafe { (*h).client_isn };
    syncookie::make_syn(ctx, pkt, isn).map_err(|()| stat::DROP_HALF_OPEN)?;
    Ok(Next::Send(h))
}

/// A cookie flow's backend SYN-ACK (the first: the flow becomes established; a repeat: the
/// last ACK was lost), turned into the handshake's last ACK for the backend.
#[inline(always)]
fn backend_synack<C: Ctx, H: CookieIp>(ctx: &C, pkt: &mut Packet<H>) -> Result<*mut CtEntry, u32> {
    let rkey = pkt.key;
    let tcp = pkt.tcp(ctx).ok_or(stat::DROP_HALF_OPEN)?;
    // SAFETY: bounds checked by tcp().
    let isn = u32::from_be(unsafe { (*tcp).seq });
    let (rev, half) = match REVERSE_NAT.get_ptr_mut(&rkey) {
        Some(r) => (r, false),
        None => (HALF_OPEN_REV.get_ptr_mut(&rkey).ok_or(stat::DROP_HALF_OPEN)?, true),
    };
    // SAFETY: map value pointer from a successful lookup.
    let r = unsafe { &mut *rev };
    if r.flags & rev_flags::COOKIE == 0 {
        return Err(stat::DROP_HALF_OPEN);
    }
    let ckey = r.client_key(rkey.proto, rkey.family);
    if half {
        let h = HALF_OPEN.get_ptr(&ckey).ok_or(stat::DROP_HALF_OPEN)?;
        if !r.owned_by(&ckey) {
            return Err(stat::DROP_HALF_OPEN);
        }
        r.server_isn = isn;
        r.seq_delta = isn.wrapping_sub(r.seq_delta);
        r.state |= tcp_state::SYN | tcp_state::ACK;
        if REVERSE_NAT.insert(&rkey, r, BPF_NOEXIST as u64).is_err() {
            return Err(stat::REVERSE_CONFLICT);
        }
        // SAFETY: map value pointer from a successful lookup.
        let listener = unsafe { (*h).listener_id };
        // SAFETY: as above.
        let _ = CONNTRACK.insert(&ckey, unsafe { &*h }, BPF_NOEXIST as u64);
        let _ = HALF_OPEN_REV.remove(&rkey);
        let _ = HALF_OPEN.remove(&ckey);
        count(stat::HANDSHAKES, 0);
        stats::listener(listener, |c| c.handshakes += 1);
    } else if isn != r.server_isn {
        return Err(stat::DROP_HALF_OPEN);
    }
    let ct = CONNTRACK.get_ptr_mut(&ckey).ok_or(stat::DROP_HALF_OPEN)?;
    // SAFETY: as above.
    let client_isn = unsafe { (*ct).client_isn };
    syncookie::make_ack(ctx, pkt, client_isn, isn).map_err(|()| stat::DROP_HALF_OPEN)?;
    // From here the packet is the client's (its flow's key: the NAT, counters, PROXY header).
    pkt.key = ckey;
    count(stat::SYNCOOKIE_HANDSHAKES, 0);
    Ok(ct)
}
