//! Per-CPU counters: datapath-wide, per listener, per backend.
use lb_common::{BackendCounters, ListenerCounters};

use crate::maps::{BACKEND_STATS, LISTENER_STATS, STATS};

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

#[inline(always)]
pub fn listener(id: u32, f: impl FnOnce(&mut ListenerCounters)) {
    if let Some(c) = LISTENER_STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU slot.
        f(unsafe { &mut *c });
    }
}

#[inline(always)]
pub fn backend(id: u32, f: impl FnOnce(&mut BackendCounters)) {
    if let Some(c) = BACKEND_STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU slot.
        f(unsafe { &mut *c });
    }
}
