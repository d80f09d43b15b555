//! SYN cookies under pressure (`lb_common::syn_cookies`), in the program `lb_xdp_cookie` /
//! `lb_tc_cookie` of their own.
//!
//! - A SYN from a NIC, while cookies are on, is answered by the datapath itself: a SYN-ACK
//!   whose sequence number is the kernel's SYN cookie (`bpf_tcp_raw_gen_syncookie_*`). No
//!   flow, no SNAT port and no backend SYN: a spoofed source costs nothing but the answer.
//! - A client ACK for no flow whose cookie checks out (`bpf_tcp_raw_check_syncookie_*`)
//!   opens the flow, half-open and marked `COOKIE`; the ACK itself becomes the SYN to the
//!   backend. Until the backend answers, every client packet of the flow is sent as that SYN
//!   again (the client's retransmissions stand in for ours).
//! - The backend's SYN-ACK moves the flow to the established tables and is turned into the
//!   handshake's last ACK, back to the backend (the PROXY header, if any, goes in it). From
//!   then on the backend's sequence numbers are shifted by `RevEntry::seq_delta` towards the
//!   client, and the client's acks back.
//!
//! What a cookie cannot carry is not negotiated, as with the kernel's cookies without
//! timestamps: the SYN-ACK offers only an MSS (no window scaling, SACK or timestamps), and
//! the backend's SYN offers the MSS of the node's smallest MTU.
use aya_ebpf::{
    bindings::{iphdr, ipv6hdr, tcphdr},
    helpers::generated::{
        bpf_csum_diff, bpf_tcp_raw_check_syncookie_ipv4, bpf_tcp_raw_check_syncookie_ipv6,
        bpf_tcp_raw_gen_syncookie_ipv4, bpf_tcp_raw_gen_syncookie_ipv6,
    },
};
use lb_common::*;

use crate::{
    csum::{Diff, fold64},
    ctx::{Ctx, ptr_at},
    maps::{CONFIG, COOKIE_SCRATCH, SYN_PRESSURE, SYN_RATE},
    parse::{ETH_HLEN, EthHdr, Ip, Ipv4Hdr, Ipv6Hdr, Packet, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, TcpHdr},
    stats::count,
};

/// The window a cookie SYN-ACK offers, and the handshake ACK tells the backend (unscaled).
const WINDOW: u16 = 64240;
/// SYN-rate window: the configured rate per second is counted per tenth of a second.
const RATE_WINDOW_NS: u64 = 100_000_000;
/// A TCP header with the MSS option, the only one cookie packets carry.
const TCP_MSS_HLEN: u32 = 24;

/// What SYN cookies need of the IP header of family `H`.
pub trait CookieIp: Ip + Sized {
    /// Header length when it has no options / extension headers (the only kind answered).
    const HLEN: u32;
    /// The kernel's cookie for the SYN (`th`: its TCP header without options); the cookie in
    /// the low 32 bits, negative on error.
    ///
    /// # Safety
    /// `ip` points to a bounds-checked header, `th` to 20 readable bytes.
    unsafe fn make_cookie(ip: *mut Self, th: *mut u8) -> i64;
    /// 0 when the ACK at `th` returns a valid cookie.
    ///
    /// # Safety
    /// As above (`th` in the packet).
    unsafe fn check(ip: *mut Self, th: *mut TcpHdr) -> i64;
    /// Swap the addresses (the reply goes back), reset the TTL / hop limit.
    ///
    /// # Safety
    /// `ip` points to a bounds-checked header.
    unsafe fn turn_around(ip: *mut Self);
    /// Set the transport length to `l4_len` (and the IPv4 header checksum), and return the
    /// unfolded sum of the pseudo-header.
    ///
    /// # Safety
    /// As above.
    unsafe fn set_l4_len(ip: *mut Self, l4_len: u32) -> u64;
}

impl CookieIp for Ipv4Hdr {
    const HLEN: u32 = 20;

