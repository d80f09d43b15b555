//! Bounds-checked parsing of an XDP frame: Ethernet, IPv4 with options, IPv6 with extension
//! headers, TCP/UDP ports, fragments. Each family has its own `Packet<H>` type, so the code
//! after parsing is monomorphized per family and never touches the other family's header
//! (the verifier could not prove such a branch dead).
use lb_common::{FAMILY_V4, FAMILY_V6, FlowKey, PROTO_TCP, PROTO_UDP};

pub use crate::ctx::ptr_at;
use crate::{
    csum::{self, Diff},
    ctx::Ctx,
};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
const IP_MF: u16 = 0x2000;
const IP_OFFSET: u16 = 0x1fff;
/// IPv6 extension headers walked before giving up.
const MAX_V6_EXT: usize = 6;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// Network byte order.
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub protocol: u8,
    pub check: u16,
    pub saddr: u32,
    pub daddr: u32,
}

#[repr(C)]
pub struct Ipv6Hdr {
    pub vtc_flow: u32,
    pub payload_len: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// What differs between the families after parsing.
pub trait Ip {
    const FAMILY: u8;
    /// Rewrite the addresses, fixing the header checksum (IPv4) and adding the
    /// pseudo-header change to `pseudo`.
    ///
    /// # Safety
    /// `ip` points to a bounds-checked header.
    unsafe fn set_addrs(ip: *mut Self, src: &lb_common::Addr, dst: &lb_common::Addr, pseudo: &mut Diff);
    /// Total length of the IP packet (for the FIB's MTU check).
    ///
    /// # Safety
    /// As above.
    unsafe fn tot_len(ip: *mut Self) -> u16;
    /// Take one hop off the TTL / hop limit (and fix the IPv4 header checksum). False when it
    /// was 1 or 0 already: the packet has expired and must not be forwarded.
    ///
    /// # Safety
    /// As above.
    unsafe fn hop(ip: *mut Self) -> bool;
    /// Set the IPv4 identification (network byte order), fixing the header checksum; IPv6
    /// headers have none (a fragment header's is left as it is).
    ///
    /// # Safety
    /// As above.
    unsafe fn set_id(ip: *mut Self, id: u16);
}

impl Ip for Ipv4Hdr {
    const FAMILY: u8 = FAMILY_V4;

    #[inline(always)]
    unsafe fn set_addrs(ip: *mut Self, src: &lb_common::Addr, dst: &lb_common::Addr, pseudo: &mut Diff) {
        unsafe {
            let (old_s, old_d) = ((*ip).saddr, (*ip).daddr);
            let mut c = (*ip).check;
            c = csum::replace4(c, old_s, src[0]);
            c = csum::replace4(c, old_d, dst[0]);
            (*ip).check = c;
            pseudo.add4(old_s, src[0]);
            pseudo.add4(old_d, dst[0]);
            (*ip).saddr = src[0];
            (*ip).daddr = dst[0];
        }
    }

    #[inline(always)]
    unsafe fn tot_len(ip: *mut Self) -> u16 {
        unsafe { u16::from_be((*ip).tot_len) }
    }

    #[inline(always)]
    unsafe fn set_id(ip: *mut Self, id: u16) {
        unsafe {
            (*ip).check = csum::replace2((*ip).check, (*ip).id, id);
            (*ip).id = id;
        }
    }

    #[inline(always)]
    unsafe fn hop(ip: *mut Self) -> bool {
        unsafe {
            let ttl = (*ip).ttl;
            if ttl <= 1 {
                return false;
            }
            // The TTL is byte 8 of the header: the low byte of its 16-bit lane here.
            (*ip).check = csum::replace_byte((*ip).check, 8, ttl, ttl - 1);
            (*ip).ttl = ttl - 1;
        }
        true
    }
}

impl Ip for Ipv6Hdr {
    const FAMILY: u8 = FAMILY_V6;

    #[inline(always)]
    unsafe fn set_addrs(ip: *mut Self, src: &lb_common::Addr, dst: &lb_common::Addr, pseudo: &mut Diff) {
        unsafe {
            let old_s = (*ip).saddr;
            let old_d = (*ip).daddr;
            let mut i = 0;
            while i < 4 {
                pseudo.add4(old_s[i], src[i]);
                pseudo.add4(old_d[i], dst[i]);
                i += 1;
            }
            (*ip).saddr = *src;
            (*ip).daddr = *dst;
        }
    }

    #[inline(always)]
    unsafe fn tot_len(ip: *mut Self) -> u16 {
        unsafe { u16::from_be((*ip).payload_len).wrapping_add(40) }
    }

    #[inline(always)]
    unsafe fn hop(ip: *mut Self) -> bool {
        unsafe {
            let hops = (*ip).hop_limit;
            if hops <= 1 {
                return false;
            }
            (*ip).hop_limit = hops - 1;
        }
        true
    }

    #[inline(always)]
    unsafe fn set_id(_ip: *mut Self, _id: u16) {}
}

/// A TCP header without options.
#[repr(C)]
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    /// Network byte order, like every multi-byte field here.
    pub seq: u32,
    pub ack: u32,
    /// Data offset (header length in 32-bit words) in the high nibble.
    pub doff: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg: u16,
}

