//! The two hooks the datapath runs in, behind one trait so the flow, NAT and ICMP code is
//! written once:
//! - XDP on the NICs named by `--iface`: wire frames, whose checksums are complete, so
//!   checksum changes are applied in place; frames leave by XDP_TX or a devmap redirect, or,
//!   when their egress cannot take an XDP redirect (a bridge, an overlay device, a pod's
//!   veth) or its neighbour is unresolved, are handed to tc on the same NIC with
//!   [`Handoff`] metadata (XDP_PASS);
//! - tc on the devices backends and local clients are reached through: skbs from local
//!   stacks may carry a partial checksum (CHECKSUM_PARTIAL), which only the kernel's
//!   checksum helpers update correctly, and frames leave by `bpf_redirect` /
//!   `bpf_redirect_neigh`.
use aya_ebpf::{
    EbpfContext,
    bindings::{
        BPF_F_INGRESS, BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, xdp_action,
    },
    helpers::generated::{
        bpf_l4_csum_replace, bpf_redirect, bpf_redirect_neigh, bpf_skb_change_tail, bpf_skb_load_bytes,
        bpf_skb_store_bytes, bpf_xdp_adjust_head, bpf_xdp_adjust_meta, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    programs::{TcContext, XdpContext},
};
use lb_common::{HANDOFF_MAGIC, Handoff, handoff_flags, stat};

use crate::{csum, maps::TX_PORTS, stats::count};

/// What the datapath needs of the hook it runs in.
pub trait Ctx {
    /// Hand the packet to the kernel untouched.
    const PASS: u32;
    /// Drop the packet.
    const DROP: u32;
    /// XDP (else tc).
    const XDP: bool;
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    fn raw(&self) -> *mut core::ffi::c_void;
    /// The interface the packet arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// Apply checksum changes to the TCP/UDP checksum field at `off`: `pseudo` and `data`
    /// are ones' complement sums of `!old + new` over the 16-bit words that changed, in the
    /// pseudo-header (addresses, length) and in the covered data (ports, seq, options).
    /// `udp`: a zero checksum means "none" (IPv4) and a computed zero is sent as 0xffff.
    /// Called after every direct write to the packet (the tc helper invalidates pointers).
    fn l4_csum(&self, off: u32, pseudo: u16, data: u16, udp: bool);
    /// Send the frame, its MACs set, out of `ifindex`; `resolved`: the MACs are the next
    /// hop's (else the kernel must resolve the neighbour).
    fn send(&self, ifindex: u32, resolved: bool, bytes: u64) -> u32;
    /// Copy `len` bytes of the packet at `off` to `buf` / from `buf` (past the linear
    /// part of an skb too); 0 on success.
    fn load_bytes(&self, off: u32, buf: *mut u8, len: u32) -> i64;
    fn store_bytes(&self, off: u32, buf: *const u8, len: u32) -> i64;
    /// The packet's length, link-layer header included.
    fn pkt_len(&self) -> u32;
    /// A GSO skb (several segments in one; never in XDP).
    fn is_gso(&self) -> bool;
    /// XDP: `len` bytes of new headroom in front of the frame; 0 on success.
    fn grow_head(&self, len: u32) -> i64;
    /// tc: the skb grown (zeroes at its tail) to `new_len` bytes; 0 on success.
    fn grow_tail(&self, new_len: u32) -> i64;
    /// The packet cut or grown at its tail to `new_len` bytes; 0 on success.
    fn set_len(&self, new_len: u32) -> i64;
    /// The packet was sent by this node's own stack (seen by tc egress).
    fn local_origin(&self) -> bool;
    /// Hand the frame up this node's stack as if received on `ifindex`.
    fn deliver_local(&self, ifindex: u32, bytes: u64) -> u32;
}

/// Pass the packet to the kernel, counted under `index`.
#[inline(always)]
pub fn pass<C: Ctx>(index: u32, bytes: u64) -> u32 {
    count(index, bytes);
    C::PASS
}

/// Drop the packet, counted under `index`.
#[inline(always)]
pub fn drop<C: Ctx>(index: u32, bytes: u64) -> u32 {
    count(index, bytes);
    C::DROP
}

/// A pointer to a `T` at `offset` in the frame, if the whole `T` lies inside it.
#[inline(always)]
pub fn ptr_at<C: Ctx, T>(ctx: &C, offset: usize) -> Result<*mut T, ()> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok((start + offset) as *mut T)
}

