//! [`Dataplane::apply`]'s short way: when the maps hold exactly the listeners of the last
//! apply and no ACL changed, only the listeners that differ from then are written or removed
//! (found by a diff of the two versions that skips what they share, no pass over every
//! loaded listener).
use std::time::Instant;

use super::{Dataplane, Result, listener_key};
use crate::model::{ListenerChange, Listeners, Model, changed_listeners};

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
        let added: Vec<lb_common::Addr> = changes
            .iter()
            .filter(|c| c.before.is_none())
            .filter_map(|c| c.after.as_deref())
            .map(|l| listener_key(l).vip)
            .collect();
        let membership = changes.iter().any(|c| c.before.is_none() || c.after.is_none());
        // The new VIPs' bits before their listeners, the old ones' cleared after (below).
        if !added.is_empty() {
            self.write_filter_with(&added)?;
        }
        let mut rejected = Vec::new();
        for ListenerChange { before, .. } in changes.iter().filter(|c| c.after.is_none()) {
            self.unload_listener(before.as_ref().expect("a listener gone was there").id(), now, &mut rejected);
        }
        for listener in changes.iter().filter_map(|c| c.after.as_ref()) {
            self.load_listener(listener, now, &mut rejected);
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
        self.short_applies += 1;
        self.finish(model, rejected)
    }
}
