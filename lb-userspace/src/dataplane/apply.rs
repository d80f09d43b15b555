//! [`Dataplane::apply`]: the maps brought to a model one object at a time. An ACL or a
//! listener the datapath cannot take (a full backend table, too many backends, a map
//! error) keeps its last good state, or stays absent if it never loaded; every other object
//! is applied, and the failures come back as [`Rejected`], each naming its object.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
    time::Instant,
};

use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use lb_common::{Listener, ListenerKey, MAX_LISTENERS, map_names as names};

use super::{
    Dataplane, DataplaneError, Loaded, Rejected, RejectedPart, Result, backends, conntrack, ids, listener_entry,
    load::ADOPTED_HOLD, maglev, map_err, ring, table::Region,
};
use crate::model::{Backend, L4Listener, ListenerId, Model, Scheduler, listener_name};

/// What `model` becomes once the datapath rejected `rejected`: each rejected listener or ACL
/// as it was in `previous` (the model applied before, whose version is still loaded), or
/// gone if it had none there.
pub fn keep_served(model: &mut Model, previous: &Model, rejected: &[Rejected]) {
    for r in rejected {
        match &r.what {
            RejectedPart::Listener(key) => match previous.listeners.get(key).filter(|_| r.kept) {
                Some(prev) => {
                    model.listeners.insert(key.clone(), prev.clone());
                }
                None => {
                    model.listeners.remove(key);
                }
            },
            RejectedPart::Acl(name) => match previous.acls.get(name).filter(|_| r.kept) {
                Some(prev) => {
                    model.acls.insert(name.clone(), prev.clone());
                }
                None => {
                    model.acls.remove(name);
                }
            },
        }
    }
}

impl Dataplane {
    /// Bring the maps to `model`: ACLs first, then listeners — new ones added, changed ones
    /// switched to freshly written backends and tables (the listener's settings last, in one
    /// update), removed ones deleted. Flows already in conntrack keep their backend; a removed
    /// backend's flows are cut now, or at the end of the listener's drain timeout.
    ///
    /// Each ACL and each listener is applied on its own: one the datapath cannot take keeps
    /// its last good state (or stays absent), the others are applied, and
    /// [`DataplaneError::Rejected`] lists the failures. Other errors mean the maps
    /// themselves could not be reached.
    pub fn apply(&mut self, model: &Model) -> Result<()> {
        let now = Instant::now();
        self.reclaim(now);
        let acls = self.acls.apply(&mut self.ebpf, &model.acls)?;
        if acls.changed.is_empty()
            && acls.failed.is_empty()
            && let Some(asked) = self.asked.take()
        {
            return self.apply_changes(asked, model, now);
        }
        // The full way: every listener of the model is compared with the one loaded.
        self.asked = None;
        let mut rejected: Vec<Rejected> = acls
            .failed
            .into_iter()
            .map(|(name, kept, error)| {
                let object = model.acls[&name].source.clone();
                Rejected::new(object, "spec.entries", RejectedPart::Acl(name), kept, &error)
            })
            .collect();
        let desired: BTreeMap<ListenerId, &Arc<L4Listener>> = model.listeners.values().map(|l| (l.id(), l)).collect();
        // The new VIPs' bits before their listeners, the old ones' cleared after (below).
        let new_vips: Vec<lb_common::Addr> = desired.values().map(|l| super::listener_key(l).vip).collect();
        self.write_filter_with(&new_vips)?;
        let gone: Vec<ListenerId> = self.loaded.keys().filter(|k| !desired.contains_key(k)).copied().collect();
        for id in gone {
            self.unload_listener(id, now, &mut rejected);
        }
        // An ACL edited keeps its id: the listeners naming it read its new entries as they
        // are, with nothing of theirs to rewrite.
        for listener in desired.into_values() {
            self.load_listener(listener, now, &mut rejected);
        }
        self.reclaim_acls(model)?;
        self.write_filter()?;
        // Backends came or went: routes to them may have too.
        self.invalidate_next_hops()?;
        self.finish(model, rejected)
    }