impl Ctx for XdpContext {
    const PASS: u32 = xdp_action::XDP_PASS;
    const DROP: u32 = xdp_action::XDP_DROP;
    const XDP: bool = true;

    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.as_ptr()
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: reading the context.
        unsafe { (*self.ctx).ingress_ifindex }
    }

    #[inline(always)]
    fn l4_csum(&self, off: u32, pseudo: u16, data: u16, udp: bool) {
        let Ok(p) = ptr_at::<_, u16>(self, (off & 0x3fff) as usize) else { return };
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            let old = *p;
            if udp && old == 0 {
                return;
            }
            let c = csum::apply(old, pseudo, data);
            *p = if udp { csum::udp_nonzero(c) } else { c };
        }
    }

    #[inline(always)]
    fn send(&self, ifindex: u32, resolved: bool, bytes: u64) -> u32 {
        if resolved {
            // Back out of the interface it came in on through the devmap too, not XDP_TX: a
            // veth (a kind or container node's NIC) kicks its peer's receive only for frames
            // redirected to it, unless the peer runs XDP itself; XDP_TX frames wait there
            // until other traffic flushes them.
            let back = ifindex == Ctx::ingress_ifindex(self);
            if let Ok(action) = TX_PORTS.redirect(ifindex, 0) {
                count(if back { stat::TX } else { stat::REDIRECT }, bytes);
                return action;
            }
            if back {
                count(stat::TX, bytes);
                return xdp_action::XDP_TX;
            }
        }
        handoff(self, ifindex, resolved, bytes)
    }

    #[inline(always)]
    fn load_bytes(&self, off: u32, buf: *mut u8, len: u32) -> i64 {
        // SAFETY: the caller's buffer holds `len` bytes; the helper checks the frame.
        unsafe { bpf_xdp_load_bytes(self.ctx, off, buf as *mut _, len) }
    }

    #[inline(always)]
    fn store_bytes(&self, off: u32, buf: *const u8, len: u32) -> i64 {
        // SAFETY: as above.
        unsafe { bpf_xdp_store_bytes(self.ctx, off, buf as *mut _, len) }
    }

    #[inline(always)]
    fn pkt_len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }

    #[inline(always)]
    fn is_gso(&self) -> bool {
        false
    }

    #[inline(always)]
    fn grow_head(&self, len: u32) -> i64 {
        // SAFETY: helper on our context.
        unsafe { bpf_xdp_adjust_head(self.ctx, -(len as i32)) }
    }

    #[inline(always)]
    fn grow_tail(&self, _new_len: u32) -> i64 {
        -1
    }

    #[inline(always)]
    fn set_len(&self, new_len: u32) -> i64 {
        let delta = new_len as i64 - Ctx::pkt_len(self) as i64;
        // SAFETY: helper on our context.
        unsafe { bpf_xdp_adjust_tail(self.ctx, delta as i32) }
    }

    #[inline(always)]
    fn local_origin(&self) -> bool {
        false
    }

    #[inline(always)]
    fn deliver_local(&self, _ifindex: u32, bytes: u64) -> u32 {
        // The frame arrived on a NIC: passing it up is delivering it here.
        count(stat::TO_LOCAL, bytes);
        xdp_action::XDP_PASS
    }
}

/// Pass the frame (already rewritten) up with [`Handoff`] metadata: `lb_tc_nic` on this
/// interface sends it to `ifindex`, which XDP cannot (not an XDP port, or the next hop's
/// neighbour is unresolved).
#[inline(always)]
fn handoff(ctx: &XdpContext, ifindex: u32, resolved: bool, bytes: u64) -> u32 {
    let size = core::mem::size_of::<Handoff>() as i32;
    // SAFETY: helper on our context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -size) } != 0 {
        count(stat::DROP_HANDOFF, bytes);
        return xdp_action::XDP_DROP;
    }
    let meta = ctx.metadata();
    if meta + size as usize > ctx.metadata_end() {
        count(stat::DROP_HANDOFF, bytes);
        return xdp_action::XDP_DROP;
    }
    let flags = if resolved { 0 } else { handoff_flags::NEIGH };
    // SAFETY: bounds checked just now.
    unsafe { *(meta as *mut Handoff) = Handoff { magic: HANDOFF_MAGIC, flags, ifindex } };
    count(if resolved { stat::XDP_TO_TC } else { stat::NEIGH_UNRESOLVED }, bytes);
    xdp_action::XDP_PASS
}