/// The first 4 bytes of TCP and UDP headers.
#[repr(C)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

const TCP_CSUM_OFF: usize = 16;
const TCP_FLAGS_OFF: usize = 13;
const TCP_MIN_HLEN: usize = 20;
const UDP_CSUM_OFF: usize = 6;
const UDP_HLEN: usize = 8;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// What the datapath needs of a TCP/UDP packet of family `H`. It holds offsets, not
/// pointers: a packet pointer carried across BPF calls and helper calls loses the bounds the
/// verifier proved for it, so every user takes a fresh, bounds-checked pointer
/// ([`Packet::eth`], [`Packet::ip`], [`Packet::ports`], [`Packet::l4_csum`]).
pub struct Packet<H> {
    /// Offset of the transport header; 0 in a fragment after the first (no header).
    pub l4_off: u32,
    pub key: FlowKey,
    /// The fragment identification (IPv6: when the packet is a fragment). IPv4: the
    /// identification the packet leaves with (network byte order), its own or, for a
    /// fragment, its datagram's new one (`flow::fragment_ports`).
    pub frag_id: u32,
    pub proto: u8,
    pub tcp_flags: u8,
    pub is_fragment: bool,
    _h: core::marker::PhantomData<H>,
}

/// Largest transport-header offset we accept (IPv6 extension headers included).
pub const MAX_L4_OFF: u32 = 0x3fff;

impl<H: Ip> Packet<H> {
    #[inline(always)]
    pub fn new() -> Packet<H> {
        Packet {
            l4_off: 0,
            key: FlowKey { family: H::FAMILY, ..FlowKey::default() },
            frag_id: 0,
            proto: 0,
            tcp_flags: 0,
            is_fragment: false,
            _h: core::marker::PhantomData,
        }
    }

    #[inline(always)]
    pub fn has_l4(&self) -> bool {
        self.l4_off != 0
    }

    #[inline(always)]
    pub fn eth<C: Ctx>(&self, ctx: &C) -> Option<*mut EthHdr> {
        ptr_at(ctx, 0).ok()
    }

    #[inline(always)]
    pub fn ip<C: Ctx>(&self, ctx: &C) -> Option<*mut H> {
        ptr_at(ctx, ETH_HLEN).ok()
    }

    /// The ports, when the transport header is here.
    #[inline(always)]
    pub fn ports<C: Ctx>(&self, ctx: &C) -> Option<*mut Ports> {
        let off = self.l4_off & MAX_L4_OFF;
        if off == 0 {
            return None;
        }
        ptr_at(ctx, off as usize).ok()
    }

    /// The TCP header, when the packet is TCP and its header is here.
    #[inline(always)]
    pub fn tcp<C: Ctx>(&self, ctx: &C) -> Option<*mut TcpHdr> {
        let off = self.l4_off & MAX_L4_OFF;
        if off == 0 || self.proto != PROTO_TCP {
            return None;
        }
        ptr_at(ctx, off as usize).ok()
    }

    /// Offset of the transport checksum field (valid when [`Packet::has_l4`]).
    #[inline(always)]
    pub fn csum_off(&self) -> u32 {
        let at = if self.proto == PROTO_TCP { TCP_CSUM_OFF } else { UDP_CSUM_OFF };
        (self.l4_off & MAX_L4_OFF) + at as u32
    }
}

/// Why a frame is not handled by the load balancer.
pub enum Skip {
    /// Not TCP/UDP, or not a complete header: the kernel's business.
    NotOurs,
    /// An IP header that cannot be right (IHL < 5, a version that disagrees with the
    /// EtherType, too many IPv6 extension headers).
    Malformed,
}

#[inline(always)]
pub fn v4<C: Ctx>(ctx: &C, pkt: &mut Packet<Ipv4Hdr>) -> Result<(), Skip> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| Skip::NotOurs)?;
    // SAFETY: bounds checked by ptr_at.
    let (version_ihl, proto, frag_off, id, saddr, daddr) = unsafe {
        ((*ip).version_ihl, (*ip).protocol, u16::from_be((*ip).frag_off), (*ip).id, (*ip).saddr, (*ip).daddr)
    };
    if version_ihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err(Skip::Malformed);
    }
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Err(Skip::NotOurs);
    }
    pkt.proto = proto;
    pkt.key.src[0] = saddr;
    pkt.key.dst[0] = daddr;
    pkt.key.proto = proto;
    pkt.frag_id = id as u32;
    pkt.is_fragment = frag_off & (IP_MF | IP_OFFSET) != 0;
    if frag_off & IP_OFFSET == 0 {
        // SAFETY: bounds checked by ptr_at above.
        let ip_end = ip_end(ETH_HLEN, unsafe { u16::from_be((*ip).tot_len) });
        l4(ctx, ETH_HLEN + ihl, ip_end, pkt)?;
    }
    Ok(())
}

