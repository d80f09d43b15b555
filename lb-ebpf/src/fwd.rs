//! Sending a rewritten frame on: next hop from the kernel's FIB, then the hook's own way out
//! ([`Ctx::send`]).
use aya_ebpf::{bindings::bpf_fib_lookup as FibParams, helpers::generated::bpf_fib_lookup};
use lb_common::{Addr, FAMILY_V4, stat};

use crate::{
    ctx::Ctx,
    maps::{CONFIG, NEXTHOP_SLOTS, NEXTHOPS},
    parse::{Ip, Packet},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

/// Where the FIB sends traffic for a destination: egress ifindex and the two MACs.
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// The neighbour is resolved (the MACs are valid).
    pub resolved: bool,
}

pub struct NoRoute;

impl NoRoute {
    pub fn counter(&self) -> u32 {
        stat::DROP_NO_ROUTE
    }
}

/// Route lookup for `dst` of `family`, as if a frame were forwarded from its ingress
/// interface; `proto` and `tot_len` (0 if unknown) refine it when a packet is at hand. An
/// unresolved neighbour still names the egress interface (the kernel resolves it when tc
/// sends the frame with `bpf_redirect_neigh`).
#[inline(always)]
fn fib<C: Ctx>(ctx: &C, family: u8, dst: &Addr, proto: u8, tot_len: u16) -> Result<NextHop, NoRoute> {
    let p: &mut FibParams = &mut crate::maps::scratch().ok_or(NoRoute)?.fib;
    // SAFETY: an all-zero bpf_fib_lookup is a valid input.
    *p = unsafe { core::mem::zeroed() };
    p.l4_protocol = proto;
    p.ifindex = ctx.ingress_ifindex();
    p.__bindgen_anon_1.tot_len = tot_len;
    if family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_4.ipv4_dst = dst[0];
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_4.ipv6_dst = *dst;
    }
    // SAFETY: the helper reads and writes the lookup's parameters.
    let ret = unsafe { bpf_fib_lookup(ctx.raw(), p, core::mem::size_of::<FibParams>() as i32, 0) };
    match ret {
        FIB_SUCCESS => Ok(NextHop { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac, resolved: true }),
        FIB_NO_NEIGH => Ok(NextHop { ifindex: p.ifindex, smac: [0; 6], dmac: [0; 6], resolved: false }),
        _ => Err(NoRoute),
    }
}

/// How long a cached next hop is used before it is looked up again, whatever the
/// generation: bounds how long a change user space did not announce goes unseen.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;

/// Route lookup for a flow's backend (new or known), as if the packet were forwarded from its
/// ingress interface: the next hop cached for `backend_id` on this CPU when it is of the
/// current generation, from the same ingress, younger than [`NEXTHOP_TTL_NS`] and the packet
/// no longer than one the FIB accepted; else the FIB's answer, cached when the neighbour is
/// resolved.
#[inline(always)]
pub fn lookup_cached<C: Ctx, H: Ip>(
    ctx: &C,
    pkt: &Packet<H>,
    backend_id: u32,
    dst: &Addr,
    now: u64,
) -> Result<NextHop, NoRoute> {
    let ip = pkt.ip(ctx).ok_or(NoRoute)?;
    // The FIB checks the length against the route's MTU when it is given: a GSO skb (a local
    // sender's segments in one) is far longer, and the kernel segments it later, so it gets
    // the skb check (length 0) instead.
    // SAFETY: bounds checked by ip().
    let tot_len = if ctx.is_gso() { 0 } else { unsafe { H::tot_len(ip) } };
    let generation = match CONFIG.get(0) {
        Some(c) => c.nexthop_gen,
        None => 0,
    };
    let ingress = ctx.ingress_ifindex();
    let tag = backend_id.wrapping_add(1);
    let Some(c) = NEXTHOPS.get_ptr_mut(backend_id & (NEXTHOP_SLOTS - 1)) else {
        return fib(ctx, H::FAMILY, dst, pkt.proto, tot_len);
    };
    // SAFETY: per-CPU slot; no other user on this CPU while the program runs.
    let c = unsafe { &mut *c };
    let current = c.tag == tag
        && c.generation == generation
        && c.ingress == ingress
        && now.saturating_sub(c.stamp_ns) < NEXTHOP_TTL_NS;
    if current && tot_len <= c.max_len {
        return Ok(NextHop { ifindex: c.ifindex, smac: c.smac, dmac: c.dmac, resolved: true });
    }
    let hop = fib(ctx, H::FAMILY, dst, pkt.proto, tot_len)?;
    if hop.resolved {
        if current && c.ifindex == hop.ifindex && c.smac == hop.smac && c.dmac == hop.dmac {
            c.max_len = tot_len;
        } else {
            c.tag = tag;
            c.generation = generation;
            c.ingress = ingress;
            c.ifindex = hop.ifindex;
            c.smac = hop.smac;
            c.dmac = hop.dmac;
            c.max_len = tot_len;
            c.stamp_ns = now;
        }
    }
    Ok(hop)
}

/// Route lookup for an address without a parsed packet (ICMP errors).
#[inline(always)]
pub fn lookup_addr<C: Ctx>(ctx: &C, family: u8, dst: &Addr) -> Result<NextHop, NoRoute> {
    fib(ctx, family, dst, 0, 0)
}

/// Where a frame goes after the rewrite.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Out {
    /// To a next hop whose MACs are known.
    Resolved,
    /// To a next hop the kernel must resolve (tc: `bpf_redirect_neigh`).
    Unresolved,
    /// Up this node's own stack (a reply to the node itself as a client), as if received
    /// on `ifindex`.
    Local,
}

/// Set the frame's MACs (when known) and send it out of `ifindex` (or up this node's stack).
#[inline(always)]
pub fn transmit<C: Ctx>(ctx: &C, ifindex: u32, out: Out, smac: &[u8; 6], dmac: &[u8; 6], bytes: u64) -> u32 {
    let resolved = out != Out::Unresolved;
    if resolved {
        let Ok(eth) = crate::ctx::ptr_at::<C, crate::parse::EthHdr>(ctx, 0) else { return C::DROP };
        // SAFETY: bounds checked just now.
        unsafe {
            (*eth).src = *smac;
            (*eth).dst = *dmac;
        }
    }
    if out == Out::Local {
        return ctx.deliver_local(ifindex, bytes);
    }
    ctx.send(ifindex, resolved, bytes)
}

impl NextHop {
    #[inline(always)]
    pub fn out(&self) -> Out {
        if self.resolved { Out::Resolved } else { Out::Unresolved }
    }
}
