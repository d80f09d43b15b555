//! ICMP errors about a tracked flow (destination unreachable — fragmentation needed among
//! them —, time exceeded, parameter problem) are translated like the flow itself, so path
//! MTU discovery and error reporting work through the full NAT:
//! - from the backend side, about a packet we sent the backend (SNAT → backend): it goes to
//!   the client, its quoted packet turned back into the client's (client → VIP);
//! - from the client side, about a reply we sent the client (VIP → client): it goes to the
//!   backend, its quoted packet turned into the backend's view (backend → SNAT).
//!
use lb_common::{CtEntry, FAMILY_V4, FlowKey, PROTO_TCP, PROTO_UDP, RevEntry, rev_flags, stat};

use crate::{
    csum,
    ctx::Ctx,
    fwd,
    maps::{CONNTRACK, HALF_OPEN, HALF_OPEN_REV, REVERSE_NAT, scratch},
    parse::{ETH_HLEN, Ipv4Hdr, Ports, ptr_at},
    stats::count,
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;

#[repr(C)]
struct IcmpHdr {
    kind: u8,
    code: u8,
    check: u16,
    rest: u32,
}

/// The addresses and ports to write into an ICMP error and the packet it quotes.
struct Translation {
    outer_src: u32,
    outer_dst: u32,
    inner_src: u32,
    inner_dst: u32,
    inner_sport: u16,
    inner_dport: u16,
}

/// Handle an IPv4 ICMP packet; XDP_PASS unless it is an error about one of our flows.
#[inline(never)]
pub fn handle_v4<C: Ctx>(ctx: &C, bytes: u64) -> u32 {
    match try_v4(ctx, bytes) {
        Some(action) => action,
        None => {
            count(stat::PASS_NOT_OURS, bytes);
            C::PASS
        }
    }
}

#[inline(always)]
fn try_v4<C: Ctx>(ctx: &C, bytes: u64) -> Option<u32> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok()?;
    // SAFETY: bounds checked by ptr_at, here and below.
    let (vihl, frag) = unsafe { ((*ip).version_ihl, u16::from_be((*ip).frag_off)) };
    let ihl = ((vihl & 0x0f) as usize) * 4;
    if ihl < 20 || frag & 0x3fff != 0 {
        return None;
    }
    let icmp_off = ETH_HLEN + ihl;
    let icmp: *mut IcmpHdr = ptr_at(ctx, icmp_off).ok()?;
    let kind = unsafe { (*icmp).kind };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED && kind != ICMP_PARAMETERPROB {
        return None;
    }
    let inner_off = icmp_off + 8;
    let inner: *mut Ipv4Hdr = ptr_at(ctx, inner_off).ok()?;
    let (ivihl, iproto, isrc, idst) =
        unsafe { ((*inner).version_ihl, (*inner).protocol, (*inner).saddr, (*inner).daddr) };
    let iihl = ((ivihl & 0x0f) as usize) * 4;
    if ivihl >> 4 != 4 || iihl < 20 || iihl > 60 || (iproto != PROTO_TCP && iproto != PROTO_UDP) {
        return None;
    }
    // The quote up to what is rewritten (the ports; a quoted UDP header's checksum) must lie
    // within the error's IP packet, not in the frame's padding past it.
    let quoted = iihl + if iproto == PROTO_UDP { 8 } else { 4 };
    if (unsafe { u16::from_be((*ip).tot_len) } as usize) < ihl + 8 + quoted {
        return None;
    }
    let ports: *mut Ports = ptr_at(ctx, inner_off + iihl).ok()?;
    let (isport, idport) = unsafe { ((*ports).src, (*ports).dst) };
    // The flow the quoted packet belongs to, seen from whoever sent it back to us.
    let key = FlowKey {
        src: [idst, 0, 0, 0],
        dst: [isrc, 0, 0, 0],
        sport: idport,
        dport: isport,
        proto: iproto,
        family: FAMILY_V4,
        _pad: [0; 2],
    };
    if let Some(rev) = reverse_entry(&key) {
        // SAFETY: map value from a successful lookup.
        let r = unsafe { &*rev };
        let t = Translation {
            outer_src: r.vip[0],
            outer_dst: r.client[0],
            inner_src: r.client[0],
            inner_dst: r.vip[0],
            inner_sport: r.client_port,
            inner_dport: r.vip_port,
        };
        let (ifindex, smac, dmac) = (r.ifindex, r.local_mac, r.client_mac);
        // A client on this node itself gets the error up its own stack.
        let out = if r.flags & rev_flags::LOCAL_CLIENT != 0 { fwd::Out::Local } else { fwd::Out::Resolved };
        translate(ctx, iihl, &t)?;
        count(stat::ICMP_ERRORS_FWD, bytes);
        return Some(fwd::transmit(ctx, ifindex, out, &smac, &dmac, bytes));
    }
    if let Some(ct) = client_entry(&key) {
        // SAFETY: map value from a successful lookup.
        let c = unsafe { &*ct };
        let t = Translation {
            outer_src: c.snat[0],
            outer_dst: c.backend[0],
            inner_src: c.backend[0],
            inner_dst: c.snat[0],
            inner_sport: c.backend_port,
            inner_dport: c.snat_port,
        };
        let hop = fwd::lookup_addr(ctx, FAMILY_V4, &c.backend).ok()?;
        translate(ctx, iihl, &t)?;
        count(stat::ICMP_ERRORS_FWD, bytes);
        return Some(fwd::transmit(ctx, hop.ifindex, hop.out(), &hop.smac, &hop.dmac, bytes));
    }
    None
}

