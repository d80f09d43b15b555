//! [`Dataplane::apply`]'s short way: when the maps hold exactly the listeners of the last
//! apply and no ACL changed, only the listeners that are not the same objects as then are
//! written or removed (one walk comparing addresses, no pass over every loaded listener).
use std::{sync::Arc, time::Instant};

use super::{Dataplane, DataplaneError, Rejected, Result, listener_key};
use crate::model::{L4Listener, ListenerChange, Listeners, Model, changed_listeners};

/// The listeners the last apply was asked for, by name, when every one of them is loaded as
/// asked (`None`: the next apply takes the full way).
pub(super) type Asked = Option<Listeners>;

impl Dataplane {
    /// How many applies took the short way (the others compared every listener).
    pub fn short_applies(&self) -> u64 {
        self.short_applies
    }

    /// The ACLs in the maps, by name.
    pub fn loaded_acls(&self) -> impl Iterator<Item = &str> {
        self.acls.names()
    }

    /// Bring the maps from `asked` (what they hold) to `model`'s listeners.
    pub(super) fn apply_changes(&mut self, asked: Listeners, model: &Model, now: Instant) -> Result<()> {
        let changes = changed_listeners(&asked, &model.listeners);
        let added: Vec<lb_common::Addr> =
            changes.iter().filter(|c| c.before.is_none()).filter_map(|c| c.after.as_deref()).map(vip).collect();
        let membership = changes.iter().any(|c| c.before.is_none() || c.after.is_none());
        // The new VIPs' bits before their listeners, the old ones' cleared after (below).
        if !added.is_empty() {
            self.write_filter_with(&added)?;
        }
        let mut rejected = Vec::new();
        for ListenerChange { before, .. } in changes.iter().filter(|c| c.after.is_none()) {
            let id = before.as_ref().expect("a listener gone was there").id();
            if let Some(loaded) = self.loaded.get(&id).map(|l| l.listener.clone())
                && let Err(e) = self.remove_listener(id, now)
            {
                rejected.push(Rejected::listener(&loaded, self.loaded.contains_key(&id), &e));
            }
        }
        for ListenerChange { after, .. } in &changes {
            let Some(listener) = after else { continue };
            let id = listener.id();
            let same =
                self.loaded.get(&id).is_some_and(|l| Arc::ptr_eq(&l.listener, listener) || *l.listener == **listener);
            if !same && let Err(e) = self.write_listener(listener, now) {
                rejected.push(Rejected::listener(listener, self.loaded.contains_key(&id), &e));
            }
        }
        // An ACL leaves once neither the model nor a loaded listener names it: none can
        // while the model names every loaded one.
        if self.acls.names().any(|n| !model.acls.contains_key(n)) {
            self.reclaim_acls(model)?;
        }
        if membership {
            self.write_filter()?;
        }
        self.invalidate_next_hops()?;
        for r in &rejected {
            tracing::error!(error = %r, "not loaded into the datapath; the rest of the model was applied");
        }
        self.asked = rejected.is_empty().then(|| model.listeners.clone());
        self.short_applies += 1;
        if rejected.is_empty() { Ok(()) } else { Err(DataplaneError::Rejected(rejected)) }
    }
}

fn vip(l: &L4Listener) -> lb_common::Addr {
    listener_key(l).vip
}
