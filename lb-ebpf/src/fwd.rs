//! Sending a rewritten frame on: next hop from the kernel's FIB, then XDP_TX or a redirect.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::generated::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::{Addr, FAMILY_V4, stat};

use crate::{
    maps::TX_PORTS,
    parse::{Ip, Packet},
    stats::count,
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
}

pub enum FibError {
    NoRoute,
    NoNeigh,
}

impl FibError {
    pub fn counter(&self) -> u32 {
        match self {
            FibError::NoRoute => stat::DROP_NO_ROUTE,
            FibError::NoNeigh => stat::DROP_NO_NEIGH,
        }
    }
}

/// Route lookup for `dst` of `family`, as if a frame were forwarded from its ingress
/// interface; `proto` and `tot_len` (0 if unknown) refine it when a packet is at hand.
#[inline(always)]
fn fib(ctx: &XdpContext, family: u8, dst: &Addr, proto: u8, tot_len: u16) -> Result<NextHop, FibError> {
    let p: &mut FibParams = &mut crate::maps::scratch().ok_or(FibError::NoRoute)?.fib;
    // SAFETY: an all-zero bpf_fib_lookup is a valid input.
    *p = unsafe { core::mem::zeroed() };
    p.l4_protocol = proto;
    unsafe {
        p.ifindex = (*ctx.ctx).ingress_ifindex;
        p.__bindgen_anon_1.tot_len = tot_len;
        if family == FAMILY_V4 {
            p.family = AF_INET;
            p.__bindgen_anon_4.ipv4_dst = dst[0];
        } else {
            p.family = AF_INET6;
            p.__bindgen_anon_4.ipv6_dst = *dst;
        }
    }
    let ret = unsafe { bpf_fib_lookup(ctx.ctx as *mut _, p, core::mem::size_of::<FibParams>() as i32, 0) };
    match ret {
        FIB_SUCCESS => Ok(NextHop { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac }),
        FIB_NO_NEIGH => Err(FibError::NoNeigh),
        _ => Err(FibError::NoRoute),
    }
}

/// Route lookup for `dst`, as if the packet were forwarded from its ingress interface.
#[inline(always)]
pub fn lookup<H: Ip>(ctx: &XdpContext, pkt: &Packet<H>, dst: &Addr) -> Result<NextHop, FibError> {
    let ip = pkt.ip(ctx).ok_or(FibError::NoRoute)?;
    // SAFETY: bounds checked by ip().
    let tot_len = unsafe { H::tot_len(ip) };
    fib(ctx, H::FAMILY, dst, pkt.proto, tot_len)
}

/// Route lookup for an address without a parsed packet (ICMP errors).
#[inline(always)]
pub fn lookup_addr(ctx: &XdpContext, family: u8, dst: &Addr) -> Result<NextHop, FibError> {
    fib(ctx, family, dst, 0, 0)
}

/// Send the frame (MACs already set) out of `ifindex`: XDP_TX back out of the interface it
/// came in on, else a devmap redirect.
#[inline(always)]
pub fn send(ctx: &XdpContext, ifindex: u32, bytes: u64) -> u32 {
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if ifindex == ingress {
        count(stat::TX, bytes);
        return xdp_action::XDP_TX;
    }
    count(stat::REDIRECT, bytes);
    match TX_PORTS.redirect(ifindex, 0) {
        Ok(action) => action,
        // Not in the devmap: the generic redirect reaches any interface, only slower.
        Err(_) => unsafe { bpf_redirect(ifindex, 0) as u32 },
    }
}

/// Set the frame's MACs and send it out of `ifindex`.
#[inline(always)]
pub fn transmit<H: Ip>(ctx: &XdpContext, pkt: &Packet<H>, ifindex: u32, smac: &[u8; 6], dmac: &[u8; 6], bytes: u64) -> u32 {
    let Some(eth) = pkt.eth(ctx) else { return xdp_action::XDP_DROP };
    // SAFETY: bounds checked just now.
    unsafe {
        (*eth).src = *smac;
        (*eth).dst = *dmac;
    }
    send(ctx, ifindex, bytes)
}
