//! Backend ids and their map entries: one id per (address, port), shared by every listener
//! that uses it and freed when the last one stops, after a quarantine that outlasts its
//! flows (see [`ids`](super::ids)). The entry's `LIVE` flag (read by session persistence)
//! is shared too: a backend is live only while no listener holding it has it at weight 0
//! (a failed health check of one listener must keep every persistent client off it; the
//! TCP and UDP listeners of one port share their backends but not their checks).
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Instant,
};

use aya::{
    Ebpf,
    maps::{Array, MapData},
};
use lb_common::{backend_flags, map_names as names};

use super::{
    error::{Result, map_err},
    ids::Quarantine,
    maps::{addr_words, family, map_mut},
    table::Region,
};
use crate::model::Backend;

#[derive(Debug, Default)]
pub struct BackendIds {
    /// Each backend's id and how many listeners hold it.
    ids: HashMap<(IpAddr, u16), (u32, u32)>,
    next: u32,
    free: Vec<u32>,
    /// Freed ids still in quarantine, by the backend they were: it gets them back if it
    /// returns meanwhile.
    quarantined: HashMap<(IpAddr, u16), u32>,
    quarantine: Quarantine,
    /// How many of the listeners holding a backend have it at weight 0.
    unlive: HashMap<(IpAddr, u16), u32>,
}

impl BackendIds {
    /// The ids a previous generation gave backends (pinned flows name them): in quarantine
    /// until `until`, each back to its backend if the model still has it; so are the ids
    /// pinned flows name that it no longer had (`named`). The ids below the highest of them
    /// that neither names are free.
    pub fn adopt(&mut self, seeds: &[((IpAddr, u16), u32)], named: &BTreeSet<u32>, now: Instant, until: Instant) {
        let mut held = named.clone();
        for &(key, id) in seeds {
            self.quarantined.insert(key, id);
            held.insert(id);
        }
        for &id in &held {
            self.quarantine.hold(id, now, Some(until));
        }
        if let Some(&max) = held.last() {
            self.free = (self.next..max).rev().filter(|id| !held.contains(id)).collect();
            self.next = self.next.max(max + 1);
        }
    }

    /// Ids for `backends` (in order), taking a reference on each.
    pub fn acquire(&mut self, backends: &[Backend]) -> Vec<u32> {
        backends
            .iter()
            .map(|b| {
                let key = (b.addr, b.port);
                let entry = self.ids.entry(key).or_insert_with(|| {
                    let id = match self.quarantined.remove(&key) {
                        Some(id) => {
                            self.quarantine.revive(id);
                            id
                        }
                        None => self.free.pop().unwrap_or_else(|| {
                            self.next += 1;
                            self.next - 1
                        }),
                    };
                    (id, 0)
                });
                entry.1 += 1;
                if b.weight == 0 {
                    *self.unlive.entry(key).or_default() += 1;
                }
                entry.0
            })
            .collect()
    }

    /// Whether a held backend is live for session persistence: no listener holding it has
    /// it at weight 0 (the caller's own listener counts: its backends were acquired).
    pub fn live(&self, b: &Backend) -> bool {
        !self.unlive.contains_key(&(b.addr, b.port))
    }

    /// The backends of `backends` still held whose last weight-0 holder has just let go:
    /// their `LIVE` flag is to be written again.
    pub fn revived<'a>(&self, backends: &'a [Backend]) -> Vec<(&'a Backend, u32)> {
        backends
            .iter()
            .filter(|b| b.weight == 0 && !self.unlive.contains_key(&(b.addr, b.port)))
            .filter_map(|b| self.ids.get(&(b.addr, b.port)).map(|(id, _)| (b, *id)))
            .collect()
    }

    /// Drop one reference on each of `backends`; returns the ids nobody uses any more. They
    /// are handed out again once out of quarantine: `drained_until` says until when flows to
    /// a backend may be drained.
    pub fn release(
        &mut self,
        backends: &[Backend],
        now: Instant,
        drained_until: impl Fn(IpAddr, u16) -> Option<Instant>,
    ) -> Vec<u32> {
        let mut freed = Vec::new();
        for b in backends {
            let key = (b.addr, b.port);
            if b.weight == 0
                && let Some(n) = self.unlive.get_mut(&key)
            {
                *n -= 1;
                if *n == 0 {
                    self.unlive.remove(&key);
                }
            }
            if let Some(entry) = self.ids.get_mut(&key) {
                entry.1 -= 1;
                if entry.1 == 0 {
                    freed.push(entry.0);
                    self.quarantine.hold(entry.0, now, drained_until(b.addr, b.port));
                    self.quarantined.insert(key, entry.0);
                    self.ids.remove(&key);
                }
            }
        }
        freed
    }

    /// Free the ids whose quarantine is over; returns them.
    pub fn reclaim(&mut self, now: Instant, last_sweep: Option<Instant>) -> Vec<u32> {
        let due = self.quarantine.due(now, last_sweep);
        self.quarantined.retain(|_, id| !due.contains(id));
        self.free.extend(&due);
        due
    }
}

/// The `BACKENDS` entry of `b` (`weight`: the last writer's, for reading; the datapath
/// reads `flags`).
fn to_map_value(b: &Backend, live: bool) -> lb_common::Backend {
    lb_common::Backend {
        addr: addr_words(b.addr),
        port: b.port.to_be(),
        family: family(b.addr),
        flags: if live { backend_flags::LIVE } else { 0 },
        weight: b.weight,
    }
}

