//! What the datapath can hold, checked against a model before anything is loaded (`lb
//! check`). The sizes are those of [`Options`] (`lb run`'s flags, same defaults) and of the
//! object's fixed maps: listeners (`MAX_LISTENERS`), distinct backends (`--max-backends`),
//! backend-table entries (`--backend-table-entries`: a ring takes a slot per turn, a Maglev
//! table `MAGLEV_M`), ACL prefixes over all AccessControlLists (`MAX_ACL_PREFIXES`).
//!
//! The model is filled in the order [`Dataplane::apply`](super::Dataplane::apply) loads it
//! on a node that starts with it (ACLs by name, then listeners by VIP, port and protocol),
//! and whatever does not fit is rejected on its object, as `lb run` would fail to load it;
//! what comes after still loads. (Backends per listener, `MAX_BACKENDS_PER_LISTENER`, are
//! checked when a Service is validated.)
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use lb_common::{MAGLEV_M, MAX_ACL_PREFIXES, MAX_LISTENERS};

use super::{load::Options, ring};
use crate::model::{L4Listener, ListenerId, Model, ObjectError, Scheduler, listener_name};

/// The datapath's fixed sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub listeners: u32,
    pub backends: u32,
    pub backend_table_entries: u32,
    pub acl_prefixes: u32,
}

impl Capacity {
    /// The sizes a datapath loaded with `opts` has.
    pub fn of(opts: &Options) -> Capacity {
        Capacity {
            listeners: MAX_LISTENERS,
            backends: opts.max_backends,
            backend_table_entries: opts.backend_table_entries,
            acl_prefixes: MAX_ACL_PREFIXES,
        }
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity::of(&Options::default())
    }
}

/// Backend-table entries `l` takes: its ring, or a Maglev table, and the table's header
/// (none without a live backend).
pub fn table_entries(l: &L4Listener) -> u64 {
    let live = || l.backends.iter().any(|b| b.weight > 0);
    let table = match l.scheduler {
        Scheduler::Rr => {
            ring::build(&l.backends.iter().map(|b| u32::from(b.weight > 0)).collect::<Vec<_>>()).len() as u64
        }
        Scheduler::Wrr => ring::build(&l.backends.iter().map(|b| b.weight).collect::<Vec<_>>()).len() as u64,
        Scheduler::Sch | Scheduler::Tch if live() => MAGLEV_M as u64,
        Scheduler::Sch | Scheduler::Tch => 0,
    };
    if table == 0 { 0 } else { table + 1 }
}

