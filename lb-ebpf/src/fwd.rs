//! Sending a rewritten frame on: next hop from the kernel's FIB, then XDP_TX or a redirect.
use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action},
    helpers::generated::{bpf_fib_lookup, bpf_redirect},
    programs::XdpContext,
};
use lb_common::stat;

use crate::{maps::TX_PORTS, parse::Packet, stats::count};

const AF_INET: u8 = 2;
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;

/// Where the FIB sends traffic for `daddr`: egress ifindex and the two MACs.
pub struct NextHop {
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

pub enum FibError {
    NoRoute,
    NoNeigh,
}

/// Route lookup for an IPv4 destination, as if the frame were forwarded from `ingress`.
#[inline(always)]
pub fn lookup_v4(ctx: &XdpContext, pkt: &Packet, daddr: u32) -> Result<NextHop, FibError> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid input; header pointers are bounds checked.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = pkt.proto;
    unsafe {
        p.__bindgen_anon_1.tot_len = u16::from_be((*pkt.ip).tot_len);
        p.__bindgen_anon_2.tos = (*pkt.ip).tos;
        p.__bindgen_anon_4.ipv4_dst = daddr;
        p.ifindex = (*ctx.ctx).ingress_ifindex;
    }
    let ret = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match ret {
        FIB_SUCCESS => Ok(NextHop { ifindex: p.ifindex, smac: p.smac, dmac: p.dmac }),
        FIB_NO_NEIGH => Err(FibError::NoNeigh),
        _ => Err(FibError::NoRoute),
    }
}

/// Set the frame's MACs and send it out of `ifindex`.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, pkt: &Packet, ifindex: u32, smac: &[u8; 6], dmac: &[u8; 6]) -> u32 {
    // SAFETY: the Ethernet header was bounds checked by `parse`.
    unsafe {
        (*pkt.eth).src = *smac;
        (*pkt.eth).dst = *dmac;
    }
    let bytes = (ctx.data_end() - ctx.data()) as u64;
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
