//! Id quarantine: when a freed listener id or backend id may be handed out again.
//!
//! A flow's conntrack entry (and its reverse-NAT and persistence entries) carries the
//! listener id and the backend id it was opened with; every packet of the flow counts
//! against them, and a refresh writes persistence under them. Handed to another listener or
//! backend while such a flow lives, an id would charge that flow's packets to the newcomer
//! and could pin the newcomer's clients to a backend that is not its own. So a freed id stays
//! unused for as long as a flow may still refer to it:
//!
//! - When a listener or a backend goes, its flows are cut at once (connection drain off) or
//!   at the drain deadline (`connection-drain-timeout`, at most 900 s). Idle timeouts bound
//!   nothing here (a flow that keeps talking never idles out): the cut does, and the cut of a
//!   drained flow is made by the first conntrack sweep at or after the deadline (every
//!   `--sweep-ms`). The longest time a flow can refer to a freed id is therefore the latest
//!   drain deadline that covered it, plus the wait for the next sweep.
//! - So an id is free again once [`GRACE`] has passed (a CPU that read the old id a moment
//!   before the switch is done with it), and a sweep has started at or after every drain
//!   deadline noted for it ([`FlowBounds`]). Without a drain, that is [`GRACE`] alone.
//! - A backend that comes back while its id is in quarantine gets that id back: its flows,
//!   drained no more, go on under the id they were opened with.
//! - Persistence entries can outlive the flows that wrote them (the listener's persistence
//!   timeout): those naming an id are deleted as it leaves quarantine, and its counters
//!   zeroed ([`scrub`]).
//!
//! Backend-table regions are not named by flows (only read when a flow is scheduled), so
//! they wait out [`GRACE`] alone (`table.rs`).
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuValues},
};
use lb_common::{BackendCounters, ListenerCounters, ListenerKey, PersistEntry, PersistKey, map_names as names};

use super::{
    error::{Result, map_err},
    maps::map_mut,
    table::GRACE,
};

/// Freed ids waiting until no flow can refer to them.
#[derive(Debug, Default)]
pub struct Quarantine {
    /// (id, freed at, the latest drain deadline of its flows, if they were drained).
    held: Vec<(u32, Instant, Option<Instant>)>,
}

impl Quarantine {
    pub fn hold(&mut self, id: u32, now: Instant, drained_until: Option<Instant>) {
        self.held.push((id, now, drained_until));
    }

    /// Take `id` back out (its backend came back).
    pub fn revive(&mut self, id: u32) {
        self.held.retain(|(held, ..)| *held != id);
    }

    /// The ids free again at `now`, given the start of the last conntrack sweep.
    pub fn due(&mut self, now: Instant, last_sweep: Option<Instant>) -> Vec<u32> {
        let ready = |freed: Instant, until: Option<Instant>| {
            now.duration_since(freed) >= GRACE && until.is_none_or(|u| last_sweep.is_some_and(|s| s >= u))
        };
        let (due, keep): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(_, freed, until)| ready(*freed, *until));
        self.held = keep;
        due.into_iter().map(|(id, ..)| id).collect()
    }
}

/// Listener ids: those never used or out of quarantine, and those in it.
#[derive(Debug)]
pub struct ListenerIds {
    free: Vec<u32>,
    quarantine: Quarantine,
    /// The ids a previous generation of the datapath gave listeners (pinned flows name
    /// them): each listener gets its own back.
    adopted: HashMap<ListenerKey, u32>,
}

impl ListenerIds {
    /// Ids `0..count`, the lowest handed out first.
    pub fn new(count: u32) -> ListenerIds {
        ListenerIds { free: (0..count).rev().collect(), quarantine: Quarantine::default(), adopted: HashMap::new() }
    }

    /// Keep the ids a previous generation gave the listeners `seeds` for them.
    pub fn adopt(&mut self, seeds: &[(ListenerKey, u32)]) {
        let taken: BTreeSet<u32> = seeds.iter().map(|(_, id)| *id).collect();
        self.free.retain(|id| !taken.contains(id));
        self.adopted.extend(seeds.iter().copied());
    }