/// Take out of `model` the ACLs and listeners that do not fit `cap`; returns one error per
/// object part taken out, naming what does not fit, how much is needed and left, and the
/// `lb run` flag that sizes it (where there is one).
pub fn enforce(model: &mut Model, cap: &Capacity) -> Vec<ObjectError> {
    let mut errors = Vec::new();
    let mut prefixes: u64 = 0;
    let mut dropped_acls = BTreeSet::new();
    for (name, acl) in &model.acls {
        let n = acl.entries.iter().map(IpNet::trunc).collect::<BTreeSet<_>>().len() as u64;
        if prefixes + n > cap.acl_prefixes as u64 {
            errors.push(ObjectError {
                object: acl.source.clone(),
                field: "spec.entries".into(),
                reason: format!(
                    "ACL {name} does not fit the datapath: {n} prefixes, {} left of the {} all AccessControlLists share",
                    cap.acl_prefixes as u64 - prefixes,
                    cap.acl_prefixes
                ),
            });
            dropped_acls.insert(name.clone());
        } else {
            prefixes += n;
        }
    }
    model.acls.retain(|name, _| !dropped_acls.contains(name));

    let order: BTreeMap<ListenerId, String> = model.listeners.iter().map(|(k, l)| (l.id(), k.clone())).collect();
    let (mut listeners, mut entries) = (0u32, 0u64);
    // Entry 0 is the empty tables' header.
    let table_room = u64::from(cap.backend_table_entries.saturating_sub(1));
    let mut backends: BTreeSet<(IpAddr, u16)> = BTreeSet::new();
    for key in order.into_values() {
        let l = &model.listeners[&key];
        let new_backends =
            l.backends.iter().map(|b| (b.addr, b.port)).filter(|b| !backends.contains(b)).collect::<BTreeSet<_>>();
        let need = table_entries(l);
        let why = if let Some(acl) = l.acl.as_ref().filter(|b| dropped_acls.contains(&b.acl)) {
            Some(format!("its ACL {} does not fit", acl.acl))
        } else if listeners >= cap.listeners {
            Some(format!("more than {} listeners", cap.listeners))
        } else if backends.len() + new_backends.len() > cap.backends as usize {
            Some(format!(
                "more than {} distinct backends ({} new here, {} left): raise --max-backends",
                cap.backends,
                new_backends.len(),
                cap.backends as usize - backends.len()
            ))
        } else if entries + need > table_room {
            Some(format!(
                "backend table full ({need} entries needed, {} left of {}): raise --backend-table-entries",
                table_room - entries,
                cap.backend_table_entries
            ))
        } else {
            None
        };
        match why {
            Some(why) => {
                errors.push(ObjectError {
                    object: l.source.clone(),
                    field: "spec.ports".into(),
                    reason: format!("listener {} does not fit the datapath: {why}", listener_name(l)),
                });
                model.listeners.remove(&key);
            }
            None => {
                listeners += 1;
                entries += need;
                backends.extend(new_backends);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Acl, AclBinding, AclMode, Backend, ObjectRef};

    fn l(port: u16, scheduler: Scheduler, backends: &[(u8, u32)]) -> L4Listener {
        let backends = backends
            .iter()
            .map(|(host, weight)| Backend { addr: IpAddr::from([198, 18, 1, *host]), port: 80, weight: *weight })
            .collect();
        let vip = "198.18.100.10".parse().unwrap();
        L4Listener { scheduler, ..L4Listener::sample(&format!("s{port}"), vip, port, backends) }
    }

    fn model(listeners: Vec<L4Listener>) -> Model {
        let mut m = Model::default();
        m.listeners.extend(listeners.into_iter().map(|l| (listener_name(&l), std::sync::Arc::new(l))));
        m
    }

    fn reasons(errors: &[ObjectError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn table_entries_follow_the_scheduler() {
        // Each table with its header.
        assert_eq!(table_entries(&l(1, Scheduler::Rr, &[(1, 5), (2, 1), (3, 0)])), 3);
        assert_eq!(table_entries(&l(1, Scheduler::Wrr, &[(1, 30), (2, 10), (3, 0)])), 5);
        assert_eq!(table_entries(&l(1, Scheduler::Sch, &[(1, 1)])), MAGLEV_M as u64 + 1);
        assert_eq!(table_entries(&l(1, Scheduler::Tch, &[(1, 0)])), 0, "no live backend, no table");
    }

    /// Issue #15, item 4 (capacity checked by `lb check`): each fixed size rejects the
    /// listener or ACL that goes past it, in load order, and what follows still fits.
    #[test]
    fn what_does_not_fit_is_rejected_in_load_order() {
        // Table (each with its header, after the shared entry 0): 3 + 4 fit, then 2.
        let cap = Capacity { listeners: 3, backends: 3, backend_table_entries: 10, acl_prefixes: 3 };
        let mut m = model(vec![
            l(1, Scheduler::Rr, &[(1, 1), (2, 1)]),
            l(2, Scheduler::Rr, &[(1, 1), (2, 1), (3, 1)]),
            l(3, Scheduler::Rr, &[(1, 1), (2, 1), (3, 1), (4, 1)]),
            l(4, Scheduler::Rr, &[(3, 1)]),
            l(5, Scheduler::Rr, &[]),
        ]);
        assert_eq!(
            reasons(&enforce(&mut m, &cap)),
            [
                "Service t/s3: spec.ports: listener 198.18.100.10:3/tcp does not fit the datapath: more than 3 distinct backends (1 new here, 0 left): raise --max-backends",
                "Service t/s5: spec.ports: listener 198.18.100.10:5/tcp does not fit the datapath: more than 3 listeners",
            ]
        );
        assert_eq!(m.listeners.len(), 3);
        // Table: 6 fit of 7, then 3 do not (1 left).
        let small = Capacity { backend_table_entries: 8, ..cap };
        let mut m = model(vec![l(1, Scheduler::Wrr, &[(1, 3), (2, 2)]), l(2, Scheduler::Rr, &[(1, 1), (2, 1)])]);
        assert_eq!(
            reasons(&enforce(&mut m, &small)),
            [
                "Service t/s2: spec.ports: listener 198.18.100.10:2/tcp does not fit the datapath: backend table full (3 entries needed, 1 left of 8): raise --backend-table-entries"
            ]
        );

        // ACLs, by name: `a` fits, `b` does not, `c` does; `b`'s listener goes with it.
        let acl = |name: &str, nets: &[&str]| Acl {
            source: ObjectRef::default_for("AccessControlList", name),
            entries: nets.iter().map(|n| n.parse().unwrap()).collect(),
        };
        let mut bound = l(1, Scheduler::Rr, &[(1, 1)]);
        bound.acl = Some(AclBinding { acl: "b".into(), mode: AclMode::White });
        let mut m = model(vec![bound, l(2, Scheduler::Rr, &[(1, 1)])]);
        m.acls.insert("a".into(), acl("a", &["10.0.0.0/8", "10.0.0.0/8"]));
        m.acls.insert("b".into(), acl("b", &["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16"]));
        m.acls.insert("c".into(), acl("c", &["10.4.0.0/16", "10.5.0.0/16"]));
        assert_eq!(
            reasons(&enforce(&mut m, &cap)),
            [
                "AccessControlList b: spec.entries: ACL b does not fit the datapath: 3 prefixes, 2 left of the 3 all AccessControlLists share",
                "Service t/s1: spec.ports: listener 198.18.100.10:1/tcp does not fit the datapath: its ACL b does not fit",
            ]
        );
        assert_eq!(m.acls.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(m.listeners.keys().collect::<Vec<_>>(), ["198.18.100.10:2/tcp"]);
    }

    #[test]
    fn the_defaults_are_lb_runs() {
        let cap = Capacity::default();
        assert_eq!(cap.backend_table_entries, lb_common::DEFAULT_BACKEND_TABLE_ENTRIES);
        assert_eq!((cap.listeners, cap.backends, cap.acl_prefixes), (16384, 65536, 65536));
    }
}
