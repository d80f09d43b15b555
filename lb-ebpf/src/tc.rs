//! The tc programs: `lb_tc_nic` sends on what XDP handed over; `lb_tc` runs the whole
//! datapath on the devices backends and local clients are reached through (bridges, overlay
//! devices, pod veths), where packets come from local stacks.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::generated::bpf_skb_pull_data,
    programs::TcContext,
};
use lb_common::{HANDOFF_MAGIC, Handoff, handoff_flags, stat};

use crate::{
    ctx::tc_redirect,
    flow,
    maps::{TAIL_CALL, TC_PROGS},
    stats::count,
};

/// Bytes of headers the datapath reads directly (Ethernet, IPv6 with extension headers,
/// a TCP header); pulled into the linear part, when an skb has less there, once the packet
/// may be ours.
const HEADERS: u32 = 128;
/// Bytes "is it ours" reads (Ethernet and an IPv6 header; IPv4's ports are read when there).
const FILTER_HEADERS: u32 = 54;

/// `lb_tc_nic`: a frame with [`Handoff`] metadata is sent where XDP said; everything else
/// goes on into the stack.
#[inline(always)]
pub fn nic(ctx: &TcContext) -> u32 {
    // SAFETY: reading the context.
    let (meta, data) = unsafe { ((*ctx.skb.skb).data_meta as usize, (*ctx.skb.skb).data as usize) };
    if meta + core::mem::size_of::<Handoff>() > data {
        return TC_ACT_OK as u32;
    }
    // SAFETY: bounds checked just now (the verifier knows data_meta..data).
    let h = unsafe { *(meta as *const Handoff) };
    if h.magic != HANDOFF_MAGIC {
        return TC_ACT_OK as u32;
    }
    count(stat::TC_REDIRECT, ctx.len() as u64);
    tc_redirect(h.ifindex, h.flags & handoff_flags::NEIGH == 0)
}

/// `lb_tc_egress`: the node's own packets (no input interface) leaving by a NIC go through
/// the datapath (a connection to a VIP); forwarded and redirected ones go on.
#[inline(always)]
pub fn egress(ctx: &TcContext) -> u32 {
    // SAFETY: reading the context.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } != 0 {
        return TC_ACT_OK as u32;
    }
    count(stat::TC_EGRESS_RX, 0);
    datapath(ctx)
}

/// `lb_tc`: the datapath on an skb.
#[inline(always)]
pub fn ingress(ctx: &TcContext) -> u32 {
    count(stat::TC_RX, 0);
    datapath(ctx)
}

#[inline(always)]
fn datapath(ctx: &TcContext) -> u32 {
    let len = ctx.len();
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < HEADERS && len > linear {
        // A pull may copy the payload into a new head: only for packets that may be ours.
        if linear < FILTER_HEADERS && !pull(ctx, len, FILTER_HEADERS) {
            return TC_ACT_OK as u32;
        }
        if let Some(verdict) = flow::not_ours(ctx) {
            return verdict;
        }
        if !pull(ctx, len, HEADERS) {
            return TC_ACT_OK as u32;
        }
    }
    then(ctx, flow::handle(ctx))
}

/// Pull up to `want` bytes (at most the packet) into the skb's linear part.
#[inline(always)]
fn pull(ctx: &TcContext, len: u32, want: u32) -> bool {
    let want = if len < want { len } else { want };
    // SAFETY: helper on our context.
    unsafe { bpf_skb_pull_data(ctx.skb.skb, want) == 0 }
}

/// `lb_tc_open`: a packet to a listener with no established flow (tail-called; the skb's
/// headers are already pulled).
#[inline(always)]
pub fn open(ctx: &TcContext) -> u32 {
    then(ctx, flow::open(ctx))
}

/// `lb_tc_cookie`: a SYN-cookie flow's backend SYN-ACK (tail-called).
#[inline(always)]
pub fn cookie(ctx: &TcContext) -> u32 {
    then(ctx, flow::cookie(ctx))
}

/// The verdict of the datapath, or the program it tail-calls.
#[inline(always)]
fn then(ctx: &TcContext, action: Result<u32, ()>) -> u32 {
    let Ok(action) = action else { return TC_ACT_OK as u32 };
    if action & TAIL_CALL != 0 {
        // New flows and PROXY protocol work, each in its own program; it returns the verdict.
        // SAFETY: the context is this program's.
        unsafe { TC_PROGS.tail_call(ctx, action & 0xff) };
        count(stat::DROP_PP, 0);
        return TC_ACT_SHOT as u32;
    }
    action
}
