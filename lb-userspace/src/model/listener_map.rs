//! [`Listeners`]: the model's L4 listeners by name, one map shared by the model's copies (the
//! one built, the one wanted, the one applied) and copied only when one of them changes.
use std::{collections::BTreeMap, ops::Deref, sync::Arc};

use serde::Serialize;

use super::L4Listener;

/// The L4 listeners by [`listener_name`](super::listener_name). Cloning shares the map
/// (a model copy costs no walk over 10,000 listeners); [`insert`](Self::insert),
/// [`remove`](Self::remove) and [`make_mut`](Self::make_mut) copy it first if it is shared.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Listeners(Arc<BTreeMap<String, Arc<L4Listener>>>);

impl Listeners {
    /// The map, to change: copied first if another model holds it too.
    pub fn make_mut(&mut self) -> &mut BTreeMap<String, Arc<L4Listener>> {
        Arc::make_mut(&mut self.0)
    }

    pub fn insert(&mut self, name: String, listener: Arc<L4Listener>) -> Option<Arc<L4Listener>> {
        self.make_mut().insert(name, listener)
    }

    pub fn remove(&mut self, name: &str) -> Option<Arc<L4Listener>> {
        if !self.0.contains_key(name) {
            return None;
        }
        self.make_mut().remove(name)
    }

    pub fn clear(&mut self) {
        self.0 = Arc::default();
    }

    /// Whether `a` and `b` are the same map (then they hold the same listeners).
    pub fn ptr_eq(a: &Listeners, b: &Listeners) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Deref for Listeners {
    type Target = BTreeMap<String, Arc<L4Listener>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl From<BTreeMap<String, Arc<L4Listener>>> for Listeners {
    fn from(map: BTreeMap<String, Arc<L4Listener>>) -> Listeners {
        Listeners(Arc::new(map))
    }
}

impl FromIterator<(String, Arc<L4Listener>)> for Listeners {
    fn from_iter<I: IntoIterator<Item = (String, Arc<L4Listener>)>>(iter: I) -> Listeners {
        Listeners(Arc::new(iter.into_iter().collect()))
    }
}

impl Extend<(String, Arc<L4Listener>)> for Listeners {
    fn extend<I: IntoIterator<Item = (String, Arc<L4Listener>)>>(&mut self, iter: I) {
        self.make_mut().extend(iter);
    }
}

impl<'a> IntoIterator for &'a Listeners {
    type Item = (&'a String, &'a Arc<L4Listener>);
    type IntoIter = std::collections::btree_map::Iter<'a, String, Arc<L4Listener>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl IntoIterator for Listeners {
    type Item = (String, Arc<L4Listener>);
    type IntoIter = std::collections::btree_map::IntoIter<String, Arc<L4Listener>>;

    fn into_iter(self) -> Self::IntoIter {
        Arc::unwrap_or_clone(self.0).into_iter()
    }
}