    /// Remove listener `id` from the maps; a failure joins `rejected`.
    pub(super) fn unload_listener(&mut self, id: ListenerId, now: Instant, rejected: &mut Vec<Rejected>) {
        let Some(l) = self.loaded.get(&id).map(|l| l.listener.clone()) else { return };
        if let Err(e) = self.remove_listener(id, now) {
            rejected.push(Rejected::listener(&l, self.loaded.contains_key(&id), &e));
        }
    }

    /// Write `listener` unless the maps hold it already; a failure joins `rejected`.
    pub(super) fn load_listener(&mut self, listener: &Arc<L4Listener>, now: Instant, rejected: &mut Vec<Rejected>) {
        let id = listener.id();
        let same = |l: &Loaded| Arc::ptr_eq(&l.listener, listener) || *l.listener == **listener;
        if !self.loaded.get(&id).is_some_and(same)
            && let Err(e) = self.write_listener(listener, now)
        {
            rejected.push(Rejected::listener(listener, self.loaded.contains_key(&id), &e));
        }
    }

    /// The end of an apply: each failure logged; when every listener loaded as asked, the
    /// next apply may take the short way.
    pub(super) fn finish(&mut self, model: &Model, rejected: Vec<Rejected>) -> Result<()> {
        self.cut_removed();
        for r in &rejected {
            tracing::error!(error = %r, "not loaded into the datapath; the rest of the model was applied");
        }
        if !rejected.iter().any(|r| matches!(r.what, RejectedPart::Listener(_))) {
            self.asked = Some(model.listeners.clone());
        }
        if rejected.is_empty() { Ok(()) } else { Err(DataplaneError::Rejected(rejected)) }
    }

    /// How many times an apply walked the flow tables to cut removed backends' flows.
    pub fn cut_walks(&self) -> u64 {
        self.cut_walks
    }

    /// Cut the flows of the backends this apply removed with connection drain off: one walk
    /// of the flow tables for all of them (a node drained of its pods removes backends from
    /// every listener at once). A failure leaves those flows to time out.
    fn cut_removed(&mut self) {
        if self.cuts.is_empty() {
            return;
        }
        let cuts = std::mem::take(&mut self.cuts);
        self.cut_walks += 1;
        match conntrack::cut_flows(&mut self.ebpf, |listener, addr, port| cuts.contains(&(listener, addr, port))) {
            Ok(flows) => {
                tracing::info!(backends = cuts.len(), flows, "cut the flows of removed backends (connection drain off)")
            }
            Err(e) => tracing::warn!(error = %e, backends = cuts.len(), "cannot cut the flows of removed backends"),
        }
    }

    /// ACLs leave once neither the model nor a listener still loaded (a last good one
    /// included) names them.
    pub(super) fn reclaim_acls(&mut self, model: &Model) -> Result<()> {
        let in_use: BTreeSet<&str> =
            self.loaded.values().filter_map(|l| l.listener.acl.as_ref()).map(|b| b.acl.as_str()).collect();
        self.acls.reclaim(&mut self.ebpf, |name| model.acls.contains_key(name) || in_use.contains(name))
    }

