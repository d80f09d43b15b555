//! Session persistence: a client address keeps its backend on a listener for
//! `persist_timeout_s` after it was last seen.
use lb_common::{FlowKey, PersistEntry, PersistKey};

use crate::maps::{BACKENDS, PERSIST};

#[inline(always)]
pub fn key(listener_id: u32, flow: &FlowKey) -> PersistKey {
    PersistKey { client: flow.src, listener_id }
}

/// The backend this client persists on, if the entry is fresh and the backend still exists.
#[inline(always)]
pub fn lookup(k: &PersistKey, timeout_s: u32, now: u64) -> Option<u32> {
    // SAFETY: read-only copy of the value.
    let e = unsafe { PERSIST.get(k) }.copied()?;
    if now.wrapping_sub(e.last_seen_ns) > timeout_s as u64 * 1_000_000_000 {
        return None;
    }
    let b = BACKENDS.get(e.backend_id)?;
    if b.flags & lb_common::backend_flags::LIVE == 0 {
        return None;
    }
    Some(e.backend_id)
}

#[inline(always)]
pub fn remember(k: &PersistKey, backend_id: u32, now: u64) {
    let _ = PERSIST.insert(k, &PersistEntry { backend_id, _pad: 0, last_seen_ns: now }, 0);
}
