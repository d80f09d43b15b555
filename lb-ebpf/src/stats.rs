//! Per-CPU packet and byte counters.
use crate::maps::STATS;

#[inline(always)]
pub fn count(index: u32, bytes: u64) {
    if let Some(c) = STATS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no other writer on this CPU while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
