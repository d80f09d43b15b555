//! Incremental Internet checksum updates (RFC 1624) on raw, in-memory (network order) words.
//!
//! Ones' complement sums are byte-order independent as long as every word is taken the same
//! way, so checksum fields, addresses and ports are all handled as they lie in memory.

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The checksum after one 16-bit word of the covered data changed from `old` to `new`:
/// HC' = ~(~HC + ~m + m').
#[inline(always)]
pub fn replace2(csum: u16, old: u16, new: u16) -> u16 {
    !fold((!csum) as u32 + (!old) as u32 + new as u32)
}

/// The checksum after one 32-bit word of the covered data changed.
#[inline(always)]
pub fn replace4(csum: u16, old: u32, new: u32) -> u16 {
    let c = replace2(csum, old as u16, new as u16);
    replace2(c, (old >> 16) as u16, (new >> 16) as u16)
}
