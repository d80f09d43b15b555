//! Full NAT rewrites: addresses, ports and checksums, in place.
use lb_common::{Addr, FAMILY_V4, PROTO_UDP};

use aya_ebpf::programs::XdpContext;

use crate::parse::{Ip, Packet};

/// Rewrite the packet to `src:sport → dst:dport` (network byte order). A fragment after the
/// first has no transport header: only its addresses change (the transport checksum,
/// carried by the first fragment, covers the pseudo-header and is fixed there).
#[inline(always)]
pub fn rewrite<H: Ip>(ctx: &XdpContext, pkt: &Packet<H>, src: &Addr, dst: &Addr, sport: u16, dport: u16) {
    let Some(ip) = pkt.ip(ctx) else { return };
    let l4 = match (pkt.ports(ctx), pkt.l4_csum(ctx)) {
        (Some(p), Some(c)) => Some((p, c)),
        _ => None,
    };
    // SAFETY: every pointer was bounds checked just now.
    unsafe {
        let mut l4sum = match l4 {
            Some((_, c)) => *c,
            None => 0,
        };
        // A UDP checksum of 0 means "none" on IPv4: keep it so.
        let keep_zero = pkt.proto == PROTO_UDP && l4sum == 0 && H::FAMILY == FAMILY_V4;
        H::set_addrs(ip, src, dst, &mut l4sum);
        if let Some((ports, csum_ptr)) = l4 {
            l4sum = crate::csum::replace2(l4sum, (*ports).src, sport);
            l4sum = crate::csum::replace2(l4sum, (*ports).dst, dport);
            (*ports).src = sport;
            (*ports).dst = dport;
            if !keep_zero {
                if pkt.proto == PROTO_UDP && l4sum == 0 {
                    l4sum = 0xffff;
                }
                *csum_ptr = l4sum;
            }
        }
    }
}