/// Rewrite the outer addresses, the quoted packet's addresses and ports, and every checksum
/// involved (outer IP, quoted IP, quoted UDP, ICMP) incrementally.
#[inline(always)]
fn translate<C: Ctx>(ctx: &C, iihl: usize, t: &Translation) -> Option<()> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok()?;
    let ihl = ((unsafe { (*ip).version_ihl } & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let icmp: *mut IcmpHdr = ptr_at(ctx, ETH_HLEN + ihl).ok()?;
    let inner_off = ETH_HLEN + ihl + 8;
    let inner: *mut Ipv4Hdr = ptr_at(ctx, inner_off).ok()?;
    let ports: *mut Ports = ptr_at(ctx, inner_off + (iihl & 0x3c)).ok()?;
    // SAFETY: every pointer bounds checked above.
    unsafe {
        // Outer header (ICMPv4 has no pseudo-header: only the IP checksum sees these).
        let mut c = (*ip).check;
        c = csum::replace4(c, (*ip).saddr, t.outer_src);
        c = csum::replace4(c, (*ip).daddr, t.outer_dst);
        (*ip).check = c;
        (*ip).saddr = t.outer_src;
        (*ip).daddr = t.outer_dst;

        // The quoted packet, all of it inside the ICMP checksum.
        let mut icsum = (*icmp).check;
        let old_inner_check = (*inner).check;
        let mut ic = old_inner_check;
        ic = csum::replace4(ic, (*inner).saddr, t.inner_src);
        ic = csum::replace4(ic, (*inner).daddr, t.inner_dst);
        icsum = csum::replace4(icsum, (*inner).saddr, t.inner_src);
        icsum = csum::replace4(icsum, (*inner).daddr, t.inner_dst);
        icsum = csum::replace2(icsum, old_inner_check, ic);
        (*inner).check = ic;
        let (old_src, old_dst) = ((*inner).saddr, (*inner).daddr);
        (*inner).saddr = t.inner_src;
        (*inner).daddr = t.inner_dst;
        icsum = csum::replace2(icsum, (*ports).src, t.inner_sport);
        icsum = csum::replace2(icsum, (*ports).dst, t.inner_dport);
        // A quoted UDP header carries its checksum in its first 8 bytes: keep it right.
        if (*inner).protocol == PROTO_UDP
            && let Ok(ucsum) = ptr_at::<C, u16>(ctx, inner_off + (iihl & 0x3c) + 6)
        {
            let old = *ucsum;
            if old != 0 {
                let mut u = csum::replace4(old, old_src, t.inner_src);
                u = csum::replace4(u, old_dst, t.inner_dst);
                u = csum::replace2(u, (*ports).src, t.inner_sport);
                u = csum::replace2(u, (*ports).dst, t.inner_dport);
                u = csum::udp_nonzero(u);
                icsum = csum::replace2(icsum, old, u);
                *ucsum = u;
            }
        }
        (*ports).src = t.inner_sport;
        (*ports).dst = t.inner_dport;
        (*icmp).check = icsum;
    }
    Some(())
}

const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMPV6_TIME_EXCEED: u8 = 3;
const ICMPV6_PARAMPROB: u8 = 4;
const V6_HLEN: usize = 40;

/// The IPv6 version: an ICMPv6 error right after the IPv6 header (no extension headers),
/// quoting an IPv6 TCP/UDP packet whose transport header follows its fixed header. ICMPv6
/// checksums cover a pseudo-header, so the outer addresses are folded in too.
#[inline(never)]
pub fn handle_v6<C: Ctx>(ctx: &C, bytes: u64) -> u32 {
    match try_v6(ctx, bytes) {
        Some(action) => action,
        None => {
            count(stat::PASS_NOT_OURS, bytes);
            C::PASS
        }
    }
}

#[repr(C)]
struct V6Fixed {
    vtc_flow: u32,
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: [u32; 4],
    daddr: [u32; 4],
}

#[inline(always)]
fn try_v6<C: Ctx>(ctx: &C, bytes: u64) -> Option<u32> {
    let ip: *mut V6Fixed = ptr_at(ctx, ETH_HLEN).ok()?;
    let icmp: *mut IcmpHdr = ptr_at(ctx, ETH_HLEN + V6_HLEN).ok()?;
    // SAFETY: bounds checked by ptr_at, here and below.
    let kind = unsafe { (*icmp).kind };
    if kind != ICMPV6_DEST_UNREACH
        && kind != ICMPV6_PKT_TOOBIG
        && kind != ICMPV6_TIME_EXCEED
        && kind != ICMPV6_PARAMPROB
    {
        return None;
    }
    let inner_off = ETH_HLEN + V6_HLEN + 8;
    let inner: *mut V6Fixed = ptr_at(ctx, inner_off).ok()?;
    let (iproto, isrc, idst) = unsafe { ((*inner).nexthdr, (*inner).saddr, (*inner).daddr) };
    if iproto != PROTO_TCP && iproto != PROTO_UDP {
        return None;
    }
    // As for IPv4: the quote up to what is rewritten lies within the error's IP packet.
    let quoted = V6_HLEN + if iproto == PROTO_UDP { 8 } else { 4 };
    if (unsafe { u16::from_be((*ip).payload_len) } as usize) < 8 + quoted {
        return None;
    }
    let ports: *mut Ports = ptr_at(ctx, inner_off + V6_HLEN).ok()?;
    let (isport, idport) = unsafe { ((*ports).src, (*ports).dst) };
    let key = FlowKey {
        src: idst,
        dst: isrc,
        sport: idport,
        dport: isport,
        proto: iproto,
        family: lb_common::FAMILY_V6,
        _pad: [0; 2],
    };
    if let Some(rev) = reverse_entry(&key) {
        // SAFETY: map value from a successful lookup.
        let r = unsafe { &*rev };
        // The addresses go through the per-CPU scratch space: four IPv6 addresses on the stack
        // overflow the BPF stack.
        let s = scratch()?;
        s.t6 = [r.vip, r.client, r.client, r.vip];
        let (ifindex, smac, dmac) = (r.ifindex, r.local_mac, r.client_mac);
        // A client on this node itself gets the error up its own stack.
        let out = if r.flags & rev_flags::LOCAL_CLIENT != 0 { fwd::Out::Local } else { fwd::Out::Resolved };
        translate6(ctx, r.client_port, r.vip_port)?;
        count(stat::ICMP_ERRORS_FWD, bytes);
        return Some(fwd::transmit(ctx, ifindex, out, &smac, &dmac, bytes));
    }
    if let Some(ct) = client_entry(&key) {
        // SAFETY: map value from a successful lookup.
        let c = unsafe { &*ct };
        let hop = fwd::lookup_addr(ctx, lb_common::FAMILY_V6, &c.backend).ok()?;
        let s = scratch()?;
        s.t6 = [c.snat, c.backend, c.backend, c.snat];
        translate6(ctx, c.backend_port, c.snat_port)?;
        count(stat::ICMP_ERRORS_FWD, bytes);
        return Some(fwd::transmit(ctx, hop.ifindex, hop.out(), &hop.smac, &hop.dmac, bytes));
    }
    None
}

/// Rewrite an ICMPv6 error with the addresses in `scratch().t6` (outer source, outer
/// destination, quoted source, quoted destination) and the quoted ports.
#[inline(always)]
fn translate6<C: Ctx>(ctx: &C, inner_sport: u16, inner_dport: u16) -> Option<()> {
    let t = &scratch()?.t6;
    let ip: *mut V6Fixed = ptr_at(ctx, ETH_HLEN).ok()?;
    let icmp: *mut IcmpHdr = ptr_at(ctx, ETH_HLEN + V6_HLEN).ok()?;
    let inner: *mut V6Fixed = ptr_at(ctx, ETH_HLEN + V6_HLEN + 8).ok()?;
    let ports: *mut Ports = ptr_at(ctx, ETH_HLEN + V6_HLEN + 8 + V6_HLEN).ok()?;
    // SAFETY: every pointer bounds checked above.
    unsafe {
        let mut icsum = (*icmp).check;
        // The pseudo-header: outer addresses.
        icsum = csum::replace16(icsum, &(*ip).saddr, &t[0]);
        icsum = csum::replace16(icsum, &(*ip).daddr, &t[1]);
        (*ip).saddr = t[0];
        (*ip).daddr = t[1];
        // The quoted packet (and its UDP checksum, whose pseudo-header it is).
        if (*inner).nexthdr == PROTO_UDP
            && let Ok(ucsum) = ptr_at::<C, u16>(ctx, ETH_HLEN + V6_HLEN + 8 + V6_HLEN + 6)
        {
            let old = *ucsum;
            let mut u = csum::replace16(old, &(*inner).saddr, &t[2]);
            u = csum::replace16(u, &(*inner).daddr, &t[3]);
            u = csum::replace2(u, (*ports).src, inner_sport);
            u = csum::replace2(u, (*ports).dst, inner_dport);
            u = csum::udp_nonzero(u);
            icsum = csum::replace2(icsum, old, u);
            *ucsum = u;
        }
        icsum = csum::replace16(icsum, &(*inner).saddr, &t[2]);
        icsum = csum::replace16(icsum, &(*inner).daddr, &t[3]);
        (*inner).saddr = t[2];
        (*inner).daddr = t[3];
        icsum = csum::replace2(icsum, (*ports).src, inner_sport);
        icsum = csum::replace2(icsum, (*ports).dst, inner_dport);
        (*ports).src = inner_sport;
        (*ports).dst = inner_dport;
        (*icmp).check = icsum;
    }
    Some(())
}

/// The flow an error quoting a backend-side packet is about: established, or half-open (a
/// SYN the backend refused).
#[inline(always)]
fn reverse_entry(key: &FlowKey) -> Option<*const RevEntry> {
    match REVERSE_NAT.get_ptr(key) {
        Some(r) => Some(r),
        None => HALF_OPEN_REV.get_ptr(key),
    }
}

/// The flow an error quoting a client-side packet is about: established, or half-open.
#[inline(always)]
fn client_entry(key: &FlowKey) -> Option<*const CtEntry> {
    match CONNTRACK.get_ptr(key) {
        Some(c) => Some(c),
        None => HALF_OPEN.get_ptr(key),
    }
}