impl Ctx for TcContext {
    const PASS: u32 = TC_ACT_OK as u32;
    const DROP: u32 = TC_ACT_SHOT as u32;
    const XDP: bool = false;

    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn raw(&self) -> *mut core::ffi::c_void {
        self.as_ptr()
    }

    #[inline(always)]
    #[allow(
        clippy::misnamed_getters,
        reason = "the device tc runs on: where the packet arrived at ingress; at egress, where the node's own \
                  packet leaves (`ingress_ifindex` is 0 there), which the FIB lookup and the replies need"
    )]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: reading the context.
        unsafe { (*self.skb.skb).ifindex }
    }

    #[inline(always)]
    fn l4_csum(&self, off: u32, pseudo: u16, data: u16, udp: bool) {
        let mangled = if udp { BPF_F_MARK_MANGLED_0 as u64 } else { 0 };
        // SAFETY: helpers on our context; they check the offset against the skb. They know
        // the skb's checksum state: a partial checksum takes only the pseudo-header change.
        unsafe {
            if pseudo != 0 {
                bpf_l4_csum_replace(self.skb.skb, off, 0, pseudo as u64, BPF_F_PSEUDO_HDR as u64 | mangled);
            }
            if data != 0 {
                bpf_l4_csum_replace(self.skb.skb, off, 0, data as u64, mangled);
            }
        }
    }

    #[inline(always)]
    fn send(&self, ifindex: u32, resolved: bool, bytes: u64) -> u32 {
        count(stat::TC_REDIRECT, bytes);
        tc_redirect(ifindex, resolved)
    }

    #[inline(always)]
    fn load_bytes(&self, off: u32, buf: *mut u8, len: u32) -> i64 {
        // SAFETY: the caller's buffer holds `len` bytes; the helper checks the skb.
        unsafe { bpf_skb_load_bytes(self.skb.skb as *const _, off, buf as *mut _, len) }
    }

    #[inline(always)]
    fn store_bytes(&self, off: u32, buf: *const u8, len: u32) -> i64 {
        // SAFETY: as above.
        unsafe { bpf_skb_store_bytes(self.skb.skb, off, buf as *const _, len, 0) }
    }

    #[inline(always)]
    fn pkt_len(&self) -> u32 {
        self.len()
    }

    #[inline(always)]
    fn is_gso(&self) -> bool {
        // SAFETY: reading the context.
        unsafe { (*self.skb.skb).gso_size != 0 }
    }

    #[inline(always)]
    fn grow_head(&self, _len: u32) -> i64 {
        -1
    }

    #[inline(always)]
    fn grow_tail(&self, new_len: u32) -> i64 {
        // SAFETY: helper on our context.
        unsafe { bpf_skb_change_tail(self.skb.skb, new_len, 0) }
    }

    #[inline(always)]
    fn set_len(&self, new_len: u32) -> i64 {
        // SAFETY: helper on our context.
        unsafe { bpf_skb_change_tail(self.skb.skb, new_len, 0) }
    }

    #[inline(always)]
    fn local_origin(&self) -> bool {
        // Only packets this node's stack sent have no input interface.
        // SAFETY: reading the context.
        unsafe { (*self.skb.skb).ingress_ifindex == 0 }
    }

    #[inline(always)]
    fn deliver_local(&self, ifindex: u32, bytes: u64) -> u32 {
        count(stat::TO_LOCAL, bytes);
        // SAFETY: plain helper.
        let r = unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) };
        if r == TC_ACT_REDIRECT as i64 { TC_ACT_REDIRECT as u32 } else { TC_ACT_SHOT as u32 }
    }
}

/// `bpf_redirect` to a resolved next hop (MACs set), else `bpf_redirect_neigh`, which
/// resolves it.
#[inline(always)]
pub fn tc_redirect(ifindex: u32, resolved: bool) -> u32 {
    // SAFETY: plain helpers.
    let r = unsafe {
        if resolved { bpf_redirect(ifindex, 0) } else { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) }
    };
    if r == TC_ACT_REDIRECT as i64 { TC_ACT_REDIRECT as u32 } else { TC_ACT_SHOT as u32 }
}
