//! What `lb run` shows its monitoring: the readiness and liveness probes ([`probes`]), the
//! L7 proxy's request-latency histogram ([`latency`]), and one scrape of `/metrics` in the
//! Prometheus text format ([`exposition`]).
pub mod exposition;
pub mod latency;
pub mod probes;

use std::sync::atomic::{AtomicI8, Ordering};

pub use exposition::Snapshot;
pub use probes::Probes;

/// Whether this pod holds the leader-election Lease: -1 = no election runs.
static LEADER: AtomicI8 = AtomicI8::new(-1);

/// Recorded by the leader election at every round.
pub fn set_leader(leader: bool) {
    LEADER.store(i8::from(leader), Ordering::Relaxed);
}

/// `None` when this process runs no leader election.
pub fn leader() -> Option<bool> {
    match LEADER.load(Ordering::Relaxed) {
        -1 => None,
        v => Some(v == 1),
    }
}
