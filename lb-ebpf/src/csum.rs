//! Internet checksum arithmetic, all of it: folds, incremental updates (RFC 1624) on raw,
//! in-memory (network order) words, the change accumulator the hooks apply ([`Diff`]), and
//! sums of whole buffers.
//!
//! Ones' complement sums are byte-order independent as long as every word is taken the same
//! way, so checksum fields, addresses and ports are all handled as they lie in memory.
use aya_ebpf::helpers::generated::bpf_csum_diff;

/// Ones' complement fold of a 32-bit accumulator.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Ones' complement fold of a 64-bit accumulator.
#[inline(always)]
pub fn fold64(mut sum: u64) -> u16 {
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff_ffff) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
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

/// The checksum after an IPv6 address (four 32-bit words) of the covered data changed.
#[inline(always)]
pub fn replace16(mut csum: u16, old: &[u32; 4], new: &[u32; 4]) -> u16 {
    let mut i = 0;
    while i < 4 {
        csum = replace4(csum, old[i], new[i]);
        i += 1;
    }
    csum
}

/// The checksum after the byte at offset `at` (from the start of the covered data, which
/// starts on a 16-bit boundary) changed from `old` to `new`.
#[inline(always)]
pub fn replace_byte(csum: u16, at: u32, old: u8, new: u8) -> u16 {
    // Raw (in-memory) 16-bit lanes: an even offset is the low byte on this little-endian
    // target, an odd one the high byte.
    let shift = (at & 1) * 8;
    replace2(csum, (old as u16) << shift, (new as u16) << shift)
}

/// A complete checksum `csum` after the covered data changed by the sums `pseudo` and
/// `data` (of `!old + new` over the changed words, as [`Diff`] accumulates them).
#[inline(always)]
pub fn apply(csum: u16, pseudo: u16, data: u16) -> u16 {
    !fold((!csum) as u32 + pseudo as u32 + data as u32)
}

/// Accumulates `!old + new` over changed 16-bit words (in memory order, like every word the
/// checksum covers), for [`crate::ctx::Ctx::l4_csum`].
#[derive(Clone, Copy)]
pub struct Diff(u32);

impl Diff {
    #[inline(always)]
    pub fn new() -> Diff {
        Diff(0)
    }

    #[inline(always)]
    pub fn add2(&mut self, old: u16, new: u16) {
        self.0 = fold(self.0 + (!old) as u32 + new as u32) as u32;
    }

    #[inline(always)]
    pub fn add4(&mut self, old: u32, new: u32) {
        self.add2(old as u16, new as u16);
        self.add2((old >> 16) as u16, (new >> 16) as u16);
    }

    #[inline(always)]
    pub fn get(self) -> u16 {
        self.0 as u16
    }
}

/// Unfolded ones' complement sum of `size` bytes at `p` (a multiple of 4), by the kernel's
/// `bpf_csum_diff`.
#[inline(always)]
pub fn sum_of(p: *const u8, size: u32) -> u64 {
    // SAFETY: the helper reads `size` bytes at `p`, which the callers keep in bounds.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, size, 0) };
    (r as u64) & 0xffff_ffff
}

/// A UDP checksum computed as zero goes out as all ones (zero means "no checksum").
#[inline(always)]
pub fn udp_nonzero(csum: u16) -> u16 {
    if csum == 0 { 0xffff } else { csum }
}
