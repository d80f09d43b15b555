//! The benchmark's reference programs, measured beside the datapath in the same run: a
//! minimal XDP forwarder (the least any XDP forwarder does: new MACs, devmap redirect), and
//! the veth runs' backend sink (counts and drops the UDP it receives, at tc ingress).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    programs::{TcContext, XdpContext},
};

use crate::maps::{MIN_FWD_MACS, MIN_FWD_TX};

const ETH_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

/// An IPv4 frame gets the configured destination and source MACs and leaves through the
/// devmap's one device; anything else goes to the kernel.
#[inline(always)]
pub fn min_forward(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + ETH_LEN > end {
        return xdp_action::XDP_PASS;
    }
    let eth = start as *mut u8;
    // SAFETY: the 14-byte Ethernet header is inside the frame (checked above).
    let ether_type = unsafe { u16::from_be_bytes([*eth.add(12), *eth.add(13)]) };
    if ether_type != ETH_P_IP {
        return xdp_action::XDP_PASS;
    }
    let Some(macs) = MIN_FWD_MACS.get(0) else { return xdp_action::XDP_PASS };
    // SAFETY: as above; the map value is 12 bytes.
    unsafe { core::ptr::copy_nonoverlapping(macs.as_ptr(), eth, 12) };
    MIN_FWD_TX.redirect(0, 0).unwrap_or(xdp_action::XDP_PASS)
}

/// An IPv4 UDP packet is counted (`stat::RX`) and dropped; anything else (ARP, neighbour
/// discovery) goes on, so the backend still answers for its address.
#[inline(always)]
pub fn udp_sink(ctx: &TcContext) -> i32 {
    let ether_type = ctx.load::<[u8; 2]>(12).map(u16::from_be_bytes).unwrap_or(0);
    let proto = ctx.load::<u8>(ETH_LEN + 9).unwrap_or(0);
    if ether_type != ETH_P_IP || proto != IPPROTO_UDP {
        return TC_ACT_OK;
    }
    crate::stats::count(lb_common::stat::RX, 0);
    TC_ACT_SHOT
}
