//! Full NAT rewrites: addresses and ports (and a fragment's new IPv4 identification) in
//! place; the IPv4 header checksum directly, the
//! transport checksum through the hook ([`Ctx::l4_csum`]), which knows whether the packet's
//! checksum is complete (wire frames) or partial (skbs from local stacks).
use lb_common::{Addr, PROTO_UDP};

use crate::{
    csum::Diff,
    ctx::Ctx,
    parse::{Ip, Packet},
};

/// Rewrite the packet to `src:sport → dst:dport` (network byte order) and take a hop off
/// its TTL / hop limit, as a router does. A fragment after the first has no transport
/// header: only its addresses change (the transport checksum, carried by the first
/// fragment, covers the pseudo-header and is fixed there). False, with nothing changed,
/// when the packet's TTL has run out (a routing loop ends here).
#[inline(always)]
pub fn rewrite<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, src: &Addr, dst: &Addr, sport: u16, dport: u16) -> bool {
    let Some(ip) = pkt.ip(ctx) else { return true };
    // SAFETY: bounds checked by ip().
    if !unsafe { H::hop(ip) } {
        return false;
    }
    let mut pseudo = Diff::new();
    let mut data = Diff::new();
    // SAFETY: every pointer was bounds checked just now.
    unsafe {
        // Unconditional (a packet that is no fragment gets its own identification back):
        // a branch here would double the verifier's paths through everything after it.
        H::set_id(ip, pkt.frag_id as u16);
        H::set_addrs(ip, src, dst, &mut pseudo);
        let Some(ports) = pkt.ports(ctx) else { return true };
        data.add2((*ports).src, sport);
        data.add2((*ports).dst, dport);
        (*ports).src = sport;
        (*ports).dst = dport;
    }
    ctx.l4_csum(pkt.csum_off(), pseudo.get(), data.get(), pkt.proto == PROTO_UDP);
    true
}

/// Write the packet's IPv4 identification (`Packet::frag_id`) alone.
#[inline(always)]
pub fn set_id<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>) {
    if let Some(ip) = pkt.ip(ctx) {
        // SAFETY: bounds checked by ip().
        unsafe { H::set_id(ip, pkt.frag_id as u16) };
    }
}
