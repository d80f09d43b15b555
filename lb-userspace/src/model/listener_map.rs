//! [`Listeners`]: the model's L4 listeners by name, a persistent map: the model's copies (the
//! one built, the one wanted, the one applied, the one with health applied) share it, a change
//! copies only the path to one leaf, and two versions are compared without walking what they
//! share.
use std::{ops::Deref, sync::Arc};

use serde::Serialize;

use imbl::ordmap::DiffItem;

use super::{L4Listener, ListenerChange};

/// The map inside [`Listeners`].
pub type ListenerMap = imbl::OrdMap<String, Arc<L4Listener>>;

/// The L4 listeners by [`listener_name`](super::listener_name). Cloning shares the map (a
/// model copy costs no walk over 10,000 listeners).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Listeners(ListenerMap);

impl Listeners {
    pub fn insert(&mut self, name: String, listener: Arc<L4Listener>) -> Option<Arc<L4Listener>> {
        self.0.insert(name, listener)
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<L4Listener>> {
        self.0.remove(name)
    }

    pub fn clear(&mut self) {
        self.0 = ListenerMap::new();
    }
}

/// The listeners that differ between `before` and `after`, in name order: only the parts of
/// the two maps they do not share are compared (a listener that is the same object is equal
/// without reading it).
pub fn changed_listeners(before: &Listeners, after: &Listeners) -> Vec<ListenerChange> {
    before
        .0
        .diff(&after.0)
        .map(|d| match d {
            DiffItem::Add(k, l) => ListenerChange { name: k.clone(), before: None, after: Some(l.clone()) },
            DiffItem::Remove(k, l) => ListenerChange { name: k.clone(), before: Some(l.clone()), after: None },
            DiffItem::Update { old: (k, b), new: (_, a) } => {
                ListenerChange { name: k.clone(), before: Some(b.clone()), after: Some(a.clone()) }
            }
        })
        .collect()
}

impl Deref for Listeners {
    type Target = ListenerMap;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl FromIterator<(String, Arc<L4Listener>)> for Listeners {
    fn from_iter<I: IntoIterator<Item = (String, Arc<L4Listener>)>>(iter: I) -> Listeners {
        Listeners(iter.into_iter().collect())
    }
}

impl Extend<(String, Arc<L4Listener>)> for Listeners {
    fn extend<I: IntoIterator<Item = (String, Arc<L4Listener>)>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl<'a> IntoIterator for &'a Listeners {
    type Item = (&'a String, &'a Arc<L4Listener>);
    type IntoIter = imbl::ordmap::Iter<'a, String, Arc<L4Listener>, imbl::shared_ptr::DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Listeners {
    type Item = (String, Arc<L4Listener>);
    type IntoIter = imbl::ordmap::ConsumingIter<String, Arc<L4Listener>, imbl::shared_ptr::DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}