    /// Hold `ids` (named by pinned flows) out of use until `until`, but those adopted.
    pub fn hold(&mut self, ids: &BTreeSet<u32>, now: Instant, until: Instant) {
        let adopted: BTreeSet<u32> = self.adopted.values().copied().collect();
        let held: BTreeSet<u32> = ids.difference(&adopted).copied().collect();
        self.free.retain(|id| !held.contains(id));
        for id in held {
            self.quarantine.hold(id, now, Some(until));
        }
    }

    /// An id for the listener `key`: the one it had in the previous generation, else a free one.
    pub fn take(&mut self, key: &ListenerKey) -> Option<u32> {
        self.adopted.remove(key).or_else(|| self.free.pop())
    }

    /// Give back an id its listener (`key`) failed to load with.
    pub fn untake(&mut self, key: &ListenerKey, id: u32, adopted: bool) {
        if adopted {
            self.adopted.insert(*key, id);
        } else {
            self.free.push(id);
        }
    }

    /// Whether `key` has an id from the previous generation.
    pub fn is_adopted(&self, key: &ListenerKey) -> bool {
        self.adopted.contains_key(key)
    }

    /// The previous generation's ids no listener claimed: into quarantine until `until`.
    pub fn release_unclaimed(&mut self, now: Instant, until: Instant) {
        for (_, id) in self.adopted.drain() {
            self.quarantine.hold(id, now, Some(until));
        }
    }

    /// `id`'s listener is gone; its flows were drained until `drained_until`, if at all.
    pub fn release(&mut self, id: u32, now: Instant, drained_until: Option<Instant>) {
        self.quarantine.hold(id, now, drained_until);
    }

    /// Free the ids whose quarantine is over; returns them.
    pub fn reclaim(&mut self, now: Instant, last_sweep: Option<Instant>) -> Vec<u32> {
        let due = self.quarantine.due(now, last_sweep);
        self.free.extend(&due);
        due
    }
}

/// How long flows may refer to an id: the drain deadlines given to removed backends, and
/// the start of the last conntrack sweep (which cut every drain due by then).
#[derive(Debug, Default)]
pub struct FlowBounds {
    listeners: BTreeMap<u32, Instant>,
    backends: BTreeMap<(IpAddr, u16), Instant>,
    last_sweep: Option<Instant>,
}

impl FlowBounds {
    /// Flows of `listener` to `addr:port` drain until `deadline`.
    pub fn drain(&mut self, listener: u32, addr: IpAddr, port: u16, deadline: Instant) {
        let later = |d: &mut Instant| *d = (*d).max(deadline);
        self.listeners.entry(listener).and_modify(later).or_insert(deadline);
        self.backends.entry((addr, port)).and_modify(later).or_insert(deadline);
    }

    /// The latest drain deadline of flows of `listener`.
    pub fn listener(&self, id: u32) -> Option<Instant> {
        self.listeners.get(&id).copied()
    }

    /// The latest drain deadline of flows to `addr:port`.
    pub fn backend(&self, addr: IpAddr, port: u16) -> Option<Instant> {
        self.backends.get(&(addr, port)).copied()
    }

    /// A sweep that started at `start` completed: every drain due by then is cut.
    pub fn swept(&mut self, start: Instant) {
        self.last_sweep = Some(start);
        self.listeners.retain(|_, d| *d > start);
        self.backends.retain(|_, d| *d > start);
    }

    pub fn last_sweep(&self) -> Option<Instant> {
        self.last_sweep
    }
}