    /// Load `l` (new or changed). Everything that can run out (its id, backend ids, table
    /// entries, its ACL) is taken before anything is written: a listener that does not fit
    /// leaves the maps, and its last good version, as they were.
    fn write_listener(&mut self, l: &Arc<L4Listener>, now: Instant) -> Result<()> {
        let name = listener_name(l);
        let listener_err = |reason: String| DataplaneError::Listener { listener: name.clone(), reason };
        let previous = self.loaded.get(&l.id()).cloned();
        let acl = match &l.acl {
            Some(binding) => Some(
                self.acls
                    .id_of(&binding.acl)
                    .ok_or_else(|| listener_err(format!("ACL {} is not loaded", binding.acl)))?,
            ),
            None => None,
        };
        let lkey = super::listener_key(l);
        let adopted = previous.is_none() && self.listener_ids.is_adopted(&lkey);
        let id = match &previous {
            Some(p) => p.id,
            None => self
                .listener_ids
                .take(&lkey)
                .ok_or_else(|| listener_err(format!("more than {MAX_LISTENERS} listeners")))?,
        };
        let give_back_id = |dp: &mut Dataplane| {
            if previous.is_none() {
                dp.listener_ids.untake(&lkey, id, adopted);
            }
        };
        let ids = self.backend_ids.acquire(&l.backends);
        if ids.iter().any(|id| *id >= self.max_backends) {
            self.release_backends(&l.backends, now);
            give_back_id(self);
            return Err(listener_err(format!(
                "more than {} distinct backends: raise --max-backends",
                self.max_backends
            )));
        }
        let slots = table_slots(l);
        let Some(region) = self.table.alloc(slots.len() as u32) else {
            self.release_backends(&l.backends, now);
            give_back_id(self);
            return Err(listener_err(format!(
                "backend table full ({} entries needed, {} free): raise --backend-table-entries",
                slots.len(),
                self.table.free_entries()
            )));
        };
        let (key, mut value) = listener_entry(l, region);
        if let Some(acl_id) = acl {
            value.acl_id = acl_id;
        }
        let entries: Vec<u32> = slots.iter().map(|&i| ids[i]).collect();
        if let Err(e) = self.write_entries(l, &ids, region, &entries, id, key, value) {
            self.table.release(region, now);
            self.release_backends(&l.backends, now);
            give_back_id(self);
            return Err(e);
        }

        for b in &l.backends {
            self.drains.cancel(id, b.addr, b.port);
        }
        tracing::info!(listener = %name, backends = l.backends.len(), scheduler = ?l.scheduler, "listener loaded");
        self.loaded.insert(l.id(), Loaded { id, region, backend_ids: ids, listener: l.clone() });
        if let Some(prev) = previous {
            self.table.release(prev.region, now);
            // Retired first: the drains it starts set how long the released ids wait.
            let retired = self.retire_backends(&prev, Some(l), now);
            self.release_backends(&prev.listener.backends, now);
            retired?;
        }
        Ok(())
    }

    /// The map writes of [`write_listener`](Self::write_listener): backends, the table, then
    /// the listener's settings and its key (the switch).
    #[allow(clippy::too_many_arguments)]
    fn write_entries(
        &mut self,
        l: &L4Listener,
        ids: &[u32],
        region: Region,
        entries: &[u32],
        id: u32,
        key: ListenerKey,
        value: Listener,
    ) -> Result<()> {
        backends::write(&mut self.ebpf, l.backends.iter().zip(ids.iter().copied()), &self.backend_ids)?;
        backends::write_table(&mut self.ebpf, region, entries)?;
        let mut cfg: Array<&mut MapData, Listener> = self.map_mut(names::LISTENER_CFG)?;
        cfg.set(id, value, 0).map_err(map_err(names::LISTENER_CFG))?;
        let mut listeners: BpfHashMap<&mut MapData, ListenerKey, u32> = self.map_mut(names::LISTENERS)?;
        listeners.insert(key, id, 0).map_err(map_err(names::LISTENERS))
    }