/// Write the `BACKENDS` entries of backends and their ids, `LIVE` as `ids` says.
pub fn write<'a>(
    ebpf: &mut Ebpf,
    entries: impl IntoIterator<Item = (&'a Backend, u32)>,
    ids: &BackendIds,
) -> Result<()> {
    let mut table: Array<&mut MapData, lb_common::Backend> = map_mut(ebpf, names::BACKENDS)?;
    for (b, id) in entries {
        table.set(id, to_map_value(b, ids.live(b)), 0).map_err(map_err(names::BACKENDS))?;
    }
    Ok(())
}

/// Mark a freed backend id as taking no flows.
pub fn clear(ebpf: &mut Ebpf, id: u32) -> Result<()> {
    let mut table: Array<&mut MapData, lb_common::Backend> = map_mut(ebpf, names::BACKENDS)?;
    table.set(id, lb_common::Backend::default(), 0).map_err(map_err(names::BACKENDS))
}

/// Write a ring or Maglev table into `region` of `BACKEND_TABLE`: its entries, then its
/// length in the region's header.
pub fn write_table(ebpf: &mut Ebpf, region: Region, entries: &[u32]) -> Result<()> {
    if entries.is_empty() {
        // The shared empty header (entry 0, always 0).
        return Ok(());
    }
    let mut table: Array<&mut MapData, u32> = map_mut(ebpf, names::BACKEND_TABLE)?;
    for (i, id) in entries.iter().enumerate() {
        table.set(region.offset + 1 + i as u32, id, 0).map_err(map_err(names::BACKEND_TABLE))?;
    }
    // The length last: the region is not in use yet, but a table is whole before it says so.
    table.set(region.offset, entries.len() as u32, 0).map_err(map_err(names::BACKEND_TABLE))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dataplane::table::GRACE;

    fn be(port: u16) -> Backend {
        Backend { addr: "198.18.0.1".parse().unwrap(), port, weight: 1 }
    }

    /// A backend one listener holds at weight 0 is not live for any; once that listener
    /// takes it back (its new version acquired, the old one released), it is live again.
    #[test]
    fn a_backend_is_live_only_while_no_holder_has_it_at_weight_0() {
        let mut ids = BackendIds::default();
        let now = Instant::now();
        let down = Backend { weight: 0, ..be(1) };
        ids.acquire(&[down]);
        ids.acquire(&[be(1)]);
        assert!(!ids.live(&be(1)), "down for one listener, down for persistence");
        assert!(ids.revived(&[down]).is_empty());
        ids.acquire(&[be(1)]);
        ids.release(&[down], now, |_, _| None);
        assert!(ids.live(&be(1)));
        assert_eq!(ids.revived(&[down]).len(), 1, "to be written live again");
    }

    #[test]
    fn shared_backends_keep_their_id_until_the_last_release_then_wait_out_the_grace() {
        let mut ids = BackendIds::default();
        let now = Instant::now();
        let a = ids.acquire(&[be(1), be(2)]);
        let b = ids.acquire(&[be(2), be(3)]);
        assert_eq!(a, vec![0, 1]);
        assert_eq!(b, vec![1, 2]);
        assert_eq!(ids.release(&[be(1), be(2)], now, |_, _| None), vec![0], "id 1 is still held");
        assert_eq!(ids.acquire(&[be(4)]), vec![3], "id 0 is in its grace period");
        ids.reclaim(now + GRACE, None);
        assert_eq!(ids.acquire(&[be(5)]), vec![0]);
        assert_eq!(ids.acquire(&[be(2)]), vec![1]);
    }

    /// Issue #15, item 4 (id quarantine): a backend whose flows drain keeps its id out of use
    /// until a sweep after the deadline; if it comes back meanwhile, it gets the same id.
    #[test]
    fn a_drained_backend_id_is_not_reused_before_its_flows_are_cut() {
        let mut ids = BackendIds::default();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(900);
        assert_eq!(ids.acquire(&[be(1), be(2)]), vec![0, 1]);
        assert_eq!(ids.release(&[be(1), be(2)], now, |_, port| (port == 1).then_some(deadline)), vec![0, 1]);
        ids.reclaim(now + GRACE, None);
        assert_eq!(ids.acquire(&[be(3)]), vec![1], "id 1 had no drain: free after the grace");
        ids.reclaim(deadline, Some(deadline - Duration::from_secs(1)));
        assert_eq!(ids.acquire(&[be(4)]), vec![2], "id 0 drains until a sweep after the deadline");
        assert_eq!(ids.acquire(&[be(1)]), vec![0], "back before the cut: its flows keep their id");
        ids.release(&[be(1)], now, |_, _| Some(deadline));
        ids.reclaim(deadline + GRACE, Some(deadline));
        assert_eq!(ids.acquire(&[be(5)]), vec![0], "cut by the sweep at the deadline: free");
    }

    #[test]
    fn adopted_ids_go_back_to_their_backends_named_ones_wait_and_holes_are_free() {
        let t0 = Instant::now();
        let mut ids = BackendIds::default();
        // The previous generation: port 1 on id 4; pinned flows also name id 2 (a backend it
        // had removed with a drain).
        let seeds = [(("198.18.0.1".parse().unwrap(), 1), 4)];
        ids.adopt(&seeds, &BTreeSet::from([2]), t0, t0 + Duration::from_secs(900));
        assert_eq!(ids.acquire(&[be(1)]), vec![4], "its own id back");
        assert_eq!(ids.acquire(&[be(5), be(6), be(7), be(8)]), vec![0, 1, 3, 5], "holes first, never 2 or 4");
        assert_eq!(ids.reclaim(t0 + Duration::from_secs(901), Some(t0 + Duration::from_secs(900))), vec![2]);
    }
}
