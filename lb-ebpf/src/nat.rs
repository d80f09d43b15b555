//! Full NAT rewrites: addresses, ports and both checksums, in place.
use crate::{csum, parse::Packet};

/// Rewrite the packet's IPv4 source/destination and L4 ports (all in network byte order).
#[inline(always)]
pub fn rewrite_v4(pkt: &Packet, saddr: u32, daddr: u32, sport: u16, dport: u16) {
    // SAFETY: every pointer in `pkt` was bounds checked by `parse`.
    unsafe {
        let ip = pkt.ip;
        let ports = pkt.ports;
        let (old_s, old_d) = ((*ip).saddr, (*ip).daddr);
        let (old_sp, old_dp) = ((*ports).src, (*ports).dst);

        let mut ip_csum = (*ip).check;
        ip_csum = csum::replace4(ip_csum, old_s, saddr);
        ip_csum = csum::replace4(ip_csum, old_d, daddr);
        (*ip).check = ip_csum;
        (*ip).saddr = saddr;
        (*ip).daddr = daddr;

        let l4 = *pkt.l4_csum;
        // A UDP checksum of 0 means "none" on IPv4: keep it so.
        if !(pkt.proto == lb_common::PROTO_UDP && l4 == 0) {
            let mut c = csum::replace4(l4, old_s, saddr);
            c = csum::replace4(c, old_d, daddr);
            c = csum::replace2(c, old_sp, sport);
            c = csum::replace2(c, old_dp, dport);
            if pkt.proto == lb_common::PROTO_UDP && c == 0 {
                c = 0xffff;
            }
            *pkt.l4_csum = c;
        }
        (*ports).src = sport;
        (*ports).dst = dport;
    }
}
