//! Backend selection for a new flow.
use lb_common::{Backend, Listener, MAX_BACKENDS_PER_LISTENER};

use crate::maps::{BACKENDS, BACKEND_SLOTS, RR_CURSORS};

/// Round robin over the listener's live slots (a per-CPU cursor: each CPU cycles through the
/// backends, which spreads new flows evenly without a shared, bouncing cache line).
#[inline(always)]
pub fn pick_rr(listener: &Listener) -> Option<(u32, Backend)> {
    let count = listener.backend_count;
    if count == 0 || count > MAX_BACKENDS_PER_LISTENER {
        return None;
    }
    let cursor = RR_CURSORS.get_ptr_mut(listener.id)?;
    // SAFETY: per-CPU slot.
    let slot = unsafe {
        let next = (*cursor).wrapping_add(1);
        *cursor = next;
        next % count
    };
    let id = *BACKEND_SLOTS.get(listener.id * MAX_BACKENDS_PER_LISTENER + slot)?;
    let backend = *BACKENDS.get(id)?;
    Some((id, backend))
}
