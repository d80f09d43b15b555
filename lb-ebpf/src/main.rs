//! XDP datapath of the load balancer: full-NAT L4 forwarding for the listeners the agent loads.
//!
//! Packet walk: parse → conntrack hit (client flow) or reverse-NAT hit (backend reply) or
//! listener hit (new flow: schedule, pick a source port, record both directions) → rewrite
//! addresses, ports and checksums → forward with `bpf_fib_lookup` and a devmap redirect.
//! Everything that is not ours goes to the kernel untouched (XDP_PASS).
#![no_std]
#![no_main]
// Two lints whose fixes change the code the verifier sees (checked: the object differs).
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values go to the map helpers by reference: by value they are copied onto the \
              512-byte BPF stack first"
)]
#![allow(
    clippy::manual_range_contains,
    reason = "`(a..=b).contains(&x)` compiles to a subtraction and one compare, which loses the bounds the \
              verifier proves from two compares on the register a helper or pointer then uses"
)]

mod acl;
mod bench;
mod cookie_flow;
mod csum;
mod ctx;
mod filter;
mod flow;
mod forward;
mod fwd;
mod half_open;
mod icmp;
mod maps;
mod nat;
mod parse;
mod persist;
mod pp;
mod sched;
mod stats;
mod syncookie;
mod tc;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

#[xdp]
pub fn lb_xdp(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, flow::handle(&ctx))
}

/// A packet to a listener with no established flow (tail-called by `lb_xdp`).
#[xdp]
pub fn lb_xdp_open(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, flow::open(&ctx))
}

/// SYN cookies: a SYN answered, a cookie's ACK, a cookie flow's backend SYN-ACK
/// (tail-called by `lb_xdp` / `lb_xdp_open`).
#[xdp]
pub fn lb_xdp_cookie(ctx: XdpContext) -> u32 {
    xdp_verdict(&ctx, flow::cookie(&ctx))
}

/// The datapath's verdict, or the program it asks for: new flows and PROXY protocol work
/// each run in their own program (tail calls are made from here, the entry function), which
/// returns the verdict. If the call fails the packet cannot be sent as it must be.
#[inline(always)]
fn xdp_verdict(ctx: &XdpContext, action: Result<u32, ()>) -> u32 {
    let action = action.unwrap_or(xdp_action::XDP_PASS);
    if action & maps::TAIL_CALL != 0 {
        // SAFETY: the context is this program's.
        unsafe { maps::PROGS.tail_call(ctx, action & 0xff) };
        stats::count(lb_common::stat::DROP_PP, 0);
        return xdp_action::XDP_DROP;
    }
    action
}

/// PROXY protocol on a client → backend packet (tail-called by `lb_xdp`).
#[xdp]
pub fn lb_xdp_pp_client(ctx: XdpContext) -> u32 {
    pp::client(&ctx)
}

/// PROXY protocol on a backend → client packet (tail-called by `lb_xdp`).
#[xdp]
pub fn lb_xdp_pp_backend(ctx: XdpContext) -> u32 {
    pp::backend(&ctx)
}

/// The datapath on the devices backends and local clients are reached through (bridges,
/// overlay devices, pod veths): tc ingress, skb checksum helpers.
#[classifier]
pub fn lb_tc(ctx: TcContext) -> i32 {
    tc::ingress(&ctx) as i32
}

/// PROXY protocol on a client → backend skb (tail-called by `lb_tc` / `lb_tc_egress`).
#[classifier]
pub fn lb_tc_pp_client(ctx: TcContext) -> i32 {
    let action = pp::client(&ctx);
    if action & maps::TAIL_CALL != 0 {
        // SAFETY: the context is this program's.
        unsafe { maps::TC_PROGS.tail_call(&ctx, action & 0xff) };
        stats::count(lb_common::stat::DROP_PP, 0);
        return aya_ebpf::bindings::TC_ACT_SHOT;
    }
    action as i32
}

/// A packet to a listener with no established flow (tail-called by `lb_tc` / `lb_tc_egress`).
#[classifier]
pub fn lb_tc_open(ctx: TcContext) -> i32 {
    tc::open(&ctx) as i32
}

/// A cookie flow's backend SYN-ACK in an skb (tail-called by `lb_tc`).
#[classifier]
pub fn lb_tc_cookie(ctx: TcContext) -> i32 {
    tc::cookie(&ctx) as i32
}

/// Room for the PROXY header in an skb: payload moved up (tail-called by `lb_tc_pp_client`).
#[classifier]
pub fn lb_tc_pp_move(ctx: TcContext) -> i32 {
    pp::tc_move(&ctx) as i32
}

/// PROXY protocol on a backend → client skb (tail-called by `lb_tc`).
#[classifier]
pub fn lb_tc_pp_backend(ctx: TcContext) -> i32 {
    pp::backend(&ctx) as i32
}

/// tc egress on the XDP NICs: the node's own connections to VIPs.
#[classifier]
pub fn lb_tc_egress(ctx: TcContext) -> i32 {
    tc::egress(&ctx) as i32
}

/// tc ingress on the XDP NICs: sends on the frames `lb_xdp` handed over.
#[classifier]
pub fn lb_tc_nic(ctx: TcContext) -> i32 {
    tc::nic(&ctx) as i32
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// The tc benchmark's floor: count the packet, drop it (`TC_ACT_SHOT`).
#[classifier]
pub fn lb_tc_floor(_ctx: TcContext) -> i32 {
    stats::count(lb_common::stat::RX, 0);
    aya_ebpf::bindings::TC_ACT_SHOT
}

/// The benchmark's floor: count the packet, drop it. `cargo xtask bench` measures every
/// datapath case against this program in the same run.
#[xdp]
pub fn lb_xdp_floor(_ctx: XdpContext) -> u32 {
    stats::count(lb_common::stat::RX, 0);
    xdp_action::XDP_DROP
}

/// The benchmark's minimal XDP forwarder (MAC rewrite + devmap redirect): the veth runs
/// measure the datapath's marginal cost against it.
#[xdp]
pub fn lb_xdp_min_fwd(ctx: XdpContext) -> u32 {
    bench::min_forward(&ctx)
}

/// The veth runs' backend: counts and drops the UDP it receives at tc ingress, before its
/// IP stack, whatever forwarded it (an skb either way, so every mode pays the same).
#[classifier]
pub fn lb_tc_udp_sink(ctx: TcContext) -> i32 {
    bench::udp_sink(&ctx)
}