    #[inline(always)]
    unsafe fn make_cookie(ip: *mut Self, th: *mut u8) -> i64 {
        // SAFETY: the caller's guarantee; the helper reads the addresses and the header.
        unsafe { bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut iphdr, th as *mut tcphdr, 20) }
    }

    #[inline(always)]
    unsafe fn check(ip: *mut Self, th: *mut TcpHdr) -> i64 {
        // SAFETY: as above.
        unsafe { bpf_tcp_raw_check_syncookie_ipv4(ip as *mut iphdr, th as *mut tcphdr) }
    }

    #[inline(always)]
    unsafe fn turn_around(ip: *mut Self) {
        // SAFETY: the caller's guarantee. Swapping the addresses leaves every sum as it was.
        unsafe {
            core::ptr::swap(&raw mut (*ip).saddr, &raw mut (*ip).daddr);
            (*ip).ttl = 64;
        }
    }

    #[inline(always)]
    unsafe fn set_l4_len(ip: *mut Self, l4_len: u32) -> u64 {
        // SAFETY: the caller's guarantee.
        unsafe {
            (*ip).tot_len = ((Self::HLEN + l4_len) as u16).to_be();
            (*ip).check = 0;
            (*ip).check = !fold64(crate::csum::sum_of(ip as *const u8, Self::HLEN));
            ((*ip).saddr & 0xffff) as u64
                + ((*ip).saddr >> 16) as u64
                + ((*ip).daddr & 0xffff) as u64
                + ((*ip).daddr >> 16) as u64
                + (PROTO_TCP as u16).to_be() as u64
                + (l4_len as u16).to_be() as u64
        }
    }
}

impl CookieIp for Ipv6Hdr {
    const HLEN: u32 = 40;

    #[inline(always)]
    unsafe fn make_cookie(ip: *mut Self, th: *mut u8) -> i64 {
        // SAFETY: as for IPv4.
        unsafe { bpf_tcp_raw_gen_syncookie_ipv6(ip as *mut ipv6hdr, th as *mut tcphdr, 20) }
    }

    #[inline(always)]
    unsafe fn check(ip: *mut Self, th: *mut TcpHdr) -> i64 {
        // SAFETY: as above.
        unsafe { bpf_tcp_raw_check_syncookie_ipv6(ip as *mut ipv6hdr, th as *mut tcphdr) }
    }

    #[inline(always)]
    unsafe fn turn_around(ip: *mut Self) {
        // SAFETY: the caller's guarantee.
        unsafe {
            core::ptr::swap(&raw mut (*ip).saddr, &raw mut (*ip).daddr);
            (*ip).hop_limit = 64;
        }
    }

    #[inline(always)]
    unsafe fn set_l4_len(ip: *mut Self, l4_len: u32) -> u64 {
        // SAFETY: the caller's guarantee.
        unsafe {
            (*ip).payload_len = (l4_len as u16).to_be();
            let mut sum = (PROTO_TCP as u16).to_be() as u64 + (l4_len as u16).to_be() as u64;
            let mut i = 0;
            while i < 4 {
                let (s, d) = ((*ip).saddr[i], (*ip).daddr[i]);
                sum += (s & 0xffff) as u64 + (s >> 16) as u64 + (d & 0xffff) as u64 + (d >> 16) as u64;
                i += 1;
            }
            sum
        }
    }
}

/// Whether a SYN to a listener is to be answered with a cookie now. Counts the SYN towards
/// the rate that turns cookies on (`syn_cookies::AUTO`).
#[inline(always)]
pub fn wanted(now: u64) -> bool {
    let Some(cfg) = CONFIG.get(0) else { return false };
    match cfg.syn_cookie_mode {
        syn_cookies::ALWAYS => return true,
        syn_cookies::OFF => return false,
        _ => {}
    }
    if cfg.syn_cookie_rate != 0
        && let Some(r) = SYN_RATE.get_ptr_mut(0)
    {
        // SAFETY: per-CPU slot.
        let r = unsafe { &mut *r };
        if now.wrapping_sub(r.start_ns) > RATE_WINDOW_NS {
            r.start_ns = now;
            r.count = 0;
        }
        r.count += 1;
        if r.count > cfg.syn_cookie_rate / 10 {
            arm(now);
        }
    }
    // SAFETY: read-only copy.
    SYN_PRESSURE.get(0).is_some_and(|until| *until > now)
}

/// Pressure seen (a SYN rate over the limit, or no free SNAT port): cookies stay on for
/// `syn_cookies::HOLD_NS` from now. Written at most every quarter of that, so CPUs under a
/// flood do not fight over the cache line.
#[inline(always)]
pub fn arm(now: u64) {
    let Some(u) = SYN_PRESSURE.get_ptr_mut(0) else { return };
    // SAFETY: map value pointer; a racing write from another CPU writes about the same.
    let until = unsafe { &mut *u };
    if until.wrapping_add(syn_cookies::HOLD_NS / 4) > now.wrapping_add(syn_cookies::HOLD_NS) && *until > now {
        return;
    }
    if *until <= now {
        count(stat::SYN_PRESSURE, 0);
    }
    *until = now.wrapping_add(syn_cookies::HOLD_NS);
}

