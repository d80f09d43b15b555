//! Backend selection for a new flow: a per-CPU cursor over the listener's ring (rr, and wrr
//! through a weighted ring), or a Maglev table indexed by the flow hash (sch, tch). Rings and
//! tables are built in user space; here they are only read.
use lb_common::{FlowKey, Listener, flow_hash, scheduler};

use crate::maps::{BACKEND_TABLE, RR_CURSORS};

/// The backend id for a new flow of listener `id`, or `None` when no backend takes new flows.
#[inline(always)]
pub fn pick(id: u32, cfg: &Listener, key: &FlowKey) -> Option<u32> {
    // Read once: user space may rewrite the config meanwhile (a new table somewhere else),
    // and the length is the table's own, in its header, never another version's.
    // SAFETY: a plain read of a field of a map value.
    let offset = unsafe { core::ptr::read_volatile(&cfg.table_offset) };
    let len = *BACKEND_TABLE.get(offset)?;
    if len == 0 {
        return None;
    }
    let slot = match cfg.scheduler {
        scheduler::MAGLEV_SRC => flow_hash(key, false) % len,
        scheduler::MAGLEV_TUPLE => flow_hash(key, true) % len,
        _ => {
            let cursor = RR_CURSORS.get_ptr_mut(id)?;
            // SAFETY: per-CPU slot.
            unsafe {
                let next = (*cursor).wrapping_add(1);
                *cursor = next;
                next % len
            }
        }
    };
    BACKEND_TABLE.get(offset.wrapping_add(1).wrapping_add(slot)).copied()
}