    fn remove_listener(&mut self, key: ListenerId, now: Instant) -> Result<()> {
        let Some(loaded) = self.loaded.get(&key).cloned() else { return Ok(()) };
        let (lkey, _) = listener_entry(&loaded.listener, loaded.region);
        let mut listeners: BpfHashMap<&mut MapData, ListenerKey, u32> = self.map_mut(names::LISTENERS)?;
        match listeners.remove(&lkey) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(map_err(names::LISTENERS)(e)),
        }
        self.loaded.remove(&key);
        self.table.release(loaded.region, now);
        // Retired first: the drains it starts set how long the released ids wait.
        let retired = self.retire_backends(&loaded, None, now);
        self.release_backends(&loaded.listener.backends, now);
        self.listener_ids.release(loaded.id, now, self.bounds.listener(loaded.id));
        tracing::info!(listener = %listener_name(&loaded.listener), "listener removed");
        retired
    }

    /// Backends of `old` that `new` no longer has (all of them when the listener goes):
    /// their flows are cut now, or at the drain deadline; their persistence is forgotten.
    fn retire_backends(&mut self, loaded: &Loaded, new: Option<&L4Listener>, now: Instant) -> Result<()> {
        let (id, old) = (loaded.id, &loaded.listener);
        let keep = |b: &Backend| {
            new.is_some_and(|n| n.backends.iter().any(|x| x.addr == b.addr && x.port == b.port && x.weight > 0))
        };
        // The ids the listener held.
        let (retired, retired_ids): (Vec<(IpAddr, u16)>, Vec<u32>) = old
            .backends
            .iter()
            .zip(&loaded.backend_ids)
            .filter(|(b, _)| !keep(b))
            .map(|(b, id)| ((b.addr, b.port), *id))
            .unzip();
        if retired.is_empty() {
            return Ok(());
        }
        if old.persistence_timeout > 0 {
            conntrack::forget_persistence(&mut self.ebpf, id, &retired_ids)?;
        }
        // Weight 0 only stops new flows; removal ends the established ones too.
        let removed: Vec<(IpAddr, u16)> = retired
            .into_iter()
            .filter(|(a, p)| !new.is_some_and(|n| n.backends.iter().any(|x| x.addr == *a && x.port == *p)))
            .collect();
        let drain = new.map_or(old.drain_timeout, |n| n.drain_timeout);
        match drain {
            Some(secs) => {
                let deadline = now + std::time::Duration::from_secs(secs as u64);
                for (a, p) in removed {
                    tracing::info!(listener = id, backend = %a, port = p, secs, "draining removed backend");
                    self.drains.add(id, a, p, deadline);
                    self.bounds.drain(id, a, p, deadline);
                }
            }
            // Cut at the end of the apply ([`Dataplane::cut_removed`]), once the new
            // tables are all written.
            None => self.cuts.extend(removed.into_iter().map(|(a, p)| (id, a, p))),
        }
        Ok(())
    }

    fn release_backends(&mut self, backends: &[Backend], now: Instant) {
        let bounds = &self.bounds;
        for freed in self.backend_ids.release(backends, now, |addr, port| bounds.backend(addr, port)) {
            let _ = backends::clear(&mut self.ebpf, freed);
        }
        // A backend another listener holds at weight above 0, whose last weight-0 holder
        // this was: live again for persistence. (Written once the datapath may use it.)
        let revived = self.backend_ids.revived(backends);
        if !revived.is_empty()
            && let Err(e) = backends::write(&mut self.ebpf, revived, &self.backend_ids)
        {
            tracing::warn!(error = %e, "backends live again for persistence not marked");
        }
    }

    /// The previous generation's ids the model did not claim go into quarantine.
    pub(super) fn release_unclaimed_ids(&mut self) {
        let now = Instant::now();
        self.listener_ids.release_unclaimed(now, now + ADOPTED_HOLD);
    }

    /// Hand out again the table regions past their grace period and the ids out of
    /// quarantine ([`ids`](super::ids)), their persistence entries and counters cleared.
    fn reclaim(&mut self, now: Instant) {
        self.table.reclaim(now);
        let last_sweep = self.bounds.last_sweep();
        let backends = self.backend_ids.reclaim(now, last_sweep);
        let listeners = self.listener_ids.reclaim(now, last_sweep);
        if let Err(e) = ids::scrub(&mut self.ebpf, &listeners, &backends) {
            tracing::warn!(error = %e, "cannot clear the persistence and counters of ids out of quarantine");
        }
    }
}

/// A listener's ring or Maglev table: an index into `l.backends` per entry.
pub fn table_slots(l: &L4Listener) -> Vec<usize> {
    match l.scheduler {
        Scheduler::Rr => ring::build(&l.backends.iter().map(|b| u32::from(b.weight > 0)).collect::<Vec<_>>()),
        Scheduler::Wrr => ring::build(&l.backends.iter().map(|b| b.weight).collect::<Vec<_>>()),
        Scheduler::Sch | Scheduler::Tch => {
            maglev::build_default(&l.backends.iter().map(|b| (b.addr, b.port, b.weight)).collect::<Vec<_>>())
        }
    }
}