/// Make the ids leaving quarantine clean for their next owner: delete the persistence
/// entries of the listener ids `listeners` and those pointing at the backend ids `backends`,
/// and zero their counters (a listener or backend that gets one starts from nothing).
pub fn scrub(ebpf: &mut Ebpf, listeners: &[u32], backends: &[u32]) -> Result<()> {
    if listeners.is_empty() && backends.is_empty() {
        return Ok(());
    }
    let (l, b): (BTreeSet<u32>, BTreeSet<u32>) =
        (listeners.iter().copied().collect(), backends.iter().copied().collect());
    let mut persist: BpfHashMap<&mut MapData, PersistKey, PersistEntry> = map_mut(ebpf, names::PERSIST)?;
    let doomed: Vec<PersistKey> = persist
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, e)| l.contains(&k.listener_id) || b.contains(&e.backend_id))
        .map(|(k, _)| k)
        .collect();
    for k in doomed {
        let _ = persist.remove(&k);
    }
    zero::<ListenerCounters>(ebpf, names::LISTENER_STATS, listeners)?;
    zero::<BackendCounters>(ebpf, names::BACKEND_STATS, backends)
}

fn zero<T: aya::Pod + Default>(ebpf: &mut Ebpf, map: &'static str, ids: &[u32]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let bad = |reason: String| aya::maps::MapError::InvalidName { name: format!("{map}: {reason}") };
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| map_err(map)(bad(format!("{what}: {e}"))))?;
    let mut array: PerCpuArray<&mut MapData, T> = map_mut(ebpf, map)?;
    for id in ids {
        let zeros = PerCpuValues::try_from(vec![T::default(); cpus]).map_err(|e| map_err(map)(bad(e.to_string())))?;
        array.set(*id, zeros, 0).map_err(map_err(map))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Issue #15, item 4 (id quarantine): an id whose flows drain stays out of use until a
    /// sweep has cut them, however long the drain; without a drain, for the grace period.
    #[test]
    fn a_freed_id_waits_for_its_drained_flows_to_be_cut() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut ids = ListenerIds::new(4);
        let (a, b) = (ids.take(&key(1)).unwrap(), ids.take(&key(2)).unwrap());
        assert_eq!((a, b), (0, 1));
        let mut bounds = FlowBounds::default();
        bounds.drain(a, "198.18.1.2".parse().unwrap(), 8080, t0 + s(300));
        ids.release(a, t0, bounds.listener(a));
        ids.release(b, t0, bounds.listener(b));
        assert_eq!(ids.reclaim(t0 + GRACE, bounds.last_sweep()), vec![b], "no drain: free after the grace");
        bounds.swept(t0 + s(100));
        assert!(ids.reclaim(t0 + s(200), bounds.last_sweep()).is_empty(), "draining until 300 s");
        assert!(ids.reclaim(t0 + s(301), bounds.last_sweep()).is_empty(), "past the deadline, but not cut yet");
        bounds.swept(t0 + s(305));
        assert_eq!(ids.reclaim(t0 + s(306), bounds.last_sweep()), vec![a], "cut by the sweep after the deadline");
        assert_eq!(bounds.listener(a), None, "deadlines a sweep passed are forgotten");
        // Out of quarantine, it is handed out again.
        assert_eq!(ids.take(&key(3)), Some(a));
    }

    fn key(port: u16) -> ListenerKey {
        ListenerKey { port, ..Default::default() }
    }

    #[test]
    fn adopted_ids_go_back_to_their_listeners_and_the_rest_wait() {
        let t0 = Instant::now();
        let mut ids = ListenerIds::new(8);
        // The previous generation had port 80 on id 5 and port 81 on id 0.
        ids.adopt(&[(key(80), 5), (key(81), 0)]);
        assert_eq!(ids.take(&key(80)), Some(5), "a listener gets its id back");
        assert_eq!(ids.take(&key(90)), Some(1), "a new one gets an id no pinned flow names");
        ids.untake(&key(80), 5, true);
        assert_eq!(ids.take(&key(80)), Some(5), "given back after a failed load, still its own");
        // Port 81 is gone: its id waits out the longest drain, then a sweep.
        ids.release_unclaimed(t0, t0 + Duration::from_secs(900));
        assert!(ids.reclaim(t0 + Duration::from_secs(10), Some(t0 + Duration::from_secs(5))).is_empty());
        assert_eq!(ids.reclaim(t0 + Duration::from_secs(901), Some(t0 + Duration::from_secs(900))), vec![0]);
    }
}