/// Whether the packet has the shape cookie packets are made from: no IP options or IPv6
/// extension headers, not a fragment.
#[inline(always)]
pub fn fits<H: CookieIp>(pkt: &Packet<H>) -> bool {
    pkt.l4_off == ETH_HLEN as u32 + H::HLEN && !pkt.is_fragment
}

/// The MSS cookie packets offer for family `H`, less `room` (a PROXY header's).
#[inline(always)]
fn mss<H: CookieIp>(room: u32) -> u16 {
    let m = match CONFIG.get(0) {
        Some(c) if H::FAMILY == FAMILY_V4 => c.syn_cookie_mss4,
        Some(c) => c.syn_cookie_mss6,
        None => 0,
    } as u32;
    let m = if m == 0 { 1460 - (H::HLEN - 20) } else { m };
    m.saturating_sub(room).max(536) as u16
}

/// Answer a SYN with a cookie: the frame turned around in place (MACs, addresses, ports),
/// cut or grown to a TCP header with the MSS option, sent back where it came from.
/// `room`: what the listener's PROXY header takes from the MSS.
#[inline(always)]
pub fn answer<C: Ctx, H: CookieIp>(ctx: &C, pkt: &Packet<H>, room: u32, bytes: u64) -> Result<u32, ()> {
    if !fits(pkt) {
        return Err(());
    }
    let s = COOKIE_SCRATCH.get_ptr_mut(0).ok_or(())?;
    // SAFETY: per-CPU slot.
    let s = unsafe { &mut *s };
    let ip: *mut H = pkt.ip(ctx).ok_or(())?;
    let tcp: *mut TcpHdr = pkt.tcp(ctx).ok_or(())?;
    // SAFETY: bounds checked by ip() / tcp(); the copy is the option-less header the
    // cookie helper takes.
    let (cookie, seq) = unsafe {
        core::ptr::copy_nonoverlapping(tcp as *const u8, s.th.as_mut_ptr(), 20);
        s.th[12] = 5 << 4;
        let c = H::make_cookie(ip, s.th.as_mut_ptr());
        if c < 0 {
            return Err(());
        }
        (c as u32, u32::from_be((*tcp).seq))
    };
    // SAFETY: bounds checked above; nothing has invalidated the pointers yet.
    unsafe {
        let eth: *mut EthHdr = pkt.eth(ctx).ok_or(())?;
        core::ptr::swap(&raw mut (*eth).src, &raw mut (*eth).dst);
        H::turn_around(ip);
        core::ptr::swap(&raw mut (*tcp).sport, &raw mut (*tcp).dport);
    }
    write_tcp::<C, H>(ctx, cookie, seq.wrapping_add(1), TCP_SYN | TCP_ACK, WINDOW, mss::<H>(room))?;
    count(stat::SYNCOOKIES_SENT, bytes);
    Ok(ctx.send(ctx.ingress_ifindex(), true, bytes))
}

/// Whether the client ACK carries a valid cookie.
#[inline(always)]
pub fn valid<C: Ctx, H: CookieIp>(ctx: &C, pkt: &Packet<H>) -> bool {
    if !fits(pkt) || pkt.tcp_flags & (TCP_SYN | TCP_RST | TCP_FIN | TCP_ACK) != TCP_ACK {
        return false;
    }
    let (Some(ip), Some(tcp)) = (pkt.ip(ctx), pkt.tcp(ctx)) else { return false };
    // SAFETY: bounds checked by ip() / tcp().
    unsafe { H::check(ip, tcp) == 0 }
}

/// Turn a client packet of a cookie flow into the flow's SYN to the backend: seq the
/// client's ISN, the MSS option only, no payload (the client sends it again once the
/// backend has the connection).
#[inline(always)]
pub fn make_syn<C: Ctx, H: CookieIp>(ctx: &C, pkt: &mut Packet<H>, client_isn: u32) -> Result<(), ()> {
    if !fits(pkt) {
        return Err(());
    }
    let window = {
        let tcp = pkt.tcp(ctx).ok_or(())?;
        // SAFETY: bounds checked by tcp().
        unsafe { (*tcp).window }
    };
    write_tcp::<C, H>(ctx, client_isn, 0, TCP_SYN, u16::from_be(window), mss::<H>(0))?;
    pkt.tcp_flags = TCP_SYN;
    Ok(())
}

