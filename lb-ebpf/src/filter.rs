//! "Is it ours?" before any flow lookup: the destination address's bits in the VIP and
//! SNAT-address bitmaps (`lb_common::addr_filter`). Most traffic on a node is for neither,
//! and leaves after one array read instead of the conntrack, reverse-NAT and listener lookups.
use lb_common::{Addr, addr_filter};

use crate::maps::ADDR_FILTER;

/// The destination may be a listener's VIP: client packets (known flows, new flows).
pub const VIP: u8 = 1;
/// The destination may be a SNAT address: backends' replies.
pub const SNAT: u8 = 2;
/// Both (a tail-called program: the entry program already looked).
pub const ALL: u8 = VIP | SNAT;

/// Which of the two kinds `dst` may be (0: neither, not ours).
#[inline(always)]
pub fn hint(dst: &Addr) -> u8 {
    let (word, mask) = addr_filter::slot(dst);
    let mut h = 0;
    if let Some(w) = ADDR_FILTER.get(addr_filter::VIP + word)
        && *w & mask != 0
    {
        h |= VIP;
    }
    if let Some(w) = ADDR_FILTER.get(addr_filter::SNAT + word)
        && *w & mask != 0
    {
        h |= SNAT;
    }
    h
}