/// The destination port of an IPv4 TCP or UDP packet that has its transport header (not a
/// later fragment), read without parsing the rest: `None` for anything else.
#[inline(always)]
pub fn v4_dport<C: Ctx>(ctx: &C) -> Option<u16> {
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_HLEN).ok()?;
    // SAFETY: bounds checked by ptr_at.
    let (version_ihl, proto, frag_off) = unsafe { ((*ip).version_ihl, (*ip).protocol, u16::from_be((*ip).frag_off)) };
    if (proto != PROTO_TCP && proto != PROTO_UDP) || frag_off & IP_OFFSET != 0 {
        return None;
    }
    let ports: *mut Ports = ptr_at(ctx, ETH_HLEN + ((version_ihl & 0x0f) as usize) * 4).ok()?;
    // SAFETY: bounds checked by ptr_at.
    Some(u16::from_be(unsafe { (*ports).dst }))
}

/// Where an IP packet whose length field says `len` ends in the frame (0: unknown, a
/// BIG TCP GSO packet, whose length field is 0); the frame may go on (Ethernet padding).
#[inline(always)]
fn ip_end(start: usize, len: u16) -> usize {
    if len == 0 { 0 } else { start + len as usize }
}

#[inline(always)]
pub fn v6<C: Ctx>(ctx: &C, pkt: &mut Packet<Ipv6Hdr>) -> Result<(), Skip> {
    let ip: *mut Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| Skip::NotOurs)?;
    // SAFETY: bounds checked by ptr_at.
    let (vtc, mut next, saddr, daddr) = unsafe { ((*ip).vtc_flow, (*ip).nexthdr, (*ip).saddr, (*ip).daddr) };
    if (u32::from_be(vtc) >> 28) != 6 {
        return Err(Skip::Malformed);
    }
    let mut off = ETH_HLEN + 40;
    let mut first = true;
    let mut i = 0;
    // Walk the extension headers to the transport header.
    while i < MAX_V6_EXT {
        match next {
            PROTO_TCP | PROTO_UDP => break,
            // Hop-by-hop, routing, destination options: (len + 1) * 8 bytes.
            0 | 43 | 60 => {
                let h: *mut [u8; 2] = ptr_at(ctx, off).map_err(|_| Skip::NotOurs)?;
                let (nh, len) = unsafe { ((*h)[0], (*h)[1]) };
                next = nh;
                off += (len as usize + 1) * 8;
            }
            // Fragment header: 8 bytes, offset/flags then identification.
            44 => {
                let h: *mut [u8; 8] = ptr_at(ctx, off).map_err(|_| Skip::NotOurs)?;
                let f = unsafe { *h };
                next = f[0];
                pkt.is_fragment = true;
                first = u16::from_be_bytes([f[2], f[3]]) & 0xfff8 == 0;
                pkt.frag_id = u32::from_ne_bytes([f[4], f[5], f[6], f[7]]);
                off += 8;
            }
            _ => return Err(Skip::NotOurs),
        }
        i += 1;
    }
    if next != PROTO_TCP && next != PROTO_UDP {
        return Err(if i >= MAX_V6_EXT { Skip::Malformed } else { Skip::NotOurs });
    }
    pkt.proto = next;
    pkt.key.src = saddr;
    pkt.key.dst = daddr;
    pkt.key.proto = next;
    if first {
        // SAFETY: bounds checked by ptr_at above.
        let ip_end = ip_end(ETH_HLEN + 40, unsafe { u16::from_be((*ip).payload_len) });
        l4(ctx, off, ip_end, pkt)?;
    }
    Ok(())
}

/// The transport header at `off`: ports and TCP flags; the whole minimal header must be in
/// the frame, and the whole header (TCP options included) in the IP packet, which ends at
/// `ip_end` (0: unknown). A header running past the IP packet's end, into the frame's
/// padding, is malformed: the datapath would rewrite bytes no checksum covers.
#[inline(always)]
fn l4<C: Ctx, H: Ip>(ctx: &C, off: usize, ip_end: usize, pkt: &mut Packet<H>) -> Result<(), Skip> {
    if off as u32 > MAX_L4_OFF {
        return Err(Skip::NotOurs);
    }
    let hlen = if pkt.proto == PROTO_TCP {
        let h: *mut [u8; TCP_MIN_HLEN] = ptr_at(ctx, off).map_err(|_| Skip::NotOurs)?;
        let (flags, doff) = unsafe { ((*h)[TCP_FLAGS_OFF], (*h)[12]) };
        pkt.tcp_flags = flags;
        ((doff >> 4) as usize * 4).max(TCP_MIN_HLEN)
    } else {
        let _: *mut [u8; UDP_HLEN] = ptr_at(ctx, off).map_err(|_| Skip::NotOurs)?;
        UDP_HLEN
    };
    if ip_end != 0 && off + hlen > ip_end {
        return Err(Skip::Malformed);
    }
    let ports: *mut Ports = ptr_at(ctx, off).map_err(|_| Skip::NotOurs)?;
    // SAFETY: bounds checked above.
    unsafe {
        pkt.key.sport = (*ports).src;
        pkt.key.dport = (*ports).dst;
    }
    pkt.l4_off = off as u32;
    Ok(())
}