/// The packet cut (or grown) to the IP header and a TCP header with the MSS option, every
/// field written and the checksums computed whole.
#[inline(always)]
fn write_tcp<C: Ctx, H: CookieIp>(ctx: &C, seq: u32, ack: u32, flags: u8, window: u16, mss: u16) -> Result<(), ()> {
    let l4 = ETH_HLEN as u32 + H::HLEN;
    let l4_len = TCP_MSS_HLEN;
    if ctx.set_len(l4 + l4_len) != 0 {
        return Err(());
    }
    let ip: *mut H = ptr_at(ctx, ETH_HLEN)?;
    let th: *mut [u32; 6] = ptr_at(ctx, l4 as usize)?;
    let tcp = th as *mut TcpHdr;
    // SAFETY: bounds checked by ptr_at.
    unsafe {
        let pseudo = H::set_l4_len(ip, l4_len);
        (*tcp).seq = seq.to_be();
        (*tcp).ack = ack.to_be();
        (*tcp).doff = ((l4_len / 4) << 4) as u8;
        (*tcp).flags = flags;
        (*tcp).window = window.to_be();
        (*tcp).check = 0;
        (*tcp).urg = 0;
        (*th)[5] = u32::from_be_bytes([2, 4, (mss >> 8) as u8, mss as u8]).to_be();
        let sum = pseudo + (bpf_csum_diff(core::ptr::null_mut(), 0, th as *mut u32, l4_len, 0) as u64 & 0xffff_ffff);
        (*tcp).check = !fold64(sum);
    }
    Ok(())
}

/// Turn a cookie flow's backend SYN-ACK into the handshake's last ACK to that backend, in
/// place and at the same length (its options become NOPs): seq the client's ISN + 1, ack
/// the backend's ISN + 1. The addresses and ports are the NAT's to set.
#[inline(always)]
pub fn make_ack<C: Ctx, H: Ip>(ctx: &C, pkt: &mut Packet<H>, client_isn: u32, backend_isn: u32) -> Result<(), ()> {
    let tcp = pkt.tcp(ctx).ok_or(())?;
    let mut d = Diff::new();
    // SAFETY: bounds checked by tcp().
    let words = unsafe {
        let seq = client_isn.wrapping_add(1).to_be();
        let ack = backend_isn.wrapping_add(1).to_be();
        d.add4((*tcp).seq, seq);
        d.add4((*tcp).ack, ack);
        (*tcp).seq = seq;
        (*tcp).ack = ack;
        let old = u16::from_ne_bytes([(*tcp).doff, (*tcp).flags]);
        (*tcp).flags = TCP_ACK;
        d.add2(old, u16::from_ne_bytes([(*tcp).doff, TCP_ACK]));
        d.add2((*tcp).window, WINDOW.to_be());
        (*tcp).window = WINDOW.to_be();
        (((*tcp).doff >> 4) as u32).saturating_sub(5)
    };
    let off = pkt.l4_off & crate::parse::MAX_L4_OFF;
    let mut i = 0;
    while i < 10 {
        if i >= words {
            break;
        }
        let w: *mut u32 = ptr_at(ctx, (off + 20 + i * 4) as usize)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            d.add4(*w, 0x0101_0101);
            *w = 0x0101_0101;
        }
        i += 1;
    }
    ctx.l4_csum(pkt.csum_off(), 0, d.get(), false);
    pkt.tcp_flags = TCP_ACK;
    Ok(())
}

/// A cookie flow's packet on its way: the backend's seq (to the client, `down`) or the
/// client's ack (to the backend) shifted by the flow's `delta`.
#[inline(always)]
pub fn shift<C: Ctx, H: Ip>(ctx: &C, pkt: &Packet<H>, delta: u32, down: bool) {
    let Some(tcp) = pkt.tcp(ctx) else { return };
    let mut d = Diff::new();
    // SAFETY: bounds checked by tcp().
    unsafe {
        if down {
            let new = u32::from_be((*tcp).seq).wrapping_sub(delta).to_be();
            d.add4((*tcp).seq, new);
            (*tcp).seq = new;
        } else {
            if (*tcp).flags & TCP_ACK == 0 {
                return;
            }
            let new = u32::from_be((*tcp).ack).wrapping_add(delta).to_be();
            d.add4((*tcp).ack, new);
            (*tcp).ack = new;
        }
    }
    ctx.l4_csum(pkt.csum_off(), 0, d.get(), false);
}
